#!/usr/bin/env bash
# amx_device.sh — the AMX-BF16 checks and A/B timings on the device's Xeon
# (one call): build, the bf16 tests with AMX on and with LMC_CPU_AMX=0,
# then bench_gemm_bf16 (1 thread) and bench_pf (2 threads) interleaved AMX
# on/off, pinned to cores 0,1. Logs under $O (default $OUT or /tmp/amx).
# AMX is opt-in (LMC_CPU_AMX=1) until this has passed: every step below
# sets LMC_CPU_AMX=1 or 0 explicitly.
# Usage: bench/amx_device.sh [quick] [tests] [bench] [train] [final] [trainfinal]
#   (steps run in the order given; final needs .llsrc carried). Two calls:
#   `quick tests bench train` (~8 min), then `final trainfinal` (or one each).
# AMX-INT8 (the quantized prefill, src/quant/qmatmul_amx.c), one call of
#   ~5-8 min: `qtests qbench`. qtests: test_qmatmul_amx_emu with
#   LMC_CPU_AMX=1 (real AMX-INT8 against the tile model's exact bits; its
#   last lines must say "real AMX-INT8: checked"), then test_qmatmul,
#   test_qmatmul_amx_emu, test_matmul_smallm, test_hf_quant, test_tp_quant,
#   test_gguf_model, test_quant_model with LMC_CPU_AMX=1 and 0. qbench:
#   bench_qamx (the kernel alone, AMX vs VNNI in one process, 125M and 1.1B
#   linear shapes at M = 512, 2 and 1 threads; Q8_0, Q4_0, Q4_0R, Q4_KR,
#   GPTQ-4), then the random 125M Llama
#   of run_issue10_quant.sh (numpy, no network) as Q8_0/Q4_0/Q4_K GGUFs
#   (`lmc convert`; the CPU loader runs Q4_0 and Q4_K as Q4_0R / Q4_KR) and a GPTQ-4 g128 folder (`lmc quantize --method rtn`): the
#   512-token prefill AMX-INT8 on/off interleaved (LMC_CPU_AMX=1 with and
#   without LMC_CPU_AMX_INT8=0: AMX-BF16 on in both), wall tok/s at 2
#   threads (3 rounds) and CPU-time tok/s at 1 thread
#   (bench/prefill_cputime_ab.py); the 1.1B shape too (QMODELS="r125m r1b")
#   if the call has time left.
set -u
O=${OUT:-/tmp/amx}; mkdir -p "$O"
ROOT=$(pwd); B=${BUILD:-/tmp/bd}
WHAT=${*:-tests bench}
source .devdeps/device-deps.sh unpack >/dev/null; export PKG_CONFIG_SYSROOT_DIR=/tmp/devdeps
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DLMC_CUDA=OFF -DLMC_WERROR=ON >/dev/null &&
  make -C "$B" -j16 bench_qamx test_qmatmul_amx_emu test_qmatmul test_matmul_smallm test_hf_quant test_tp_quant test_gemm_bf16 test_gemm_amx_emu test_gemm_bf16_amx_emu test_matmul_pf test_attention_bf16 test_xent_bf16 test_muon_bf16 lmc_cli bench_pf bench_cpu bench_gemm_bf16 2>&1 | tail -n 20
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1); flags: $(grep -o 'amx[a-z_0-9]*\|avx512_bf16\|avx512_vnni' /proc/cpuinfo | sort -u | tr '\n' ' '); load $(cut -d' ' -f1-3 /proc/loadavg)"
LMC_CPU_AMX=1 "$B/test_gemm_bf16" 2>&1 | head -3
printf '#!/bin/sh\nLMC_CPU_AMX=0 exec %s/lmc "$@"\n' "$B" >/tmp/lmc-noamx; chmod +x /tmp/lmc-noamx
printf '#!/bin/sh\nLMC_CPU_AMX=1 exec %s/lmc "$@"\n' "$B" >/tmp/lmc-amx; chmod +x /tmp/lmc-amx
for w in $WHAT; do case $w in
tests)
  for a in 1 0; do
    echo "== tests LMC_CPU_AMX=$a"
    (cd "$B" && LMC_CPU_AMX=$a timeout 300 ctest -R "test_gemm_bf16|test_gemm_amx_emu|test_gemm_bf16_amx_emu|test_matmul_pf|test_attention_bf16|test_xent_bf16|test_muon_bf16|test_train_bf16_cpu" --output-on-failure >"$O/ctest$a.log" 2>&1; tail -n 12 "$O/ctest$a.log")
  done;;
