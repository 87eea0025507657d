#!/usr/bin/env python3
"""make_random_lora.py BASE_DIR OUT_DIR R ALPHA TARGETS SEED — writes a PEFT
LoRA adapter folder for the model in BASE_DIR (its model.safetensors) with
random A (r, in) and B (out, r) in F32 on every layer linear whose name is
in the comma list TARGETS: adapter_config.json + adapter_model.safetensors
with PEFT's key names. Standard library only (tests' second adapter)."""
import json, os, random, struct, sys

base, out, r, alpha, targets, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), \
    sys.argv[5].split(','), int(sys.argv[6])
with open(os.path.join(base, 'model.safetensors'), 'rb') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    header = json.loads(f.read(n))
rng = random.Random(seed)
tensors = {}
for key, meta in sorted(header.items()):
    if key == '__metadata__' or not key.endswith('.weight'):
        continue
    mod = key[:-len('.weight')]
    if '.layers.' not in mod or mod.split('.')[-1] not in targets:
        continue
    o, i = meta['shape']
    tensors['base_model.model.%s.lora_A.weight' % mod] = ([r, i], [rng.uniform(-0.5, 0.5) for _ in range(r * i)])
    tensors['base_model.model.%s.lora_B.weight' % mod] = ([o, r], [rng.uniform(-0.2, 0.2) for _ in range(o * r)])
if not tensors:
    sys.exit('no module of %s matches %s' % (base, targets))
hdr, off, blobs = {}, 0, []
for k, (shape, vals) in tensors.items():
    b = struct.pack('<%df' % len(vals), *vals)
    hdr[k] = {'dtype': 'F32', 'shape': shape, 'data_offsets': [off, off + len(b)]}
    off += len(b)
    blobs.append(b)
h = json.dumps(hdr).encode()
h += b' ' * ((8 - len(h) % 8) % 8)
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, 'adapter_model.safetensors'), 'wb') as f:
    f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))
cfg = {'peft_type': 'LORA', 'r': r, 'lora_alpha': alpha, 'target_modules': targets, 'lora_dropout': 0.0,
       'bias': 'none', 'use_rslora': False, 'fan_in_fan_out': False, 'task_type': 'CAUSAL_LM',
       'base_model_name_or_path': base}
with open(os.path.join(out, 'adapter_config.json'), 'w') as f:
    json.dump(cfg, f, indent=1)
