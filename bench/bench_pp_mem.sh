#!/usr/bin/env bash
# bench_pp_mem.sh — per-rank peak resident memory of `lmc train --pp P`
# (each stage holding only its part of the model: trainer_pp.h) at PP 1, 2
# and 4 on a ~110M-parameter llama (hidden 768, 12 layers, 12 heads, MLP
# 2048, vocabulary 16384; random weights), against `lmc info --pp P`'s
# per-stage figure for the same layout. Each rank prints its VmHWM after
# the last step, before the checkpoint gather (LMC_PP_LOG_PEAK); one step
# of --accum 4 micro-batches of 1 x 64 tokens. Oversubscribed mpirun.
# Usage: bench/bench_pp_mem.sh PATH/TO/lmc [PP list, default "1 2 4"]
set -eu
LMC="$1"; PPS="${2:-1 2 4}"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
for i in $(seq 1 400); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 13))"; done >"$TMP/c.txt"
"$LMC" train-tokenizer --text-file "$TMP/c.txt" --vocab 300 --style llama3 -o "$TMP/tok" 2>/dev/null
"$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/c.txt" --docs line --val-fraction 0.1 -o "$TMP/data" 2>/dev/null
A="--data $TMP/data --arch llama --layers 12 --hidden 768 --heads 12 --kv-heads 12 --intermediate 2048 --vocab 16384
   --seq 64 --batch 1 --accum 4 --steps 1 --warmup 0 --eval-every 0 --threads 1"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 LMC_PP_LOG_PEAK=1 LMC_DIST_TIMEOUT=600
MP="mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo"
echo "| PP | rank | parameter floats held | peak RSS MiB over the steps | with the checkpoint | lmc info per-stage total MiB (stage 0) |"
echo "|---|---|---|---|---|---|"
for P in $PPS; do
  if [ "$P" = 1 ]; then "$LMC" train $A -o "$TMP/pp$P" 2>"$TMP/pp$P.err"
  else $MP -np "$P" "$LMC" train $A --pp "$P" -o "$TMP/pp$P" >"$TMP/pp$P.err" 2>&1; fi
  [ -d "$TMP/model" ] || cp -r "$TMP/pp$P/step_000001" "$TMP/model"
  info=$("$LMC" info -m "$TMP/model" --pp "$P" --seq 64 --batch 1 --micro-batches 4 --json |
         python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["total"] / 2**20))')
  for s in $(seq 0 $((P - 1))); do
    pat="pipeline stage $s of $P (data-parallel rank 0): \([0-9]*\) parameter floats, peak RSS \([0-9.]*\) MiB"
    n=$(sed -n "s/.*$pat over the steps.*/\1/p" "$TMP/pp$P.err")
    a=$(sed -n "s/.*$pat over the steps.*/\2/p" "$TMP/pp$P.err")
    b=$(sed -n "s/.*$pat with the checkpoint.*/\2/p" "$TMP/pp$P.err")
    echo "| $P | $s | $n | $a | $b | $info |"
  done
done
