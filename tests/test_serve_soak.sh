#!/usr/bin/env bash
# test_serve_soak.sh — `lmc serve` for months, compressed: the default model
# (models/kjv-llama, with a ChatML chat template added) on 127.0.0.1 and a
# port the OS picks, then tests/serve_soak.py runs rounds of 128 concurrent
# clients (streamed and non-streamed completions and chat, n > 1,
# logprobs, stop strings, seeded pairs that must agree, mid-stream
# disconnects, malformed and oversized requests) with /health probed
# during each round. After each round: no 5xx, KV blocks in use back to 0,
# the prefix cache (bounded to 64 blocks here) within its bound and
# evicting; resident memory after rounds 2.. within 5% of round 1's (round
# 0 warms up). Then SIGTERM with 16 streams and 4 non-streamed requests
# in flight: each stream ends with a finish chunk or an error event and
# [DONE], each other request with its answer or a server_shutting_down
# error, and the server exits 0 within 60 s.
# Under AddressSanitizer (the binary links libasan) the RSS criterion is
# skipped — the allocator's quarantine holds freed memory by design — and
# the exit status and the log carry LeakSanitizer's verdict at shutdown
# (ASAN_OPTIONS=detect_leaks=1 in .ci/run): zero leaks, no UBSan report.
# Usage: test_serve_soak.sh PATH/TO/lmc
set -u
LMC="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
SRC=models/kjv-llama
for t in python3; do
  if ! command -v $t >/dev/null; then echo "test_serve_soak: skipped ($t not installed)"; exit 0; fi
done
if [ ! -f "$SRC/model.safetensors" ]; then echo "test_serve_soak: skipped (no $SRC)"; exit 0; fi
TMP=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null; [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"; }
trap cleanup EXIT
SECONDS=0

ASAN=0
if ldd "$LMC" 2>/dev/null | grep -q libasan || nm "$LMC" 2>/dev/null | grep -q " __asan_init"; then ASAN=1; fi

# the default model with a ChatML template (its own has none)
M="$TMP/kjv-llama"
mkdir -p "$M"
for f in "$SRC"/*; do ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$M/"; done
rm "$M/tokenizer_config.json"
python3 - "$SRC/tokenizer_config.json" "$M/tokenizer_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["chat_template"] = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
                      "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
json.dump(c, open(sys.argv[2], "w"))
PY

LOG="$TMP/serve.log"
"$LMC" serve -m "$M" --host 127.0.0.1 --port 0 --max-connections 200 --max-body 65536 \
  --prefix-cache-blocks 64 --timeout 300 >"$LOG" 2>&1 &
PID=$!
PORT=""
for _ in $(seq 1 600); do  # the port appears in the log once the server listens
  PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$LOG")
  [ -n "$PORT" ] && break
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$PORT" ]; then echo "FAIL: server did not start"; cat "$LOG"; exit 1; fi
echo "test_serve_soak: server pid $PID port $PORT (asan $ASAN)"
fail=0

if [ $ASAN = 1 ]; then
  python3 tests/serve_soak.py --port "$PORT" --pid "$PID" --rounds 3 --clients 128 || fail=1
else
  python3 tests/serve_soak.py --port "$PORT" --pid "$PID" --rounds 5 --clients 128 --check-rss || fail=1
fi

# SIGTERM (sent by the client once all 16 streams have their first token
# and the 4 others run)
python3 tests/serve_soak.py --port "$PORT" --pid "$PID" --shutdown --streams 16 || fail=1
kill -TERM "$PID" 2>/dev/null  # (again, had the client failed before sending it)
# wait for the exit, at most 60 s
T_STREAMS=$(date +%s%N)
timeout 60 tail --pid="$PID" -f /dev/null || { echo "FAIL: no exit 60 s after SIGTERM"; kill -KILL "$PID"; }
wait "$PID"
rc=$?
PID=""
echo "test_serve_soak: server exited $(( ($(date +%s%N) - T_STREAMS) / 1000000 )) ms after its last stream ended, status $rc"
if [ $rc != 0 ]; then echo "FAIL: server exit status $rc after SIGTERM"; fail=1; fi
grep -q "shutting down" "$LOG" || { echo "FAIL: no shutdown message"; fail=1; }
if grep -E -q "LeakSanitizer|AddressSanitizer|runtime error:" "$LOG"; then
  echo "FAIL: sanitizer report"; grep -E -A30 "LeakSanitizer|AddressSanitizer|runtime error:" "$LOG" | head -80; fail=1
fi
[ $fail = 0 ] || { echo "--- server log"; tail -40 "$LOG"; }
echo "test_serve_soak: ${SECONDS} s"
[ $fail = 0 ] && echo "test_serve_soak: passed" || echo "test_serve_soak: FAILED"
exit $fail
