#!/usr/bin/env bash
# test_mp_train_pp_cp.sh — `lmc train` and `lmc finetune --full` with --pp P
# and --cp C together, and with --tp T too (TP x CP x PP x DP: TP innermost,
# then CP, then PP, then DP; without TP rank = (d P + stage) C + c; each stage's blocks run ring attention over its C ranks on the zigzag
# slices, the activations between stages are a rank's slice;
# train/trainer_pp.c lmc_trainer_pp_attach_cp), on ranks started by mpirun
# (oversubscribed; the tcp launcher when lmc has no MPI; tests/mp_launch.sh):
# a tiny 4-layer llama (4 heads, 2 KV heads; accumulation 2 = the
# pipeline's micro-batches, clipping, warmup + cosine) for 10 steps at
# PP 2 x CP 2, PP 2 interleaved (--pp-chunks 2) x CP 2, DP 2 x PP 2 x CP 2
# and TP 2 x PP 2 x CP 2 (8 ranks each) against the one-process
# run: losses, validation losses, final weights and AdamW's v within the
# bounds test_mp_train_cp_pp uses for CP; PP 2 x CP 2 and TP 2 x PP 2 x CP 2
# stopped at step 5 and resumed (--resume latest) equal the uninterrupted
# runs bit for bit, and one process resumes the PP x CP checkpoint;
# `finetune --full --pp 2 --cp 2` and `--tp 2 --pp 2 --cp 2` write the
# one-process model (the finetune bounds of test_mp_finetune_cp_pp).
# Refused: --pp 2 --cp 2 on 6 ranks, --tp 2 --pp 2 --cp 2 on 4, --pp with
# --cp and LoRA.
# Usage: test_mp_train_pp_cp.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
mp_data
A="--data $TMP/data --arch llama --layers 4 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96 --seq 16
   --steps 10 --lr 3e-3 --warmup 2 --clip 0.5 --accum 2 --threads 1 --save-every 5 --eval-every 5 --eval-batches 2"
"$LMC" train $A --batch 4 -o "$TMP/single" 2>"$TMP/err"; ok $? "single: $(cat "$TMP/err")"
launch 4 train ppcp $A --batch 4 --pp 2 --cp 2; ok $? "pp 2 x cp 2: $(last ppcp)"
launch 8 train dpppcp $A --batch 2 --pp 2 --cp 2; ok $? "dp 2 x pp 2 x cp 2: $(last dpppcp)"
launch 8 train tpppcp $A --batch 4 --tp 2 --pp 2 --cp 2; ok $? "tp 2 x pp 2 x cp 2: $(last tpppcp)"
launch 4 train ilvcp $A --batch 4 --pp 2 --pp-chunks 2 --cp 2; ok $? "pp 2 x 2 chunks x cp 2: $(last ilvcp)"
grep -q "pipeline parallel 2 stages x context parallel 2 x data parallel 2 (8 ranks), global batch 4 x 16 x 2 micro-batches.*8-token zigzag" \
  "$TMP/dpppcp.err"; ok $? "dp 2 x pp 2 x cp 2 start-up line: $(grep parallel "$TMP/dpppcp.err")"
[ "$(grep -c '^step 10/10' "$TMP/ppcp.err")" = 1 ]; ok $? "pp 2 x cp 2 logs once (rank 0)"
# stopped at 5 and resumed; one process resumes the PP x CP checkpoint
for k in ppcp tpppcp; do
  case $k in ppcp) f="--pp 2 --cp 2"; W=4 ;; *) f="--tp 2 --pp 2 --cp 2"; W=8 ;; esac
  launch $W train rs$k $A --batch 4 $f --stop-at 5; ok $? "$k stop at 5: $(last rs$k)"
  [ $k = ppcp ] && cp -r "$TMP/rs$k" "$TMP/rs1"
  launch $W train rs$k --data "$TMP/data" --threads 1 --resume latest --save-every 5 --eval-every 5 --eval-batches 2 $f
  ok $? "$k resume: $(last rs$k)"
  cmp -s "$TMP/rs$k/step_000010/model.safetensors" "$TMP/$k/step_000010/model.safetensors" &&
    cmp -s "$TMP/rs$k/step_000010/optimizer.safetensors" "$TMP/$k/step_000010/optimizer.safetensors"
  ok $? "$k stopped at 5 and resumed equals the uninterrupted run bit for bit"
done
"$LMC" train --data "$TMP/data" --threads 1 --resume latest --save-every 5 --eval-every 5 --eval-batches 2 \
  -o "$TMP/rs1" 2>"$TMP/err"; ok $? "one-process resume of the pp 2 x cp 2 checkpoint: $(tail -3 "$TMP/err")"
# test_mp_train_cp_pp's bounds: ring attention merges blocks by log-sum-exp, the
# data-parallel sums add in another order
python3 tests/mp_compare.py --root "$TMP" --ref single ppcp dpppcp tpppcp ilvcp rs1 --steps 10 --keys --loss 1e-6 \
  --val 1e-6 --val-count 2 --norm 1e-6 --max 3e-5 --adamw-v 1e-5
ok $? "pp 2 x cp 2, dp 2 x pp 2 x cp 2, tp 2 x pp 2 x cp 2 and the one-process resume equal the one-process run"
# ---- lmc finetune --full (test_mp_finetune_cp_pp's data and bounds)
FIX=tests/fixtures/llama-tiny
for i in $(seq 1 23); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want $i\"}"
done >"$TMP/d.jsonl"
F="-m $FIX --data $TMP/d.jsonl --seq 32 --lr 1e-2 --threads 1 --schedule cosine --warmup 2 --steps 8 --clip 0.5
   --val-fraction 0.2 --eval-every 4 --accum 2"
"$LMC" finetune $F --full --batch 2 -o "$TMP/fone" 2>"$TMP/err"; ok $? "finetune one process: $(tail -2 "$TMP/err")"
launch 4 finetune fppcp $F --full --batch 2 --pp 2 --cp 2; ok $? "finetune --pp 2 --cp 2: $(last fppcp)"
launch 8 finetune ftppcp $F --full --batch 2 --tp 2 --pp 2 --cp 2; ok $? "finetune --tp 2 --pp 2 --cp 2: $(last ftppcp)"
python3 tests/mp_compare.py --root "$TMP" --layout finetune --ref fone fppcp ftppcp --rows 8 --keys --loss 1e-6 --val 1e-6 \
  --val-count 2 --norm 3e-6
ok $? "finetune --full --pp 2 --cp 2 and --tp 2 --pp 2 --cp 2 equal the one-process run"
# ---- refusals
launch 4 train bad0 $A --batch 4 --tp 2 --pp 2 --cp 2; [ $? != 0 ] && grep -q "needs T x 2 x 2 x D ranks" "$TMP/bad0.err"
ok $? "--tp 2 --pp 2 --cp 2 on 4 ranks: $(last bad0)"
launch 6 train bad1 $A --batch 4 --pp 2 --cp 2; [ $? != 0 ] && grep -q "needs 2 x 2 x D ranks" "$TMP/bad1.err"
ok $? "--pp 2 --cp 2 on 6 ranks: $(last bad1)"
launch 4 finetune bad2 $F --batch 2 --pp 2 --cp 2
[ $? != 0 ] && grep -q "frozen base" "$TMP/bad2.err"; ok $? "--pp --cp with LoRA: $(last bad2)"
echo "test_mp_train_pp_cp: $pass passed, $fail failed"
[ $fail = 0 ]
