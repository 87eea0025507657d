#!/usr/bin/env bash
# prefill_ab_bins.sh — two builds' bench_prefill_ab (our GEMM path only,
# --paths 1) run in turn, ROUNDS times, alternating which goes first: the
# 512-token prefill of the 125M F16 bench model (no load time in the
# figures), tok/s (wall) and tokens per CPU-second (process CPU time,
# robust to other load), and the ratio.
# Default: medians over the rounds' figures. --per-rep: each repetition's
# figures (bench_prefill_ab --verbose 1, both builds need it): medians,
# bests and the mean of the best three; on a shared machine the best
# repetitions are those that had both cores, a median mixes load phases.
#   bench/prefill_ab_bins.sh [--per-rep] NEW/bench_prefill_ab OLD/bench_prefill_ab [ROUNDS=6] [THREADS=2] [REPS=3]
set -euo pipefail
PER_REP=0; [ "${1:-}" = --per-rep ] && { PER_REP=1; shift; }
NEW=$1; OLD=$2; R=${3:-6}; T=${4:-2}; REPS=${5:-3}
tmp=$(mktemp -d)
for r in $(seq 1 "$R"); do
    if [ $((r % 2)) -eq 1 ]; then order="new old"; else order="old new"; fi
    for k in $order; do
        b=$NEW; [ "$k" = old ] && b=$OLD
        if [ "$PER_REP" = 1 ]; then # wall tok/s, tokens per CPU-second of each rep (warm-up: rep -1, left out)
            "$b" --paths 1 --threads "$T" --reps "$REPS" --verbose 1 2>&1 >/dev/null | awk '/ rep [0-9]/ {print $6, $9}' >>"$tmp/$k"
        else
            "$b" --paths 1 --threads "$T" --reps "$REPS" | awk -F'|' '/our AVX2/ {print $3, $4}' >>"$tmp/$k"
        fi
    done
done
python3 - "$tmp" "$PER_REP" <<'PY'
import statistics, sys
d, per_rep = sys.argv[1], sys.argv[2] == "1"
r = {k: [tuple(map(float, l.split())) for l in open(f"{d}/{k}")] for k in ("new", "old")}
def stats(v):
    top = sorted(v)[-3:]
    return statistics.median(v), max(v), sum(top) / len(top)
s = {k: (stats([a for a, _ in v]), stats([b for _, b in v])) for k, v in r.items()} # (wall, CPU)
for k in ("new", "old"):
    (w, c) = s[k]
    if per_rep:
        print(f"{k}: n={len(r[k])} tokens per CPU-second median {c[0]:.1f} best {c[1]:.1f} best-3 {c[2]:.1f} | "
              f"tok/s wall median {w[0]:.1f} best {w[1]:.1f} best-3 {w[2]:.1f}")
    else:
        print(f"{k}: tok/s wall {w[0]:.1f}, tokens per CPU-second {c[0]:.1f}  (per round CPU: " +
              ",".join(f"{b:.0f}" for _, b in r[k]) + ")")
(wn, cn), (wo, co) = s["new"], s["old"]
if per_rep:
    print(f"new / old: CPU median {cn[0] / co[0]:.3f}x best {cn[1] / co[1]:.3f}x best-3 {cn[2] / co[2]:.3f}x | "
          f"wall median {wn[0] / wo[0]:.3f}x best {wn[1] / wo[1]:.3f}x best-3 {wn[2] / wo[2]:.3f}x")
else:
    print(f"new / old: wall {wn[0] / wo[0]:.3f}x, CPU {cn[0] / co[0]:.3f}x")
PY
rm -rf "$tmp"
