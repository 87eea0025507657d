#!/usr/bin/env python3
"""spec_trace_ab.py BASE_LMC NEW_LMC TARGET DRAFT [ROUNDS 4] — interleaved A/B
of bench/spec_trace_cpu.py (4 prompts x 128 tokens, 2 threads, plain and
--draft-tokens 4 --draft-adapt off, so the verifications are 5-row
forwards): per binary the medians over ROUNDS runs of the plain 1-row
forward's and the 5-row forward's wall us, per op (pool function) and per
matmul, and the 5-row / 1-row ratio per run. Run from the repository root.
spec23 (bench/results/spec23-2026-12-07.md): TARGET = the random kjv-target
twin of bench/make_spec_target.py, DRAFT = models/kjv-llama (any draft: with
K fixed its acceptance does not matter)."""
import re, subprocess, statistics, sys
bins = {"base": sys.argv[1], "new": sys.argv[2]}
target, draft = sys.argv[3], sys.argv[4]
rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 4
res = {k: [] for k in bins}
def parse(out):
    d = {}
    sec = None
    lines = out.split("\n")
    for i, l in enumerate(lines):
        if l.startswith("plain:"): sec = "plain"
        elif l.startswith("spec --draft-adapt off"): sec = "off"
        elif l.startswith("spec default"): sec = "def"
        m = re.match(r"\s+target M=(\d+)\s+(\d+)\s+([0-9.]+)", l)
        if m and sec in ("plain", "off"):
            M, n = int(m.group(1)), int(m.group(2))
            if (sec == "plain" and M == 1) or (sec == "off" and M == 5 and n > 50):
                key = f"{sec} M={M}"
                d[key + " wall"] = float(m.group(3))
                ops = lines[i + 1]
                for op in ("multi_task", "attn_task", "swiglu_task", "rms_task", "add_task", "rope_task"):
                    mm = re.search(op + r" ([0-9.]+)", ops)
                    if mm: d[key + " " + op] = float(mm.group(1))
                mm = re.search(r"matmuls: qkv (\d+), o (\d+), gate\+up (\d+), down (\d+), head (\d+)", lines[i + 2])
                if mm:
                    for nm, v in zip(("qkv", "o", "gateup", "down", "head"), mm.groups()): d[key + " mm_" + nm] = float(v)
    return d
for r in range(rounds):
    for k in (("base", "new") if r % 2 == 0 else ("new", "base")):
        out = subprocess.run(["python3", "bench/spec_trace_cpu.py", bins[k], target, draft, "--prompts", "4",
                              "--tokens", "128", "--variant", "--draft-adapt off"],
                             capture_output=True, text=True, check=True).stdout
        res[k].append(parse(out))
keys = res["base"][0].keys()
print(f"{rounds} runs each, interleaved; us per forward (medians)")
print("| row | base | new | new/base |")
print("|---|---|---|---|")
for key in keys:
    a = statistics.median(x[key] for x in res["base"] if key in x); b = statistics.median(x[key] for x in res["new"] if key in x)
    print(f"| {key} | {a:.0f} | {b:.0f} | {b/a:.3f} |")
r5 = lambda k: statistics.median(x["off M=5 wall"] / x["plain M=1 wall"] for x in res[k])
print(f"| M=5 / plain M=1 (per run, median) | {r5('base'):.3f} | {r5('new'):.3f} | {r5('new')/r5('base'):.3f} |")
