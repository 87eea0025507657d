#!/usr/bin/env bash
# test_mp_tp_zero.sh — `lmc train --tp 2 --zero 2|3` on 4 ranks (DP 2 x TP
# 2, torchrun-style variables over tcp): the zero module shards each TP
# shard's AdamW moments and gradients (2), and parameters (3), over its
# data-parallel group, through the per-layer hooks (no overlap: a
# sub-communicator's collectives hold the shared links' lock); the global
# norm weights replicated tensors 1/T over the TP group's sum. 10 steps of a
# tiny llama (4 heads, 2 KV heads; accumulation 2, clipping, validation) =
# one process with the same global batch: losses and validation <= 1e-6
# relative, parameters <= 1e-6 in norm and <= 1e-5 of max |p|, the
# consolidated checkpoint's moments <= 1e-5; ZeRO-2 = ZeRO-3 bit for bit; a
# ZeRO-3 run stopped at 5 and resumed = uninterrupted bit for bit, its
# checkpoint resumed by one process = one process; `lmc finetune --full
# --tp 2 --zero 3` = one process; replicated KV heads (--kv-heads 1) and no
# data-parallel group refused by name.
# Usage: test_mp_tp_zero.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
mp_data
M="--data $TMP/data --arch llama --layers 2 --hidden 64 --heads 4 --intermediate 96 --seq 16
   --steps 10 --lr 3e-3 --warmup 2 --clip 0.5 --accum 2 --threads 1 --save-every 5 --eval-every 5 --eval-batches 2"
