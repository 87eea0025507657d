#!/usr/bin/env bash
# run_serve_cpu.sh — serving benchmark on the CPU: starts `lmc serve` with
# the default model on 127.0.0.1, drives it with `lmc bench-serve` at
# concurrency 1, 8, 64, 256 (streaming, prompt P tokens, M new tokens,
# ignoring nothing: EOS may end a request early, the output token count is
# what was streamed), samples /metrics during each level for the KV cache
# waste (1 - tokens stored / (blocks used x block size); the mean over the
# samples, and the worst, which is high right after a block is opened), and appends a
# Markdown table to bench/results/serve-cpu-<date>.md.
# Usage: bench/run_serve_cpu.sh [MODEL_DIR]   (env: P, M, THREADS, LEVELS)
set -u -o pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/kjv-llama}
P=${P:-128}; M=${M:-128}; THREADS=${THREADS:-2}; LEVELS=${LEVELS:-"1 8 64 256"}
BLOCK=${BLOCK:-8}
B=build-bench
cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DLMC_CUDA=OFF >/dev/null && make -C $B -j"$(nproc)" lmc_cli >/dev/null || exit 1
LOG=$(mktemp); trap 'kill $SRV 2>/dev/null; rm -f "$LOG"' EXIT
$B/lmc serve -m "$MODEL" --port 0 --threads "$THREADS" --max-batch 256 --max-connections 512 --block-size $BLOCK 2>"$LOG" &
SRV=$!
for _ in $(seq 100); do grep -q "listening on" "$LOG" && break; sleep 0.1; done
URL=$(grep -o "http://127.0.0.1:[0-9]*" "$LOG" | head -1)
[ -n "$URL" ] || { cat "$LOG"; exit 1; }
OUT=bench/results/serve-cpu-$(date -u +%F).md
{
  echo "## Run at $(date -u +%FT%TZ)"
  echo
  echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tools || echo ' (+ uncommitted changes)')"
  echo "- device: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs; lmc serve --threads $THREADS"
  echo "- model: $MODEL; streaming requests, prompt $P tokens, max $M new tokens, greedy"
  echo "- command: \`BLOCK=$BLOCK bench/run_serve_cpu.sh $*\` (KV blocks of $BLOCK tokens)"
  echo
  echo "| concurrency | requests | failed | output tok/s | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) | KV waste, mean / worst of the samples |"
  echo "|---|---|---|---|---|---|---|"
} >>"$OUT"
for C in $LEVELS; do
  N=$(( C * 2 > 32 ? C * 2 : 32 ))
  WASTE=$(mktemp)
  ( while :; do
      curl -s "$URL/metrics" | awk -v bs=$BLOCK '/^lmc_kv_blocks_used /{u=$2} /^lmc_kv_tokens_stored /{s=$2}
        END{ if (u > 0) printf "%.4f\n", 1 - s / (u * bs) }' >>"$WASTE"
      sleep 0.2
    done ) &
  MON=$!
  J=$($B/lmc bench-serve --url "$URL" --concurrency "$C" --requests "$N" --prompt-len "$P" --max-tokens "$M" --json)
  kill $MON 2>/dev/null; wait $MON 2>/dev/null
  W=$(awk '{s += $1; if ($1 > m) m = $1; n++} END {if (n) printf "%.1f%% / %.1f%%", 100 * s / n, 100 * m}' "$WASTE"); rm -f "$WASTE"
  echo "$J" | python3 -c "
import json, sys
j = json.load(sys.stdin); w = sys.argv[1]
print('| %d | %d | %d | %.1f | %.1f / %.1f | %.1f / %.1f | %s |' % (j['concurrency'], j['requests'], j['failed'],
      j['output_tokens_per_s'], 1e3 * j['ttft_s']['p50'], 1e3 * j['ttft_s']['p99'], 1e3 * j['itl_s']['p50'],
      1e3 * j['itl_s']['p99'], w or 'n/a'))" "${W:-}" | tee -a "$OUT"
done
echo >>"$OUT"
echo "results appended to $OUT"
