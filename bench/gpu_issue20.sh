#!/usr/bin/env bash
# gpu_issue20.sh — the single-GPU run in one device call (device time is
# short): build, every CUDA op/training/optimizer/scheduler test, fixture
# parity (inference and --train, fp32 and bf16), a short `lmc train --device
# cuda`, then the GPT-2 124M training bench against torch.compile with
# whatever time is left. Each step has its own time limit; logs are packed
# into $OUT/logs.tar.gz (the device returns at most 8 files) and a summary is
# printed last.
# Usage (device): source .devdeps/device-deps.sh unpack && bench/gpu_issue20.sh
# env: BUDGET_S (whole script, default 540), MODELS (bench, default gpt2),
#      SYSTEMS (default "lmc compile").
. "$(dirname "$0")/gpu_common.sh"
BUDGET_S=${BUDGET_S:-540}
OUT=${OUT:-/tmp/lmc-gpu-out}
L=/tmp/lmc-gpu-logs
rm -rf $L && mkdir -p $L/checks $L/train
gpu_devdeps
export OPS_ARGS=${OPS_ARGS:---quick}
export TARGETS="lmc_cli test_ops_cuda test_train_ops_cuda test_attention_train_cuda test_optim_cuda test_sched_cuda"
OUT=$L/checks bench/run_cuda.sh build test parity train 2>&1 | tee $L/checks/summary.txt
for t in test_optim_cuda test_sched_cuda; do
  timeout 90 build-dev/$t >$L/checks/$t.log 2>&1; r=$?
  echo "$t rc=$r $(grep -c '^FAIL' $L/checks/$t.log) FAIL lines; $(tail -1 $L/checks/$t.log)" | tee -a $L/checks/summary.txt
done
left=$((BUDGET_S - ($(date +%s) - T0) - 15))
echo "--- training bench with ${left}s left"
if [ $left -gt 90 ]; then
  OUT=$L/train WORK=/tmp/lmc-train-work SKIP_BUILD=1 BUDGET_S=$left MODELS=${MODELS:-gpt2} \
    SYSTEMS=${SYSTEMS:-lmc compile} LMC_STEPS=${LMC_STEPS:-20} LMC_SKIP=${LMC_SKIP:-4} \
    TORCH_STEPS=${TORCH_STEPS:-15} RESULTS=$L/train/train-cuda.md bench/run_train_cuda.sh 2>&1 | tee $L/train/summary.txt
fi
cp $L/train/train-cuda.md "$OUT/" 2>/dev/null
cp $L/checks/summary.txt "$OUT/checks-summary.txt"
tar -czf "$OUT/logs.tar.gz" -C $L . 2>/dev/null
echo "=== total $(($(date +%s) - T0)) s"
