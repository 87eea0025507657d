#!/usr/bin/env bash
# test_mp_train_cp_pp_cuda.sh — `lmc train --cp 2 --device cuda` (context
# parallel on the GPU: the ring's block math through the CUDA backend's
# attn_block ops, ops/cuda/attn_block.cu; K/V blocks staged through host
# buffers) on two ranks (mpirun, oversubscribed, both on the visible GPU;
# the tcp launcher when lmc has no MPI) against the one-process CUDA run,
# fp32 (--dtype fp32: no bf16 operand rounding): a 4-layer llama (4 heads,
# 2 KV heads) for 6 steps at --seq 64, accumulation 2; losses and
# validation losses within 1e-4 relative, final weights 1e-4 in norm.
# Skipped (exit 0, "skipped") where `lmc train --device cuda` cannot start
# (no GPU, a build without CUDA).
# Usage: test_mp_train_cp_pp_cuda.sh PATH/TO/lmc
set -u
LMC="$1"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2" >&2; fi; }
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" LMC_DIST_TIMEOUT=120
for i in $(seq 1 300); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 13))"; done >"$TMP/c.txt"
"$LMC" train-tokenizer --text-file "$TMP/c.txt" --vocab 300 --style llama3 -o "$TMP/tok" 2>"$TMP/err" &&
"$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/c.txt" --docs line --val-fraction 0.1 -o "$TMP/data" 2>"$TMP/err" ||
  { echo "FAIL: data: $(cat "$TMP/err")" >&2; exit 1; }
G="--data $TMP/data --arch llama --layers 4 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96 --seq 64
   --steps 6 --lr 3e-3 --warmup 2 --clip 0.5 --accum 2 --threads 1 --save-every 6 --eval-every 3 --eval-batches 2
   --batch 2 --device cuda --dtype fp32"
if ! "$LMC" train $G --steps 1 --save-every 0 -o "$TMP/probe" >"$TMP/probe.err" 2>&1; then
  echo "test_mp_train_cp_pp_cuda: skipped: lmc train --device cuda does not start here ($(tail -n 1 "$TMP/probe.err"))"
  exit 0
fi
A="$G" # mp_launch.sh's probe runs `lmc train $A --cp 2` (here on the GPU)
. tests/mp_launch.sh
"$LMC" train $G -o "$TMP/one" 2>"$TMP/one.err"; ok $? "one process on cuda: $(tail -n 3 "$TMP/one.err")"
launch 2 train cp2 $G --cp 2; ok $? "--cp 2 --device cuda: $(last cp2)"
python3 - "$TMP" <<'PY'
import json, struct, sys
tmp = sys.argv[1]
def rows(d): return [json.loads(l) for l in open(f"{tmp}/{d}/metrics.jsonl")]
def params(d):
    b = open(f"{tmp}/{d}/step_000006/model.safetensors", "rb").read()
    n = int.from_bytes(b[:8], "little"); h = json.loads(b[8:8 + n]); base = 8 + n; out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; out[k] = struct.unpack(f"<{(e - s) // 4}f", b[base + s:base + e])
    return out
ref, r = rows("one"), rows("cp2")
refp, p = params("one"), params("cp2")
assert len(r) == 6 and sorted(p) == sorted(refp)
worst = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(r, ref))
vals = [(a["val_loss"], b["val_loss"]) for a, b in zip(r, ref) if "val_loss" in b]
worst_v = max(abs(a - b) / abs(b) for a, b in vals)
norm_p = (sum((x - y) ** 2 for k in refp for x, y in zip(p[k], refp[k])) / sum(y * y for k in refp for y in refp[k])) ** 0.5
print(f"cp 2 on cuda vs one process on cuda: losses max rel {worst:.2e}, val {worst_v:.2e}, weights |diff| / |w| {norm_p:.2e}")
sys.exit(0 if len(vals) == 2 and worst <= 1e-4 and worst_v <= 1e-4 and norm_p <= 1e-4 else 1)
PY
ok $? "--cp 2 on cuda equals the one-process cuda run"
echo "test_mp_train_cp_pp_cuda: $pass passed, $fail failed"
[ $fail = 0 ]
