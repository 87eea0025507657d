#!/usr/bin/env python3
"""Reference for the mixture-of-experts load-balancing loss (test_moe_aux.c).

For a MoE fixture FIXTURE_DIR (one tensor per expert on disk, ref.json's
training batch), loads the model with transformers in float64 (eager experts),
runs the batch with output_router_logits=True and writes
  ref_aux.json              {"coef", "aux" (transformers' aux_loss), "loss" (CE + coef aux),
                             "tokens_per_expert": summed over the sparse layers}
  ref_aux_grads.safetensors float32 gradients of CE + coef * aux, under the on-disk names
coef is large (1.0) so that the auxiliary gradient is not lost under the
cross-entropy's at the comparison's tolerance.
usage: make_moe_aux_refs.py FIXTURE_DIR [COEF]"""
import json, os, re, sys
import torch
import transformers as tf
from safetensors.torch import load_file, save_file

d = sys.argv[1]
coef = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
cfg = json.load(open(os.path.join(d, "config.json")))
ref = json.load(open(os.path.join(d, "ref.json")))
cls = getattr(tf, cfg["architectures"][0])
m = cls.from_pretrained(d, torch_dtype=torch.float64, experts_implementation="eager",
                        router_aux_loss_coef=coef).train()
xb = torch.tensor(ref["train"]["inputs"])
yb = torch.tensor(ref["train"]["targets"])
out = m(xb, output_router_logits=True)
ce = torch.nn.functional.cross_entropy(out.logits.view(-1, out.logits.size(-1)), yb.view(-1))
loss = ce + coef * out.aux_loss
loss.backward()
E = cfg.get("num_local_experts", cfg.get("num_experts"))
k = cfg["num_experts_per_tok"]
counts = torch.zeros(E)
for lg in out.router_logits:
    sel = torch.topk(torch.softmax(lg.double(), -1), k, dim=-1).indices
    counts += torch.bincount(sel.reshape(-1), minlength=E).double().float()
w = load_file(os.path.join(d, "model.safetensors"))
mixtral = any("block_sparse_moe" in n for n in w)
g = {}
for n, p in m.named_parameters():
    v = p.grad.float()
    mm = re.match(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$", n)
    if not mm:
        g[n.replace(".mlp.gate.", ".block_sparse_moe.gate.") if mixtral else n] = v.contiguous()
        continue
    L = int(mm.group(1))
    for e in range(v.shape[0]):
        pre = f"model.layers.{L}.block_sparse_moe.experts.{e}." if mixtral else f"model.layers.{L}.mlp.experts.{e}."
        gn, un, dn = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
        if mm.group(2) == "gate_up_proj":
            I = v.shape[1] // 2
            g[pre + gn + ".weight"], g[pre + un + ".weight"] = v[e, :I].contiguous(), v[e, I:].contiguous()
        else:
            g[pre + dn + ".weight"] = v[e].contiguous()
extra = set(g) - set(w)
assert not extra, sorted(extra)[:4]
save_file(g, os.path.join(d, "ref_aux_grads.safetensors"))
json.dump({"coef": coef, "aux": out.aux_loss.item(), "ce": ce.item(), "loss": loss.item(),
           "tokens_per_expert": counts.tolist(), "transformers": tf.__version__},
          open(os.path.join(d, "ref_aux.json"), "w"), indent=1)
print(d, "aux", out.aux_loss.item(), "loss", loss.item(), "counts", counts.tolist())
