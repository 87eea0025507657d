#!/usr/bin/env bash
# test_serve.sh — `lmc serve` end to end on a fixture model (llama-tiny with
# a ChatML chat template added), on 127.0.0.1 and a free port:
#  - /health, /v1/models, the page at /, 404/405 as JSON errors;
#  - 64 concurrent streaming clients with greedy sampling get exactly the
#    text (and token count, finish reason) of `lmc generate --temp 0`
#    (add_special_tokens false against --no-special too), and a chat
#    completion equals generate on the rendered ChatML prompt;
#  - a storm of bad input (malformed JSON, wrong types, unknown fields,
#    huge and chunked bodies, negative/absurd values, prompts over the
#    context, invalid UTF-8, garbage HTTP): each a 4xx JSON error;
#  - abrupt disconnects before, during and mid-stream: the server stays
#    up, KV blocks in use and running/waiting requests return to 0, and
#    its memory does not grow over repeated storms;
#  - Bearer API key; `lmc bench-serve`; clean shutdown on SIGTERM.
# Usage: test_serve.sh PATH/TO/lmc
set -u
LMC="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
FIX=tests/fixtures
for t in python3 curl; do
  if ! command -v $t >/dev/null; then echo "test_serve: skipped ($t not installed)"; exit 0; fi
