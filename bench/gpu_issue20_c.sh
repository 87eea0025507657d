#!/usr/bin/env bash
# gpu_issue20_c.sh — the single-GPU run's third call: re-checks after the
# kernel changes that the first two calls led to (test_train_ops_cuda,
# test_ops_cuda --quick, parity --train on the dense fixtures in bf16 and
# fp32), the training bench against torch.compile again (GPT-2 and the
# Llama twin, same run), the per-kernel GPU time of batch-1 decode on the
# random 1.1B Llama (Nsight Compute: kernel time against wall time says
# whether decode is bound by kernels or by launches), then QLoRA/LoRA
# fine-tuning against PEFT (bench/gpu_qlora.sh) with the time left.
# Logs: $OUT/logs3.tar.gz, tables copied to $OUT.
# Usage (device): source .devdeps/device-deps.sh unpack && bench/gpu_issue20_c.sh [SECTION...]
# Sections: checks train prof qlora (default: all, in this order).
. "$(dirname "$0")/gpu_common.sh"
BUDGET_S=${BUDGET_S:-560}
OUT=${OUT:-/tmp/lmc-gpu-out}
L=/tmp/lmc-gpu-logs3
rm -rf $L && mkdir -p $L
secs=${*:-checks train prof qlora}
B=build-dev
gpu_devdeps
gpu_stamp
gpu_build $B $L/build.log lmc_cli test_ops_cuda test_train_ops_cuda bench_model_cuda ||
  { tail -40 $L/build.log; exit 1; }
echo "build ok ($(($(date +%s) - T0)) s)"

if has checks; then
  timeout 120 $B/test_train_ops_cuda >$L/test_train_ops_cuda.log 2>&1
  echo "test_train_ops_cuda rc=$?: $(tail -1 $L/test_train_ops_cuda.log)"
  grep -E "^FAIL" $L/test_train_ops_cuda.log | head -10
  grep -E "max rel err" $L/test_train_ops_cuda.log | head -16
  timeout 150 $B/test_ops_cuda --quick >$L/test_ops_cuda.log 2>&1
  echo "test_ops_cuda --quick rc=$?: $(tail -1 $L/test_ops_cuda.log)"
  grep -E "^FAIL" $L/test_ops_cuda.log | head -10
  for f in gpt2-tiny llama-tiny; do
    for dt in bf16 fp32; do
      timeout 60 $B/lmc parity tests/fixtures/$f --train --device cuda --dtype $dt >$L/pt-$f-$dt.log 2>&1
      echo "parity --train $f $dt rc=$?: $(tail -1 $L/pt-$f-$dt.log)"
    done
  done
fi

if has train && [ "$(left)" -gt 200 ]; then
  lim=$(( $(left) > 330 ? 170 : $(left) - 160 ))
  OUT=$L/train WORK=/tmp/lmc-train-work SKIP_BUILD=1 BUDGET_S=$lim MODELS="gpt2 llama" \
    SYSTEMS="lmc compile" LMC_STEPS=20 LMC_SKIP=4 TORCH_STEPS=15 RESULTS=$L/train/train-cuda.md \
    timeout $((lim + 20)) bench/run_train_cuda.sh >$L/train.log 2>&1
  echo "--- train bench rc=$?"
  sed -n '/^| system/,$p' $L/train/train-cuda.md 2>/dev/null | head -12
  cp $L/train/train-cuda.md "$OUT/train-cuda-c.md" 2>/dev/null
fi

if has prof && [ "$(left)" -gt 150 ]; then
  M=/tmp/llama-1.1b
  [ -f $M/config.json ] || python3 bench/bench_cuda.py makemodel $M >/dev/null 2>&1
  $B/bench_model_cuda $M 16 32 2>&1 | grep -E "decode" | tee $L/decode-wall.txt
  OUT=$L timeout 120 bench/profile_cuda.sh $M 16 4 >$L/prof-decode.txt 2>&1
  echo "--- decode kernels (ncu; 16-token prompt, then 4 decode steps, prefill included)"
  head -22 $L/prof-decode.txt
fi

if has qlora && [ "$(left)" -gt 120 ]; then
  echo "--- qlora with $(left) s left"
  OUT=$L/qlora BUDGET_S=$(( $(left) - 15 )) ROUNDS=1 bench/gpu_qlora.sh >$L/qlora.log 2>&1
  echo "gpu_qlora rc=$?"
  tail -25 $L/qlora.log
  cp $L/qlora/*.md "$OUT/" 2>/dev/null
fi
tar -czf "$OUT/logs3.tar.gz" -C $L . 2>/dev/null
echo "=== total $(($(date +%s) - T0)) s"
