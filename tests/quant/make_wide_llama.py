"""make_wide_llama.py — a random Llama folder whose matrices have rows of
256 inputs (hidden 256, intermediate 512), so that every GGUF block type,
the K-quants' 256-element super-blocks included, applies to each linear;
untied head, GQA (4 heads, 2 kv heads, head_dim 64), llama-tiny's
SentencePiece tokenizer. numpy only. usage: make_wide_llama.py TOKENIZER_DIR OUT_DIR"""
import json
import os
import shutil
import struct
import sys

import numpy as np

src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
V, C, I, L, H, KV, HD = 512, 256, 512, 2, 4, 2, 64
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V, "hidden_size": C,
       "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": KV,
       "head_dim": HD, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "hidden_act": "silu",
       "tie_word_embeddings": False, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
       "torch_dtype": "float32"}
json.dump(cfg, open(f"{out}/config.json", "w"), indent=1)
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(f"{src}/{f}", f"{out}/{f}")
rng = np.random.default_rng(1234)
t = {"model.embed_tokens.weight": rng.normal(0, 1.0, (V, C)), "model.norm.weight": 1 + 0.1 * rng.normal(size=C),
     "lm_head.weight": rng.normal(0, 0.5 / np.sqrt(C), (V, C)) * 8}
for l in range(L):
    p = f"model.layers.{l}."
    for n, shp in (("self_attn.q_proj", (H * HD, C)), ("self_attn.k_proj", (KV * HD, C)),
                   ("self_attn.v_proj", (KV * HD, C)), ("self_attn.o_proj", (C, H * HD)),
                   ("mlp.gate_proj", (I, C)), ("mlp.up_proj", (I, C)), ("mlp.down_proj", (C, I))):
        t[p + n + ".weight"] = rng.normal(0, 1.5 / np.sqrt(shp[1]), shp)
    t[p + "input_layernorm.weight"] = 1 + 0.1 * rng.normal(size=C)
    t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.normal(size=C)
hdr, blobs, off = {}, [], 0
for n, a in t.items():
    b = np.ascontiguousarray(a, dtype=np.float32).tobytes()
    hdr[n] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
with open(f"{out}/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
