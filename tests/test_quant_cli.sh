#!/usr/bin/env bash
# test_quant_cli.sh — `lmc quantize` and quantized folders in: rtn (4-bit
# g32 sym v1, 8-bit per-channel asym v2), nf4 and ternary on GPT-2 and Qwen2
# fixtures; `lmc convert --dtype f32` dequantizes them; when numpy is
# installed, tests/quant/quant_ref.py (numpy only, written from the formats'
# public descriptions) dequantizes lmc's files to the same floats bit for
# bit, and writes GPTQ (4-bit act-order g_idx, 3-bit v2, 8-bit, 2-bit), AWQ
# GEMM, NF4 and BitNet folders that lmc dequantizes to numpy's floats bit for
# bit. An 8-bit model's perplexity stays within 1% of the float model's.
# A quantization_config that disagrees with the tensors, bad options and
# unpackable shapes fail with messages that name the tensor or option.
# --head quantizes lm_head too (rtn; gptq rounds the head to nearest) and the model runs it quantized.
# Usage: test_quant_cli.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"
REF=tests/quant/quant_ref.py
have_np=0; python3 -c "import numpy" 2>/dev/null && have_np=1
TEXT="And God said, Let there be light: and there was light. And God saw the light, that it was good."
ppl() { "$LMC" eval -m "$1" --text "$TEXT" --json 2>/dev/null | sed -n 's/.*"ppl":\([0-9.e+-]*\).*/\1/p'; }

for m in gpt2-tiny qwen2-tiny; do
  SRC=tests/fixtures/$m
  i=0
  for args in "--method rtn --bits 4 --group 32 --sym" "--method rtn --bits 8 --group -1 --asym --v2" \
              "--method nf4" "--method ternary" "--method rtn --bits 4 --group 32 --sym --clip-search"; do
    i=$((i+1)); Q="$TMP/$m-q$i"; D="$TMP/$m-d$i"
    "$LMC" quantize -m "$SRC" -o "$Q" $args 2>"$TMP/err"; ok $? "$m quantize $args: $(cat "$TMP/err")"
    grep -q '"quantization_config"' "$Q/config.json"; ok $? "$m $args: quantization_config written"
    "$LMC" convert -m "$Q" -o "$D" --dtype f32 2>"$TMP/err"; ok $? "$m dequantize $args: $(cat "$TMP/err")"
    if [ $have_np = 1 ]; then
      python3 $REF dequant "$Q" "$TMP/np" >/dev/null && python3 $REF compare "$TMP/np" "$D" >"$TMP/cmp" 2>&1
      ok $? "$m $args: numpy dequantizes lmc's file to other floats: $(tail -4 "$TMP/cmp")"
      rm -rf "$TMP/np"
    fi
    if [ $i = 2 ]; then
      p0=$(ppl "$SRC"); p=$(ppl "$D")
      awk -v a="$p" -v b="$p0" 'BEGIN { d = a / b - 1; if (d < 0) d = -d; exit !(a > 0 && d < 0.01) }'
      ok $? "$m 8-bit perplexity $p vs float $p0"
    fi
  done
done

# GPTQ calibrated through the model (4-bit g32 act-order; 3-bit per-channel asym v2; 4-bit g32 with the
# mse range search)
head -c 12000 /work/shared/data/kjv.txt 2>/dev/null >"$TMP/calib.txt" || true
[ -s "$TMP/calib.txt" ] || yes "In the beginning God created the heaven and the earth." | head -200 >"$TMP/calib.txt"
for m in gpt2-tiny llama-tiny; do
  i=0
  for args in "--bits 4 --group 32 --act-order" "--bits 3 --group -1 --asym --v2" "--bits 4 --group 32 --clip-search"; do
    i=$((i+1)); Q="$TMP/$m-gptq$i"
    [ $m = llama-tiny ] && [ $i = 2 ] && continue # 176 inputs x 3 bits are not whole words
    "$LMC" quantize -m tests/fixtures/$m -o "$Q" --method gptq $args --calib "$TMP/calib.txt" --calib-tokens 600 2>"$TMP/err"
    ok $? "$m gptq $args: $(cat "$TMP/err")"
    grep -q "layer 2 of 2 quantized on 600 calibration tokens" "$TMP/err"; ok $? "$m gptq: per-layer calibration ran"
    "$LMC" convert -m "$Q" -o "$TMP/gd" --dtype f32 2>"$TMP/err"; ok $? "$m gptq dequantize: $(cat "$TMP/err")"
    p0=$(ppl tests/fixtures/$m); p=$(ppl "$TMP/gd")
    awk -v a="$p" -v b="$p0" 'BEGIN { d = a / b - 1; if (d < 0) d = -d; exit !(a > 0 && d < 0.05) }'
    ok $? "$m gptq $args perplexity $p vs float $p0"
    if [ $have_np = 1 ]; then
      python3 $REF dequant "$Q" "$TMP/np" >/dev/null && python3 $REF compare "$TMP/np" "$TMP/gd" >"$TMP/cmp" 2>&1
      ok $? "$m gptq: numpy dequantizes lmc's file to other floats: $(tail -4 "$TMP/cmp")"
    fi
    rm -rf "$TMP/np" "$TMP/gd"
  done
