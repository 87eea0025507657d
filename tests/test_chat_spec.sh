#!/usr/bin/env bash
# test_chat_spec.sh — lmc chat with speculative decoding, --kv-dtype and
# attention sinks (issue 17) on models/kjv-llama-chat, greedy, three user
# turns, /reset and the first question again:
# - --draft-model (also a token tree), --prompt-lookup, --self-spec give
#   plain chat's replies byte for byte, with an acceptance line a turn;
# - --kv-dtype q8 / kivi2 complete every turn, with speculation too; over
#   q8 (rows quantized one by one) speculation gives the replies of plain
#   chat with that cache (kivi2's rewinds into a quantized block return it
#   dequantized, so its replies depend on where the rounds rewound);
# - --attention-sinks 4 --kv-window 64 with --ctx 100 runs six turns where
#   plain chat fills the context at the third (tokens evicted, never "fills
#   the context"), its first reply plain chat's and its reply after /reset
#   its first one;
# - --tp/--ep/--pp still refused; sinks with a q8 cache and a draft model answer.
# Usage: test_chat_spec.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"
M=models/kjv-llama-chat
printf 'Quote Genesis 1:1\nAnd the next verse?\nWho was Moses?\n/reset\nQuote Genesis 1:1\n' >"$TMP/in.txt"
chat() { "$LMC" chat -m $M --temp 0 -n 24 --threads 2 "$@" <"$TMP/in.txt" >"$TMP/out.txt" 2>"$TMP/err.txt"; }
replies() { grep -c . "$TMP/out.txt"; }

chat; ok $? "plain chat: $(cat "$TMP/err.txt")"
cp "$TMP/out.txt" "$TMP/plain.txt"
[ "$(replies)" = 4 ]; ok $? "plain chat: 4 replies ($(replies))"
[ "$(sed -n 1p "$TMP/plain.txt")" = "$(sed -n 4p "$TMP/plain.txt")" ]; ok $? "plain chat: /reset starts over"

for f in "--draft-model $M" "--draft-model $M --draft-tokens 6 --draft-adapt off" "--draft-model $M --draft-tree 6" \
         "--prompt-lookup 2" "--self-spec 2" "--self-spec 1 --draft-tree 8"; do
  chat $f; ok $? "chat $f: $(grep lmc: "$TMP/err.txt")"
  cmp -s "$TMP/plain.txt" "$TMP/out.txt"; ok $? "chat $f: plain chat's replies ($(head -c 300 "$TMP/out.txt"))"
  [ "$(grep -c "lmc: speculative: [0-9]* rounds" "$TMP/err.txt")" = 4 ]; ok $? "chat $f: an acceptance line a turn"
done

for kv in "q8" "kivi2 --kv-residual 32"; do
  chat --kv-dtype $kv; ok $? "chat --kv-dtype $kv: $(grep lmc: "$TMP/err.txt")"
  [ "$(replies)" = 4 ] && ! grep -q "lmc: " "$TMP/err.txt"; ok $? "chat --kv-dtype $kv: 4 replies, no error"
  cp "$TMP/out.txt" "$TMP/kv.txt"
  for f in "--prompt-lookup 2" "--self-spec 2"; do
    chat --kv-dtype $kv $f; ok $? "chat --kv-dtype $kv $f"
    [ "$(replies)" = 4 ] && ! grep "lmc: " "$TMP/err.txt" | grep -vq "lmc: speculative"; ok $? "chat --kv-dtype $kv $f: 4 replies"
    [ "$kv" != q8 ] || cmp -s "$TMP/kv.txt" "$TMP/out.txt"; ok $? "chat --kv-dtype $kv $f: the replies of chat with that cache"
  done
done

# attention sinks: a bounded cache for an unbounded conversation
printf 'Quote Genesis 1:1\nAnd the next verse?\nWho was Moses?\nWho was Aaron?\nWhat did God say?\n/reset\nQuote Genesis 1:1\n' \
  >"$TMP/in.txt"
chat --ctx 100
grep -q "fills the context" "$TMP/err.txt"; ok $? "plain chat with --ctx 100 fills the context"
for f in "" "--self-spec 2" "--prompt-lookup 2"; do
  chat --ctx 100 --attention-sinks 4 --kv-window 64 $f; ok $? "sinks $f: $(grep lmc: "$TMP/err.txt" | grep -v speculative)"
  [ "$(replies)" = 6 ] && ! grep -q "fills the context" "$TMP/err.txt"; ok $? "sinks $f: 6 replies ($(replies))"
  grep -qE "lmc: speculative: .* [1-9][0-9]* evicted" "$TMP/err.txt"; ok $? "sinks $f: tokens evicted"
  [ "$(sed -n 1p "$TMP/out.txt")" = "$(sed -n 1p "$TMP/plain.txt")" ]; ok $? "sinks $f: first reply plain chat's"
  [ "$(sed -n 1p "$TMP/out.txt")" = "$(sed -n 6p "$TMP/out.txt")" ]; ok $? "sinks $f: /reset starts over"
done

for f in "--tp 2" "--ep 2" "--pp 2"; do
  echo hi | "$LMC" chat -m $M $f >/dev/null 2>"$TMP/err"; rc=$?
  [ $rc = 2 ] && grep -q "pp/--tp/--ep run in" "$TMP/err"; ok $? "chat $f refused (rc $rc)"
done
printf 'hi\nAnd God said\n' | "$LMC" chat -m $M --temp 0 -n 24 --attention-sinks 4 --kv-window 64 --kv-dtype q8 \
  --draft-model $M >"$TMP/out.txt" 2>"$TMP/err"; rc=$?
[ $rc = 0 ] && [ "$(grep -c . "$TMP/out.txt")" -ge 1 ] && grep -q "lmc: speculative:" "$TMP/err"; ok $? "chat: sinks with a q8 cache and a draft model (rc $rc)"

echo "test_chat_spec: $pass passed, $fail failed"
[ $fail = 0 ]
