#!/usr/bin/env bash
# gpu_issue20_bench.sh — the single-GPU run's second call (after
# gpu_issue20.sh's checks): host backtraces (cuda-gdb) of any check that
# crashed, the per-kernel GPU time of GPT-2 124M training steps (Nsight
# Compute), then the inference and serving benches of run_cuda.sh (attn,
# model, qmatmul) and run_serve_cuda.sh, each with its own time limit inside
# BUDGET_S. Logs are packed into $OUT/logs2.tar.gz, tables copied to $OUT.
# Usage (device): source .devdeps/device-deps.sh unpack && bench/gpu_issue20_bench.sh [SECTION...]
# Sections: bt prof attn model serve qmatmul (default: all, in this order).
. "$(dirname "$0")/gpu_common.sh"
BUDGET_S=${BUDGET_S:-560}
OUT=${OUT:-/tmp/lmc-gpu-out}
L=/tmp/lmc-gpu-logs2
rm -rf $L && mkdir -p $L
secs=${*:-bt prof attn model serve qmatmul}
B=build-dev
gpu_devdeps
gpu_stamp
gpu_build $B $L/build.log lmc_cli test_ops_cuda test_train_ops_cuda test_sched_cuda bench_attn_cuda \
  bench_model_cuda bench_qmatmul_cuda test_qmatmul_cuda ||
  { tail -40 $L/build.log; exit 1; }
echo "build ok ($(($(date +%s) - T0)) s)"

if has bt; then
  # a crash prints nothing of its own: the host stack says where
  bt() { # NAME CMD...
    local n=$1; shift
    timeout 120 cuda-gdb -q -batch -ex run -ex bt --args "$@" >$L/bt-$n.log 2>&1
    echo "--- bt $n: $(grep -E 'SIGSEGV|exited normally|exited with code' $L/bt-$n.log | head -1)"
    grep -E '^#[0-9]' $L/bt-$n.log | head -8
  }
  bt train_ops $B/test_train_ops_cuda
  bt moe_parity $B/lmc parity tests/fixtures/mixtral-tiny --device cuda --dtype fp32
fi

if has prof && [ "$(left)" -gt 200 ]; then
  D=/tmp/lmc-train-work/data-v50304
  [ -d $D ] || python3 bench/bench_train.py write-shards $D --vocab 50304 --tokens 1048576 --val-tokens 65536 >/dev/null 2>&1
  rm -rf /tmp/prof-run
  targs="--data $D -o /tmp/prof-run --arch gpt2 --vocab 50304 --layers 12 --hidden 768 --heads 12 --max-pos 1024 --batch 16 --seq 1024 --lr 3e-4 --warmup 0 --eval-every 0 --save-every 0 --device cuda --dtype bf16"
  # wall time per step without the profiler, then every kernel of steps 2-3 under ncu
  timeout 90 $B/lmc train $targs --steps 6 >$L/train-plain.log 2>&1
  echo "--- plain: $(grep -E '^step 6' $L/train-plain.log)"
  timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
    $B/lmc train $targs --steps 3 >$L/ncu-train.csv 2>$L/ncu-train.err
  echo "ncu rc=$?"
  python3 - $L/ncu-train.csv <<'PY' | tee $L/prof-train.txt
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1], errors="replace")) if len(r) > 10]
if not rows: print("no ncu rows"); sys.exit()
h = rows[0]; ki = h.index("Kernel Name"); vi = h.index("Metric Value")
agg = collections.defaultdict(lambda: [0, 0.0]); tot = 0.0
for r in rows[1:]:
    try: v = float(r[vi].replace(",", "")) / 1e3
    except ValueError: continue
    name = r[ki].split("(")[0][:80]
    agg[name][0] += 1; agg[name][1] += v; tot += v
print(f"3 steps, all kernels: {tot/1e3:.1f} ms GPU time ({tot/3e3:.1f} ms/step)")
print(f"{'kernel':80s} {'calls':>6s} {'ms/step':>8s} {'share':>6s}")
for k, (n, t) in sorted(agg.items(), key=lambda x: -x[1][1])[:30]:
    print(f"{k:80s} {n:6d} {t/3e3:8.2f} {100*t/tot:5.1f}%")
PY
fi

run_sec() { # NAME LIMIT CMD... (skipped when less time is left than LIMIT/2)
  local n=$1 lim=$2; shift 2
  local l; l=$(left)
  [ "$l" -gt $((lim / 2)) ] || { echo "--- $n skipped (${l}s left)"; return; }
  [ "$l" -lt "$lim" ] && lim=$l
  echo "--- $n (limit ${lim}s)"
  timeout $lim "$@" 2>&1 | tee $L/$n.log | tail -${TAILN:-25}
}
has attn && OUT=$L/attn run_sec attn 100 bench/run_cuda.sh attn
has model && OUT=$L/model run_sec model 150 bench/run_cuda.sh model
has serve && OUT=$L/serve LEVELS="1 8 64" run_sec serve 200 bench/run_serve_cuda.sh bench hf
has qmatmul && OUT=$L/qmm TAILN=40 QMM_ARGS=${QMM_ARGS:-} run_sec qmatmul 120 bench/run_cuda.sh qmatmul
cp bench/results/serve-cuda-*.md "$OUT/" 2>/dev/null
tar -czf "$OUT/logs2.tar.gz" -C $L . 2>/dev/null
echo "=== total $(($(date +%s) - T0)) s"