A="$M --kv-heads 2"
# run CMD W OUT ARGS...: W ranks meet at a free port (held for them); rank r's stderr in OUT.r<r>
run() { local cmd=$1 W=$2 out=$3; shift 3; mp_ranks "$W" "$out" $cmd "$@" -o "$TMP/$out"; }
# compare REF RUN: losses, validation 1e-6; params 1e-6 in norm, 1e-5 of max |p|; adamw.m/v 1e-5 of their max
compare() {
  python3 - "$TMP/$1" "$TMP/$2" <<'PY'
import json, struct, sys
a, b = sys.argv[1], sys.argv[2]
def rows(d): return [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
def t(d, name):
    raw = open(f"{d}/step_000010/{name}", "rb").read(); n = int.from_bytes(raw[:8], "little"); h = json.loads(raw[8:8 + n])
    return {k: struct.unpack(f"<{(v['data_offsets'][1] - v['data_offsets'][0]) // 4}f",
                             raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items() if k != "__metadata__"}
ra, rb = rows(a), rows(b)
assert len(ra) == len(rb) == 10 and [x["step"] for x in rb] == list(range(1, 11))
wl = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(ra, rb))
wv = max(abs(x["val_loss"] - y["val_loss"]) / abs(x["val_loss"]) for x, y in zip(ra, rb) if "val_loss" in x)
pa, pb = t(a, "model.safetensors"), t(b, "model.safetensors")
assert sorted(pa) == sorted(pb)
scale = max(abs(x) for v in pa.values() for x in v)
wp = max(abs(x - y) for k in pa for x, y in zip(pa[k], pb[k])) / scale
np_ = (sum((x - y) ** 2 for k in pa for x, y in zip(pa[k], pb[k])) / sum(y * y for k in pa for y in pa[k])) ** 0.5
oa, ob = t(a, "optimizer.safetensors"), t(b, "optimizer.safetensors")
wo = max(max(abs(x - y) for x, y in zip(oa[k], ob[k])) / max(abs(x) for x in oa[k]) for k in ("adamw.m", "adamw.v"))
print(f"{b.rsplit('/', 1)[1]}: losses max rel {wl:.2e}, val {wv:.2e}, params |diff| / |p| {np_:.2e} "
      f"(max {wp:.2e}), moments {wo:.2e}")
sys.exit(0 if wl <= 1e-6 and wv <= 1e-6 and np_ <= 1e-6 and wp <= 1e-5 and wo <= 1e-5 else 1)
PY
}
"$LMC" train $A --batch 4 -o "$TMP/one" 2>"$TMP/err"; ok $? "one process: $(tail -2 "$TMP/err")"
for z in 2 3; do
  run train 4 z$z $A --batch 2 --tp 2 --zero $z; ok $? "dp 2 x tp 2 zero $z: $(tail -n 3 "$TMP"/z$z.r*)"
  grep -q "zero-$z on 2 ranks: state" "$TMP/z$z.r0"; ok $? "zero $z memory line: $(grep 'on 2 ranks' "$TMP/z$z.r0")"
  compare one z$z; ok $? "dp 2 x tp 2 zero $z = one process"
done
cmp -s "$TMP/z2/step_000010/model.safetensors" "$TMP/z3/step_000010/model.safetensors" &&
  cmp -s "$TMP/z2/step_000010/optimizer.safetensors" "$TMP/z3/step_000010/optimizer.safetensors"
ok $? "zero 2 and zero 3 the same bits"
# ZeRO-3 stopped at 5, resumed by the same layout (bit for bit) and by one process (same global batch)
run train 4 rs $A --batch 2 --tp 2 --zero 3 --stop-at 5; ok $? "zero 3 stop at 5: $(tail -n 3 "$TMP"/rs.r*)"
cp -r "$TMP/rs" "$TMP/rs1"
R="--data $TMP/data --threads 1 --resume latest --save-every 5 --eval-every 5 --eval-batches 2"
run train 4 rs $R --tp 2 --zero 3; ok $? "zero 3 resume: $(tail -n 3 "$TMP"/rs.r*)"
cmp -s "$TMP/rs/step_000010/model.safetensors" "$TMP/z3/step_000010/model.safetensors" &&
  cmp -s "$TMP/rs/step_000010/optimizer.safetensors" "$TMP/z3/step_000010/optimizer.safetensors"
ok $? "zero 3 stopped at 5 and resumed = uninterrupted, bit for bit"
"$LMC" train $R --batch 4 -o "$TMP/rs1" 2>"$TMP/err"; ok $? "one-process resume: $(tail -2 "$TMP/err")"
compare one rs1; ok $? "the dp 2 x tp 2 zero 3 checkpoint resumed by one process = one process"
# lmc finetune --full --tp 2 --zero 3 on 4 ranks
FIX=tests/fixtures/llama-tiny
for i in $(seq 1 9); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want $i\"}"
done >"$TMP/d.jsonl"
F="-m $FIX --data $TMP/d.jsonl --seq 32 --lr 1e-3 --threads 1 --steps 6 --full --clip 0.5"
"$LMC" finetune $F --batch 2 --accum 2 -o "$TMP/ft1" 2>"$TMP/err"; ok $? "finetune one process: $(tail -2 "$TMP/err")"
run finetune 4 ft4 $F --batch 2 --tp 2 --zero 3; ok $? "finetune dp 2 x tp 2 zero 3: $(tail -n 3 "$TMP"/ft4.r*)"
python3 - "$TMP/ft1" "$TMP/ft4" <<'PY'
import json, struct, sys
a, b = sys.argv[1], sys.argv[2]
la = [json.loads(l)["loss"] for l in open(a + ".metrics.jsonl")]
lb = [json.loads(l)["loss"] for l in open(b + ".metrics.jsonl")]
def t(d):
    raw = open(f"{d}/model.safetensors", "rb").read(); n = int.from_bytes(raw[:8], "little"); h = json.loads(raw[8:8 + n])
    return {k: struct.unpack(f"<{(v['data_offsets'][1] - v['data_offsets'][0]) // 4}f",
                             raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items() if k != "__metadata__" and v["dtype"] == "F32"}
ta, tb = t(a), t(b)
assert len(la) == len(lb) == 6 and sorted(ta) == sorted(tb)
wl = max(abs(x - y) / abs(x) for x, y in zip(la, lb))
np_ = (sum((x - y) ** 2 for k in ta for x, y in zip(ta[k], tb[k])) / sum(y * y for k in ta for y in ta[k])) ** 0.5
print(f"finetune --full dp 2 x tp 2 zero 3: losses max rel {wl:.2e}, weights |diff| / |w| {np_:.2e}")
sys.exit(0 if wl <= 1e-6 and np_ <= 1e-6 else 1)
PY
ok $? "finetune --full --tp 2 --zero 3 = one process"
# refusals
run train 4 bad $M --kv-heads 1 --batch 2 --tp 2 --zero 2; [ $? != 0 ] && grep -q "KV heads are replicated" "$TMP/bad.r0"
ok $? "replicated KV heads with --zero 2: $(tail -n 1 "$TMP/bad.r0")"
run train 2 bad2 $A --batch 4 --tp 2 --zero 3; [ $? != 0 ] && grep -q "give more ranks than --tp" "$TMP/bad2.r0"
ok $? "--tp 2 --zero 3 on 2 ranks: $(tail -n 1 "$TMP/bad2.r0")"
echo "test_mp_tp_zero: $pass passed, $fail failed"
[ $fail = 0 ]
