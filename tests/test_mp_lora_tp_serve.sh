#!/usr/bin/env bash
# test_mp_lora_tp_serve.sh — `lmc serve --tp 2` with what the shard now
# splits (dist/tp_model.h): a --lora DIR adapter applied to every request
# (random rank-4 adapter on every layer linear, tests/make_random_lora.py;
# A / B cut with the base) on llama-tiny and qwen2-tiny, and a quantized
# folder (qwen2-tiny rtn int4, groups of 32: codes cut by rows and whole
# groups). 8 concurrent requests (greedy, seeded sampling, streamed) give
# the texts and finish reasons of the one-process server on the same
# folder and adapter; SIGTERM to rank 0 ends both ranks with status 0;
# named adapters (--lora NAME=DIR) with --tp are refused. Waits on the
# servers' log lines (pipes), never on a clock; ports from the OS.
# Usage: test_mp_lora_tp_serve.sh PATH/TO/lmc
set -u
LMC="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
command -v python3 >/dev/null || { echo "test_mp_lora_tp_serve: skipped (python3 missing)"; exit 0; }
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" LMC_DIST_TIMEOUT=120
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
for fx in llama-tiny qwen2-tiny; do
  python3 tests/make_random_lora.py tests/fixtures/$fx "$TMP/ad-$fx" 4 8 q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj 11 ||
    { echo "FAIL: adapter for $fx" >&2; exit 1; }
done
"$LMC" quantize -m tests/fixtures/qwen2-tiny -o "$TMP/q-int4" --method rtn --bits 4 --group 32 2>"$TMP/err" >/dev/null ||
  { echo "FAIL: quantize: $(cat "$TMP/err")" >&2; exit 1; }
python3 - "$LMC" "$TMP" <<'PY'
import os, subprocess, sys
sys.path.insert(0, "tests")
import mp_serve  # tests/mp_serve.py: the servers' launcher and requests
from mp_serve import check
lmc, tmp = sys.argv[1], sys.argv[2]

def start(model, world, extra):
    """one process, or world ranks with --tp world; the folder's dtype"""
    return mp_serve.start(lmc, model, world, ["--tp", str(world)], extra, dtype=())

REQS = []
for i in range(8):
    b = {"prompt": f"request {i}: the quick brown fox" + " jumps" * (i % 3), "max_tokens": 8 + i % 4,
         "temperature": 0, "ignore_eos": True}
    if i % 3 == 1: b.update(temperature=0.8, seed=50 + i)
    if i % 3 == 2: b["stream"] = True
    REQS.append(b)

def run_all(port): return mp_serve.run_all(port, REQS)

cases = [("tests/fixtures/llama-tiny", ["--lora", f"{tmp}/ad-llama-tiny"], "llama-tiny --lora"),
         ("tests/fixtures/qwen2-tiny", ["--lora", f"{tmp}/ad-qwen2-tiny"], "qwen2-tiny --lora"),
         (f"{tmp}/q-int4", [], "qwen2-tiny rtn int4 g32")]
base = None
for model, extra, what in cases:
    procs, port, logs, drains = start(model, 1, extra)
    check(port is not None, f"{what}: one-process server did not start: {''.join(logs[0])}")
    if port is None: continue
    ref = run_all(port)
    mp_serve.stop(procs, drains)
    if what.startswith("llama"):  # the adapter changes the answers (without it: the base's)
        procs, port, logs, drains = start(model, 1, [])
        if port is not None:
            base = run_all(port)
            mp_serve.stop(procs, drains)
        check(base is not None and base != ref, f"{what}: the adapter leaves the answers unchanged")
    procs, port, logs, drains = start(model, 2, extra)
    check(port is not None, f"{what} --tp 2: server did not start: {''.join(logs[0])}")
    if port is None:
        for p in procs: p.kill()
        continue
    got = run_all(port)
    codes = mp_serve.stop(procs, drains)
    check(codes == [0, 0], f"{what} --tp 2 exit codes {codes}: {''.join(logs[1])[-500:]}")
    for k, (a, b) in enumerate(zip(got, ref)):
        check(a == b and not isinstance(a, str), f"{what} request {k} {REQS[k]}: --tp 2 {a} vs one process {b}")
    print(f"{what} --tp 2: {sum(a == b for a, b in zip(got, ref))}/{len(REQS)} requests equal to one process")
env = dict(os.environ, RANK="0", WORLD_SIZE="2")
p = subprocess.run([lmc, "serve", "-m", "tests/fixtures/llama-tiny", "--port", "0", "--tp", "2", "--lora",
                    f"a1={tmp}/ad-llama-tiny"], env=env, capture_output=True, timeout=60)
check(p.returncode == 2 and b"named --lora" in p.stderr, f"--tp with a named adapter: {p.returncode} {p.stderr[-300:]}")
print(f"test_mp_lora_tp_serve: {mp_serve.fails} failed")
sys.exit(1 if mp_serve.fails else 0)
PY
