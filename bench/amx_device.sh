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
set -u
O=${OUT:-/tmp/amx}; mkdir -p "$O"
ROOT=$(pwd); B=${BUILD:-/tmp/bd}
WHAT=${*:-tests bench}
source .devdeps/device-deps.sh unpack >/dev/null; export PKG_CONFIG_SYSROOT_DIR=/tmp/devdeps
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DLMC_CUDA=OFF -DLMC_WERROR=ON >/dev/null &&
  make -C "$B" -j16 test_gemm_bf16 test_gemm_amx_emu test_gemm_bf16_amx_emu test_matmul_pf test_attention_bf16 test_xent_bf16 test_muon_bf16 lmc_cli bench_pf bench_cpu bench_gemm_bf16 2>&1 | tail -n 20
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1); flags: $(grep -o 'amx[a-z_0-9]*\|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' '); load $(cut -d' ' -f1-3 /proc/loadavg)"
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
trainfinal)
  # issue 8's measurement: lmc fp32 and bf16 (AMX on) against torch.compile
  LMC_CPU_AMX=1 LMC_BINS="lmc=$B/lmc" DTYPES="fp32 bf16" TORCH_MODES=compile ROUNDS=2 WORK=/tmp/tw \
    taskset -c 0,1 bash bench/run_train_cpu.sh 2>&1 | tee "$O/train-final.log" | tail -n 16;;
esac; done
echo "load after $(cut -d' ' -f1-3 /proc/loadavg)"
