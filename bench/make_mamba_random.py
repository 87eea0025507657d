#!/usr/bin/env python3
"""make_mamba_random.py — a random-weight Mamba at state-spaces/mamba-130m-hf's
shape (hidden 768, 24 layers, d_inner 1536, state 16, conv 4, dt rank 48,
vocab 50280) as a Hugging Face folder (config.json + model.safetensors, F32,
transformers' own initialisation, seed 0), for bench/run_ssm_llamacpp.sh.
No tokenizer files: llama.cpp's converter then takes its built-in GPT-NeoX
vocabulary, and both engines are timed on token ids.
  usage: make_mamba_random.py OUT_DIR [--layers N]"""
import argparse
import torch
from transformers import MambaConfig, MambaForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--layers", type=int, default=24)
a = ap.parse_args()
torch.manual_seed(0)
cfg = MambaConfig(vocab_size=50280, hidden_size=768, num_hidden_layers=a.layers, state_size=16,
                  expand=2, conv_kernel=4, time_step_rank=48, use_bias=False, use_conv_bias=True,
                  residual_in_fp32=True, tie_word_embeddings=True, layer_norm_epsilon=1e-5,
                  pad_vocab_size_multiple=8, bos_token_id=0, eos_token_id=0, pad_token_id=0)
m = MambaForCausalLM(cfg).float().eval()
m.save_pretrained(a.out, safe_serialization=True)
print(a.out, sum(p.numel() for p in m.parameters()), "parameters")
