#!/usr/bin/env bash
# test_mp_lora_tp.sh — LoRA over a tensor-parallel base (train/lora_tp.h):
# `lmc finetune --tp T` (LoRA) on llama-tiny (4 heads, 2 KV heads: split)
# and qwen2-tiny (1 KV head: replicated; q/k/v biases, tied head) at TP 2
# and DP 2 x TP 2 against the one-process LoRA run with the same global
# batch: losses, and the written PEFT adapter (gathered by rank 0) within
# float32 rounding bounds; the base folder bit-unchanged; the TP adapter
# loads in `lmc generate --lora` (one process) and gives the one-process
# adapter's greedy tokens; `lmc generate --lora --tp 2` gives the
# one-process tokens; a TP 2 run resumed from its step-4 checkpoint writes
# the uninterrupted adapter bit for bit, one process resumes that checkpoint
# and TP 2 resumes a one-process one (the one-process figures); QLoRA (NF4,
# int4) at TP 2 on a 1-layer hidden-512 llama gives the one-process losses
# and adapter, and refuses a base whose cuts fall inside its blocks;
# --lora-dropout with --tp is refused with its reason. Ranks from
# torchrun-style variables (tcp, a port from the OS), as test_mp_finetune.
# Usage: test_mp_lora_tp.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" LMC_DIST_TIMEOUT=120
for i in $(seq 1 23); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want $i\"}"
done >"$TMP/d.jsonl"
C="--data $TMP/d.jsonl --seq 32 --lr 1e-2 --threads 1 --schedule cosine --warmup 2 --steps 8 --clip 0.5 --lora-r 4 --save-every 4"
# ranks(W OUT CMD ARGS...): W ranks of `lmc CMD ARGS...`, rank r's stdout in OUT.o<r>, stderr in OUT.r<r>
ranks() {
  local W=$1 out=$2; shift 2
  local r pids=() rc=0
  port_hold
  for r in $(seq $((W - 1)) -1 1); do
    RANK=$r WORLD_SIZE=$W MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT "$LMC" "$@" >"$TMP/$out.o$r" 2>"$TMP/$out.r$r" &
    pids+=($!)
  done
  RANK=0 WORLD_SIZE=$W MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT "$LMC" "$@" >"$TMP/$out.o0" 2>"$TMP/$out.r0" || rc=1
  for p in "${pids[@]}"; do wait $p || rc=1; done
  port_release
  return $rc
}
ft() { local W=$1 out=$2 fix=$3; shift 3; ranks $W $out finetune -m $fix $C "$@" -o "$TMP/$out"; }
L=tests/fixtures/llama-tiny Q=tests/fixtures/qwen2-tiny
sumL=$(sha256sum $L/model.safetensors) sumQ=$(sha256sum $Q/model.safetensors)
ft 1 one $L --batch 2 --accum 2; ok $? "one process: $(tail -n 2 "$TMP/one.r0")"
ft 2 tp2 $L --batch 2 --accum 2 --tp 2; ok $? "tp 2: $(tail -n 3 "$TMP"/tp2.r*)"
grep -q "LoRA, .* trainable" "$TMP/tp2.r0" && grep -q "tensor parallel 2 x data parallel 1" "$TMP/tp2.r0"
ok $? "tp 2 start-up lines: $(grep -E 'LoRA|parallel' "$TMP/tp2.r0")"
ft 4 dp2tp2 $L --batch 2 --tp 2; ok $? "dp 2 x tp 2: $(tail -n 3 "$TMP"/dp2tp2.r*)"
ft 2 tp2rs $L --batch 2 --accum 2 --tp 2 --resume "$TMP/tp2.ckpt/step_000004"; ok $? "tp 2 resumed: $(tail -n 3 "$TMP"/tp2rs.r*)"
ft 1 onefromtp $L --batch 2 --accum 2 --resume "$TMP/tp2.ckpt/step_000004"; ok $? "one process resumes tp 2: $(tail -n 2 "$TMP/onefromtp.r0")"
ft 2 tpfromone $L --batch 2 --accum 2 --tp 2 --resume "$TMP/one.ckpt/step_000004"; ok $? "tp 2 resumes one process: $(tail -n 3 "$TMP"/tpfromone.r*)"
ft 1 qone $Q --batch 2 --accum 2; ok $? "qwen2 one process: $(tail -n 2 "$TMP/qone.r0")"
ft 2 qtp2 $Q --batch 2 --accum 2 --tp 2; ok $? "qwen2 tp 2: $(tail -n 3 "$TMP"/qtp2.r*)"
ft 4 qdp2tp2 $Q --batch 2 --tp 2; ok $? "qwen2 dp 2 x tp 2: $(tail -n 3 "$TMP"/qdp2tp2.r*)"
[ "$sumL" = "$(sha256sum $L/model.safetensors)" ] && [ "$sumQ" = "$(sha256sum $Q/model.safetensors)" ] &&
  [ ! -e "$TMP/tp2/model.safetensors" ] && [ -f "$TMP/tp2/adapter_model.safetensors" ]
