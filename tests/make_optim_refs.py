#!/usr/bin/env python3
"""make_optim_refs.py [OUT_DIR] — float64 references for tests/test_optim.c
(default OUT_DIR tests/fixtures/optim): parameters after 1 and after 5
steps of each optimizer, computed by its authors' code in float64 on the CPU.

Inputs are regenerated, not stored: tensors shaped like llama-tiny's first
layer (/work/shared/fixtures/llama-tiny: hidden 64, 4 heads x 16, 2 kv
heads, intermediate 176) — self_attn.o_proj (64, 64), self_attn.k_proj
(32, 64), mlp.gate_proj (176, 64) as 2-D hidden matrices and
input_layernorm (64) as a norm — filled by the generator that
tests/test_optim.c implements too (splitmix64, core/rng.h): value i of a
stream seeded s is u = ((x_i >> 40) * 2^-24) * 2 - 1 (0 replaced by 0.5),
in float32; parameter j starts as u * 0.1 with seed 1000 + j, its gradient
of step t is u with seed 100000 * t + j.

References (safetensors, F32 copies of the float64 results):
  muon        torch.optim.Muon (lr 0.02, wd 0.1, momentum 0.95, Nesterov,
              5 quintic steps) with Newton–Schulz in float64 instead of
              bf16; the norm on torch.optim.AdamW (lr 1e-3, wd 0.01).
  galore      galore_torch.GaLoreAdamW (rank 8, update gap 2, scale 0.25,
              lr 1e-2, eps 1e-8, wd 0.01), SVD in float64 with the sign
              rule of train/optim.h (largest-magnitude entry positive);
              the norm on torch.optim.AdamW with the same lr 1e-2 (lmc
              runs the low-rank group at the AdamW group's rate).
  apollo      apollo_torch.APOLLOAdamW (rank 8, gap 2, channel, scale 1),
              projections from lmc_optim_gaussian_fill's generator (train/optim.h)
              instead of torch's, seeds from lmc_optim_apollo_seed.
  apollo-mini the same with rank 1, tensor scaling, scale 128 (lr 1e-2 for
              both groups, as GaLore).
  adamw8bit   three references: bitsandbytes AdamW8bit (float32; blocks of
              256; its own code), a float64 emulation of lmc's 8-bit code
              (ops/optim_ops.h), and torch.optim.AdamW with full moments.
The AdamW group (the norm) is torch.optim.AdamW in every reference, as in
lmc (the GaLore and APOLLO authors' own AdamW places eps and the decay
slightly differently; lmc keeps torch's for that group).
"""
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

M64 = (1 << 64) - 1
PARAMS = [  # name, shape, role (0 matrix, 3 norm)
    ("model.layers.0.self_attn.o_proj.weight", (64, 64), 0),
    ("model.layers.0.self_attn.k_proj.weight", (32, 64), 0),
    ("model.layers.0.mlp.gate_proj.weight", (176, 64), 0),
    ("model.layers.0.input_layernorm.weight", (64,), 3),
]
STEPS = 5
LR_ADAMW, WD = 1e-3, 0.01


def splitmix(seed, n):
    s, out = seed & M64, np.empty(n, dtype=np.float32)
    for i in range(n):
        s = (s + 0x9E3779B97F4A7C15) & M64
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        u = np.float32((z >> 40) * (1.0 / 16777216.0)) * np.float32(2) - np.float32(1)
        out[i] = u if u != 0 else np.float32(0.5)
    return out


def gaussian_fill(n, seed):
    """lmc_optim_gaussian_fill: splitmix64 pairs, Box–Muller."""
    s, out = seed & M64, []

    def nxt():
        nonlocal s
        s = (s + 0x9E3779B97F4A7C15) & M64
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    while len(out) < n:
        u1 = ((nxt() >> 11) + 1) * (1.0 / 9007199254740992.0)
        u2 = (nxt() >> 11) * (1.0 / 9007199254740992.0)
        r = math.sqrt(-2.0 * math.log(u1))
        out += [r * math.cos(6.283185307179586476925286766559 * u2),
                r * math.sin(6.283185307179586476925286766559 * u2)]
    return out[:n]


def apollo_seed(seed, idx, refresh):
    return (seed + 0x9E3779B97F4A7C15 * (idx + 1) + 0xD1B54A32D192ED03 * refresh) & M64


def inputs():
    init, grads = [], []
    for j, (_, shape, _) in enumerate(PARAMS):
        n = int(np.prod(shape))
        init.append(torch.from_numpy(splitmix(1000 + j, n) * np.float32(0.1)).reshape(shape))
        grads.append([torch.from_numpy(splitmix(100000 * t + j, n)).reshape(shape) for t in range(1, STEPS + 1)])
    return init, grads


