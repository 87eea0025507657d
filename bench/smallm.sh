#!/usr/bin/env bash
# smallm.sh — the small-M kernels' bench, one run:
#  1. bench_smallm (bench/bench_smallm.c) on models/kjv-llama (bf16) and on
#     its 4-bit quantization (rtn, g128: the quantized small-M kernel): the
#     M-token forward over the 1-token forward, before and after, and greedy
#     speculative decoding against plain decoding, before and after.
#  2. `lmc generate` end to end (after): plain, --prompt-lookup 3 and
#     --self-spec 4, greedy, rounds interleaved, the generated text checked
#     equal to plain's, medians of the tok/s lmc prints.
# usage: bench/smallm.sh   (env: BUILD=build ROUNDS=9 N=128 THREADS=1)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-9}
N=${N:-128}
THREADS=${THREADS:-1}
cmake --build "$BUILD" -j2 --target lmc_cli bench_smallm >/dev/null
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$BUILD/lmc" quantize -m models/kjv-llama -o "$TMP/kjv-q4" --method rtn --bits 4 --group 128 >/dev/null

echo "commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "load before: $(uptime)"
echo
echo "## models/kjv-llama (bf16)"
"$BUILD/bench_smallm" models/kjv-llama -r "$ROUNDS" -n "$N" -t "$THREADS"
echo "## models/kjv-llama, 4-bit rtn g128 (lmc quantize; head and embeddings bf16)"
"$BUILD/bench_smallm" "$TMP/kjv-q4" -r "$ROUNDS" -n "$N" -t "$THREADS"

echo "## lmc generate, greedy, $N tokens, $THREADS thread(s), $ROUNDS interleaved rounds (medians)"
P="O give thanks unto the LORD; for he is good: for his mercy endureth for ever. O give thanks unto the God of gods: for his mercy endureth for ever. O give thanks to the Lord of lords:"
names=("plain" "--prompt-lookup 3" "--self-spec 4")
args=("" "--prompt-lookup 3" "--self-spec 4")
declare -A tps
for ((r = 0; r < ROUNDS; r++)); do
    for ((k = 0; k < 3; k++)); do
        c=$(((k + r) % 3))
        # shellcheck disable=SC2086
        "$BUILD/lmc" generate -m models/kjv-llama -p "$P" -n "$N" --temp 0 --ignore-eos -t "$THREADS" ${args[$c]} \
            >"$TMP/out$c" 2>"$TMP/err$c"
        if [ -f "$TMP/want" ]; then
            cmp -s "$TMP/want" "$TMP/out$c" || { echo "lmc generate ${names[$c]}: other text than plain" >&2; exit 1; }
        elif [ "$c" = 0 ]; then cp "$TMP/out0" "$TMP/want"; fi
        tps[$c]+="$(sed -n 's/.*generated [0-9]* tokens at \([0-9.]*\) tok\/s.*/\1/p' "$TMP/err$c") "
    done
done
[ -f "$TMP/want" ] && for c in 1 2; do cmp -s "$TMP/want" "$TMP/out$c" || { echo "text differs" >&2; exit 1; }; done
med() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
base=$(echo "${tps[0]}" | med)
echo
echo "| lmc generate | tok/s (median) | vs plain | speculative stats (last round) |"
echo "|---|---|---|---|"
for c in 0 1 2; do
    m=$(echo "${tps[$c]}" | med)
    s=$(grep -o 'speculative: .*' "$TMP/err$c" | sed 's/speculative: //' || true)
    echo "| ${names[$c]} | $m | $(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2fx", a / b}') | ${s:--} |"
done
echo
echo "Every configuration's text equal to plain's."
echo "load after: $(uptime)"
