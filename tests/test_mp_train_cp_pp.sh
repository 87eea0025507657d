#!/usr/bin/env bash
# test_mp_train_cp_pp.sh — `lmc train` with --cp C (context parallel:
# ring attention over zigzag slices, train/trainer_cp.c) and --pp P (1F1B
# pipeline stages, train/trainer_pp.c), on ranks started by mpirun
# (oversubscribed; the torchrun-style tcp launcher when lmc has no MPI;
# tests/mp_launch.sh): a tiny 4-layer llama (4 heads, 2 KV heads;
# accumulation 2 = the pipeline's micro-batches, clipping, warmup + cosine)
# for 10 steps at CP 2, CP 4, DP 2 x CP 2, PP 2, PP 4, DP 2 x PP 2, CP 2
# with Muon, TP 2 x CP 2, DP 2 x CP 2 x TP 2 (8 ranks), TP 2 x CP 2 with
# --tp-vocab, TP 2 x PP 2 and DP 2 x PP 2 x TP 2 (8 ranks) give the one-process run's losses, validation losses and final
# weights and AdamW moments (1e-6 relative; weights in norm); runs stopped
# at step 5 and resumed (--resume latest) equal the uninterrupted ones bit
# for bit, and a one-process resume of a PP checkpoint equals the
# one-process run (TP 2 x CP 2 and TP 2 x PP 2 resume bit for bit too).
# Refused with a message: --pp --cp with --zero 1 (--pp with --cp and
# all three: test_mp_train_pp_cp), --tp x --pp with tied
# embeddings, with Muon, with more stages than layers; --cp on a world it
# does not divide; --cp with --zero 1. (Fine-tuning and a long sequence:
# test_mp_finetune_cp_pp.)
# Usage: test_mp_train_cp_pp.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
mp_data
A="--data $TMP/data --arch llama --layers 4 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96 --seq 16
   --steps 10 --lr 3e-3 --warmup 2 --clip 0.5 --accum 2 --threads 1 --save-every 5 --eval-every 5 --eval-batches 2"
mp_probe train $A --batch 4 --steps 1 --warmup 0 --cp 2
# ---- lmc train
"$LMC" train $A --batch 4 -o "$TMP/single" 2>"$TMP/err"; ok $? "single: $(cat "$TMP/err")"
"$LMC" train $A --batch 4 --optim muon -o "$TMP/smuon" 2>"$TMP/err"; ok $? "single muon: $(cat "$TMP/err")"
launch 2 train cp2 $A --batch 4 --cp 2; ok $? "cp 2: $(last cp2)"
launch 4 train cp4 $A --batch 4 --cp 4; ok $? "cp 4: $(last cp4)"
launch 4 train dp2cp2 $A --batch 2 --cp 2; ok $? "dp 2 x cp 2: $(last dp2cp2)"
launch 2 train pp2 $A --batch 4 --pp 2; ok $? "pp 2: $(last pp2)"
launch 4 train pp4 $A --batch 4 --pp 4; ok $? "pp 4: $(last pp4)"
launch 4 train dp2pp2 $A --batch 2 --pp 2; ok $? "dp 2 x pp 2: $(last dp2pp2)"
launch 2 train cp2muon $A --batch 4 --cp 2 --optim muon; ok $? "cp 2 muon: $(last cp2muon)"
launch 4 train tpcp $A --batch 4 --tp 2 --cp 2; ok $? "tp 2 x cp 2: $(last tpcp)"
launch 8 train dptpcp $A --batch 2 --tp 2 --cp 2; ok $? "dp 2 x cp 2 x tp 2: $(last dptpcp)"
launch 4 train tpcpv $A --batch 4 --tp 2 --cp 2 --tp-vocab; ok $? "tp 2 x cp 2 --tp-vocab: $(last tpcpv)"
launch 4 train tppp $A --batch 4 --tp 2 --pp 2; ok $? "tp 2 x pp 2: $(last tppp)"
launch 8 train dptppp $A --batch 2 --tp 2 --pp 2; ok $? "dp 2 x pp 2 x tp 2: $(last dptppp)"
grep -q "context parallel 2 x data parallel 2 (4 ranks), global batch 4 x 16 x 2 accum; each rank holds 8-token" \
  "$TMP/dp2cp2.err"; ok $? "dp 2 x cp 2 start-up line: $(grep parallel "$TMP/dp2cp2.err")"
