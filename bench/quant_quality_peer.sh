#!/usr/bin/env bash
# quant_quality_peer.sh — issue 10's quality table in one run: perplexity and
# KL of each weight format of the default model (models/kjv-llama) on its
# validation text (data/kjv.txt from line 71726, James .. Revelation, never
# trained on), lmc's formats next to llama.cpp's on the same weights.
#   - lmc writes the F16 GGUF (the base) and Q8_0 (`lmc convert`), and
#     quantizes the HF folder with rtn (4-bit g128; 4-bit g32 with
#     --clip-search, Q4_0's bits per weight), gptq (4-bit g128,
#     act-order, CALIB_TOKENS of Genesis..Jude's opening as calibration;
#     again with --clip-search, each group's range from the mse search, and
#     with --true-sequential too, each stage of a layer calibrated on the
#     stages before it quantized) and
#     nf4 (`lmc quantize`);
#   - llama-quantize makes Q4_0 and Q4_K_M from lmc's F32 GGUF;
#   - every file and folder is scored by `lmc eval --chunks` (256-token
#     chunks, second halves: llama-perplexity's scoring) with `--kl-base` the
#     F16 GGUF (mean and p99 KL, top-1 agreement), the quantized weights run
#     as they are (GGUF types and lmc's groups are quantized linears); the
#     GGUF files also by llama-perplexity (same chunks) as the peer.
# Goals (issue 10): GPTQ 4-bit g128's perplexity increase <= llama.cpp
# Q4_K_M's; lmc RTN 4-bit <= llama.cpp Q4_0's; 8-bit within 0.1% of F16.
# Usage (repository root, build/lmc built): PEER_BIN=DIR bench/quant_quality_peer.sh [TMPDIR]
# env: M (the HF folder, default models/kjv-llama; e.g. the ~91M KJV target
#      of scripts/train_spec_pair.sh --target, trained on the same books and
#      tokenizer, for the issue's "second model that you train bigger":
#      bench/gpu_quant_quality.sh),
#      THREADS (2: both engines' threads and GPTQ's calibration forward),
#      CALIB_TOKENS (8192)
set -euo pipefail
B=${PEER_BIN:?PEER_BIN: llama.cpp bin folder (llama-quantize, llama-perplexity)}
T=${1:-$(mktemp -d)}
LMC=./build/lmc
M=${M:-models/kjv-llama}
TH=${THREADS:-2}
CT=${CALIB_TOKENS:-8192}
mkdir -p "$T"
sed -n '71726,$p' data/kjv.txt >"$T/val.txt"
head -c 200000 data/kjv.txt >"$T/calib.txt"
for q in f32 f16 q8_0; do "$LMC" convert -m $M -o "$T/kjv-$q.gguf" --dtype $q >/dev/null 2>&1; done
for q in Q4_0 Q4_K_M; do
  "$B/llama-quantize" "$T/kjv-f32.gguf" "$T/kjv-$(echo $q | tr A-Z a-z).gguf" $q 2 >"$T/quantize-$q.log" 2>&1
done
"$LMC" quantize -m $M -o "$T/rtn4" --method rtn --bits 4 --group 128 >/dev/null 2>&1
"$LMC" quantize -m $M -o "$T/gptq4" --method gptq --bits 4 --group 128 --act-order --threads "$TH" --calib "$T/calib.txt" \
  --calib-tokens "$CT" >/dev/null 2>&1
"$LMC" quantize -m $M -o "$T/gptq4s" --method gptq --bits 4 --group 128 --act-order --clip-search --threads "$TH" --calib "$T/calib.txt" \
  --calib-tokens "$CT" >/dev/null 2>&1
"$LMC" quantize -m $M -o "$T/gptq4st" --method gptq --bits 4 --group 128 --act-order --clip-search --true-sequential \
  --threads "$TH" --calib "$T/calib.txt" --calib-tokens "$CT" >/dev/null 2>&1
