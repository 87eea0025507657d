#!/usr/bin/env bash
# quant_quality.sh — perplexity of the default model (models/kjv-llama) on
# its validation text (data/kjv.txt from line 71726: James .. Revelation,
# never trained on) for each weight format lmc makes, all evaluated the same
# way: the quantized weights dequantized back to float (`lmc convert`) and
# run by `lmc eval` (windows of 256, stride 256), so the figure is the
# format's quantization error alone. GPTQ calibrates on the first 2,048
# tokens of the training part (Genesis). llama.cpp's Q4_K_M is not in this
# table (the peer was not built in this session).
# Usage: bench/quant_quality.sh [PATH/TO/lmc] [TMPDIR]
set -u
LMC=${1:-build/lmc}
T=${2:-$(mktemp -d)}
mkdir -p "$T"
M=models/kjv-llama
sed -n '71726,$p' data/kjv.txt >"$T/val.txt"
head -c 40000 data/kjv.txt >"$T/calib.txt"
ev() { "$LMC" eval -m "$1" --text-file "$T/val.txt" --ctx 256 --stride 256 --threads 2 2>/dev/null | tail -1; }
row() { local p; p=$(ev "$2" | sed -n 's/.*perplexity \([0-9.]*\).*/\1/p'); echo "| $1 | $p | $(awk -v a="$p" -v b="$BASE" 'BEGIN { printf "%+.2f%%", (a / b - 1) * 100 }') |"; }
BASE=$(ev "$M" | sed -n 's/.*perplexity \([0-9.]*\).*/\1/p')
echo "| format | perplexity | vs bf16 |"
echo "|---|---|---|"
echo "| bf16 (as stored) | $BASE | +0.00% |"
"$LMC" convert -m $M -o "$T/f16" --dtype f16 2>/dev/null; row "F16" "$T/f16"
for q in q8_0 q4_0; do
  "$LMC" convert -m $M -o "$T/$q.gguf" --dtype $q 2>/dev/null
  "$LMC" convert -m "$T/$q.gguf" -o "$T/$q" --dtype f32 2>/dev/null
  row "GGUF $(echo $q | tr a-z A-Z) (all matrices incl. embeddings)" "$T/$q"
done
"$LMC" quantize -m $M -o "$T/rtn8" --method rtn --bits 8 --group -1 2>/dev/null
"$LMC" convert -m "$T/rtn8" -o "$T/rtn8f" --dtype f32 2>/dev/null; row "RTN 8-bit per channel (GPTQ layout)" "$T/rtn8f"
"$LMC" quantize -m $M -o "$T/rtn4" --method rtn --bits 4 --group 128 2>/dev/null
"$LMC" convert -m "$T/rtn4" -o "$T/rtn4f" --dtype f32 2>/dev/null; row "RTN 4-bit g128 sym" "$T/rtn4f"
"$LMC" quantize -m $M -o "$T/gptq4" --method gptq --bits 4 --group 128 --act-order --calib "$T/calib.txt" --calib-tokens 2048 2>/dev/null
"$LMC" convert -m "$T/gptq4" -o "$T/gptq4f" --dtype f32 2>/dev/null; row "GPTQ 4-bit g128 sym act-order" "$T/gptq4f"
"$LMC" quantize -m $M -o "$T/nf4" --method nf4 2>/dev/null
"$LMC" convert -m "$T/nf4" -o "$T/nf4f" --dtype f32 2>/dev/null; row "NF4 (double-quantized absmax)" "$T/nf4f"
"$LMC" quantize -m $M -o "$T/rtn3" --method rtn --bits 3 --group 128 --asym --v2 2>/dev/null
"$LMC" convert -m "$T/rtn3" -o "$T/rtn3f" --dtype f32 2>/dev/null; row "RTN 3-bit g128 asym" "$T/rtn3f"
"$LMC" quantize -m $M -o "$T/gptq3" --method gptq --bits 3 --group 128 --asym --v2 --calib "$T/calib.txt" --calib-tokens 2048 2>/dev/null
"$LMC" convert -m "$T/gptq3" -o "$T/gptq3f" --dtype f32 2>/dev/null; row "GPTQ 3-bit g128 asym" "$T/gptq3f"
