#!/usr/bin/env bash
# test_mp_generate.sh — `lmc generate --tp 2`: two ranks started with
# torchrun-style variables (a free port from the OS, held for them:
# port_hold.sh) shard llama-tiny and qwen2-tiny
# by heads and give the one-process greedy ids (--json, 12 tokens, float32
# weights); with --tp-vocab (the embedding and head split by vocabulary
# rows, the logits all-gathered for the sampler) under mpirun -np 2 and 4
# (oversubscribed, when installed and lmc has MPI) the same greedy ids and
# the one-process ids of a seeded sampled run; a run whose world is not
# --tp, a bad --tp and --tp-vocab without --tp are refused.
# Usage: test_mp_generate.sh PATH/TO/lmc
set -u
MP_LEAKS=1 # LeakSanitizer on, but under mpirun (mp_leaks_off there)
. "$(dirname "$0")/mp_launch.sh" "$1"
ids() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p' "$1"; }
for fx in llama-tiny qwen2-tiny; do
  M=tests/fixtures/$fx
  "$LMC" generate -m "$M" -p "hello world, this is" -n 12 --temp 0 --ignore-eos --dtype f32 --json >"$TMP/one" 2>"$TMP/one.err"
  ok $? "$fx one process: $(cat "$TMP/one.err")"
  LMC_DIST_TIMEOUT=60 MP_SPLIT=1 mp_ranks 2 tp generate -m "$M" -p "hello world, this is" -n 12 --temp 0 --ignore-eos \
    --json --tp 2
  ok $? "$fx --tp 2 exit: $(cat "$TMP/tp.r0.err" "$TMP/tp.r1.err")"
  [ -n "$(ids "$TMP/one")" ] && [ "$(ids "$TMP/one")" = "$(ids "$TMP/tp.r0")" ]; ok $? "$fx --tp 2 ids [$(ids "$TMP/tp.r0")] vs [$(ids "$TMP/one")]"
  [ ! -s "$TMP/tp.r1" ]; ok $? "$fx rank 1 printed: $(cat "$TMP/tp.r1")"
done
# --tp-vocab under mpirun: greedy and seeded sampling
if [ $HAVE_MPIRUN = 1 ]; then
  # Open MPI's own allocations (op selection, its plugins) are never freed: LeakSanitizer off
  # under mpirun, as in the other mpirun tests
  mp_leaks_off
  for fx in llama-tiny qwen2-tiny; do
    M=tests/fixtures/$fx
    for S in "--temp 0" "--temp 0.9 --top-k 40 --seed 7"; do
      "$LMC" generate -m "$M" -p "hello world, this is" -n 12 $S --ignore-eos --dtype f32 --json >"$TMP/one" 2>"$TMP/one.err"
      for np in 2 4; do
        timeout 120 "${MPIRUN[@]}" -np $np "$LMC" generate -m "$M" -p "hello world, this is" -n 12 $S --ignore-eos --json --tp $np \
          --tp-vocab >"$TMP/v" 2>"$TMP/v.err"
        rc=$?
        if mp_no_mpi "$TMP/v.err"; then echo "test_mp_generate: mpirun part skipped (no MPI)"; break 3; fi
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
