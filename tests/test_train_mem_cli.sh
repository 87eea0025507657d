#!/usr/bin/env bash
# test_train_mem_cli.sh — the memory account on the command line (train/
# train_mem.h): `lmc finetune` (LoRA, --recompute [selective|attn], QLoRA NF4, --full on
# llama-tiny) prints one "memory (MiB): ..." line at start-up and writes
# OUT.memory.json whose parts add up to its total, whose weights, gradients
# and optimizer bytes follow the run's parameter counts (a frozen base:
# gradients = trainable = the adapter's floats; AdamW 2x), whose total the
# line repeats, and whose activations shrink to one layer's saves with
# --recompute; `lmc train` prints the line too. The metrics file keeps its
# one record per step. Usage: test_train_mem_cli.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"
for i in $(seq 1 16); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want\"}"
done >"$TMP/d.jsonl"
FIX=tests/fixtures/llama-tiny
COMMON="--seq 32 --batch 2 --threads 2 --steps 2 --lora-r 4 --lora-alpha 8"
run() { out=$1; shift; "$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/$out" $COMMON "$@" 2>"$TMP/err-$out"; }
check() { # NAME KIND: the JSON against itself, the line and the run's counts
  python3 - "$TMP/$1.memory.json" "$TMP/err-$1" "$2" "$TMP/$1.metrics.jsonl" <<'PY'
import json, re, sys
m = json.load(open(sys.argv[1])); err = open(sys.argv[2]).read(); kind = sys.argv[3]
parts = ["weights_f32", "base_ext", "grads", "optimizer", "activations", "adapter_scratch"]
assert sum(m[k] for k in parts) == m["total"], m
assert m["frozen_f32"] + m["trainable"] == m["weights_f32"], m
held = m["activations_per_layer"] * m["activation_layers_held"] + m["residual_stream"] + m["activations_rest"]
assert held == m["activations"], m
lines = re.findall(r"lmc finetune: memory \(MiB\): .*= ([0-9.]+), not counting op scratch", err)
assert len(lines) == 1 and abs(float(lines[0]) - m["total"] / 1048576) < 0.051, (lines, m["total"])
tr = int(re.search(r"(\d+) trainable of (\d+) parameters", err).group(1))
assert m["trainable"] >= 4 * tr and m["trainable"] < 4 * tr + 64 * 4 * 200, (m, tr)  # 16-float padding per tensor
assert m["grads"] == m["trainable"] and m["optimizer"] == 2 * m["trainable"], m
if kind == "full":
    assert m["frozen_f32"] == 0 and m["adapter_scratch"] == 0, m
else:
    assert m["frozen_f32"] > 0 and m["adapter_scratch"] > 0, m
if kind == "qlora":
    assert m["base_ext"] > 0 and m["base_ext_form"] == "NF4", m
else:
    assert m["base_ext"] == 0, m
if kind == "recompute":
    assert m["activation_layers_held"] == 1 and m["recompute"] == "full", m
elif kind == "offload":
    assert m["activation_layers_held"] == 1 and m["recompute"] == "full" and m["host_offload"] > 0, m
    assert "in host memory" in err and "recompute, offloaded checkpoints" in err, err
elif kind == "rc16":
    assert m["activation_layers_held"] == 1 and m["recompute"] == "full" and m["activations_dtype"] == "bf16", m
    assert "x 1 held, recompute, bf16 checkpoints" in err, err
elif kind == "bf16":
    assert m["activation_layers_held"] == 2 and m["recompute"] == "none" and m["activations_dtype"] == "bf16", m
    assert "x 2 held, bf16" in err, err
elif kind == "attn":
    assert m["activation_layers_held"] == 2 and m["recompute"] == "attn" and m["host_offload"] == 0, m
    assert "x 2 held, attention recompute," in err, err
elif kind == "attn-offload":
    assert m["activation_layers_held"] == 2 and m["recompute"] == "attn" and m["host_offload"] > 0, m
    assert "x 2 held, attention recompute, offloaded checkpoints" in err and "in host memory" in err, err
elif kind == "selective":
    assert m["activation_layers_held"] == 2 and m["recompute"] == "selective", m
    assert "x 2 held, selective recompute" in err, err
else:
    assert m["recompute"] == "none", m
    assert m["activation_layers_held"] == 2, m  # llama-tiny's layers
if kind not in ("bf16", "rc16"):
    assert m["activations_dtype"] == "f32", m
rows = [json.loads(l) for l in open(sys.argv[4])]
assert len(rows) == 2 and all("memory" not in r for r in rows), rows
print(kind, m["total"])
PY
}
run lora; ok $? "lora: $(tail -2 "$TMP/err-lora")"
check lora lora >"$TMP/t-lora"; ok $? "lora account"
run rc --recompute; ok $? "recompute: $(tail -2 "$TMP/err-rc")"
check rc recompute >"$TMP/t-rc"; ok $? "recompute account"
[ "$(cut -d' ' -f2 "$TMP/t-rc")" -lt "$(cut -d' ' -f2 "$TMP/t-lora")" ]; ok $? "recompute holds less"
run sel --recompute selective; ok $? "selective: $(tail -2 "$TMP/err-sel")"
check sel selective >"$TMP/t-sel"; ok $? "selective account"
[ "$(cut -d' ' -f2 "$TMP/t-sel")" -lt "$(cut -d' ' -f2 "$TMP/t-lora")" ]; ok $? "selective holds less than none"
# the same losses, bit for bit, as keeping every save (the metrics' printed floats)
python3 -c 'import json,sys; a=[json.loads(l)["loss"] for l in open(sys.argv[1])]; b=[json.loads(l)["loss"] for l in open(sys.argv[2])]; assert a == b and len(a) == 2, (a, b)' \
  "$TMP/lora.metrics.jsonl" "$TMP/sel.metrics.jsonl"; ok $? "selective: the losses of no recompute"
