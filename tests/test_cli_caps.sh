#!/usr/bin/env bash
# test_cli_caps.sh — what the command line does before it loads anything:
# without --device on a machine that shows no NVIDIA GPU, lmc generate
# loads no CUDA library (the CUDA module named by LMC_CUDA_MODULE, when the
# build has one, is not opened; --device cuda still opens it).
# Usage: test_cli_caps.sh PATH/TO/lmc
set -u
LMC="$1"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2" >&2; fi; }
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
M=tests/fixtures/llama-tiny

# ---- the default device: no CUDA library without a GPU to be seen
gpu=0
{ ls /dev/dxg || ls -d /dev/nvidia[0-9]* || [ -n "$(ls -A /proc/driver/nvidia/gpus 2>/dev/null)" ]; } >/dev/null 2>&1 && gpu=1
MOD="$(dirname "$LMC")/liblmc_cuda.so"
if [ $gpu = 1 ]; then
  echo "test_cli_caps: default-device part skipped (this machine shows a GPU)"
elif ! LD_DEBUG=libs env true 2>&1 | grep -q "calling init"; then
  echo "test_cli_caps: default-device part skipped (the loader has no LD_DEBUG=libs)"
else
  [ -f "$MOD" ] || MOD=/nonexistent/liblmc_cuda.so # the probe must not even look for it
  LMC_CUDA_MODULE="$MOD" LD_DEBUG=libs "$LMC" generate -m $M -p "hello" -n 2 --temp 0 >/dev/null 2>"$TMP/libs"
  ok $? "generate without --device: $(grep -v '^ *[0-9]*:' "$TMP/libs" | tail -2)"
  ! grep -qE 'liblmc_cuda|libcudart|libcublas|libcuda\.so|libnccl' "$TMP/libs"
  ok $? "generate without --device loads no CUDA library: $(grep -oE 'calling init: .*' "$TMP/libs" | grep -E 'cuda|cublas|nccl' | tr '\n' ' ')"
  if [ -f "$MOD" ]; then # --device cuda still goes to the module (and fails here: no device)
    LMC_CUDA_MODULE="$MOD" LD_DEBUG=libs "$LMC" generate -m $M -p "hello" -n 2 --device cuda >/dev/null 2>"$TMP/libs"
    rc=$?
    [ $rc = 1 ] && grep -q "calling init: .*liblmc_cuda" "$TMP/libs" && grep -q "lmc: backend: " "$TMP/libs"
    ok $? "--device cuda without a GPU opens the CUDA module and fails (rc $rc): $(grep '^lmc' "$TMP/libs")"
  fi
fi

echo "test_cli_caps: $pass passed, $fail failed"
[ $fail = 0 ]
