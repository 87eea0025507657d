#!/usr/bin/env bash
# test_mp_finetune.sh — `lmc finetune --full --tp T` (train/trainer_tp.c)
# on llama-tiny (4 heads, 2 KV heads) with ranks started by torchrun-style
# variables (tcp, a port from the OS): TP 2, DP 2 x TP 2 (4 ranks, the
# global batch 4) and TP 2 with the vocabulary-parallel embedding/head
# (--tp-vocab; also on qwen2-tiny, whose embedding is tied to the head)
# give the one-process losses (1e-6 relative) and the consolidated model's
# weights (1e-6 relative in norm); rank 0 alone writes
# the output and metrics; LoRA with --tp-vocab is refused (LoRA with --tp:
# test_mp_lora_tp).
# Usage: test_mp_finetune.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
FIX=tests/fixtures/llama-tiny
for i in $(seq 1 23); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want $i\"}"
done >"$TMP/d.jsonl"
C="--data $TMP/d.jsonl --seq 32 --lr 1e-2 --threads 1 --schedule cosine --warmup 2 --steps 8 --clip 0.5 --full"
run() { local W=$1 out=$2; shift 2; mp_ranks "$W" "$out" finetune -m $FIX $C "$@" -o "$TMP/$out"; } # W OUT ARGS...
"$LMC" finetune -m $FIX $C --batch 2 --accum 2 -o "$TMP/one" 2>"$TMP/err"; ok $? "one process: $(tail -2 "$TMP/err")"
run 2 tp2 --batch 2 --accum 2 --tp 2; ok $? "tp 2: $(tail -n 3 "$TMP"/tp2.r*)"
grep -q "tensor parallel 2 x data parallel 1 (2 ranks), global batch 2 x 32 x 2 accum" "$TMP/tp2.r0"
ok $? "tp 2 start-up line: $(grep parallel "$TMP/tp2.r0")"
run 4 dp2tp2 --batch 2 --tp 2; ok $? "dp 2 x tp 2: $(tail -n 3 "$TMP"/dp2tp2.r*)"
run 2 vp2 --batch 2 --accum 2 --tp 2 --tp-vocab; ok $? "tp 2 vocabulary-parallel: $(tail -n 3 "$TMP"/vp2.r*)"
# qwen2-tiny: one KV head (replicated), q/k/v biases, the embedding tied to the head (split by vocabulary)
FIX=tests/fixtures/qwen2-tiny
"$LMC" finetune -m $FIX $C --batch 2 --accum 2 -o "$TMP/qone" 2>"$TMP/err"; ok $? "qwen2 one process: $(tail -2 "$TMP/err")"
run 2 qvp2 --batch 2 --accum 2 --tp 2 --tp-vocab; ok $? "qwen2 tp 2 vocabulary-parallel: $(tail -n 3 "$TMP"/qvp2.r*)"
run 2 qtp2 --batch 2 --accum 2 --tp 2; ok $? "qwen2 tp 2: $(tail -n 3 "$TMP"/qtp2.r*)"
[ "$(grep -c '^step 8/8' "$TMP/tp2.r1")" = 0 ] && [ "$(grep -c '^step 8/8' "$TMP/tp2.r0")" = 1 ]
ok $? "progress on rank 0 only"
# qwen2-tiny (tied embedding, lr 1e-2): AdamW magnifies the rounding of
# the row-parallel sums on its near-zero gradients (rows of tokens never
# seen) to ~2e-6 in norm with or without --tp-vocab (qtp2 is the control)
CMP="--root $TMP --layout finetune --rows 8 --ref-rows 8 --keys --loss 1e-6"
python3 tests/mp_compare.py $CMP --ref one tp2 dp2tp2 vp2 --norm 1e-6 --max 1e-5
rc=$?
# k_proj.bias (qwen2's attention biases) left out: its exact gradient is zero (a shift shared by every key's
# score leaves the softmax unchanged), so its computed gradient is rounding noise that AdamW turns into +-lr
# steps whatever the split; the other tensors measure the split's error
python3 tests/mp_compare.py $CMP --ref qone qvp2 qtp2 --norm 1e-5 --max 1e-4 --skip k_proj.bias --json "$TMP/q.json" || rc=1
# and the vocabulary split adds no error of its own: qvp2 within twice qtp2
python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); sys.exit(r["qvp2"]["norm"] > 2 * r["qtp2"]["norm"])' \
  "$TMP/q.json" || { echo "vocabulary parallel adds error: $(cat "$TMP/q.json")"; rc=1; }
[ $rc = 0 ]
ok $? "finetune tp 2, dp 2 x tp 2 and vocabulary-parallel tp 2 (llama, tied qwen2) equal one process"
# LoRA under --tp: tests/test_mp_lora_tp.sh; what it does not run yet is refused by name
"$LMC" finetune -m tests/fixtures/llama-tiny --data "$TMP/d.jsonl" --tp 2 --tp-vocab -o "$TMP/x" 2>"$TMP/err"
[ $? = 2 ] && grep -q "tp-vocab" "$TMP/err"; ok $? "LoRA with --tp --tp-vocab: $(cat "$TMP/err")"
echo "test_mp_finetune: $pass passed, $fail failed"
[ $fail = 0 ]
