#!/usr/bin/env bash
# gpu_kv.sh — compressed paged KV pools and speculation in the server on one
# GPU (issue 17), in one device call of about 3 minutes after the build:
#  1. bench_kv_paged --device cuda: paged attention of one decode step (64
#     sequences x 2048 cached tokens, 8 KV heads x 128, 32 query heads:
#     a Llama-3-8B layer) over q8, q4 and KIVI-2 (residual 32) pools
#     against the bf16 pool: bytes per token, ms, speed and the error
#     against float64 attention over the true rows;
#  2. greedy `lmc serve --device cuda` on the default model with each pool
#     (bf16, q8, q4, kivi2): 16 KJV verses, the texts against the bf16
#     pool's (equal count printed; kivi2 and q4 may differ a little);
#  3. bench/serve_spec_cpu.py --server-args "--device cuda": plain against
#     --spec prompt-lookup servers, interleaved, at concurrency 1 and 8
#     (tokens/s, acceptance, same texts), with the bf16 pool and with kivi2.
# Logs go to $OUT; the summary (tables last) is $OUT/summary.txt.
# Usage (device): source .devdeps/device-deps.sh unpack && bench/gpu_kv.sh
# env: BUDGET_S (default 240, after the build) SKIP_BUILD=1 (use build-dev as is)
#      SHAPE=64,2048,8,128,32 LEVELS=1,8 REPEATS=2
. "$(dirname "$0")/gpu_common.sh"
BUDGET_S=${BUDGET_S:-240}; SHAPE=${SHAPE:-64,2048,8,128,32}; LEVELS=${LEVELS:-1,8}; REPEATS=${REPEATS:-2}
OUT=${OUT:-/tmp/lmc-kv-out}; W=${WORK:-/tmp/lmc-kv-work}; B=build-dev; LMC=$B/lmc; M=models/kjv-llama
mkdir -p "$OUT" "$W"
S=$OUT/summary.txt; : >"$S"
say "$(gpu_stamp name,driver_version,memory.total)"
if [ -z "${SKIP_BUILD:-}" ] || [ ! -x $LMC ]; then
  gpu_build $B "$W/build.log" lmc_cli bench_kv_paged lmc_cuda test_sched_cuda ||
    { tail -40 "$W/build.log" | tee -a "$S"; cp "$W/build.log" "$OUT/"; exit 1; }
  say "build ok ($(($(date +%s) - T0)) s)"
fi
T1=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - T1))); }
rc=0
# ---- 0. correctness on the device: test_sched_cuda (the scheduler on the GPU, and the
#      compressed pools q8/q4/kivi2 on the GPU against the CPU's)
timeout 150 $B/test_sched_cuda >"$OUT/test_sched_cuda.log" 2>&1 || rc=1
say "test_sched_cuda: $(tail -1 "$OUT/test_sched_cuda.log") ($(($(date +%s) - T1)) s)"
grep "pool on cuda" "$OUT/test_sched_cuda.log" | tee -a "$S"
# ---- 1. attention over the pools
timeout 120 $B/bench_kv_paged --device cuda --reps 21 "$SHAPE" >"$OUT/attention.md" 2>"$W/attention.err" ||
  { say "bench_kv_paged FAILED: $(tail -3 "$W/attention.err")"; rc=1; }
say "attention done ($(($(date +%s) - T1)) s)"
# ---- 2. greedy texts per pool
python3 - "$LMC" "$M" >"$OUT/pools.md" 2>"$W/pools.err" <<'PY' || { say "pool check FAILED: $(tail -3 "$W/pools.err")"; rc=1; }
import http.client, json, re, subprocess, sys, threading
LMC, M = sys.argv[1], sys.argv[2]
verses = [l for l in open("data/kjv.txt", encoding="utf-8").read().splitlines() if len(l) > 40][:16]
def start(*args):
    p = subprocess.Popen([LMC, "serve", "-m", M, "--device", "cuda", "--host", "127.0.0.1", "--port", "0",
                          "--max-batch", "16", "--kv-memory", "256M", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    log = []
    for line in p.stderr:
        log.append(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, int(m.group(1)), "".join(log)
    raise SystemExit("server did not start: " + "".join(log))
def one(port, prompt):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("POST", "/v1/completions", body=json.dumps({"prompt": prompt, "max_tokens": 48, "temperature": 0}),
              headers={"Content-Type": "application/json"})
    r = json.loads(c.getresponse().read())
    c.close()
    return r["choices"][0]["text"]
def run(port):
    out = [None] * len(verses)
    ts = [threading.Thread(target=lambda i=i: out.__setitem__(i, one(port, verses[i]))) for i in range(len(verses))]
    for t in ts: t.start()
    for t in ts: t.join()
    return out
ref = None
print("| pool (lmc serve --device cuda, --kv-memory 256M) | KV blocks | bytes per token | pool MiB | greedy texts equal to the bf16 pool's |")
print("|---|---|---|---|---|")
for args in [[], ["--kv-dtype", "q8"], ["--kv-dtype", "q4"], ["--kv-dtype", "kivi2"]]:
    p, port, log = start(*args)
    try:
        texts = run(port)
    finally:
        p.terminate(); p.wait()
    if ref is None: ref = texts
    m = re.search(r"(\d+) KV blocks of (\d+) tokens \((\w+), (\d+) bytes per token, ([0-9.]+) MiB", log)
    blk, bpt, mib = (m.group(1) + " x " + m.group(2), m.group(4), m.group(5)) if m else ("?", "?", "?")
    print("| %s | %s | %s | %s | %d of %d |" % (" ".join(args) or "bf16", blk, bpt, mib,
                                               sum(a == b for a, b in zip(ref, texts)), len(ref)), flush=True)
PY
say "pools done ($(($(date +%s) - T1)) s)"
# ---- 3. speculation in the server, bf16 and kivi2 pools
for pool in bf16 kivi2; do
  [ "$(left)" -gt 40 ] || { say "spec $pool: skipped (budget)"; continue; }
  extra="--device cuda"; [ $pool = kivi2 ] && extra="--device cuda --kv-dtype kivi2"
  timeout $(left) python3 bench/serve_spec_cpu.py $LMC $M --levels "$LEVELS" --repeats "$REPEATS" --threads 4 \
    --server-args "$extra" >"$OUT/spec-$pool.md" 2>"$W/spec-$pool.err" ||
    { say "spec $pool FAILED or cut: $(tail -2 "$W/spec-$pool.err")"; rc=1; }
done
say "total $(($(date +%s) - T0)) s"
say ""
say "## paged attention, one decode step (bench_kv_paged --device cuda $SHAPE)"; cat "$OUT/attention.md" >>"$S"
say ""; say "## greedy texts per pool"; cat "$OUT/pools.md" >>"$S"
for pool in bf16 kivi2; do
  say ""; say "## server speculation (prompt lookup) vs plain, $pool pool, concurrency $LEVELS"
  [ -f "$OUT/spec-$pool.md" ] && cat "$OUT/spec-$pool.md" >>"$S"
done
cat "$S"
exit $rc
