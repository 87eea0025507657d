#!/usr/bin/env bash
# test_mp_finetune_ep.sh — `lmc finetune --full --ep N` (train/trainer_ep.c
# with a batch source): the experts split over N ranks, each rank its own
# batches of every micro-step (as one process with N x --accum). On
# qwen3moe-tiny (8 experts) at EP 2 and EP 4 and mixtral-tiny (4 experts)
# at EP 2, also with packed sequences (--pack) (ranks over tcp, torchrun-style variables, a port from the OS):
# the losses, gradient norms and validation losses of 6 steps equal the
# one-process run within 1e-6 relative and the written model's weights
# within 1e-6 in relative norm (rank 0 writes one folder with every
# expert; lr 3e-3 as the train tests: at lr 1e-2 a clipped gradient spike
# at step 5 turns the summation-order rounding of the replicated gradient
# into 1.0e-6 at EP 2); an EP 2 run stopped at step 3 and resumed from its checkpoint
# writes the uninterrupted run's model bit for bit. LoRA (r 4 on every
# linear: attention and each expert's projections, an expert's adapter on
# its rank, rank 0 gathering the whole adapter) on qwen3moe-tiny at EP 2 and
# 4: losses within 1e-6, the adapter within 1e-6 in relative norm (also
# with LoRA dropout on attention adapters at EP 2: each rank's masks are
# drawn with its own batch, as one process draws them); its
# checkpoints are one-process ones (rank 0 gathers the adapters and their
# moments): stopped at 3 and resumed at EP 2 = uninterrupted bit for bit,
# and one process (--accum 4) resumes it and equals the one-process run.
# Refused: a world other than N.
# Usage: test_mp_finetune_ep.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
command -v python3 >/dev/null || { echo "test_mp_finetune_ep: skipped (python3 missing)"; exit 0; }
for i in $(seq 1 23); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want $i\"}"
done >"$TMP/d.jsonl"
C="--data $TMP/d.jsonl --seq 32 --lr 3e-3 --threads 1 --schedule cosine --warmup 2 --steps 6 --clip 0.5 --full
   --val-fraction 0.2 --eval-every 3 --save-every 3"
run() { # W OUT ARGS...: W ranks at a free port; rank r's stderr in OUT.r<r>
  local W=$1 out=$2; shift 2
  mp_ranks "$W" "$out" finetune $C "$@" -o "$TMP/$out"
}
Q="-m tests/fixtures/qwen3moe-tiny"
M="-m tests/fixtures/mixtral-tiny"
"$LMC" finetune $C $Q --batch 2 --accum 4 -o "$TMP/q1" 2>"$TMP/err"; ok $? "qwen3moe one process: $(tail -2 "$TMP/err")"
run 2 q2 $Q --batch 2 --accum 2 --ep 2; ok $? "qwen3moe --ep 2: $(tail -n 3 "$TMP"/q2.r*)"
run 4 q4 $Q --batch 2 --accum 1 --ep 4; ok $? "qwen3moe --ep 4: $(tail -n 3 "$TMP"/q4.r*)"
"$LMC" finetune $C $M --batch 2 --accum 2 -o "$TMP/m1" 2>"$TMP/err"; ok $? "mixtral one process: $(tail -2 "$TMP/err")"
run 2 m2 $M --batch 2 --accum 1 --ep 2; ok $? "mixtral --ep 2: $(tail -n 3 "$TMP"/m2.r*)"
# packed sequences (each rank its own batches' segments)
"$LMC" finetune $C $M --pack --batch 1 --accum 4 -o "$TMP/p1" 2>"$TMP/err"; ok $? "mixtral packed one process: $(tail -2 "$TMP/err")"
run 2 p2 $M --pack --batch 1 --accum 2 --ep 2; ok $? "mixtral packed --ep 2: $(tail -n 3 "$TMP"/p2.r*)"
# LoRA on every linear (attention and each expert's projections; the experts' adapters live on their ranks)
L="${C/--full/}"; L="${L/--save-every 3/} --lora-r 4"
"$LMC" finetune $L $Q --batch 2 --accum 4 -o "$TMP/l1" 2>"$TMP/err"; ok $? "qwen3moe LoRA one process: $(tail -2 "$TMP/err")"
C="$L" run 2 l2 $Q --batch 2 --accum 2 --ep 2; ok $? "qwen3moe LoRA --ep 2: $(tail -n 3 "$TMP"/l2.r*)"
C="$L" run 4 l4 $Q --batch 2 --accum 1 --ep 4; ok $? "qwen3moe LoRA --ep 4: $(tail -n 3 "$TMP"/l4.r*)"
# LoRA dropout (attention adapters: each rank's masks are its batches' draws, as one process's)
LD="$L --lora-dropout 0.1 --lora-targets q_proj,v_proj"
"$LMC" finetune $LD $Q --batch 2 --accum 4 -o "$TMP/ld1" 2>"$TMP/err"; ok $? "LoRA dropout one process: $(tail -2 "$TMP/err")"
C="$LD" run 2 ld2 $Q --batch 2 --accum 2 --ep 2; ok $? "LoRA dropout --ep 2: $(tail -n 3 "$TMP"/ld2.r*)"
# adapter checkpoints (one-process format): stopped at 3 and resumed at EP 2, and by one process
C="$L --save-every 3" run 2 lrs $Q --batch 2 --accum 2 --ep 2 --stop-at 3
ok $? "LoRA --ep 2 stop at 3: $(tail -n 3 "$TMP"/lrs.r*)"
cp "$TMP/lrs.metrics.jsonl" "$TMP/lrs1.metrics.jsonl"
C="$L --save-every 3" run 2 lrs $Q --batch 2 --accum 2 --ep 2 --resume "$TMP/lrs.ckpt/step_000003"
ok $? "LoRA --ep 2 resume: $(tail -n 3 "$TMP"/lrs.r*)"
cmp -s "$TMP/lrs/adapter_model.safetensors" "$TMP/l2/adapter_model.safetensors"
ok $? "LoRA --ep 2 stopped at 3 and resumed writes the uninterrupted run's adapter bit for bit"
"$LMC" finetune $L --save-every 3 $Q --batch 2 --accum 4 --resume "$TMP/lrs.ckpt/step_000003" -o "$TMP/lrs1" \
  --metrics "$TMP/lrs1.metrics.jsonl" 2>"$TMP/err"
