#!/usr/bin/env bash
# test_webui.sh — the chat page of `lmc serve` in headless Chromium: it
# loads from the server alone (no external resource), sends a message given
# as ?q=..., streams the reply into the page, and the reply shown equals the
# greedy chat completion from the API; the status line shows tokens/s.
# Skips (exit 0) only when no chromium can be found or installed.
# Usage: test_webui.sh PATH/TO/lmc
set -u
LMC="$1"
CHROME=""
for c in chromium chromium-browser google-chrome; do
  command -v "$c" >/dev/null 2>&1 && { CHROME="$c"; break; }
done
if [ -z "$CHROME" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 && CHROME=chromium
fi
if [ -z "$CHROME" ] || ! command -v python3 >/dev/null || ! command -v curl >/dev/null; then
  echo "test_webui: skipped (chromium, python3 or curl not installed and not installable)"; exit 0
fi
TMP=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

M="$TMP/llama-tiny"
cp -r tests/fixtures/llama-tiny "$M"
python3 - "$M/tokenizer_config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["chat_template"] = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
                      "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
json.dump(c, open(p, "w"))
PY
: >"$TMP/serve.log"
"$LMC" serve -m "$M" --host 127.0.0.1 --port 0 >"$TMP/serve.log" 2>&1 &
PID=$!
PORT=""
for _ in $(seq 1 200); do
  PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/serve.log")
  [ -n "$PORT" ] && break
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.05
done
[ -n "$PORT" ] || { echo "FAIL: server did not start"; cat "$TMP/serve.log"; exit 1; }

# the reply the page should show: the greedy chat completion
curl -s "http://127.0.0.1:$PORT/v1/chat/completions" \
  -d '{"messages":[{"role":"user","content":"Say something"}],"temperature":0,"max_tokens":20}' >"$TMP/want.json"

# a clean profile; no network beyond the loopback server
DONE='document.querySelector(".msg.error") || (document.querySelector(".msg.assistant[data-done=\"1\"]") && document.getElementById("status").textContent.includes("done:"))'
timeout 150 python3 tests/webui_cdp.py "$CHROME" "http://127.0.0.1:$PORT/?q=Say%20something&temp=0&max_tokens=20" \
  "$TMP/profile" 120 "$DONE" >"$TMP/dom.html" 2>"$TMP/chrome.err"
rc=$?
python3 - "$TMP/dom.html" "$TMP/want.json" <<'PY'
import html, json, re, sys
dom = open(sys.argv[1], encoding="utf-8", errors="replace").read()
want = json.load(open(sys.argv[2]))["choices"][0]["message"]["content"]
user = re.findall(r'<div class="msg user">(.*?)</div>', dom, re.S)
got = re.findall(r'<div class="msg assistant" data-done="1">(.*?)</div>', dom, re.S)
status = re.findall(r'<div id="status">(.*?)</div>', dom, re.S)
errors = re.findall(r'<div class="msg error">(.*?)</div>', dom, re.S)
ok = True
def check(c, what):
    global ok
    if not c: ok = False; print("FAIL:", what)
check(user == ["Say something"], "the message is shown (%r)" % user)
check(len(got) == 1 and html.unescape(got[0]) == want, "streamed reply %r equals the API's %r" % (got, want))
check(not errors, "no error shown (%r)" % errors)
check(status and "done:" in status[0] and "tok/s" in status[0], "status shows tokens/s (%r)" % status)
print("webui reply:", repr(html.unescape(got[0])) if got else None, "| status:", status[0] if status else None)
sys.exit(0 if ok else 1)
PY
res=$?
if [ $res != 0 ]; then echo "driver exit $rc"; tail -5 "$TMP/chrome.err" "$TMP/profile.err"; head -c 3000 "$TMP/dom.html"; fi
# the server saw the page's request
curl -s "http://127.0.0.1:$PORT/metrics" | grep -q '^lmc_requests_total [2-9]' || { echo "FAIL: no request from the page"; res=1; }
kill -TERM "$PID"; wait "$PID"; PID=""
[ $res = 0 ] && echo "test_webui: all passed" || echo "test_webui: FAILED"
exit $res
