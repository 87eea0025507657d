#!/usr/bin/env bash
# test_mp_finetune_cp_pp.sh — the long-sequence and fine-tuning halves of
# test_mp_train_cp_pp (same launcher, tests/mp_launch.sh): a 1024-token
# sequence that `lmc info --fits` puts over a memory budget on one rank and
# under it at CP 4 trains at `lmc train --cp 4` with the one-process
# losses, and so does GPT-2 (learned positions) at CP 2, with --recompute too; `lmc finetune --full` on llama-tiny at CP 2, PP 2, DP 2 x PP 2
# DP 2 x CP 2, TP 2 x CP 2 and TP 2 x PP 2, and a LoRA finetune at CP 2, give the one-process
# losses, validation losses and written weights (1e-6; the LoRA adapter
# 1e-5); PP 2 and CP 2 runs stopped after step 6 and resumed from their
# step-4 checkpoint write the uninterrupted model bit for bit; --pp with
# LoRA and --pack with --cp are refused.
# Usage: test_mp_finetune_cp_pp.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
mp_data
A="--data $TMP/data --arch llama --layers 4 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96 --seq 16
   --steps 10 --lr 3e-3 --warmup 2 --clip 0.5 --accum 2 --threads 1 --save-every 5 --eval-every 5 --eval-batches 2"
mp_probe train $A --batch 4 --steps 1 --warmup 0 --cp 2
# ---- a long sequence under a memory budget: `lmc info --fits` says 1024
# tokens do not fit the budget on one rank and do at CP 4; `lmc train --cp 4`
# on them gives the one-process losses
L="--data $TMP/data --arch llama --layers 4 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96 --max-pos 4096
   --seq 1024 --batch 1 --steps 3 --warmup 0 --lr 3e-3 --threads 1 --eval-every 0"
"$LMC" train $L -o "$TMP/long1" 2>"$TMP/err"; ok $? "one process, 1024 tokens: $(tail -2 "$TMP/err")"
budget=$(for c in 1 4; do "$LMC" info -m "$TMP/long1/step_000003" --seq 1024 --cp $c --json; echo; done |
         python3 -c 'import json,sys; t=[json.loads(l)["total"] for l in sys.stdin if l.strip()]; print((t[0]+t[1])/2/2**30)')
fits=$("$LMC" info -m "$TMP/long1/step_000003" --seq 1024 --fits "$budget" 2>&1)
echo "$fits" | grep -q " 1x1x4: " && ! echo "$fits" | grep -q " 1x1x1: "; ok $? "fits $budget GiB: $fits"
launch 4 train long4 $L --cp 4; ok $? "cp 4, 1024 tokens: $(last long4)"
python3 tests/mp_compare.py --root "$TMP" long4:long1 --rows 3 --loss 1e-6
ok $? "cp 4 on 1024 tokens equals the one-process losses"
# GPT-2 (learned positions at the slice's global positions, layer norms, biases) at CP 2
G="--data $TMP/data --arch gpt2 --layers 2 --hidden 64 --heads 4 --seq 17 --batch 2 --steps 4 --warmup 1 --lr 3e-3
   --threads 1 --eval-every 2 --eval-batches 2"
"$LMC" train $G -o "$TMP/g1" 2>"$TMP/err"; ok $? "gpt2 one process: $(tail -2 "$TMP/err")"
launch 2 train g2 $G --cp 2; ok $? "gpt2 cp 2: $(last g2)"
launch 2 train g3 $G --cp 2 --recompute; ok $? "gpt2 cp 2 --recompute: $(last g3)"
python3 tests/mp_compare.py --root "$TMP" --ref g1 g2 g3 --rows 4 --loss 1e-6 --val 1e-6
ok $? "gpt2 at cp 2 (and with --recompute) equals the one-process losses"
# ---- lmc finetune
FIX=tests/fixtures/llama-tiny
for i in $(seq 1 23); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want $i\"}"
done >"$TMP/d.jsonl"
F="-m $FIX --data $TMP/d.jsonl --seq 32 --lr 1e-2 --threads 1 --schedule cosine --warmup 2 --steps 8 --clip 0.5
   --val-fraction 0.2 --eval-every 4 --accum 2"
