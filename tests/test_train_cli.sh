#!/usr/bin/env bash
# test_train_cli.sh — `lmc train` end to end: train-tokenizer -> prepare-data
# -> train a tiny llama for a few steps with checkpoints and validation ->
# the checkpoint loads with `lmc generate` and `lmc eval`; resuming from the
# step-4 checkpoint gives the same losses as the uninterrupted run; --resume
# latest with the checkpoint's settings; bad resumes refused; bad
# options fail cleanly; mamba and mamba2 train from scratch and their
# checkpoints generate; --device cuda trains on a GPU machine and fails
# with a clear error elsewhere. Usage: test_train_cli.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"

cli_tiny_data "$LMC"

ARGS="--data $TMP/data --arch llama --layers 2 --hidden 64 --heads 4 --kv-heads 2 --batch 4 --seq 32
      --steps 8 --lr 3e-3 --warmup 2 --eval-every 4 --eval-batches 2 --save-every 4 --threads 2"
"$LMC" train $ARGS -o "$TMP/run" 2>"$TMP/err"
ok $? "train: $(cat "$TMP/err")"
grep -q "device cpu, fp32" "$TMP/err"; ok $? "logs device and precision"
CK="$TMP/run/step_000008"
for f in config.json model.safetensors tokenizer.json optimizer.safetensors trainer_state.json; do
  [ -f "$CK/$f" ]; ok $? "checkpoint has $f"
done
[ "$(wc -l <"$TMP/run/metrics.jsonl")" = 8 ]; ok $? "8 metrics lines"
python3 - "$TMP/run/metrics.jsonl" <<'PY'
import json, sys, math
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["step"] for r in rows] == list(range(1, 9))
for r in rows:
    for k in ("loss", "lr", "grad_norm", "tokens_per_s", "tflops"): assert math.isfinite(r[k]), (k, r)
assert "val_loss" in rows[3] and "val_loss" in rows[7] and "val_loss" not in rows[0]
PY
ok $? "metrics fields"
"$LMC" generate -m "$CK" -p "And God said" -n 8 --temp 0 >"$TMP/gen" 2>"$TMP/err"
ok $? "generate loads the checkpoint: $(cat "$TMP/err")"
"$LMC" eval -m "$CK" --text "In the beginning God created the heaven and the earth." >"$TMP/eval" 2>"$TMP/err"
ok $? "eval loads the checkpoint: $(cat "$TMP/err")"
grep -q perplexity "$TMP/eval"; ok $? "eval prints perplexity"

# resume from step 4: same losses as the uninterrupted run
"$LMC" train ${ARGS/--arch llama/} --resume "$TMP/run/step_000004" -o "$TMP/res" 2>"$TMP/err"
ok $? "resume: $(cat "$TMP/err")"
python3 - "$TMP/run/metrics.jsonl" "$TMP/res/metrics.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])][4:]; b = [json.loads(l) for l in open(sys.argv[2])]
assert [r["loss"] for r in a] == [r["loss"] for r in b], (a, b)
PY
ok $? "resumed losses equal"

