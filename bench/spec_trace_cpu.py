#!/usr/bin/env python3
"""spec_trace_cpu.py — where a verification forward's wall time goes, per
thread (issue 17, spec21): runs `lmc generate` (plain and --draft-model,
interleaved) with LMC_TRACE_POOL (src/core/threadpool.c records every
thread-pool run: function, task count, publish time, the caller's own tasks'
end, the last task's end, the workers' busy ns), cuts the runs into forwards
(a forward starts at the embedding's run), and prints per forward kind
(target / draft) and row count M the mean wall time split into

  own    the calling thread inside its share of pool runs
  wait   the calling thread waiting for a worker's last task (idle)
  serial the calling thread outside pool runs (ops that do not use the pool,
         the forward's glue), i.e. wall - own - wait
  worker the worker threads' busy time inside runs (2 threads: ideally ~own)

and the ops (pool functions) with the most wall time, in microseconds.

Usage: bench/spec_trace_cpu.py LMC TARGET DRAFT [--prompts 4] [--tokens 128] [--threads 2] [--variant ARGS]
"""
import argparse, collections, os, re, subprocess, tempfile
from kjv_prompts import kjv_prompts

ap = argparse.ArgumentParser()
ap.add_argument("lmc"); ap.add_argument("target"); ap.add_argument("draft")
ap.add_argument("--prompts", type=int, default=4); ap.add_argument("--tokens", type=int, default=128)
ap.add_argument("--threads", default="2"); ap.add_argument("--k", default="4")
ap.add_argument("--variant", action="append", default=[])
ap.add_argument("--top", type=int, default=8)
a = ap.parse_args()

prompts = kjv_prompts(a.prompts)
symcache = {}

def syms(obj):
    if obj not in symcache:
        out = subprocess.run(["nm", "-C", obj], capture_output=True, text=True).stdout
        t = {}
        for l in out.split("\n"):
            f = l.split()
            if len(f) >= 3 and f[1] in "tTwW": t[int(f[0], 16)] = f[2]
        symcache[obj] = t
    return symcache[obj]

def read_trace(path):
    """the records of the pool with the most runs (the file has a block per pool)"""
    blocks = []
    for l in open(path):
        if l.startswith("#"): blocks.append([]); continue
        blocks[-1].append(l)
    recs = []
    for l in max(blocks, key=len):
        off, obj, *nums = l.split()
        n_tasks, t0, t_own, t_end, wns, wfirst = map(int, nums)
        name = "note" if obj == "note" else syms(obj).get(int(off, 16), off)
        recs.append((name, n_tasks, t0, t_own, t_end, wns, wfirst))
    return recs

def forwards(recs):
    """(rows, records) per forward: from the embedding's note (its rows) to the next"""
    fw, cur, rows = [], [], 0
    for r in recs:
        if r[0] == "note":
            if cur: fw.append((rows, cur))
            cur, rows = [], r[1]
            continue
        cur.append(r)
    if cur: fw.append((rows, cur))
    return fw

def classify(rows, f):
    att = [r for r in f if r[0].startswith("attn")]
    if not att: return None
    return len(att), rows  # layers, M

def run(p, extra, acc):
    with tempfile.NamedTemporaryFile(suffix=".trace", delete=False) as tf: path = tf.name
    env = dict(os.environ, LMC_TRACE_POOL=path, LMC_SPEC_PROFILE="1")
    cmd = [a.lmc, "generate", "-m", a.target, "-p", p, "-n", str(a.tokens), "--temp", "0", "--ignore-eos",
           "--device", "cpu", "--threads", a.threads, *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if res.returncode: raise SystemExit(res.stderr[-1500:])
    recs = read_trace(path); os.unlink(path)
    fw = forwards(recs)
    prev = None
    for rows, f in fw:
        c = classify(rows, f)
        if c is None: prev = None; continue
        key = c
        t0, t1 = f[0][2], f[-1][4]
        wall = t1 - t0
        own = sum(r[3] - r[2] for r in f); wait = sum(r[4] - r[3] for r in f)
        worker = sum(r[5] for r in f)
        late = [r[6] - r[2] for r in f if r[6] > 0]
        s = acc[key]
        s["n"] += 1; s["wall"] += wall; s["own"] += own; s["wait"] += wait; s["serial"] += wall - own - wait
        s["worker"] += worker; s["runs"] += len(f); s["late"] += sum(late); s["late_n"] += len(late)
        mm = [r for r in f if r[0] == "multi_task"]
        if len(mm) == 4 * key[0] + 1:  # per layer: qkv, o, gate+up, down; then the head
            for i, r in enumerate(mm):
                s["mm:" + ("head" if i == len(mm) - 1 else ("qkv", "o", "gate+up", "down")[i % 4])] += r[4] - r[2]
        for r in f:
            s["op:" + r[0]] += r[4] - r[2]; s["opw:" + r[0]] += r[4] - r[3]; s["opk:" + r[0]] += r[5]
            s["opn:" + r[0]] += 1; s["op1:" + r[0]] += r[5] == 0
        prev = key
    m = re.search(r"generated (\d+) tokens at ([0-9.]+) tok/s", res.stderr)
    return int(m.group(1)) / float(m.group(2))

variants = [("plain", [])] + [("spec " + (v or "default"), ["--draft-model", a.draft, "--draft-tokens", a.k, *v.split()])
                              for v in [""] + a.variant]
acc = {n: collections.defaultdict(collections.Counter) for n, _ in variants}
for p in prompts:
    for name, extra in variants: run(p, extra, acc[name])

pl = acc["plain"]
tl = max((k for k in pl), key=lambda k: pl[k]["n"])  # the plain target step: (layers, 1)
layers = tl[0]
step = pl[tl]["wall"] / pl[tl]["n"]
print("%d prompts x %d tokens, %s threads, load %.1f; plain target forward (pool runs only) %.1f us"
      % (len(prompts), a.tokens, a.threads, os.getloadavg()[0], step / 1e3))
for name, _ in variants:
    print("\n%s:" % name)
    print("  %-14s %5s %8s %7s %7s %7s %7s %7s %6s %8s" % ("forward", "n", "wall us", "steps", "own", "wait", "serial",
                                                       "worker", "runs", "late us"))
    for key in sorted(acc[name], key=lambda k: (-k[0], k[1])):
        s = acc[name][key]; n = s["n"]
        kind = "target" if key[0] == layers else "draft"
        label = "%s M=%d" % (kind, key[1])
        print("  %-14s %5d %8.1f %7.2f %7.1f %7.1f %7.1f %7.1f %6.1f %8.1f" % (
            label, n, s["wall"] / n / 1e3, s["wall"] / n / step, s["own"] / n / 1e3, s["wait"] / n / 1e3,
            s["serial"] / n / 1e3, s["worker"] / n / 1e3, s["runs"] / n, s["late"] / max(1, s["late_n"]) / 1e3))
        ops = sorted(((k[3:], v) for k, v in s.items() if k.startswith("op:")), key=lambda kv: -kv[1])[:a.top]
        print("      " + ", ".join("%s %.0f (wait %.0f, worker %.0f, %.1f runs, %.1f without a worker)" % (
            o, v / n / 1e3, s["opw:" + o] / n / 1e3, s["opk:" + o] / n / 1e3, s["opn:" + o] / n, s["op1:" + o] / n)
            for o, v in ops))
        mm = [(k[3:], v) for k, v in s.items() if k.startswith("mm:")]
        if mm: print("      matmuls: " + ", ".join("%s %.0f" % (k, v / n / 1e3) for k, v in mm))
