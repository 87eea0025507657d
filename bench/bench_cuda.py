#!/usr/bin/env python3
"""bench_cuda.py — the PyTorch side of bench/run_cuda.sh, run on the GPU machine.

  attn B,H,S,D ...     causal attention TFLOP/s of torch SDPA (flash and cuDNN
                       backends), bf16, (B, H, S, D); 4*B*H*S*S*D/2 FLOPs
  bw                   device-to-device copy bandwidth (bytes read + written)
  makemodel DIR        a random 1.1B Llama (TinyLlama shape) saved in bf16
  hf DIR P G           transformers prefill of P tokens and G decode steps, then
                       peak memory at a 4096-token context

Times with CUDA events after warm-up, medians of the timed runs."""
import statistics
import sys

import torch


def timed(fn, reps=10, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return statistics.median(ts)


def attn(shapes):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    print(f"{'B,H,S,D':22s} {'flash ms':>10s} {'flash TF/s':>10s} {'cudnn ms':>10s} {'cudnn TF/s':>10s}")
    for s in shapes:
        B, H, S, D = map(int, s.split(","))
        q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * B * H * S * S * D / 2
        row = [s]
        for be in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
            try:
                with sdpa_kernel(be):
                    t = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
                row += [f"{t * 1e3:10.3f}", f"{flops / t / 1e12:10.1f}"]
            except Exception as e:  # a backend that refuses the shape
                row += [f"{'n/a':>10s}", f"{'n/a':>10s}"]
                print(f"  {be}: {str(e).splitlines()[0][:100]}", file=sys.stderr)
        print(f"{row[0]:22s} " + " ".join(row[1:]))


def bw():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    a.random_()
    t = timed(lambda: b.copy_(a), reps=20)
    print(f"d2d copy: {2 * n / t / 1e9:.0f} GB/s (bytes read + written)")


def makemodel(d):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                      num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                      max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = LlamaForCausalLM(cfg).to(torch.bfloat16)
    m.save_pretrained(d, safe_serialization=True)
    print(f"saved {sum(p.numel() for p in m.parameters()) / 1e9:.3f} B params to {d}")


def hf(d, P, G):
    from transformers import LlamaForCausalLM
    m = LlamaForCausalLM.from_pretrained(d, dtype=torch.bfloat16).cuda().eval()
    ids = torch.randint(0, m.config.vocab_size, (1, P), device="cuda")
    with torch.no_grad():
        tp = timed(lambda: m(ids, use_cache=False), reps=3, warm=1)
        gen = lambda: m.generate(ids, max_new_tokens=G, min_new_tokens=G, do_sample=False)
        tg = timed(gen, reps=3, warm=1)
    td = max(tg - tp, 1e-9)
    print(f"transformers prefill {P} tokens: {tp * 1e3:.2f} ms, {P / tp:.0f} tok/s")
    print(f"transformers decode {G} tokens: {td / G * 1e3:.3f} ms/token, {G / td:.1f} tok/s")
    # peak memory at a 4096-token context: prompt of 4096, 32 new tokens
    ids4 = torch.randint(0, m.config.vocab_size, (1, 4096), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        m.generate(ids4, max_new_tokens=32, min_new_tokens=32, do_sample=False)
    torch.cuda.synchronize()
    print(f"transformers memory at 4096 context: {torch.cuda.max_memory_allocated() / 1e9:.3f} GB "
          f"peak allocated ({torch.cuda.max_memory_reserved() / 1e9:.3f} GB reserved), weights included")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "attn":
        attn(sys.argv[2:])
    elif cmd == "bw":
        bw()
    elif cmd == "makemodel":
        makemodel(sys.argv[2])
    elif cmd == "hf":
        hf(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
