#!/usr/bin/env bash
# test_quant_model.sh — quantized folders run end to end as formats of
# lmc_linear (the CPU backend's qmatmul entry): for llama-tiny, qwen2-tiny
# and gpt2-tiny quantized by `lmc quantize` (rtn 8-bit per channel, rtn
# 4-bit g32 in GPTQ v1 layout, NF4, ternary), the quantized model's
# per-token NLL over a text (lmc eval --json: every next-token log-prob
# enters it) equals the dequantize-then-float model's (lmc convert --dtype
# f32) within 2e-3 nats mean (the kernels quantize activations to int8 per
# block of 32; the float model does not); for 8-bit the greedy tokens of
# lmc generate equal the float model's; and lmc serve (the batched
# scheduler) answers a greedy completion on the 8-bit model with exactly
# lmc generate's text.
# Usage: test_quant_model.sh PATH/TO/lmc
set -u
LMC="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
FIX=tests/fixtures
TMP=$(mktemp -d)
SRV=""
cleanup() { [ -n "$SRV" ] && kill "$SRV" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
fail=0
ok() { if [ "$1" -eq 0 ]; then echo "ok: $2"; else echo "FAIL: $2"; fail=1; fi; }
TEXT="And the king said unto his servants, Go ye and search the land, and bring me word again of all that ye find there."

nll() { "$LMC" eval -m "$1" --text "$TEXT" --json 2>"$TMP/err" | python3 -c "import json,sys;print(json.load(sys.stdin)['nll'])"; }

for m in llama-tiny qwen2-tiny gpt2-tiny; do
  for args in "--method rtn --bits 8 --group -1" "--method rtn --bits 4 --group 32" "--method nf4" "--method ternary"; do
    tag=$(echo "$args" | tr -d ' -')
    Q="$TMP/$m-$tag" D="$TMP/$m-$tag-f32"
    "$LMC" quantize -m "$FIX/$m" -o "$Q" $args 2>"$TMP/err"
    if [ $? -ne 0 ]; then
      # a shape the format cannot hold (NF4 blocks of 64, rows of the tiny fixtures) is refused by quantize: not this test's subject
      grep -q "multiple of 64\|blocks of 64" "$TMP/err" && { echo "skip: $m $args: $(cat "$TMP/err")"; continue; }
      ok 1 "$m quantize $args: $(cat "$TMP/err")"; continue
    fi
    "$LMC" convert -m "$Q" -o "$D" --dtype f32 2>"$TMP/err"; ok $? "$m dequantize $args"
    a=$(nll "$Q"); ok $? "$m $args: the quantized folder runs (eval): $(cat "$TMP/err")"
    b=$(nll "$D")
    python3 -c "import sys;a,b=float(sys.argv[1]),float(sys.argv[2]);sys.exit(0 if abs(a-b)<=2e-3 else 1)" "$a" "$b"
    ok $? "$m $args: quantized nll $a = dequantized-float nll $b (2e-3)"
    if [ "$tag" = "methodrtnbits8group1" ]; then
      g1=$("$LMC" generate -m "$Q" -p "The king said" -n 32 --temp 0 --ignore-eos --json 2>/dev/null | python3 -c "import json,sys;print(json.load(sys.stdin)['ids'])")
      g2=$("$LMC" generate -m "$D" -p "The king said" -n 32 --temp 0 --ignore-eos --json 2>/dev/null | python3 -c "import json,sys;print(json.load(sys.stdin)['ids'])")
      [ -n "$g1" ] && [ "$g1" = "$g2" ]; ok $? "$m 8-bit greedy ids equal the float model's: $g1 vs $g2"
    fi
  done
done

# lmc info on quantized folders: method, bits per quantized weight (codes
# plus the kernel's per-group float scale and int32 zero: 4-bit g32 on the
# tiny fixture is ~6.1), bytes by tensor kind
for tag in "methodrtnbits8group1 8 10" "methodrtnbits4group32 4 7"; do
  set -- $tag
  "$LMC" info -m "$TMP/llama-tiny-$1" --json >"$TMP/info.json" 2>"$TMP/err"
  python3 - "$TMP/info.json" "$2" "$3" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); lo, hi = float(sys.argv[2]), float(sys.argv[3])
