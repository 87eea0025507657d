"""check_gguf_convert.py — independent check of `lmc convert -o FILE.gguf`:
reads lmc's GGUF with llama.cpp's own Python package (gguf), and checks it
against the Hugging Face folder read with numpy only: every tensor's GGUF
name and shape, F32 values bit-exact after undoing llama.cpp's Q/K row
permutation (its converter's reshape/swapaxes, written here from its
definition) and GPT-2's Conv1D transpose, Q8_0/Q4_0 bytes identical to
gguf-py's reference quantizers on the same rows, hyper-parameters and the
tokenizer metadata (tokens, merges or scores, special ids).
usage: check_gguf_convert.py HF_DIR FILE.gguf f32|q8_0|q4_0"""
import json
import struct
import sys

import numpy as np
import gguf
from gguf.quants import quantize, dequantize

hf, path, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = json.load(open(f"{hf}/config.json"))
raw = open(f"{hf}/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
DT = {"F32": np.float32, "F16": np.float16, "BF16": None}


def st(name):
    h = hdr[name]
    a, b = h["data_offsets"]
    return np.frombuffer(raw[8 + n + a:8 + n + b], dtype=DT[h["dtype"]]).reshape(h["shape"]).astype(np.float32)


r = gguf.GGUFReader(path)
kv = {f.name: f for f in r.fields.values()}


def val(k):
    f = kv[k]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode()
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode() for i in f.data]
        return [f.parts[i][0] for i in f.data]
    return f.parts[f.data[0]][0]


mt = cfg["model_type"]
arch = {"gpt2": "gpt2", "qwen2": "qwen2"}.get(mt, "llama")
assert val("general.architecture") == arch
L = cfg.get("num_hidden_layers", cfg.get("n_layer"))
assert val(f"{arch}.block_count") == L
nh = cfg.get("num_attention_heads", cfg.get("n_head"))
assert val(f"{arch}.attention.head_count") == nh
nkv = cfg.get("num_key_value_heads", nh)


def permute(w, heads):  # llama.cpp convert_hf_to_gguf.py LlamaModel.permute
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


if arch == "gpt2":
    names = {"transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
             "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias"}
    sub = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
           "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for i in range(L):
        for a, b in sub.items():
            for s in ("weight", "bias"):
                names[f"transformer.h.{i}.{a}.{s}"] = f"blk.{i}.{b}.{s}"
else:
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    sub = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
           "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
           "mlp.down_proj.weight": "ffn_down.weight", "self_attn.o_proj.weight": "attn_output.weight"}
    for p in "qkv":
        sub[f"self_attn.{p}_proj.weight"] = f"attn_{p}.weight"
        sub[f"self_attn.{p}_proj.bias"] = f"attn_{p}.bias"
    for i in range(L):
        for a, b in sub.items():
            names[f"model.layers.{i}.{a}"] = f"blk.{i}.{b}"

tensors = {t.name: t for t in r.tensors}
seen = 0
for hname in hdr:
    if hname == "__metadata__" or hname not in names:
        continue
    g = tensors[names[hname]]
    w = st(hname)
    if arch == "gpt2" and w.ndim == 2 and "wte" not in hname and "wpe" not in hname:
        w = w.T.copy()  # Conv1D (in, out) -> (out, in)
    if arch == "llama" and hname.endswith("q_proj.weight"):
        w = permute(w, nh)
    if arch == "llama" and hname.endswith("k_proj.weight"):
        w = permute(w, nkv)
    assert tuple(int(x) for x in g.shape[::-1]) == w.shape or (w.ndim == 1 and int(g.shape[0]) == w.shape[0]), hname
    want_t = {"f32": gguf.GGMLQuantizationType.F32, "q8_0": gguf.GGMLQuantizationType.Q8_0,
              "q4_0": gguf.GGMLQuantizationType.Q4_0}[dtype]
    if w.ndim == 1:
        want_t = gguf.GGMLQuantizationType.F32
    elif w.shape[1] % 32 and dtype != "f32":
        want_t = gguf.GGMLQuantizationType.F16
    assert g.tensor_type == want_t, (hname, g.tensor_type, want_t)
    data = np.asarray(g.data)
    if want_t == gguf.GGMLQuantizationType.F32:
        assert np.array_equal(data.reshape(w.shape), w), hname
    elif want_t == gguf.GGMLQuantizationType.F16:
        assert np.array_equal(data.reshape(w.shape), w.astype(np.float16)), hname
    else:
        ref = quantize(w, want_t)
        assert np.array_equal(data.reshape(ref.shape), ref), f"{hname}: bytes differ from gguf-py's quantizer"
        back = dequantize(data.reshape(ref.shape), want_t)
        err = np.abs(back - w).max() / np.abs(w).max()
        assert err < (0.01 if dtype == "q8_0" else 0.13), (hname, err)
    seen += 1
assert seen == len(r.tensors), (seen, len(r.tensors))

tok = json.load(open(f"{hf}/tokenizer.json"))
toks = val("tokenizer.ggml.tokens")
for t, i in tok["model"]["vocab"].items():
    assert toks[i] == t, (i, t, toks[i])
for a in tok["added_tokens"]:
    assert toks[a["id"]] == a["content"]
types = val("tokenizer.ggml.token_type")
spm = bool(tok["model"].get("byte_fallback"))
assert val("tokenizer.ggml.model") == ("llama" if spm else "gpt2")
merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
if spm:
    scores = val("tokenizer.ggml.scores")
    vocab = tok["model"]["vocab"]
    for rank, m in enumerate(merges):  # the token a merge makes scores -(rank+1) (first merge making it)
        tid = vocab.get(m.replace(" ", ""))
        if tid is not None and tid not in [vocab.get(x.replace(" ", "")) for x in merges[:rank]]:
            assert scores[tid] == -(rank + 1), (m, scores[tid], rank)
    assert all(types[vocab[f"<0x{b:02X}>"]] == 6 for b in range(256) if f"<0x{b:02X}>" in vocab)
else:
    assert val("tokenizer.ggml.merges") == merges
for a in tok["added_tokens"]:
    byte = spm and len(a["content"]) == 6 and a["content"].startswith("<0x")
    unk = a["content"] == tok["model"].get("unk_token")
    assert types[a["id"]] == (6 if byte else 2 if unk else 3 if a["special"] else 4), a
print(f"{path}: {seen} tensors, {len(toks)} tokens match {hf}")
