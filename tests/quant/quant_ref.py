"""quant_ref.py — a numpy-only reference for the quantized checkpoint formats
lmc reads and writes, written from the formats' public descriptions
(AutoGPTQ/transformers GPTQ v1 and v2, AutoAWQ GEMM, bitsandbytes NF4 with
double quantization, transformers' BitNet packing):

  quant_ref.py dequant QDIR OUT_DIR
      dequantizes every quantized linear of QDIR into OUT_DIR/model.safetensors
      (float32, GPT-2 Conv1D weights back in (in, out)), other tensors copied.
  quant_ref.py write BASE_DIR OUT_DIR METHOD
      quantizes BASE_DIR's block linears with numpy's own quantizers and
      packers into a folder lmc must read (METHOD: gptq4-act, gptq3-v2,
      gptq8, gptq2, awq, nf4, bitnet).
  quant_ref.py compare A_DIR B_DIR
      every tensor of A equals B's bit for bit.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

NP = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "U8": np.uint8, "I64": np.int64, "BF16": np.uint16}
ST = {np.dtype(v): k for k, v in NP.items() if k != "BF16"}


def st_read(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=NP[v["dtype"]]).reshape(v["shape"])
    return out


def st_write(path, tensors):
    hdr, off, blobs = {}, 0, []
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        b = a.tobytes()
        hdr[k] = {"dtype": ST[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hdr["__metadata__"] = {"format": "pt"}
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


CONV1D = (".attn.c_attn", ".attn.c_proj", ".mlp.c_fc", ".mlp.c_proj")


def is_conv1d(prefix):
    return any(c in prefix for c in CONV1D)


# ---- GPTQ: codes in a bit stream per column of qweight (K*bits/32, N), zeros
# per row of qzeros (G, N*bits/32); v1 stores zero-1 ----
def stream_unpack(words, count, bits):
    """words (W, C) int32 -> (count, C): value j at bits j*bits.. of the column's stream."""
    w = words.view(np.uint32).astype(np.uint64)
    w = np.concatenate([w, np.zeros((1, w.shape[1]), np.uint64)])
    j = np.arange(count)
    pos = j * bits
    lo, sh = pos // 32, (pos % 32).astype(np.uint64)
    both = w[lo] | (w[lo + 1] << np.uint64(32))
    return ((both >> sh[:, None]) & np.uint64((1 << bits) - 1)).astype(np.int64)


