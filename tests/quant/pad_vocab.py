"""pad_vocab.py — copies a float32 Llama folder with its embedding and
head padded to N rows past the tokenizer's vocabulary (as Qwen2's 151,936
rows for 151,665 tokens), the padded head rows made to win greedy
sampling (a scaled copy of the hidden state's best direction), so that a
generation samples ids that have no token. usage: pad_vocab.py IN OUT N"""
import json
import os
import shutil
import struct
import sys

import numpy as np

src, out, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(out, exist_ok=True)
for f in os.listdir(src):
    if f.endswith(".json") and f not in ("ref.json",):
        shutil.copy(f"{src}/{f}", f"{out}/{f}")
raw = open(f"{src}/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
t = {}
for k, h in hdr.items():
    if k == "__metadata__":
        continue
    a, b = h["data_offsets"]
    t[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32).reshape(h["shape"]).copy()
emb = t["model.embed_tokens.weight"]
V, C = emb.shape
pad = np.tile(emb.mean(axis=0, keepdims=True), (N - V, 1))
t["model.embed_tokens.weight"] = np.concatenate([emb, pad])
head = t["lm_head.weight"]
# every padded row: 50 x the sum of the rows (aligned with any hidden state that favours real tokens on average)
big = np.tile(50 * np.sign(head.sum(axis=0, keepdims=True)), (N - V, 1)).astype(np.float32)
t["lm_head.weight"] = np.concatenate([head, big])
cfg = json.load(open(f"{src}/config.json"))
cfg["vocab_size"] = N
json.dump(cfg, open(f"{out}/config.json", "w"), indent=1)
hdr2, blobs, off = {}, [], 0
for k, a in t.items():
    b = np.ascontiguousarray(a, dtype=np.float32).tobytes()
    hdr2[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
h = json.dumps(hdr2).encode()
h += b" " * (-len(h) % 8)
with open(f"{out}/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
