"""Loads an adapter folder lmc wrote with PEFT over the base (float64) and
prints the mean next-token NLL of TEXT, to compare with `lmc eval --lora`.
Exit 77 when torch/transformers/peft are not importable (the caller skips).
  python3 tests/lora_peft_check.py BASE ADAPTER TEXT LMC_NLL
"""
import sys
try:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import PeftModel
except Exception:  # pragma: no cover - environment without the packages
    sys.exit(77)

base, adapter, text, want = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
tok = AutoTokenizer.from_pretrained(base)
m = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float64)
m = PeftModel.from_pretrained(m, adapter).eval()
ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
with torch.no_grad():
    lg = m(input_ids=ids).logits[0]
nll = torch.nn.functional.cross_entropy(lg[:-1], ids[0, 1:]).item()
base_m = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float64).eval()
with torch.no_grad():
    nb = torch.nn.functional.cross_entropy(base_m(input_ids=ids).logits[0][:-1], ids[0, 1:]).item()
err = abs(nll - want) / abs(nll)
print(f"peft nll {nll:.8f} lmc {want:.8f} rel err {err:.2e} (base {nb:.8f})")
sys.exit(0 if err < 1e-5 and abs(nll - nb) > 1e-4 else 1)