def run(init, grads, make_opts, dtype=torch.float64):
    """Steps optimizers over fresh parameters; returns {step: [param tensors]} for steps 1 and 5."""
    ps = [torch.nn.Parameter(x.to(dtype).clone()) for x in init]
    opts = make_opts(ps)
    out = {}
    for t in range(STEPS):
        for j, p in enumerate(ps):
            p.grad = grads[j][t].to(dtype).clone()
        for o in opts:
            o.step()
        if t + 1 in (1, STEPS):
            out[t + 1] = [p.detach().to(torch.float64).clone() for p in ps]
    return out


def adamw_group(ps, pick, lr=LR_ADAMW):
    return torch.optim.AdamW([p for p, k in zip(ps, PARAMS) if pick(k)], lr=lr, betas=(0.9, 0.999),
                             eps=1e-8, weight_decay=WD)


def ns_float64(grad, ns_coefficients, ns_steps, eps):
    """torch.optim._muon._zeropower_via_newtonschulz without the bf16 cast."""
    a, b, c = ns_coefficients
    x = grad.clone()
    if grad.size(0) > grad.size(1):
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        upd = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, upd, x, beta=a)
    if grad.size(0) > grad.size(1):
        x = x.T
    return x


def svd_signed(matrix, rank, type):
    """GaLoreProjector.get_orthogonal_matrix in float64, signs fixed (largest-|entry| positive)."""
    U, s, Vh = torch.linalg.svd(matrix.to(torch.float64), full_matrices=False)
    if type == "right":
        B = Vh[:rank, :].clone()
        for j in range(B.shape[0]):
            if B[j, torch.argmax(B[j].abs())] < 0:
                B[j] = -B[j]
        return B
    A = U[:, :rank].clone()
    for j in range(A.shape[1]):
        if A[torch.argmax(A[:, j].abs()), j] < 0:
            A[:, j] = -A[:, j]
    return A


def q8_code(signed):
    """lmc_q8_dynamic_code (ops/optim_ops.h), float32 values."""
    vals, bits, p10 = [], 7 if signed else 8, 1.0
    for E in range(7):
        nf = 1 << (bits - 1 - E)
        for j in range(nf):
            mag = (0.1 + 0.9 * (j + 0.5) / nf) / p10
            vals += [mag, -mag] if signed else [mag]
        p10 *= 10
    vals += [0.0, 1.0]
    assert len(vals) == 256
    return np.sort(np.array(vals, dtype=np.float32).astype(np.float64))


def q8_quantize(code, x):
    """Nearest code (lower on ties); a non-zero value never maps to 0."""
    hi = np.clip(np.searchsorted(code, x, side="right"), 1, 255)
    lo = hi - 1
    q = np.where(x - code[lo] <= code[hi] - x, lo, hi)
    q = np.where(x <= code[0], 0, np.where(x >= code[255], 255, q))
    zero = (code[q] == 0) & (x != 0)
    return np.where(zero, np.where(x > 0, q + 1, q - 1), q)


