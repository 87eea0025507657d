#!/usr/bin/env bash
# test_lora_serve.sh — adapters on the command line and multi-adapter
# serving on llama-tiny with two different adapters (the PEFT fixture and a
# random rank-3 one on other modules, tests/make_random_lora.py):
# `chat --lora` answers as `generate --lora` on the rendered prompt;
# `--lora` repeats (A then A:-1 cancels back to the base's loss);
# `serve --lora a1=DIR --lora a2=DIR` lists base, a1 and a2 in /v1/models,
# answers an unknown model with a 404 OpenAI error, and 9 concurrent
# greedy requests (base, a1, a2 x 3 prompts) each give exactly the text
# `generate` gives alone with that adapter (or none); the prefix cache is
# keyed by adapter (a prompt served under a1 is not a cache hit for a2, and
# is one for a1 again). Usage: test_lora_serve.sh PATH/TO/lmc
set -u
LMC="$1"
FIX=tests/fixtures/llama-tiny
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2" >&2; fi; }
TMP=$(mktemp -d)
SPID=""
trap '[ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$TMP"' EXIT

python3 tests/make_random_lora.py "$FIX" "$TMP/ad2" 3 6 k_proj,o_proj,up_proj 7
ok $? "second adapter written"

# --lora repeats: A and A scaled by -1 cancel
a=$("$LMC" eval -m "$FIX" --text "In the beginning God created" --json 2>/dev/null)
b=$("$LMC" eval -m "$FIX" --lora "$FIX/lora" --lora "$FIX/lora:-1" --text "In the beginning God created" --json 2>/dev/null)
c=$("$LMC" eval -m "$FIX" --lora "$FIX/lora" --lora "$TMP/ad2" --text "In the beginning God created" --json 2>/dev/null)
python3 - "$a" "$b" "$c" <<'PY'
import json, sys
a, b, c = (json.loads(s)["nll"] for s in sys.argv[1:4])
sys.exit(0 if abs(a - b) <= 1e-5 * abs(a) and abs(a - c) > 1e-3 else 1)
PY
ok $? "eval --lora A --lora A:-1 is the base, two adapters are not ($a / $b / $c)"

