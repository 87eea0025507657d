#!/usr/bin/env bash
# test_finetune.sh — `lmc finetune` end to end on llama-tiny and gpt2-tiny:
# LoRA on prompt/completion data lowers the loss and writes a PEFT folder
# (adapter_config.json with PEFT's fields, the tokenizer) that `generate`
# and `eval --lora` load and that PEFT loads to the same NLL (skipped
# without torch/peft); --pack, --full, --rslora; --optim with checkpoints
# and bit-exact resume (full and LoRA); bad lines named with
# their line number or skipped; options not implemented refused cleanly;
# no temp folder left behind. Usage: test_finetune.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"

for i in $(seq 1 24); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want\"}"
done >"$TMP/d.jsonl"
COMMON="--seq 32 --batch 4 --lr 1e-2 --threads 2 --schedule constant"

for M in llama-tiny gpt2-tiny; do
  FIX=tests/fixtures/$M
  "$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/ad-$M" $COMMON --steps 12 --lora-r 4 --lora-alpha 8 \
    2>"$TMP/err"
  ok $? "$M finetune: $(tail -3 "$TMP/err")"
  first=$(head -1 "$TMP/ad-$M.metrics.jsonl" | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
  last=$(tail -1 "$TMP/ad-$M.metrics.jsonl" | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
  awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a * 0.97) }'; ok $? "$M LoRA loss falls ($first -> $last)"
  for f in adapter_config.json adapter_model.safetensors tokenizer.json; do
    [ -f "$TMP/ad-$M/$f" ]; ok $? "$M adapter folder has $f"
  done
  grep -Eq '"peft_type":[[:space:]]*"LORA"' "$TMP/ad-$M/adapter_config.json" && grep -Eq '"task_type":[[:space:]]*"CAUSAL_LM"' \
    "$TMP/ad-$M/adapter_config.json"; ok $? "$M adapter_config fields"
  ! ls -d "$TMP"/ad-$M.tmp-* >/dev/null 2>&1; ok $? "$M no temp folder left"
  "$LMC" generate -m "$FIX" --lora "$TMP/ad-$M" -p "Verse 3 says:" -n 6 --temp 0 >/dev/null 2>"$TMP/err"
  ok $? "$M generate --lora: $(cat "$TMP/err")"
  TEXT="Verse 7 says: the lord is my shepherd 2 and I shall not want"
  nll=$("$LMC" eval -m "$FIX" --lora "$TMP/ad-$M" --text "$TEXT" --json 2>/dev/null | sed 's/.*"nll":\([0-9.e+-]*\).*/\1/')
  python3 tests/lora_peft_check.py "$FIX" "$TMP/ad-$M" "$TEXT" "$nll" >"$TMP/py" 2>&1
  rc=$?
  "$LMC" merge -m "$FIX" --lora "$TMP/ad-$M" -o "$TMP/merged-$M" 2>/dev/null
  mnll=$("$LMC" eval -m "$TMP/merged-$M" --text "$TEXT" --json 2>/dev/null | sed 's/.*"nll":\([0-9.e+-]*\).*/\1/')
  awk -v a="$nll" -v b="$mnll" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-5 * a) }'
  ok $? "$M merged model gives the adapter's NLL ($nll vs $mnll)"
  if [ $rc = 77 ]; then echo "skip: PEFT not importable"; else ok $rc "$M PEFT loads lmc's adapter: $(tail -1 "$TMP/py")"; echo "$M: $(tail -1 "$TMP/py")"; fi
done

FIX=tests/fixtures/llama-tiny
# checkpoints and --resume: the resumed run ends with the same adapter, bit for bit
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/A" $COMMON --steps 6 --save-every 3 2>"$TMP/err"
ok $? "finetune --save-every: $(tail -2 "$TMP/err")"
for f in adapter_config.json adapter_model.safetensors optimizer.safetensors trainer_state.json; do
  [ -f "$TMP/A.ckpt/step_000003/$f" ]; ok $? "checkpoint has $f"
done
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/B" $COMMON --steps 6 --save-every 3 \
  --resume "$TMP/A.ckpt/step_000003" 2>"$TMP/err"
ok $? "finetune --resume: $(tail -2 "$TMP/err")"
cmp -s "$TMP/A/adapter_model.safetensors" "$TMP/B/adapter_model.safetensors"; ok $? "resumed adapter is bit-identical"
[ "$(tail -3 "$TMP/A.metrics.jsonl" | cut -d, -f1-2)" = "$(cut -d, -f1-2 "$TMP/B.metrics.jsonl")" ]
ok $? "resumed losses of steps 4..6 equal"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/C" $COMMON --batch 2 --steps 6 \
  --resume "$TMP/A.ckpt/step_000003" 2>"$TMP/err"