assert j["quant_method"] == "gptq", j
assert lo <= j["quantized_bits_per_weight"] < hi, j
assert j["bytes_linear_dense"] == 0 and j["bytes_linear_quantized"] > 0 and j["bytes_embedding"] > 0, j
PY
  ok $? "info $1: gptq, bits per weight in [$2, $3), bytes by kind"
done
"$LMC" info -m "$FIX/llama-tiny" --json | python3 -c "import json,sys;j=json.load(sys.stdin);assert j['quant_method']=='none' and j['bytes_linear_quantized']==0 and j['bytes_linear_dense']>0"
ok $? "info on a float folder: no quantization"
for m in gpt2-tiny qwen2-tiny; do  # biases of quantized linears count once, packed tensors as their weight
  a=$("$LMC" info -m "$FIX/$m" --json | python3 -c "import json,sys;print(json.load(sys.stdin)['parameters'])")
  b=$("$LMC" info -m "$TMP/$m-methodrtnbits8group1" --json | python3 -c "import json,sys;print(json.load(sys.stdin)['parameters'])")
  [ -n "$a" ] && [ "$a" = "$b" ]; ok $? "$m: info parameters of the 8-bit folder ($b) = the float folder's ($a)"
done

# lmc eval --kl-base: a model against itself has KL 0 and full top-1
# agreement; the 8-bit folder against its float source a small positive KL
# (p99 >= mean), ternary a larger one
kl() { "$LMC" eval -m "$1" --kl-base "$2" --text "$TEXT" --json 2>/dev/null; }
kl "$FIX/llama-tiny" "$FIX/llama-tiny" | python3 -c "import json,sys;j=json.load(sys.stdin);assert j['kl_mean']==0 and j['kl_p99']==0 and j['top1_agree']==1,j"
ok $? "eval --kl-base self: KL 0, top-1 1"
k8=$(kl "$TMP/llama-tiny-methodrtnbits8group1" "$FIX/llama-tiny")
kt=$(kl "$TMP/llama-tiny-methodternary" "$FIX/llama-tiny")
python3 - "$k8" "$kt" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert 0 < a["kl_mean"] < 1e-3 and a["kl_p99"] >= a["kl_mean"] and 0 <= a["top1_agree"] <= 1, a
assert b["kl_mean"] > a["kl_mean"] and b["kl_p99"] >= b["kl_mean"], (a, b)
PY
ok $? "eval --kl-base: 8-bit $k8; ternary $kt"

# the scheduler: lmc serve on the 8-bit llama folder
Q="$TMP/llama-tiny-methodrtnbits8group1"
want=$("$LMC" generate -m "$Q" -p "The king said" -n 16 --temp 0 --ignore-eos --no-special --json 2>/dev/null | python3 -c "import json,sys;print(json.load(sys.stdin)['text'])")
mkfifo "$TMP/log"
"$LMC" serve -m "$Q" --host 127.0.0.1 --port 0 >"$TMP/log" 2>&1 &
SRV=$!
exec 3<"$TMP/log"
PORT=""
while IFS= read -r line <&3; do
  case "$line" in *"listening on http://127.0.0.1:"*) PORT=${line##*127.0.0.1:}; PORT=${PORT%%[!0-9]*}; break ;; esac
done
cat <&3 >/dev/null &  # keep draining the server's log
if [ -z "$PORT" ]; then ok 1 "serve on the quantized folder started"; else
  got=$(curl -s -d '{"prompt":"The king said","max_tokens":16,"temperature":0,"ignore_eos":true}' "http://127.0.0.1:$PORT/v1/completions" |
        python3 -c "import json,sys;print(json.load(sys.stdin)['choices'][0]['text'])")
  [ -n "$want" ] && [ "$got" = "$want" ]; ok $? "serve (scheduler) on the 8-bit folder = generate: '$got' vs '$want'"
fi
exit $fail
