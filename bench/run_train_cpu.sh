#!/usr/bin/env bash
# run_train_cpu.sh — CPU training throughput, lmc vs PyTorch in one run, on
# the default model's shape (Llama, 8 layers, hidden 288, 6 heads / 6 kv
# heads, intermediate 768, vocab 8192, tied, 256 positions), AdamW,
# clip 1.0, batch 16 x 256 random tokens, THREADS threads for everyone, in
# each precision of DTYPES: fp32, and bf16 mixed precision (lmc: `--dtype
# bf16`, bf16 GEMM operands with f32 sums, f32 master weights, gradients
# and optimizer; PyTorch: torch.autocast('cpu', dtype=torch.bfloat16)
# around the forward and loss, f32 master weights and AdamW).
#
# Runs, in this order and ROUNDS times (interleaved, so a loaded machine
# slows every system alike): each lmc binary of LMC_BINS in each dtype
# (`lmc train`, tokens/s = median over the steps after LMC_SKIP of
# metrics.jsonl), then PyTorch (bench/bench_train.py --device cpu --dtype
# D) in each mode of TORCH_MODES and each dtype (torch.compile warms up
# first; tokens/s from the median timed step). Labels: lmc:LABEL-DTYPE,
# torch:MODE-DTYPE. Also each run's CPU seconds per step (lmc: the process's utime +
# stime between two logged steps; PyTorch: process_time per timed step):
# on a shared, loaded machine wall time swings with the neighbours' load,
# CPU time much less. Prints one line per run and a summary with the median
# of each system over the rounds and the ratios (wall and per CPU-second).
#
# Usage: bench/run_train_cpu.sh            (LMC_BINS defaults to build/lmc)
# env: LMC_BINS="label=path ..." DTYPES="fp32 bf16" THREADS=2 ROUNDS=2 LMC_STEPS=8
#      LMC_SKIP=2 TORCH_MODES="compile eager" TORCH_WARMUP=3 TORCH_STEPS=6
#      WORK=/tmp/lmc-train-cpu
#      PYTHON=python3
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
THREADS=${THREADS:-2}; ROUNDS=${ROUNDS:-2}
LMC_BINS=${LMC_BINS:-lmc=build/lmc}
LMC_STEPS=${LMC_STEPS:-8}; LMC_SKIP=${LMC_SKIP:-2}
DTYPES=${DTYPES:-fp32 bf16}
TORCH_MODES=${TORCH_MODES-compile eager}; TORCH_WARMUP=${TORCH_WARMUP:-3}; TORCH_STEPS=${TORCH_STEPS:-6}
WORK=${WORK:-/tmp/lmc-train-cpu}; PY=${PYTHON:-python3}
LAYERS=8 HIDDEN=288 HEADS=6 INTER=768 VOCAB=8192 SEQ=256 BATCH=16
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$WORK"
echo "date $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null) threads $THREADS" \
     "cpu $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
grep -qw avx512_bf16 /proc/cpuinfo && echo "cpu has avx512_bf16" || echo "cpu has no avx512_bf16 (lmc --dtype bf16 is refused)"
[ -d "$WORK/data" ] || "$PY" bench/bench_train.py write-shards "$WORK/data" --vocab $VOCAB --tokens 600000 \
  --val-tokens 65536 >/dev/null || exit 1
