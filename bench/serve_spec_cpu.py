#!/usr/bin/env python3
"""serve_spec_cpu.py — speculation inside `lmc serve` on the CPU (issue 17):
starts two servers on the default model, plain and `--spec prompt-lookup`
(speculating at any batch size), and drives them in turn (plain, spec,
plain, spec: interleaved repeats) with streamed greedy completions of KJV
verses at each concurrency; prints output tokens/s per server and run, the
median ratio, the drafts / accepted counts and the steps from /metrics, and
checks that both servers returned the same texts.

Usage: bench/serve_spec_cpu.py LMC [MODEL] [--levels 1,8,32] [--repeats 2]
       [--max-tokens 64] [--threads 2] [--spec-k 4] [--spec prompt-lookup|draft:DIR]
       [--server-args "--device cuda ..."]  (given to both servers; bench/gpu_kv.sh)
"""
import argparse, http.client, json, re, statistics, subprocess, sys, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("lmc"); ap.add_argument("model", nargs="?", default="models/kjv-llama")
ap.add_argument("--levels", default="1,8,32"); ap.add_argument("--repeats", type=int, default=2)
ap.add_argument("--max-tokens", type=int, default=64); ap.add_argument("--threads", default="2")
ap.add_argument("--spec-k", default="4")
ap.add_argument("--spec", default="prompt-lookup"); ap.add_argument("--server-args", default="")
a = ap.parse_args()

def start(*args):
    p = subprocess.Popen([a.lmc, "serve", "-m", a.model, "--host", "127.0.0.1", "--port", "0", "--threads", a.threads,
                          "--max-batch", "64", *a.server_args.split(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, int(m.group(1))
    sys.exit("server did not start")

def stream(port, prompt):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/completions", body=json.dumps({"prompt": prompt, "max_tokens": a.max_tokens,
              "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    text, n = "", 0
    for line in r:
        line = line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        j = json.loads(line[6:])
        if j.get("choices"):
            text += j["choices"][0].get("text", "")
        if j.get("usage"):
            n = j["usage"]["completion_tokens"]
    c.close()
    return text, n

def metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(lmc_[a-z_]+) ([0-9.e+-]+)$", body, re.M)}

def level(port, prompts, conc):
    """conc clients, each taking the next prompt until all are done; returns (tok/s, texts)"""
    out, lock, nxt = [None] * len(prompts), threading.Lock(), [0]
    def client():
        while True:
            with lock:
                i = nxt[0]; nxt[0] += 1
            if i >= len(prompts):
                return
            out[i] = stream(port, prompts[i])
    t0 = time.perf_counter()
    ts = [threading.Thread(target=client) for _ in range(conc)]
    for t in ts: t.start()
    for t in ts: t.join()
    dt = time.perf_counter() - t0
    return sum(n for _, n in out) / dt, [t for t, _ in out]

verses = [l for l in open("data/kjv.txt", encoding="utf-8").read().splitlines() if len(l) > 40]
plain, pport = start()
spec, sport = start("--spec", a.spec, "--spec-k", a.spec_k, "--spec-max-batch", "0")
try:
    print("| concurrency | requests | plain tok/s (runs) | spec tok/s (runs) | spec / plain (median) | drafts | accepted | steps plain / spec | same texts |")
    print("|---|---|---|---|---|---|---|---|---|")
    for conc in [int(x) for x in a.levels.split(",")]:
        prompts = verses[:max(8, 2 * conc)]
        level(pport, prompts[:2], 2); level(sport, prompts[:2], 2)  # warm-up
        m0p, m0s = metrics(pport), metrics(sport)
        rp, rs, same = [], [], True
        for _ in range(a.repeats):
            tp, xp = level(pport, prompts, conc)
            tsp, xs = level(sport, prompts, conc)
            rp.append(tp); rs.append(tsp); same &= xp == xs
        m1p, m1s = metrics(pport), metrics(sport)
        d = m1s["lmc_spec_draft_tokens_total"] - m0s["lmc_spec_draft_tokens_total"]
        acc = m1s["lmc_spec_accepted_tokens_total"] - m0s["lmc_spec_accepted_tokens_total"]
        ratio = statistics.median([s / p for s, p in zip(rs, rp)])
        print("| %d | %d x %d | %s | %s | %.2fx | %d | %d (%.0f%%) | %d / %d | %s |" % (
            conc, len(prompts), a.repeats, " / ".join("%.0f" % x for x in rp), " / ".join("%.0f" % x for x in rs),
            ratio, d, acc, 100 * acc / max(d, 1), m1p["lmc_scheduler_steps_total"] - m0p["lmc_scheduler_steps_total"],
            m1s["lmc_scheduler_steps_total"] - m0s["lmc_scheduler_steps_total"], "yes" if same else "NO"), flush=True)
finally:
    plain.terminate(); spec.terminate(); plain.wait(); spec.wait()
