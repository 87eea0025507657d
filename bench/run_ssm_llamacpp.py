#!/usr/bin/env python3
"""run_ssm_llamacpp.py — lmc against llama.cpp on the CPU, same Mamba weights,
same run, interleaved: a random Mamba at mamba-130m's shape
(bench/make_mamba_random.py, F32) as an HF folder for lmc and as a GGUF that
llama.cpp's own convert_hf_to_gguf.py writes (--outtype f32) for llama.cpp.
Per repetition, in turn: bench_mamba_model (lmc) and llama-bench (one
repetition each) for
  prefill: 512 tokens from an empty state (pp512), tokens/s;
  decode:  128 tokens from an empty state (tg128), tokens/s;
and, on a 2-layer model of the same width (so a 16k-token context is
prefilled in reasonable time on 2 cores), decode of 32 tokens after 1k and
after 16k tokens of context (llama-bench -d). Medians over repetitions;
ratios lmc / llama.cpp from the same run. Prints a Markdown table.
  usage: run_ssm_llamacpp.py LLAMA_CPP_DIR [--work DIR] [--reps N] [--threads N]
LLAMA_CPP_DIR: the peer's source tree (build/bin/llama-bench inside), as
../shared/tools/build-llamacpp-peer.sh leaves it. Run from the repository
root after building bench_mamba_model."""
import argparse, json, os, statistics, subprocess, sys

ap = argparse.ArgumentParser()
ap.add_argument("llama")
ap.add_argument("--work", default="/tmp/lmc-mamba-bench")
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--ctx-reps", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--pp", type=int, default=512)
ap.add_argument("--tg", type=int, default=128)
ap.add_argument("--ctx-tg", type=int, default=32)
a = ap.parse_args()
bench = os.path.join(a.llama, "build", "bin", "llama-bench")


def sh(cmd):
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def model(name, layers):
    d = os.path.join(a.work, name)
    g = d + "-f32.gguf"
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        sh([sys.executable, "bench/make_mamba_random.py", d, "--layers", str(layers)])
    if not os.path.exists(g):
        sh([sys.executable, os.path.join(a.llama, "convert_hf_to_gguf.py"), d, "--outtype", "f32",
            "--outfile", g])
    return d, g


def lmc(d, T, N, D):
    out = sh(["./build/bench_mamba_model", "-m", d, "-t", str(a.threads), "-T", str(T), "-N", str(N),
              "-D", str(D)]).split()
    return float(out[1]), float(out[3])


def llama(g, p, n, d=0):
    out = sh([bench, "-m", g, "-t", str(a.threads), "-p", str(p), "-n", str(n), "-d", str(d), "-r", "1",
              "-o", "jsonl"])
    res = {}
    for line in out.splitlines():
        if line.startswith("{"):
            j = json.loads(line)
            res["pp" if j["n_prompt"] > 0 else "tg"] = j["avg_ts"]
    return res


os.makedirs(a.work, exist_ok=True)
d130, g130 = model("m130", 24)
d2, g2 = model("m130-2l", 2)
r = {k: [] for k in ["lmc_pp", "lmc_tg", "ll_pp", "ll_tg", "lmc_1k", "lmc_16k", "ll_1k", "ll_16k"]}
for i in range(a.reps):
    pp, tg = lmc(d130, a.pp, a.tg, 0)
    r["lmc_pp"].append(pp), r["lmc_tg"].append(tg)
    x = llama(g130, a.pp, a.tg)
    r["ll_pp"].append(x["pp"]), r["ll_tg"].append(x["tg"])
    print(f"rep {i}: lmc pp {pp:.1f} tg {tg:.2f}; llama.cpp pp {x['pp']:.1f} tg {x['tg']:.2f}", file=sys.stderr)
for i in range(a.ctx_reps):
    for D in (1024, 16384):
        _, tg = lmc(d2, 512, a.ctx_tg, D)
        r[f"lmc_{D // 1024}k"].append(tg)
        x = llama(g2, 0, a.ctx_tg, D)
        r[f"ll_{D // 1024}k"].append(x["tg"])
        print(f"ctx rep {i} depth {D}: lmc tg {tg:.2f}; llama.cpp tg {x['tg']:.2f}", file=sys.stderr)
m = {k: statistics.median(v) for k, v in r.items() if v}
print(f"| measure, {a.threads} thread(s) (median of {a.reps}; context rows {a.ctx_reps}) | lmc tok/s | "
      "llama.cpp tok/s | lmc / llama.cpp |")
print("|---|---|---|---|")
for name, k in [(f"prefill pp{a.pp}, 130M", "pp"), (f"decode tg{a.tg}, 130M", "tg")]:
    print(f"| {name} | {m['lmc_' + k]:.2f} | {m['ll_' + k]:.2f} | {m['lmc_' + k] / m['ll_' + k]:.2f}x |")
if a.ctx_reps:
    for D in ("1k", "16k"):
        print(f"| decode {a.ctx_tg} after {D} context, 2-layer | {m['lmc_' + D]:.2f} | {m['ll_' + D]:.2f} | "
              f"{m['lmc_' + D] / m['ll_' + D]:.2f}x |")
    print(f"\ndecode speed 16k / 1k: lmc {m['lmc_16k'] / m['lmc_1k']:.3f}, llama.cpp {m['ll_16k'] / m['ll_1k']:.3f}")
print("raw:", json.dumps(r))
