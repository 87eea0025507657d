#!/usr/bin/env bash
# prefill_ab_reps.sh — like prefill_ab_bins.sh (two builds' bench_prefill_ab,
# our GEMM path, ROUNDS alternations, order swapped each round) but per
# repetition (--verbose 1): medians, bests and the mean of the best three of
# tok/s (wall) and tokens per CPU-second. On a shared machine the best
# repetitions are those that had both cores; a median mixes load phases.
# Both builds need bench_prefill_ab's --verbose.
#   bench/prefill_ab_reps.sh NEW/bench_prefill_ab OLD/bench_prefill_ab [ROUNDS=6] [THREADS=2] [REPS=3]
set -euo pipefail
NEW=$1; OLD=$2; R=${3:-6}; T=${4:-2}; REPS=${5:-3}
tmp=$(mktemp -d)
for r in $(seq 1 "$R"); do
    if [ $((r % 2)) -eq 1 ]; then order="new old"; else order="old new"; fi
    for k in $order; do
        b=$NEW; [ "$k" = old ] && b=$OLD
        "$b" --paths 1 --threads "$T" --reps "$REPS" --verbose 1 2>&1 >/dev/null |
            awk '/ rep [0-9]/ {print $6, $9}' >>"$tmp/$k" # wall tok/s, tokens per CPU-second (warm-up: rep -1, left out)
    done
done
python3 - "$tmp" <<'PY'
import statistics, sys
d = sys.argv[1]
r = {k: [tuple(map(float, l.split())) for l in open(f"{d}/{k}")] for k in ("new", "old")}
def stats(v):
    top = sorted(v)[-3:]
    return statistics.median(v), max(v), sum(top) / len(top)
for k in ("new", "old"):
    w, c = stats([a for a, _ in r[k]]), stats([b for _, b in r[k]])
    print(f"{k}: n={len(r[k])} tokens per CPU-second median {c[0]:.1f} best {c[1]:.1f} best-3 {c[2]:.1f} | "
          f"tok/s wall median {w[0]:.1f} best {w[1]:.1f} best-3 {w[2]:.1f}")
cn, co = stats([b for _, b in r["new"]]), stats([b for _, b in r["old"]])
wn, wo = stats([a for a, _ in r["new"]]), stats([a for a, _ in r["old"]])
print(f"new / old: CPU median {cn[0] / co[0]:.3f}x best {cn[1] / co[1]:.3f}x best-3 {cn[2] / co[2]:.3f}x | "
      f"wall median {wn[0] / wo[0]:.3f}x best {wn[1] / wo[1]:.3f}x best-3 {wn[2] / wo[2]:.3f}x")
PY
rm -rf "$tmp"
