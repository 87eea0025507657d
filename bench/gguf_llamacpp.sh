#!/bin/bash
# gguf_llamacpp.sh — llama.cpp (../shared/tools/build-llamacpp-peer.sh builds it) on
# GGUF files lmc writes: llama-tokenize against `lmc tokenize` on the three fixtures
# and the default model, and llama-perplexity of the default model as F32, Q8_0 and
# Q4_0 on its validation text. Run from the repository root.

B=${1:?usage: gguf_llamacpp.sh LLAMA_CPP_BIN_DIR [TMPDIR]}
T=${2:-$(mktemp -d)}
P="In the beginning God created the heaven and the earth. And the earth was without form, and void; 1234567 \$5.00!"
for m in llama-tiny gpt2-tiny qwen2-tiny; do
  ./build/lmc convert -m tests/fixtures/$m -o $T/$m.gguf --dtype f32 2>/dev/null
  a=$($B/llama-tokenize -m $T/$m.gguf -p "$P" --ids --log-disable 2>/dev/null | tail -1 | tr -d '[] ')
  b=$(./build/lmc tokenize -m tests/fixtures/$m --text "$P" --add-special 2>/dev/null | tr -d "[] ")
  echo "$m tokens: llama.cpp=[$a] lmc=[$b] $( [ "$a" = "$b" ] && echo SAME || echo DIFFER)"
done
./build/lmc convert -m models/kjv-llama -o $T/kjv-f32.gguf --dtype f32 2>/dev/null
a=$($B/llama-tokenize -m $T/kjv-f32.gguf -p "$P" --ids --log-disable 2>/dev/null | tail -1 | tr -d '[] ')
b=$(./build/lmc tokenize -m models/kjv-llama --text "$P" 2>/dev/null | tr -d '[] ')
echo "kjv-llama tokens: llama.cpp=[$a] lmc=[$b] $( [ "$a" = "$b" ] && echo SAME || echo DIFFER)"
sed -n '71726,$p' data/kjv.txt > $T/val.txt
for q in f32 q8_0 q4_0; do
  f=$T/kjv-$q.gguf; [ -f $f ] || ./build/lmc convert -m models/kjv-llama -o $f --dtype $q 2>/dev/null
  echo "kjv $q llama-perplexity: $($B/llama-perplexity -m $f -f $T/val.txt -c 256 -b 256 -t 2 2>&1 | grep -o 'Final estimate.*')"
done
