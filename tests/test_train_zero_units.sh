#!/usr/bin/env bash
# test_train_zero_units.sh — data-parallel `lmc train` with one ZeRO unit per
# model part (trainer_dist.c: stage 2 reduce-scatters each layer's gradient
# after its backward, stage 3 gathers each layer's parameters before use):
# 20 steps (accumulation 2, clipping, validation) at world 1 (`--zero S` in
# one process) and world 4 (mpirun -np 4) for ZeRO 0-3, and a tied-head
# GPT-2 (transposed Conv1D tensors, learned positions) and a tied llama at
# world 2 for ZeRO 2 and 3, each against the one-process run with the same
# global batch: losses, validation losses and final parameters <= 1e-6
# relative (GPT-2's parameters 1e-5, and ZeRO 2 and 3 = ZeRO 0 bit for
# bit: see below); stop at step 10 + resume equals the uninterrupted run bit for
# bit at world 4 (ZeRO 2) and world 1 (ZeRO 3); a world-4 ZeRO-3 checkpoint
# resumed by 2 ranks (resharded) = the one-process run; `-m DIR` (each rank
# reads only its shard of the folder) at world 1 and 4 = the one-process run
# from it; `--bucket-mb` (units of several parts) at world 4 for ZeRO 1-3 and
# a tied llama at world 2, and its checkpoint resumed unbucketed on 2 ranks,
# = the one-process run (the other optimizers: test_train_zero_optim.sh).
# The mpirun part is skipped when mpirun is missing or lmc was built
# without MPI.
# Usage: test_train_zero_units.sh PATH/TO/lmc
. "$(dirname "$0")/zero_train_common.sh"
"$LMC" train $A --batch 4 -o "$TMP/ref" 2>"$TMP/err"; ok $? "one process: $(tail -n 3 "$TMP/err")"
for z in 0 1 2 3; do # world 1: the zero module in one process
  "$LMC" train $A --batch 4 --zero $z -o "$TMP/w1z$z" 2>"$TMP/err"; ok $? "world 1 zero $z: $(tail -n 3 "$TMP/err")"
  compare "w1z$z" ref; ok $? "world 1 zero $z equals the one-process run"
done
"$LMC" train $A --batch 4 --zero 3 --stop-at 10 -o "$TMP/w1r" 2>"$TMP/err" &&
"$LMC" train --data "$TMP/data" --threads 1 --batch 4 --zero 3 --resume latest -o "$TMP/w1r" 2>"$TMP/err"
ok $? "world 1 zero 3 stop + resume: $(tail -n 3 "$TMP/err")"
bitexact w1r w1z3; ok $? "world 1 zero 3 resumed = uninterrupted, bit for bit"
if [ $have_mpi = 0 ]; then
  echo "test_train_zero_units: mpirun part skipped (no mpirun, or lmc built without MPI)"
