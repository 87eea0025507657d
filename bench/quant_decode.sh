#!/usr/bin/env bash
# quant_decode.sh — decode tokens/s of quantized folders run by lmc's model
# layer (LMC_WFMT_QUANT linears, the CPU backend's qmatmul) against lmc's
# own F16 decode on the same weights, in one run: models/kjv-llama and a
# random Llama of the 125M shape (hidden 768, 12 layers, 12 heads, MLP
# 3072, vocab 8192 from kjv-llama's tokenizer). Each folder: REPS runs of
# `lmc generate --temp 0 --ignore-eos -n N -t THREADS`, interleaved over
# the formats, the median of lmc's reported decode tok/s.
#   bench/quant_decode.sh [LMC] [OUT.md]
# Environment: REPS (3), N (64), THREADS (2).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LMC=${1:-$ROOT/build/lmc}
OUT=${2:-/dev/stdout}
REPS=${REPS:-3} N=${N:-64} THREADS=${THREADS:-2}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 "$ROOT/bench/make_r125m.py" "$ROOT/models/kjv-llama" "$TMP/r125m"
"$LMC" convert -m "$ROOT/models/kjv-llama" -o "$TMP/kjv" --dtype f16 2>/dev/null
FORMATS="f16 rtn8 gptq4 nf4"
for m in kjv r125m; do
  "$LMC" quantize -m "$TMP/$m" -o "$TMP/$m-rtn8" --method rtn --bits 8 --group -1 2>/dev/null
  "$LMC" quantize -m "$TMP/$m" -o "$TMP/$m-gptq4" --method rtn --bits 4 --group 128 2>/dev/null
  "$LMC" quantize -m "$TMP/$m" -o "$TMP/$m-nf4" --method nf4 2>/dev/null
  ln -s "$TMP/$m" "$TMP/$m-f16"
done
for m in kjv r125m; do for f in $FORMATS; do : >"$TMP/$m-$f.tps"; done; done
for r in $(seq "$REPS"); do
  for m in kjv r125m; do
    for f in $FORMATS; do
      "$LMC" generate -m "$TMP/$m-$f" -p "And the king said" -n "$N" --temp 0 --ignore-eos -t "$THREADS" 2>&1 >/dev/null |
        sed -n 's/.*generated [0-9]* tokens at \([0-9.]*\) tok\/s.*/\1/p' >>"$TMP/$m-$f.tps"
    done
  done
done
med() { sort -g "$1" | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "n/a")}'; }
{
  echo "| model | format | weight bytes of the folder | decode tok/s (median of $REPS) | vs lmc F16 |"
  echo "|---|---|---|---|---|"
  for m in kjv r125m; do
    base=$(med "$TMP/$m-f16.tps")
    for f in $FORMATS; do
      v=$(med "$TMP/$m-$f.tps")
      sz=$(du -bL "$TMP/$m-$f/model.safetensors" | cut -f1)
      echo "| $m | $f | $sz | $v | $(awk -v a="$v" -v b="$base" 'BEGIN{printf "%.2fx", a/b}') |"
    done
  done
} >"$OUT"
