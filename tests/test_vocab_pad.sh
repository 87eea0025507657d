#!/usr/bin/env bash
# test_vocab_pad.sh — a model whose embedding has more rows than its
# tokenizer has tokens (tests/quant/pad_vocab.py: llama-tiny padded from
# 512 to 600 rows, the padded head rows made to win) samples ids with no
# token: lmc generate (greedy and sampled) finishes, those ids decode as no
# text (the text equals the decoding of the other ids), and lmc serve
# answers the same completion (200, same text), streamed too.
# Usage: test_vocab_pad.sh PATH/TO/lmc
set -u
LMC="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
TMP=$(mktemp -d)
SRV=""
cleanup() { [ -n "$SRV" ] && kill "$SRV" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
pass=0; fail=0
ok() { if [ "$1" -eq 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2"; fi; }
python3 -c "import numpy" 2>/dev/null || { echo "test_vocab_pad: skipped (numpy)"; exit 0; }
P="$TMP/pad"
python3 tests/quant/pad_vocab.py tests/fixtures/llama-tiny "$P" 600 2>"$TMP/err"; ok $? "pad: $(cat "$TMP/err")"
for args in "--temp 0" "--temp 1 --seed 3" "--temp 1.5 --seed 11"; do
  "$LMC" generate -m "$P" -p "The king said" -n 12 $args --ignore-eos --json >"$TMP/g.json" 2>"$TMP/err"
  ok $? "generate $args on the padded model: $(cat "$TMP/err")"
  valid=$(python3 -c "import json;j=json.load(open('$TMP/g.json'));print(','.join(str(i) for i in j['ids'] if i<512))")
  npad=$(python3 -c "import json;j=json.load(open('$TMP/g.json'));print(sum(i>=512 for i in j['ids']))")
  # partial UTF-8 sequences: generate's JSON writes U+FFFD, detokenize the raw bytes; compared without them
  want=$([ -n "$valid" ] && "$LMC" detokenize -m "$P" --ids "$valid" 2>/dev/null | python3 -c "import sys;print(sys.stdin.buffer.read().decode('utf-8','replace').rstrip('\n').replace('\ufffd',''))")
  got=$(python3 -c "import json;print(json.load(open('$TMP/g.json'))['text'].replace('\ufffd',''))")
  [ "$got" = "$want" ]; ok $? "generate $args: $npad padded ids decode as no text: '$got' vs '$want'"
  [ "$args" != "--temp 0" ] || [ "$npad" -gt 0 ]; ok $? "greedy picks padded ids ($npad)"
done
"$LMC" generate -m "$P" -p "The king said" -n 12 --temp 0 --ignore-eos --json >"$TMP/g.json" 2>/dev/null
want=$(python3 -c "import json;print(json.load(open('$TMP/g.json'))['text'])")
mkfifo "$TMP/log"
"$LMC" serve -m "$P" --host 127.0.0.1 --port 0 >"$TMP/log" 2>&1 &
SRV=$!
exec 3<"$TMP/log"
PORT=""
while IFS= read -r line <&3; do
  case "$line" in *"listening on http://127.0.0.1:"*) PORT=${line##*127.0.0.1:}; PORT=${PORT%%[!0-9]*}; break ;; esac
done
cat <&3 >/dev/null &
if [ -z "$PORT" ]; then ok 1 "serve on the padded model started"; else
  code=$(curl -s -o "$TMP/r.json" -w '%{http_code}' -d '{"prompt":"The king said","max_tokens":12,"temperature":0,"ignore_eos":true}' \
         "http://127.0.0.1:$PORT/v1/completions")
  got=$(python3 -c "import json;print(json.load(open('$TMP/r.json'))['choices'][0]['text'])" 2>/dev/null)
  [ "$code" = 200 ] && [ "$got" = "$want" ]; ok $? "serve: $code '$got' vs generate '$want'"
  curl -s -N -d '{"prompt":"The king said","max_tokens":12,"temperature":0,"ignore_eos":true,"stream":true}' \
       "http://127.0.0.1:$PORT/v1/completions" >"$TMP/s.txt"
  got=$(python3 -c "
import json
t=''
for l in open('$TMP/s.txt'):
    l=l.strip()
    if l.startswith('data: ') and l!='data: [DONE]': t+=json.loads(l[6:])['choices'][0]['text']
print(t)")
  grep -q "data: \[DONE\]" "$TMP/s.txt" && [ "$got" = "$want" ]; ok $? "serve streamed: '$got' vs '$want'"
fi
echo "test_vocab_pad: $pass passed, $fail failed"
[ $fail = 0 ]