[ $? = 1 ] && grep -q "saved with batch 4" "$TMP/err"; ok $? "resume with another batch refused: $(cat "$TMP/err" | tail -1)"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/packed" $COMMON --steps 3 --pack --rslora \
  --lora-targets q_proj,v_proj 2>"$TMP/err"
ok $? "finetune --pack --rslora: $(tail -2 "$TMP/err")"
grep -Eq '"use_rslora":[[:space:]]*true' "$TMP/packed/adapter_config.json"; ok $? "rslora recorded"
grep -q "packed" "$TMP/err"; ok $? "packing logged"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/val" $COMMON --steps 4 --val-fraction 0.25 --eval-every 2 \
  2>"$TMP/err"
ok $? "finetune --val-fraction: $(tail -2 "$TMP/err")"
[ "$(grep -c '"val_loss"' "$TMP/val.metrics.jsonl")" = 2 ] && grep -q "(6 for validation)" "$TMP/err"
ok $? "validation loss every 2 steps on 6 held-out examples"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/full" $COMMON --lr 1e-3 --steps 3 --full 2>"$TMP/err"
ok $? "finetune --full: $(tail -2 "$TMP/err")"
[ -f "$TMP/full/model.safetensors" ] && [ -f "$TMP/full/config.json" ]; ok $? "full fine-tune writes an HF folder"
"$LMC" eval -m "$TMP/full" --text "Verse 1 says:" >/dev/null 2>&1; ok $? "the full fine-tune loads"

# --optim in finetune: full fine-tuning with Muon and LoRA with 8-bit AdamW,
# each checkpointed at step 3 and resumed to the same bytes as the
# uninterrupted run; the optimizer's state is its own (a resume naming
# another optimizer is refused)
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/fm" $COMMON --lr 1e-3 --steps 5 --save-every 3 --full \
  --optim muon --muon-lr 0.02 2>"$TMP/err"
ok $? "finetune --full --optim muon: $(tail -2 "$TMP/err")"
grep -q "optimizer muon" "$TMP/err"; ok $? "Muon's parameter groups printed: $(grep optimizer "$TMP/err")"
for f in model.safetensors optimizer.safetensors trainer_state.json config.json; do
  [ -f "$TMP/fm.ckpt/step_000003/$f" ]; ok $? "full checkpoint has $f"
done
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/fm2" $COMMON --lr 1e-3 --steps 5 --full --optim muon \
  --muon-lr 0.02 --resume "$TMP/fm.ckpt/step_000003" 2>"$TMP/err"
ok $? "finetune --full --resume: $(tail -2 "$TMP/err")"
cmp -s "$TMP/fm/model.safetensors" "$TMP/fm2/model.safetensors"; ok $? "resumed Muon full fine-tune is bit-identical"
[ "$(tail -2 "$TMP/fm.metrics.jsonl" | cut -d, -f1-2)" = "$(cut -d, -f1-2 "$TMP/fm2.metrics.jsonl")" ]
ok $? "resumed full losses of steps 4..5 equal"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/fa" $COMMON --lr 1e-3 --steps 5 --full 2>"$TMP/err"
ok $? "finetune --full (adamw): $(tail -1 "$TMP/err")"
[ "$(head -1 "$TMP/fa.metrics.jsonl" | cut -d, -f2)" = "$(head -1 "$TMP/fm.metrics.jsonl" | cut -d, -f2)" ] &&
  ! cmp -s "$TMP/fa/model.safetensors" "$TMP/fm/model.safetensors"
ok $? "Muon and AdamW share step 1's loss and end on different weights"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/l8" $COMMON --steps 5 --save-every 3 --lora-r 4 \
  --optim adamw8bit 2>"$TMP/err"
ok $? "finetune --optim adamw8bit (LoRA): $(tail -1 "$TMP/err")"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/l82" $COMMON --steps 5 --lora-r 4 --optim adamw8bit \
  --resume "$TMP/l8.ckpt/step_000003" 2>"$TMP/err"
ok $? "LoRA adamw8bit resume: $(tail -1 "$TMP/err")"
cmp -s "$TMP/l8/adapter_model.safetensors" "$TMP/l82/adapter_model.safetensors"
ok $? "resumed 8-bit AdamW adapter is bit-identical"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/l83" $COMMON --steps 5 --lora-r 4 \
  --resume "$TMP/l8.ckpt/step_000003" 2>"$TMP/err"