"$LMC" finetune $F --full --batch 2 -o "$TMP/fone" 2>"$TMP/err"; ok $? "finetune one process: $(tail -2 "$TMP/err")"
"$LMC" finetune $F --batch 2 -o "$TMP/flone" 2>"$TMP/err"; ok $? "lora one process: $(tail -2 "$TMP/err")"
launch 2 finetune fcp2 $F --full --batch 2 --cp 2; ok $? "finetune cp 2: $(last fcp2)"
launch 2 finetune fpp2 $F --full --batch 2 --pp 2; ok $? "finetune pp 2: $(last fpp2)"
launch 4 finetune fdp2pp2 $F --full --batch 1 --pp 2; ok $? "finetune dp 2 x pp 2: $(last fdp2pp2)"
launch 4 finetune fdp2cp2 $F --full --batch 1 --cp 2; ok $? "finetune dp 2 x cp 2: $(last fdp2cp2)"
launch 2 finetune flcp2 $F --batch 2 --cp 2; ok $? "lora finetune cp 2: $(last flcp2)"
launch 4 finetune ftpcp $F --full --batch 2 --tp 2 --cp 2; ok $? "finetune tp 2 x cp 2: $(last ftpcp)"
launch 4 finetune ftppp $F --full --batch 2 --tp 2 --pp 2; ok $? "finetune tp 2 x pp 2: $(last ftppp)"
# LoRA: the adapter's B starts at zero, so its relative error after 8 steps is larger (~1.5e-6);
# with TP the row-parallel sums' order gives what `--tp 2` alone gives here (weights ~1e-6 in norm
# at lr 1e-2: TP 2 x PP 2 equals TP 2 bit for bit); DP x CP sums gradients in another order too
# (1.02e-6 after the CPU ops' rounding changed with the vectorised SwiGLU backward)
CMP="--root $TMP --layout finetune --rows 8 --loss 1e-6 --val 1e-6"
python3 tests/mp_compare.py $CMP --ref fone fcp2 fpp2 fdp2pp2 fdp2cp2 ftpcp ftppp --norm 3e-6
rc=$?
python3 tests/mp_compare.py $CMP --ref flone flcp2 --file adapter_model.safetensors --norm 1e-5 || rc=1
[ $rc = 0 ]
ok $? "finetune cp 2, pp 2, dp 2 x pp 2, dp 2 x cp 2 and lora cp 2 equal the one-process runs"
# --full checkpoints: stopped after step 6 (--save-every 4 --stop-at 6), resumed from step 4, bit for bit
for f in "--pp 2" "--cp 2"; do
  n=$(echo "$f" | tr -d ' -')
  launch 2 finetune s$n $F --full --batch 2 $f --save-every 4 --stop-at 6; ok $? "finetune $f stop at 6: $(last s$n)"
  launch 2 finetune s$n $F --full --batch 2 $f --resume "$TMP/s$n.ckpt/step_000004"; ok $? "finetune $f resume: $(last s$n)"
  cmp -s "$TMP/s$n/model.safetensors" "$TMP/f$n/model.safetensors"
  ok $? "finetune $f stopped and resumed from step 4 equals the uninterrupted run bit for bit"
done
# ---- refusals
"$LMC" finetune $F --full --batch 2 --pack --cp 2 -o "$TMP/bad6" 2>"$TMP/err"; [ $? = 2 ] && grep -q "pack does not" "$TMP/err"
ok $? "--pack with --cp: $(cat "$TMP/err")"
launch 2 finetune bad5 $F --batch 2 --pp 2; [ $? != 0 ] && grep -q "frozen base" "$TMP/bad5.err"
ok $? "--pp with LoRA: $(last bad5)"
echo "test_mp_finetune_cp_pp: $pass passed, $fail failed"
[ $fail = 0 ]
