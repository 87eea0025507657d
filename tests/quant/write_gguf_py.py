"""write_gguf_py.py — writes a fixture as GGUF with llama.cpp's own Python
writer (gguf-py's GGUFWriter), following llama.cpp's convert_hf_to_gguf.py
conventions (tensor names, Llama's Q/K permutation, GPT-2's Conv1D
transpose, tokenizer metadata), so that lmc's reader is tested on a file it
did not write. TYPE (default f32): the matrices in f16, bf16, q8_0, q4_0,
q4_1, q5_0 or q5_1 through gguf-py's own quantizers (vectors stay F32).
GGUF_BAD=wrong_type|shape|arch|extra writes a hostile file: a hyper-
parameter of the wrong type, feed_forward_length disagreeing with the
tensors, an architecture lmc does not run, a tensor no model has.
GGUF_DEQ_DIR=DIR also writes DIR, a Hugging Face folder (F32) of the weights
as gguf-py dequantizes them (Q/K order and Conv1D layout put back), the
float model a GGUF reader must match.
usage: write_gguf_py.py HF_DIR OUT.gguf [TYPE]"""
import json
import os
import struct
import sys

import numpy as np
import gguf

hf, out = sys.argv[1], sys.argv[2]
qname = sys.argv[3].upper() if len(sys.argv) > 3 else "F32"
qtype = gguf.GGMLQuantizationType[qname]
bad = os.environ.get("GGUF_BAD", "")
cfg = json.load(open(f"{hf}/config.json"))
tok = json.load(open(f"{hf}/tokenizer.json"))
raw = open(f"{hf}/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])


def st(name):
    h = hdr[name]
    a, b = h["data_offsets"]
    return np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32).reshape(h["shape"])


gpt2 = cfg["model_type"] == "gpt2"
arch = "gpt2" if gpt2 else "llama"
w = gguf.GGUFWriter(out, "falcon" if bad == "arch" else arch)
L = cfg["n_layer"] if gpt2 else cfg["num_hidden_layers"]
H = cfg["n_head"] if gpt2 else cfg["num_attention_heads"]
C = cfg["n_embd"] if gpt2 else cfg["hidden_size"]
w.add_block_count(L)
if bad == "wrong_type":
    w.add_string(f"{arch}.embedding_length", str(C))
else:
    w.add_embedding_length(C)
w.add_head_count(H)
w.add_context_length(cfg["n_positions"] if gpt2 else cfg["max_position_embeddings"])
if gpt2:
    w.add_feed_forward_length(cfg.get("n_inner") or 4 * C)
    w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
else:
    KV = cfg["num_key_value_heads"]
    w.add_feed_forward_length(cfg["intermediate_size"] + (32 if bad == "shape" else 0))
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg.get("rope_parameters", {}).get("rope_theta", 10000.0))
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])

vocab = tok["model"]["vocab"]
nv = max(vocab.values()) + 1
toks = [""] * nv
for t, i in vocab.items():
    toks[i] = t
types = [1] * nv
for a in tok["added_tokens"]:
    types[a["id"]] = 3 if a["special"] else 4
merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
if gpt2:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_merges(merges)
else:
    w.add_tokenizer_model("llama")
    scores = [0.0] * nv
    for r, m in enumerate(merges):
        i = vocab.get(m.replace(" ", ""))
        if i is not None and scores[i] == 0.0:
            scores[i] = -float(r + 1)
    for t, i in vocab.items():
        if len(t) == 6 and t.startswith("<0x"):
            types[i] = 6
        if t == tok["model"].get("unk_token"):
            types[i] = 2
    w.add_token_scores(scores)
w.add_token_list(toks)
w.add_token_types(types)
if cfg.get("bos_token_id") is not None:
    w.add_bos_token_id(cfg["bos_token_id"])
if cfg.get("eos_token_id") is not None:
    w.add_eos_token_id(cfg["eos_token_id"])
w.add_add_bos_token(not gpt2)


def permute(x, heads):  # convert_hf_to_gguf.py LlamaModel.permute
    return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def unpermute(x, heads):
    return x.reshape(heads, x.shape[0] // heads // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


deq_dir = os.environ.get("GGUF_DEQ_DIR")
deq = {}


for name in hdr:
    if name == "__metadata__":
        continue
    x = st(name).copy()
    if gpt2:
        g = name.replace("transformer.", "")
        g = {"wte.weight": "token_embd.weight", "wpe.weight": "position_embd.weight",
             "ln_f.weight": "output_norm.weight", "ln_f.bias": "output_norm.bias"}.get(g, g)
        for a, b in (("ln_1", "attn_norm"), ("attn.c_attn", "attn_qkv"), ("attn.c_proj", "attn_output"),
                     ("ln_2", "ffn_norm"), ("mlp.c_fc", "ffn_up"), ("mlp.c_proj", "ffn_down")):
            if g.startswith("h.") and f".{a}." in g:
                g = g.replace("h.", "blk.", 1).replace(f".{a}.", f".{b}.")
                if x.ndim == 2:
                    x = x.T.copy()
    else:
        g = name.replace("model.embed_tokens", "token_embd").replace("model.norm", "output_norm")
        g = g.replace("lm_head", "output").replace("model.layers.", "blk.")
        for a, b in (("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"),
                     ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                     ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                     ("mlp.down_proj", "ffn_down")):
            g = g.replace(a, b)
        if g.endswith("attn_q.weight"):
            x = permute(x, H)
        if g.endswith("attn_k.weight"):
            x = permute(x, KV)
    x = np.ascontiguousarray(x)
    d = x
    if x.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
        try:
            qx = gguf.quants.quantize(x, qtype)
            w.add_tensor(g, qx, raw_dtype=qtype)
            d = gguf.quants.dequantize(qx, qtype).astype(np.float32).reshape(x.shape)
        except gguf.quants.QuantError:  # rows not whole blocks: F16, as llama.cpp does
            w.add_tensor(g, x.astype(np.float16))
            d = x.astype(np.float16).astype(np.float32)
    else:
        w.add_tensor(g, x)
    if gpt2 and x.ndim == 2 and g.startswith("blk."):
        d = d.T
    elif not gpt2 and g.endswith("attn_q.weight"):
        d = unpermute(d, H)
    elif not gpt2 and g.endswith("attn_k.weight"):
        d = unpermute(d, KV)
    deq[name] = np.ascontiguousarray(d, dtype=np.float32)
if bad == "extra":
    w.add_tensor("blk.0.attn_extra.weight", np.ones((4, 4), dtype=np.float32))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
if deq_dir:
    import shutil
    os.makedirs(deq_dir, exist_ok=True)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if os.path.exists(f"{hf}/{f}"):
            shutil.copy(f"{hf}/{f}", f"{deq_dir}/{f}")
    hdr2, blobs, off = {}, [], 0
    for k, a in deq.items():
        b = a.tobytes()
        hdr2[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr2).encode()
    h += b" " * (-len(h) % 8)
    with open(f"{deq_dir}/model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
print(f"{out}: written by gguf-py")
