#!/usr/bin/env bash
# test_mp_train_sp.sh — sequence parallelism under tensor parallelism
# (`lmc train/finetune --tp T --sp`, model/block.h lmc_sp): the residual
# stream and the blocks' norms of a TP rank hold its slice of each
# micro-batch's tokens, the normed inputs of the column-parallel linears
# all-gathered, the row-parallel outputs reduce-scattered. On ranks started
# with torchrun-style variables (tcp, a port from the OS; mp_launch.sh):
# the 2-layer llama of test_mp_train (4 heads, 2 KV heads, MLP 96; 10
# steps, accumulation 2, clipping, warmup + cosine) at TP 2 --sp, TP 4 --sp
# (KV heads replicated), TP 2 --sp --recompute (bit for bit TP 2 --sp) and
# DP 2 x TP 2 --sp against TP 2 without --sp and
# the one-process run (and DP 2 x TP 2 --sp --zero 1, which also resumes
# bit for bit): losses, validation losses, final weights and AdamW's
# v within test_mp_train's bounds (DP 2 x TP 2 --sp also under mpirun when
# lmc has MPI); TP 2 --sp stopped at step 5 and resumed
# equals the uninterrupted run bit for bit; the memory account's saved
# activations (per layer and the residual stream) are smaller with --sp;
# `finetune --full --tp 2 --sp` on llama-tiny and qwen2-tiny (also
# --tp-vocab) against the one-process runs; the refusals (--sp without
# --tp, with --zero 2, LoRA, --pack, a token count --tp does not
# divide).
# Usage: test_mp_train_sp.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
mp_data
A="--data $TMP/data --arch llama --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96 --seq 16
   --steps 10 --lr 3e-3 --warmup 2 --clip 0.5 --accum 2 --threads 1 --save-every 5 --eval-every 5 --eval-batches 2"
run() { local W=$1 out=$2; shift 2; mp_ranks "$W" "$out" train "$@" -o "$TMP/$out"; }
"$LMC" train $A --batch 4 -o "$TMP/single" 2>"$TMP/err"; ok $? "single: $(cat "$TMP/err")"
run 2 tp2 $A --batch 4 --tp 2; ok $? "tp 2: $(tail -n 3 "$TMP"/tp2.r*)"
run 2 sp2 $A --batch 4 --tp 2 --sp; ok $? "tp 2 --sp: $(tail -n 3 "$TMP"/sp2.r*)"
run 4 sp4 $A --batch 4 --tp 4 --sp; ok $? "tp 4 --sp: $(tail -n 3 "$TMP"/sp4.r*)"
run 2 rc2 $A --batch 4 --tp 2 --sp --recompute; ok $? "tp 2 --sp --recompute: $(tail -n 3 "$TMP"/rc2.r*)"
cmp -s "$TMP/rc2/step_000010/model.safetensors" "$TMP/sp2/step_000010/model.safetensors"
ok $? "tp 2 --sp --recompute equals tp 2 --sp bit for bit"
run 4 dpsp $A --batch 2 --tp 2 --sp; ok $? "dp 2 x tp 2 --sp: $(tail -n 3 "$TMP"/dpsp.r*)"
grep -q "tensor parallel 2 x data parallel 2 (4 ranks)" "$TMP/dpsp.r0"; ok $? "dp 2 x tp 2 --sp start-up line"
run 4 z1 $A --batch 2 --tp 2 --sp --zero 1; ok $? "dp 2 x tp 2 --sp --zero 1: $(tail -n 3 "$TMP"/z1.r*)"
run 4 z1rs $A --batch 2 --tp 2 --sp --zero 1 --stop-at 5; ok $? "dp 2 x tp 2 --sp --zero 1 stop at 5: $(tail -n 3 "$TMP"/z1rs.r*)"
run 2 rs $A --batch 4 --tp 2 --sp --stop-at 5; ok $? "tp 2 --sp stop at 5: $(tail -n 3 "$TMP"/rs.r*)"
R="--data $TMP/data --threads 1 --resume latest --save-every 5 --eval-every 5 --eval-batches 2"
run 2 rs $R --tp 2 --sp; ok $? "tp 2 --sp resume: $(tail -n 3 "$TMP"/rs.r*)"
cmp -s "$TMP/rs/step_000010/model.safetensors" "$TMP/sp2/step_000010/model.safetensors" &&
  cmp -s "$TMP/rs/step_000010/optimizer.safetensors" "$TMP/sp2/step_000010/optimizer.safetensors"
ok $? "tp 2 --sp stopped at 5 and resumed equals the uninterrupted run bit for bit"
run 4 z1rs $R --tp 2 --sp --zero 1; ok $? "dp 2 x tp 2 --sp --zero 1 resume: $(tail -n 3 "$TMP"/z1rs.r*)"
cmp -s "$TMP/z1rs/step_000010/model.safetensors" "$TMP/z1/step_000010/model.safetensors" &&
  cmp -s "$TMP/z1rs/step_000010/optimizer.safetensors" "$TMP/z1/step_000010/optimizer.safetensors"
ok $? "dp 2 x tp 2 --sp --zero 1 stopped at 5 and resumed equals the uninterrupted run bit for bit"
# DP 2 x TP 2 --sp under mpirun too (sub-communicators over the MPI transport), when lmc has MPI
CASES="sp2:single sp4:single rc2:single dpsp:single z1:single rs:single sp2:tp2"
if [ $HAVE_MPIRUN = 1 ]; then
  timeout 300 "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 2 --tp 2 --sp -o "$TMP/mpi" 2>"$TMP/mpi.err"
  rc=$?
  if mp_no_mpi "$TMP/mpi.err"; then echo "test_mp_train_sp: mpirun part skipped (lmc built without MPI)"
  else ok $rc "mpirun dp 2 x tp 2 --sp: $(tail -n 3 "$TMP/mpi.err")"; CASES="$CASES mpi:single"; fi
