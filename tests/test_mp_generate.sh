#!/usr/bin/env bash
# test_mp_generate.sh — `lmc generate --tp 2`: two ranks started with
# torchrun-style variables (a free port from the OS, tried again with
# another one if it was taken meanwhile) shard llama-tiny and qwen2-tiny
# by heads and give the one-process greedy ids (--json, 12 tokens, float32
# weights); with --tp-vocab (the embedding and head split by vocabulary
# rows, the logits all-gathered for the sampler) under mpirun -np 2 and 4
# (oversubscribed, when installed and lmc has MPI) the same greedy ids and
# the one-process ids of a seeded sampled run; a run whose world is not
# --tp, a bad --tp and --tp-vocab without --tp are refused.
# Usage: test_mp_generate.sh PATH/TO/lmc
set -u
LMC="$1"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2" >&2; fi; }
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
ids() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p' "$1"; }
for fx in llama-tiny qwen2-tiny; do
  M=tests/fixtures/$fx
  "$LMC" generate -m "$M" -p "hello world, this is" -n 12 --temp 0 --ignore-eos --dtype f32 --json >"$TMP/one" 2>"$TMP/one.err"
  ok $? "$fx one process: $(cat "$TMP/one.err")"
  for try in 1 2 3; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port LMC_DIST_TIMEOUT=60 \
      "$LMC" generate -m "$M" -p "hello world, this is" -n 12 --temp 0 --ignore-eos --json --tp 2 >"$TMP/r1" 2>"$TMP/r1.err" &
    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port LMC_DIST_TIMEOUT=60 \
      "$LMC" generate -m "$M" -p "hello world, this is" -n 12 --temp 0 --ignore-eos --json --tp 2 >"$TMP/r0" 2>"$TMP/r0.err"
    rc0=$?; wait $!; rc1=$?
    grep -q "cannot listen" "$TMP/r0.err" || break
  done
  [ $rc0 = 0 ] && [ $rc1 = 0 ]; ok $? "$fx --tp 2 exit $rc0/$rc1: $(cat "$TMP/r0.err" "$TMP/r1.err")"
  [ -n "$(ids "$TMP/one")" ] && [ "$(ids "$TMP/one")" = "$(ids "$TMP/r0")" ]; ok $? "$fx --tp 2 ids [$(ids "$TMP/r0")] vs [$(ids "$TMP/one")]"
  [ ! -s "$TMP/r1" ]; ok $? "$fx rank 1 printed: $(cat "$TMP/r1")"
done
# --tp-vocab under mpirun: greedy and seeded sampling
if command -v mpirun >/dev/null 2>&1; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
  # Open MPI's own allocations (op selection, its plugins) are never freed: LeakSanitizer off
  # under mpirun, as in the other mpirun tests
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
  MPI="timeout 120 mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo"
  for fx in llama-tiny qwen2-tiny; do
    M=tests/fixtures/$fx
    for S in "--temp 0" "--temp 0.9 --top-k 40 --seed 7"; do
      "$LMC" generate -m "$M" -p "hello world, this is" -n 12 $S --ignore-eos --dtype f32 --json >"$TMP/one" 2>"$TMP/one.err"
      for np in 2 4; do
        $MPI -np $np "$LMC" generate -m "$M" -p "hello world, this is" -n 12 $S --ignore-eos --json --tp $np \
          --tp-vocab >"$TMP/v" 2>"$TMP/v.err"
        rc=$?
        if grep -q "without MPI\|no MPI" "$TMP/v.err"; then echo "test_mp_generate: mpirun part skipped (no MPI)"; break 3; fi
        [ $rc = 0 ] && [ -n "$(ids "$TMP/one")" ] && [ "$(ids "$TMP/one")" = "$(ids "$TMP/v")" ]
        ok $? "$fx --tp $np --tp-vocab $S ids [$(ids "$TMP/v")] vs [$(ids "$TMP/one")]: $(tail -n 3 "$TMP/v.err")"
      done
    done
  done
fi
"$LMC" generate -m tests/fixtures/llama-tiny -p "hi" -n 2 --tp-vocab >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ] && grep -q "give --tp N" "$TMP/err"; ok $? "--tp-vocab without --tp: $(cat "$TMP/err")"
# --tp 2 in a one-process run
"$LMC" generate -m tests/fixtures/llama-tiny -p "hi" -n 2 --tp 2 >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ] && grep -q "needs 2 ranks" "$TMP/err"; ok $? "--tp 2 without ranks: $(cat "$TMP/err")"
"$LMC" generate -m tests/fixtures/llama-tiny -p "hi" -n 2 --tp 0 >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ]; ok $? "--tp 0 accepted"
echo "test_mp_generate: $pass passed, $fail failed"
[ $fail = 0 ]
