#!/usr/bin/env bash
# gpu_quant_quality.sh — issue 10's quality table on a second, bigger model,
# in one device call: the ~91M KJV target (scripts/train_spec_pair.sh
# --target, TARGETS default 12x768x12x2048@0.5: rows of whole 256-blocks, so
# llama-quantize's K-quants apply without fallbacks) trains on the GPU with
# the default model's tokenizer and books, then bench/quant_quality_peer.sh
# runs on the machine's CPU with llama.cpp built there from LLAMA_SRC (a
# llama.cpp source .tgz), on THREADS threads.
# Usage (device, repository root): source .devdeps/device-deps.sh unpack &&
#   LLAMA_SRC=.llsrc/llama-src.tgz bench/gpu_quant_quality.sh
# env: OUT (logs and quality.md), TARGETS, TARGET_STEPS (1500), THREADS (16), CALIB_TOKENS (8192),
#      W (build-dev/qq-pair: kept on a warm machine; training is skipped when W/kjv-target exists),
#      BUDGET_S (unset: no limit; else the table stops when that many seconds have passed since the start)
. "$(dirname "$0")/gpu_common.sh"
OUT=${OUT:-/tmp/lmc-gpu-out}; W=${W:-build-dev/qq-pair}; B=build
mkdir -p "$OUT" build-dev
gpu_devdeps
S="$OUT/summary.md"
say "# gpu_quant_quality $(gpu_stamp), cpu $(lscpu | sed -n 's/^Model name: *//p')"
[ -n "${LLAMA_SRC:-}" ] || { say "LLAMA_SRC: a llama.cpp source .tgz is needed"; exit 1; }
( [ -x build-dev/llama.cpp/build/bin/llama-perplexity ] || { tar -C build-dev -xzf "$LLAMA_SRC" &&
  cmake -S build-dev/llama.cpp -B build-dev/llama.cpp/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF &&
  cmake --build build-dev/llama.cpp/build -j8 --target llama-quantize llama-perplexity; } ) >"$OUT/llama-build.log" 2>&1 &
LP=$!
gpu_build $B "$OUT/build.log" lmc_cli lmc_cuda || { tail -30 "$OUT/build.log"; exit 1; }
say "build ok ($(($(date +%s) - T0)) s)"
if [ ! -d "$W/kjv-target" ]; then
  MEASURE=0 SKIP_DRAFT=1 LMC=$B/lmc THREADS=16 TARGETS="${TARGETS:-12x768x12x2048@0.5}" EVAL_DEVICE=cuda \
    scripts/train_spec_pair.sh "$W" --device cuda --target >"$OUT/train.log" 2>&1 || { tail -30 "$OUT/train.log"; exit 1; }
  say "trained ($(($(date +%s) - T0)) s)"
  grep -E '^(##|\||kjv-target:)' "$OUT/train.log" | tee -a "$S"
fi
wait $LP || { tail -20 "$OUT/llama-build.log"; exit 1; }
say "llama.cpp built ($(($(date +%s) - T0)) s)"
M=$W/kjv-target THREADS=${THREADS:-16} PEER_BIN=build-dev/llama.cpp/build/bin \
  ${BUDGET_S:+timeout "$(left)"} bench/quant_quality_peer.sh build-dev/qq 2>&1 | tee "$OUT/quality.md"
cp build-dev/qq/quantize-Q4_K_M.log "$OUT/" 2>/dev/null
say "done ($(($(date +%s) - T0)) s)"
