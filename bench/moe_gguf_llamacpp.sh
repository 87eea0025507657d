#!/usr/bin/env bash
# moe_gguf_llamacpp.sh — llama.cpp runs the mixture-of-experts GGUF files
# lmc writes, with lmc's numbers: perplexity of each file by `lmc eval
# --chunks` and by llama-perplexity (same text, same 128-token chunks,
# second halves scored). Models: the mixtral-tiny and qwen3moe-tiny
# fixtures, and two random transformers models made here in the shapes
# llama.cpp runs (its qwen2moe has no dense layers, its olmoe no GQA):
# Qwen2-MoE with a shared expert (all layers sparse) and OLMoE with
# kv heads = heads. F32 and Q8_0 files.
# Usage (repository root, build/lmc built): bench/moe_gguf_llamacpp.sh [TMPDIR]; env PEER_BIN=llama.cpp bin dir
set -euo pipefail
B=${PEER_BIN:-$(../shared/tools/build-llamacpp-peer.sh)}
export LD_LIBRARY_PATH="$B${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
T=${1:-$(mktemp -d)}; mkdir -p "$T"; T=$(cd "$T" && pwd)
LMC=${LMC:-./build/lmc}
sed -n '71726,72200p' data/kjv.txt >"$T/val.txt"
python3 - "$T" <<'PY'
import os, shutil, sys, torch, transformers as tf
T = sys.argv[1]; torch.manual_seed(0)
def make(name, cfg, cls, tokdir):
    d = os.path.join(T, name)
    m = cls(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.dim() == 1: p.add_(0.1 * torch.randn_like(p))
    m.save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json"): shutil.copy(os.path.join(tokdir, f), d)
make("qwen2moe-allsparse", tf.Qwen2MoeConfig(vocab_size=768, hidden_size=64, intermediate_size=96, moe_intermediate_size=40,
     shared_expert_intermediate_size=72, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, num_experts=6,
     num_experts_per_tok=2, norm_topk_prob=False, max_position_embeddings=256, rope_theta=1e6, tie_word_embeddings=False,
     bos_token_id=0, eos_token_id=1), tf.Qwen2MoeForCausalLM, "tests/fixtures/qwen2moe-tiny")
make("olmoe-mha", tf.OlmoeConfig(vocab_size=512, hidden_size=64, intermediate_size=48, num_hidden_layers=2,
     num_attention_heads=4, num_key_value_heads=4, num_experts=8, num_experts_per_tok=2, max_position_embeddings=256,
     tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=1), tf.OlmoeForCausalLM, "tests/fixtures/olmoe-tiny")
PY
echo "| model | file | lmc eval --chunks | llama-perplexity | lmc / llama.cpp - 1 |"
echo "|---|---|---|---|---|"
for m in tests/fixtures/mixtral-tiny tests/fixtures/qwen3moe-tiny "$T/qwen2moe-allsparse" "$T/olmoe-mha"; do
  n=$(basename "$m")
  for q in f32 q8_0; do
    f="$T/$n-$q.gguf"
    "$LMC" convert -m "$m" -o "$f" --dtype $q >/dev/null 2>&1
    a=$("$LMC" eval -m "$f" --text-file "$T/val.txt" --ctx 128 --chunks --threads 2 2>&1 | sed -n 's/.*perplexity \([0-9.]*\).*/\1/p')
    # llama-perplexity (this build) now and then exits 0 with the tail of its log lost (the last chunks
    # and the final estimate; its logger runs on a thread): tried up to 3 times
    b=""
    for try in 1 2 3; do
      [ -n "$b" ] && break
      "$B/llama-perplexity" -m "$f" -f "$T/val.txt" -c 128 -b 128 -t 2 >"$T/$n-$q.log" 2>&1 || true
      b=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$T/$n-$q.log")
    done
    [ -n "$b" ] || b="failed: $(grep -m1 ' E ' "$T/$n-$q.log" | cut -c1-120 || true)"
    echo "| $n | $q | $a | $b | $(awk -v a="$a" -v b="$b" 'BEGIN { if (b + 0 > 0) printf "%+.4f%%", (a / b - 1) * 100; else print "-" }') |"
  done
done
