#!/usr/bin/env bash
# test_mp_train_pp_split.sh — pipeline stages balanced by parameters and
# --pp-layers (dist/pp_split.h) through the CLI, on ranks started by
# mpirun (oversubscribed; the tcp launcher when lmc has no MPI;
# tests/mp_launch.sh). A 5-layer llama (10 steps, accumulation 4,
# clipping, warmup + cosine, evaluations and checkpoints every 5 steps):
# at --pp 2 the planner's split (3 + 2 layers: uneven), --pp-layers 1,4
# and --pp 2 --pp-chunks 2 --pp-layers 2,1,1,1 write the one-process run's
# checkpoint bit for bit (weights and AdamW moments); a --pp-layers 1,4
# run stopped at step 5 and resumed with another split (4,1: checkpoints
# are one-process folders, split-independent, so any split resumes them)
# or with the planner's equals the uninterrupted one bit for bit; tied
# embeddings with --pp-layers 4,1 give the one-process losses and weights
# (1e-6). Rank 0 prints the split (layers and parameters a stage) at
# start-up. Refused with a clear message: a wrong number of counts, a zero,
# a sum other than the layers, junk, --pp-layers without --pp (train,
# finetune, generate, eval); `lmc info --pp 2 --pp-layers` prints the
# given split and the memory of its largest stage. `lmc generate --pp` with
# --pp-layers (3,1 at --pp 2 and 1,1,2 at --pp 3 on llama-tiny's layers
# stacked to 4) gives the one-process ids, `lmc eval --pp 2 --pp-layers
# 1,3` the one-process perplexity, and `lmc serve --pp 2 --pp-layers 3,1`
# the one-process completions.
# Usage: test_mp_train_pp_split.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
mp_data
A="--data $TMP/data --arch llama --layers 5 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96 --seq 16
   --steps 10 --lr 3e-3 --warmup 2 --clip 0.5 --accum 4 --threads 1 --save-every 5 --eval-every 5 --eval-batches 2"
mp_probe train $A --batch 4 --steps 1 --warmup 0 --cp 2
same() { cmp -s "$TMP/$1/step_000010/model.safetensors" "$TMP/$2/step_000010/model.safetensors" &&
         cmp -s "$TMP/$1/step_000010/optimizer.safetensors" "$TMP/$2/step_000010/optimizer.safetensors"; }
"$LMC" train $A --batch 2 -o "$TMP/single" 2>"$TMP/err"; ok $? "single: $(tail -2 "$TMP/err")"
launch 2 train plan $A --batch 2 --pp 2; ok $? "pp 2 planner: $(last plan)"
same single plan; ok $? "pp 2 (planner's split) writes the one-process checkpoint bit for bit"
grep -q "pp split balanced by parameters: 2 stages x 1 chunks of 5 layers" "$TMP/plan.err" &&
  grep -q "pp split stage 0: layers \[0, 3) = 3 layers, [0-9]* parameters" "$TMP/plan.err" &&
  grep -q "pp split stage 1: layers \[3, 5) = 2 layers, [0-9]* parameters" "$TMP/plan.err"
ok $? "planner's split printed (3 + 2): $(grep "pp split" "$TMP/plan.err" | head -3 | tr '\n' '|')"
launch 2 train l14 $A --batch 2 --pp 2 --pp-layers 1,4; ok $? "pp 2 --pp-layers 1,4: $(last l14)"
same single l14; ok $? "--pp-layers 1,4 writes the one-process checkpoint bit for bit"
grep -q "pp split given by --pp-layers: 2 stages x 1 chunks of 5 layers" "$TMP/l14.err" &&
  grep -q "pp split stage 0: layers \[0, 1) = 1 layers" "$TMP/l14.err" &&
  grep -q "pp split stage 1: layers \[1, 5) = 4 layers" "$TMP/l14.err"
ok $? "given split printed: $(grep "pp split" "$TMP/l14.err" | head -3 | tr '\n' '|')"
# the stages' parameters as printed: stage 1 (4 layers and the head) holds more than stage 0
p0=$(sed -n 's/.*pp split stage 0: .* layers, \([0-9]*\) parameters/\1/p' "$TMP/l14.err" | head -1)
p1=$(sed -n 's/.*pp split stage 1: .* layers, \([0-9]*\) parameters/\1/p' "$TMP/l14.err" | head -1)
[ -n "$p0" ] && [ -n "$p1" ] && [ "$p1" -gt $((2 * p0)) ]; ok $? "printed parameters: stage 0 $p0, stage 1 $p1"
launch 2 train v2 $A --batch 2 --pp 2 --pp-chunks 2 --pp-layers 2,1,1,1; ok $? "pp 2 x v 2 --pp-layers 2,1,1,1: $(last v2)"
same single v2; ok $? "interleaved --pp-layers 2,1,1,1 writes the one-process checkpoint bit for bit"
grep -q "pp split stage 0: layers \[0, 2) \[3, 4) = 3 layers" "$TMP/v2.err"
ok $? "interleaved split printed (stage 0: chunks 0 and 2): $(grep "pp split stage 0" "$TMP/v2.err")"
# stop at 5 with one split, resume with another (and with the planner's): the uninterrupted run bit for bit
launch 2 train rs1 $A --batch 2 --pp 2 --pp-layers 1,4 --stop-at 5; ok $? "--pp-layers 1,4 stop at 5: $(last rs1)"
cp -r "$TMP/rs1" "$TMP/rs2"
launch 2 train rs1 --data "$TMP/data" --threads 1 --resume latest --save-every 5 --eval-every 5 --eval-batches 2 \
  --pp 2 --pp-layers 4,1; ok $? "resumed with --pp-layers 4,1: $(last rs1)"
