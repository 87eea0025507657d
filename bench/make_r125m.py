#!/usr/bin/env python3
"""make_r125m.py SRC DST — a random Llama of the 125M bench shape (hidden
768, 12 layers, 12 heads, MLP 3072, vocab 8192) in DST, F16 on disk, with
SRC's config fields otherwise and its tokenizer files (SRC: models/kjv-llama,
whose tokenizer has the 8192 ids). Seeded: the same bytes every time. Used by
bench/quant_decode.sh and bench/run_finetune_cpu.sh; make_random_llama() is
also bench/make_spec_target.py's writer (another shape, BF16)."""
import json, os, shutil, struct, sys
import numpy as np


def bf16_bits(a):  # float32 -> bf16 bits, round to nearest even
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def make_random_llama(src, dst, C, L, H, I, V, dtype="F16", cfg_extra=None, indent=None):
    """A seeded random Llama (weights N(0, 0.02), norms 1, tied to SRC's
    tie_word_embeddings: no lm_head) of hidden C, L layers, H heads = kv heads,
    MLP I, vocab V in DST, dtype F16 or BF16 on disk, SRC's config and
    tokenizer files otherwise; cfg_extra: more config fields."""
    os.makedirs(dst, exist_ok=True)
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg.update(hidden_size=C, intermediate_size=I, num_hidden_layers=L, num_attention_heads=H,
               num_key_value_heads=H, head_dim=C // H, vocab_size=V, **(cfg_extra or {}),
               torch_dtype={"F16": "float16", "BF16": "bfloat16"}[dtype])
    cfg.pop("rope_parameters", None)
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=indent)
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
        a = np.ones(s) if len(s) == 1 else rng.normal(0, 0.02, s)
        b = (a.astype(np.float16) if dtype == "F16" else bf16_bits(a)).tobytes()
        hdr[n] = {"dtype": dtype, "shape": list(s), "data_offsets": [off, off + len(b)]}
        off += len(b); blobs.append(b)
    h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
    with open(os.path.join(dst, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b in blobs: f.write(b)


if __name__ == "__main__":
    make_random_llama(*sys.argv[1:3], C=768, L=12, H=12, I=3072, V=8192)
