#!/usr/bin/env bash
# run_rl_addition.sh — the RL demonstration on the CPU: two-digit addition.
# Makes a corpus of "a+b=c" lines (a, b < 50; 100 held-out pairs never
# seen), trains a byte-level BPE tokenizer and a 2-layer 64-wide Llama with
# `lmc train` for 900 steps (partly right), then runs GRPO with
# `lmc rl` on 200 training prompts (reward: the first number of the
# completion equals a+b) and prints held-out greedy accuracy before/after.
# Usage: bench/run_rl_addition.sh [PATH/TO/lmc] [WORKDIR]
set -eu
LMC="${1:-build/lmc}"
W="${2:-$(mktemp -d)}"
mkdir -p "$W"
python3 - "$W" <<'PY'
import json, random, sys, os
d = sys.argv[1]
r = random.Random(0)
held = set()
while len(held) < 100:
    held.add((r.randint(0, 49), r.randint(0, 49)))
with open(os.path.join(d, "corpus.txt"), "w") as f:
    for _ in range(30000):
        a, b = r.randint(0, 49), r.randint(0, 49)
        if (a, b) in held: continue
        f.write(f"{a}+{b}={a+b}\n")
tr = []
while len(tr) < 200:
    a, b = r.randint(0, 49), r.randint(0, 49)
    if (a, b) not in held: tr.append((a, b))
with open(os.path.join(d, "tasks.jsonl"), "w") as f:
    for a, b in tr: f.write(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n")
with open(os.path.join(d, "heldout.jsonl"), "w") as f:
    for a, b in sorted(held): f.write(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n")
PY
"$LMC" train-tokenizer --text-file "$W/corpus.txt" --vocab 300 --style gpt2 -o "$W/tok"
"$LMC" prepare-data -m "$W/tok" --text-file "$W/corpus.txt" -o "$W/data" --docs line
"$LMC" train --data "$W/data" -o "$W/m" --arch llama --layers 2 --hidden 64 --heads 4 --kv-heads 4 \
    --intermediate 176 --max-pos 128 --batch 16 --seq 64 --steps 900 --lr 3e-3 --warmup 20 \
    --tokenizer "$W/tok" --save-every 900 --threads 2 2>&1 | tail -1
"$LMC" rl -m "$W/m/step_000900" --tasks "$W/tasks.jsonl" --eval "$W/heldout.jsonl" -o "$W/rl" \
    --group 8 --prompts 8 --max-new 4 --answer-regex '^([0-9]+)' --lr 3e-5 --steps 200 --epochs 2 \
    --threads 2 2>&1 | grep -E "accuracy|step (1|50|100|150|200) "
"$LMC" plot "$W/rl/metrics.jsonl" --metric reward,accuracy -o "$W/rl/reward.svg"
echo "metrics: $W/rl/metrics.jsonl, curve: $W/rl/reward.svg"