# --resume latest: settings from the checkpoint (batch 4 x 32, schedule),
# --steps given overrides the total; bad resumes fail naming the cause
cp -r "$TMP/run" "$TMP/run2"
"$LMC" train --data "$TMP/data" --resume latest --steps 10 --threads 2 -o "$TMP/run2" 2>"$TMP/err"
ok $? "resume latest: $(cat "$TMP/err")"
grep -q "batch 4 x 32 x 1 accum, 10 steps from 8" "$TMP/err"; ok $? "resume latest takes batch from step_000008: $(head -1 "$TMP/err")"
python3 - "$TMP/run2/step_000010/trainer_state.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["step"] == 10 and s["batch"] == 4 and s["seq_len"] == 32 and s["schedule"]["total"] == 10, s
assert s["schedule"]["warmup"] == 2 and s["schedule"]["lr_max"] == 3e-3 and s["adamw"]["lr"] == 3e-3, s
PY
ok $? "resumed checkpoint keeps the saved settings, --steps overridden"
mkdir -p "$TMP/bad" && cp "$TMP/run/step_000004"/* "$TMP/bad/" && rm "$TMP/bad/optimizer.safetensors"
"$LMC" train --data "$TMP/data" --resume "$TMP/bad" -o "$TMP/x" 2>"$TMP/err"; r=$?
[ $r = 1 ] && grep -q "optimizer.safetensors" "$TMP/err"; ok $? "incomplete checkpoint named ($r: $(cat "$TMP/err"))"
"$LMC" train --data "$TMP/data" --resume "$TMP/run/step_000004" --seq 16 -o "$TMP/x" 2>"$TMP/err"; r=$?
[ $r = 1 ] && grep -q "sequence length 32" "$TMP/err"; ok $? "another --seq refused ($r: $(cat "$TMP/err"))"
mkdir -p "$TMP/empty"
"$LMC" train --data "$TMP/data" --resume latest -o "$TMP/empty" 2>"$TMP/err"; r=$?
[ $r = 1 ] && grep -q "no complete checkpoint" "$TMP/err"; ok $? "resume latest without checkpoints ($r: $(cat "$TMP/err"))"

# recomputation and gpt2 run
"$LMC" train --data "$TMP/data" --arch gpt2 --layers 1 --hidden 32 --heads 2 --max-pos 64 --batch 2 --seq 16 --steps 2 --recompute --threads 2 -o "$TMP/g" 2>"$TMP/err"
ok $? "gpt2 train with --recompute: $(cat "$TMP/err")"
"$LMC" generate -m "$TMP/g/step_000002" -p "And" -n 4 --temp 0 >/dev/null 2>"$TMP/err"
ok $? "gpt2 checkpoint generates: $(cat "$TMP/err")"

# Mamba / Mamba-2 from scratch: a few steps, the checkpoint (conv1d stored
# (C, 1, K) as transformers does) loads and generates
for a in mamba mamba2; do
  "$LMC" train --data "$TMP/data" --arch $a --layers 1 --hidden 32 --heads 2 --batch 2 --seq 16 --steps 2 --threads 2 -o "$TMP/$a" 2>"$TMP/err"
  ok $? "$a train: $(cat "$TMP/err")"
  python3 -c "import json,sys;c=json.load(open('$TMP/$a/step_000002/config.json'));sys.exit(c['model_type']!='$a')"
  ok $? "$a checkpoint config model_type"
  "$LMC" generate -m "$TMP/$a/step_000002" -p "And" -n 4 --temp 0 >/dev/null 2>"$TMP/err"
  ok $? "$a checkpoint generates: $(cat "$TMP/err")"
done

# the GPU: trains where there is one (bf16 by default); elsewhere a clean error naming cuda
GARGS="--data $TMP/data --arch llama --layers 1 --hidden 32 --heads 2 --batch 2 --seq 16 --steps 2"
"$LMC" train $GARGS --device cuda -o "$TMP/cu" 2>"$TMP/err"; r=$?
if [ $r = 0 ]; then
  grep -q "device cuda, bf16" "$TMP/err" && [ -f "$TMP/cu/step_000002/model.safetensors" ]
  ok $? "cuda train (bf16): $(cat "$TMP/err")"
  "$LMC" train $GARGS --device cuda --dtype fp32 -o "$TMP/cu32" 2>"$TMP/err"
  ok $? "cuda train (fp32): $(cat "$TMP/err")"
else
  [ $r = 1 ] && grep -qi "cuda" "$TMP/err"; ok $? "--device cuda without a GPU fails cleanly ($r: $(cat "$TMP/err"))"
fi
# bf16 on the cpu: trains where the CPU has AVX512-BF16 (test_train_bf16_cpu.sh), else a clean refusal
if ! grep -qw avx512_bf16 /proc/cpuinfo; then
  "$LMC" train $GARGS --dtype bf16 -o "$TMP/x" 2>"$TMP/err"; r=$?
  [ $r = 2 ] && grep -q "AVX512-BF16" "$TMP/err"; ok $? "--dtype bf16 refused without AVX512-BF16 ($r)"
fi
"$LMC" train $GARGS --dtype f16 --device cuda -o "$TMP/x" 2>"$TMP/err"; r=$?
[ $r = 2 ]; ok $? "--dtype f16 rejected ($r)"

# bad input
"$LMC" train --data "$TMP/nope" --arch llama -o "$TMP/x" 2>"$TMP/err"; r=$?
[ $r = 1 ] && grep -q "nope" "$TMP/err"; ok $? "missing data dir named ($r)"
"$LMC" train --data "$TMP/data" --arch llama --hidden 30 --heads 4 -o "$TMP/x" 2>"$TMP/err"; r=$?
[ $r = 2 ]; ok $? "hidden not a multiple of heads rejected ($r)"
"$LMC" train --data "$TMP/data" -o "$TMP/x" 2>/dev/null; [ $? = 2 ]; ok $? "no model source rejected"

echo "test_train_cli: $pass passed, $fail failed"
[ $fail = 0 ]
