#!/usr/bin/env bash
# run_q4_cpu.sh — 4-bit CPU inference, lmc against llama.cpp on the same
# GGUF files written by `lmc convert` (Q4_0 and F16 of bench_cpu's random
# 125M Llama, /tmp/lmc-bench-125m-f16, made by bench/run_cpu.sh), ROUNDS
# interleaved rounds of [lmc generate Q4_0, llama-bench Q4_0, lmc generate
# F16, llama-bench F16]: prefill of a 512-token prompt and 128 decoded
# tokens, 2 threads. lmc's decode runs after the 512-token prompt,
# llama-bench's tg from an empty context (so the decode ratio slightly
# favours llama.cpp). Prints one line per measurement; the medians are
# read off by hand into bench/results/.
#   bench/run_q4_cpu.sh ; env: PEER_BIN (llama.cpp bin dir), ROUNDS (3), LMC (build/lmc),
#   THREADS (2; 1 keeps llama.cpp's spinning thread barrier out of a loaded machine)
set -u
cd "$(dirname "$0")/.." || exit 1
PB=${PEER_BIN:?set PEER_BIN to the llama.cpp bin folder}
LMC=${LMC:-build/lmc}; ROUNDS=${ROUNDS:-3}; T=${THREADS:-2}; SRC=/tmp/lmc-bench-125m-f16
[ -d "$SRC" ] || { echo "run bench/run_cpu.sh first (it makes $SRC)" >&2; exit 1; }
[ -s "$SRC.gguf" ] || "$LMC" convert -m "$SRC" -o "$SRC.gguf" --dtype f16 >/dev/null || exit 1
[ -s /tmp/lmc-bench-125m-q4_0.gguf ] || "$LMC" convert -m "$SRC" -o /tmp/lmc-bench-125m-q4_0.gguf --dtype q4_0 >/dev/null || exit 1
P=$(python3 -c 'print("the quick brown fox "*25 + "abcdefghijkl")') # 512 tokens of the byte-level vocabulary
echo "start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) commit $(git rev-parse --short HEAD) threads $T"
for r in $(seq 1 "$ROUNDS"); do
  for f in q4_0 f16; do
    g=/tmp/lmc-bench-125m-$f.gguf
    echo "round $r lmc $f: $("$LMC" generate -m $g -p "$P" -n 128 --temp 0 --ignore-eos -t "$T" 2>&1 >/dev/null | tail -1)"
    "$PB/llama-bench" -m $g -p 512 -n 128 -t "$T" -r 3 -o json 2>/dev/null | python3 -c "
import json, sys
for e in json.load(sys.stdin): print('round $r llama.cpp $f', 'prefill' if e['n_prompt'] > 0 else 'decode', round(e['avg_ts'], 1))"
  done
done
echo "end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
