#!/usr/bin/env python3
"""pp_stack_layers.py SRC DST K — writes DST, the model folder SRC with its
layers repeated K times (layer l of the new model is layer l % L of SRC),
so a 2-layer fixture becomes a 4-layer model (K 2) that pipeline tests can
split into 4 stages. Copies the other files but the references; standard library only."""
import json, os, re, shutil, struct, sys

src, dst, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(dst, exist_ok=True)
for f in os.listdir(src):
    if f not in ("model.safetensors", "config.json") and not f.startswith("ref") and os.path.isfile(os.path.join(src, f)):
        shutil.copy(os.path.join(src, f), dst)
cfg = json.load(open(os.path.join(src, "config.json")))
key = "n_layer" if "n_layer" in cfg else "num_hidden_layers"
L = cfg[key]
cfg[key] = L * k
json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=1)
raw = open(os.path.join(src, "model.safetensors"), "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
data = raw[8 + n:]
pat = re.compile(r"^((?:.*\.)?(?:layers|h)\.)(\d+)(\..*)$")
out, blobs, off = {}, [], 0
for name, t in hdr.items():
    if name == "__metadata__":
        out[name] = t
        continue
    b0, b1 = t["data_offsets"]
    m = pat.match(name)
    copies = [(name, None)] if not m else [(m.group(1) + str(int(m.group(2)) + r * L) + m.group(3), r) for r in range(k)]
    for nm, _ in copies:
        out[nm] = {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [off, off + b1 - b0]}
        blobs.append(data[b0:b1])
        off += b1 - b0
h = json.dumps(out).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(os.path.join(dst, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