ok $? "the base folders are unchanged and the output is an adapter only"
! grep -q "written to" "$TMP/tp2.r1" && grep -q "adapter (14 modules, r 4) written to" "$TMP/tp2.r0"
ok $? "rank 0 alone writes the adapter"
python3 - "$TMP" <<'PY'
import json, struct, sys
tmp = sys.argv[1]
def rows(p): return [json.loads(l) for l in open(p)]
def tensors(d):
    b = open(f"{d}/adapter_model.safetensors", "rb").read()
    n = int.from_bytes(b[:8], "little"); h = json.loads(b[8:8 + n]); base = 8 + n; out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        assert v["dtype"] == "F32", (d, k, v["dtype"])
        s, e = v["data_offsets"]; out[k] = struct.unpack(f"<{(e - s) // 4}f", b[base + s:base + e])
    return out
bad = 0
for d, o in [("tp2", "one"), ("dp2tp2", "one"), ("onefromtp", "one"), ("tpfromone", "one"), ("qtp2", "qone"), ("qdp2tp2", "qone")]:
    ref, refp = rows(f"{tmp}/{o}.metrics.jsonl"), tensors(f"{tmp}/{o}")
    r, p = rows(f"{tmp}/{d}.metrics.jsonl"), tensors(f"{tmp}/{d}")
    r = [x for x in r if x["step"] > (4 if "from" in d else 0)]
    ref = [x for x in ref if x["step"] > (4 if "from" in d else 0)]
    assert len(r) == len(ref) and len(r) in (4, 8) and sorted(p) == sorted(refp) and len(p) >= 14, (d, len(r), len(p))
    worst = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(r, ref))
    norm_p = (sum((x - y) ** 2 for k in refp for x, y in zip(p[k], refp[k])) /
              sum(y * y for k in refp for y in refp[k])) ** 0.5
    worst_p = max(abs(x - y) for k in refp for x, y in zip(p[k], refp[k])) / max(abs(x) for t in refp.values() for x in t)
    print(f"lora {d}: losses max rel {worst:.2e}, adapter |diff| / |w| {norm_p:.2e} (max |diff| / max |w| {worst_p:.2e})")
    if not (worst <= 1e-6 and norm_p <= 1e-5 and worst_p <= 1e-4): bad += 1
# the same layout resumed from its checkpoint: the uninterrupted adapter bit for bit
a, b = tensors(f"{tmp}/tp2rs"), tensors(f"{tmp}/tp2")
same = a == b and [x["loss"] for x in rows(f"{tmp}/tp2rs.metrics.jsonl") if x["step"] > 4] == \
       [x["loss"] for x in rows(f"{tmp}/tp2.metrics.jsonl") if x["step"] > 4]
print(f"lora tp2 resumed at step 4: {'bit for bit' if same else 'DIFFERENT'}")
bad += not same
sys.exit(bad)
PY
ok $? "LoRA at tp 2, dp 2 x tp 2 (llama, qwen2) and resumed across layouts equals one process"
# the adapters in lmc generate: one process with the TP adapter, and --lora --tp 2, give the one-process tokens
G="-p Verse_3_says: -n 12 --temp 0 --ignore-eos --threads 1 --json"
for M in L Q; do
  fix=${!M} o=one t=tp2; [ $M = Q ] && o=qone t=qtp2
  "$LMC" generate -m $fix --lora "$TMP/$o" $G --dtype f32 >"$TMP/g$M.one" 2>"$TMP/err"; ok $? "generate $M: $(cat "$TMP/err")"
  "$LMC" generate -m $fix --lora "$TMP/$t" $G --dtype f32 >"$TMP/g$M.tpad" 2>"$TMP/err"; ok $? "generate $M tp adapter: $(cat "$TMP/err")"
  "$LMC" generate -m $fix $G --dtype f32 >"$TMP/g$M.base" 2>"$TMP/err"
  ranks 2 g$M.tp generate -m $fix --lora "$TMP/$o" $G --tp 2; ok $? "generate $M --lora --tp 2: $(cat "$TMP"/g$M.tp.r*)"
  python3 - "$TMP/g$M" <<'PY'
import json, sys
p = sys.argv[1]
ids = {k: json.load(open(f"{p}.{k}"))["ids"] for k in ("one", "tpad", "tp.o0", "base")}
print(f"generate: one-process adapter {ids['one']}, tp adapter {ids['tpad']}, --tp 2 {ids['tp.o0']}, no adapter {ids['base']}")
sys.exit(0 if len(ids["one"]) == 12 and ids["one"] == ids["tpad"] == ids["tp.o0"] and ids["one"] != ids["base"] else 1)
PY
  ok $? "generate $M: the TP adapter and --lora --tp 2 give the one-process tokens (and the adapter matters)"
