#!/usr/bin/env bash
# test_train_zero_optim.sh — data-parallel `lmc train --optim K` (Muon,
# 8-bit AdamW, GaLore, APOLLO) through the zero module's per-layer units
# (trainer_dist.c): with --zero 0 the zero module holds no moments, each
# unit's gradient is all-reduced as its backward ends (bucketed here) and
# every rank runs the same lmc_optim step; with --zero 1 the optimizer
# state is sharded by whole tensors (each rank steps its own and
# broadcasts them). Muon and 8-bit AdamW at world 4, GaLore and APOLLO at
# world 2 against the one-process run with the same global batch (losses,
# validation losses, parameters <= 1e-6; 8-bit AdamW 1e-4 / 1e-2, and bit
# for bit at world 1); a --zero 1 Muon run stopped at 10 and resumed =
# the uninterrupted one bit for bit, resumed by 2 ranks or one process
# (resharded by name) = the one-process run, as a one-process checkpoint
# resumed by 4 ranks at --zero 1; another kind refused; APOLLO refused at
# --zero 1. Skipped without mpirun or MPI.
# Usage: test_train_zero_optim.sh PATH/TO/lmc
. "$(dirname "$0")/zero_train_common.sh"
if [ $have_mpi = 0 ]; then
  echo "test_train_zero_optim: skipped (no mpirun, or lmc built without MPI)"
  exit 0
fi
# other optimizers (--optim): stage 0 through the zero module, each unit's gradient all-reduced
# as its backward ends (with buckets too), then the same step on every rank. 8-bit AdamW's
# moment codes turn the rounding of the 4-rank gradient sum into code flips (losses 1.7e-5,
# parameters 1e-3 of max |p| after 20 steps): compared at 1e-4 / 1e-2, and bit for bit at
# world 1 (--zero 0 in one process: the same code path without the sum)
for k in muon adamw8bit galore apollo; do
  O="--optim $k"; [ $k = galore ] && O="$O --galore-rank 8 --galore-update-gap 2"
  [ $k = apollo ] && O="$O --apollo-rank 8 --apollo-update-gap 2"
  [ $k = adamw8bit ] && O="$O --adamw8bit-block 64"
  "$LMC" train $A --batch 4 $O -o "$TMP/ref$k" 2>"$TMP/err"; ok $? "$k one process: $(tail -n 3 "$TMP/err")"
  n=4; [ $k = galore ] || [ $k = apollo ] && n=2
  "${MPIRUN[@]}" -np $n "$LMC" train $A --batch $((4 / n)) $O --bucket-mb 0.15 -o "$TMP/o$k" 2>"$TMP/err"
  ok $? "$k world $n: $(tail -n 3 "$TMP/err")"
  if [ $k = adamw8bit ]; then
    compare "o$k" "ref$k" 1e-2 1e-4; ok $? "$k world $n equals the one-process run (8-bit tolerances)"
    "$LMC" train $A --batch 4 $O --zero 0 -o "$TMP/o${k}w1" 2>"$TMP/err"; ok $? "$k world 1: $(tail -n 3 "$TMP/err")"
    bitexact "o${k}w1" "ref$k"; ok $? "$k world 1 (zero module) = one process bit for bit"
  else
    compare "o$k" "ref$k"; ok $? "$k world $n equals the one-process run"
  fi
  # --zero 1: the state sharded by whole tensors (each rank steps its own and broadcasts them)
  [ $k = apollo ] && continue
  "${MPIRUN[@]}" -np $n "$LMC" train $A --batch $((4 / n)) $O --zero 1 -o "$TMP/s$k" 2>"$TMP/err"
  ok $? "$k world $n zero 1: $(tail -n 3 "$TMP/err")"
  if [ $k = adamw8bit ]; then compare "s$k" "ref$k" 1e-2 1e-4; else compare "s$k" "ref$k"; fi
  ok $? "$k world $n zero 1 (sharded state) equals the one-process run"
done
# a sharded run stopped at 10 and resumed = uninterrupted, bit for bit; APOLLO (index-seeded
# projections) refused at --zero 1
"${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --optim muon --zero 1 --stop-at 10 -o "$TMP/sr" 2>"$TMP/err" &&
"${MPIRUN[@]}" -np 4 "$LMC" train --data "$TMP/data" --threads 1 --zero 1 --optim muon --resume latest \
  -o "$TMP/sr" 2>"$TMP/err"