# --recompute attn: the MLP's saves kept, the rest recomputed: the losses of no recompute bit for bit, less held;
# with --offload-checkpoints the same losses again
run att --recompute attn; ok $? "attn recompute: $(tail -2 "$TMP/err-att")"
check att attn >"$TMP/t-att"; ok $? "attn recompute account"
[ "$(cut -d' ' -f2 "$TMP/t-att")" -lt "$(cut -d' ' -f2 "$TMP/t-sel")" ]; ok $? "attn recompute holds less than selective"
run atto --recompute attn --offload-checkpoints; ok $? "attn recompute offloaded: $(tail -2 "$TMP/err-atto")"
check atto attn-offload >"$TMP/t-atto"; ok $? "attn recompute offloaded account"
[ "$(cut -d' ' -f2 "$TMP/t-atto")" -lt "$(cut -d' ' -f2 "$TMP/t-att")" ]; ok $? "attn offloaded holds less on the backend"
python3 -c 'import json,sys; r=[[json.loads(l)["loss"] for l in open(f)] for f in sys.argv[1:]]; assert r[0] == r[1] == r[2] and len(r[0]) == 2, r' \
  "$TMP/lora.metrics.jsonl" "$TMP/att.metrics.jsonl" "$TMP/atto.metrics.jsonl"; ok $? "attn recompute (offloaded too): the losses of no recompute"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/bad4" $COMMON --recompute attn --tp 2 2>"$TMP/err-bad4"
[ $? = 2 ] && grep -q "attn" "$TMP/err-bad4"; ok $? "attn with --tp refused: $(tail -1 "$TMP/err-bad4")"
run b16 --acts-dtype bf16; ok $? "bf16 saves: $(tail -2 "$TMP/err-b16")"
check b16 bf16 >/dev/null; ok $? "bf16 saves account"
# the forward is untouched: the first step's loss equal; the second within bf16 rounding of the gradients
python3 -c 'import json,sys; a=[json.loads(l)["loss"] for l in open(sys.argv[1])]; b=[json.loads(l)["loss"] for l in open(sys.argv[2])]; assert a[0] == b[0] and abs(a[1] - b[1]) <= 1e-3 * abs(a[1]), (a, b)' \
  "$TMP/lora.metrics.jsonl" "$TMP/b16.metrics.jsonl"; ok $? "bf16 saves: the first loss of f32 saves"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/bad2" $COMMON --acts-dtype f16 2>"$TMP/err-bad2"