# chat --lora: turn 1 equals generate --lora on the rendered prompt
C="$TMP/chat"; mkdir -p "$C"; cp "$FIX"/*.json "$FIX"/model.safetensors "$C/"
python3 - "$C/tokenizer_config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["chat_template"] = ("{% for message in messages %}"
  "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
json.dump(c, open(p, "w"))
PY
printf 'hello there\n/exit\n' | "$LMC" chat -m "$C" --lora "$TMP/ad2" --temp 0 -n 6 >"$TMP/chat.out" 2>"$TMP/chat.err"
ok $? "chat --lora: $(cat "$TMP/chat.err")"
r1=$(sed -n 1p "$TMP/chat.out")
p1=$'<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n'
g1=$("$LMC" generate -m "$C" --lora "$TMP/ad2" -p "$p1" --no-special --temp 0 -n 6 --stop '<|im_end|>' 2>/dev/null)
g0=$("$LMC" generate -m "$C" -p "$p1" --no-special --temp 0 -n 6 --stop '<|im_end|>' 2>/dev/null)
[ -n "$r1" ] && [ "$r1" = "$g1" ] && [ "$g1" != "$g0" ]
ok $? "chat --lora turn 1 equals generate --lora ('$r1' vs '$g1', base '$g0')"

if ! command -v curl >/dev/null; then
  echo "test_lora_serve: curl missing, serve part skipped"
  echo "test_lora_serve: $pass passed, $fail failed"; [ "$fail" = 0 ]; exit
fi

"$LMC" serve -m "$FIX" --lora a1="$FIX/lora" --lora "a2=$TMP/ad2" --host 127.0.0.1 --port 0 \
  --max-batch 16 --block-size 4 >"$TMP/serve.log" 2>&1 &
SPID=$!
PORT=""
for _ in $(seq 1 1200); do
  PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/serve.log")
  [ -n "$PORT" ] && break
  kill -0 "$SPID" 2>/dev/null || break
  sleep 0.05
done
[ -n "$PORT" ]; ok $? "serve with two named adapters starts: $(cat "$TMP/serve.log")"
U="http://127.0.0.1:$PORT"

curl -s "$U/v1/models" >"$TMP/models"
python3 - "$TMP/models" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["data"]
ids = [m["id"] for m in d]
ok = ids == ["llama-tiny", "a1", "a2"] and "parent" not in d[0] and d[1]["parent"] == d[2]["parent"] == "llama-tiny"
sys.exit(0 if ok else 1)
PY
ok $? "/v1/models lists base, a1, a2: $(cat "$TMP/models")"

code=$(curl -s -o "$TMP/e404" -w '%{http_code}' "$U/v1/completions" -H 'Content-Type: application/json' \
       -d '{"model":"a3","prompt":"Hi","max_tokens":2}')
python3 - "$TMP/e404" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["error"]
sys.exit(0 if e["code"] == "model_not_found" and e["param"] == "model" and "a3" in e["message"] else 1)
PY
r=$?; [ "$code" = 404 ] && [ $r = 0 ]; ok $? "unknown model: 404 model_not_found ($code $(cat "$TMP/e404"))"

# 9 concurrent requests: base / a1 / a2 x 3 prompts
PROMPTS=("Once upon a time" "In the beginning God created the heaven" "And the earth was without form, and void")
i=0; pids=()
for p in "${PROMPTS[@]}"; do
  for m in llama-tiny a1 a2; do
    body=$(python3 -c 'import json,sys; print(json.dumps({"model":sys.argv[1],"prompt":sys.argv[2],"max_tokens":12,"temperature":0}))' "$m" "$p")
    curl -s "$U/v1/completions" -H 'Content-Type: application/json' -d "$body" >"$TMP/r$i" &
    pids+=($!)
    i=$((i+1))
  done
done
for pid in "${pids[@]}"; do wait "$pid"; done
i=0
for p in "${PROMPTS[@]}"; do
  for m in llama-tiny a1 a2; do
    case $m in a1) L=(--lora "$FIX/lora");; a2) L=(--lora "$TMP/ad2");; *) L=();; esac
    want=$("$LMC" generate -m "$FIX" "${L[@]}" -p "$p" -n 12 --temp 0 --no-special --json 2>/dev/null |
           python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')
    got=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["choices"][0]["text"]); assert d["model"] == sys.argv[2], d["model"]' "$TMP/r$i" "$m" 2>/dev/null)
    [ -n "$want" ] && [ "$got" = "$want" ]; ok $? "mixed batch: $m on '$p' equals generate alone, response model $m ('$got' / '$want')"
    eval "W_${m//-/_}_$((i/3))=\"\$want\""
    i=$((i+1))
  done
done
[ "$W_a1_0" != "$W_llama_tiny_0" ] && [ "$W_a2_0" != "$W_llama_tiny_0" ] && [ "$W_a1_0" != "$W_a2_0" ]
ok $? "the three models answer differently ('$W_llama_tiny_0' / '$W_a1_0' / '$W_a2_0')"

# prefix cache keyed by adapter
LONGP="Thou shalt love thy neighbour as thyself, and the second is like unto it, saith the scripture of old"
cached() {
  body=$(python3 -c 'import json,sys; print(json.dumps({"model":sys.argv[1],"prompt":sys.argv[2],"max_tokens":2,"temperature":0}))' "$1" "$2")
  curl -s "$U/v1/completions" -H 'Content-Type: application/json' -d "$body" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["usage"]["prompt_tokens_details"]["cached_tokens"])'
}
c1=$(cached a1 "$LONGP"); c2=$(cached a2 "$LONGP"); c0=$(cached llama-tiny "$LONGP"); c3=$(cached a1 "$LONGP")
[ "$c1" = 0 ] && [ "$c2" = 0 ] && [ "$c0" = 0 ] && [ -n "$c3" ] && [ "$c3" -gt 0 ]
ok $? "prefix cache per adapter: a1 $c1, then a2 $c2, base $c0, a1 again $c3 cached tokens"

kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; SPID=""

# bad named adapters fail cleanly
"$LMC" serve -m "$FIX" --lora "a1=$TMP/none" --port 0 >/dev/null 2>"$TMP/err"
[ $? = 1 ] && grep -q "a1" "$TMP/err" && grep -q "adapter_config.json" "$TMP/err"; ok $? "missing named adapter: $(cat "$TMP/err")"
"$LMC" serve -m "$FIX" --lora "a1=$FIX/lora" --lora "a1=$TMP/ad2" --port 0 >/dev/null 2>"$TMP/err"
[ $? = 2 ] && grep -q "twice" "$TMP/err"; ok $? "duplicate adapter name: $(cat "$TMP/err")"
"$LMC" serve -m "$FIX" --lora "llama-tiny=$FIX/lora" --port 0 >/dev/null 2>"$TMP/err"
[ $? = 1 ] && grep -q "base model" "$TMP/err"; ok $? "adapter named as the base: $(cat "$TMP/err")"

echo "test_lora_serve: $pass passed, $fail failed"
[ "$fail" = 0 ]
