#!/usr/bin/env bash
# test_mp_train_optim.sh — `lmc train --tp T --optim adamw8bit|galore|apollo|
# apollo-mini` (train/trainer_tp.c whole_state: each rank keeps the whole
# optimizer state of every split matrix and steps the whole matrix gathered
# from the shards, so 8-bit blocks and GaLore's / APOLLO's projections are
# the one-process ones) on ranks joined by torchrun-style variables (tcp):
# 10 steps of a tiny llama (4 heads, 2 KV heads) at TP 2 and DP 2 x TP 2
# against one process with the same global batch: losses <= 1e-6 relative,
# final parameters <= 1e-5 in norm (and <= 1e-5 of max |p| element-wise;
# 8-bit AdamW, whose moment codes flip on the rounding of the row-parallel
# sums, <= 1e-3), the consolidated checkpoint's optimizer tensors the
# one-process ones (same names); a TP 2 GaLore run stopped at 5 and resumed
# = uninterrupted bit for bit, and one process resumes its checkpoint;
# `lmc finetune --full --tp 2 --optim apollo` = one process.
# Usage: test_mp_train_optim.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
mp_data
A="--data $TMP/data --arch llama --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96 --seq 16
   --steps 10 --lr 3e-3 --warmup 2 --clip 0.5 --accum 2 --threads 1 --save-every 5"
# run CMD W OUT ARGS...: W ranks meet at a free port (tried again if taken meanwhile); rank r's stderr in OUT.r<r>
run() { local cmd=$1 W=$2 out=$3; shift 3; mp_ranks "$W" "$out" $cmd "$@" -o "$TMP/$out"; }
# compare REF RUN PMAX [PNORM]: losses 1e-6, params PNORM (default 1e-5) in norm and PMAX of max |p|, the
# same optimizer tensor names
compare() {
  python3 tests/mp_compare.py --root "$TMP" "$2:$1" --rows 10 --ref-rows 10 --keys --loss 1e-6 --norm "${4:-1e-5}" \
    --max "$3" --optim-same
}
for o in adamw8bit galore apollo apollo-mini; do
  O="--optim $o"; [ $o = galore ] && O="$O --galore-rank 8 --galore-update-gap 2"
  # 8-bit AdamW: fp32 rounding differences between the layouts flip some moments' 8-bit codes, and a
  # flipped code moves its parameter by a quantization step (measured 1.4e-5 in norm, 1.5e-4 max)
  pmax=1e-5 pnorm=1e-5; [ $o = adamw8bit ] && pmax=1e-3 pnorm=1e-4
  "$LMC" train $A --batch 4 $O -o "$TMP/one-$o" 2>"$TMP/err"; ok $? "$o one process: $(tail -2 "$TMP/err")"
  run train 2 tp-$o $A --batch 4 --tp 2 $O; ok $? "$o tp 2: $(tail -n 3 "$TMP"/tp-$o.r*)"
  compare one-$o tp-$o $pmax $pnorm; ok $? "$o: tp 2 = one process"
  if [ $o = adamw8bit ] || [ $o = galore ]; then
    run train 4 dp-$o $A --batch 2 --tp 2 $O; ok $? "$o dp 2 x tp 2: $(tail -n 3 "$TMP"/dp-$o.r*)"
    compare one-$o dp-$o $pmax $pnorm; ok $? "$o: dp 2 x tp 2 = one process"
  fi
done
# GaLore at TP 2 stopped at 5, resumed (TP 2 and one process) from its consolidated checkpoint
O="--optim galore --galore-rank 8 --galore-update-gap 2"
run train 2 rs $A --batch 4 --tp 2 $O --stop-at 5; ok $? "galore tp 2 stop at 5: $(tail -n 3 "$TMP"/rs.r*)"
cp -r "$TMP/rs" "$TMP/rs1"
R="--data $TMP/data --threads 1 --resume latest --save-every 5"
run train 2 rs $R --tp 2; ok $? "galore tp 2 resume: $(tail -n 3 "$TMP"/rs.r*)"
cmp -s "$TMP/rs/step_000010/model.safetensors" "$TMP/tp-galore/step_000010/model.safetensors" &&
  cmp -s "$TMP/rs/step_000010/optimizer.safetensors" "$TMP/tp-galore/step_000010/optimizer.safetensors"
ok $? "galore tp 2 stopped at 5 and resumed = uninterrupted, bit for bit"
"$LMC" train $R -o "$TMP/rs1" 2>"$TMP/err"; ok $? "one-process resume of the tp 2 galore checkpoint: $(tail -2 "$TMP/err")"
compare one-galore rs1 1e-5; ok $? "galore: one process resuming the tp 2 checkpoint = one process"
# lmc finetune --full --tp 2 with APOLLO
FIX=tests/fixtures/llama-tiny
for i in $(seq 1 9); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want $i\"}"
done >"$TMP/d.jsonl"
F="-m $FIX --data $TMP/d.jsonl --seq 32 --lr 1e-3 --threads 1 --steps 6 --full --optim apollo --batch 2"
"$LMC" finetune $F -o "$TMP/ft1" 2>"$TMP/err"; ok $? "finetune apollo one process: $(tail -2 "$TMP/err")"
run finetune 2 ft2 $F --tp 2; ok $? "finetune apollo tp 2: $(tail -n 3 "$TMP"/ft2.r*)"
python3 tests/mp_compare.py --root "$TMP" --layout finetune ft2:ft1 --rows 6 --ref-rows 6 --keys --loss 1e-6 --norm 1e-5
ok $? "finetune --full --tp 2 --optim apollo = one process"
echo "test_mp_train_optim: $pass passed, $fail failed"
[ $fail = 0 ]
