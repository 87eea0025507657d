#!/usr/bin/env python3
"""make_r125m.py SRC DST — a random Llama of the 125M bench shape (hidden
768, 12 layers, 12 heads, MLP 3072, vocab 8192) in DST, F16 on disk, with
SRC's config fields otherwise and its tokenizer files (SRC: models/kjv-llama,
whose tokenizer has the 8192 ids). Seeded: the same bytes every time. Used by
bench/quant_decode.sh and bench/run_finetune_cpu.sh."""
import json, os, shutil, struct, sys
import numpy as np
src, dst = sys.argv[1:]
os.makedirs(dst, exist_ok=True)
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
