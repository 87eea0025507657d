#!/usr/bin/env python3
"""make_spec_target.py SRC DST — a random Llama of exactly kjv-target's shape
(issue 17's speculative target: hidden 576, 12 layers, 9 heads / 9 kv heads,
head_dim 64, MLP 1536, vocab 8192, tied embeddings) in DST, BF16 on disk,
with SRC's config fields otherwise and its tokenizer files (SRC:
models/kjv-llama, whose tokenizer has the 8192 ids). Seeded numpy (std 0.02,
norms 1; make_r125m.py's writer): the same bytes every time. A forward's cost
does not depend on the weights' values, so bench_spec's per-M costs on it
stand for the trained target's (its text is meaningless: acceptance is not
measured on it).
usage: python3 bench/make_spec_target.py models/kjv-llama /tmp/spec-target"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_r125m import make_random_llama

make_random_llama(*sys.argv[1:3], C=576, L=12, H=9, I=1536, V=8192, dtype="BF16",
                  cfg_extra={"tie_word_embeddings": True}, indent=1)
