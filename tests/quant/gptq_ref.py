"""gptq_ref.py — GPTQ re-implemented in numpy float64 from the published
algorithm (Frantar et al. 2022, Algorithm 1, and its reference code's
fasterquant: dead inputs, static groups, act-order, 1% dampening, upper
Cholesky factor of H^-1, lazy batches of 128 columns, group parameters
read from W as of the block's start; optionally the reference quantizer's
mse range search, norm 2, 20 shrink steps) to check lmc's quantized integers.
usage: gptq_ref.py CASE.bin   (written by tests/test_gptq.c)
Exit 0 when every code, zero, g_idx and scale equals lmc's."""
import struct
import sys

import numpy as np


def find_params(x, bits, sym, mse=False):
    maxq = 2 ** bits - 1
    lo = np.minimum(x.min(1), 0)
    hi = np.maximum(x.max(1), 0)
    if sym:
        hi = np.maximum(np.abs(lo), hi)
        lo = np.where(lo < 0, -hi, lo)
    both = (lo == 0) & (hi == 0)
    lo, hi = np.where(both, -1.0, lo), np.where(both, 1.0, hi)
    # mse: the range shrunk by p = 1 - t / 100, t < 20, for the smallest sum
    # of squared errors per row (the first such p), summed column by column
    best = np.full(lo.shape, np.inf)
    scale, zero = np.zeros_like(lo), np.zeros_like(lo)
    for t in range(20 if mse else 1):
        p = 1.0 - 0.01 * t
        s = (p * hi - p * lo) / maxq
        z = np.full_like(s, (maxq + 1) / 2) if sym else np.round(-(p * lo) / s)
        e = np.zeros_like(s)
        if mse:
            d = s[:, None] * (quant(x, s[:, None], z[:, None], bits) - z[:, None]) - x
            for j in range(x.shape[1]):
                e += d[:, j] * d[:, j]
        take = e < best
        best, scale, zero = np.where(take, e, best), np.where(take, s, scale), np.where(take, z, zero)
    return scale, zero


def quant(x, scale, zero, bits):
    return np.clip(np.round(x / scale) + zero, 0, 2 ** bits - 1)


def gptq(W, H, bits, gs, sym, actorder, static, mse=False, percdamp=0.01, blocksize=128):
    W, H = W.astype(np.float64).copy(), H.copy()
    n, k = W.shape
    gs = k if gs <= 0 or gs >= k else gs
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    groups = []
    if actorder and static:
        groups = [find_params(W[:, i:i + gs], bits, sym, mse) for i in range(0, k, gs)]
    perm = np.arange(k)
    if actorder:
        perm = np.argsort(-np.diag(H), kind="stable")
        W, H = W[:, perm], H[perm][:, perm]
    H[np.arange(k), np.arange(k)] += percdamp * np.mean(np.diag(H))
    L = np.linalg.cholesky(H)
    Linv = np.linalg.inv(L)
    Hinv = np.linalg.cholesky(Linv.T @ Linv).T  # upper factor of H^-1
    Q = np.zeros_like(W)
    S = np.zeros((n, (k + gs - 1) // gs))
    Z = np.zeros_like(S)
    scale = zero = None
    for i1 in range(0, k, blocksize):
        i2 = min(i1 + blocksize, k)
        W1, Err1, Hinv1 = W[:, i1:i2].copy(), np.zeros((n, i2 - i1)), Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            if actorder and static:
                scale, zero = groups[perm[i1 + i] // gs]
            elif (i1 + i) % gs == 0:
                scale, zero = find_params(W[:, i1 + i:i1 + i + gs], bits, sym, mse)
                S[:, (i1 + i) // gs], Z[:, (i1 + i) // gs] = scale, zero
            q = quant(w, scale, zero, bits)
            Q[:, i1 + i] = q
            err1 = (w - scale * (q - zero)) / d
            W1[:, i:] -= np.outer(err1, Hinv1[i, i:])
            Err1[:, i] = err1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    inv = np.argsort(perm)
    Q = Q[:, inv]
    if actorder and static:
        g_idx = np.arange(k) // gs
        S = np.stack([g[0] for g in groups], 1)
        Z = np.stack([g[1] for g in groups], 1)
    else:
        g_idx = (np.arange(k) // gs)[inv]
    return Q.astype(np.int64), g_idx, S, Z


def main(path):
    raw = open(path, "rb").read()
    n, k, rows, bits, gs, sym, act, static, mse = struct.unpack("<9q", raw[:72])
    off = 72

    def take(dt, cnt):
        nonlocal off
        a = np.frombuffer(raw[off:off + cnt * np.dtype(dt).itemsize], dt)
        off += cnt * np.dtype(dt).itemsize
        return a

    W = take(np.float32, n * k).reshape(n, k)
    X = take(np.float32, rows * k).reshape(rows, k).astype(np.float64)
    q = take(np.uint8, n * k).reshape(n, k).astype(np.int64)
    g_idx = take(np.int32, k)
    ng = (k + (gs if 0 < gs < k else k) - 1) // (gs if 0 < gs < k else k)
    scale = take(np.float32, ng * n).reshape(ng, n)
    zero = take(np.int32, ng * n).reshape(ng, n)
    H = X.T @ X
    Q, G, S, Z = gptq(W, H, bits, gs, bool(sym), bool(act), bool(static), bool(mse))
    bad = int((Q != q).sum())
    ok = bad == 0 and np.array_equal(G, g_idx) and np.array_equal(Z.T.astype(np.int64), zero.astype(np.int64)) \
        and np.array_equal(S.T.astype(np.float32), scale)
    print(f"{path}: {n}x{k} {bits}-bit g{gs} sym={sym} act={act} static={static} mse={mse}: "
          f"{bad} of {n * k} codes differ, g_idx {'same' if np.array_equal(G, g_idx) else 'differs'}, "
          f"zeros {'same' if np.array_equal(Z.T, zero) else 'differ'}, scales "
          f"{'same' if np.array_equal(S.T.astype(np.float32), scale) else 'differ'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
