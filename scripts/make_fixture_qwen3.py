"""make_fixture_qwen3.py — builds tests/fixtures/qwen3-tiny with the shared
fixture builder (../shared/tools/make_fixtures.py: transformers
Qwen3ForCausalLM, float64 references for logits, greedy continuations,
gradients, one AdamW step and a 10-step loss curve), restricted to this one
model: explicit head_dim (24, so heads x head_dim = 96 != hidden 64), GQA
(4 heads / 2 kv heads), q/k RMSNorm per head, untied head.
Usage: python3 scripts/make_fixture_qwen3.py data/kjv.txt tests/fixtures
       [path/to/make_fixtures.py]
"""
import sys

builder = sys.argv[3] if len(sys.argv) > 3 else "../shared/tools/make_fixtures.py"
src = open(builder, encoding="utf-8").read()
marker = 'for spec in (PUBLIC if SET == "public" else HELDOUT):'
assert marker in src, "make_fixtures.py changed: its main loop was not found"
QWEN3 = [("qwen3-tiny", "qwen3", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                                       max_position_embeddings=256, rms_norm_eps=1e-6,
                                       rope_theta=1000000.0, tie_word_embeddings=False,
                                       attention_bias=False), "llama3", 768, 8, False)]
sys.argv = [builder, sys.argv[1], sys.argv[2], "public"]
g = {"__name__": "__main__", "QWEN3": QWEN3}
exec(compile(src.replace(marker, "for spec in QWEN3:"), builder, "exec"), g)
