#!/usr/bin/env bash
# test_finetune_zero.sh — `lmc finetune --zero 1|2|3` with LoRA under mpirun
# (the adapters' parameters, gradients and AdamW moments sharded): 20 steps
# of llama-tiny at world 2 (--batch 2) and world 4 (--batch 1) against one
# process with the same global batch (--batch 2 --accum 2, --batch 1
# --accum 4): losses <= 1e-6 relative, the adapter <= 1e-6 of its largest
# magnitude (measured 0: the same sums in the same order), the three stages
# the same bits; each rank's shard of every step in OUT.ckpt/zero; stop at
# 10 + --resume = the uninterrupted run bit for bit; the world-2 ZeRO-3
# run's step-10 checkpoint (an older step) resumed by one process at
# ZeRO-2 (resharded) = one process; ranks with different --zero, LoRA with
# --optim muon and a sharded checkpoint resumed without --zero refused by
# name (finetune_zero_common.sh; --full: test_finetune_zero_full.sh).
# Skipped without mpirun (or an lmc built without MPI).
# Usage: test_finetune_zero.sh PATH/TO/lmc
. "$(dirname "$0")/finetune_zero_common.sh"
finetune_zero_runs lora
# ranks started with different stages: refused at start-up naming the rank (torchrun-style variables, tcp)
port_hold
RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT "$LMC" finetune $C --batch 2 --zero 2 -o "$TMP/mm" \
  >"$TMP/t1" 2>&1 &
RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT "$LMC" finetune $C --batch 2 --zero 3 -o "$TMP/mm" \
  >"$TMP/t0" 2>&1
rc0=$?; wait $!; rc1=$?
port_release
[ $rc0 != 0 ] && [ $rc1 != 0 ] && grep -q 'ranks disagree on the training configuration: rank 1 has' "$TMP/t0"
ok $? "different --zero on two ranks refused: $(tail -1 "$TMP/t0")"
# refusals, by name
"${MPIRUN[@]}" -np 2 "$LMC" finetune $C -o "$TMP/m" --batch 2 --zero 1 --optim muon >"$TMP/t" 2>&1
[ $? != 0 ] && grep -q "frozen base (LoRA) shards AdamW" "$TMP/t"; ok $? "LoRA --zero 1 --optim muon refused: $(grep -v '^\[' "$TMP/t" | tail -1)"
"$LMC" finetune $C -o "$TMP/one-r" --batch 2 --accum 2 --resume "$TMP/w2z1-lora.ckpt/step_000010" >"$TMP/t" 2>&1
[ $? != 0 ] && grep -q "sharded (a --zero 1-3 run)" "$TMP/t"; ok $? "a sharded adapter checkpoint resumed without --zero refused: $(tail -1 "$TMP/t")"
echo "test_finetune_zero: $pass passed, $fail failed"
[ $fail = 0 ]