done
# a bf16 model: the running model keeps bf16 matrices, the quantized layers go back in bf16
"$LMC" convert -m tests/fixtures/llama-tiny -o "$TMP/bf16" --dtype bf16 2>/dev/null
"$LMC" quantize -m "$TMP/bf16" -o "$TMP/gbf" --method gptq --bits 4 --group 32 --calib "$TMP/calib.txt" --calib-tokens 300 2>"$TMP/err"
ok $? "gptq on a bf16 model: $(cat "$TMP/err")"
"$LMC" quantize -m tests/fixtures/gpt2-tiny -o "$TMP/x" --method gptq 2>"$TMP/err"
[ $? = 2 ] && grep -q "calib" "$TMP/err"; ok $? "gptq without --calib: $(cat "$TMP/err")"
# --true-sequential: each stage of a layer calibrated on the layer with the earlier stages quantized. Layer 0's
# q/k/v see the embeddings either way (the same integers as per layer); its o and down see quantized q/k/v and
# gate/up (other integers)
for v in "" "--true-sequential"; do
  "$LMC" quantize -m tests/fixtures/llama-tiny -o "$TMP/gseq$v" --method gptq --bits 4 --group 32 $v --calib "$TMP/calib.txt" \
    --calib-tokens 600 2>"$TMP/err"; ok $? "gptq $v: $(cat "$TMP/err")"