ok $? "muon world 4 zero 1 stop + resume: $(tail -n 3 "$TMP/err")"
bitexact sr smuon; ok $? "muon world 4 zero 1 resumed = uninterrupted, bit for bit"
# the newest two steps' shards kept (10 and 20, 4 ranks each)
[ "$(ls "$TMP/sr/zero" | grep -c '^optim-step000000[12]0-rank0000[0-3]\.safetensors$')" = 8 ] &&
  [ "$(ls "$TMP/sr/zero" | grep -c '^optim-')" = 8 ]
ok $? "sharded optimizer files: $(ls "$TMP/sr/zero" | grep -c '^optim-') (expected the 8 of steps 10 and 20)"
# resumed again to step 30: step 10's shards go (the first save after a resume removes the older ones)
"${MPIRUN[@]}" -np 4 "$LMC" train --data "$TMP/data" --threads 1 --zero 1 --optim muon --steps 30 --resume latest \
  -o "$TMP/sr" 2>"$TMP/err"
ok $? "muon world 4 zero 1 resumed to 30: $(tail -n 3 "$TMP/err")"
[ "$(ls "$TMP/sr/zero" | grep -c '^optim-step000000[23]0-rank0000[0-3]\.safetensors$')" = 8 ] &&
  [ "$(ls "$TMP/sr/zero" | grep -c '^optim-')" = 8 ]
ok $? "sharded optimizer files after a second resume: $(ls "$TMP/sr/zero" | grep '^optim-' | tr '\n' ' ')"
# another world reshards (each state tensor from whichever rank's file holds it): 4 ranks stop at 10,
# then 2 ranks (--zero 1), or one process, go on; a whole state (one process, stopped at 10) resumed
# by 4 ranks at --zero 1 (each takes its tensors' state); all = the one-process run
"${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --optim muon --zero 1 --stop-at 10 -o "$TMP/r2" 2>"$TMP/err" &&
  cp -r "$TMP/r2" "$TMP/r1" &&
  "${MPIRUN[@]}" -np 2 "$LMC" train --data "$TMP/data" --threads 1 --batch 2 --zero 1 --optim muon --eval-every 10 \
    --eval-batches 2 --resume latest -o "$TMP/r2" 2>"$TMP/err"
ok $? "muon world 4 -> 2 zero 1 resume: $(tail -n 3 "$TMP/err")"
compare r2 refmuon; ok $? "muon world 4 -> 2 zero 1 resumed (resharded) equals the one-process run"
"$LMC" train --data "$TMP/data" --threads 1 --batch 4 --optim muon --eval-every 10 --eval-batches 2 --resume latest \
  -o "$TMP/r1" 2>"$TMP/err"
ok $? "muon world 4 zero 1 -> one process resume: $(tail -n 3 "$TMP/err")"
compare r1 refmuon; ok $? "muon world 4 zero 1 -> one process resumed equals the one-process run"
"$LMC" train $A --batch 4 --optim muon --stop-at 10 -o "$TMP/r4" 2>"$TMP/err" &&
  "${MPIRUN[@]}" -np 4 "$LMC" train --data "$TMP/data" --threads 1 --batch 1 --zero 1 --optim muon --eval-every 10 \
    --eval-batches 2 --resume latest -o "$TMP/r4" 2>"$TMP/err"
ok $? "muon one process -> world 4 zero 1 resume: $(tail -n 3 "$TMP/err")"
compare r4 refmuon; ok $? "muon one process -> world 4 zero 1 resumed equals the one-process run"
"${MPIRUN[@]}" -np 2 "$LMC" train --data "$TMP/data" --threads 1 --batch 2 --zero 1 --optim galore --resume latest \
  -o "$TMP/sr" 2>"$TMP/err"
[ $? -ne 0 ] && grep -q "resume it with --optim muon" "$TMP/err"
ok $? "sharded muon resumed as galore refused: $(grep -m1 sharded "$TMP/err")"
"${MPIRUN[@]}" -np 2 "$LMC" train $A --batch 2 --optim apollo --zero 1 -o "$TMP/bad" 2>"$TMP/err"
[ $? -ne 0 ] && grep -q "APOLLO" "$TMP/err"; ok $? "--optim apollo --zero 1 refused: $(grep -m1 APOLLO "$TMP/err")"
echo "test_train_zero_optim: $pass passed, $fail failed"
[ $fail = 0 ]