done
TMP=$(mktemp -d)
SRV_PIDS=""
cleanup() { for p in $SRV_PIDS; do kill "$p" 2>/dev/null; done; [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"; }
trap cleanup EXIT
fail=0

# the fixture with a ChatML template (none of the fixtures has one)
M="$TMP/llama-tiny"
cp -r "$FIX/llama-tiny" "$M"
python3 - "$M/tokenizer_config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["chat_template"] = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
                      "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
json.dump(c, open(p, "w"))
PY

# start_server LOG ARGS... -> sets PORT and PID
start_server() {
  local log="$1"; shift
  : >"$log"
  "$LMC" serve -m "$M" --host 127.0.0.1 --port 0 "$@" >"$log" 2>&1 &
  PID=$!
  SRV_PIDS="$SRV_PIDS $PID"
  PORT=""
  for _ in $(seq 1 200); do
    PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
    [ -n "$PORT" ] && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$PORT" ]; then echo "FAIL: server did not start"; cat "$log"; exit 1; fi
}

start_server "$TMP/serve.log" --max-body 65536 --kv-blocks 512 --max-batch 64 --timeout 60
echo "server pid $PID port $PORT"

# expected greedy outputs from lmc generate
python3 - "$LMC" "$M" "$TMP/expect.json" <<'PY'
import json, subprocess, sys
lmc, m, out = sys.argv[1:4]
prompts = ["Hello world", "The quick brown fox", "Once upon a time", "1 2 3 4 5", "a", "Paris is the capital of",
           "def main():", "Zebras"]
exp = []
for p in prompts:
    for special in (True, False):
        args = [lmc, "generate", "-m", m, "-p", p, "--temp", "0", "-n", "24", "--json"]
        if not special: args.append("--no-special")
        j = json.loads(subprocess.run(args, capture_output=True, check=True).stdout)
        exp.append({"prompt": p, "special": special, "text": j["text"], "n": j["completion_tokens"],
                    "finish": j["finish_reason"]})
# the chat prompt rendered by the ChatML template, greedy, ending at <|im_end|>
chat = "<|im_start|>user\nSay something<|im_end|>\n<|im_start|>assistant\n"
j = json.loads(subprocess.run([lmc, "generate", "-m", m, "-p", chat, "--temp", "0", "-n", "20", "--no-special",
                               "--stop", "<|im_end|>", "--json"], capture_output=True, check=True).stdout)
json.dump({"completions": exp, "chat": {"text": j["text"], "finish": j["finish_reason"]}}, open(out, "w"))
PY
[ $? = 0 ] || { echo "FAIL: lmc generate for the expected outputs"; exit 1; }

python3 - "$PORT" "$PID" "$TMP/expect.json" "$LMC" <<'PY'
import http.client, json, os, socket, struct, subprocess, sys, threading, time
PORT, PID, EXP = int(sys.argv[1]), int(sys.argv[2]), json.load(open(sys.argv[3]))
LMC = sys.argv[4]
fails = []
def check(cond, what):
    if not cond:
        fails.append(what); print("FAIL:", what, flush=True)

def request(method, path, body=None, headers=None, raw=None, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = r.status, r.getheader("Content-Type") or "", r.read()
    c.close()
    return out

def is_error(status, ctype, body, want=None):
    try:
        j = json.loads(body)
        e = j["error"]
        ok = isinstance(e["message"], str) and e["message"] and "type" in e and "code" in e and "param" in e
    except Exception:
        ok = False
    return ok and 400 <= status < 500 and (want is None or status == want) and ctype.startswith("application/json")

def sse(path, body, timeout=60):
    """Streams a request; returns (status, list of parsed events, saw_done)."""
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    c.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        return r.status, [r.read()], False
    evs, done, buf = [], False, b""
    while True:
        line = r.readline()
        if not line: break
        line = line.rstrip(b"\r\n")
        if line.startswith(b"data: "):
            d = line[6:]
            if d == b"[DONE]": done = True
            else: evs.append(json.loads(d))
    c.close()
    return 200, evs, done

def metrics():
    st, _, b = request("GET", "/metrics")
    m = {}
    for line in b.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1); m[k] = float(v)
    return m

def rss_kb():
    for line in open("/proc/%d/status" % PID):
        if line.startswith("VmRSS:"): return int(line.split()[1])
    return 0

# --- basics
st, ct, b = request("GET", "/health"); check(st == 200 and json.loads(b)["status"] == "ok", "health")
st, ct, b = request("GET", "/v1/models"); j = json.loads(b)
check(st == 200 and j["data"][0]["id"] == "llama-tiny" and j["data"][0]["max_model_len"] == 256, "models")
st, ct, b = request("GET", "/"); check(st == 200 and ct.startswith("text/html") and b"<script>" in b, "page")
check(b"http://" not in b and b"https://" not in b, "page uses no external resource")
st, ct, b = request("GET", "/nope"); check(is_error(st, ct, b, 404), "404 json")
st, ct, b = request("GET", "/v1/completions"); check(is_error(st, ct, b, 405), "405 json")
st, ct, b = request("POST", "/v1/completions", {"prompt": "x", "model": "other"}); check(is_error(st, ct, b, 404), "unknown model 404")

# --- greedy equality: 64 concurrent streaming clients
comps = EXP["completions"]
results = [None] * 64
def client(i):
    e = comps[i % len(comps)]
    body = {"prompt": e["prompt"], "max_tokens": 24, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "model": "llama-tiny"}
    if not e["special"]: body["add_special_tokens"] = False
    try:
        st, evs, done = sse("/v1/completions", body)
        text = "".join(c["text"] for ev in evs for c in ev.get("choices", []))
        fin = [c["finish_reason"] for ev in evs for c in ev.get("choices", []) if c.get("finish_reason")]
        usage = [ev["usage"] for ev in evs if ev.get("usage")]
        results[i] = (st, done, text, fin, usage)
    except Exception as ex:
        results[i] = ("exception %r" % ex,)
ths = [threading.Thread(target=client, args=(i,)) for i in range(64)]
for t in ths: t.start()
for t in ths: t.join(120)
bad = 0
for i, r in enumerate(results):
    e = comps[i % len(comps)]
    ok = r is not None and len(r) == 5 and r[0] == 200 and r[1] and r[2] == e["text"] and r[3] == [e["finish"]] \
         and len(r[4]) == 1 and r[4][0]["completion_tokens"] == e["n"]
    if not ok:
        bad += 1
        if bad <= 3: print("mismatch", i, e, r)
check(bad == 0, "64 concurrent greedy streams equal lmc generate (%d bad)" % bad)

# non-streamed, n=2 with greedy: both choices equal generate
e = comps[0]
st, ct, b = request("POST", "/v1/completions", {"prompt": e["prompt"], "max_tokens": 24, "temperature": 0, "n": 2})
j = json.loads(b)
check(st == 200 and [c["text"] for c in j["choices"]] == [e["text"]] * 2 and j["usage"]["completion_tokens"] == 2 * e["n"],
      "n=2 non-streamed greedy")
# logprobs: greedy token has the top logprob
st, ct, b = request("POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 4, "temperature": 0, "logprobs": 2})
lp = json.loads(b)["choices"][0]["logprobs"]
check(st == 200 and len(lp["tokens"]) == 4 and all(1 <= len(t) <= 2 for t in lp["top_logprobs"]) and
      all(abs(lp["token_logprobs"][k] - max(lp["top_logprobs"][k].values())) < 1e-5 for k in range(4)), "logprobs")
# seeded sampling is reproducible
body = {"prompt": "Hello", "max_tokens": 16, "temperature": 1.0, "top_k": 50, "top_p": 0.9, "seed": 7}
t1 = json.loads(request("POST", "/v1/completions", body)[2])["choices"][0]["text"]
t2 = json.loads(request("POST", "/v1/completions", body)[2])["choices"][0]["text"]
check(t1 == t2, "seed reproducible")
# stop string
full = comps[0]["text"]
if len(full) > 6:
    stop = full[3:5]
    j = json.loads(request("POST", "/v1/completions", {"prompt": comps[0]["prompt"], "max_tokens": 24,
                                                       "temperature": 0, "stop": [stop]})[2])
    c = j["choices"][0]
    check(c["finish_reason"] == "stop" and full.startswith(c["text"]) and stop not in c["text"], "stop string")

# chat, streamed and not, equal generate on the rendered prompt
msgs = [{"role": "user", "content": "Say something"}]
st, ct, b = request("POST", "/v1/chat/completions", {"messages": msgs, "max_tokens": 20, "temperature": 0})
j = json.loads(b)
check(st == 200 and j["object"] == "chat.completion" and j["choices"][0]["message"]["content"] == EXP["chat"]["text"]
      and j["choices"][0]["finish_reason"] == EXP["chat"]["finish"], "chat equals generate (%r vs %r)" %
      (j.get("choices", [{}])[0].get("message"), EXP["chat"]))
st, evs, done = sse("/v1/chat/completions", {"messages": msgs, "max_tokens": 20, "temperature": 0, "stream": True})
text = "".join(c["delta"].get("content", "") for ev in evs for c in ev["choices"])
check(st == 200 and done and text == EXP["chat"]["text"] and evs[0]["choices"][0]["delta"].get("role") == "assistant",
      "streamed chat equals generate")

# --- bad-input storm
long_prompt = "hello " * 400
storm = [
    ("/v1/completions", b"{", 400), ("/v1/completions", b"", 400), ("/v1/completions", b"[]", 400),
    ("/v1/completions", b"{\"prompt\":\"a\"} trailing", 400), ("/v1/completions", b"null", 400),
    ("/v1/completions", b"{\"prompt\": 12}", 400), ("/v1/completions", b"{\"prompt\":\"a\",\"max_tokens\":\"9\"}", 400),
    ("/v1/completions", b"{\"prompt\":\"a\",\"stream\":\"yes\"}", 400),
    ("/v1/completions", b"{\"prompt\":\"a\",\"unknown_field\":1}", 400),
    ("/v1/completions", b"{\"prompt\":\"a\",\"max_tokens\":-5}", 400),
    ("/v1/completions", b"{\"prompt\":\"a\",\"max_tokens\":100000000000}", 400),
    ("/v1/completions", b"{\"prompt\":\"a\",\"temperature\":-1}", 400),
    ("/v1/completions", b"{\"prompt\":\"a\",\"top_p\":7}", 400), ("/v1/completions", b"{\"prompt\":\"a\",\"n\":-1}", 400),
    ("/v1/completions", b"{\"prompt\":\"a\",\"n\":100000}", 400),
    ("/v1/completions", b"{\"prompt\":\"a\",\"logprobs\":1000}", 400),
    ("/v1/completions", b"{\"prompt\":\"a\",\"frequency_penalty\":1e308}", 400),
    ("/v1/completions", json.dumps({"prompt": long_prompt}).encode(), 400),
    ("/v1/completions", json.dumps({"prompt": "hi", "max_tokens": 255}).encode(), 400),
    ("/v1/completions", json.dumps({"prompt": list(range(300))}).encode(), 400),
    ("/v1/completions", b"{\"prompt\":[1,2,100000]}", 400),
    ("/v1/completions", b"{\"prompt\":\"\xff\xfe\xfd\"}", 400), ("/v1/completions", b"{\"prompt\":\"\xed\xa0\x80\"}", 400),
    ("/v1/completions", b"{\"prompt\":\"\\udc00\"}", 400), ("/v1/completions", b"\x00\x01\x02", 400),
    ("/v1/completions", b"{\"prompt\":\"" + b"a" * 70000 + b"\"}", 413),
    ("/v1/chat/completions", b"{\"messages\":{}}", 400), ("/v1/chat/completions", b"{\"messages\":[]}", 400),
    ("/v1/chat/completions", b"{\"messages\":[{\"role\":\"x\",\"content\":\"y\"}]}", 400),
    ("/v1/chat/completions", b"{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": long_prompt}]}).encode(), 400),
    ("/v1/chat/completions", b"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"functions\":[]}", 400),
    ("/v1/chat/completions", b"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"top_logprobs\":3}", 400),
]
def storm_once():
    for path, raw, want in storm:
        st, ct, b = request("POST", path, raw=raw)
        check(is_error(st, ct, b, want), "storm %s %r -> %d %r" % (path, raw[:60], st, b[:200]))
    # a chunked body over the limit
    s = socket.create_connection(("127.0.0.1", PORT), timeout=30)
    resp = b""
    try:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in [b"{\"prompt\":\"", b"b" * 40000, b"c" * 40000, b"\"}"]:
            s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server may answer and close before the body is sent
    try:
        while True:
            d = s.recv(65536)
            if not d: break
            resp += d
    except OSError:
        pass
    s.close()
    check(resp.startswith(b"HTTP/1.1 413") and b"request_too_large" in resp, "chunked 413 (%r)" % resp[:100])
    # garbage and truncated HTTP on raw sockets
    for raw in [b"GARBAGE\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"prom",
                b"POST /v1/completions HTTP/1.1\r\nContent-Length: -7\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00",
                b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"]:
        s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
        try:
            s.sendall(raw); s.shutdown(socket.SHUT_WR); s.recv(4096)
        except OSError:
            pass
        s.close()

# --- abrupt disconnects
def rst_close(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()

def post_raw(body):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
              % len(data) + data)
    return s

def disconnect_storm():
    socks = []
    long_body = {"prompt": "Once upon a time", "max_tokens": 240, "ignore_eos": True, "n": 4, "stream": True,
                 "temperature": 0.8}
    for i in range(24):
        s = post_raw(long_body)
        if i % 3 == 0:
            rst_close(s); continue            # before any byte of the answer
        try:
            s.recv(64 if i % 3 == 1 else 2048)  # mid-headers or after the first event
        except OSError:
            pass
        socks.append(s)
    for i, s in enumerate(socks):
        rst_close(s) if i % 2 else s.close()
    # non-streamed requests abandoned, and a half-sent body
    for i in range(6):
        s = post_raw({"prompt": "Zebras", "max_tokens": 240, "ignore_eos": True, "n": 8})
        rst_close(s)
    s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"prompt\":")
    rst_close(s)