same single rs1; ok $? "stopped at 1,4 and resumed at 4,1: the one-process checkpoint bit for bit"
launch 2 train rs2 --data "$TMP/data" --threads 1 --resume latest --save-every 5 --eval-every 5 --eval-batches 2 \
  --pp 2; ok $? "resumed with the planner's split: $(last rs2)"
same single rs2; ok $? "stopped at 1,4 and resumed at the planner's 3,2: bit for bit"
# tied embeddings (the embedding on stage 0, the head on stage 1) with an uneven given split
"$LMC" train $A --batch 2 --tie -o "$TMP/tie1" 2>"$TMP/err"; ok $? "single tied: $(tail -2 "$TMP/err")"
launch 2 train tie2 $A --batch 2 --tie --pp 2 --pp-layers 4,1; ok $? "tied --pp-layers 4,1: $(last tie2)"
python3 - "$TMP" <<'PY'
import json, struct, sys
t = sys.argv[1]
def st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]
        out[k] = struct.unpack(f"<{(e - s) // 4}f", b[8 + n + s:8 + n + e])
    return out
a = [json.loads(l) for l in open(f"{t}/tie1/metrics.jsonl")]
b = [json.loads(l) for l in open(f"{t}/tie2/metrics.jsonl")]
dl = max(abs(x["loss"] - y["loss"]) / x["loss"] for x, y in zip(a, b))
wa, wb = st(f"{t}/tie1/step_000010/model.safetensors"), st(f"{t}/tie2/step_000010/model.safetensors")
num = sum((x - y) ** 2 for k in wa for x, y in zip(wa[k], wb[k])) ** 0.5
den = sum(x * x for k in wa for x in wa[k]) ** 0.5
print(f"tied --pp-layers 4,1: {len(b)} steps, losses max rel {dl:.3g}, weights |diff| / |w| {num / den:.3g}")
sys.exit(0 if len(a) == len(b) == 10 and dl < 1e-6 and num / den < 1e-6 and set(wa) == set(wb) else 1)
PY
ok $? "tied --pp-layers 4,1 equals the one-process run"
# refusals
bad() { # NAME WHAT ARGS...: a 2-rank train with ARGS fails saying WHAT
  local name=$1 what=$2; shift 2
  launch 2 train "$name" $A --batch 2 --steps 1 --pp 2 "$@"; local rc=$?
  [ $rc != 0 ] && grep -q -- "$what" "$TMP/$name.err"; ok $? "refused $*: $(grep -- "--pp-layers" "$TMP/$name.err" | head -1)"
}
bad b1 "gives 3 counts; 2 stages x 1 chunks need 2" --pp-layers 1,2,2
bad b2 "chunk 0 has 0 layers" --pp-layers 0,5
bad b3 "sums to 4 layers; the model has 5" --pp-layers 1,3
bad b4 "'x' is not a layer count" --pp-layers x,4
bad b5 "gives 2 counts; 2 stages x 2 chunks need 4" --pp-chunks 2 --pp-layers 1,4
"$LMC" train $A --batch 2 --pp-layers 2,3 -o "$TMP/b6" 2>"$TMP/err"; [ $? = 2 ] && grep -q "give --pp P" "$TMP/err"
ok $? "train --pp-layers without --pp: $(cat "$TMP/err")"
"$LMC" finetune -m tests/fixtures/qwen2-tiny --data "$TMP/c.txt" --full --pp-layers 1,1 -o "$TMP/b7" 2>"$TMP/err"
[ $? = 2 ] && grep -q "give --pp P" "$TMP/err"; ok $? "finetune --pp-layers without --pp: $(cat "$TMP/err")"
"$LMC" generate -m tests/fixtures/llama-tiny -p hi --pp-layers 1,1 2>"$TMP/err"; [ $? = 2 ] && grep -q "give --pp N" "$TMP/err"
ok $? "generate --pp-layers without --pp: $(cat "$TMP/err")"
"$LMC" eval -m tests/fixtures/llama-tiny --text hi --pp-layers 1,1 2>"$TMP/err"; [ $? = 2 ] && grep -q "give --pp N" "$TMP/err"
ok $? "eval --pp-layers without --pp: $(cat "$TMP/err")"
# lmc info: the given split and its largest stage
out=$("$LMC" info -m tests/fixtures/llama-tiny --pp 2 --pp-layers 1,1 --micro-batches 4 2>&1)
echo "$out" | grep -q "pipeline split (--pp-layers), per stage: stage 0 (largest) layers \[0, 1) = 1 layers"
ok $? "info --pp-layers: $out"
out=$("$LMC" info -m tests/fixtures/llama-tiny --pp 2 --pp-layers 2,1 2>&1); [ $? != 0 ] && echo "$out" | grep -q "sums to 3"
ok $? "info --pp-layers 2,1 on 2 layers: $out"
# generate / serve with a given split: the one-process tokens
python3 tests/pp_stack_layers.py tests/fixtures/llama-tiny "$TMP/llama4" 2 || ok 1 "stacking llama-tiny"
ids() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p' "$1"; }
G=(generate -m "$TMP/llama4" -p "the quick brown fox" -n 12 --json --threads 1)
"$LMC" "${G[@]}" >"$TMP/g.one" 2>"$TMP/g.one.err"; ok $? "generate one process: $(cat "$TMP/g.one.err")"
for spec in "2 3,1" "3 1,1,2"; do
  P=${spec% *} L=${spec#* }
  MP_SPLIT=1 mp_ranks "$P" "gen$P" "${G[@]}" --pp "$P" --pp-layers "$L"; ok $? "generate --pp $P --pp-layers $L: $(tail -n 3 "$TMP/gen$P".r*.err)"
  [ -n "$(ids "$TMP/g.one")" ] && [ "$(ids "$TMP/g.one")" = "$(ids "$TMP/gen$P.r0")" ]
  ok $? "generate --pp $P --pp-layers $L ids [$(ids "$TMP/gen$P.r0")] vs one process [$(ids "$TMP/g.one")]"
  grep -q "pipeline stage $((P - 1)) of $P: layers \[$((4 - ${L##*,})), 4) of 4" "$TMP/gen$P.r$((P - 1)).err"
  ok $? "the last stage loaded its ${L##*,} given layers: $(grep "pipeline stage" "$TMP/gen$P.r$((P - 1)).err")"
done
EV=(eval -m "$TMP/llama4" --text "the quick brown fox jumps over the lazy dog again and again" --ctx 16 --json --threads 1)
"$LMC" "${EV[@]}" >"$TMP/ev.one" 2>"$TMP/ev.err"; ok $? "eval one process: $(cat "$TMP/ev.err")"
MP_SPLIT=1 mp_ranks 2 ev "${EV[@]}" --pp 2 --pp-layers 1,3
[ $? = 0 ] && grep -q '"ppl"' "$TMP/ev.one" && cmp -s "$TMP/ev.one" "$TMP/ev.r0"
ok $? "eval --pp 2 --pp-layers 1,3: $(cat "$TMP/ev.r0") vs one process $(cat "$TMP/ev.one")"
MP_SPLIT=1 mp_ranks 2 genbad "${G[@]}" --pp 2 --pp-layers 2,1; [ $? != 0 ] && grep -q "sums to 3 layers; the model has 4" "$TMP/genbad.r0.err"
ok $? "generate --pp 2 --pp-layers 2,1 on 4 layers: $(cat "$TMP/genbad.r0.err")"
python3 - "$LMC" "$TMP/llama4" <<'PY'
import sys
sys.path.insert(0, "tests")
import mp_serve
from mp_serve import check, stop
lmc, model = sys.argv[1], sys.argv[2]
REQS = [{"prompt": f"request {i}: the quick brown fox" + " jumps" * i, "max_tokens": 8 + i, "temperature": 0,
         "ignore_eos": True} for i in range(6)]
procs, port, logs, dr = mp_serve.start(lmc, model, 1, (), ("--model-name", "m"))
check(port is not None, f"one-process server did not start: {''.join(logs[0])}")
ref = mp_serve.run_all(port, REQS) if port else None
if port: stop(procs, dr)
procs, port, logs, dr = mp_serve.start(lmc, model, 2, ["--pp", "2", "--pp-layers", "3,1"], ("--model-name", "m"))
check(port is not None, f"--pp 2 --pp-layers 3,1 server did not start: {''.join(logs[0])}")
if port:
    got = mp_serve.run_all(port, REQS)
    codes = stop(procs, dr)
    check(codes == [0, 0], f"--pp-layers 3,1 exit codes {codes}")
    check(any("pp split stage 0: layers [0, 3) = 3 layers" in l for l in logs[0]), f"split line: {''.join(logs[0])}")
    check(got == ref and all(not isinstance(a, str) for a in got), f"serve --pp 2 --pp-layers 3,1: {got} vs {ref}")
    print(f"serve --pp 2 --pp-layers 3,1: {sum(a == b for a, b in zip(got, ref))}/{len(REQS)} requests equal")
sys.exit(1 if mp_serve.fails else 0)
PY
ok $? "serve --pp 2 --pp-layers 3,1 answers as one process"
echo "test_mp_train_pp_split: $pass passed, $fail failed"
[ $fail = 0 ]