"$LMC" quantize -m $M -o "$T/nf4" --method nf4 >/dev/null 2>&1
"$LMC" quantize -m $M -o "$T/rtn4s32" --method rtn --bits 4 --group 32 --clip-search >/dev/null 2>&1
echo "date $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) model $M ($("$LMC" info -m "$M" 2>/dev/null | sed -n 's/^parameters *//p') parameters) threads $TH cpu $(lscpu | sed -n 's/^Model name: *//p' | head -1), load $(cut -d' ' -f1-3 /proc/loadavg); calibration $CT tokens"
echo
echo "| format | made by | MB on disk | lmc perplexity | vs F16 | KL mean | KL p99 | top-1 | llama-perplexity | vs F16 (llama.cpp) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
ev() { # $1 name $2 maker $3 path $4 gguf (1: also llama-perplexity)
  local kl="" a kl1 kl2 top b="-" bd="-"
  [ "$1" = F16 ] || kl="--kl-base $T/kjv-f16.gguf"
  # shellcheck disable=SC2086
  "$LMC" eval -m "$3" --device cpu --text-file "$T/val.txt" --ctx 256 --chunks -t "$TH" $kl >"$T/lmc-$1.log" 2>&1
  a=$(sed -n 's/.*perplexity \([0-9.]*\).*/\1/p' "$T/lmc-$1.log")
  kl1=$(sed -n 's/.*KL mean \([0-9.e-]*\).*/\1/p' "$T/lmc-$1.log"); kl2=$(sed -n 's/.*KL p99 \([0-9.e-]*\).*/\1/p' "$T/lmc-$1.log")
  top=$(sed -n 's/.*top-1 agreement \([0-9.]*%\).*/\1/p' "$T/lmc-$1.log")
  [ "$1" = F16 ] && A0=$a && kl1=0 && kl2=0 && top=100%
  if [ "$4" = 1 ]; then
    "$B/llama-perplexity" -m "$3" -f "$T/val.txt" -c 256 -b 256 -t "$TH" >"$T/llama-$1.log" 2>&1
    b=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$T/llama-$1.log")
    [ "$1" = F16 ] && B0=$b
    bd=$(awk -v a="$b" -v b="$B0" 'BEGIN { printf "%+.3f%%", (a / b - 1) * 100 }')
  fi
  echo "| $1 | $2 | $(du -sb "$3" | awk '{ printf "%.1f", $1 / 1e6 }') | $a | $(awk -v a="$a" -v b="$A0" 'BEGIN { printf "%+.3f%%", (a / b - 1) * 100 }') | $kl1 | $kl2 | $top | $b | $bd |"
}
ev F16 "lmc convert" "$T/kjv-f16.gguf" 1
ev Q8_0 "lmc convert" "$T/kjv-q8_0.gguf" 1
ev "GPTQ 4-bit g128 act-order" "lmc quantize" "$T/gptq4" 0
ev "GPTQ 4-bit g128 act-order --clip-search" "lmc quantize" "$T/gptq4s" 0
ev Q4_K_M "llama-quantize" "$T/kjv-q4_k_m.gguf" 1
ev "GPTQ 4-bit g128 act-order --clip-search --true-sequential" "lmc quantize" "$T/gptq4st" 0
ev Q4_0 "llama-quantize" "$T/kjv-q4_0.gguf" 1
ev "RTN 4-bit g128" "lmc quantize" "$T/rtn4" 0
ev "RTN 4-bit g32 --clip-search (Q4_0's bits)" "lmc quantize" "$T/rtn4s32" 0
ev NF4 "lmc quantize" "$T/nf4" 0
# K-quants need rows of whole 256-blocks: llama-quantize falls back (e.g. Q4_K -> Q5_0, Q6_K -> Q8_0) elsewhere
n=$(grep -c "falling back" "$T/quantize-Q4_K_M.log" || true)
echo
echo "llama-quantize Q4_K_M: $n tensors fell back to another type (rows not whole 256-blocks)$( [ "$n" -gt 0 ] &&
  grep "falling back" "$T/quantize-Q4_K_M.log" | sed -n 's/.*required for type *\([A-Za-z0-9_]*\)) -> falling back to *\([A-Za-z0-9_]*\).*/\1 -> \2/p' |
  sort | uniq -c | awk '{ printf "%s %s %s %s (%d)", (NR > 1 ? "," : ":"), $2, $3, $4, $1 }')"