else
  for z in 0 1 2 3; do
    "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --zero $z -o "$TMP/w4z$z" 2>"$TMP/err"
    ok $? "world 4 zero $z: $(tail -n 3 "$TMP/err")"
    compare "w4z$z" ref; ok $? "world 4 zero $z equals the one-process run"
  done
  "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --zero 2 --stop-at 10 -o "$TMP/w4r" 2>"$TMP/err" &&
  "${MPIRUN[@]}" -np 4 "$LMC" train --data "$TMP/data" --threads 1 --zero 2 --resume latest -o "$TMP/w4r" 2>"$TMP/err"
  ok $? "world 4 zero 2 stop + resume: $(tail -n 3 "$TMP/err")"
  bitexact w4r w4z2; ok $? "world 4 zero 2 resumed = uninterrupted, bit for bit"
  # another world resumes by resharding: 4 ranks stop at 10, 2 ranks (batch 2: the same global batch) go on
  "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --zero 3 --stop-at 10 -o "$TMP/w42" 2>"$TMP/err" &&
  "${MPIRUN[@]}" -np 2 "$LMC" train --data "$TMP/data" --threads 1 --batch 2 --zero 3 --eval-every 10 --eval-batches 2 \
    --resume latest -o "$TMP/w42" 2>"$TMP/err"
  ok $? "world 4 -> 2 zero 3 resume: $(tail -n 3 "$TMP/err")"
  compare w42 ref; ok $? "world 4 -> 2 zero 3 resumed equals the one-process run"
  # tied heads: part 0 serves the embedding and the classifier. GPT-2's
  # key bias has a zero gradient up to rounding (softmax ignores it):
  # AdamW turns the rounding of the 2-rank sum into updates, 3.3e-6 of
  # max |p| at ZeRO 0 as at 2 and 3; those equal ZeRO 0 bit for bit
  for m in G T; do
    "$LMC" train ${!m} --batch 4 -o "$TMP/ref$m" 2>"$TMP/err"; ok $? "$m one process: $(tail -n 3 "$TMP/err")"
    for z in 0 2 3; do
      "${MPIRUN[@]}" -np 2 "$LMC" train ${!m} --batch 2 --zero $z -o "$TMP/$m$z" 2>"$TMP/err"
      ok $? "$m world 2 zero $z: $(tail -n 3 "$TMP/err")"
    done
    compare "${m}0" "ref$m" $([ $m = G ] && echo 1e-5); ok $? "$m world 2 zero 0 equals the one-process run"
    for z in 2 3; do bitexact "$m$z" "${m}0"; ok $? "$m world 2 zero $z = zero 0 bit for bit"; done
  done
  # -m DIR: the ranks read only their shard from the folder (lmc_tmodel_src_dir; GPT-2's Conv1D
  # tensors transposed and cut by the parts), 3 steps against the one-process run from it
  for m in A G; do
    src=ref; [ $m = G ] && src=refG
    M="--data $TMP/data --seq 16 --steps 3 --lr 3e-3 --warmup 1 --threads 1 -m $TMP/$src/step_000020"
    "$LMC" train $M --batch 4 -o "$TMP/dir$m" 2>"$TMP/err"; ok $? "$m -m one process: $(tail -n 3 "$TMP/err")"
    "$LMC" train $M --batch 4 --zero 3 -o "$TMP/dir${m}w1" 2>"$TMP/err"; ok $? "$m -m world 1: $(tail -n 3 "$TMP/err")"
    "${MPIRUN[@]}" -np 4 "$LMC" train $M --batch 1 --zero 3 -o "$TMP/dir${m}w4" 2>"$TMP/err"
    ok $? "$m -m world 4 zero 3: $(tail -n 3 "$TMP/err")"
    python3 - "$TMP/dir$m" "$TMP/dir${m}w1" "$TMP/dir${m}w4" <<'PY'
import json, sys
ls = [[json.loads(l)["loss"] for l in open(f"{d}/metrics.jsonl")] for d in sys.argv[1:]]
assert len(ls[0]) == 3 and ls[1] == ls[0], ls
w = max(abs(a - b) / abs(b) for a, b in zip(ls[2], ls[0]))
print(f"{sys.argv[3].rsplit('/', 1)[1]}: losses max rel {w:.2e} (world 1: equal)")
sys.exit(0 if len(ls[2]) == 3 and w <= 1e-6 else 1)
PY
    ok $? "$m -m: world 1 zero 3 = one process bit for bit, world 4 within 1e-6"
  done
  # --bucket-mb: consecutive parts merged into one zero unit (a layer of the llama is 0.118 MiB, the
  # embedding 0.073: 0.15 gives units {embedding, layer 0}, {layers 1, 2}, {norm, head}; the tied
  # llama's 0.1 puts the embedding with layer 0), reduced and
  # gathered as one; a bucketed ZeRO-3 checkpoint resumed unbucketed by 2 ranks (regrouped)
  for z in 1 2 3; do
    "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --zero $z --bucket-mb 0.15 -o "$TMP/b4z$z" 2>"$TMP/err"
    ok $? "bucketed world 4 zero $z: $(tail -n 3 "$TMP/err")"
    grep -q "5 model parts in 3 units" "$TMP/err"; ok $? "bucketed world 4 zero $z: 3 units: $(grep buckets "$TMP/err")"
    compare "b4z$z" ref; ok $? "bucketed world 4 zero $z equals the one-process run"
  done
  "${MPIRUN[@]}" -np 2 "$LMC" train $T --batch 2 --zero 3 --bucket-mb 0.1 -o "$TMP/bT3" 2>"$TMP/err"
  ok $? "bucketed tied world 2 zero 3: $(tail -n 3 "$TMP/err")"
  compare bT3 refT; ok $? "bucketed tied world 2 zero 3 equals the one-process run"
  "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --zero 3 --bucket-mb 0.15 --stop-at 10 -o "$TMP/b42" 2>"$TMP/err" &&
  "${MPIRUN[@]}" -np 2 "$LMC" train --data "$TMP/data" --threads 1 --batch 2 --zero 3 --eval-every 10 --eval-batches 2 \
    --resume latest -o "$TMP/b42" 2>"$TMP/err"
  ok $? "bucketed world 4 -> unbucketed 2 zero 3 resume: $(tail -n 3 "$TMP/err")"
  compare b42 ref; ok $? "bucketed world 4 -> unbucketed 2 zero 3 resumed equals the one-process run"
fi
echo "test_train_zero_units: $pass passed, $fail failed"
[ $fail = 0 ]