RES=$WORK/results.txt
: >"$RES"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r start: uptime $(uptime | sed 's/.*load/load/')"
  for lb in $LMC_BINS; do
   for dt in $DTYPES; do
    label=${lb%%=*}-$dt bin=${lb#*=}
    rm -rf "$WORK/run"
    "$bin" train --data "$WORK/data" -o "$WORK/run" --arch llama --layers $LAYERS --hidden $HIDDEN \
      --heads $HEADS --kv-heads $HEADS --intermediate $INTER --max-pos $SEQ --tie --batch $BATCH \
      --seq $SEQ --steps $LMC_STEPS --lr 1e-3 --warmup 2 --schedule cosine --eval-every 0 \
      --save-every 0 --threads "$THREADS" --dtype "$dt" >"$WORK/lmc.log" 2>&1 &
    pid=$!
    # the process's CPU time (utime + stime ticks) when step LMC_SKIP and
    # step LMC_STEPS-1 are logged: CPU seconds per step, robust to load
    c0= c1= n0=0 n1=0
    while kill -0 $pid 2>/dev/null; do
      n=$( [ -f "$WORK/run/metrics.jsonl" ] && wc -l <"$WORK/run/metrics.jsonl" || echo 0)
      t=$(awk '{print $14 + $15}' /proc/$pid/stat 2>/dev/null)
      if [ -z "$c0" ] && [ "$n" -ge "$LMC_SKIP" ] && [ -n "$t" ]; then c0=$t n0=$n; fi
      if [ -z "$c1" ] && [ "$n" -ge $((LMC_STEPS - 1)) ] && [ -n "$t" ]; then c1=$t n1=$n; fi
      sleep 0.1
    done
    wait $pid || { echo "lmc $label failed"; cat "$WORK/lmc.log"; exit 1; }
    tps=$("$PY" bench/bench_train.py lmc-metrics "$WORK/run/metrics.jsonl" --skip "$LMC_SKIP" |
          "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read())["tokens_per_s"])')
    cps=$(awk -v a="${c0:-0}" -v b="${c1:-0}" -v n=$((n1 - n0)) -v hz="$(getconf CLK_TCK)" \
          'BEGIN { print (n > 0 && b > a) ? (b - a) / hz / n : "nan" }')
    echo "round $r lmc:$label $tps $cps" | tee -a "$RES"
   done
  done
  for mode in $TORCH_MODES; do
   for dt in $DTYPES; do
    out=$("$PY" bench/bench_train.py --device cpu --dtype "$dt" --model llama --mode "$mode" \
      --layers $LAYERS --hidden $HIDDEN --heads $HEADS --intermediate $INTER --vocab $VOCAB \
      --max-pos $SEQ --batch $BATCH --seq $SEQ --warmup "$TORCH_WARMUP" --steps "$TORCH_STEPS" \
      2>"$WORK/torch.err" | tail -1)
    tps=$(echo "$out" | "$PY" -c 'import json,sys; j=json.loads(sys.stdin.read()); print(j["tokens_per_s"], j.get("cpu_s_per_step_median") or "nan")') ||
      { echo "torch $mode $dt failed"; tail -5 "$WORK/torch.err"; exit 2; }
    echo "round $r torch:$mode-$dt $tps" | tee -a "$RES"
   done
  done
done
echo "end: uptime $(uptime | sed 's/.*load/load/')"
"$PY" - "$RES" <<'EOF'
import statistics, sys
import math
runs, cpu = {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    runs.setdefault(f[2], []).append(float(f[3]))
    cpu.setdefault(f[2], []).append(float(f[4]) if len(f) > 4 else float("nan"))
tok = 16 * 256
med = {k: statistics.median(v) for k, v in runs.items()}
cmed = {k: statistics.median([x for x in v if not math.isnan(x)] or [float("nan")]) for k, v in cpu.items()}
print("\n| system | wall tokens/s (each round) | median | CPU s per step (each round) | tokens per CPU-second (median) |")
print("|---|---|---|---|---|")
for k, v in runs.items():
    print(f"| {k} | {', '.join(f'{x:,.0f}' for x in v)} | {med[k]:,.0f} | "
          f"{', '.join(f'{x:.2f}' for x in cpu[k])} | {tok / cmed[k]:,.0f} |")
for k in med:
    if k.startswith("lmc:"):
        for t in med:
            if t.startswith("torch:"):
                print(f"- {k} / {t}: wall {med[k] / med[t]:.2f}x, per CPU-second {cmed[t] / cmed[k]:.2f}x")
        for t in med:
            if t.startswith("lmc:") and t != k:
                print(f"- {k} / {t}: wall {med[k] / med[t]:.2f}x, per CPU-second {cmed[t] / cmed[k]:.2f}x")
EOF