quick)
  for a in 1 0; do for t in test_gemm_bf16 test_matmul_pf; do echo "== $t LMC_CPU_AMX=$a"; LMC_CPU_AMX=$a "$B/$t" 2>&1 | tail -n 4; done; done;;
bench)
  for a in 1 0 1 0; do echo "== bench_gemm_bf16 LMC_CPU_AMX=$a"; LMC_CPU_AMX=$a taskset -c 0 "$B/bench_gemm_bf16" 3 2>&1 | tee -a "$O/gemm$a.log" | tail -n 8; done
  for a in 1 0; do echo "== bench_pf LMC_CPU_AMX=$a"; LMC_CPU_AMX=$a taskset -c 0,1 "$B/bench_pf" --threads 2 --rounds 3 2>&1 | tee -a "$O/pf$a.log" | tail -n 14; done;;
train)
  echo "== train bf16 amx vs noamx"
  LMC_BINS="amx=/tmp/lmc-amx noamx=/tmp/lmc-noamx" DTYPES="bf16" TORCH_MODES="" ROUNDS=${TROUNDS:-1} WORK=/tmp/tw taskset -c 0,1 bash bench/run_train_cpu.sh 2>&1 | tee "$O/train.log" | tail -n 12;;
final)
  # the goals' measurements with AMX on: llama.cpp built here, issue 10's
  # float prefill/serving against it, then bench_pf AMX on/off
  mkdir -p /tmp/lb && tar -C /tmp/lb -xzf .llsrc/llama-src.tgz && (cd /tmp/lb/llama.cpp && cmake -S . -B build \
    -DGGML_NATIVE=ON -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF >/dev/null &&
    make -C build -j16 llama-bench llama-server 2>&1 | tail -n 3)
  LMC_CPU_AMX=1 OUT=$O/issue10-float.md BUILD=$B ROUNDS=2 SROUNDS=1 THREADS=2 LEVELS="8 64" P=128 M=128 \
    PEER_BIN=/tmp/lb/llama.cpp/build/bin taskset -c 0,1 bash bench/run_issue10_float.sh >"$O/issue10.log" 2>&1
  tail -n 30 "$O/issue10-float.md"
  for a in 1 0; do echo "== bench_pf LMC_CPU_AMX=$a"; LMC_CPU_AMX=$a taskset -c 0,1 "$B/bench_pf" --threads 2 2>&1 | tee -a "$O/pf-final$a.log" | tail -n 14; done;;
qtests)
  echo "== test_qmatmul_amx_emu LMC_CPU_AMX=1 (real AMX-INT8 against the model)"
  LMC_CPU_AMX=1 "$B/test_qmatmul_amx_emu" 2>&1 | tail -n 6
  for a in 1 0; do
    echo "== quantized tests LMC_CPU_AMX=$a"
    (cd "$B" && LMC_CPU_AMX=$a timeout 150 ctest -R "^(test_qmatmul|test_qmatmul_amx_emu|test_matmul_smallm|test_hf_quant|test_tp_quant|test_gguf_model|test_quant_model)$" --output-on-failure >"$O/qctest$a.log" 2>&1; tail -n 14 "$O/qctest$a.log")
  done;;
