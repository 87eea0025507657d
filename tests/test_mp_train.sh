#!/usr/bin/env bash
# test_mp_train.sh — `lmc train --tp T` (train/trainer_tp.c) on ranks
# started with torchrun-style variables (tcp; a port from the OS, held
# for them: port_hold.sh): 10 steps of a tiny llama (4 heads, 2 KV
# heads, 2 layers, MLP 96; accumulation 2, clipping, warmup + cosine)
# at TP 2 (KV heads split) and TP 4 (KV heads replicated), DP 2 x TP 2
# on 4 ranks (sub-communicators), and TP 2 and DP 2 x TP 2 with the
# vocabulary-parallel embedding/head (--tp-vocab), give the one-process losses, validation
# losses and final parameters (the consolidated checkpoint) within 1e-6
# relative; rank 0 alone logs; a TP run stopped at step 5 and resumed from
# its consolidated checkpoint equals the uninterrupted one, and so does a
# one-process resume of it; DP 2 x TP 2 (--tp-vocab --zero 1) under mpirun
# too (when installed);
# DP 2 x TP 2 with --zero 1 (each TP shard's AdamW moments split over its
# DP group) equals it too and resumes bit for bit;
# Muon (--optim muon: each split matrix gathered for Newton-Schulz, the
# momentum kept sharded) at TP 2, TP 4 and DP 2 x TP 2 equals the one-process
# Muon run (losses, weights and every optimizer tensor of the consolidated
# checkpoint), a TP 2 Muon run stopped at 5 and resumed equals the
# uninterrupted one bit for bit and one process resumes its checkpoint;
# --tp --zero 1 with GaLore and a world that --tp does not divide are refused
# (the other optimizers under --tp: test_mp_train_optim.sh).
# Usage: test_mp_train.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
mp_data
A="--data $TMP/data --arch llama --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96 --seq 16
   --steps 10 --lr 3e-3 --warmup 2 --clip 0.5 --accum 2 --threads 1 --save-every 5 --eval-every 5 --eval-batches 2"
# run W OUT ARGS...: W ranks meet at a free port; rank r's stderr in OUT.r<r>
run() { local W=$1 out=$2; shift 2; mp_ranks "$W" "$out" train "$@" -o "$TMP/$out"; }
"$LMC" train $A --batch 4 -o "$TMP/single" 2>"$TMP/err"; ok $? "single: $(cat "$TMP/err")"
run 2 tp2 $A --batch 4 --tp 2; ok $? "tp 2: $(tail -n 3 "$TMP"/tp2.r*)"
grep -q "tensor parallel 2 x data parallel 1" "$TMP/tp2.r0"; ok $? "tp 2 start-up line: $(grep parallel "$TMP/tp2.r0")"
[ "$(grep -c '^step' "$TMP/tp2.r1")" = 0 ]; ok $? "rank 1 logged steps"
run 4 tp4 $A --batch 4 --tp 4; ok $? "tp 4: $(tail -n 3 "$TMP"/tp4.r*)"
run 4 dp2tp2 $A --batch 2 --tp 2; ok $? "dp 2 x tp 2: $(tail -n 3 "$TMP"/dp2tp2.r*)"
run 2 vp2 $A --batch 4 --tp 2 --tp-vocab; ok $? "tp 2 vocab-parallel: $(tail -n 3 "$TMP"/vp2.r*)"
run 4 vp4 $A --batch 2 --tp 2 --tp-vocab; ok $? "dp 2 x tp 2 vocab-parallel: $(tail -n 3 "$TMP"/vp4.r*)"
run 4 z1 $A --batch 2 --tp 2 --zero 1; ok $? "dp 2 x tp 2 zero 1: $(tail -n 3 "$TMP"/z1.r*)"
run 4 z1rs $A --batch 2 --tp 2 --zero 1 --stop-at 5; ok $? "dp 2 x tp 2 zero 1 stop at 5: $(tail -n 3 "$TMP"/z1rs.r*)"
grep -q "tensor parallel 2 x data parallel 2 (4 ranks), global batch 4 x 16 x 2" "$TMP/dp2tp2.r0"
ok $? "dp 2 x tp 2 start-up line: $(grep parallel "$TMP/dp2tp2.r0")"
# stopped at 5 and resumed (--resume latest) at TP 2, and by one process
run 2 rs $A --batch 4 --tp 2 --stop-at 5; ok $? "tp 2 stop at 5: $(tail -n 3 "$TMP"/rs.r*)"
cp -r "$TMP/rs" "$TMP/rs1"
R="--data $TMP/data --threads 1 --resume latest --save-every 5 --eval-every 5 --eval-batches 2"
run 2 rs $R --tp 2; ok $? "tp 2 resume: $(tail -n 3 "$TMP"/rs.r*)"
"$LMC" train $R -o "$TMP/rs1" 2>"$TMP/err"; ok $? "one-process resume: $(tail -3 "$TMP/err")"
run 4 z1rs $R --tp 2 --zero 1; ok $? "dp 2 x tp 2 zero 1 resume: $(tail -n 3 "$TMP"/z1rs.r*)"
cmp -s "$TMP/z1rs/step_000010/model.safetensors" "$TMP/z1/step_000010/model.safetensors" &&
  cmp -s "$TMP/z1rs/step_000010/optimizer.safetensors" "$TMP/z1/step_000010/optimizer.safetensors"