ok $? "one-process resume of the EP adapter checkpoint: $(tail -2 "$TMP/err")"
grep -q "expert parallel x data parallel over 2 ranks, 4 batches of 2 x 32 per step; each rank holds 4 of the 8" \
  "$TMP/q2.r0"; ok $? "start-up line: $(grep parallel "$TMP/q2.r0")"
[ "$(grep -c '^step' "$TMP/q2.r1")" = 0 ]; ok $? "rank 1 logged steps"
# stopped at 3, resumed from the checkpoint
run 2 rs $Q --batch 2 --accum 2 --ep 2 --stop-at 3; ok $? "--ep 2 stop at 3: $(tail -n 3 "$TMP"/rs.r*)"
run 2 rs $Q --batch 2 --accum 2 --ep 2 --resume "$TMP/rs.ckpt/step_000003"
ok $? "--ep 2 resume: $(tail -n 3 "$TMP"/rs.r*)"
cmp -s "$TMP/rs/model.safetensors" "$TMP/q2/model.safetensors"
ok $? "--ep 2 stopped at 3 and resumed writes the uninterrupted run's model bit for bit"
CMP="--root $TMP --layout finetune --steps 6 --keys --loss 1e-6 --grad-norm 1e-5 --val 1e-6 --val-count 2 --norm 1e-6"
python3 tests/mp_compare.py $CMP q2:q1 q4:q1 rs:q1 m2:m1 p2:p1 --ref-key .experts.3.
rc=$?
python3 tests/mp_compare.py $CMP l2:l1 l4:l1 lrs:l1 lrs1:l1 --file adapter_model.safetensors --ref-key .experts.3. || rc=1
python3 tests/mp_compare.py $CMP ld2:ld1 --file adapter_model.safetensors || rc=1
[ $rc = 0 ]
ok $? "EP 2 / EP 4 fine-tuning equals the one-process run (1e-6)"
"$LMC" finetune $C $Q --batch 2 --ep 2 -o "$TMP/x" 2>"$TMP/err"
[ $? = 2 ] && grep -q "needs 2 ranks" "$TMP/err"; ok $? "--ep 2 on one rank: $(cat "$TMP/err")"
"$LMC" finetune $C $Q --batch 2 --ep 2 --tp 2 -o "$TMP/x" 2>"$TMP/err"
[ $? = 2 ] && grep -q "\-\-ep runs alone" "$TMP/err"; ok $? "--ep 2 --tp 2: $(cat "$TMP/err")"
echo "test_mp_finetune_ep: $pass passed, $fail failed"
[ $fail = 0 ]
