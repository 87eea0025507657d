#!/usr/bin/env bash
# test_distill_cli.sh — `lmc train --distill-from` end to end on a tiny
# corpus: a teacher trained first; a smaller student (another shape) then
# distilled from it with alpha 1 and T 2: its KL to the teacher falls and
# the metrics carry ce / distill_kl / distill_agree; alpha 0 is plain
# training bit for bit (the same checkpoint bytes and losses); a model as
# its own teacher has KL 0 and agreement 1; a GPT-2 teacher (learned
# positions) distils a Llama student; bad inputs (missing folder,
# another vocabulary, alpha out of range, the settings without
# --distill-from, ranks) fail with clear errors. Usage: test_distill_cli.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"

cli_tiny_data "$LMC"

COMMON="--data $TMP/data --batch 4 --seq 32 --threads 2 --seed 7"
"$LMC" train $COMMON --arch llama --layers 2 --hidden 64 --heads 4 --kv-heads 2 --steps 40 --lr 3e-3 --warmup 4 \
  -o "$TMP/teacher" 2>"$TMP/err"
ok $? "train the teacher: $(cat "$TMP/err")"
TEACH="$TMP/teacher/step_000040"
STUDENT="--arch llama --layers 1 --hidden 32 --heads 2 --kv-heads 1"

# distillation: the KL to the teacher falls; metrics carry the new fields; validation is plain CE
"$LMC" train $COMMON $STUDENT --steps 30 --lr 5e-3 --warmup 2 --eval-every 30 --eval-batches 2 \
  --distill-from "$TEACH" --distill-temp 2 -o "$TMP/kd" 2>"$TMP/err"
ok $? "distil: $(cat "$TMP/err")"
grep -q "distilling from $TEACH" "$TMP/err"; ok $? "logs the teacher"
python3 - "$TMP/kd/metrics.jsonl" <<'PY'
import json, sys, math
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 30
for r in rows:
    for k in ("loss", "ce", "distill_kl", "distill_agree"): assert math.isfinite(r[k]), (k, r)
    assert 0 <= r["distill_agree"] <= 1
    assert abs(r["loss"] - 4 * r["distill_kl"]) < 1e-4 * max(1, r["loss"]), r  # alpha 1, T 2: T^2 KL
first = sum(r["distill_kl"] for r in rows[:3]) / 3; last = sum(r["distill_kl"] for r in rows[-3:]) / 3
assert last < 0.6 * first, (first, last)
assert rows[-1]["distill_agree"] > rows[0]["distill_agree"], (rows[0], rows[-1])
assert "val_loss" in rows[-1] and math.isfinite(rows[-1]["val_loss"])
PY
ok $? "KL falls, agreement rises, metrics fields"

# alpha 0: plain training bit for bit (the teacher only measured)
"$LMC" train $COMMON $STUDENT --steps 3 --lr 5e-3 -o "$TMP/plain" 2>"$TMP/err"
ok $? "plain student: $(cat "$TMP/err")"
"$LMC" train $COMMON $STUDENT --steps 3 --lr 5e-3 --distill-from "$TEACH" --distill-alpha 0 -o "$TMP/a0" 2>"$TMP/err"
ok $? "alpha 0: $(cat "$TMP/err")"
cmp -s "$TMP/plain/step_000003/model.safetensors" "$TMP/a0/step_000003/model.safetensors"
ok $? "alpha 0 equals plain training bit for bit"
python3 - "$TMP/plain/metrics.jsonl" "$TMP/a0/metrics.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]; b = [json.loads(l) for l in open(sys.argv[2])]
assert [r["loss"] for r in a] == [r["loss"] for r in b], (a, b)
assert all(abs(r["ce"] - r["loss"]) < 1e-5 * r["loss"] for r in b), b  # soft_xent's CE: the same to rounding
assert all(r["distill_kl"] > 0 for r in b)
PY
ok $? "alpha 0: the same losses, the KL measured"

# a model as its own teacher: KL 0, agreement 1 (a few checkpoint steps on with a tiny lr)
"$LMC" train --data "$TMP/data" --batch 4 --seq 32 --threads 2 -m "$TEACH" --steps 1 --lr 1e-9 --distill-from "$TEACH" \
  -o "$TMP/self" 2>"$TMP/err"
ok $? "self-distillation: $(cat "$TMP/err")"
python3 - "$TMP/self/metrics.jsonl" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).readline())
assert abs(r["distill_kl"]) < 1e-5 and r["distill_agree"] == 1, r
PY
ok $? "its own teacher: KL 0, agreement 1"

# another architecture as the teacher (GPT-2: learned positions, layernorm)
"$LMC" train $COMMON --arch gpt2 --layers 1 --hidden 32 --heads 2 --steps 2 --max-pos 64 -o "$TMP/g2" 2>"$TMP/err"
ok $? "gpt2 teacher: $(cat "$TMP/err")"
"$LMC" train $COMMON $STUDENT --steps 2 --distill-from "$TMP/g2/step_000002" --distill-alpha 0.5 -o "$TMP/kd2" 2>"$TMP/err"
ok $? "distil from gpt2: $(cat "$TMP/err")"
grep -q '"distill_kl"' "$TMP/kd2/metrics.jsonl"; ok $? "gpt2 teacher metrics"

# bad inputs
"$LMC" train $COMMON $STUDENT --steps 1 --distill-from "$TMP/nope" -o "$TMP/bad1" 2>"$TMP/err"
rc=$?; [ $rc != 0 ] && grep -q -- "--distill-from $TMP/nope" "$TMP/err"; ok $? "missing teacher folder: rc $rc $(cat "$TMP/err")"
"$LMC" train $COMMON $STUDENT --steps 1 --distill-from tests/fixtures/llama-tiny -o "$TMP/bad2" 2>"$TMP/err"
rc=$?; [ $rc = 2 ] && grep -q "vocabulary (512 tokens) differs from the student's (300)" "$TMP/err"
ok $? "vocabulary mismatch: rc $rc $(cat "$TMP/err")"
"$LMC" train $COMMON $STUDENT --steps 1 --distill-from "$TEACH" --distill-alpha 1.5 -o "$TMP/bad3" 2>"$TMP/err"
rc=$?; [ $rc = 2 ] && grep -q "bad value '1.5' for --distill-alpha" "$TMP/err"; ok $? "alpha 1.5: rc $rc $(cat "$TMP/err")"
"$LMC" train $COMMON $STUDENT --steps 1 --distill-temp 2 -o "$TMP/bad4" 2>"$TMP/err"
rc=$?; [ $rc = 2 ] && grep -q "go with --distill-from" "$TMP/err"; ok $? "--distill-temp alone: rc $rc $(cat "$TMP/err")"
"$LMC" train $COMMON $STUDENT --steps 1 --zero 0 --distill-from "$TEACH" -o "$TMP/bad5" 2>"$TMP/err"
rc=$?; [ $rc = 2 ] && grep -q "distill-from runs in one process" "$TMP/err"; ok $? "with --zero: rc $rc $(cat "$TMP/err")"

echo "test_distill_cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
