#!/usr/bin/env python3
"""finetune_peft.py — the PEFT peer of bench/gpu_qlora.sh: LoRA or QLoRA
(bitsandbytes NF4, double quantization, bf16 compute) training steps of a
Hugging Face folder with the settings lmc finetune runs there (r 16, alpha
32, all linear layers, dropout 0, AdamW lr 2e-4, BATCH rows of SEQ tokens,
bf16 base, SDPA attention, no gradient checkpointing, loss on every token).
Prints one line: median tokens/s over the steps after SKIP and the peak
torch.cuda.max_memory_allocated, as
  peft MODE: TOKS tok/s, peak MIB MiB (STEPS steps, SEQ x BATCH)
Usage: finetune_peft.py DIR lora|qlora SEQ BATCH STEPS SKIP [cpu]  (cpu: a
functional check on the CPU in fp32, LoRA only)."""
import statistics
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    d, mode, seq, batch, steps, skip = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
    cpu = len(sys.argv) > 7 and sys.argv[7] == "cpu"
    dev = "cpu" if cpu else "cuda"
    kw = {"dtype": torch.float32 if cpu else torch.bfloat16, "attn_implementation": "sdpa"}
    if mode == "qlora":
        from transformers import BitsAndBytesConfig
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kw["device_map"] = {"": 0}
    m = AutoModelForCausalLM.from_pretrained(d, **kw)
    if mode != "qlora":
        m = m.to(dev)
    m.config.use_cache = False
    m = get_peft_model(m, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                      bias="none", task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-4)
    g = torch.Generator().manual_seed(0)
    vocab = min(m.config.vocab_size, 8192)
    ids = torch.randint(0, vocab, (batch, seq), generator=g).to(dev)
    if not cpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if not cpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times[skip:] if len(times) > skip else times)
    peak = 0 if cpu else torch.cuda.max_memory_allocated() / 2**20
    print(f"peft {mode}: {batch * seq / t:.1f} tok/s, peak {peak:.0f} MiB ({steps} steps, {seq} x {batch}), "
          f"loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