fi
# test_mp_train's bounds for TP (the reduce-scatter and the norms' weight
# gradients sum in another order than TP's all-reduce and one process)
python3 tests/mp_compare.py --root "$TMP" $CASES --steps 10 --keys --loss 1e-6 --val 1e-6 --norm 1e-6 --max 1e-5 \
  --adamw-v 1e-5
ok $? "tp 2 / tp 4 / dp 2 x tp 2 --sp and the resumed run equal the one-process and the tp 2 runs"
# the memory account: saved activations per layer and the residual stream smaller with --sp
M="--data $TMP/data --arch llama --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96 --seq 256
   --batch 4 --steps 1 --threads 1"
run 2 mtp $M --tp 2; ok $? "memory tp 2: $(tail -n 3 "$TMP"/mtp.r*)"
run 2 msp $M --tp 2 --sp; ok $? "memory tp 2 --sp: $(tail -n 3 "$TMP"/msp.r*)"
acts() { sed -n 's/.*activations \([0-9.]*\) (\([0-9.]*\) per layer x [0-9]* held, residual stream \([0-9.]*\),.*/\1 \2 \3/p' "$1"; }
read -r a0 l0 r0 <<<"$(acts "$TMP/mtp.r0")"; read -r a1 l1 r1 <<<"$(acts "$TMP/msp.r0")"
echo "test_mp_train_sp: activations MiB (total, per layer, residual stream): tp 2 $a0 $l0 $r0, tp 2 --sp $a1 $l1 $r1"
python3 -c "import sys; sys.exit(not (float('$l1') < float('$l0') and float('$r1') < float('$r0') and
                                     float('$r1') > 0 and float('$a1') < float('$a0')))"
ok $? "--sp holds fewer saved activations per layer ($l1 < $l0 MiB), a smaller residual stream ($r1 < $r0 MiB) and
       fewer activations in all ($a1 < $a0 MiB, the gathered buffers counted)"
# refusals
"$LMC" train $A --batch 4 --sp -o "$TMP/no" 2>"$TMP/err"; [ $? = 2 ] && grep -q "give --tp N" "$TMP/err"
ok $? "--sp without --tp refused: $(cat "$TMP/err")"
run 2 bad2 $A --batch 1 --seq 15 --tp 2 --sp; [ $? != 0 ] && grep -q "do not split evenly" "$TMP/bad2.r0"
ok $? "--sp with 15 tokens over 2 ranks refused: $(tail -n 2 "$TMP/bad2.r0")"
run 4 bad3 $A --batch 2 --tp 2 --sp --zero 2; [ $? != 0 ] && grep -q "without --cp, --pp, --ep, --zero 2-3" "$TMP/bad3.r0"
ok $? "--sp --zero 2 refused: $(tail -n 2 "$TMP/bad3.r0")"
# finetune --full --tp 2 --sp: llama-tiny, qwen2-tiny (one KV head, tied), qwen2-tiny with --tp-vocab
for i in $(seq 1 23); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want $i\"}"
done >"$TMP/d.jsonl"
C="--data $TMP/d.jsonl --seq 32 --lr 1e-2 --threads 1 --schedule cosine --warmup 2 --steps 8 --clip 0.5 --batch 2 --accum 2"
frun() { local W=$1 out=$2 fix=$3; shift 3; mp_ranks "$W" "$out" finetune -m "$fix" $C "$@" -o "$TMP/$out"; }
L=tests/fixtures/llama-tiny Q=tests/fixtures/qwen2-tiny
"$LMC" finetune -m $L $C --full -o "$TMP/fone" 2>"$TMP/err"; ok $? "finetune one process: $(tail -2 "$TMP/err")"
"$LMC" finetune -m $Q $C --full -o "$TMP/qone" 2>"$TMP/err"; ok $? "qwen2 finetune one process: $(tail -2 "$TMP/err")"
frun 2 fsp $L --full --tp 2 --sp; ok $? "finetune tp 2 --sp: $(tail -n 3 "$TMP"/fsp.r*)"
frun 2 qsp $Q --full --tp 2 --sp; ok $? "qwen2 finetune tp 2 --sp: $(tail -n 3 "$TMP"/qsp.r*)"
frun 2 qvsp $Q --full --tp 2 --sp --tp-vocab; ok $? "qwen2 finetune tp 2 --sp --tp-vocab: $(tail -n 3 "$TMP"/qvsp.r*)"
frun 2 flora $L --tp 2 --sp; [ $? = 2 ] && grep -q "and with --full" "$TMP/flora.r0"
ok $? "finetune LoRA --sp refused: $(tail -n 2 "$TMP/flora.r0")"
frun 2 fpack $L --full --tp 2 --sp --pack; [ $? != 0 ] && grep -q "with packed sequences (--pack)" "$TMP/fpack.r0"
ok $? "finetune --sp --pack refused: $(tail -n 2 "$TMP/fpack.r0")"
# test_mp_finetune's bounds (qwen2-tiny's tied embedding: AdamW magnifies the rounding)
CMP="--root $TMP --layout finetune --rows 8 --ref-rows 8 --keys"
python3 tests/mp_compare.py $CMP fsp:fone --loss 1e-6 --norm 1e-5
rc=$?
python3 tests/mp_compare.py $CMP qsp:qone qvsp:qone --loss 1e-5 --norm 1e-4 || rc=1
[ $rc = 0 ]
ok $? "finetune --full --tp 2 --sp equals the one-process runs"
echo "test_mp_train_sp: $pass passed, $fail failed"
[ "$fail" = 0 ]
