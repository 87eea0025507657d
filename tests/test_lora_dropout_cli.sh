#!/usr/bin/env bash
# test_lora_dropout_cli.sh — `lmc finetune --lora-dropout P` end to end on
# llama-tiny: P is written to adapter_config.json; --lora-dropout 0 gives
# the adapter of a run without the option bit for bit; P > 0 trains (loss
# falls), is deterministic for a seed and differs from P = 0; at inference
# dropout is ignored (the same adapter with lora_dropout 0.1 and 0.0 in its
# config gives the same NLL); validation runs with dropout off; resuming
# a dropout run gives the uninterrupted run's adapter bit for bit (the
# masks continue). Usage: test_lora_dropout_cli.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"
for i in $(seq 1 24); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want\"}"
done >"$TMP/d.jsonl"
FIX=tests/fixtures/llama-tiny
COMMON="--seq 32 --batch 4 --lr 1e-2 --threads 2 --schedule constant --steps 8 --lora-r 4 --lora-alpha 8"
run() { out=$1; shift; "$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/$out" $COMMON "$@" 2>"$TMP/err-$out"; }

run none; ok $? "no dropout: $(tail -2 "$TMP/err-none")"
run p0 --lora-dropout 0; ok $? "dropout 0"
cmp -s "$TMP/none/adapter_model.safetensors" "$TMP/p0/adapter_model.safetensors"; ok $? "--lora-dropout 0 equals no dropout"
run p1 --lora-dropout 0.1 --val-fraction 0.2; ok $? "dropout 0.1: $(tail -2 "$TMP/err-p1")"
run p1b --lora-dropout 0.1 --val-fraction 0.2; ok $? "dropout 0.1 again"
cmp -s "$TMP/p1/adapter_model.safetensors" "$TMP/p1b/adapter_model.safetensors"; ok $? "dropout deterministic for a seed"
! cmp -s "$TMP/p1/adapter_model.safetensors" "$TMP/p0/adapter_model.safetensors"; ok $? "dropout 0.1 changes training"
grep -Eq '"lora_dropout":[[:space:]]*0.1' "$TMP/p1/adapter_config.json"; ok $? "lora_dropout in adapter_config.json"
first=$(head -1 "$TMP/p1.metrics.jsonl" | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
last=$(tail -1 "$TMP/p1.metrics.jsonl" | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a * 0.97) }'; ok $? "dropout run: loss falls ($first -> $last)"
grep -q '"val_loss"' "$TMP/p1.metrics.jsonl"; ok $? "validation loss recorded"

cp -r "$TMP/p1" "$TMP/p1zero"
sed -i 's/"lora_dropout":[[:space:]]*0.1/"lora_dropout": 0.0/' "$TMP/p1zero/adapter_config.json"
TEXT="Verse 7 says: the lord is my shepherd 2 and I shall not want"
a=$("$LMC" eval -m "$FIX" --lora "$TMP/p1" --text "$TEXT" --json 2>/dev/null | sed 's/.*"nll":\([0-9.e+-]*\).*/\1/')
b=$("$LMC" eval -m "$FIX" --lora "$TMP/p1zero" --text "$TEXT" --json 2>/dev/null | sed 's/.*"nll":\([0-9.e+-]*\).*/\1/')
[ -n "$a" ] && [ "$a" = "$b" ]; ok $? "inference ignores lora_dropout ($a vs $b)"

# resume mid-run: the masks continue
run full --lora-dropout 0.2 --save-every 4; ok $? "dropout run with checkpoints"
run res --lora-dropout 0.2 --resume "$TMP/full.ckpt/step_000004"; ok $? "resume: $(tail -2 "$TMP/err-res")"
cmp -s "$TMP/full/adapter_model.safetensors" "$TMP/res/adapter_model.safetensors"; ok $? "resumed dropout run bit-identical"

echo "test_lora_dropout_cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
