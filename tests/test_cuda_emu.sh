#!/usr/bin/env bash
# test_cuda_emu.sh — every CUDA kernel's logic checked against its CPU twin
# without a GPU: tests/cuda_emu/transform.py rewrites the src/ops/cuda
# sources for the CPU emulator (tests/cuda_emu/emu.h: one fiber per GPU
# thread; the CUDA runtime and cuBLASLt as host models of their documented
# semantics: cuda_runtime_model.h, cublaslt_model.h), g++ compiles them (in
# parallel) with the models, the host stand-ins and the harness against the
# build's liblmc.a, and the harness compares the real launchers — and,
# through the real lmc_backend_cuda_init table, the model forward and a
# training step on tests/fixtures — with the CPU backend
# (tests/cuda_emu/harness.cc says what is covered), printing the largest
# error of each check.
# Usage: test_cuda_emu.sh PATH/TO/lmc [SECTION...] — the build dir is the
# binary's; sections as harness.cc lists them (default: all).
# Skipped (exit 0) without g++ or python3, off x86-64, and in sanitizer
# builds (LMC_SANITIZE or LMC_FUZZ on in the build's CMake cache, or
# LMC_SANITIZE=1 in the environment): fiber stack switching confuses ASan.
set -u
BUILD="$(cd "$(dirname "$1")" && pwd)"
SRC="$(pwd)"
EMU="$SRC/tests/cuda_emu"

skip() { echo "test_cuda_emu: skipped: $1"; exit 0; }
command -v g++ >/dev/null 2>&1 || skip "no g++"
command -v python3 >/dev/null 2>&1 || skip "no python3"
[ "$(uname -m)" = x86_64 ] || skip "the emulator's context switch is x86-64 only"
if [ "${LMC_SANITIZE:-0}" = 1 ] || [ "${LMC_SANITIZE:-}" = ON ] ||
   grep -qE '^LMC_(SANITIZE|FUZZ):BOOL=(ON|1|TRUE)$' "$BUILD/CMakeCache.txt" 2>/dev/null; then
  skip "sanitizer build"
fi
[ -f "$BUILD/liblmc.a" ] || { echo "test_cuda_emu: no $BUILD/liblmc.a" >&2; exit 1; }

TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
python3 "$EMU/transform.py" "$SRC/src/ops/cuda" "$TMP/gen" >"$TMP/units" || exit 1

export CXX="g++ -std=c++17 -O1 -ffp-contract=off -D_GNU_SOURCE -I$TMP/gen -I$EMU -I$SRC/src -I$SRC/include -w"
export TMP
compile() { # one translation unit; its errors on failure
  local o="$TMP/$(basename "$1")"
  $CXX -x c++ -c "$1" -o "$o.o" 2>"$o.err" || { cat "$o.err" >&2; return 255; }
}
export -f compile
# in parallel (LMC_EMU_JOBS, default 2), the largest unit first
{ echo "$TMP/gen/ops/cuda/attention_train.cu"
  grep -v '^attention_train.cu$' "$TMP/units" | sed "s|^|$TMP/gen/ops/cuda/|"
  echo "$EMU/harness.cc"; echo "$EMU/standins.cc"
  echo "$EMU/cuda_runtime_model.cc"; echo "$EMU/cublaslt_model.cc"
} | xargs -d '\n' -n 1 -P "${LMC_EMU_JOBS:-2}" bash -c 'compile "$1"' _ ||
  { echo "test_cuda_emu: compiling the emulated CUDA sources failed" >&2; exit 1; }
LIBS="$(pkg-config --libs libcjson libpcre2-8 2>/dev/null || echo -lcjson -lpcre2-8)"
# liblmc.a holds the MPI communicator when CMake found MPI (src/dist)
MPILIB="$(sed -n 's/^MPI_mpi_LIBRARY:FILEPATH=//p' "$BUILD/CMakeCache.txt" 2>/dev/null | grep -v NOTFOUND | head -n 1)"
[ -n "$MPILIB" ] && LIBS="$LIBS $MPILIB"
g++ -o "$TMP/harness" "$TMP"/*.o "$BUILD/liblmc.a" $LIBS -lopenblas -lcivetweb -lpthread -ldl -lm ||
  { echo "test_cuda_emu: link failed" >&2; exit 1; }
# the build's lmc quantizes model folders for section qmm
LMC_EMU_LMC="$BUILD/$(basename "$1")" LMC_EMU_FIXTURES="$SRC/tests/fixtures" "$TMP/harness" "${@:2}"
