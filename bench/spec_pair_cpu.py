#!/usr/bin/env python3
"""spec_pair_cpu.py — speculative decoding with a trained draft model in the
server, lmc against llama.cpp in one run (issue 17): four servers on the
same target/draft pair (scripts/train_spec_pair.sh makes one), each on
127.0.0.1 and a free port, driven in turn (interleaved repeats) with
greedy completions of KJV verse openings at each concurrency:

  lmc serve -m TARGET                                     (plain)
  lmc serve -m TARGET --spec draft:DRAFT --spec-k K --spec-max-batch 0
  llama-server -m TARGET.gguf                             (plain)
  llama-server -m TARGET.gguf -md DRAFT.gguf --spec-draft-n-max K --spec-draft-n-min 0

The GGUF files are written by `lmc convert --dtype f16` (lmc serves the
bf16 folders; llama.cpp the f16 files: the same weights up to rounding).
Prints completion tokens/s per server (median over repeats), each
speculating server against its own plain one, lmc against llama.cpp, and
the drafts / accepted counts (lmc: /metrics; llama.cpp: the responses'
timings). Threads: --threads for all four.

Usage: bench/spec_pair_cpu.py LMC LLAMA_BIN_DIR TARGET DRAFT [--levels 1,4]
       [--repeats 2] [--max-tokens 64] [--threads 2] [--spec-k 4] [--prompts 8]
       [--gguf-dir /tmp/lmc-spec-pair]  (where the f16 GGUF files are written)
"""
import argparse, http.client, json, os, re, socket, statistics, subprocess, sys, threading, time
from kjv_prompts import kjv_prompts

ap = argparse.ArgumentParser()
ap.add_argument("lmc"); ap.add_argument("llama_bin"); ap.add_argument("target"); ap.add_argument("draft")
ap.add_argument("--levels", default="1,4"); ap.add_argument("--repeats", type=int, default=2)
ap.add_argument("--max-tokens", type=int, default=64); ap.add_argument("--threads", default="2")
ap.add_argument("--spec-k", default="4"); ap.add_argument("--prompts", type=int, default=8)
ap.add_argument("--gguf-dir", default="/tmp/lmc-spec-pair")
a = ap.parse_args()

def gguf(d):
    os.makedirs(a.gguf_dir, exist_ok=True)
    f = os.path.join(a.gguf_dir, os.path.basename(d.rstrip("/")) + ".f16.gguf")
    if not os.path.exists(f):
        subprocess.run([a.lmc, "convert", "-m", d, "-o", f, "--dtype", "f16"], check=True,
                       stdout=subprocess.DEVNULL)
    return f

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    return p

