#!/usr/bin/env bash
# test_serve_spec.sh — speculation and compressed KV in `lmc serve` (issue
# 17) on the default model (models/kjv-llama), each server on 127.0.0.1 and
# a port the OS picks (read from its "listening on" line, waited on as a
# blocking read of its stderr, no sleeps):
#  - 64 concurrent streamed greedy completions (KJV verses, up to 48
#    tokens) through `--spec prompt-lookup --spec-k 4
#    --spec-max-batch 0` (speculating at any batch size) give exactly the
#    text, completion tokens and finish reasons of a server without it;
#    its /metrics count drafts (lmc_spec_draft_tokens_total > 0) and
#    accepted ones (> 0, < drafts), its K histogram
#    (lmc_spec_k_steps_total{k="0".."16"}, adaptive K) has plain steps
#    and no K above 4, and all KV blocks come back;
#  - `--kv-dtype q4 --kv-memory 32M` (with speculation) answers the same
#    requests, reports lmc_kv_bytes_per_token 2 x 8 layers x 184 bytes
#    (f32: 18,432) and over 6x the f32 server's blocks within the same
#    lmc_kv_pool_bytes budget, and frees every block;
#  - `--kv-dtype bf16 --kv-memory 32M` (with speculation): 9,216 bytes per
#    token (half f32's), about 2x the f32 server's blocks, every request
#    answered, blocks freed;
#  - `--spec draft:models/kjv-llama --spec-adapt off` (the model as its
#    own draft, K fixed at 3: every step drafts): the same 64 streams
#    equal, drafts mostly accepted, every K chosen is 3, blocks freed;
#  - every server exits 0 on SIGTERM (under ASan: nothing leaked);
#  - `--kv-dtype kivi2 --kv-memory 64M` (2-bit keys per channel, values
#    per token, each sequence's last 32 positions in f16 rings) with and
#    without speculation: the same 64 streams equal each other (rollback
#    is exact while the residual covers a key group), 2 x 8 x 112 bytes
#    per token (0.19x bf16), over 4x the f32 server's tokens per byte
#    with the rings of 64 sequences (27 MiB) counted in the 64 MiB of
#    lmc_kv_pool_bytes, blocks freed; how many
#    texts equal the f32 cache's is printed;
#  - bad flags (--spec nonsense, --spec draft: with no folder or a missing
#    one, --spec-k 0 or 17, --kv-dtype kivi2 with blocks of 8 or
#    --kv-residual 5000, --spec-adapt maybe) exit 2 or name the problem.
# Usage: test_serve_spec.sh PATH/TO/lmc
set -u
LMC="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
M=models/kjv-llama
for t in python3; do
  if ! command -v $t >/dev/null; then echo "test_serve_spec: skipped ($t not installed)"; exit 0; fi
done
[ -d "$M" ] || { echo "FAIL: $M missing"; exit 1; }
fail=0
# under AddressSanitizer (the binary links libasan) 24 requests per server instead of 64
N=64
if ldd "$LMC" 2>/dev/null | grep -q libasan || nm "$LMC" 2>/dev/null | grep -q " __asan_init"; then N=24; fi
for bad in "--spec nonsense" "--spec draft:" "--spec-k 0" "--spec-k 17" "--spec-adapt maybe"; do
  "$LMC" serve -m "$M" --port 0 $bad >/dev/null 2>&1
  [ $? = 2 ] || { echo "FAIL: serve $bad should exit 2"; fail=1; }
done
out=$("$LMC" serve -m "$M" --port 0 --spec draft:/nonexistent/draft 2>&1)
[ $? != 0 ] && echo "$out" | grep -q "/nonexistent/draft" || { echo "FAIL: a missing draft model should be named: $out"; fail=1; }
out=$("$LMC" serve -m "$M" --port 0 --kv-dtype kivi2 --block-size 8 2>&1)
[ $? != 0 ] && echo "$out" | grep -q "multiple of 32" || { echo "FAIL: --kv-dtype kivi2 --block-size 8 should be refused: $out"; fail=1; }
"$LMC" serve -m "$M" --port 0 --kv-dtype kivi2 --kv-residual 5000 >/dev/null 2>&1
[ $? = 2 ] || { echo "FAIL: serve --kv-residual 5000 should exit 2"; fail=1; }

