#!/usr/bin/env bash
# run_cuda.sh — the GPU machine's script: builds the CUDA targets, runs the
# CUDA op tests, fixture parity on the GPU (fp32 and bf16), the sanitizers
# on the quick op tests, the training checks (CUDA training ops and
# FlashAttention backward vs the CPU, parity --train on the GPU in bf16 and
# fp32, a short `lmc train --device cuda` at the default model's size), and
# the benches (our attention vs torch SDPA flash and cuDNN; a random 1.1B
# Llama's prefill and decode vs transformers).
# Logs go to $OUT (or /tmp/lmc-cuda-out). Sections, run in this order:
# build test parity train attn model qmatmul sanitize (default: all but
# sanitize). qmatmul: test_qmatmul_cuda (the CUDA quantized matmul vs the
# float reference and the CPU twin), then bench_qmatmul_cuda: the quantized GEMV (batch 1/4/16)
# and prefill GEMM (M=512) per format vs the weight-read roofline and bf16
# (QMM_ARGS passes options, e.g. --formats q4_0,nf4).
# Usage (device): source .devdeps/device-deps.sh unpack && bench/run_cuda.sh [SECTION ...]
set -u -o pipefail
OUT=${OUT:-/tmp/lmc-cuda-out}
mkdir -p "$OUT"
secs=${*:-build test parity train attn model qmatmul}
has() { [[ " $secs " == *" $1 "* ]]; }
B=build-dev
rc=0
echo "date $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
if has build || [ ! -x $B/lmc ] || { has qmatmul && { [ ! -x $B/bench_qmatmul_cuda ] || [ ! -x $B/test_qmatmul_cuda ]; }; }; then
  cmake -S . -B $B -DLMC_WERROR=${LMC_WERROR:-ON} >"$OUT/build.log" 2>&1 &&
    make -C $B -j16 ${TARGETS:-lmc_cli test_ops_cuda test_train_ops_cuda test_attention_train_cuda bench_attn_cuda bench_model_cuda bench_qmatmul_cuda test_qmatmul_cuda} >>"$OUT/build.log" 2>&1 ||
    { tail -40 "$OUT/build.log"; exit 1; }
  echo "build ok"
fi
if has test; then
  timeout 300 $B/test_ops_cuda ${OPS_ARGS:-} >"$OUT/test_ops_cuda.log" 2>&1; r=$?
  grep -v "^FAIL" "$OUT/test_ops_cuda.log" | tail -20
  grep "^FAIL" "$OUT/test_ops_cuda.log" | head -30
  echo "test_ops_cuda rc=$r"
  [ $r = 0 ] || rc=1
fi
if has parity; then
  for f in tests/fixtures/*/; do
    grep -q '"mamba"' "$f/config.json" && continue
    for dt in fp32 bf16; do
      $B/lmc parity "$f" --device cuda --dtype $dt >"$OUT/parity.tmp" 2>&1; r=$?
      cat "$OUT/parity.tmp" >>"$OUT/parity.log"
      echo "parity $f $dt rc=$r: $(grep -E 'logits|greedy' "$OUT/parity.tmp" | awk '{print $1, $5, $6, $7, $8}' | tr '\n' ';')"
      [ $r = 0 ] || rc=1
    done
  done
fi
if has train; then
  for t in test_train_ops_cuda test_attention_train_cuda; do
    timeout 200 $B/$t >"$OUT/$t.log" 2>&1; r=$?
    grep -v "^FAIL" "$OUT/$t.log" | tail -14
    grep "^FAIL" "$OUT/$t.log" | head -20
    echo "$t rc=$r"
    [ $r = 0 ] || rc=1
  done
  for f in tests/fixtures/*/; do
    grep -q '"mamba"' "$f/config.json" && continue
    for dt in bf16 fp32; do
      timeout 60 $B/lmc parity "$f" --train --device cuda --dtype $dt >"$OUT/parity.tmp" 2>&1; r=$?
      cat "$OUT/parity.tmp" >>"$OUT/parity_train.log"
      echo "parity --train $f $dt rc=$r: $(grep -ciE 'fail' "$OUT/parity.tmp") failing lines; $(grep -iE '^ *loss' "$OUT/parity.tmp" | head -1)"
      [ $r = 0 ] || rc=1
    done
  done
  timeout 120 bash tests/test_train_cli.sh $B/lmc >"$OUT/test_train_cli.log" 2>&1; r=$?
  tail -3 "$OUT/test_train_cli.log"; echo "test_train_cli rc=$r"; [ $r = 0 ] || rc=1
  # GPU training throughput at the default model's size (README's recipe, 40 steps)
  D=/tmp/kjvdata
  [ -d $D ] || $B/lmc prepare-data -m models/kjv-llama --text-file data/kjv.txt --val-from-line 71726 -o $D >/dev/null 2>&1
  rm -rf /tmp/kjvrun
  timeout 150 $B/lmc train --data $D -o /tmp/kjvrun --arch llama --layers 8 --hidden 288 --heads 6 --kv-heads 6 \
    --intermediate 768 --max-pos 256 --tie --batch 16 --seq 256 --steps 40 --lr 1.5e-3 --warmup 10 \
    --eval-every 20 --eval-batches 4 --save-every 1000 --device cuda ${TRAIN_ARGS:-} >"$OUT/train_kjv.log" 2>&1; r=$?
  grep -v "^\s*$" "$OUT/train_kjv.log" | tail -6; echo "lmc train --device cuda rc=$r"; [ $r = 0 ] || rc=1
fi
shapes="16,12,1024,64 8,16,2048,128 2,16,8192,128 1,32,16384,128"
if has attn; then
  echo "--- ours (q f32, K/V bf16 as the cache holds them, bf16 tensor cores)"
  $B/bench_attn_cuda $shapes 2>&1 | tee "$OUT/bench_attn.log"
  echo "--- torch SDPA (bf16)"
  python3 bench/bench_cuda.py attn $shapes 2>&1 | tee -a "$OUT/bench_attn.log"
fi
if has model; then
  python3 bench/bench_cuda.py bw 2>&1 | tee "$OUT/bench_model.log"
  M=/tmp/llama-1.1b
  [ -f $M/config.json ] || python3 bench/bench_cuda.py makemodel $M 2>&1 | tail -1
  $B/bench_model_cuda $M 512 128 2>&1 | tee -a "$OUT/bench_model.log"
  python3 bench/bench_cuda.py hf $M 512 128 2>&1 | grep -v Warning | tee -a "$OUT/bench_model.log"
fi
if has qmatmul; then
  timeout 200 $B/test_qmatmul_cuda >"$OUT/test_qmatmul_cuda.log" 2>&1; r=$?
  grep -E "FAIL|worst|passed|skipped" "$OUT/test_qmatmul_cuda.log" | head -20
  echo "test_qmatmul_cuda rc=$r"; [ $r = 0 ] || rc=1
  timeout 500 $B/bench_qmatmul_cuda ${QMM_ARGS:-} 2>&1 | tee "$OUT/bench_qmatmul.log"; r=$?
  echo "bench_qmatmul_cuda rc=$r"; [ $r = 0 ] || rc=1
fi
if has sanitize; then
  for tool in memcheck racecheck; do
    timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 $B/test_ops_cuda --quick \
      >"$OUT/sanitize-$tool.log" 2>&1; r=$?
    echo "compute-sanitizer $tool rc=$r: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|passed' "$OUT/sanitize-$tool.log" | tr '\n' ' ')"
  done
fi
exit $rc