def start_lmc(*args):
    # --device cpu: this is the CPU comparison (on a GPU machine lmc would pick the GPU)
    p = subprocess.Popen([a.lmc, "serve", "-m", a.target, "--device", "cpu", "--host", "127.0.0.1", "--port", "0",
                          "--threads", a.threads, "--max-batch", "16", *args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in p.stderr:
        seen.append(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, int(m.group(1))
    sys.exit("lmc server did not start:\n" + "".join(seen[-20:]))

def start_llama(*args):
    # llama-server takes a port; one that was free a moment ago (a clash only fails the start, loudly)
    port = free_port()
    p = subprocess.Popen([os.path.join(a.llama_bin, "llama-server"), "-m", gguf(a.target), "--host", "127.0.0.1",
                          "--port", str(port), "-t", a.threads, "-tb", a.threads, "-c", "4096", "-np", "4",
                          "--no-warmup", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    for _ in range(3000):  # until /health answers 200 (its log lines vary between versions)
        if p.poll() is not None: sys.exit("llama-server exited")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                c.close()
                LLAMA_PORTS.add(port)
                return p, port
            c.close()
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("llama-server did not start")

LLAMA_PORTS = set()

def complete(port, prompt):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"prompt": prompt, "max_tokens": a.max_tokens, "temperature": 0}
    if port in LLAMA_PORTS: body["cache_prompt"] = False  # llama.cpp's own field (lmc refuses unknown ones)
    c.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = json.loads(c.getresponse().read())
    c.close()
    if "choices" not in r: sys.exit("server on port %d: %s" % (port, r))
    t = r.get("timings", {})
    return r["choices"][0]["text"], r["usage"]["completion_tokens"], t.get("draft_n", 0), t.get("draft_n_accepted", 0)

def level(port, prompts, conc):
    out, lock, nxt = [None] * len(prompts), threading.Lock(), [0]
    def client():
        while True:
            with lock:
                i = nxt[0]; nxt[0] += 1
            if i >= len(prompts): return
            out[i] = complete(port, prompts[i])
    t0 = time.perf_counter()
    ts = [threading.Thread(target=client) for _ in range(conc)]
    for t in ts: t.start()
    for t in ts: t.join()
    dt = time.perf_counter() - t0
    return sum(o[1] for o in out) / dt, [o[0] for o in out], sum(o[2] for o in out), sum(o[3] for o in out)

def metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/metrics"); body = c.getresponse().read().decode(); c.close()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(lmc_[a-z_]+) ([0-9.e+-]+)$", body, re.M)}

prompts = kjv_prompts(a.prompts)
servers = {}
try:
    servers["lmc plain"] = start_lmc()
    servers["lmc spec"] = start_lmc("--spec", "draft:" + a.draft, "--spec-k", a.spec_k, "--spec-max-batch", "0")
    servers["llama.cpp plain"] = start_llama()
    servers["llama.cpp spec"] = start_llama("-md", gguf(a.draft), "--spec-draft-n-max", a.spec_k, "--spec-draft-n-min", "0",
                                            "-td", a.threads)
    print("| concurrency | server | tok/s (runs) | spec / its plain | lmc / llama.cpp | drafted / accepted | texts equal to its plain |")
    print("|---|---|---|---|---|---|---|")
    for conc in [int(x) for x in a.levels.split(",")]:
        for _, (_, port) in servers.items(): level(port, prompts[:2], 2)  # warm-up
        m0 = metrics(servers["lmc spec"][1])
        rates = {k: [] for k in servers}; texts = {}; dr = {k: [0, 0] for k in servers}
        for _ in range(a.repeats):
            for k, (_, port) in servers.items():  # interleaved
                tps, tx, d, acc = level(port, prompts, conc)
                rates[k].append(tps); texts[k] = tx; dr[k][0] += d; dr[k][1] += acc
        m1 = metrics(servers["lmc spec"][1])
        dr["lmc spec"] = [m1["lmc_spec_draft_tokens_total"] - m0["lmc_spec_draft_tokens_total"],
                          m1["lmc_spec_accepted_tokens_total"] - m0["lmc_spec_accepted_tokens_total"]]
        med = {k: statistics.median(v) for k, v in rates.items()}
        for k in servers:
            sys_, mode = k.split(" ")
            plain = sys_ + " plain"
            other = ("llama.cpp " if sys_ == "lmc" else "lmc ") + mode
            print("| %d | %s | %s | %s | %s | %s | %s |" % (
                conc, k, " / ".join("%.1f" % x for x in rates[k]),
                "%.2fx" % (med[k] / med[plain]) if mode == "spec" else "-",
                "%.2fx" % (med[k] / med[other]) if sys_ == "lmc" else "-",
                "%d / %d (%.0f%%)" % (dr[k][0], dr[k][1], 100 * dr[k][1] / max(1, dr[k][0])) if mode == "spec" else "-",
                "%d of %d" % (sum(x == y for x, y in zip(texts[k], texts[plain])), len(prompts)) if mode == "spec" else "-"),
                flush=True)
finally:
    for p, _ in servers.values():
        p.terminate(); p.wait()
