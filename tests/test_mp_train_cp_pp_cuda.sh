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
. "$(dirname "$0")/cli_common.sh"
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
python3 tests/mp_compare.py --root "$TMP" --step 6 cp2:one --rows 6 --keys --loss 1e-4 --val 1e-4 --val-count 2 \
  --norm 1e-4
ok $? "--cp 2 on cuda equals the one-process cuda run"
echo "test_mp_train_cp_pp_cuda: $pass passed, $fail failed"
[ $fail = 0 ]