def settle():
    m = {}
    for _ in range(300):
        m = metrics()
        if m.get("lmc_kv_blocks_used", 1) == 0 and m.get("lmc_requests_running", 1) == 0 and \
           m.get("lmc_requests_waiting", 1) == 0 and m.get("lmc_http_connections", 1) == 0:
            return True, m
        time.sleep(0.05)
    print("not settled:", {k: v for k, v in m.items() if "kv" in k or "running" in k or "waiting" in k or "conn" in k})
    return False, m

storm_once(); disconnect_storm()
ok, m = settle(); check(ok, "KV blocks and requests back to 0 after storm 1")
rss1 = rss_kb()
for _ in range(3):
    storm_once(); disconnect_storm()
ok, m = settle(); check(ok, "KV blocks and requests back to 0 after storms 2-4")
rss2 = rss_kb()
print("rss after storm 1: %d kB, after storms 2-4: %d kB; cancelled so far: %d" %
      (rss1, rss2, m.get('lmc_requests_finished_total{reason="cancelled"}', 0)))
if "libasan" in open("/proc/%d/maps" % PID).read():
    print("memory growth check skipped under AddressSanitizer (its quarantine keeps freed memory); "
          "LeakSanitizer checks at exit instead")
else:
    check(rss2 - rss1 < 32 * 1024, "memory does not grow (%d -> %d kB)" % (rss1, rss2))
