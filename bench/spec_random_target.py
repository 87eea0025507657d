#!/usr/bin/env python3
"""spec_random_target.py OUT_DIR [HIDDEN LAYERS INTER] — writes a Llama of
random weights (bf16, std 0.02, kjv-llama's tokenizer and vocabulary) for
bench_spec's memory-bound case: a model too large for the caches, so a
verification forward of K+1 tokens costs about one weight read. Its greedy
text is meaningless (and repetitive, which flatters prompt lookup); it
measures the cost of verification, not acceptance on real text."""
import json, os, shutil, sys
import torch
from safetensors.torch import save_file

out = sys.argv[1]
C, L, I = (int(x) for x in (sys.argv[2:5] if len(sys.argv) >= 5 else (768, 12, 2048)))
V, H = 8192, C // 64
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(0)
def w(*shape):
    return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)
t = {"model.embed_tokens.weight": w(V, C), "model.norm.weight": torch.ones(C, dtype=torch.bfloat16)}
for i in range(L):
    p = f"model.layers.{i}."
    for n in "qkvo":
        t[p + f"self_attn.{n}_proj.weight"] = w(C, C)
    t[p + "mlp.gate_proj.weight"], t[p + "mlp.up_proj.weight"] = w(I, C), w(I, C)
    t[p + "mlp.down_proj.weight"] = w(C, I)
    t[p + "input_layernorm.weight"] = torch.ones(C, dtype=torch.bfloat16)
    t[p + "post_attention_layernorm.weight"] = torch.ones(C, dtype=torch.bfloat16)
save_file(t, os.path.join(out, "model.safetensors"))
src = os.path.join(os.path.dirname(__file__), "..", "models", "kjv-llama")
cfg = json.load(open(os.path.join(src, "config.json")))
cfg.update(hidden_size=C, intermediate_size=I, num_hidden_layers=L, num_attention_heads=H,
           num_key_value_heads=H, head_dim=64, max_position_embeddings=1024)
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(src, f), out)
print(out, sum(x.numel() for x in t.values()), "parameters")
