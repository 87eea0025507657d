#!/usr/bin/env bash
# prefill_ab_bins.sh — two builds' bench_prefill_ab (our GEMM path only,
# --paths 1) run in turn, ROUNDS times, alternating which goes first: the
# 512-token prefill of the 125M F16 bench model (no load time in the
# figures), medians over all repetitions of tok/s (wall) and tokens per
# CPU-second (process CPU time, robust to other load), and the ratio.
#   bench/prefill_ab_bins.sh NEW/bench_prefill_ab OLD/bench_prefill_ab [ROUNDS=6] [THREADS=2] [REPS=3]
set -euo pipefail
NEW=$1; OLD=$2; R=${3:-6}; T=${4:-2}; REPS=${5:-3}
tmp=$(mktemp -d)
for r in $(seq 1 "$R"); do
    if [ $((r % 2)) -eq 1 ]; then order="new old"; else order="old new"; fi
    for k in $order; do
        b=$NEW; [ "$k" = old ] && b=$OLD
        "$b" --paths 1 --threads "$T" --reps "$REPS" | awk -F'|' '/our AVX2/ {print $3, $4}' >>"$tmp/$k"
    done
done
python3 - "$tmp" <<'PY'
import statistics, sys
d = sys.argv[1]
res = {k: [tuple(map(float, l.split())) for l in open(f"{d}/{k}")] for k in ("new", "old")}
med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in res.items()}
for k in ("new", "old"):
    print(f"{k}: tok/s wall {med[k][0]:.1f}, tokens per CPU-second {med[k][1]:.1f}  (per round CPU: " +
          ",".join(f"{c:.0f}" for _, c in res[k]) + ")")
print(f"new / old: wall {med['new'][0] / med['old'][0]:.3f}x, CPU {med['new'][1] / med['old'][1]:.3f}x")
PY
rm -rf "$tmp"
