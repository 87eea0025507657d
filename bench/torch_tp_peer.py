#!/usr/bin/env python3
"""torch_tp_peer.py — the PyTorch peer numbers for issue 18's GPU goals, run
with torchrun on one multi-GPU host (NCCL) or, for a smoke test, on CPU
ranks (gloo). Two measurements, each printed as one JSON line per setting:

  collectives: all-reduce and all-gather of 1 MiB .. 1 GiB (bf16/fp32 bytes)
      over all ranks: median time of --reps after a warm-up, algorithm
      bandwidth (bytes / t) and bus bandwidth (all-reduce 2(n-1)/n x, all-gather
      (n-1)/n x), the figure NCCL's own nccl-tests report.
  tp: a Megatron-style tensor-parallel Llama layer stack (q/k/v and gate/up
      column-parallel by heads / features, o and down row-parallel with one
      all-reduce each in the forward and the matching ones in the backward,
      RMSNorm and residuals replicated, causal SDPA; no rope, no embedding
      or head) of --layers layers of the given shape (default: Llama-3 8B's
      4096 / 14336 / 32 heads / 8 KV heads) on --batch x --seq tokens,
      forward + backward + an in-place SGD-like update (no optimizer state):
      median step time, tokens/s and MFU = 6 x params x tokens (+ the causal
      attention's 6 L T^2 C... counted as 12 L T C per token, halved for
      causality) / (time x world x --peak-tflops).

Usage: torchrun --nproc-per-node 8 bench/torch_tp_peer.py [collectives] [tp]
       [--layers 4] [--seq 4096] [--batch 1] [--steps 10] [--dtype bf16]
       [--peak-tflops 989] [--reps 20] [--tiny]   (--tiny: small shapes for a CPU smoke test)
"""
import argparse, json, os, statistics, sys, time

import torch
import torch.distributed as dist
import torch.nn.functional as F


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev, reps):
    fn(); sync(dev)  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); sync(dev); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def collectives(args, dev, dtype, rank, world):
    sizes = [1 << 20, 1 << 24, 1 << 27, 1 << 30] if not args.tiny else [1 << 12, 1 << 16]
    for nbytes in sizes:
        n = nbytes // torch.tensor([], dtype=dtype).element_size()
        x = torch.ones(n, dtype=dtype, device=dev)
        t = timed(lambda: dist.all_reduce(x), dev, args.reps)
        if rank == 0:
            print(json.dumps({"op": "all_reduce", "bytes": nbytes, "world": world, "time_s": t,
                              "algbw_gbs": nbytes / t / 1e9, "busbw_gbs": nbytes / t / 1e9 * 2 * (world - 1) / world}))
        part = torch.ones(n // world, dtype=dtype, device=dev)
        out = torch.empty(n // world * world, dtype=dtype, device=dev)
        t = timed(lambda: dist.all_gather_into_tensor(out, part), dev, args.reps)
        if rank == 0:
            print(json.dumps({"op": "all_gather", "bytes": nbytes, "world": world, "time_s": t,
                              "algbw_gbs": nbytes / t / 1e9, "busbw_gbs": nbytes / t / 1e9 * (world - 1) / world}))
        sys.stdout.flush()


class _F(torch.autograd.Function):  # identity forward, all-reduce backward (Megatron's "f")
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous(); dist.all_reduce(g); return g


class _G(torch.autograd.Function):  # all-reduce forward, identity backward ("g")
    @staticmethod
    def forward(ctx, x):
        x = x.contiguous(); dist.all_reduce(x); return x

    @staticmethod
    def backward(ctx, g):
        return g


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps).to(x.dtype) * w


def tp_layers(args, dev, dtype, rank, world):
    C, I, H, KV, L = args.hidden, args.inter, args.heads, args.kv_heads, args.layers
    if args.tiny:
        C, I, H, KV = 256, 512, 8, 4
    assert H % world == 0 and I % world == 0 and (KV % world == 0 or world % KV == 0), "shape does not split"
    hd, h_r = C // H, H // world
    kv_r = max(1, KV // world)
    g = torch.Generator(device="cpu").manual_seed(1234 + rank)
    def p(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(dtype).to(dev).requires_grad_()
    layers = [dict(n1=torch.ones(C, dtype=dtype, device=dev), n2=torch.ones(C, dtype=dtype, device=dev),
                   q=p(h_r * hd, C), k=p(kv_r * hd, C), v=p(kv_r * hd, C), o=p(C, h_r * hd),
                   gate=p(I // world, C), up=p(I // world, C), down=p(C, I // world)) for _ in range(L)]
    params = [t for l in layers for k, t in l.items() if k not in ("n1", "n2")]
    B, T = args.batch, args.seq if not args.tiny else 128
    x0 = torch.randn(B, T, C, generator=g).to(dtype).to(dev)

    def step():
        x = x0
        for l in layers:
            h = _F.apply(rmsnorm(x, l["n1"]))
            q = (h @ l["q"].t()).view(B, T, h_r, hd).transpose(1, 2)
            k = (h @ l["k"].t()).view(B, T, kv_r, hd).transpose(1, 2)
            v = (h @ l["v"].t()).view(B, T, kv_r, hd).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv_r != h_r)
            x = x + _G.apply(a.transpose(1, 2).reshape(B, T, h_r * hd) @ l["o"].t())
            h = _F.apply(rmsnorm(x, l["n2"]))
            x = x + _G.apply((F.silu(h @ l["gate"].t()) * (h @ l["up"].t())) @ l["down"].t())
        x.float().pow(2).mean().backward()
        with torch.no_grad():
            for t in params:
                t -= 1e-6 * t.grad
                t.grad = None

    t = timed(step, dev, args.steps)
    n_full = L * (C * C * 2 + 2 * KV * hd * C + 3 * C * I)  # q, o, k, v, gate, up, down of the whole model
    tokens = B * T
    flops = tokens * (6 * n_full + 6 * L * T * C)  # attention: 12 L T C per token, halved for causality
    if rank == 0:
        print(json.dumps({"op": "tp_layers", "world": world, "layers": L, "hidden": C, "inter": I, "heads": H,
                          "kv_heads": KV, "tokens": tokens, "dtype": args.dtype, "step_s": t,
                          "tokens_per_s": tokens / t, "tflops_per_gpu": flops / t / world / 1e12,
                          "mfu": flops / t / world / 1e12 / args.peak_tflops if args.peak_tflops > 0 else None}))
        sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="*", default=["collectives", "tp"])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--inter", type=int, default=14336)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--peak-tflops", type=float, default=989.0)  # H100 SXM bf16 dense
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if "collectives" in args.what:
        collectives(args, dev, dtype, rank, world)
    if "tp" in args.what:
        tp_layers(args, dev, dtype, rank, world)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
