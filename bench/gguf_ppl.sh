#!/usr/bin/env bash
# gguf_ppl.sh — perplexity of the default model (models/kjv-llama) run from
# GGUF files by lmc (`lmc eval -m FILE.gguf --chunks`, the quantized types
# kept as quantized linears) and by llama.cpp's llama-perplexity, on the
# same files and the same text (the model's validation text: data/kjv.txt
# from line 71726), same scoring (chunks of 256 tokens, second halves).
# Files: lmc convert writes F16 and Q8_0 (and F32, the source of
# llama-quantize's Q4_K_M). The engines alternate per file.
# Usage (repository root, after building build/lmc): bench/gguf_ppl.sh [PEER_DIR] [TMPDIR]
# PEER_BIN=DIR: llama.cpp's bin folder as is (no build script call); ONLY="q8_0 ...": some files.
set -euo pipefail
B=${PEER_BIN:-$(../shared/tools/build-llamacpp-peer.sh ${1:+"$1"})}
T=${2:-$(mktemp -d)}
LMC=./build/lmc
sed -n '71726,$p' data/kjv.txt >"$T/val.txt"
for q in f32 f16 q8_0; do "$LMC" convert -m models/kjv-llama -o "$T/kjv-$q.gguf" --dtype $q >/dev/null 2>&1; done
"$B/llama-quantize" "$T/kjv-f32.gguf" "$T/kjv-q4_k_m.gguf" Q4_K_M 2 >"$T/quantize.log" 2>&1
echo "| file | tensor types | lmc eval --chunks | llama-perplexity | lmc / llama.cpp - 1 |"
echo "|---|---|---|---|---|"
for q in ${ONLY:-f16 q8_0 q4_k_m}; do
  f="$T/kjv-$q.gguf"
  types=$("$LMC" info -m "$f" 2>/dev/null | sed -n 's/^on disk *//p' | sed 's/ *(GGUF v3)//; s/  */ /g')
  # each engine's whole output kept beside the files ($T/lmc-$q.log, $T/llama-$q.log)
  "$LMC" eval -m "$f" --text-file "$T/val.txt" --ctx 256 --chunks -t 2 >"$T/lmc-$q.log" 2>&1
  a=$(sed -n 's/.*perplexity \([0-9.]*\).*/\1/p' "$T/lmc-$q.log")
  "$B/llama-perplexity" -m "$f" -f "$T/val.txt" -c 256 -b 256 -t 2 >"$T/llama-$q.log" 2>&1
  b=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$T/llama-$q.log")
  echo "| $q | $types | $a | $b | $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%+.3f%%", (a / b - 1) * 100 }') |"
done
