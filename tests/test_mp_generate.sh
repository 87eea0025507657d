#!/usr/bin/env bash
# test_mp_generate.sh — `lmc generate --tp 2`: two ranks started with
# torchrun-style variables (a free port from the OS, tried again with
# another one if it was taken meanwhile) shard llama-tiny and qwen2-tiny
# by heads and give the one-process greedy ids (--json, 12 tokens, float32
# weights); a run whose world is not --tp and a bad --tp are refused.
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
# --tp 2 in a one-process run
"$LMC" generate -m tests/fixtures/llama-tiny -p "hi" -n 2 --tp 2 >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ] && grep -q "needs 2 ranks" "$TMP/err"; ok $? "--tp 2 without ranks: $(cat "$TMP/err")"
"$LMC" generate -m tests/fixtures/llama-tiny -p "hi" -n 2 --tp 0 >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ]; ok $? "--tp 0 accepted"
echo "test_mp_generate: $pass passed, $fail failed"
[ $fail = 0 ]
