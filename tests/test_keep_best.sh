#!/usr/bin/env bash
# test_keep_best.sh — `--keep-best` and `--patience N` of lmc train
# (tools/cmd_train.c; the speculative pair's target recipe,
# scripts/train_spec_pair.sh, keeps its best checkpoint by them): a tiny
# llama at a learning rate high enough that its validation loss first
# falls and then rises, evaluated every step with every checkpoint kept:
#  - OUT/best holds the checkpoint of the step with the lowest val_loss in
#    metrics.jsonl (its model and optimizer equal that step's folder bit
#    for bit), and that step's metrics line alone says "val_best";
#  - --patience 3 stops the same run 3 evaluations after that step (the
#    lines up to it equal the full run's), "early stop" on stderr, and its
#    OUT/best equals the full run's;
#  - without --eval-every, or with --zero, both flags are refused (exit 2).
# Usage: test_keep_best.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
mp_data
A="--data $TMP/data --arch llama --layers 2 --hidden 32 --heads 4 --kv-heads 2 --intermediate 48 --seq 16 --batch 4
   --steps 40 --lr 0.05 --schedule constant --warmup 0 --clip 0 --threads 1 --eval-every 1 --eval-batches 2"
"$LMC" train $A --save-every 1 --keep-best -o "$TMP/full" 2>"$TMP/err"; ok $? "--keep-best: $(tail -2 "$TMP/err")"
# the step of the lowest val_loss (the first on ties), and the steps marked best
read -r best last nbest < <(python3 - "$TMP/full/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
v = [(r["val_loss"], r["step"]) for r in rows if "val_loss" in r]
b = min(v)  # (loss, step): the first step on ties
marked = [r["step"] for r in rows if r.get("val_best")]
print(b[1], v[-1][1], len(marked) if marked[-1] == b[1] else -1)
PY
)
echo "lowest val_loss at step $best of $last; $nbest improvements marked"
[ "${best:-0}" -gt 1 ] && [ "${best:-0}" -lt $((last - 3)) ] && [ "${nbest:--1}" -gt 0 ]
ok $? "the validation loss should fall, then rise: best step ${best:-?} of ${last:-?}, marked ${nbest:-?}"
ck=$(printf "%s/full/step_%06d" "$TMP" "${best:-0}")
cmp -s "$TMP/full/best/model.safetensors" "$ck/model.safetensors" &&
  cmp -s "$TMP/full/best/optimizer.safetensors" "$ck/optimizer.safetensors"
ok $? "OUT/best equals $ck"
grep -q "best checkpoint $TMP/full/best (step $best," "$TMP/err"; ok $? "the best checkpoint's line for step $best"
# --patience 3: the same run stopped 3 evaluations after the best
"$LMC" train $A --keep-best --patience 3 -o "$TMP/pat" 2>"$TMP/err"; ok $? "--patience 3: $(tail -2 "$TMP/err")"
grep -q "early stop at step $((best + 3)): no lower validation loss in 3 evaluations" "$TMP/err"
ok $? "early stop 3 after step $best: $(grep 'early stop' "$TMP/err")"
[ "$(wc -l <"$TMP/pat/metrics.jsonl")" = $((best + 3)) ]; ok $? "$((best + 3)) metrics lines: $(wc -l <"$TMP/pat/metrics.jsonl")"
cmp -s "$TMP/pat/best/model.safetensors" "$TMP/full/best/model.safetensors"; ok $? "--patience run's best equals the full run's"
ls -d "$TMP/pat"/step_* >/dev/null 2>&1; [ $? != 0 ]; ok $? "no step_* folder without --save-every: $(ls "$TMP/pat")"
# refused
"$LMC" train ${A/--eval-every 1/} --keep-best -o "$TMP/x" >/dev/null 2>&1; [ $? = 2 ]; ok $? "--keep-best without --eval-every exits 2"
"$LMC" train ${A/--eval-every 1/} --patience 2 -o "$TMP/x" >/dev/null 2>&1; [ $? = 2 ]; ok $? "--patience without --eval-every exits 2"
"$LMC" train $A --keep-best --zero 1 -o "$TMP/x" >/dev/null 2>&1; [ $? = 2 ]; ok $? "--keep-best --zero 1 exits 2"
echo "test_keep_best: $pass passed, $fail failed"
[ "$fail" = 0 ]