ok $? "dp 2 x tp 2 zero 1 stopped at 5 and resumed equals the uninterrupted run bit for bit"
# the same DP 2 x TP 2 under mpirun (sub-communicators over the MPI transport), when there is one
CASES="tp2 tp4 dp2tp2 vp2 vp4 rs rs1 z1"
if [ $HAVE_MPIRUN = 1 ]; then
  timeout 300 "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 2 --tp 2 --tp-vocab --zero 1 -o "$TMP/mpi" 2>"$TMP/mpi.err"
  rc=$?
  if mp_no_mpi "$TMP/mpi.err"; then echo "test_mp_train: mpirun part skipped (lmc built without MPI)"
  else ok $rc "mpirun dp 2 x tp 2 --tp-vocab --zero 1: $(tail -n 3 "$TMP/mpi.err")"; CASES="$CASES mpi"; fi
fi
# the row-parallel all-reduce sums partial products in another order than
# one matmul: the losses agree to ~1e-8, the weights after 10 AdamW steps
# to ~1e-7 in norm (a few elements to ~2e-6 of the largest weight)
python3 tests/mp_compare.py --root "$TMP" --ref single $CASES --steps 10 --keys --loss 1e-6 --val 1e-6 --norm 1e-6 \
  --max 1e-5 --adamw-v 1e-5
ok $? "tp 2, tp 4, dp 2 x tp 2 and the resumed runs equal the one-process run (1e-6)"
cmp -s "$TMP/rs/step_000010/model.safetensors" "$TMP/tp2/step_000010/model.safetensors" &&
  cmp -s "$TMP/rs/step_000010/optimizer.safetensors" "$TMP/tp2/step_000010/optimizer.safetensors"