[ $? = 1 ] && grep -q "give --optim adamw8bit" "$TMP/err"; ok $? "resume with another optimizer refused: $(tail -1 "$TMP/err")"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/y" --optim sgd 2>"$TMP/err"
[ $? = 2 ]; ok $? "--optim sgd refused: $(tail -1 "$TMP/err")"

# chat data: llama-tiny with a ChatML template
mkdir -p "$TMP/chat"; cp "$FIX"/config.json "$FIX"/model.safetensors "$FIX"/tokenizer.json "$TMP/chat/"
python3 - "$FIX/tokenizer_config.json" "$TMP/chat/tokenizer_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["chat_template"] = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
json.dump(c, open(sys.argv[2], "w"))
PY
for i in $(seq 1 12); do
  echo "{\"messages\":[{\"role\":\"user\",\"content\":\"Quote verse $i\"},{\"role\":\"assistant\",\"content\":\"The lord is my shepherd $i\"}]}"
done >"$TMP/chat.jsonl"
"$LMC" finetune -m "$TMP/chat" --data "$TMP/chat.jsonl" -o "$TMP/chat-ad" $COMMON --seq 160 --steps 2 --pack 2>"$TMP/err"
ok $? "finetune on messages data: $(tail -2 "$TMP/err")"
grep -q "12 examples" "$TMP/err"; ok $? "12 chat examples read"
"$LMC" finetune -m "$FIX" --data "$TMP/chat.jsonl" -o "$TMP/z" $COMMON --steps 1 2>"$TMP/err"
[ $? = 1 ] && grep -q "chat template" "$TMP/err"; ok $? "messages without a template: $(tail -1 "$TMP/err")"

printf '{"text":"fine"}\n{"prompt": 3}\n' >"$TMP/bad.jsonl"
"$LMC" finetune -m "$FIX" --data "$TMP/bad.jsonl" -o "$TMP/x" $COMMON --steps 1 2>"$TMP/err"
[ $? = 1 ] && grep -q "bad.jsonl:2:" "$TMP/err"; ok $? "bad line named: $(cat "$TMP/err")"
"$LMC" finetune -m "$FIX" --data "$TMP/bad.jsonl" -o "$TMP/x" $COMMON --steps 1 --skip-bad-lines 2>"$TMP/err"
ok $? "--skip-bad-lines: $(tail -1 "$TMP/err")"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/y" --lora-dropout 1 2>/dev/null
[ $? = 2 ]; ok $? "dropout 1 refused"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/y" --qlora fp4 2>/dev/null
[ $? = 2 ]; ok $? "--qlora fp4 refused"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/y" --qlora nf4 --full 2>/dev/null
[ $? = 2 ]; ok $? "--qlora with --full refused"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/y" --lora-targets nothing 2>"$TMP/err"
[ $? = 1 ] && grep -q "match no linear" "$TMP/err"; ok $? "targets matching nothing: $(cat "$TMP/err")"
[ ! -e "$TMP/y" ]; ok $? "nothing written on failure"

# Mamba: its mixer's projections take no adapters, so LoRA and QLoRA are
# refused with the reason (once a segfault in the backward); --full trains
MF=tests/fixtures/mamba-tiny
for q in "--lora-r 4" "--qlora nf4"; do
  "$LMC" finetune -m "$MF" --data "$TMP/d.jsonl" -o "$TMP/m" $COMMON --steps 1 $q 2>"$TMP/err"
  [ $? = 1 ] && grep -q "take no adapters (use --full)" "$TMP/err"; ok $? "mamba $q refused: $(tail -1 "$TMP/err")"
done
[ ! -e "$TMP/m" ]; ok $? "nothing written for refused mamba LoRA"
"$LMC" finetune -m "$MF" --data "$TMP/d.jsonl" -o "$TMP/mf" $COMMON --steps 4 --full 2>"$TMP/err"
ok $? "mamba --full: $(tail -1 "$TMP/err")"
first=$(head -1 "$TMP/mf.metrics.jsonl" | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
last=$(tail -1 "$TMP/mf.metrics.jsonl" | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }'; ok $? "mamba --full loss falls ($first -> $last)"
[ -f "$TMP/mf/model.safetensors" ]; ok $? "mamba --full writes a model"

echo "test_finetune: $pass passed, $fail failed"
[ "$fail" = 0 ]
