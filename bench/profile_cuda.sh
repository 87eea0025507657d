#!/usr/bin/env bash
# profile_cuda.sh — per-kernel GPU time of a short prefill + decode run of
# bench_model_cuda under Nsight Compute (kernels serialised, clocks as
# found): calls, total and mean microseconds per kernel name, so a decode
# step's GPU time can be set against its wall time. Usage (device, after
# run_cuda.sh build): bench/profile_cuda.sh MODEL_DIR [P=16] [G=4]
set -u -o pipefail
OUT=${OUT:-/tmp/lmc-cuda-out}
M=$1 P=${2:-16} G=${3:-4}
LMC_BENCH_NO_MEM=1 timeout 400 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
  --print-units base build-dev/bench_model_cuda "$M" "$P" "$G" >"$OUT/ncu.csv" 2>"$OUT/ncu.err"
echo "ncu rc=$?"
python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
h = rows[0]; ki = h.index("Kernel Name"); vi = h.index("Metric Value")
agg = collections.defaultdict(lambda: [0, 0.0])
for r in rows[1:]:
    try: v = float(r[vi].replace(",", ""))
    except ValueError: continue
    name = r[ki].split("(")[0][:70]
    agg[name][0] += 1; agg[name][1] += v / 1e3
print(f"{'kernel':70s} {'calls':>6s} {'total us':>10s} {'mean us':>9s}")
for k, (n, t) in sorted(agg.items(), key=lambda x: -x[1][1]):
    print(f"{k:70s} {n:6d} {t:10.1f} {t / n:9.2f}")
PY
