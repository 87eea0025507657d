#!/usr/bin/env bash
# gpu_dist.sh — data-parallel training on several GPUs of one host through
# the nccl communicator (src/dist/comm_nccl.c), for a multi-GPU machine (not
# run here: the CUDA emulator cannot run NCCL). Steps, each under its own
# time limit, logs under $OUT:
#   0. (one GPU is enough) the zero module on device memory without NCCL:
#      `lmc train --device cuda --dtype fp32 --zero 0|2|3` in one process
#      (a "single" communicator) against the plain one-GPU run, losses
#      within 1e-6 relative (the same AdamW; the norm summed by units);
#   1. `lmc comm-bench --device cuda` on NGPU ranks: every rank's
#      all-reduce / reduce-scatter / all-gather checked, algbw and busbw;
#   2. `lmc train --device cuda --dtype fp32` of a small random llama for 20
#      steps on one GPU (the reference), then on NGPU ranks (one GPU each,
#      LOCAL_RANK) for ZeRO 0-3, each with the same global batch; the
#      losses must equal the one-GPU run within 1e-5 relative (fp32; NCCL's
#      reduction order is not lmc's fixed one, so not bit for bit) and the
#      ZeRO stages' per-rank state is logged;
#   3. the same at ZeRO 3 with --bucket-mb 4 and a stop at 10 + resume.
# Usage (device, after building build-dev with CUDA): NGPU=8 bench/gpu_dist.sh [LMC]
# (NGPU=1: step 0 only)
# env: NGPU (default: nvidia-smi's count), OUT (default /tmp/lmc-gpu-dist),
#      MPIRUN (default mpirun; without mpirun the ranks are started with
#      torchrun-style variables over tcp).
. "$(dirname "$0")/gpu_common.sh"
LMC=${1:-build-dev/lmc}
NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l)}
OUT=${OUT:-/tmp/lmc-gpu-dist}
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 LMC_DIST_TIMEOUT=120
# N ranks of CMD...: mpirun when there is one, else torchrun-style variables (tcp rendezvous, then nccl)
launch() {
  local n=$1; shift
  if command -v "${MPIRUN:-mpirun}" >/dev/null 2>&1; then
    timeout 600 "${MPIRUN:-mpirun}" --allow-run-as-root -np "$n" "$@"
  else
    local port=$((20000 + RANDOM % 20000)) pids=() r rc=0
    for r in $(seq 0 $((n - 1))); do
      RANK=$r LOCAL_RANK=$r WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
        timeout 600 "$@" & pids+=($!)
    done
    for r in "${pids[@]}"; do wait "$r" || rc=1; done
    return $rc
  fi
}
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: >"$OUT/summary.txt"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
# data: a small corpus through the repo's own tokenizer trainer
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
for i in $(seq 1 3000); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 13))"; done >"$TMP/c.txt"
"$LMC" train-tokenizer --text-file "$TMP/c.txt" --vocab 512 --style llama3 -o "$TMP/tok" 2>/dev/null &&
"$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/c.txt" --docs line --val-fraction 0.05 -o "$TMP/data" 2>/dev/null ||
  { summary "gpu_dist: cannot make the data"; exit 1; }
A="--device cuda --dtype fp32 --data $TMP/data --arch llama --layers 8 --hidden 512 --heads 8 --kv-heads 4
   --intermediate 1408 --seq 128 --steps 20 --lr 1e-3 --warmup 2 --clip 1 --save-every 0 --eval-every 0"
GB=$((4 * NGPU)) # global batch: 4 sequences per GPU
CUDA_VISIBLE_DEVICES=0 timeout 600 "$LMC" train $A --batch $GB -o "$OUT/ref" >"$OUT/ref.log" 2>&1
summary "one GPU, batch $GB: rc=$?"
cmp_losses() { # DIR [TOL]: losses within TOL (default 1e-5) relative of ref
  python3 - "$OUT/$1" "$OUT/ref" "${2:-1e-5}" <<'PY'
import json, sys
a = [json.loads(l)["loss"] for l in open(f"{sys.argv[1]}/metrics.jsonl")]
b = [json.loads(l)["loss"] for l in open(f"{sys.argv[2]}/metrics.jsonl")]
w = max(abs(x - y) / abs(y) for x, y in zip(a, b)) if len(a) == len(b) == 20 else float("inf")
print(f"losses max rel {w:.2e}")
sys.exit(0 if w <= float(sys.argv[3]) else 1)
PY
}
# 0. one process, one GPU: the zero module's device path
for z in 0 2 3; do
  CUDA_VISIBLE_DEVICES=0 timeout 600 "$LMC" train $A --batch $GB --zero $z --bucket-mb 4 -o "$OUT/w1z$z" \
    >"$OUT/w1z$z.log" 2>&1
  summary "one GPU, --zero $z (single communicator): rc=$? $(cmp_losses w1z$z 1e-6)"
done
if [ "$NGPU" -lt 2 ]; then summary "gpu_dist: the multi-GPU part needs 2 or more GPUs (found $NGPU)"; exit 0; fi
launch "$NGPU" "$LMC" comm-bench --device cuda --sizes 1048576,16777216,134217728 --iters 10 >"$OUT/comm-bench.txt" 2>&1
summary "comm-bench on $NGPU GPUs: rc=$? $(grep -c 'ok' "$OUT/comm-bench.txt") ok lines"
for z in 0 1 2 3; do
  launch "$NGPU" "$LMC" train $A --batch 4 --zero $z -o "$OUT/z$z" >"$OUT/z$z.log" 2>&1
  r=$?
  summary "ZeRO $z on $NGPU GPUs: rc=$r $(cmp_losses z$z) | $(grep -o 'zero-[0-9] on.*' "$OUT/z$z.log" | tail -1)"
done
launch "$NGPU" "$LMC" train $A --batch 4 --zero 3 --bucket-mb 4 --stop-at 10 -o "$OUT/b3" >"$OUT/b3a.log" 2>&1 &&
launch "$NGPU" "$LMC" train --device cuda --data "$TMP/data" --batch 4 --zero 3 --bucket-mb 4 --resume latest \
  -o "$OUT/b3" >"$OUT/b3b.log" 2>&1
summary "ZeRO 3, buckets of 4 MiB, stop at 10 + resume: rc=$? $(cmp_losses b3)"
tar -czf "$OUT/logs.tar.gz" -C "$OUT" --exclude logs.tar.gz --exclude "*.safetensors" --exclude "zero-*" . 2>/dev/null
cat "$OUT/summary.txt"
