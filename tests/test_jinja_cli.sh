#!/usr/bin/env bash
# test_jinja_cli.sh — `lmc chat-template` end to end: for three of the real
# templates in tests/fixtures/chat_templates (Llama 3.2 with strftime_now,
# Qwen2.5 with tools, Gemma 2 which refuses system messages) every
# conversation printed by the command (--template, --now, --tools,
# --add-generation-prompt) equals transformers' rendering, refusals exit 1
# with the template's message; and -m DIR reads tokenizer_config.json.
# Usage: test_jinja_cli.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"
for t in meta-llama-Llama-3.2-3B-Instruct Qwen-Qwen2.5-7B-Instruct google-gemma-2-2b-it; do
  F=tests/fixtures/chat_templates/$t.json
  n=$(python3 -c "import json;print(len(json.load(open('$F'))['cases']))")
  python3 -c "import json;open('$TMP/t.jinja','w').write(json.load(open('$F'))['template'])"
  for i in $(seq 0 $((n-1))); do
    python3 - "$F" "$i" "$TMP" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); c = d["cases"][int(sys.argv[2])]; t = sys.argv[3]
json.dump({"messages": c["messages"], "bos_token": c["bos_token"], "eos_token": c["eos_token"]}, open(t + "/m.json", "w"))
json.dump(c["tools"], open(t + "/tools.json", "w"))
open(t + "/want", "w").write(c.get("rendered", ""))
open(t + "/want_err", "w").write(c.get("error", ""))
open(t + "/flags", "w").write(("--add-generation-prompt " if c["add_generation_prompt"] else "") +
                              ("--tools " + t + "/tools.json" if c["tools"] is not None else ""))
PY
    "$LMC" chat-template --template "$TMP/t.jinja" --messages "$TMP/m.json" --now 2026-12-05 $(cat "$TMP/flags") \
      >"$TMP/got" 2>"$TMP/err"
    rc=$?
    if [ -s "$TMP/want_err" ]; then
      [ $rc -eq 1 ] && grep -qF "$(cat "$TMP/want_err")" "$TMP/err"; ok $? "$t case $i refused: $(cat "$TMP/err")"
    else
      [ $rc -eq 0 ] && cmp -s "$TMP/got" "$TMP/want"; ok $? "$t case $i: $(cat "$TMP/err")"
    fi
  done
done
# -m DIR: tokenizer_config.json's template and tokens
mkdir -p "$TMP/model"
printf '%s' '{"eos_token": "</s>", "chat_template": "{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"}' \
  >"$TMP/model/tokenizer_config.json"
printf '%s' '[{"role": "user", "content": "hi"}]' >"$TMP/m.json"
got=$("$LMC" chat-template -m "$TMP/model" --messages "$TMP/m.json" --add-generation-prompt)
[ "$got" = "[user] hi</s>[assistant]" ]; ok $? "-m DIR renders ($got)"
"$LMC" chat-template -m "$TMP/model" --messages "$TMP/m.json" --now 2026-13-01 >/dev/null 2>&1
[ $? -eq 2 ]; ok $? "bad --now is a usage error"
"$LMC" chat-template -m "$TMP/nowhere" --messages "$TMP/m.json" >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "chat template" "$TMP/err"; ok $? "a folder without a template: $(cat "$TMP/err")"
echo "test_jinja_cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