grep -q "pipeline parallel 2 stages x data parallel 2 (4 ranks), global batch 4 x 16 x 2 micro-batches" \
  "$TMP/dp2pp2.err"; ok $? "dp 2 x pp 2 start-up line: $(grep parallel "$TMP/dp2pp2.err")"
[ "$(grep -c '^step 10/10' "$TMP/pp2.err")" = 1 ]; ok $? "pp 2 logs once (rank 0)"
# stopped at 5 and resumed (every rank reads the one-process checkpoint)
for k in cp2 pp2 tpcp tppp; do
  case $k in cp2) f="--cp 2"; W=2 ;; pp2) f="--pp 2"; W=2 ;; tpcp) f="--tp 2 --cp 2"; W=4 ;; *) f="--tp 2 --pp 2"; W=4 ;; esac
  launch $W train rs$k $A --batch 4 $f --stop-at 5; ok $? "$k stop at 5: $(last rs$k)"
  [ $k = pp2 ] && cp -r "$TMP/rs$k" "$TMP/rs1"
  launch $W train rs$k --data "$TMP/data" --threads 1 --resume latest --save-every 5 --eval-every 5 --eval-batches 2 $f
  ok $? "$k resume: $(last rs$k)"
  cmp -s "$TMP/rs$k/step_000010/model.safetensors" "$TMP/$k/step_000010/model.safetensors" &&
    cmp -s "$TMP/rs$k/step_000010/optimizer.safetensors" "$TMP/$k/step_000010/optimizer.safetensors"
  ok $? "$k stopped at 5 and resumed equals the uninterrupted $k run bit for bit"
done
"$LMC" train --data "$TMP/data" --threads 1 --resume latest --save-every 5 --eval-every 5 --eval-batches 2 \
  -o "$TMP/rs1" 2>"$TMP/err"; ok $? "one-process resume of the pp 2 checkpoint: $(tail -3 "$TMP/err")"
# ring attention merges blocks by log-sum-exp and the data-parallel (and
# row-parallel) sums add in another order: losses ~1e-8, weights after 10
# steps ~1e-7 in norm; AdamW magnifies that on near-zero gradients, so single
# elements reach ~1e-5 of the largest weight (TP x CP)
CMP="--root $TMP --steps 10 --keys --loss 1e-6 --val 1e-6 --norm 1e-6 --max 3e-5"
python3 tests/mp_compare.py $CMP --ref single cp2 cp4 dp2cp2 pp2 pp4 dp2pp2 rs1 tpcp dptpcp tpcpv tppp dptppp --adamw-v 1e-5
rc=$?
python3 tests/mp_compare.py $CMP --ref smuon cp2muon || rc=1
[ $rc = 0 ]
ok $? "cp 2/4, dp 2 x cp 2, pp 2/4, dp 2 x pp 2, cp 2 muon, tp 2 x cp 2 (dp 2, vocab), tp 2 x pp 2 (dp 2) and the one-process resume equal the one-process runs"
# ---- refusals
"$LMC" train $A --batch 4 --pp 2 --cp 2 --zero 1 -o "$TMP/bad" 2>"$TMP/err"; [ $? = 2 ] && grep -q "with --zero 0" "$TMP/err"
ok $? "--pp --cp with --zero 1: $(cat "$TMP/err")"
"$LMC" train $A --batch 4 --cp 2 --zero 1 -o "$TMP/bad" 2>"$TMP/err"; [ $? = 2 ] && grep -q "with --zero 0" "$TMP/err"
ok $? "--cp with --zero 1: $(cat "$TMP/err")"
launch 4 train bad1 $A --batch 4 --tp 2 --pp 2 --tie; [ $? != 0 ] && grep -q "tied embeddings with --tp" "$TMP/bad1.err"
ok $? "--tp with --pp and tied embeddings: $(last bad1)"
launch 2 train bad2 $A --batch 4 --pp 2 --optim muon; [ $? != 0 ] && grep -q "another optimizer than AdamW" "$TMP/bad2.err"
ok $? "--pp with muon: $(last bad2)"
launch 2 train bad3 $A --batch 4 --pp 2 --layers 1; [ $? != 0 ] && grep -q "only 1 layers" "$TMP/bad3.err"
ok $? "--pp 2 on one layer: $(last bad3)"
launch 3 train bad4 $A --batch 4 --cp 2; [ $? != 0 ] && grep -q "cp 2 needs a multiple of 2 ranks" "$TMP/bad4.err"
ok $? "--cp 2 on 3 ranks: $(last bad4)"
echo "test_mp_train_cp_pp: $pass passed, $fail failed"
[ $fail = 0 ]
