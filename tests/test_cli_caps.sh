#!/usr/bin/env bash
# test_cli_caps.sh — what the command line does before it loads anything:
# without --device on a machine that shows no NVIDIA GPU, lmc generate
# loads no CUDA library (the CUDA module named by LMC_CUDA_MODULE, when the
# build has one, is not opened; --device cuda still opens it); and each
# parallel feature a command runs on the CPU only is refused with
# --device cuda by the one capability check (tools/cli_caps.c), before
# anything is loaded or any rank is waited for: exit status 2 and the
# message naming the flag and the device, while the same options on the
# CPU (and --cp on cuda for lmc train) get past it.
# Usage: test_cli_caps.sh PATH/TO/lmc
set -u
MP_LEAKS=1 # LMC, ok, TMP from the multi-rank tests' set-up; no rank is started here, LeakSanitizer stays on
. "$(dirname "$0")/mp_launch.sh" "$1"
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

# ---- capability refusals: one process, no launcher, no GPU needed
D="$TMP/none" # never read: the refusal comes first
# refuse NAME MESSAGE CMD ARGS...: exit 2 and MESSAGE on stderr, nothing on stdout
refuse() {
  local name=$1 msg=$2; shift 2
  "$LMC" "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  [ $rc = 2 ] && grep -qxF "$msg" "$TMP/err" && [ ! -s "$TMP/out" ]
  ok $? "$name: rc $rc, $(head -c 300 "$TMP/err")"
}
CPU="runs on the CPU backend only so far (--device cuda)"
HOST="runs on the CPU backend only so far (host communicators); with --device cuda the ranks train data parallel (--zero 0-3)"
refuse "generate --pp" "lmc generate: --pp $CPU" generate -m $M -p hi -n 2 --pp 2 --device cuda
refuse "generate --pp 1" "lmc generate: --pp $CPU" generate -m $M -p hi -n 2 --pp 1 --device cuda
refuse "generate --ep" "lmc generate: --ep $CPU" generate -m $M -p hi -n 2 --ep 2 --device cuda
refuse "serve --pp" "lmc serve: --pp $CPU" serve -m $M --pp 2 --device cuda
refuse "serve --ep" "lmc serve: --ep does not combine with --device cuda yet (it runs on the CPU backend only so far)" \
  serve -m $M --ep 2 --device cuda
refuse "serve --tp" "lmc serve: --tp $CPU" serve -m $M --tp 2 --device cuda
for f in "--ep 2" "--tp 2 --full" "--cp 2" "--pp 2 --full"; do
  refuse "finetune $f" "lmc finetune: ${f%% *} $HOST" finetune -m $M --data "$D" -o "$TMP/o" $f --device cuda
done
refuse "finetune --sp" "lmc finetune: --tp $HOST" finetune -m $M --data "$D" -o "$TMP/o" --tp 2 --sp --full --device cuda
refuse "finetune --optim muon --zero 1" "lmc finetune: --optim muon: data-parallel fine-tuning on --device cuda steps \
AdamW only (the zero module's optimizer); run it on one GPU or on the CPU" \
  finetune -m $M --data "$D" -o "$TMP/o" --optim muon --zero 1 --device cuda
refuse "train --tp" "lmc train: --tp (tensor-parallel training) $CPU" train -m $M --data "$D" -o "$TMP/o" --tp 2 --device cuda
refuse "train --sp" "lmc train: --sp (sequence parallelism, with --tp) $CPU" \
  train -m $M --data "$D" -o "$TMP/o" --tp 2 --sp --device cuda
refuse "train --pp" "lmc train: --pp (pipeline-parallel training: the stages exchange host buffers) $CPU" \
  train -m $M --data "$D" -o "$TMP/o" --pp 2 --device cuda
refuse "train --cp --pp" "lmc train: --pp (pipeline-parallel training: the stages exchange host buffers) $CPU" \
  train -m $M --data "$D" -o "$TMP/o" --pp 2 --cp 2 --device cuda
refuse "train --ep" "lmc train: --ep (expert-parallel training) $CPU" train -m $M --data "$D" -o "$TMP/o" --ep 2 --device cuda
# the same options on the CPU (default or named), and --cp on cuda for lmc train, pass the check: what stops
# them here is the missing launcher
passes() {
  local name=$1; shift
  "$LMC" "$@" >/dev/null 2>"$TMP/err"
  local rc=$?
  [ $rc != 0 ] && grep -q "needs .*ranks" "$TMP/err" && ! grep -q "CPU backend only" "$TMP/err"
  ok $? "$name passes the capability check: rc $rc, $(head -c 300 "$TMP/err")"
}
passes "generate --pp on the CPU" generate -m $M -p hi -n 2 --pp 2
passes "serve --tp --device cpu" serve -m $M --tp 2 --device cpu
passes "train --tp on the CPU" train -m $M --data "$D" -o "$TMP/o" --tp 2
passes "train --cp --device cuda" train -m $M --data "$D" -o "$TMP/o" --cp 2 --device cuda

echo "test_cli_caps: $pass passed, $fail failed"
[ $fail = 0 ]
