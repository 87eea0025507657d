#!/usr/bin/env bash
# test_finetune_dist_device.sh — `lmc finetune`'s device wiring under a
# launcher (tools/cmd_finetune.c): with --device cuda the ranks train data
# parallel over an nccl communicator (--zero 0-3, AdamW; the device path
# itself: tests/cuda_emu section zero). Here, without a GPU:
# - the combinations a device backend cannot run are refused with exit 2
#   and a message naming them, before any rank joins: --tp/--cp/--pp/--ep
#   with --device cuda, and --optim other than AdamW data parallel there
#   (even as rank 0 of 2 whose peer never comes: no rendezvous is waited on);
# - --device cuda data parallel on a machine without a GPU fails cleanly
#   (exit 1 or 2, a message, no signal), and where a GPU is there one
#   process with --zero 2 --dtype fp32 gives the CPU run's losses (1e-4);
# - the CPU paths are unchanged with an explicit --device cpu: two ranks
#   (torchrun variables, tcp) with --zero 0 (replicated) and --zero 2 --full
#   equal one process with the same global batch (losses 1e-6).
# Usage: test_finetune_dist_device.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" LMC_DIST_TIMEOUT=60
FIX=tests/fixtures/llama-tiny
for i in $(seq 1 17); do
  echo "{\"prompt\":\"Psalm $i:\",\"completion\":\" he leadeth me beside the still waters $((i % 4)) and $i\"}"
done >"$TMP/d.jsonl"
C="-m $FIX --data $TMP/d.jsonl --seq 32 --lr 1e-2 --threads 1 --warmup 1 --steps 5 --clip 0.5"

# refusals: exit 2 and a message naming the flag and the device
refuse() { # WHAT PATTERN ARGS...
  local what=$1 pat=$2; shift 2
  timeout 60 "$LMC" finetune $C -o "$TMP/r" "$@" >"$TMP/o" 2>"$TMP/err"
  local rc=$?
  [ $rc = 2 ] && grep -q -- "$pat" "$TMP/err" && grep -q "device cuda" "$TMP/err" && [ ! -e "$TMP/r" ]
  ok $? "$what refused (rc $rc): $(cat "$TMP/err")"
}
refuse "--tp 2 --full --device cuda" "--tp runs on the CPU backend only" --full --tp 2 --device cuda
refuse "--cp 2 --device cuda" "--cp runs on the CPU backend only" --cp 2 --device cuda
refuse "--pp 2 --full --device cuda" "--pp runs on the CPU backend only" --full --pp 2 --device cuda
refuse "--ep 2 --device cuda" "--ep runs on the CPU backend only" --ep 2 --device cuda
refuse "--optim muon --zero 1 --device cuda" "--optim muon: data-parallel fine-tuning" --optim muon --zero 1 \
  --device cuda
# rank 0 of 2 whose peer never starts: refused before the rendezvous (no wait for rank 1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
  refuse "--optim galore on 2 ranks --device cuda" "--optim galore: data-parallel" --optim galore --device cuda
# the same flags on the CPU pass these checks (here the usual one-process messages or a run)
"$LMC" finetune $C -o "$TMP/cpu-muon" --optim muon --zero 1 --device cpu --steps 2 >"$TMP/o" 2>"$TMP/err"
rc=$?
! grep -q "device cuda\|CPU backend only" "$TMP/err"
ok $? "--optim muon --zero 1 --device cpu: no device refusal (rc $rc: $(tail -1 "$TMP/err"))"

# --device cuda data parallel: where there is no GPU a clean failure, where there is one the CPU's losses
"$LMC" finetune $C -o "$TMP/cu" --zero 2 --device cuda --dtype fp32 >"$TMP/o" 2>"$TMP/err"
rc=$?
if [ $rc = 0 ]; then
  "$LMC" finetune $C -o "$TMP/cz" --zero 2 --device cpu >"$TMP/o" 2>"$TMP/err2"
  ok $? "--zero 2 on the CPU: $(tail -1 "$TMP/err2")"
  python3 - "$TMP/cu" "$TMP/cz" <<'PY'
import json, sys
la, lb = ([json.loads(l)["loss"] for l in open(d + ".metrics.jsonl")] for d in sys.argv[1:3])
w = max(abs(x - y) / abs(y) for x, y in zip(la, lb))
print(f"--zero 2 --device cuda fp32 vs cpu: losses max rel {w:.2e}")
sys.exit(0 if len(la) == len(lb) == 5 and w <= 1e-4 else 1)
PY
  ok $? "--zero 2 --device cuda: the CPU run's losses"
else
  [ $rc -le 2 ] && [ -s "$TMP/err" ] && [ ! -e "$TMP/cu" ]
  ok $? "--zero 2 --device cuda without a GPU fails cleanly ($rc: $(tail -1 "$TMP/err"))"
fi

# the CPU paths with an explicit --device cpu: two ranks equal one process with the same global batch
pair() { # OUT EXTRA...
  local o=$1; shift
  port_hold
  RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT timeout 300 "$LMC" finetune $C -o "$o" "$@" \
    >"$TMP/t1" 2>&1 &
  RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT timeout 300 "$LMC" finetune $C -o "$o" "$@" \
    >"$TMP/t0" 2>&1
  rc0=$?; wait $!; rc1=$?
  port_release
  [ $rc0 = 0 ] && [ $rc1 = 0 ]
}
same() { # A B: losses within 1e-6
  python3 - "$1" "$2" <<'PY'
import json, sys
la, lb = ([json.loads(l)["loss"] for l in open(d + ".metrics.jsonl")] for d in sys.argv[1:3])
w = max(abs(x - y) / abs(x) for x, y in zip(la, lb))
print(f"losses max rel {w:.2e}")
sys.exit(0 if len(la) == len(lb) == 5 and w <= 1e-6 else 1)
PY
}
"$LMC" finetune $C -o "$TMP/one" --batch 2 --accum 2 --device cpu 2>"$TMP/err"; ok $? "LoRA one process: $(tail -1 "$TMP/err")"
pair "$TMP/z0" --batch 2 --zero 0 --device cpu; ok $? "LoRA --zero 0 two ranks: $(tail -n 2 "$TMP/t0" "$TMP/t1")"
grep -q "data parallel, 2 ranks (replicated)" "$TMP/t0"; ok $? "--zero 0 start-up line: $(grep parallel "$TMP/t0")"
same "$TMP/one" "$TMP/z0"; ok $? "LoRA --zero 0 --device cpu two ranks = one process"
"$LMC" finetune $C -o "$TMP/onef" --batch 2 --accum 2 --full --device cpu 2>"$TMP/err"
ok $? "--full one process: $(tail -1 "$TMP/err")"
pair "$TMP/z2" --batch 2 --zero 2 --full --device cpu; ok $? "--full --zero 2 two ranks: $(tail -n 2 "$TMP/t0" "$TMP/t1")"
grep -q "data parallel, 2 ranks, ZeRO-2" "$TMP/t0"; ok $? "--zero 2 start-up line: $(grep parallel "$TMP/t0")"
same "$TMP/onef" "$TMP/z2"; ok $? "--full --zero 2 --device cpu two ranks = one process"
echo "test_finetune_dist_device: $pass passed, $fail failed"
[ $fail = 0 ]
