#!/usr/bin/env bash
# test_mp_tp_quant.sh — `lmc generate --tp 2` on float16/bfloat16 and
# quantized folders (dist/tp_quant.h: the shards keep the folder's format,
# nothing is dequantized to float32): a 1-layer llama (hidden 512, 8 heads /
# 4 KV, MLP 1024, trained 2 steps here) as BF16 and F16 folders, rtn int8
# and int4 (groups of 128, GPTQ v1 layout), bitsandbytes NF4, and GGUF
# Q8_0, Q4_0, Q4_K (row-parallel o/down cut into whole 256-blocks); qwen2-
# tiny (one KV head replicated, q/k/v biases) as BF16, rtn int4 g32 and
# Q4_0. Two ranks give the one-process greedy ids and seeded top-k samples
# of the same folder. Cuts that fall inside a block or group are refused
# naming the tensor and the reason (qwen2-tiny NF4: o_proj's 32 columns per
# rank are not whole blocks of 64; rtn with one group per row).
# Usage: test_mp_tp_quant.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" LMC_DIST_TIMEOUT=120
for i in $(seq 1 300); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 13))"; done >"$TMP/c.txt"
"$LMC" train-tokenizer --text-file "$TMP/c.txt" --vocab 300 --style llama3 -o "$TMP/tok" 2>"$TMP/err" &&
"$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/c.txt" --docs line --val-fraction 0.1 -o "$TMP/data" 2>"$TMP/err" &&
"$LMC" train --data "$TMP/data" --arch llama --layers 1 --hidden 512 --heads 8 --kv-heads 4 --intermediate 1024 \
  --seq 16 --batch 2 --steps 2 --lr 3e-3 --threads 1 -o "$TMP/big" 2>"$TMP/err" ||
  { echo "FAIL: model: $(tail -3 "$TMP/err")" >&2; exit 1; }
B="$TMP/big/step_000002" Q=tests/fixtures/qwen2-tiny
mk() { "$@" 2>"$TMP/err" >/dev/null; ok $? "$*: $(tail -2 "$TMP/err")"; }
mk "$LMC" convert -m "$B" -o "$TMP/b-bf16" --dtype bf16
mk "$LMC" convert -m "$B" -o "$TMP/b-f16" --dtype f16
mk "$LMC" quantize -m "$B" -o "$TMP/b-int8" --method rtn --bits 8 --group 128
mk "$LMC" quantize -m "$B" -o "$TMP/b-int4" --method rtn --bits 4 --group 128
mk "$LMC" quantize -m "$B" -o "$TMP/b-nf4" --method nf4
mk "$LMC" convert -m "$B" -o "$TMP/b-q8_0.gguf" --dtype q8_0
mk "$LMC" convert -m "$B" -o "$TMP/b-q4_0.gguf" --dtype q4_0
mk "$LMC" convert -m "$B" -o "$TMP/b-q4_k.gguf" --dtype q4_k
grep -q "0 matrices kept F16" "$TMP/err"; ok $? "q4_k: every matrix in 256-blocks: $(cat "$TMP/err")"
mk "$LMC" convert -m $Q -o "$TMP/q-bf16" --dtype bf16
mk "$LMC" quantize -m $Q -o "$TMP/q-int4" --method rtn --bits 4 --group 32
mk "$LMC" quantize -m $Q -o "$TMP/q-nf4" --method nf4
mk "$LMC" quantize -m $Q -o "$TMP/q-int4row" --method rtn --bits 4 --group -1
mk "$LMC" convert -m $Q -o "$TMP/q-q4_0.gguf" --dtype q4_0
# tp2 OUT MODEL ARGS...: two ranks of lmc generate --tp 2; rank 0's stdout in OUT.o0, stderr OUT.r0
tp2() {
  local out=$1 m=$2; shift 2
  local rc=0
  port_hold
  RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT "$LMC" generate -m "$m" "$@" --tp 2 >"$TMP/$out.o1" 2>"$TMP/$out.r1" &
  local pid=$!
  RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT "$LMC" generate -m "$m" "$@" --tp 2 >"$TMP/$out.o0" 2>"$TMP/$out.r0" || rc=1
  wait $pid || rc=1
  port_release
  return $rc
}
for m in b-bf16 b-f16 b-int8 b-int4 b-nf4 b-q8_0.gguf b-q4_0.gguf b-q4_k.gguf q-bf16 q-int4 q-q4_0.gguf; do
  p="line 3: the"; [ "${m#q-}" != "$m" ] && p="hello world, this is"
  for mode in greedy sampled; do
    S="--temp 0"; [ $mode = sampled ] && S="--temp 1 --top-k 40 --seed 7"
    "$LMC" generate -m "$TMP/$m" -p "$p" -n 12 $S --ignore-eos --threads 1 --json >"$TMP/$m.$mode.one" 2>"$TMP/err"
    ok $? "$m $mode one process: $(tail -2 "$TMP/err")"
    tp2 "$m.$mode" "$TMP/$m" -p "$p" -n 12 $S --ignore-eos --threads 1 --json
    ok $? "$m $mode --tp 2: $(tail -n 2 "$TMP/$m.$mode.r0" "$TMP/$m.$mode.r1")"
    python3 - "$TMP/$m.$mode" <<'PY'
import json, sys
p = sys.argv[1]
a, b = json.load(open(f"{p}.one"))["ids"], json.load(open(f"{p}.o0"))["ids"]
print(f"{p.rsplit('/', 1)[1]}: one process {a}, --tp 2 {'the same' if a == b else b}")
sys.exit(0 if len(a) == 12 and a == b else 1)
PY
    ok $? "$m $mode: --tp 2 gives the one-process ids"
  done
done
# the formats differ from each other (each run is its own format's, not a float copy)
python3 - "$TMP" <<'PY'
import json, sys
t = sys.argv[1]
ids = {m: tuple(json.load(open(f"{t}/{m}.sampled.one"))["ids"]) for m in ("b-bf16", "b-int4", "b-nf4", "b-q4_0.gguf", "b-q4_k.gguf")}
sys.exit(0 if len(set(ids.values())) >= 3 else 1)
PY
ok $? "the quantized formats' samples differ from each other"
tp2 nf4bad "$TMP/q-nf4" -p "hello" -n 2 --threads 1
[ $? != 0 ] && grep -q "o_proj: the rank's input columns \[0, 32) are not whole blocks of 64" "$TMP/nf4bad.r0"
ok $? "qwen2-tiny NF4 at --tp 2 refused: $(cat "$TMP/nf4bad.r0")"
tp2 rowbad "$TMP/q-int4row" -p "hello" -n 2 --threads 1
[ $? != 0 ] && grep -q "cut through its quantization groups" "$TMP/rowbad.r0"
ok $? "one group per row at --tp 2 refused: $(cat "$TMP/rowbad.r0")"
echo "test_mp_tp_quant: $pass passed, $fail failed"
[ $fail = 0 ]