done
# QLoRA under --tp: the quantized base cut by rows / whole blocks (dist/tp_quant.h) on a model whose row-parallel
# shards are whole NF4 blocks and int4 groups of 64 (1 layer, hidden 512, 8 / 4 heads, MLP 1024, trained 2 steps)
for i in $(seq 1 300); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 13))"; done >"$TMP/c.txt"
for i in $(seq 1 23); do
  echo "{\"prompt\":\"line $i:\",\"completion\":\" the quick brown fox jumps $((i % 5)) over the lazy dog $i\"}"
done >"$TMP/d2.jsonl"
"$LMC" train-tokenizer --text-file "$TMP/c.txt" --vocab 300 --style llama3 -o "$TMP/tok" 2>"$TMP/err" &&
"$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/c.txt" --docs line --val-fraction 0.1 -o "$TMP/data" 2>"$TMP/err" &&
"$LMC" train --data "$TMP/data" --arch llama --layers 1 --hidden 512 --heads 8 --kv-heads 4 --intermediate 1024 \
  --seq 16 --batch 2 --steps 2 --lr 3e-3 --threads 1 -o "$TMP/big" 2>"$TMP/err"
ok $? "the QLoRA model: $(tail -2 "$TMP/err")"
C="--data $TMP/d2.jsonl --seq 32 --lr 1e-2 --threads 1 --schedule cosine --warmup 2 --steps 6 --clip 0.5 --lora-r 4"
for k in nf4 int4; do
  ft 1 ql1$k "$TMP/big/step_000002" --batch 2 --accum 2 --qlora $k; ok $? "qlora $k one process: $(tail -n 2 "$TMP/ql1$k.r0")"
  ft 2 ql2$k "$TMP/big/step_000002" --batch 2 --accum 2 --qlora $k --tp 2; ok $? "qlora $k tp 2: $(tail -n 3 "$TMP"/ql2$k.r*)"
  grep -q "QLoRA base: 7 linears" "$TMP/ql2$k.r0"; ok $? "qlora $k tp 2 start-up: $(grep QLoRA "$TMP/ql2$k.r0")"
done
python3 - "$TMP" <<'PY'
import json, struct, sys
tmp = sys.argv[1]
def rows(p): return [json.loads(l)["loss"] for l in open(p)]
def tensors(d):
    b = open(f"{d}/adapter_model.safetensors", "rb").read()
    n = int.from_bytes(b[:8], "little"); h = json.loads(b[8:8 + n]); base = 8 + n
    return {k: struct.unpack(f"<{(v['data_offsets'][1] - v['data_offsets'][0]) // 4}f",
                             b[base + v["data_offsets"][0]:base + v["data_offsets"][1]]) for k, v in h.items() if k != "__metadata__"}
# the one-process and TP runs sum each linear's products in other orders; AVX-512 VNNI CPUs'
# NF4/int4 kernels keep them within 1e-6 (losses) / 1e-5 (adapter), the portable ones on
# AVX2-only CPUs measured 1.6e-5 / 6.7e-5 (nf4, Zen 3; six steps at lr 1e-2 amplify it)
vnni = "avx512vnni" in open("/proc/cpuinfo").read()
tl, ta = (1e-6, 1e-5) if vnni else (1e-4, 5e-4)
bad = 0
for k in ("nf4", "int4"):
    r, ref = rows(f"{tmp}/ql2{k}.metrics.jsonl"), rows(f"{tmp}/ql1{k}.metrics.jsonl")
    p, q = tensors(f"{tmp}/ql2{k}"), tensors(f"{tmp}/ql1{k}")
    worst = max(abs(a - b) / abs(b) for a, b in zip(r, ref))
    norm = (sum((x - y) ** 2 for t in q for x, y in zip(p[t], q[t])) / sum(y * y for t in q for y in q[t])) ** 0.5
    print(f"qlora {k} tp 2: losses max rel {worst:.2e}, adapter |diff| / |w| {norm:.2e}")
    bad += not (len(r) == 6 == len(ref) and sorted(p) == sorted(q) and worst <= tl and norm <= ta)
sys.exit(bad)
PY
ok $? "QLoRA nf4 and int4 at tp 2 equal one process"
# llama-tiny's o_proj has 64 input columns: 32 a rank are not whole NF4 blocks of 64
ranks 2 qlbad finetune -m $L --data "$TMP/d.jsonl" --tp 2 --qlora nf4 -o "$TMP/x"
[ $? != 0 ] && grep -q "o_proj.weight: the rank's input columns \[0, 32) are not whole blocks of 64" "$TMP/qlbad.r0"
ok $? "--qlora --tp 2 with cuts inside blocks refused: $(tail -n 2 "$TMP/qlbad.r0")"
"$LMC" finetune -m $L --data "$TMP/d.jsonl" --tp 2 --lora-dropout 0.1 -o "$TMP/x" 2>"$TMP/err"
[ $? = 2 ] && grep -q "dropout" "$TMP/err"; ok $? "--lora-dropout --tp refused: $(cat "$TMP/err")"
echo "test_mp_lora_tp: $pass passed, $fail failed"
[ $fail = 0 ]
