#!/usr/bin/env bash
# run_lora_serve.sh — multi-adapter serving throughput: one `lmc serve`
# with four LoRA adapters (random, rank R, on all seven linears, written
# by tests/make_random_lora.py) is driven by `lmc bench-serve` at one
# concurrency C with four request mixes, interleaved over ROUNDS rounds in
# the same server process: base only, one adapter (a1), four adapters
# round-robin (a1..a4: each step's batch holds four adapter groups), and
# base + three adapters. Prints / appends a Markdown table (output tok/s,
# TTFT and ITL p50) and the mixed / single ratio per round to
# bench/results/lora-serve-<date>.md.
# Usage: bench/run_lora_serve.sh [MODEL_DIR]
#   env: LMC (binary; default build/lmc), DEVICE (cpu|cuda), THREADS, C, N,
#        P, M, R, ROUNDS, OUT
set -u -o pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/kjv-llama}
LMC=${LMC:-build/lmc}; DEVICE=${DEVICE:-cpu}; THREADS=${THREADS:-2}
C=${C:-16}; N=${N:-48}; P=${P:-64}; M=${M:-64}; R=${R:-16}; ROUNDS=${ROUNDS:-2}
OUT=${OUT:-bench/results/lora-serve-$(date -u +%F).md}
[ -x "$LMC" ] || { echo "no $LMC: build lmc_cli first" >&2; exit 1; }
TMP=$(mktemp -d); SRV=""
trap '[ -n "$SRV" ] && kill $SRV 2>/dev/null; rm -rf "$TMP"' EXIT
for k in 1 2 3 4; do
  python3 tests/make_random_lora.py "$MODEL" "$TMP/a$k" "$R" $((2 * R)) \
    q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj $k || exit 1
done
BASE=$(basename "$MODEL")
"$LMC" serve -m "$MODEL" --device "$DEVICE" --threads "$THREADS" --port 0 --max-batch "$C" \
  --no-prefix-cache --lora a1="$TMP/a1" --lora a2="$TMP/a2" --lora a3="$TMP/a3" --lora a4="$TMP/a4" 2>"$TMP/log" &
SRV=$!
URL=""
for _ in $(seq 600); do
  URL=$(grep -o "http://127.0.0.1:[0-9]*" "$TMP/log" | head -1); [ -n "$URL" ] && break
  kill -0 $SRV 2>/dev/null || break; sleep 0.1
done
[ -n "$URL" ] || { cat "$TMP/log"; exit 1; }
{
  echo "## Run at $(date -u +%FT%TZ)"
  echo
  if git rev-parse --short HEAD >/dev/null 2>&1; then
    echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tools || echo ' (+ uncommitted changes)')"
  else
    echo "- commit: ${COMMIT:-unknown} (tree without .git)"
  fi
  echo "- device: $DEVICE; $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)$( [ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | sed 's/^/; GPU /')"
  echo "- model: $MODEL; 4 adapters of rank $R on all seven linears; lmc serve --threads $THREADS --max-batch $C --no-prefix-cache"
  echo "- load: concurrency $C, $N streaming requests per mix, prompt $P tokens, $M new tokens (ignore_eos), greedy"
  echo "- command: \`LMC=$LMC DEVICE=$DEVICE THREADS=$THREADS C=$C N=$N P=$P M=$M R=$R ROUNDS=$ROUNDS bench/run_lora_serve.sh $*\`"
  echo
  echo "| round | mix (models of the requests, round-robin) | failed | output tok/s | TTFT p50 (ms) | ITL p50 (ms) |"
  echo "|---|---|---|---|---|---|"
} >"$TMP/table"
declare -A TPS
for round in $(seq "$ROUNDS"); do
  for mix in "$BASE" a1 a1,a2,a3,a4 "$BASE,a1,a2,a3"; do
    j=$(timeout 600 "$LMC" bench-serve --url "$URL" --concurrency "$C" --requests "$N" --prompt-len "$P" \
        --max-tokens "$M" --model "$mix" --json) || { echo "bench-serve failed for $mix" >&2; exit 1; }
    row=$(echo "$j" | python3 -c "
import json, sys
j = json.load(sys.stdin)
print('%d %.2f %.1f %.2f' % (j['failed'], j['output_tokens_per_s'], 1e3 * j['ttft_s']['p50'], 1e3 * j['itl_s']['p50']))")
    set -- $row
    TPS[$round,$mix]=$2
    echo "| $round | $mix | $1 | $2 | $3 | $4 |" | tee -a "$TMP/table"
  done
done
{
  echo
  for round in $(seq "$ROUNDS"); do
    python3 -c "
import sys
b, s, m, mb = map(float, sys.argv[1:5])
print('- round %s: four adapters / one adapter %.3fx; base + three adapters / one adapter %.3fx; one adapter / base %.3fx' % (sys.argv[5], m / s, mb / s, s / b))" \
      "${TPS[$round,$BASE]}" "${TPS[$round,a1]}" "${TPS[$round,a1,a2,a3,a4]}" "${TPS[$round,$BASE,a1,a2,a3]}" "$round"
  done
  echo
} >>"$TMP/table"
cat "$TMP/table" >>"$OUT"
tail -n $((ROUNDS + 2)) "$TMP/table"
echo "appended to $OUT"
