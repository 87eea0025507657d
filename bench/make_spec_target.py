#!/usr/bin/env python3
"""make_spec_target.py SRC DST — a random Llama of exactly kjv-target's shape
(issue 17's speculative target: hidden 576, 12 layers, 9 heads / 9 kv heads,
head_dim 64, MLP 1536, vocab 8192, tied embeddings) in DST, BF16 on disk,
with SRC's config fields otherwise and its tokenizer files (SRC:
models/kjv-llama, whose tokenizer has the 8192 ids). Seeded numpy (std 0.02,
norms 1): the same bytes every time. A forward's cost does not depend on the
weights' values, so bench_spec's per-M costs on it stand for the trained
target's (its text is meaningless: acceptance is not measured on it).
usage: python3 bench/make_spec_target.py models/kjv-llama /tmp/spec-target"""
import json, os, shutil, struct, sys
import numpy as np
src, dst = sys.argv[1:]
os.makedirs(dst, exist_ok=True)
C, L, H, I, V = 576, 12, 9, 1536, 8192
cfg = json.load(open(os.path.join(src, "config.json")))
cfg.update(hidden_size=C, intermediate_size=I, num_hidden_layers=L, num_attention_heads=H,
           num_key_value_heads=H, head_dim=C // H, vocab_size=V, tie_word_embeddings=True,
           torch_dtype="bfloat16")
cfg.pop("rope_parameters", None)
json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=1)
for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
    if os.path.exists(os.path.join(src, f)): shutil.copy(os.path.join(src, f), dst)
rng = np.random.default_rng(0)
t = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,)}  # tied: no lm_head
for l in range(L):
    p = f"model.layers.{l}."
    for n, s in (("self_attn.q_proj", (C, C)), ("self_attn.k_proj", (C, C)), ("self_attn.v_proj", (C, C)),
                 ("self_attn.o_proj", (C, C)), ("mlp.gate_proj", (I, C)), ("mlp.up_proj", (I, C)),
                 ("mlp.down_proj", (C, I))):
        t[p + n + ".weight"] = s
    t[p + "input_layernorm.weight"] = (C,)
    t[p + "post_attention_layernorm.weight"] = (C,)

def bf16(a):  # float32 -> bf16 bits, round to nearest even
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)

hdr, off, blobs = {}, 0, []
for n, s in t.items():
    a = np.ones(s) if len(s) == 1 else rng.normal(0, 0.02, s)
    b = bf16(a).tobytes(); hdr[n] = {"dtype": "BF16", "shape": list(s), "data_offsets": [off, off + len(b)]}
    off += len(b); blobs.append(b)
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
with open(os.path.join(dst, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for b in blobs: f.write(b)
