#!/usr/bin/env bash
# test_bench_qmatmul_cuda.sh — the CPU side of bench/bench_qmatmul_cuda.c
# (its GPU timings run in bench/run_cuda.sh qmatmul): --dry-run prepares
# every format's host weight on small shapes and prints the table, and bad
# arguments are refused with exit 2 and a message naming them. Skipped
# (exit 0) when the build has no bench_qmatmul_cuda.
# Usage: test_bench_qmatmul_cuda.sh PATH/TO/lmc
set -u
B="$(dirname "$1")/bench_qmatmul_cuda"
[ -x "$B" ] || { echo "test_bench_qmatmul_cuda: skipped: no $B"; exit 0; }
fails=0
ok() { if [ "$1" = 0 ]; then echo "ok   $2"; else echo "FAIL $2"; fails=$((fails + 1)); fi; }
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
"$B" --dry-run --shapes 96x256,33x512 --formats q4_0,q8_0,q4_k,gptq4,nf4,awq4,ternary,q6_k --batches 1,3 \
  --prefill 40 >"$TMP/out" 2>&1
ok $? "dry run exits 0: $(tail -2 "$TMP/out")"
[ "$(grep -cE '^(q4_0|q8_0|q4_k|gptq4|nf4|awq4|ternary|q6_k) +(96x256|33x512) +host' "$TMP/out")" = 16 ]
ok $? "dry run: one row per format and shape"
# 33 rows of Q8_0 over 512: 16 blocks of 34 bytes each
grep -qE '^q8_0 +33x512 +host +- +0\.02 ' "$TMP/out"; ok $? "dry run: Q8_0 bytes (33*16*34 = 17952)"
grep -q "M = 1 3 and prefill 40" "$TMP/out"; ok $? "dry run: the batches parsed"
bad() { # LAST: the message expected
  "$B" "$@" >"$TMP/err" 2>&1; r=$?
  [ $r = 2 ] && grep -qF "$LAST" "$TMP/err"; ok $? "refused: $* ($(head -1 "$TMP/err"))"
}
LAST="unknown format 'q9'" bad --dry-run --formats q4_0,q9
LAST="bad value '100x100'" bad --dry-run --shapes 100x100
LAST="bad value '1,0'" bad --dry-run --batches 1,0
LAST="bad value '4096x'" bad --dry-run --shapes 4096x
LAST="needs a value" bad --dry-run --prefill
LAST="unknown option --frobnicate" bad --frobnicate 1
echo "test_bench_qmatmul_cuda: $fails failures"
[ $fails = 0 ]