def adamw8bit_emulated(init, grads, block=256, lr=LR_ADAMW, b1=0.9, b2=0.999, eps=1e-8):
    cm, cv = q8_code(True), q8_code(False)
    out, ps, st = {}, [x.double().numpy().ravel().copy() for x in init], []
    for p in ps:
        nb = (p.size + block - 1) // block
        if p.size < 4096:  # bitsandbytes' min_8bit_size: 32-bit AdamW moments
            st.append([np.zeros(p.size), None, np.zeros(p.size), None])
        else:
            st.append([np.zeros(p.size, dtype=np.int64), np.zeros(nb), np.zeros(p.size, dtype=np.int64), np.zeros(nb)])
    for t in range(1, STEPS + 1):
        for j, p in enumerate(ps):
            g = grads[j][t - 1].double().numpy().ravel()
            if p.size < 4096:
                m, _, v, _ = st[j]
                p *= 1 - lr * WD
                m += (1 - b1) * (g - m)
                v[:] = v * b2 + (1 - b2) * g * g
                p -= lr / (1 - b1 ** t) * (m / (np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps))
                continue
            qm, am, qv, av = st[j]
            for b in range((p.size + block - 1) // block):
                sl = slice(b * block, min(p.size, (b + 1) * block))
                m = cm[qm[sl]] * am[b]
                v = cv[qv[sl]] * av[b]
                m = m + (1 - b1) * (g[sl] - m)
                v = v * b2 + (1 - b2) * g[sl] ** 2
                p[sl] = p[sl] * (1 - lr * WD) - lr / (1 - b1 ** t) * (m / (np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps))
                am[b], av[b] = np.abs(m).max(), v.max()
                qm[sl] = q8_quantize(cm, m / am[b] if am[b] > 0 else m * 0)
                qv[sl] = q8_quantize(cv, v / av[b] if av[b] > 0 else v * 0)
        if t in (1, STEPS):
            out[t] = [torch.from_numpy(p.copy()).reshape(init[j].shape) for j, p in enumerate(ps)]
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/optim"
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    init, grads = inputs()
    is_mat = lambda k: k[2] == 0
    refs = {}

    import torch.optim._muon as tm
    tm._zeropower_via_newtonschulz = ns_float64
    refs["muon"] = run(init, grads, lambda ps: [
        torch.optim.Muon([p for p, k in zip(ps, PARAMS) if is_mat(k)], lr=0.02, weight_decay=0.1, momentum=0.95,
                         nesterov=True, ns_steps=5),
        adamw_group(ps, lambda k: not is_mat(k))])

    import galore_torch
    import galore_torch.galore_projector as gp
    gp.GaLoreProjector.get_orthogonal_matrix = lambda self, w, rank, type: svd_signed(w, rank, type)
    refs["galore"] = run(init, grads, lambda ps: [
        galore_torch.GaLoreAdamW([{"params": [p for p, k in zip(ps, PARAMS) if is_mat(k)], "rank": 8,
                                   "update_proj_gap": 2, "scale": 0.25, "proj_type": "std"}],
                                 lr=1e-2, eps=1e-8, weight_decay=WD),
        adamw_group(ps, lambda k: not is_mat(k), lr=1e-2)])

    import apollo_torch
    import apollo_torch.random_projector as rp

    def lmc_update_ortho(self, full_rank_grad, proj_type):
        if not hasattr(self, "lmc_refresh"):
            self.lmc_idx, self.lmc_refresh = self.seed - 1, 0
        shape = (full_rank_grad.shape[0], self.rank) if proj_type == "left" else (self.rank, full_rank_grad.shape[1])
        z = gaussian_fill(shape[0] * shape[1], apollo_seed(0, self.lmc_idx, self.lmc_refresh))
        self.ortho_matrix = (torch.tensor(z, dtype=torch.float64) / math.sqrt(self.rank)).reshape(shape).to(
            full_rank_grad.dtype)
        self.lmc_refresh += 1
    rp.GradientProjector.update_ortho_matrix = lmc_update_ortho

    def apollo(rank, scale_type, scale):
        def make(ps):
            mats = [p for p, k in zip(ps, PARAMS) if is_mat(k)]
            o = apollo_torch.APOLLOAdamW([{"params": mats, "rank": rank, "proj": "random", "scale_type": scale_type,
                                           "scale": scale, "update_proj_gap": 2, "proj_type": "std"}],
                                         lr=1e-2, eps=1e-8, weight_decay=WD)
            for j, p in enumerate(ps):  # seeds by the index in lmc's parameter list
                if is_mat(PARAMS[j]):
                    o.state[p]["seed"] = j + 1
            return [o, adamw_group(ps, lambda k: not is_mat(k), lr=1e-2)]
        return make
    refs["apollo"] = run(init, grads, apollo(8, "channel", 1.0))
    refs["apollo-mini"] = run(init, grads, apollo(1, "tensor", 128.0))

    import bitsandbytes as bnb
    refs["adamw8bit-bnb"] = run(init, grads, lambda ps: [
        bnb.optim.AdamW8bit(ps, lr=LR_ADAMW, betas=(0.9, 0.999), eps=1e-8, weight_decay=WD)], dtype=torch.float32)
    refs["adamw8bit-emu"] = adamw8bit_emulated(init, grads)
    refs["adamw"] = run(init, grads, lambda ps: [adamw_group(ps, lambda k: True)])

    t = {}
    for kind, r in refs.items():
        for step, ps in r.items():
            for (name, _, _), p in zip(PARAMS, ps):
                t[f"{kind}.step{step}.{name}"] = p.to(torch.float32).contiguous()
    save_file(t, os.path.join(out_dir, "optim_refs.safetensors"),
              metadata={"made_by": "tests/make_optim_refs.py", "torch": torch.__version__,
                        "galore_torch": "1.0", "apollo_torch": "1.0.3", "bitsandbytes": bnb.__version__})
    # what the 8-bit references say about quantization error (README / report)
    for s in (1, STEPS):
        full = refs["adamw"][s]
        for kind in ("adamw8bit-bnb", "adamw8bit-emu"):
            e = max(float((a - b).abs().max()) for a, b in zip(refs[kind][s], full))
            print(f"{kind} step {s}: max |p - p_adamw| = {e:.3e} (lr {LR_ADAMW})")


if __name__ == "__main__":
    main()
