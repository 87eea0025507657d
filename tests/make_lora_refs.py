"""LoRA training references made with PEFT in float64 (tests/fixtures/<model>/lora_train/).

For llama-tiny, qwen2-tiny and gpt2-tiny: a LoRA adapter with non-zero A and B
(init_lora_weights=False, values rounded to float32 so lmc reads the same
numbers), the fixture's training batch with the first 5 targets of every row
masked (-100, as TRL masks prompt tokens), the mean cross-entropy over the
unmasked targets, the gradients of every lora_A/lora_B, and the adapter after
one torch.optim.AdamW step and the losses of steps 2..4 on the same batch.
Base weights are frozen (PEFT) and checked unchanged.

  python3 tests/make_lora_refs.py   (pip: torch transformers peft safetensors)
"""
import json, os, sys
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model

HERE = os.path.dirname(os.path.abspath(__file__))
SETUPS = {
    # model: (targets, r, alpha, rslora, fan_in_fan_out)
    "llama-tiny": (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], 4, 8, False, False),
    "qwen2-tiny": (["q_proj", "v_proj", "o_proj", "up_proj"], 4, 8, True, False),
    "gpt2-tiny": (["c_attn", "c_proj", "c_fc"], 3, 6, False, True),
}
MASK_PREFIX = 5
ADAMW = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}


def build(name):
    d = os.path.join(HERE, "fixtures", name)
    out = os.path.join(d, "lora_train")
    os.makedirs(out, exist_ok=True)
    targets, r, alpha, rslora, fifo = SETUPS[name]
    torch.manual_seed(1234)
    base = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float64)
    base.config.use_cache = False
    lc = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none",
                    use_rslora=rslora, fan_in_fan_out=fifo, init_lora_weights=False, task_type="CAUSAL_LM")
    pm = get_peft_model(base, lc)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(p.float().double())  # float32-representable values
    before = {n: p.detach().clone() for n, p in pm.named_parameters() if "lora_" not in n}
    pm.save_pretrained(out, safe_serialization=True)
    # the saved adapter as float32 (PEFT keeps the float64 dtype)
    from safetensors.torch import load_file
    sd = load_file(os.path.join(out, "adapter_model.safetensors"))
    save_file({k: v.float().contiguous() for k, v in sd.items()}, os.path.join(out, "adapter_model.safetensors"),
              metadata={"format": "pt"})
    ref = json.load(open(os.path.join(d, "ref.json")))["train"]
    x = torch.tensor(ref["inputs"])
    y = torch.tensor(ref["targets"])
    y[:, :MASK_PREFIX] = -100
    pm.train()

    def loss_fn():
        logits = pm(input_ids=x).logits
        return torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-100)

    params = [(n, p) for n, p in pm.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n, _ in params)
    loss = loss_fn()
    loss.backward()

    def key(n):  # PEFT's saved key: the adapter name removed
        return n.replace(".default", "")

    save_file({key(n): p.grad.float().contiguous() for n, p in params}, os.path.join(out, "ref_grads.safetensors"))
    opt = torch.optim.AdamW([p for _, p in params], lr=ADAMW["lr"], betas=(ADAMW["beta1"], ADAMW["beta2"]),
                            eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"])
    opt.step()
    save_file({key(n): p.detach().float().contiguous() for n, p in params}, os.path.join(out, "ref_step.safetensors"))
    losses = []
    for _ in range(3):
        opt.zero_grad()
        l = loss_fn()
        losses.append(l.item())
        l.backward()
        opt.step()
    for n, p in pm.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, before[n]), n
    json.dump({"B": ref["B"], "T": ref["T"], "inputs": ref["inputs"], "targets": y.tolist(), "mask_prefix": MASK_PREFIX,
               "adamw": ADAMW, "loss": loss.item(), "losses_after_step1": losses, "r": r, "alpha": alpha,
               "use_rslora": rslora, "targets_modules": targets},
              open(os.path.join(out, "ref.json"), "w"), indent=1)
    for f in os.listdir(out):
        if f.endswith(".md"):
            os.remove(os.path.join(out, f))
    print(name, "loss", loss.item(), "params", len(params))


if __name__ == "__main__":
    for n in sys.argv[1:] or list(SETUPS):
        build(n)
