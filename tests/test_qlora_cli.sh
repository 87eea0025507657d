#!/usr/bin/env bash
# test_qlora_cli.sh — `lmc finetune --qlora` end to end: NF4 and int4
# quantized at load (llama-tiny, gpt2-tiny) and over a folder `lmc quantize
# --method nf4` / `rtn` wrote; the loss falls, the adapter is a PEFT folder
# that `generate --lora` and `eval --lora` load over the quantized base;
# the quantized folder is byte-for-byte unchanged; NF4 quantized at load
# and the NF4 folder give the same first step. Usage: test_qlora_cli.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"

for i in $(seq 1 24); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want\"}"
done >"$TMP/d.jsonl"
COMMON="--seq 32 --batch 4 --lr 1e-2 --threads 2 --schedule constant --steps 12 --lora-r 4 --lora-alpha 8"

falls() { # metrics file: the last loss below 0.97 x the first
  local first last
  first=$(head -1 "$1" | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
  last=$(tail -1 "$1" | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
  awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a * 0.97) }'
}

for M in llama-tiny:nf4 gpt2-tiny:int4; do
  FIX=tests/fixtures/${M%%:*}; Q=${M##*:}
  "$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/ad-$Q" $COMMON --qlora "$Q" 2>"$TMP/err"
  ok $? "$M finetune --qlora: $(tail -3 "$TMP/err")"
  grep -q "quantized at load" "$TMP/err"; ok $? "$M base quantized at load"
  falls "$TMP/ad-$Q.metrics.jsonl"; ok $? "$M QLoRA loss falls"
  grep -Eq '"peft_type":[[:space:]]*"LORA"' "$TMP/ad-$Q/adapter_config.json"; ok $? "$M PEFT adapter_config"
  "$LMC" generate -m "$FIX" --lora "$TMP/ad-$Q" -p "Verse 3 says:" -n 4 --temp 0 >/dev/null 2>"$TMP/err"
  ok $? "$M generate --lora: $(cat "$TMP/err")"
done

# over an already-quantized folder: trained on it, served from it
FIX=tests/fixtures/llama-tiny
for METHOD in nf4 rtn; do
  "$LMC" quantize -m "$FIX" -o "$TMP/q-$METHOD" --method "$METHOD" --bits 4 --group 64 >/dev/null 2>&1
  ok $? "quantize --method $METHOD"
  sum0=$(cat "$TMP/q-$METHOD"/*.safetensors | cksum)
  "$LMC" finetune -m "$TMP/q-$METHOD" --data "$TMP/d.jsonl" -o "$TMP/ad-q$METHOD" $COMMON --qlora nf4 2>"$TMP/err"
  ok $? "finetune over the $METHOD folder: $(tail -3 "$TMP/err")"
  grep -q "kept as quantized in the folder" "$TMP/err"; ok $? "$METHOD folder used as stored"
  falls "$TMP/ad-q$METHOD.metrics.jsonl"; ok $? "$METHOD-folder QLoRA loss falls"
  [ "$(cat "$TMP/q-$METHOD"/*.safetensors | cksum)" = "$sum0" ]; ok $? "$METHOD folder unchanged"
  "$LMC" generate -m "$TMP/q-$METHOD" --lora "$TMP/ad-q$METHOD" -p "Verse 3 says:" -n 4 --temp 0 >/dev/null 2>"$TMP/err"
  ok $? "generate --lora over the $METHOD base: $(cat "$TMP/err")"
  TEXT="Verse 7 says: the lord is my shepherd 2 and I shall not want"
  a=$("$LMC" eval -m "$TMP/q-$METHOD" --text "$TEXT" --json 2>/dev/null | sed 's/.*"nll":\([0-9.e+-]*\).*/\1/')
  b=$("$LMC" eval -m "$TMP/q-$METHOD" --lora "$TMP/ad-q$METHOD" --text "$TEXT" --json 2>/dev/null | sed 's/.*"nll":\([0-9.e+-]*\).*/\1/')
  awk -v a="$a" -v b="$b" 'BEGIN { exit !(b < a) }'; ok $? "$METHOD base + adapter: lower NLL on trained text ($a -> $b)"
done

# NF4 quantized at load and the NF4 folder `lmc quantize` writes hold the same
# numbers (bitsandbytes' blocks of 64 over each flattened weight): equal first steps
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/x1" $COMMON --steps 2 --qlora nf4 2>/dev/null
"$LMC" finetune -m "$TMP/q-nf4" --data "$TMP/d.jsonl" -o "$TMP/x2" $COMMON --steps 2 --qlora nf4 2>/dev/null
l1=$(head -1 "$TMP/x1.metrics.jsonl" | cut -d, -f2,4); l2=$(head -1 "$TMP/x2.metrics.jsonl" | cut -d, -f2,4)
[ -n "$l1" ] && [ "$l1" = "$l2" ]; ok $? "NF4 at load = NF4 folder: step 1 ($l1 vs $l2)"

# bad input: a quantized folder whose linears do not fit its config; an unknown kind
cp -r "$TMP/q-nf4" "$TMP/q-bad"
sed -i 's/"intermediate_size":[[:space:]]*176/"intermediate_size": 192/' "$TMP/q-bad/config.json"
"$LMC" finetune -m "$TMP/q-bad" --data "$TMP/d.jsonl" -o "$TMP/bad" $COMMON --qlora nf4 2>"$TMP/err"
[ $? = 1 ] && grep -q "mlp" "$TMP/err"; ok $? "mismatched quantized folder refused, naming the tensor: $(cat "$TMP/err")"
[ ! -e "$TMP/bad" ]; ok $? "nothing written on failure"
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/bad" $COMMON --qlora fp4 2>/dev/null
[ $? = 2 ]; ok $? "--qlora fp4 refused"

# lmc info --qlora: the base's 4-bit bytes on the host (NF4 with float
# absmax: 4.5 bits per weight) and in the GPU's compact form (absmax
# double-quantized: less, above the 4.127 bits of codes + codes of absmax)
"$LMC" info -m tests/fixtures/llama-tiny --qlora nf4 --json >"$TMP/info" 2>&1
python3 - "$TMP/info" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["qlora"] == "nf4" and r["linears"] == 14 and r["weights"] > 0, r
assert abs(r["host_bits_per_weight"] - 4.5) < 0.01, r
assert 4.127 < r["device_bits_per_weight"] and r["device_bytes"] > 0 and r["f32_bytes"] > 0, r
PY
ok $? "info --qlora nf4: $(cat "$TMP/info")"
"$LMC" info -m tests/fixtures/llama-tiny --qlora fp4 2>/dev/null
[ $? = 2 ]; ok $? "info --qlora fp4 refused"

# the GPU: --device cuda --dtype fp32 runs where there is one, its first two
# losses (before and after one AdamW step) those of the CPU run (ad-nf4
# above) within 1e-4 — later steps may drift: AdamW's g / (|g| + 1e-8)
# turns rounding-level gradients into whole steps; elsewhere a clean error
# naming cuda, never the QLoRA refusal of a backend without the 4-bit path
FIX=tests/fixtures/llama-tiny
"$LMC" finetune -m "$FIX" --data "$TMP/d.jsonl" -o "$TMP/cu" $COMMON --qlora nf4 --device cuda --dtype fp32 2>"$TMP/err"
rc=$?
if [ $rc = 0 ]; then
  grep -q "on cuda: .* MiB" "$TMP/err"; ok $? "QLoRA on cuda logs the base's device bytes: $(grep 'QLoRA base' "$TMP/err")"
  paste <(head -2 "$TMP/ad-nf4.metrics.jsonl" | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/') \
        <(head -2 "$TMP/cu.metrics.jsonl" | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/') |
    awk '{d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * $1) bad = 1} END {exit bad}'
  ok $? "QLoRA --device cuda --dtype fp32: the CPU run's losses"
else
  [ $rc = 1 ] && grep -qi "cuda" "$TMP/err" && ! grep -q "no quantized float matmul" "$TMP/err"
  ok $? "QLoRA --device cuda without a GPU fails cleanly ($rc: $(cat "$TMP/err"))"
fi

echo "test_qlora_cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