def stream_pack(vals, bits):
    """vals (count, C) -> (count*bits/32, C) int32."""
    count, c = vals.shape
    out = np.zeros((count * bits // 32 + 1, c), np.uint64)
    for j in range(count):
        pos = j * bits
        lo, sh = pos // 32, pos % 32
        v = vals[j].astype(np.uint64) << np.uint64(sh)
        out[lo] |= v & np.uint64(0xFFFFFFFF)
        out[lo + 1] |= v >> np.uint64(32)
    return out[:count * bits // 32].astype(np.uint32).view(np.int32)


def gptq_dequant(t, p, cfg):
    bits = cfg["bits"]
    qw = t[p + ".qweight"]
    k, n = qw.shape[0] * 32 // bits, qw.shape[1]
    q = stream_unpack(qw, k, bits)                                   # (K, N)
    z = stream_unpack(t[p + ".qzeros"].T.copy(), n, bits).T          # (G, N)
    if cfg.get("checkpoint_format", "gptq") != "gptq_v2":
        z = z + 1
    s = t[p + ".scales"].astype(np.float32)                          # (G, N)
    gs = cfg["group_size"] if cfg["group_size"] != -1 else k
    g = t[p + ".g_idx"].astype(np.int64) if p + ".g_idx" in t else np.arange(k) // gs
    w = s[g] * (q - z[g]).astype(np.float32)                         # (K, N)
    return w.T.copy()


AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def awq_unpack(words):
    """(R, N/8) -> (R, N): nibble i of a word holds column 8c + AWQ_ORDER[i]."""
    r, c8 = words.shape
    u = words.view(np.uint32)
    out = np.zeros((r, c8 * 8), np.int64)
    for i in range(8):
        out[:, AWQ_ORDER[i]::8] = (u >> np.uint32(4 * i)) & 15
    return out


def awq_pack(vals):
    r, n = vals.shape
    out = np.zeros((r, n // 8), np.uint32)
    for i in range(8):
        out |= vals[:, AWQ_ORDER[i]::8].astype(np.uint32) << np.uint32(4 * i)
    return out.view(np.int32)


def awq_dequant(t, p, cfg):
    q = awq_unpack(t[p + ".qweight"])                   # (K, N)
    z = awq_unpack(t[p + ".qzeros"])                    # (G, N)
    s = t[p + ".scales"].astype(np.float32)
    k = q.shape[0]
    gs = cfg["group_size"] if cfg["group_size"] != -1 else k
    g = np.arange(k) // gs
    return (s[g] * (q - z[g]).astype(np.float32)).T.copy()


NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], np.float32)


def nf4_dequant(t, p):
    qs = json.loads(bytes(t[p + ".weight.quant_state.bitsandbytes__nf4"]).decode())
    assert qs["quant_type"] == "nf4"
    n, k = qs["shape"]
    packed = t[p + ".weight"].reshape(-1)
    codes = np.empty(packed.size * 2, np.int64)
    codes[0::2], codes[1::2] = packed >> 4, packed & 15  # first element in the high nibble
    codes = codes[:n * k]
    qmap = t[p + ".weight.quant_map"]
    am = t[p + ".weight.absmax"]
    if am.dtype == np.uint8:  # double quantization
        nm, a2 = t[p + ".weight.nested_quant_map"], t[p + ".weight.nested_absmax"]
        b2 = qs["nested_blocksize"]
        am = (nm[am.astype(np.int64)] * a2[np.arange(am.size) // b2]).astype(np.float32) + np.float32(qs["nested_offset"])
    bs = qs["blocksize"]
    return (qmap[codes] * am[np.arange(n * k) // bs]).astype(np.float32).reshape(n, k)


def bitnet_dequant(t, p):
    w = t[p + ".weight"]
    r = w.shape[0]
    q = np.concatenate([((w >> (2 * j)) & 3).astype(np.int64) - 1 for j in range(4)])  # row j*R + i
    return (q.astype(np.float32) / t[p + ".weight_scale"].astype(np.float32)[0]).astype(np.float32)


def dequant(qdir, out):
    cfg = json.load(open(f"{qdir}/config.json"))["quantization_config"]
    t = st_read(f"{qdir}/model.safetensors")
    m = cfg["quant_method"]
    res, used = {}, set()
    key = {"gptq": ".qweight", "awq": ".qweight", "bitsandbytes": ".weight.quant_state.bitsandbytes__nf4",
           "bitnet": ".weight_scale"}[m]
    for name in t:
        if not name.endswith(key):
            continue
        p = name[:-len(key)]
        w = {"gptq": lambda: gptq_dequant(t, p, cfg), "awq": lambda: awq_dequant(t, p, cfg),
             "bitsandbytes": lambda: nf4_dequant(t, p), "bitnet": lambda: bitnet_dequant(t, p)}[m]()
        res[p + ".weight"] = w.T.copy() if is_conv1d(p) else w
        used |= {x for x in t if x.startswith(p + ".") and x != p + ".bias"}
    for name, a in t.items():
        if name not in used:
            res[name] = a
    os.makedirs(out, exist_ok=True)
    st_write(f"{out}/model.safetensors", res)
    print(f"{qdir}: {m}: {len([k for k in t if k.endswith(key)])} linears dequantized by numpy")


# ---- numpy's own quantizers (for folders lmc must read) ----
def minmax(w, bits, sym):
    maxq = 2 ** bits - 1
    lo, hi = np.minimum(w.min(1), 0), np.maximum(w.max(1), 0)
    if sym:
        hi = np.maximum(np.abs(lo), hi)
        lo = np.where(lo < 0, -hi, lo)
    both0 = (lo == 0) & (hi == 0)
    lo, hi = np.where(both0, -1, lo), np.where(both0, 1, hi)
    s = ((hi - lo) / maxq).astype(np.float32)
    z = np.full_like(s, (maxq + 1) // 2) if sym else np.round(-lo / s)
    return s, z.astype(np.int64)


def groups_quant(w, bits, gs, sym, g_idx):
    """w (N, K) -> codes (N, K), scales (G, N) f16, zeros (G, N)."""
    n, k = w.shape
    ng = int(g_idx.max()) + 1
    s = np.zeros((ng, n), np.float16)
    z = np.zeros((ng, n), np.int64)
    q = np.zeros((n, k), np.int64)
    for g in range(ng):
        cols = np.nonzero(g_idx == g)[0]
        sg, zg = minmax(w[:, cols], bits, sym)
        sg16 = sg.astype(np.float16)
        s[g], z[g] = sg16, zg
        q[:, cols] = np.clip(np.round(w[:, cols] / sg16.astype(np.float32)[:, None]) + zg[:, None], 0, 2 ** bits - 1)
    return q, s, z


def write(base, out, method, seed=7):
    rng = np.random.default_rng(seed)
    t = st_read(f"{base}/model.safetensors")
    cfg = json.load(open(f"{base}/config.json"))
    res = {}
    bits, gs, v2, act = {"gptq4-act": (4, 32, False, True), "gptq3-v2": (3, 64, True, False),
                         "gptq8": (8, 32, False, False), "gptq2": (2, 32, True, True)}.get(method, (4, 32, False, False))
    for name, a in t.items():
        lin = name.endswith(".weight") and a.ndim == 2 and (".layers." in name or ".h." in name) and "norm" not in name
        if not lin:
            res[name] = a
            continue
        p = name[:-7]
        w = a.astype(np.float32)
        w = w.T.copy() if is_conv1d(p) else w
        n, k = w.shape
        if method.startswith("gptq"):
            g_idx = rng.permutation(np.arange(k) // gs) if act else np.arange(k) // gs
            q, s, z = groups_quant(w, bits, gs, not v2, g_idx)
            if not v2:
                z = np.maximum(z, 1)  # v1 cannot hold a zero of 0
            res[p + ".qweight"] = stream_pack(q.T.copy(), bits)
            res[p + ".qzeros"] = stream_pack((z - (0 if v2 else 1)).T.copy(), bits).T.copy()
            res[p + ".scales"] = s
            res[p + ".g_idx"] = g_idx.astype(np.int32)
        elif method == "awq":
            g_idx = np.arange(k) // gs
            q, s, z = groups_quant(w, 4, gs, False, g_idx)
            res[p + ".qweight"] = awq_pack(q.T.copy())
            res[p + ".qzeros"] = awq_pack(z)
            res[p + ".scales"] = s
        elif method == "nf4":
            flat = w.reshape(-1)
            blocks = flat.reshape(-1, 64)
            am = np.abs(blocks).max(1)
            codes = np.abs((blocks / am[:, None])[..., None] - NF4).argmin(-1).reshape(-1)
            off = np.float32(am.mean())
            dm = dynamic_map()
            d = (am - off).astype(np.float32)
            nb2 = (d.size + 255) // 256
            a2 = np.array([np.abs(d[i * 256:(i + 1) * 256]).max() for i in range(nb2)], np.float32)
            qa = np.abs((d / a2[np.arange(d.size) // 256])[:, None] - dm).argmin(-1).astype(np.uint8)
            res[p + ".weight"] = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8).reshape(-1, 1)
            res[p + ".weight.absmax"] = qa
            res[p + ".weight.quant_map"] = NF4
            res[p + ".weight.nested_absmax"] = a2
            res[p + ".weight.nested_quant_map"] = dm
            qs = {"quant_type": "nf4", "absmax": None, "blocksize": 64, "dtype": "float32", "shape": [n, k],
                  "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": float(off)}
            del qs["absmax"]
            res[p + ".weight.quant_state.bitsandbytes__nf4"] = np.frombuffer(json.dumps(qs).encode(), np.uint8)
        elif method == "bitnet":
            sc = np.float32(1) / np.float32(max(np.abs(w).mean(), 1e-5))
            q = np.clip(np.round(w * sc), -1, 1).astype(np.int64) + 1
            r = n // 4
            res[p + ".weight"] = sum((q[j * r:(j + 1) * r] << (2 * j)) for j in range(4)).astype(np.uint8)
            res[p + ".weight_scale"] = np.array([sc], np.float32)
        if p + ".bias" in t:
            res[p + ".bias"] = t[p + ".bias"]
    qc = {"gptq": {"quant_method": "gptq", "bits": bits, "group_size": gs, "desc_act": act, "sym": not v2,
                   "checkpoint_format": "gptq_v2" if v2 else "gptq"},
          "awq": {"quant_method": "awq", "bits": 4, "group_size": gs, "zero_point": True, "version": "gemm"},
          "nf4": {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                  "bnb_4bit_use_double_quant": True, "bnb_4bit_compute_dtype": "float32"},
          "bitnet": {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"}}
    cfg["quantization_config"] = qc["gptq" if method.startswith("gptq") else method]
    os.makedirs(out, exist_ok=True)
    st_write(f"{out}/model.safetensors", res)
    json.dump(cfg, open(f"{out}/config.json", "w"), indent=1)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if os.path.exists(f"{base}/{f}"):
            shutil.copy(f"{base}/{f}", f"{out}/{f}")
    print(f"{out}: {method} written by numpy")


def dynamic_map():
    """bitsandbytes' create_dynamic_map(signed=True): 7 exponent bits, 8 bits."""
    data = []
    for i in range(7):
        items = 2 ** i + 1
        b = np.linspace(0.1, 1, items, dtype=np.float32)
        means = (b[:-1] + b[1:]) / 2.0
        data += list(np.float32(10.0 ** (i - 6)) * means) + list(-np.float32(10.0 ** (i - 6)) * means)
    data += [0.0, 1.0]
    return np.array(sorted(data), np.float32)


def compare(a, b):
    ta, tb = st_read(f"{a}/model.safetensors"), st_read(f"{b}/model.safetensors")
    assert sorted(ta) == sorted(tb), (set(ta) ^ set(tb))
    bad = [k for k in ta if ta[k].shape != tb[k].shape or ta[k].dtype != tb[k].dtype or
           ta[k].tobytes() != tb[k].tobytes()]
    for k in bad[:5]:
        x, y = ta[k].astype(np.float64), tb[k].astype(np.float64)
        print(f"  {k}: {ta[k].shape} vs {tb[k].shape}, max diff {np.abs(x - y).max() if x.shape == y.shape else '-'}")
    assert not bad, f"{len(bad)} tensors differ"
    print(f"{a} == {b}: {len(ta)} tensors bit-exact")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "dequant":
        dequant(sys.argv[2], sys.argv[3])
    elif cmd == "write":
        write(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "compare":
        compare(sys.argv[2], sys.argv[3])