check(m.get('lmc_requests_finished_total{reason="cancelled"}', 0) > 0, "disconnects cancel their requests")
check(m.get("lmc_kv_blocks_total", 0) == 512, "kv blocks total")
# the server still answers correctly
e = comps[2]
st, ct, b = request("POST", "/v1/completions", {"prompt": e["prompt"], "max_tokens": 24, "temperature": 0})
check(st == 200 and json.loads(b)["choices"][0]["text"] == e["text"], "greedy after the storms")
check(m.get("lmc_time_to_first_token_seconds_count", 0) > 0 and m.get("lmc_inter_token_latency_seconds_count", 0) > 0,
      "latency histograms filled")
check(m.get('lmc_http_responses_total{code="400"}', 0) >= len(storm), "400s counted")

# bench-serve against this server
r = subprocess.run([LMC, "bench-serve", "--url", "http://127.0.0.1:%d" % PORT, "--concurrency", "4", "--requests", "12",
                    "--prompt-len", "16", "--max-tokens", "8", "--json"], capture_output=True, timeout=120)
try:
    bj = json.loads(r.stdout)
except Exception:
    bj = {}
check(r.returncode == 0 and bj.get("ok") == 12 and bj.get("output_tokens") == 96 and bj.get("requests_per_s", 0) > 0,
      "bench-serve (%r %r)" % (r.stdout[:300], r.stderr[:300]))
