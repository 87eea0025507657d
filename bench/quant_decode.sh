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
python3 - "$ROOT/models/kjv-llama" "$TMP/r125m" <<'PY'
import json, os, shutil, struct, sys
import numpy as np
src, dst = sys.argv[1:]
os.makedirs(dst)
C, L, H, I, V = 768, 12, 12, 3072, 8192
cfg = json.load(open(os.path.join(src, "config.json")))
cfg.update(hidden_size=C, intermediate_size=I, num_hidden_layers=L, num_attention_heads=H,
           num_key_value_heads=H, head_dim=C // H, vocab_size=V, torch_dtype="float16")
cfg.pop("rope_parameters", None)
json.dump(cfg, open(os.path.join(dst, "config.json"), "w"))
for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
    if os.path.exists(os.path.join(src, f)): shutil.copy(os.path.join(src, f), dst)
rng = np.random.default_rng(0)
t = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,)}
for l in range(L):
    p = f"model.layers.{l}."
    for n, s in (("self_attn.q_proj", (C, C)), ("self_attn.k_proj", (C, C)), ("self_attn.v_proj", (C, C)),
                 ("self_attn.o_proj", (C, C)), ("mlp.gate_proj", (I, C)), ("mlp.up_proj", (I, C)),
                 ("mlp.down_proj", (C, I))):
        t[p + n + ".weight"] = s
    t[p + "input_layernorm.weight"] = (C,)
    t[p + "post_attention_layernorm.weight"] = (C,)
hdr, off, blobs = {}, 0, []
for n, s in t.items():
    a = (np.ones(s) if len(s) == 1 else rng.normal(0, 0.02, s)).astype(np.float16)
    b = a.tobytes(); hdr[n] = {"dtype": "F16", "shape": list(s), "data_offsets": [off, off + len(b)]}
    off += len(b); blobs.append(b)
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
with open(os.path.join(dst, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for b in blobs: f.write(b)
PY
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
