#!/usr/bin/env python3
"""spec_cost_ab.py A_BENCH_SPEC B_BENCH_SPEC MODEL [--rounds R] [--cpu] [-- BENCH_SPEC ARGS...]
Interleaved A/B of two bench_spec binaries' cost tables (-s C): runs A, B,
B, A, A, B, ... (R runs each; the order alternates so neither always runs
first), parses each run's "x 1-token forward" column and its 1-token
forward in ms, and prints per row the medians of A and B and B/A. With
--cpu the costs are CPU time (-cpu 1), else wall. Extra arguments after --
go to both (default: -d models/kjv-llama -s C -t 2 -m 21).
Used by spec23 (bench/results/spec23-2026-12-07.md) on the random target of
bench/make_spec_target.py."""
import re, statistics, subprocess, sys

args = sys.argv[1:]
extra = ["-d", "models/kjv-llama", "-s", "C", "-t", "2", "-m", "21"]
if "--" in args:
    i = args.index("--"); extra = args[i + 1:]; args = args[:i]
rounds, cpu = 10, False
if "--rounds" in args:
    i = args.index("--rounds"); rounds = int(args[i + 1]); del args[i:i + 2]
if "--cpu" in args:
    args.remove("--cpu"); cpu = True
a, b, model = args
if cpu: extra = extra + ["-cpu", "1"]

def run(binary):
    out = subprocess.run([binary, model] + extra, capture_output=True, text=True, check=True).stdout
    unit = float(re.search(r"1-token target forward = ([0-9.]+) ms", out).group(1))
    rows = {"1-token forward, ms": unit}
    for m in re.finditer(r"^\| (target forward[^|]*?) \| ([0-9.]+) \| ([0-9.]+) \|$", out, re.M):
        rows[m.group(1)] = float(m.group(3))
    return rows

res = {"A": [], "B": []}
for r in range(rounds):
    for k in (("A", "B") if r % 2 == 0 else ("B", "A")):
        res[k].append(run(a if k == "A" else b))
print(f"# {'CPU time' if cpu else 'wall'}; {rounds} runs each, interleaved; A = {a}, B = {b}")
print("| row | A median | B median | B/A | B < A in |")
print("|---|---|---|---|---|")
for key in res["A"][0]:
    va = [x[key] for x in res["A"]]; vb = [x[key] for x in res["B"]]
    ma, mb = statistics.median(va), statistics.median(vb)
    wins = sum(1 for x, y in zip(va, vb) if y < x)
    print(f"| {key} | {ma:.3f} | {mb:.3f} | {mb / ma:.3f} | {wins}/{rounds} |")
