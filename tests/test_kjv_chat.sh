#!/usr/bin/env bash
# test_kjv_chat.sh — the default chat model, models/kjv-llama-chat:
# - its folder: ChatML chat template, <|im_start|>/<|im_end|> single
#   special tokens, <|im_end|> the end of sequence, the default model's
#   dtype, <= 25 MB;
# - `lmc chat-template` renders a conversation as ChatML;
# - `lmc chat` (stdin, greedy) answers "Quote Genesis 1:1" with verse-like
#   text, a follow-up in the same conversation with another, and a
#   held-out-book question ("Which verse comes after Ruth 1:14?", Ruth is
#   held out of the fine-tuning data) with a verse reference; no template
#   marker is printed. Structure only: the 10M model learned the format,
#   not the verses (README, "The default chat model": 0% exact match);
# - `lmc serve` answers through /v1/chat/completions: the reference
#   question ends by itself (<|im_end|> is the end of sequence,
#   finish_reason "stop").
# Usage: test_kjv_chat.sh PATH/TO/lmc
set -u
LMC="$1"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2" >&2; fi; }
TMP=$(mktemp -d)
SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
M=models/kjv-llama-chat

python3 - "$M" models/kjv-llama <<'PY'
import json, os, sys
m, base = sys.argv[1], sys.argv[2]
tc = json.load(open(m + "/tokenizer_config.json"))
assert "<|im_start|>" in tc["chat_template"] and "<|im_end|>" in tc["chat_template"], tc
assert tc["eos_token"] == "<|im_end|>", tc
tok = json.load(open(m + "/tokenizer.json"))
ids = {t["content"]: t["id"] for t in tok["added_tokens"] if t["special"]}
assert "<|im_start|>" in ids and "<|im_end|>" in ids, ids
cfg, bcfg = json.load(open(m + "/config.json")), json.load(open(base + "/config.json"))
assert cfg["eos_token_id"] == ids["<|im_end|>"], cfg
assert cfg["torch_dtype"] == bcfg["torch_dtype"], (cfg["torch_dtype"], bcfg["torch_dtype"])
size = sum(os.path.getsize(os.path.join(m, f)) for f in os.listdir(m))
assert size <= 25 * 1000 * 1000, size
PY
ok $? "model folder: ChatML template and tokens, eos, dtype, size"

printf '[{"role": "user", "content": "Quote Genesis 1:1"}]' > "$TMP/m.json"
"$LMC" chat-template -m "$M" --messages "$TMP/m.json" --add-generation-prompt > "$TMP/r.txt" 2> /dev/null
printf '<|im_start|>user\nQuote Genesis 1:1<|im_end|>\n<|im_start|>assistant\n' | cmp -s - "$TMP/r.txt"
ok $? "chat-template renders ChatML"
"$LMC" tokenize -m "$M" --text "<|im_start|>user" > "$TMP/ids" 2> /dev/null
python3 -c "import json,sys; ids=json.load(open(sys.argv[1])); assert len(ids) >= 2 and ids[0] == 8186, ids" "$TMP/ids"
ok $? "<|im_start|> is one special token"

printf 'Quote Genesis 1:1\nAnd the next verse?\n/reset\nWhich verse comes after Ruth 1:14?\n' |
    "$LMC" chat -m "$M" --temp 0 -n 80 --threads 2 > "$TMP/chat.out" 2> "$TMP/chat.err"
ok $? "lmc chat runs (stdin, greedy)"
python3 - "$TMP/chat.out" <<'PY'
import re, sys
lines = [l for l in open(sys.argv[1]).read().split("\n") if l.strip()]
assert len(lines) == 3, lines
assert "<|im_end|>" not in "".join(lines) and "<|im_start|>" not in "".join(lines), lines
assert len(lines[0].split()) >= 4 and lines[0][0].isupper(), lines[0]  # a verse
assert len(lines[1].split()) >= 4 and lines[1] != lines[0], lines[1]   # another one
assert re.fullmatch(r"(\d )?[A-Z][a-z]+( of [A-Z][a-z]+)? \d+:\d+", lines[2].strip()), lines[2]
PY
ok $? "answers: a verse, a follow-up verse, a held-out-book reference"

# the server's log read line by line until it says where it listens (an event, no polling)
exec 3< <(exec "$LMC" serve -m "$M" --host 127.0.0.1 --port 0 --threads 2 2>&1)
SPID=$!
PORT=
while read -r line <&3; do
    case "$line" in *"listening on http://127.0.0.1:"*) PORT=${line##*127.0.0.1:}; PORT=${PORT%%[!0-9]*}; break ;; esac
done
[ -n "$PORT" ]; ok $? "serve starts"
python3 - "$PORT" <<'PY'
import json, re, sys, urllib.request
body = {"messages": [{"role": "user", "content": "Which verse comes after Jonah 2:7?"}], "temperature": 0,
        "max_tokens": 40}
req = urllib.request.Request("http://127.0.0.1:%s/v1/chat/completions" % sys.argv[1], json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
r = json.loads(urllib.request.urlopen(req, timeout=120).read())
c = r["choices"][0]
assert re.fullmatch(r"(\d )?[A-Z][a-z]+( of [A-Z][a-z]+)? \d+:\d+", c["message"]["content"].strip()), c
assert c["finish_reason"] == "stop" and "<|im_end|>" not in c["message"]["content"], c
PY
ok $? "serve /v1/chat/completions answers with the chat template"

echo "test_kjv_chat: $pass passed, $fail failed"
[ $fail = 0 ]