print("bench-serve:", r.stdout.decode().strip())
check(bj.get("cached_reported") == 12, "bench-serve: every request reported its cached prompt tokens (%r)" % bj)
# the same prompts again hit the prefix cache; another --prompt-set does not
def bench_set(s):
    r = subprocess.run([LMC, "bench-serve", "--url", "http://127.0.0.1:%d" % PORT, "--concurrency", "4", "--requests",
                        "12", "--prompt-len", "16", "--max-tokens", "8", "--prompt-set", str(s), "--json"],
                       capture_output=True, timeout=120)
    try:
        return json.loads(r.stdout)
    except Exception:
        return {}
again, other = bench_set(0), bench_set(7)
check(again.get("ok") == 12 and again.get("cached_prompt_tokens", 0) >= 12 * 8,
      "bench-serve: repeated prompts hit the prefix cache (%r)" % again)
check(other.get("ok") == 12 and other.get("cached_reported") == 12 and other.get("cached_prompt_tokens") == 0,
      "bench-serve: a fresh --prompt-set has no prefix-cache hits (%r)" % other)
ok, m = settle(); check(ok, "settled after bench")
print("serve checks: %d failed" % len(fails))
sys.exit(1 if fails else 0)
PY
[ $? = 0 ] || fail=1

# graceful stop
kill -TERM "$PID"
if ! timeout 10 tail --pid="$PID" -f /dev/null; then echo "FAIL: server did not stop on SIGTERM"; fail=1; kill -9 "$PID"; fi
wait "$PID"; rc=$?
[ "$rc" = 0 ] || { echo "FAIL: server exit code $rc"; fail=1; }

# API key: 401 without or with a wrong key, 200 with it; /health stays open
start_server "$TMP/serve_key.log" --api-key s3cret --max-connections 8
AUTH_OK=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer s3cret' \
  -d '{"prompt":"hi","max_tokens":2}' "http://127.0.0.1:$PORT/v1/completions")
AUTH_NONE=$(curl -s -o "$TMP/401.json" -w '%{http_code}' -d '{"prompt":"hi"}' "http://127.0.0.1:$PORT/v1/completions")
AUTH_BAD=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer nope' "http://127.0.0.1:$PORT/v1/models")
HEALTH=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")
if [ "$AUTH_OK" != 200 ] || [ "$AUTH_NONE" != 401 ] || [ "$AUTH_BAD" != 401 ] || [ "$HEALTH" != 200 ]; then
  echo "FAIL: api key ($AUTH_OK $AUTH_NONE $AUTH_BAD $HEALTH)"; fail=1
fi
python3 -c "import json,sys; e=json.load(open('$TMP/401.json'))['error']; assert e['code']=='invalid_api_key'" || { echo "FAIL: 401 body"; fail=1; }
kill -TERM "$PID"; wait "$PID"

# binding: a bad host or port fails cleanly
"$LMC" serve -m "$M" --port 70000 >/dev/null 2>&1; [ $? = 2 ] || { echo "FAIL: bad port exit code"; fail=1; }
"$LMC" serve -m "$M" --kv-blocks 4 --kv-memory 1G >/dev/null 2>&1; [ $? = 2 ] || { echo "FAIL: kv flags exit code"; fail=1; }

if [ $fail = 0 ]; then echo "test_serve: all passed"; else echo "test_serve: FAILED"; fi
exit $fail
