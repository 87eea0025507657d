#!/usr/bin/env python3
"""bench_moe_hf.py — the transformers side of bench/gpu_moe.sh (issue 14), on
the GPU machine.

  makemodel DIR                 a random Mixtral-shape model (8 experts, top-2,
                                hidden 1024, expert width 2816, 16 layers, GQA
                                16/4, vocab 32000: ~1.2 B total, ~0.4 B active),
                                saved in bf16 (one tensor per expert, as
                                transformers writes them)
  hf DIR P B CTX STEPS ROUNDS   transformers (bf16, its default experts code): prefill of P
                                tokens (one forward, no cache), then B sequences
                                of CTX tokens prefilled and STEPS greedy decode
                                steps of the whole batch with the KV cache

Same measurements as bench_moe_cuda model: wall time around
torch.cuda.synchronize, medians of ROUNDS after a warm-up."""
import statistics
import sys
import time

import torch


def makemodel(d):
    from transformers import MixtralConfig, MixtralForCausalLM
    cfg = MixtralConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                        num_attention_heads=16, num_key_value_heads=4, num_local_experts=8,
                        num_experts_per_tok=2, max_position_embeddings=4096, rms_norm_eps=1e-5,
                        tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = MixtralForCausalLM(cfg).to(torch.bfloat16)
    m.save_pretrained(d, safe_serialization=True)
    print(f"saved {sum(p.numel() for p in m.parameters()) / 1e9:.3f} B params to {d}")


def wall(fn, rounds):
    fn()  # warm-up
    torch.cuda.synchronize()
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def hf(d, P, B, CTX, STEPS, ROUNDS):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).cuda().eval()
    V = m.config.vocab_size
    g = torch.Generator(device="cuda").manual_seed(3)
    ids = torch.randint(1, V, (1, P), device="cuda", generator=g)
    with torch.no_grad():
        tp = wall(lambda: m(ids, use_cache=False), ROUNDS)
        print(f"prefill {P} tokens: {tp * 1e3:.2f} ms, {P / tp:.0f} tok/s")
        bids = torch.randint(1, V, (B, CTX), device="cuda", generator=g)

        def decode():  # prefill the batch (untimed part subtracted below), then STEPS steps
            out = m(bids, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(STEPS):
                out = m(nxt, past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            return time.perf_counter() - t0

        decode()  # warm-up
        td = statistics.median(decode() for _ in range(ROUNDS))
        print(f"decode batch {B} at context {CTX}: {td / STEPS * 1e3:.3f} ms/step, {B * STEPS / td:.0f} tok/s")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "makemodel":
        makemodel(sys.argv[2])
    elif cmd == "hf":
        hf(sys.argv[2], *(int(a) for a in sys.argv[3:8]))
    else:
        sys.exit(__doc__)