qbench)
  for t in 2 1; do echo "== bench_qamx $t thread(s), LMC_CPU_AMX=1 (AMX and VNNI columns interleaved in one process)"
    LMC_CPU_AMX=1 taskset -c 0,1 "$B/bench_qamx" $t 5 2>&1 | tee -a "$O/qamx-kernel.log"; done
  # AMX-INT8 on / off with AMX-BF16 on in both: only the quantized product differs
  printf '#!/bin/sh\nLMC_CPU_AMX=1 exec %s/lmc "$@"\n' "$B" >/tmp/lmc-q8on; chmod +x /tmp/lmc-q8on
  printf '#!/bin/sh\nLMC_CPU_AMX=1 LMC_CPU_AMX_INT8=0 exec %s/lmc "$@"\n' "$B" >/tmp/lmc-q8off; chmod +x /tmp/lmc-q8off
  QC=/tmp/lmc-qamx; mkdir -p "$QC"; CACHE=$QC; log() { echo "$*"; }
  eval "$(sed -n '/^make_model() {/,/^}/p' bench/run_issue10_quant.sh)"
  P512=$(python3 -c 'print("the quick brown fox "*25 + "abcdefghijkl")')
  for m in ${QMODELS:-r125m r1b}; do
    [ "$m" = r1b ] && [ "$SECONDS" -gt 240 ] && { echo "== qbench: r1b skipped (${SECONDS}s used)"; continue; }
    case $m in r125m) make_model r125m 768 12 12 4 2048;; r1b) make_model r1b 2048 22 32 4 5632;; esac || { echo "making $m failed"; continue; }
    for q in q8_0 q4_0 q4_k; do
      [ -s "$QC/$m.$q.gguf" ] || "$B/lmc" convert -m "$QC/$m" -o "$QC/$m.$q.gguf" --dtype $q >"$O/convert-$m-$q.log" 2>&1 || { echo "convert $m $q failed"; tail -n 3 "$O/convert-$m-$q.log"; }
    done
    [ -s "$QC/$m-gptq4/config.json" ] || { rm -rf "$QC/$m-gptq4"; "$B/lmc" quantize -m "$QC/$m" -o "$QC/$m-gptq4" --method rtn --bits 4 --group 128 --head --threads 16 >"$O/quantize-$m.log" 2>&1 || { echo "quantize $m failed"; tail -n 3 "$O/quantize-$m.log"; }; }
    echo "== qbench $m: 512-token prefill, 2 threads, wall (load $(cut -d' ' -f1-3 /proc/loadavg))"
    for r in 1 2 3; do for q in q8_0 q4_0 q4_k gptq4; do for a in on off; do
      printf '%s %s AMX-INT8 %s round %s: ' "$m" "$q" "$a" "$r"
      f="$QC/$m.$q.gguf"; [ $q = gptq4 ] && f="$QC/$m-gptq4"
      taskset -c 0,1 /tmp/lmc-q8$a generate -m "$f" -p "$P512" -n 1 --temp 0 --ignore-eos -t 2 --device cpu 2>&1 >/dev/null | grep -o 'prompt [0-9]* tokens in [0-9.]* s ([0-9.]* tok/s)' | tee -a "$O/qbench-$m.log"
    done; done; done
    echo "== qbench $m: prefill CPU time, 1 thread (new = AMX-INT8 on, old = off; AMX-BF16 on in both)"
    [ "$m" = r1b ] && [ "$SECONDS" -gt 400 ] && { echo "== qbench: r1b CPU time skipped (${SECONDS}s used)"; continue; }
    taskset -c 0 python3 bench/prefill_cputime_ab.py /tmp/lmc-q8on /tmp/lmc-q8off $([ "$m" = r1b ] && echo 1 || echo 3) "$QC/$m.q8_0.gguf" "$QC/$m.q4_0.gguf" "$QC/$m.q4_k.gguf" "$QC/$m-gptq4" 2>&1 | tee -a "$O/qbench-cpu-$m.log" | tail -n 8
  done;;
trainfinal)
  # issue 8's measurement: lmc fp32 and bf16 (AMX on) against torch.compile
  LMC_CPU_AMX=1 LMC_BINS="lmc=$B/lmc" DTYPES="fp32 bf16" TORCH_MODES=compile ROUNDS=2 WORK=/tmp/tw \
    taskset -c 0,1 bash bench/run_train_cpu.sh 2>&1 | tee "$O/train-final.log" | tail -n 16;;
esac; done
echo "load after $(cut -d' ' -f1-3 /proc/loadavg)"
