#!/usr/bin/env bash
# amx_device.sh — the AMX-BF16 checks and A/B timings on the device's Xeon
# (one call): build, the bf16 tests with AMX on and with LMC_CPU_AMX=0,
# then bench_gemm_bf16 (1 thread) and bench_pf (2 threads) interleaved AMX
# on/off, pinned to cores 0,1. Logs under $O (default $OUT or /tmp/amx).
# AMX is opt-in (LMC_CPU_AMX=1) until this has passed: every step below
# sets LMC_CPU_AMX=1 or 0 explicitly.
# Usage: bench/amx_device.sh [quick] [tests] [bench] [train] (in that order given)
set -u
O=${OUT:-/tmp/amx}; mkdir -p "$O"
ROOT=$(pwd); B=${BUILD:-/tmp/bd}
WHAT=${*:-tests bench}
source .devdeps/device-deps.sh unpack >/dev/null; export PKG_CONFIG_SYSROOT_DIR=/tmp/devdeps
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DLMC_CUDA=OFF -DLMC_WERROR=ON >/dev/null &&
  make -C "$B" -j16 test_gemm_bf16 test_gemm_amx_emu test_matmul_pf test_attention_bf16 test_xent_bf16 lmc_cli bench_pf bench_gemm_bf16 2>&1 | tail -n 20
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1); flags: $(grep -o 'amx[a-z_0-9]*\|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' '); load $(cut -d' ' -f1-3 /proc/loadavg)"
LMC_CPU_AMX=1 "$B/test_gemm_bf16" 2>&1 | head -3
printf '#!/bin/sh\nLMC_CPU_AMX=0 exec %s/lmc "$@"\n' "$B" >/tmp/lmc-noamx; chmod +x /tmp/lmc-noamx
printf '#!/bin/sh\nLMC_CPU_AMX=1 exec %s/lmc "$@"\n' "$B" >/tmp/lmc-amx; chmod +x /tmp/lmc-amx
for w in $WHAT; do case $w in
tests)
  for a in 1 0; do
    echo "== tests LMC_CPU_AMX=$a"
    (cd "$B" && LMC_CPU_AMX=$a timeout 300 ctest -R "test_gemm_bf16|test_gemm_amx_emu|test_matmul_pf|test_attention_bf16|test_xent_bf16|test_train_bf16_cpu" --output-on-failure >"$O/ctest$a.log" 2>&1; tail -n 12 "$O/ctest$a.log")
  done;;
quick)
  for a in 1 0; do for t in test_gemm_bf16 test_matmul_pf; do echo "== $t LMC_CPU_AMX=$a"; LMC_CPU_AMX=$a "$B/$t" 2>&1 | tail -n 4; done; done;;
bench)
  for a in 1 0 1 0; do echo "== bench_gemm_bf16 LMC_CPU_AMX=$a"; LMC_CPU_AMX=$a taskset -c 0 "$B/bench_gemm_bf16" 3 2>&1 | tee -a "$O/gemm$a.log" | tail -n 8; done
  for a in 1 0; do echo "== bench_pf LMC_CPU_AMX=$a"; LMC_CPU_AMX=$a taskset -c 0,1 "$B/bench_pf" --threads 2 --rounds 3 2>&1 | tee -a "$O/pf$a.log" | tail -n 14; done;;
train)
  echo "== train bf16 amx vs noamx"
  LMC_BINS="amx=/tmp/lmc-amx noamx=/tmp/lmc-noamx" DTYPES="bf16" TORCH_MODES="" ROUNDS=${TROUNDS:-1} WORK=/tmp/tw taskset -c 0,1 bash bench/run_train_cpu.sh 2>&1 | tee "$O/train.log" | tail -n 12;;
esac; done
echo "load after $(cut -d' ' -f1-3 /proc/loadavg)"