ok $? "tp 2 stopped at 5 and resumed equals the uninterrupted tp 2 run bit for bit"
# each rank holds its shard: fewer parameters than the whole model
shard=$(sed -n 's/.*each rank holds \([0-9]*\) of the parameters.*/\1/p' "$TMP/tp2.r0")
total=$(sed -n 's/.*llama, \([0-9]*\) parameters.*/\1/p' "$TMP/tp2.r0")
[ -n "$shard" ] && [ -n "$total" ] && [ "$shard" -lt "$total" ]; ok $? "tp 2 shard $shard of $total parameters"
vshard=$(sed -n 's/.*each rank holds \([0-9]*\) of the parameters.*/\1/p' "$TMP/vp2.r0")
[ -n "$vshard" ] && [ "$vshard" -lt "$shard" ]; ok $? "--tp-vocab shard $vshard below the replicated-vocabulary shard $shard"
# Muon under TP: against a one-process Muon run
"$LMC" train $A --batch 4 --optim muon -o "$TMP/mu1" 2>"$TMP/err"; ok $? "single muon: $(cat "$TMP/err")"
run 2 mu2 $A --batch 4 --tp 2 --optim muon; ok $? "tp 2 muon: $(tail -n 3 "$TMP"/mu2.r*)"
run 4 mu4 $A --batch 4 --tp 4 --optim muon; ok $? "tp 4 muon: $(tail -n 3 "$TMP"/mu4.r*)"
run 4 mudp $A --batch 2 --tp 2 --optim muon; ok $? "dp 2 x tp 2 muon: $(tail -n 3 "$TMP"/mudp.r*)"
run 2 murs $A --batch 4 --tp 2 --optim muon --stop-at 5; ok $? "tp 2 muon stop at 5: $(tail -n 3 "$TMP"/murs.r*)"
cp -r "$TMP/murs" "$TMP/murs1"
run 2 murs $R --tp 2; ok $? "tp 2 muon resume: $(tail -n 3 "$TMP"/murs.r*)"
"$LMC" train $R -o "$TMP/murs1" 2>"$TMP/err"; ok $? "one-process muon resume: $(tail -3 "$TMP/err")"
cmp -s "$TMP/murs/step_000010/model.safetensors" "$TMP/mu2/step_000010/model.safetensors" &&
  cmp -s "$TMP/murs/step_000010/optimizer.safetensors" "$TMP/mu2/step_000010/optimizer.safetensors"
ok $? "tp 2 muon stopped at 5 and resumed equals the uninterrupted run bit for bit"
MU="mu2 mu4 mudp murs1"
if [[ " $CASES " == *" mpi "* ]]; then # DP 2 x TP 2 Muon under mpirun too
  timeout 300 mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo \
    --mca oob_tcp_if_include lo -np 4 "$LMC" train $A --batch 2 --tp 2 --optim muon -o "$TMP/mpimu" 2>"$TMP/mpimu.err"
  ok $? "mpirun dp 2 x tp 2 muon: $(tail -n 3 "$TMP/mpimu.err")"
  MU="$MU mpimu"
fi
python3 tests/mp_compare.py --root "$TMP" --ref mu1 $MU --rows 10 --loss 1e-6 --norm 1e-6 --optim-max 1e-4
ok $? "muon at tp 2, tp 4, dp 2 x tp 2 and its one-process resume equal the one-process muon run"
# refusals
run 4 bad $A --batch 2 --tp 2 --zero 1 --optim galore; [ $? != 0 ] && grep -q "zero 0 or (AdamW) --zero 1" "$TMP/bad.r0"
ok $? "--tp with --zero 1 --optim galore: $(tail -n 2 "$TMP/bad.r0")"
run 2 bad2 $A --batch 4 --tp 2 --zero 2; [ $? != 0 ] && grep -q "give more ranks than --tp" "$TMP/bad2.r0"
ok $? "--tp 2 --zero 2 on 2 ranks (no data-parallel group): $(tail -n 1 "$TMP/bad2.r0")"
run 3 bad3 $A --batch 4 --tp 2; [ $? != 0 ] && grep -q "multiple of 2 ranks" "$TMP/bad3.r0"
ok $? "--tp 2 on 3 ranks: $(tail -n 2 "$TMP/bad3.r0")"
"$LMC" train $A --batch 4 --tp-vocab -o "$TMP/bad1" 2>"$TMP/err"; [ $? = 2 ] && grep -q "give --tp" "$TMP/err"
ok $? "--tp-vocab without --tp: $(cat "$TMP/err")"
echo "test_mp_train: $pass passed, $fail failed"
[ $fail = 0 ]
