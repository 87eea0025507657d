#!/usr/bin/env python3
"""spec_profile_cpu.py — where a speculative round's time goes on the CPU
(issue 17): for KJV verse openings (as bench/spec_cli_cpu.py picks them),
plain `lmc generate` and `lmc generate --draft-model` with LMC_SPEC_PROFILE=1
(spec.c's own timers: the draft model's forwards, its probabilities and
draws, verification forwards by row count M, acceptance, the rest),
interleaved; sums over the prompts, in microseconds and in plain target
steps (the plain run's decode seconds per token).

Usage: bench/spec_profile_cpu.py LMC TARGET DRAFT [--prompts 8] [--tokens 64] [--threads 2] [--k 4]
       [--variant 'EXTRA ARGS' (repeatable)]
"""
import argparse, re, subprocess, os, collections
from kjv_prompts import kjv_prompts

ap = argparse.ArgumentParser()
ap.add_argument("lmc"); ap.add_argument("target"); ap.add_argument("draft")
ap.add_argument("--prompts", type=int, default=8); ap.add_argument("--tokens", type=int, default=64)
ap.add_argument("--threads", default="2"); ap.add_argument("--k", default="4")
ap.add_argument("--variant", action="append", default=[])
ap.add_argument("--held-out", action="store_true",
                help="prompts from the validation books (James..Revelation: kjv_prompts.py), which no model of the pair trained on")
a = ap.parse_args()
env = dict(os.environ, LMC_SPEC_PROFILE="1")
prompts = kjv_prompts(a.prompts, a.held_out)

def run(p, extra):
    cmd = [a.lmc, "generate", "-m", a.target, "-p", p, "-n", str(a.tokens), "--temp", "0", "--ignore-eos",
           "--device", "cpu", "--threads", a.threads, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode: raise SystemExit(r.stderr[-1500:])
    return r.stderr

variants = [("plain", [])] + [("spec " + (v or "default"), ["--draft-model", a.draft, "--draft-tokens", a.k, *v.split()])
                              for v in ([""] + a.variant)]
tot = {n: collections.Counter() for n, _ in variants}
for p in prompts:
    for name, extra in variants:
        e = run(p, extra); t = tot[name]
        m = re.search(r"generated (\d+) tokens at ([0-9.]+) tok/s", e)
        t["tokens"] += int(m.group(1)); t["decode_s"] += int(m.group(1)) / float(m.group(2))
        m = re.search(r"(\d+) rounds, (\d+) drafted, (\d+) accepted", e)
        if m: t["rounds"] += int(m.group(1)); t["drafted"] += int(m.group(2)); t["accepted"] += int(m.group(3))
        m = re.search(r"draft ([0-9.]+) s, verify ([0-9.]+) s, accept ([0-9.]+) s, other ([-0-9.]+) s.*decode CPU ([0-9.]+) s", e)
        if m:
            for k, g in zip(["draft", "verify", "accept", "other", "cpu"], m.groups()): t[k] += float(g)
        m = re.search(r"draft forwards (\d+) in ([0-9.]+) s.*draft probs\+draws ([0-9.]+) s", e)
        if m: t["dfw_n"] += int(m.group(1)); t["dfw_s"] += float(m.group(2)); t["dprobs"] += float(m.group(3))
        for M, n, us in re.findall(r"verify M=(\d+) x(\d+) ([0-9.]+) us", e):
            t["v%s_n" % M] += int(n); t["v%s_s" % M] += int(n) * float(us) * 1e-6
step = tot["plain"]["decode_s"] / tot["plain"]["tokens"]
print("%d prompts x %d tokens, %s threads; load average %.1f; plain step %.1f us (%.1f tok/s)"
      % (len(prompts), a.tokens, a.threads, os.getloadavg()[0], 1e6 * step, 1 / step))
for name, _ in variants[1:]:
    t = tot[name]; r = t["rounds"]
    print("\n%s: %.1f tok/s (%.2fx plain), %.2f tokens per round, %d/%d accepted (%.0f%%), decode CPU %.2f s"
          % (name, t["tokens"] / t["decode_s"], step * t["tokens"] / t["decode_s"],
             t["tokens"] / r, t["accepted"], t["drafted"], 100 * t["accepted"] / max(1, t["drafted"]), t["cpu"]))
    print("| part | per round (us) | plain steps per round | share |\n|---|---|---|---|")
    rs = t["decode_s"] / r
    for k, lab in [("dfw_s", "draft forwards (%.2f per round, %.1f us each = %.3f plain steps)" % (t["dfw_n"] / r, 1e6 * t["dfw_s"] / max(1, t["dfw_n"]), t["dfw_s"] / max(1, t["dfw_n"]) / step)),
                   ("dprobs", "draft probabilities + draws"), ("verify", "verification forwards"),
                   ("accept", "target probabilities + acceptance"), ("other", "emission, detokenizing, loop")]:
        print("| %s | %.1f | %.3f | %.0f%% |" % (lab, 1e6 * t[k] / r, t[k] / r / step, 100 * t[k] / t["decode_s"]))
    print("| round total | %.1f | %.3f | 100%% |" % (1e6 * rs, rs / step))
    print("verify by rows: " + ", ".join("M=%d: %.1f us = %.2f plain steps (x%d)" % (M, 1e6 * t["v%d_s" % M] / t["v%d_n" % M], t["v%d_s" % M] / t["v%d_n" % M] / step, t["v%d_n" % M])
                                        for M in range(1, 12) if t["v%d_n" % M]))
