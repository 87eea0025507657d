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
. bench/serve_level.sh
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
  serve_level $B/lmc "$URL" "$C" "$N" "$P" "$M" "$BLOCK" | tee -a "$OUT"
done
echo >>"$OUT"
echo "results appended to $OUT"