[ $? = 2 ]; ok $? "--acts-dtype f16 refused: $(tail -1 "$TMP/err-bad2")"
# lmc info --acts: the same activation bytes as each run's account, without loading weights
"$LMC" info -m "$FIX" --acts --seq 32 --batch 2 --json >"$TMP/acts.json" 2>"$TMP/err-acts"; ok $? "info --acts: $(cat "$TMP/err-acts")"
python3 - "$TMP/acts.json" "$TMP/lora.memory.json" "$TMP/sel.memory.json" "$TMP/b16.memory.json" "$TMP/rc.memory.json" "$TMP/att.memory.json" <<'PY'; ok $? "info --acts = the runs' accounts"
import json, sys
a = json.load(open(sys.argv[1])); runs = [json.load(open(f))["activations"] for f in sys.argv[2:]]
assert a["batch"] == 2 and a["seq"] == 32, a
assert [a["none"], a["selective"], a["none_bf16"], a["full"], a["attn"]] == runs, (a, runs)
assert a["full"] < a["attn"] < a["selective"] and a["attn_bf16_offload"] < a["attn_bf16"], a
assert a["full"] < a["selective"] < a["none"] and a["selective_bf16"] < a["none_bf16"], a  # tiny: the bf16 work set outweighs
PY
"$LMC" info -m "$FIX" --acts --seq 32 >"$TMP/acts.txt" 2>&1 && grep -q "selective_bf16" "$TMP/acts.txt"; ok $? "info --acts text: $(head -3 "$TMP/acts.txt")"
# --recompute --acts-dtype bf16: the residual stream's checkpoints in bf16 (the forward untouched: the first loss of --recompute)
run rc16 --recompute --acts-dtype bf16; ok $? "recompute bf16 checkpoints: $(tail -2 "$TMP/err-rc16")"
check rc16 rc16 >"$TMP/t-rc16"; ok $? "recompute bf16 checkpoints account"
# (2 layers: two f32 buffers + 2 halves = the 3 f32 inputs; the saving grows with depth, test_train_mem checks the sizes)
[ "$(cut -d' ' -f2 "$TMP/t-rc16")" -le "$(cut -d' ' -f2 "$TMP/t-rc")" ]; ok $? "bf16 checkpoints hold no more than f32"
python3 -c 'import json,sys; a=[json.loads(l)["loss"] for l in open(sys.argv[1])]; b=[json.loads(l)["loss"] for l in open(sys.argv[2])]; c=json.load(open(sys.argv[3])); d=json.load(open(sys.argv[4])); assert a[0] == b[0] and abs(a[1] - b[1]) <= 1e-3 * abs(a[1]) and c["full_bf16"] == d["activations"], (a, b, c, d)' \
  "$TMP/rc.metrics.jsonl" "$TMP/rc16.metrics.jsonl" "$TMP/acts.json" "$TMP/rc16.memory.json"; ok $? "bf16 checkpoints: the first loss of --recompute, info --acts full_bf16"
# --recompute --offload-checkpoints: the layer inputs in host memory, the losses of --recompute bit for bit
run off --recompute --offload-checkpoints; ok $? "offloaded checkpoints: $(tail -2 "$TMP/err-off")"
check off offload >"$TMP/t-off"; ok $? "offloaded checkpoints account"
[ "$(cut -d' ' -f2 "$TMP/t-off")" -lt "$(cut -d' ' -f2 "$TMP/t-rc")" ]; ok $? "offloaded checkpoints hold less on the backend"
python3 -c 'import json,sys; a=[json.loads(l)["loss"] for l in open(sys.argv[1])]; b=[json.loads(l)["loss"] for l in open(sys.argv[2])]; c=json.load(open(sys.argv[3])); d=json.load(open(sys.argv[4])); assert a == b and len(a) == 2 and c["full_offload"] == d["activations"], (a, b, c, d)' \
  "$TMP/rc.metrics.jsonl" "$TMP/off.metrics.jsonl" "$TMP/acts.json" "$TMP/off.memory.json"; ok $? "offloaded: the losses of --recompute, info --acts full_offload"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/bad3" $COMMON --offload-checkpoints 2>"$TMP/err-bad3"
[ $? = 2 ] && grep -q "offload" "$TMP/err-bad3"; ok $? "--offload-checkpoints without --recompute refused: $(tail -1 "$TMP/err-bad3")"
run rcf --recompute full; ok $? "recompute full: $(tail -2 "$TMP/err-rcf")"
check rcf recompute >/dev/null; ok $? "recompute full account"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/bad" $COMMON --recompute selective --tp 2 2>"$TMP/err-bad"
[ $? = 2 ] && grep -q "selective" "$TMP/err-bad"; ok $? "selective with --tp refused: $(tail -1 "$TMP/err-bad")"
run q --qlora nf4; ok $? "qlora: $(tail -2 "$TMP/err-q")"
check q qlora >/dev/null; ok $? "qlora account"
run full --full; ok $? "full: $(tail -2 "$TMP/err-full")"
check full full >/dev/null; ok $? "full account"
for i in $(seq 1 60); do echo "In the beginning $i God created the heaven and the earth."; done >"$TMP/corpus.txt"
"$LMC" prepare-data -m "$FIX" --text-file "$TMP/corpus.txt" -o "$TMP/data" >/dev/null 2>&1
"$LMC" train -m "$FIX" --data "$TMP/data" -o "$TMP/tr" --steps 1 --batch 2 --seq 16 --threads 2 >/dev/null 2>"$TMP/err-train"
ok $? "lmc train: $(tail -2 "$TMP/err-train")"
grep -q "lmc train: memory (MiB): weights f32 .* = [0-9.]*, not counting op scratch" "$TMP/err-train"
ok $? "lmc train prints the account: $(tail -2 "$TMP/err-train")"
echo "test_train_mem_cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
