#!/usr/bin/env python3
"""spec_cli_cpu.py — batch-1 speculative decoding on the CPU, lmc against
llama.cpp on the same target/draft pair in one run (issue 17): greedy
completions of KJV verse openings, each prompt through every engine in
turn (interleaved, ROUNDS times):

  lmc generate -m TARGET                                          (plain)
  lmc generate -m TARGET --draft-model DRAFT --draft-tokens K     (adaptive K <= K)
  llama-speculative -m TARGET.gguf -md DRAFT.gguf --spec-draft-n-max K --spec-draft-n-min 0
                    --temp 0 --top-k 1                            (per GGUF dtype)
  llama-speculative-simple (the same flags and --spec-type draft-simple; if built)

The GGUF files are written by `lmc convert` in each --llama-dtype (bf16:
the dtype lmc runs the HF folders in; f16 too by default, the type
llama.cpp's AVX2 CPU kernels have a fast path for). Tokens/s come from each
engine's own decode timer ("generated N tokens at X tok/s"; llama.cpp's
"decoded N tokens in T seconds"), drafted / accepted from each engine's own
counts; CPU s is the child process's user+sys time per run (load, prefill
and decode: the machine may be shared, so wall-time rates move with the
load and the CPU time says how much of the core each got). lmc's
speculative texts must equal its plain ones (greedy).

Usage: bench/spec_cli_cpu.py LMC LLAMA_BIN_DIR TARGET DRAFT [--prompts 8] [--tokens 64]
       [--rounds 2] [--threads 2] [--k 4] [--llama-dtype bf16,f16] [--no-simple] [--no-llama]
       [--lmc-base OTHER_LMC: its plain and --draft-model runs too, an A/B of two builds]
       [--lmc-variant 'EXTRA ARGS' (repeatable): more lmc --draft-model rows, e.g. '--draft-threads 1']
       [--gguf-dir /tmp/lmc-spec-cli]
"""
import argparse, os, re, resource, statistics, subprocess, sys
from kjv_prompts import kjv_prompts

ap = argparse.ArgumentParser()
ap.add_argument("lmc"); ap.add_argument("llama_bin"); ap.add_argument("target"); ap.add_argument("draft")
ap.add_argument("--prompts", type=int, default=8); ap.add_argument("--tokens", type=int, default=64)
ap.add_argument("--rounds", type=int, default=2); ap.add_argument("--threads", default="2")
ap.add_argument("--k", default="4"); ap.add_argument("--llama-dtype", default="bf16,f16")
ap.add_argument("--no-simple", action="store_true"); ap.add_argument("--lmc-base", default="")
ap.add_argument("--no-llama", action="store_true"); ap.add_argument("--gguf-dir", default="/tmp/lmc-spec-cli")
ap.add_argument("--held-out", action="store_true",
                help="prompts from the validation books (James..Revelation: kjv_prompts.py), which no model of the pair trained on")
ap.add_argument("--lmc-variant", action="append", default=[],
                help="more lmc --draft-model rows with these extra arguments (e.g. '--draft-adapt timed')")
a = ap.parse_args()
env = dict(os.environ, LD_LIBRARY_PATH=a.llama_bin + ":" + os.environ.get("LD_LIBRARY_PATH", ""))

def gguf(d, dt):
    os.makedirs(a.gguf_dir, exist_ok=True)
    f = os.path.join(a.gguf_dir, "%s.%s.gguf" % (os.path.basename(d.rstrip("/")), dt))
    if not os.path.exists(f):
        subprocess.run([a.lmc, "convert", "-m", d, "-o", f, "--dtype", dt], check=True, stdout=subprocess.DEVNULL)
    return f

