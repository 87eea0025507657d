#!/usr/bin/env bash
# test_mp_train_pp.sh — pipeline stages that hold only their part of the
# model (lmc train / finetune --pp without --tp) and interleaved 1F1B
# (--pp-chunks V), on ranks started by mpirun (oversubscribed; the tcp
# launcher when lmc has no MPI; tests/mp_launch.sh). A 4-layer llama
# (10 steps, accumulation 4 = the micro-batches, clipping, warmup + cosine,
# evaluations and checkpoints every 5 steps): PP 2 x V 2 and a 6-layer one
# at PP 2 x V 3 write the one-process run's checkpoint bit for bit
# (weights and AdamW moments; a stage runs the same operations in the same
# order); tied embeddings at PP 2 give the one-process losses, validation
# losses and weights (1e-6; the embedding's two halves are summed across
# the stages); a tied PP 2 run stopped at step 5 and resumed at PP 2 x V 2
# equals the uninterrupted one (1e-6), and so does tied GPT-2 (learned
# positions, --decay-all) at PP 2 x V 2; one process resumes a PP 2 x V 2
# checkpoint. The start-up line says stage 0 holds fewer parameters than
# the model. `lmc finetune --full --pp 2` on qwen2-tiny (tied) gives the
# one-process losses and written model (1e-6). Refused: --pp-chunks with an
# --accum not a multiple of --pp, --pp-chunks without --pp.
# Usage: test_mp_train_pp.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
mp_data
A="--data $TMP/data --arch llama --layers 4 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96 --seq 16
   --steps 10 --lr 3e-3 --warmup 2 --clip 0.5 --accum 4 --threads 1 --save-every 5 --eval-every 5 --eval-batches 2"
mp_probe train $A --batch 4 --steps 1 --warmup 0 --cp 2
same() { cmp -s "$TMP/$1/step_000010/model.safetensors" "$TMP/$2/step_000010/model.safetensors" &&
         cmp -s "$TMP/$1/step_000010/optimizer.safetensors" "$TMP/$2/step_000010/optimizer.safetensors"; }
"$LMC" train $A --batch 2 -o "$TMP/single" 2>"$TMP/err"; ok $? "single: $(tail -2 "$TMP/err")"
launch 2 train v2 $A --batch 2 --pp 2 --pp-chunks 2; ok $? "pp 2 x v 2: $(last v2)"
same single v2; ok $? "pp 2 x v 2 writes the one-process checkpoint bit for bit"
grep -q "interleaved 1F1B, 2 chunks per stage (4 in all), bubble (P-1)/(M V + P-1) = 0.111" "$TMP/v2.err"
ok $? "interleaved start-up line: $(grep interleaved "$TMP/v2.err")"
held=$(sed -n 's/.*stage 0 holds \([0-9]*\) of the \([0-9]*\) parameter floats.*/\1 \2/p' "$TMP/v2.err")
[ -n "$held" ] && [ ${held% *} -lt ${held#* } ]; ok $? "stage 0 holds part of the model: $held"
"$LMC" train $A --batch 2 --layers 6 -o "$TMP/single6" 2>"$TMP/err"; ok $? "single 6 layers: $(tail -2 "$TMP/err")"
launch 2 train v3 $A --batch 2 --layers 6 --pp 2 --pp-chunks 3; ok $? "pp 2 x v 3: $(last v3)"
same single6 v3; ok $? "pp 2 x v 3 writes the one-process checkpoint bit for bit"
# tied embeddings across the stages
"$LMC" train $A --batch 2 --tie -o "$TMP/tie1" 2>"$TMP/err"; ok $? "single tied: $(tail -2 "$TMP/err")"
launch 2 train tie2 $A --batch 2 --tie --pp 2; ok $? "tied pp 2: $(last tie2)"
launch 2 train rst $A --batch 2 --tie --pp 2 --stop-at 5; ok $? "tied pp 2 stop at 5: $(last rst)"
launch 2 train rst --data "$TMP/data" --threads 1 --resume latest --save-every 5 --eval-every 5 --eval-batches 2 \
  --pp 2 --pp-chunks 2; ok $? "tied resume at pp 2 x v 2: $(last rst)"
cp -r "$TMP/v2" "$TMP/rs1" && rm -rf "$TMP/rs1/step_000010"
"$LMC" train --data "$TMP/data" --threads 1 --resume latest --save-every 5 --eval-every 5 --eval-batches 2 \
  -o "$TMP/rs1" 2>"$TMP/err"; ok $? "one-process resume of the pp 2 x v 2 checkpoint: $(tail -3 "$TMP/err")"
same single rs1; ok $? "one process resumed from the pp 2 x v 2 step-5 checkpoint equals the one-process run"
# GPT-2 (tied, learned positions: the last stage also holds wpe and must leave it alone), decay on everything
G="--data $TMP/data --arch gpt2 --layers 4 --hidden 64 --heads 4 --intermediate 96 --seq 16 --steps 6 --lr 3e-3
   --warmup 2 --clip 0.5 --accum 2 --threads 1 --save-every 6 --eval-every 3 --eval-batches 2 --tie --decay-all"
"$LMC" train $G --batch 2 -o "$TMP/g1" 2>"$TMP/err"; ok $? "gpt2 single: $(tail -2 "$TMP/err")"
launch 2 train g2 $G --batch 2 --pp 2 --pp-chunks 2; ok $? "gpt2 pp 2 x v 2: $(last g2)"
CMP="--root $TMP --keys --loss 1e-6 --val 1e-6 --norm 1e-6"
python3 tests/mp_compare.py $CMP --ref tie1 tie2 rst --rows 10 --ref-rows 10
rc=$?
python3 tests/mp_compare.py $CMP --ref g1 g2 --step 6 --rows 6 --ref-rows 6 || rc=1
[ $rc = 0 ]
ok $? "tied pp 2, its resume at pp 2 x v 2 and gpt2 at pp 2 x v 2 equal the one-process runs"
# fine-tuning a tied model (qwen2-tiny) at PP 2
printf '{"prompt": "a b c", "completion": " d e f"}\n{"prompt": "g h", "completion": " i j k l"}\n{"prompt": "m", "completion": " n o"}\n{"prompt": "p q r s", "completion": " t"}\n' >"$TMP/sft.jsonl"
F="-m tests/fixtures/qwen2-tiny --data $TMP/sft.jsonl --full --batch 1 --seq 16 --accum 2 --steps 4 --lr 1e-3 --threads 1"
"$LMC" finetune $F -o "$TMP/ft1" 2>"$TMP/err"; ok $? "finetune one process: $(tail -2 "$TMP/err")"
launch 2 finetune ft2 $F --pp 2; ok $? "finetune pp 2: $(last ft2)"
python3 tests/mp_compare.py --root "$TMP" --layout dirs ft2:ft1 --keys --norm 1e-6
ok $? "finetune --full --pp 2 on a tied model writes the one-process model"
# refusals
launch 2 train bad1 $A --batch 2 --pp 2 --pp-chunks 2 --accum 3; [ $? != 0 ] && grep -q "multiple of the 2 stages" "$TMP/bad1.err"
ok $? "--pp-chunks with --accum 3: $(last bad1)"
"$LMC" train $A --batch 2 --pp-chunks 2 -o "$TMP/bad2" 2>"$TMP/err"; [ $? = 2 ] && grep -q "interleaves the stages" "$TMP/err"
ok $? "--pp-chunks without --pp: $(cat "$TMP/err")"
echo "test_mp_train_pp: $pass passed, $fail failed"
[ $fail = 0 ]
