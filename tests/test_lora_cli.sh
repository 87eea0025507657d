#!/usr/bin/env bash
# test_lora_cli.sh — LoRA on the command line: `parity --lora` on the PEFT
# fixture (logits <= 1e-4), `lmc merge` (the merged folder gives the same
# logits; a bf16 base stays bf16), `generate`/`eval` with DIR:SCALE, and
# clean failures (missing adapter, an existing output folder, no temp
# folder left). Usage: test_lora_cli.sh PATH/TO/lmc
set -u
LMC="$1"
FIX=tests/fixtures/llama-tiny
. "$(dirname "$0")/cli_common.sh"

"$LMC" parity "$FIX" --lora "$FIX/lora" >"$TMP/p" 2>&1
ok $? "parity --lora: $(tail -3 "$TMP/p")"
[ "$(grep -c 'PASS  prompt [0-9] logits' "$TMP/p")" = 3 ]; ok $? "three prompts' logits checked"

"$LMC" merge -m "$FIX" --lora "$FIX/lora" -o "$TMP/merged" 2>"$TMP/err"
ok $? "merge: $(cat "$TMP/err")"
cp "$FIX/ref.json" "$FIX/lora/ref_logits.safetensors" "$TMP/merged/"
"$LMC" parity "$TMP/merged" >"$TMP/p" 2>&1
[ "$(grep -c 'PASS  prompt [0-9] logits' "$TMP/p")" = 3 ]; ok $? "merged logits: $(grep logits "$TMP/p")"

# dtype kept: a bf16 base merges into bf16 weights
"$LMC" convert -m "$FIX" -o "$TMP/bf16" --dtype bf16 2>/dev/null
"$LMC" merge -m "$TMP/bf16" --lora "$FIX/lora" -o "$TMP/mbf16" 2>/dev/null
ok $? "merge into a bf16 base"
python3 - "$TMP/mbf16/model.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
d = {v['dtype'] for k, v in h.items() if k != '__metadata__'}
sys.exit(0 if d == {'BF16'} else 1)
PY
ok $? "merged bf16 folder keeps BF16 tensors"

"$LMC" generate -m "$FIX" --lora "$FIX/lora:0.5" -p "Hello" -n 4 --temp 0 >/dev/null 2>"$TMP/err"
ok $? "generate --lora DIR:0.5: $(cat "$TMP/err")"
a=$("$LMC" eval -m "$FIX" --text "In the beginning God created" 2>/dev/null)
b=$("$LMC" eval -m "$FIX" --lora "$FIX/lora" --text "In the beginning God created" 2>/dev/null)
c=$("$LMC" eval -m "$FIX" --lora "$FIX/lora:0" --text "In the beginning God created" 2>/dev/null)
[ -n "$a" ] && [ "$a" != "$b" ] && [ "$a" = "$c" ]; ok $? "eval: adapter changes the loss, scale 0 does not ($a / $b / $c)"

"$LMC" generate -m "$FIX" --lora "$TMP/none" -p "Hi" -n 1 >/dev/null 2>"$TMP/err"
[ $? = 1 ] && grep -q "adapter_config.json" "$TMP/err"; ok $? "missing adapter named: $(cat "$TMP/err")"
"$LMC" merge -m "$FIX" --lora "$FIX/lora" -o "$TMP/merged" 2>"$TMP/err"
[ $? != 0 ] && ! ls -d "$TMP"/merged.tmp-* >/dev/null 2>&1; ok $? "merge onto an existing folder fails, no temp left"
"$LMC" parity "$FIX" --lora "$FIX/lora:2" >/dev/null 2>&1
[ $? = 2 ]; ok $? "parity refuses a scaled adapter"

for i in $(seq 1 50); do echo "line $i of some text for the shards"; done >"$TMP/corpus.txt"
"$LMC" prepare-data -m "$FIX" --text-file "$TMP/corpus.txt" -o "$TMP/data" >/dev/null 2>&1
"$LMC" train --data "$TMP/data" -o "$TMP/t" -m "$FIX" --lora "$FIX/lora" >/dev/null 2>"$TMP/err"
[ $? = 2 ] && grep -q "lora is not used" "$TMP/err"; ok $? "train refuses --lora: $(cat "$TMP/err")"

# serve --lora: the server's greedy completion is generate --lora's
if command -v curl >/dev/null; then
  "$LMC" serve -m "$FIX" --lora "$FIX/lora" --host 127.0.0.1 --port 0 >"$TMP/serve.log" 2>&1 &
  SPID=$!
  PORT=""
  for _ in $(seq 1 400); do
    PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/serve.log")
    [ -n "$PORT" ] && break
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.05
  done
  want=$("$LMC" generate -m "$FIX" --lora "$FIX/lora" -p "Once upon a time" -n 8 --temp 0 --no-special --json 2>/dev/null |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')
  got=$(curl -s "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
        -d '{"prompt":"Once upon a time","max_tokens":8,"temperature":0}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"])' 2>/dev/null)
  base=$("$LMC" generate -m "$FIX" -p "Once upon a time" -n 8 --temp 0 --no-special --json 2>/dev/null |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')
  [ -n "$PORT" ] && [ -n "$want" ] && [ "$got" = "$want" ] && [ "$want" != "$base" ]
  ok $? "serve --lora completes as generate --lora ('$got' / '$want', base '$base')"
  kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null
fi

echo "test_lora_cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