def run(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode: sys.exit("%s failed:\n%s" % (cmd[0], r.stderr[-1500:]))
    return r, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

extra = [None]  # the last lmc run's (tokens, target forwards, decode CPU s or None)

def lmc(prompt, extra_args, exe=None):
    r, cpu = run([exe or a.lmc, "generate", "-m", a.target, "-p", prompt, "-n", str(a.tokens), "--temp", "0",
                  "--ignore-eos", "--device", "cpu", "--threads", a.threads, *extra_args])
    m = re.search(r"generated (\d+) tokens at ([0-9.]+) tok/s", r.stderr)
    d = re.search(r"(\d+) rounds, (\d+) drafted, (\d+) accepted", r.stderr)
    dc = re.search(r"decode CPU ([0-9.]+) s", r.stderr)
    extra[0] = (int(m.group(1)), int(d.group(1)) if d else int(m.group(1)), float(dc.group(1)) if dc else None)
    return float(m.group(2)), cpu, (int(d.group(2)), int(d.group(3))) if d else (0, 0), r.stdout

def llama(tool, dt, prompt):
    r, cpu = run([os.path.join(a.llama_bin, tool), "-m", gguf(a.target, dt), "-md", gguf(a.draft, dt),
                  "-p", prompt, "-n", str(a.tokens), "--temp", "0", "--top-k", "1", "--ignore-eos", "-s", "1",
                  "-t", a.threads, "-tb", a.threads, "-td", a.threads, "-c", "1024", "--spec-draft-n-max", a.k,
                  "--spec-draft-n-min", "0", *(["--spec-type", "draft-simple"] if tool.endswith("simple") else [])])
    log = r.stdout + r.stderr
    m = re.search(r"decoded\s+(\d+) tokens in\s+([0-9.]+) seconds", log)
    dr, ac = re.search(r"n_drafted\s*=\s*(\d+)", log), re.search(r"n_accept\s*=\s*(\d+)", log)
    return int(m.group(1)) / float(m.group(2)), cpu, (int(dr.group(1)), int(ac.group(1))), ""

prompts = kjv_prompts(a.prompts, a.held_out)
modes = [("lmc", "plain", lambda p: lmc(p, [])),
         ("lmc", "--draft-model, adaptive K<=" + a.k, lambda p: lmc(p, ["--draft-model", a.draft, "--draft-tokens", a.k]))]
if a.lmc_base:  # an A/B of two lmc builds, interleaved with the rest
    modes += [("lmc base", "plain", lambda p: lmc(p, [], a.lmc_base)),
              ("lmc base", "--draft-model, adaptive K<=" + a.k,
               lambda p: lmc(p, ["--draft-model", a.draft, "--draft-tokens", a.k], a.lmc_base))]
for v in a.lmc_variant:
    modes.append(("lmc", "--draft-model, K<=%s, %s" % (a.k, v),
                  lambda p, v=v: lmc(p, ["--draft-model", a.draft, "--draft-tokens", a.k, *v.split()])))
tools = [] if a.no_llama else ["llama-speculative"] + ([] if a.no_simple else ["llama-speculative-simple"])
for dt in a.llama_dtype.split(","):
    for t in tools:
        if os.path.exists(os.path.join(a.llama_bin, t)):
            modes.append(("llama.cpp " + dt, t + " K=" + a.k, lambda p, t=t, dt=dt: llama(t, dt, p)))
rate = {i: [] for i in range(len(modes))}; cpu = {i: [] for i in range(len(modes))}
dr = {i: [0, 0] for i in range(len(modes))}; texts = {i: [] for i in range(len(modes))}
tf = {i: [0, 0] for i in range(len(modes))}; dcpu = {i: [] for i in range(len(modes))}  # lmc: tokens, target forwards; decode CPU s
la = os.getloadavg()[0]
for r in range(a.rounds):
    for p in prompts:
        for i, (_, _, f) in enumerate(modes):  # interleaved: each prompt through every engine in turn
            extra[0] = None
            tps, c, (d, acc), out = f(p)
            rate[i].append(tps); cpu[i].append(c); dr[i][0] += d; dr[i][1] += acc
            if extra[0]:
                tf[i][0] += extra[0][0]; tf[i][1] += extra[0][1]
                if extra[0][2] is not None: dcpu[i].append(extra[0][2])
            if r == 0: texts[i].append(out)
print("target %s, draft %s, %d prompts x %d tokens x %d rounds, %s threads, greedy; load average %.1f -> %.1f"
      % (a.target, a.draft, len(prompts), a.tokens, a.rounds, a.threads, la, os.getloadavg()[0]))
print()
print("| engine | mode | decode tok/s (median) | vs lmc plain | lmc spec vs this | CPU s per run (median) | decode CPU s (median, lmc spec) | tokens per target forward | drafted / accepted | texts equal to lmc plain |")
print("|---|---|---|---|---|---|---|---|---|---|")
med = {i: statistics.median(v) for i, v in rate.items()}
for i, (eng, mode, _) in enumerate(modes):
    print("| %s | %s | %.1f | %.2fx | %s | %.2f | %s | %s | %s | %s |" % (
        eng, mode, med[i], med[i] / med[0], "%.2fx" % (med[1] / med[i]) if i != 1 else "-",
        statistics.median(cpu[i]), "%.3f" % statistics.median(dcpu[i]) if dcpu[i] else "-",
        "%.2f" % (tf[i][0] / tf[i][1]) if tf[i][1] else "-",
        "%d / %d (%.0f%%)" % (dr[i][0], dr[i][1], 100 * dr[i][1] / max(1, dr[i][0])) if dr[i][0] else "-",
        "%d of %d" % (sum(x == y for x, y in zip(texts[i], texts[0])), len(prompts)) if eng.startswith("lmc") else "-"),
        flush=True)