done
grep -q '"true_sequential":[[:space:]]*true' "$TMP/gseq--true-sequential/config.json"; ok $? "--true-sequential in quantization_config"
grep -q '"true_sequential":[[:space:]]*false' "$TMP/gseq/config.json"; ok $? "per layer by default"
python3 - "$TMP/gseq--true-sequential" "$TMP/gseq" <<'PY'
import json, struct, sys
def tensors(d):
    b = open(d + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
p = "model.layers.0."
same = all(a[p + f"self_attn.{x}_proj.qweight"] == b[p + f"self_attn.{x}_proj.qweight"] for x in "qkv")
o = a[p + "self_attn.o_proj.qweight"] != b[p + "self_attn.o_proj.qweight"]
d = a[p + "mlp.down_proj.qweight"] != b[p + "mlp.down_proj.qweight"]
print(f"layer 0 q/k/v same: {same}, o differs: {o}, down differs: {d}")
sys.exit(0 if same and o and d else 1)
PY
ok $? "--true-sequential: layer 0's q/k/v as per layer, its o and down from the quantized stages before them"
"$LMC" convert -m "$TMP/gseq--true-sequential" -o "$TMP/gsd" --dtype f32 2>/dev/null
p0=$(ppl tests/fixtures/llama-tiny); p=$(ppl "$TMP/gsd")
awk -v a="$p" -v b="$p0" 'BEGIN { d = a / b - 1; if (d < 0) d = -d; exit !(a > 0 && d < 0.05) }'
ok $? "gptq --true-sequential perplexity $p vs float $p0"
"$LMC" quantize -m tests/fixtures/llama-tiny -o "$TMP/x" --method rtn --true-sequential 2>"$TMP/err"
[ $? = 2 ] && grep -q -- "true-sequential" "$TMP/err"; ok $? "--true-sequential with rtn refused: $(cat "$TMP/err")"

if [ $have_np = 1 ]; then
  for meth in gptq4-act gptq3-v2 gptq8 gptq2 awq nf4 bitnet; do
    W="$TMP/w-$meth"
    python3 $REF write tests/fixtures/gpt2-tiny "$W" $meth >/dev/null 2>"$TMP/err"; ok $? "numpy write $meth: $(cat "$TMP/err")"
    "$LMC" convert -m "$W" -o "$TMP/wl" --dtype f32 2>"$TMP/err"; ok $? "lmc reads numpy's $meth: $(cat "$TMP/err")"
    python3 $REF dequant "$W" "$TMP/wn" >/dev/null && python3 $REF compare "$TMP/wn" "$TMP/wl" >"$TMP/cmp" 2>&1
    ok $? "$meth: lmc and numpy dequantize to other floats: $(tail -4 "$TMP/cmp")"
    rm -rf "$TMP/wl" "$TMP/wn"
  done
  # a config that disagrees with the tensors: 3-bit files declared 4-bit
  sed -i 's/"bits": 3/"bits": 4/' "$TMP/w-gptq3-v2/config.json"
  "$LMC" convert -m "$TMP/w-gptq3-v2" -o "$TMP/bad" --dtype f32 2>"$TMP/err"
  [ $? = 1 ] && grep -q "transformer.h.0.attn.c_attn" "$TMP/err" && grep -q "quantization_config" "$TMP/err"
  ok $? "bits disagree: $(cat "$TMP/err")"
  # group size that disagrees
  sed -i 's/"group_size": 32/"group_size": 64/' "$TMP/w-awq/config.json"
  "$LMC" convert -m "$TMP/w-awq" -o "$TMP/bad" --dtype f32 2>"$TMP/err"
  [ $? = 1 ] && grep -q "scales' has shape" "$TMP/err"; ok $? "group_size disagrees: $(cat "$TMP/err")"
else
  echo "test_quant_cli: numpy cross-checks skipped (pip install numpy)"
fi

# --head: lm_head quantized too (llama-tiny's head is untied): GPTQ's "lm_head": true and lm_head.qweight
# written; the model runs its head through the quantized kernel (perplexity moves off the folder without
# --head) and stays within 1% (8-bit) / 5% (4-bit g32) of the float model's; gptq rounds the head to nearest
p0=$(ppl tests/fixtures/llama-tiny)
for args in "--method rtn --bits 8 --group -1" "--method rtn --bits 4 --group 32" \
            "--method gptq --bits 4 --group 32 --calib $TMP/calib.txt --calib-tokens 300"; do
  for h in "" --head; do
    Q="$TMP/head$h"; rm -rf "$Q"
    "$LMC" quantize -m tests/fixtures/llama-tiny -o "$Q" $args $h 2>"$TMP/err"; ok $? "quantize $args $h: $(cat "$TMP/err")"
  done
  grep -Eq '"lm_head":[[:space:]]*true' "$TMP/head--head/config.json"; ok $? "$args --head: \"lm_head\": true in config.json"
  grep -Eq '"lm_head":[[:space:]]*false' "$TMP/head/config.json"; ok $? "$args: \"lm_head\": false without --head"
  head -c 100000 "$TMP/head--head/model.safetensors" | grep -aq '"lm_head.qweight"'; ok $? "$args --head: lm_head.qweight written"
  head -c 100000 "$TMP/head/model.safetensors" | grep -aq '"lm_head.weight"'; ok $? "$args: float lm_head kept without --head"
  ph=$(ppl "$TMP/head--head"); pn=$(ppl "$TMP/head")
  tol=0.05; case "$args" in *"bits 8"*) tol=0.01 ;; esac
  awk -v a="$ph" -v b="$p0" -v t=$tol 'BEGIN { d = a / b - 1; if (d < 0) d = -d; exit !(a > 0 && d < t) }'
  ok $? "$args --head: perplexity $ph vs float $p0 (tolerance $tol)"
  awk -v a="$ph" -v b="$pn" 'BEGIN { exit !(a > 0 && b > 0 && a != b) }'
  ok $? "$args --head: perplexity $ph differs from the float-head folder's $pn (the quantized head runs)"
done
"$LMC" quantize -m tests/fixtures/llama-tiny -o "$TMP/x" --method nf4 --clip-search 2>"$TMP/err"
[ $? = 2 ] && grep -q -- "--clip-search" "$TMP/err"; ok $? "--clip-search with nf4 refused: $(cat "$TMP/err")"
"$LMC" quantize -m tests/fixtures/llama-tiny -o "$TMP/x" --method nf4 --head 2>"$TMP/err"
[ $? = 2 ] && grep -q -- "--head" "$TMP/err"; ok $? "--head with nf4 refused: $(cat "$TMP/err")"

"$LMC" quantize -m tests/fixtures/llama-tiny -o "$TMP/x" --method rtn --bits 3 2>"$TMP/err"
[ $? = 1 ] && grep -q "mlp" "$TMP/err" && grep -q "whole int32 words" "$TMP/err"; ok $? "unpackable shape named: $(cat "$TMP/err")"
"$LMC" quantize -m tests/fixtures/gpt2-tiny -o "$TMP/x" --method awq 2>"$TMP/err"
[ $? = 2 ] && grep -q "expected rtn, gptq, nf4 or ternary" "$TMP/err"; ok $? "unknown method: $(cat "$TMP/err")"
"$LMC" quantize -m tests/fixtures/gpt2-tiny -o "$TMP/x" --method rtn --bits 5 2>"$TMP/err"
[ $? = 2 ]; ok $? "bits 5 refused: $(cat "$TMP/err")"
echo "test_quant_cli: $pass passed, $fail failed"
[ $fail = 0 ]
