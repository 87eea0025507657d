#!/usr/bin/env bash
# gpu_lora_profile.sh — where a LoRA fine-tuning step's GPU time and memory
# go (issue 12's GPU goals), in one device call: builds, times `lmc finetune`
# LoRA at the 1.1B shape (seq 2048) with and without --recompute against the
# PEFT peer (bench/gpu_qlora.sh MODES=lora), then runs one step under Nsight
# Compute and sums GPU time per kernel name ($OUT/kernels.txt).
# Usage (device): source .devdeps/device-deps.sh unpack && bench/gpu_lora_profile.sh
# env: OUT, SEQ (2048), NCU_S (time limit of the profiled run, 240)
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
OUT=${OUT:-/tmp/lmc-lora-prof}; SEQ=${SEQ:-2048}; NCU_S=${NCU_S:-240}
B=build-dev; LMC=$B/lmc; W=/tmp/lmc-qlora-work; M=/tmp/llama-1.1b
mkdir -p "$OUT" "$W"
export PKG_CONFIG_SYSROOT_DIR=${PKG_CONFIG_SYSROOT_DIR:-/tmp/devdeps}
S=$OUT/summary.txt
say() { echo "$*" | tee -a "$S"; }
say "date $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name --format=csv,noheader)"
cmake -S . -B $B -DLMC_WERROR=ON >"$OUT/build.log" 2>&1 && make -C $B -j16 lmc_cli lmc_cuda >>"$OUT/build.log" 2>&1 ||
  { tail -30 "$OUT/build.log"; exit 1; }
say "build ok ($(($(date +%s) - T0)) s)"
OUT=$W/q SKIP_BUILD=1 MODES=lora ROUNDS=1 STEPS=6 SKIP=2 BUDGET_S=200 bash bench/gpu_qlora.sh >/dev/null 2>&1
grep -E 'round|median|check|memory' $W/q/summary.txt | tee -a "$S"
cp $W/run-lora.log "$OUT/lora.log" 2>/dev/null
idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
for rcmp in recompute; do
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$W/mem-rc" &
  mp=$!
  rm -rf $W/out-rc
  timeout 120 $LMC finetune -m $M --data $W/sft.jsonl -o $W/out-rc --seq "$SEQ" --batch 1 --pack --steps 6 --device cuda \
    --dtype bf16 --lora-r 16 --lora-alpha 32 --lora-targets all-linear --recompute >"$OUT/lora-recompute.log" 2>&1
  r=$?; kill $mp; wait $mp 2>/dev/null
  grep -o 'memory (MiB).*\|device memory after.*' "$OUT/lora-recompute.log" | sed 's/^/  recompute /' | tee -a "$S"
  say "lmc lora --recompute rc=$r: $(tail -n +3 $W/out-rc.metrics.jsonl 2>/dev/null | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/' | tr '\n' ' ') tok/s; peak $(( $(sort -g $W/mem-rc | tail -1) - idle )) MiB"
done
rm -rf $W/out-ncu
timeout "$NCU_S" ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
  $LMC finetune -m $M --data $W/sft.jsonl -o $W/out-ncu --seq "$SEQ" --batch 1 --pack --steps 1 --device cuda \
  --dtype bf16 --lora-r 16 --lora-alpha 32 --lora-targets all-linear >"$W/ncu.csv" 2>"$OUT/ncu.err"
say "ncu rc=$? ($(($(date +%s) - T0)) s)"
python3 - "$W/ncu.csv" >"$OUT/kernels.txt" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1], errors="replace")) if len(r) > 10]
h = rows[0]; ki = h.index("Kernel Name"); vi = h.index("Metric Value")
gi = h.index("Grid Size") if "Grid Size" in h else None; bi = h.index("Block Size") if "Block Size" in h else None
agg = collections.defaultdict(lambda: [0, 0.0]); tot = 0.0
for r in rows[1:]:
    try: v = float(r[vi].replace(",", ""))
    except ValueError: continue
    name = r[ki].split("(")[0][:90]
    agg[name][0] += 1; agg[name][1] += v / 1e3; tot += v / 1e3
print(f"total GPU time {tot/1e3:.1f} ms over {sum(n for n, _ in agg.values())} kernels")
print(f"{'kernel':90s} {'calls':>6s} {'total ms':>9s} {'mean us':>9s} {'share':>6s}")
for k, (n, t) in sorted(agg.items(), key=lambda x: -x[1][1])[:60]:
    print(f"{k:90s} {n:6d} {t/1e3:9.2f} {t / n:9.1f} {100*t/tot:5.1f}%")
PY
head -45 "$OUT/kernels.txt" | tee -a "$S"
say "=== total $(($(date +%s) - T0)) s"