python3 - "$LMC" "$M" "$N" <<'PY' || fail=1
import http.client, json, re, subprocess, sys, threading
LMC, M, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
fails = []
def check(cond, what):
    if not cond:
        fails.append(what); print("FAIL:", what, flush=True)

def start(*args):
    p = subprocess.Popen([LMC, "serve", "-m", M, "--host", "127.0.0.1", "--port", "0", "--max-batch", "64",
                          "--timeout", "120", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = []
    for line in p.stderr:  # blocking reads until the server says where it listens
        log.append(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, int(m.group(1)), "".join(log)
    raise SystemExit("server did not start: " + "".join(log))

def stop(p, name):
    """SIGTERM; the server must exit 0 (under ASan: no leak at shutdown)"""
    p.terminate()
    rc = p.wait()
    check(rc == 0, "%s server exited %d" % (name, rc))

def stream(port, prompt, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    c.request("POST", "/v1/completions", body=json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0,
              "stream": True, "stream_options": {"include_usage": True}}), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        return {"status": r.status}
    text, finish, usage = "", None, None
    for line in r:
        line = line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        j = json.loads(line[6:])
        if j.get("choices"):
            text += j["choices"][0].get("text", "")
            finish = j["choices"][0].get("finish_reason") or finish
        if j.get("usage"):
            usage = j["usage"]["completion_tokens"]
    c.close()
    return {"status": 200, "text": text, "finish": finish, "n": usage}

def metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()
    out = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(lmc_[a-z_]+) ([0-9.e+-]+)$", body, re.M)}
    out["k_steps"] = {int(m.group(1)): float(m.group(2))
                      for m in re.finditer(r'^lmc_spec_k_steps_total\{k="(\d+)"\} ([0-9.e+-]+)$', body, re.M)}
    return out

def run_all(port, prompts):
    res = [None] * len(prompts)
    def one(i):
        res[i] = stream(port, prompts[i], 16 + (i * 7) % 33)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in ts: t.start()
    for t in ts: t.join()
    return res

def idle_metrics(port):
    # the last responses are out before the scheduler publishes its idle state: ask until it has
    for _ in range(100000):
        m = metrics(port)
        if m.get("lmc_requests_running", 1) == 0 and m.get("lmc_requests_waiting", 1) == 0:
            return m
    return m

# KJV verses (the server tokenizes them)
prompts = [l for l in open("data/kjv.txt", encoding="utf-8").read().splitlines() if len(l) > 40][:N]
check(len(prompts) == N, "%d verses in data/kjv.txt" % N)

plain, pport, _ = start("--kv-dtype", "f32", "--kv-memory", "32M")
spec, sport, slog = start("--spec", "prompt-lookup", "--spec-k", "4", "--spec-max-batch", "0")
check("speculation: prompt lookup" in slog, "spec server's banner: " + slog)
try:
    a = run_all(pport, prompts)
    b = run_all(sport, prompts)
    differ = [i for i in range(N) if a[i] != b[i] or a[i]["status"] != 200]
    check(not differ, "%d of %d greedy streams differ with speculation, e.g. %s" %
          (len(differ), N, [(a[i], b[i]) for i in differ[:2]]))
    ms, mp = idle_metrics(sport), idle_metrics(pport)
    d, acc = ms.get("lmc_spec_draft_tokens_total", 0), ms.get("lmc_spec_accepted_tokens_total", 0)
    check(d > 0 and 0 < acc < d, "spec metrics: drafts %s accepted %s" % (d, acc))
    ks = ms["k_steps"]  # adaptive K: 64 greedy streams are a compute-bound batch: plain steps, probes
    check(sorted(ks) == list(range(17)) and ks[0] > 0 and sum(ks[k] for k in range(5, 17)) == 0,
          "K histogram %s" % ks)
    check(ms.get("lmc_kv_blocks_used") == 0 and mp.get("lmc_kv_blocks_used") == 0, "blocks in use after")
    check(mp.get("lmc_kv_bytes_per_token") == 18432 and mp.get("lmc_spec_draft_tokens_total") == 0,
          "f32 server: bytes per token %s" % mp.get("lmc_kv_bytes_per_token"))
    print("speculation: %d greedy streams equal; drafts %d, accepted %d (%.0f%%); steps %d vs %d without; "
          "K chosen 0..4: %s" % (N, d, acc, 100 * acc / max(d, 1), ms["lmc_scheduler_steps_total"],
                                 mp["lmc_scheduler_steps_total"], [int(ks.get(k, 0)) for k in range(5)]))
finally:
    stop(spec, "lookup")
# the target as its own draft model (batched draft forwards; greedy identity, drafts mostly accepted)
dspec, dport, dlog = start("--spec", "draft:" + M, "--spec-k", "3", "--spec-max-batch", "0", "--spec-adapt", "off")
check("speculation: draft model" in dlog, "draft server's banner: " + dlog)
try:
    e = run_all(dport, prompts)
    differ = [i for i in range(N) if a[i] != e[i]]
    check(not differ, "%d of %d greedy streams differ with a draft model, e.g. %s" %
          (len(differ), N, [(a[i], e[i]) for i in differ[:2]]))
    md = idle_metrics(dport)
    d, acc = md.get("lmc_spec_draft_tokens_total", 0), md.get("lmc_spec_accepted_tokens_total", 0)
    check(d > 0 and acc > d / 2 and md.get("lmc_kv_blocks_used") == 0, "draft metrics: drafts %s accepted %s" % (d, acc))
    check(md["k_steps"].get(3, 0) > 0 and sum(v for k, v in md["k_steps"].items() if k != 3) == 0,
          "--spec-adapt off: K 3 on every step: %s" % md["k_steps"])
    print("draft model (itself): %d greedy streams equal; drafts %d, accepted %d; steps %d" %
          (N, d, acc, md["lmc_scheduler_steps_total"]))
finally:
    stop(dspec, "draft")
q4, qport, _ = start("--kv-dtype", "q4", "--kv-memory", "32M", "--spec", "prompt-lookup", "--spec-max-batch", "0")
try:
    c = run_all(qport, prompts)
    check(all(r["status"] == 200 and r["finish"] in ("stop", "length") for r in c), "q4 server answers: %s" % [r for r in c if r["status"] != 200 or r["finish"] not in ("stop", "length")][:3])
    mq = idle_metrics(qport)
    check(mq.get("lmc_kv_bytes_per_token") == 2 * 8 * 184, "q4 bytes per token %s" % mq.get("lmc_kv_bytes_per_token"))
    check(mq["lmc_kv_blocks_total"] > 6 * mp["lmc_kv_blocks_total"] and mq["lmc_kv_pool_bytes"] <= 32 * 2**20 and
          mp["lmc_kv_pool_bytes"] <= 32 * 2**20, "q4 blocks %s vs f32 %s" % (mq["lmc_kv_blocks_total"], mp["lmc_kv_blocks_total"]))
    check(mq.get("lmc_kv_blocks_used") == 0, "q4 blocks in use after")
    same = sum(a[i]["text"] == c[i]["text"] for i in range(N))
    print("q4 pool: %d bytes per token, %d blocks in 32 MiB (f32 %d); %d of %d greedy texts equal the f32 cache's" %
          (mq["lmc_kv_bytes_per_token"], mq["lmc_kv_blocks_total"], mp["lmc_kv_blocks_total"], same, N))
finally:
    stop(q4, "q4")
bf, bport, _ = start("--kv-dtype", "bf16", "--kv-memory", "32M", "--spec", "prompt-lookup", "--spec-max-batch", "0")
try:
    c = run_all(bport, prompts)
    check(all(r["status"] == 200 and r["finish"] in ("stop", "length") for r in c), "bf16 server answers")
    mb = idle_metrics(bport)
    check(mb.get("lmc_kv_bytes_per_token") == 9216, "bf16 bytes per token %s" % mb.get("lmc_kv_bytes_per_token"))
    check(mb["lmc_kv_blocks_total"] >= 1.9 * mp["lmc_kv_blocks_total"] and mb["lmc_kv_pool_bytes"] <= 32 * 2**20,
          "bf16 blocks %s vs f32 %s" % (mb["lmc_kv_blocks_total"], mp["lmc_kv_blocks_total"]))
    check(mb.get("lmc_kv_blocks_used") == 0 and mb.get("lmc_spec_draft_tokens_total", 0) > 0, "bf16 blocks in use after, drafts")
    same = sum(a[i]["text"] == c[i]["text"] for i in range(N))
    print("bf16 pool: %d bytes per token, %d blocks in 32 MiB (f32 %d); %d of %d greedy texts equal the f32 cache's" %
          (mb["lmc_kv_bytes_per_token"], mb["lmc_kv_blocks_total"], mp["lmc_kv_blocks_total"], same, N))
finally:
    stop(bf, "bf16")
kv, kport, klog = start("--kv-dtype", "kivi2", "--kv-memory", "64M")
ks, ksport, _ = start("--kv-dtype", "kivi2", "--kv-memory", "64M", "--spec", "prompt-lookup", "--spec-max-batch", "0")
try:
    k1 = run_all(kport, prompts)
    k2 = run_all(ksport, prompts)
    check(all(r["status"] == 200 and r["finish"] in ("stop", "length") for r in k1 + k2), "kivi2 servers answer")
    differ = [i for i in range(N) if k1[i] != k2[i]]
    check(not differ, "%d of %d kivi2 greedy streams differ with speculation, e.g. %s" %
          (len(differ), N, [(k1[i], k2[i]) for i in differ[:2]]))
    mk, mks = idle_metrics(kport), idle_metrics(ksport)
    check(mk.get("lmc_kv_bytes_per_token") == 2 * 8 * 112, "kivi2 bytes per token %s" % mk.get("lmc_kv_bytes_per_token"))
    check(mk["lmc_kv_blocks_total"] * 32 > 4 * 2 * mp["lmc_kv_blocks_total"] * 8 and mk["lmc_kv_pool_bytes"] <= 64 * 2**20,
          "kivi2 tokens %s in 64 MiB vs f32 %s in 32 MiB" % (mk["lmc_kv_blocks_total"] * 32, mp["lmc_kv_blocks_total"] * 8))
    check(mk.get("lmc_kv_blocks_used") == 0 and mks.get("lmc_kv_blocks_used") == 0, "kivi2 blocks in use after")
    check(mks.get("lmc_spec_draft_tokens_total", 0) > 0, "kivi2 speculation drafted")
    same = sum(a[i]["text"] == k1[i]["text"] for i in range(N))
    print("kivi2 pool: %d bytes per token, %d blocks of 32 in 64 MiB with the rings (f32: %d blocks of 8 in 32 MiB); "
          "%d streams equal with and without speculation (drafts %d, accepted %d); %d of %d greedy texts equal the "
          "f32 cache's" % (mk["lmc_kv_bytes_per_token"], mk["lmc_kv_blocks_total"], mp["lmc_kv_blocks_total"],
                           N - len(differ), mks.get("lmc_spec_draft_tokens_total", 0),
                           mks.get("lmc_spec_accepted_tokens_total", 0), same, N))
finally:
    stop(kv, "kivi2"); stop(ks, "kivi2 spec"); stop(plain, "plain")
sys.exit(1 if fails else 0)
PY
[ $? = 0 ] || fail=1
[ $fail = 0 ] && echo "test_serve_spec: passed" || echo "test_serve_spec: FAILED"
exit $fail
