#!/usr/bin/env bash
# test_finetune_zero_full.sh — `lmc finetune --full --zero 1|2|3` under
# mpirun (the model's parameters, gradients and AdamW moments sharded):
# the runs of finetune_zero_common.sh (world 2 and 4 against one process
# with the same global batch: losses <= 1e-6 relative, the model <= 1e-6
# of max |w|, measured 4.2e-8 and 3.3e-7; stop at 10 + resume bit for bit;
# an older step resharded to one process), then OUT's optimizer.safetensors
# = one process's (the moments gathered whole, <= 1e-6), `lmc
# convert-checkpoint OUT.ckpt/zero --step 10` = the step-10 folder's model
# bit for bit (no manifest copied; an unsaved step refused), and --zero 3
# in one process = the plain one-process run bit for bit.
# Skipped without mpirun (or an lmc built without MPI).
# Usage: test_finetune_zero_full.sh PATH/TO/lmc
. "$(dirname "$0")/finetune_zero_common.sh"
finetune_zero_runs full
# lmc convert-checkpoint --step 10 of the --full world-2 ZeRO-3 run: its step-10 folder's tensors
"$LMC" convert-checkpoint "$TMP/w2z3-full.ckpt/zero" --step 10 -o "$TMP/conv" >"$TMP/t" 2>&1
ok $? "convert-checkpoint --step 10: $(tail -1 "$TMP/t")"
python3 - "$TMP/conv/model.safetensors" "$TMP/w2z3-full.ckpt/step_000010/model.safetensors" <<'PY'
import json, sys
def t(p):
    raw = open(p, "rb").read(); n = int.from_bytes(raw[:8], "little"); h = json.loads(raw[8:8 + n])
    return {k: raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()
            if k != "__metadata__" and not k.startswith("pad.")}
a, b = t(sys.argv[1]), t(sys.argv[2])
assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a), (sorted(a), sorted(b))
PY
ok $? "convert-checkpoint --step 10 = the step-10 folder's model, bit for bit"
ls "$TMP/conv" | grep -q zero-manifest; [ $? != 0 ]; ok $? "no zero manifest copied into the HF folder: $(ls "$TMP/conv")"
"$LMC" convert-checkpoint "$TMP/w2z3-full.ckpt/zero" --step 7 -o "$TMP/conv7" >"$TMP/t" 2>&1
[ $? != 0 ] && grep -q "no sharded state of step 7" "$TMP/t"; ok $? "convert-checkpoint --step 7 refused: $(tail -1 "$TMP/t")"
# --full's OUT: the moments whole, as one process writes them
python3 - "$TMP/one4-full/optimizer.safetensors" "$TMP/w4z3-full/optimizer.safetensors" <<'PY'
import json, struct, sys
def t(p):
    raw = open(p, "rb").read(); n = int.from_bytes(raw[:8], "little"); h = json.loads(raw[8:8 + n])
    return {k: struct.unpack(f"<{(v['data_offsets'][1] - v['data_offsets'][0]) // 4}f",
                             raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items() if k != "__metadata__"}
a, b = t(sys.argv[1]), t(sys.argv[2])
assert sorted(a) == sorted(b) == ["adamw.m", "adamw.v"], (sorted(a), sorted(b))
for k in a:
    s = max(abs(x) for x in a[k]); d = max(abs(x - y) for x, y in zip(a[k], b[k])) / s
    print(f"{k}: max |diff| / max {d:.2e}"); assert d <= 1e-6
PY
ok $? "--full world 4 zero 3: OUT's optimizer.safetensors = one process's"
# world 1: --zero 3 in one process = the plain one-process run, bit for bit
"$LMC" finetune $C --full -o "$TMP/w1z3" --batch 2 --accum 2 --zero 3 >"$TMP/t" 2>&1; ok $? "world 1 zero 3: $(tail -2 "$TMP/t")"
cmp -s "$TMP/w1z3/model.safetensors" "$TMP/one2-full/model.safetensors" &&
  diff <(sed 's/, "tokens_per_s": [0-9.e+-]*//' "$TMP/w1z3.metrics.jsonl") \
       <(sed 's/, "tokens_per_s": [0-9.e+-]*//' "$TMP/one2-full.metrics.jsonl") >/dev/null
ok $? "--full world 1 zero 3 = one process, bit for bit"
echo "test_finetune_zero_full: $pass passed, $fail failed"
[ $fail = 0 ]
