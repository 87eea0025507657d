#!/usr/bin/env python3
"""prefill_cputime_ab.py — 512-token prefill cost in CPU time, for a machine shared with other work.

decode_cputime_ab.py's method for the prompt: two lmc binaries (NEW, OLD) and, with PEER_BIN
set, llama.cpp's llama-bench, at 1 thread, on the same GGUF files (or lmc HF folders: lmc
only). Each run's CPU time (user + sys of the child, getrusage) with a 512-token prompt minus
that with a 2-token prompt (lmc: `generate -p P -n 1`; llama-bench: `-p 512` / `-p 2`, `-n 0
-r 1 --no-warmup`) is the prefill's CPU time, loading cancelling out; tok/s = 510 / that. At
1 thread no pool spins, so CPU time is the work done whatever share of the cores other
processes take. Rounds alternate the order; medians.

THREADS=N (env) runs both engines at N threads instead (CPU time then includes any spinning at
barriers, lmc's pool and llama.cpp's).

usage: PEER_BIN=/path/to/llama.cpp/bin python3 bench/prefill_cputime_ab.py NEW OLD ROUNDS MODEL...
(a MODEL ending in -cpp=FILE.gguf gives llama-bench a different file than lmc: e.g.
 r125m-gptq4-cpp=r125m.Q4_0.gguf)
"""
import os, resource, statistics, subprocess, sys
new, old, R = sys.argv[1], sys.argv[2], int(sys.argv[3])
CPP = os.environ.get("PEER_BIN")
TH = os.environ.get("THREADS", "1")
P512 = "the quick brown fox " * 25 + "abcdefghijkl"  # 512 tokens of bench/run_issue10_quant.sh's byte-level vocabulary
def cpu(b, f, long):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if b == "cpp":
        cmd = [CPP + "/llama-bench", "-m", f, "-p", "512" if long else "2", "-n", "0", "-r", "1", "-t", TH, "--no-warmup"]
    else:
        cmd = [b, "generate", "-m", f, "-p", P512 if long else "ab", "-n", "1", "--temp", "0", "--ignore-eos",
               "--threads", TH, "--device", "cpu"]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   env=dict(os.environ, LD_LIBRARY_PATH=CPP or ""))
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
for spec in sys.argv[4:]:
    f, _, cf = spec.partition("-cpp=")
    cf = cf or (f if f.endswith(".gguf") else "")
    names = ["new", "old"] + (["cpp"] if CPP and cf else [])
    res = {k: [] for k in names}
    for r in range(R):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            b = {"new": new, "old": old}.get(k, "cpp")
            ff = cf if k == "cpp" else f
            res[k].append(510.0 / (cpu(b, ff, True) - cpu(b, ff, False)))
    med = {k: statistics.median(v) for k, v in res.items()}
    line = f"{os.path.basename(f)}: prefill tok/s per CPU second new {med['new']:.1f} old {med['old']:.1f} ({med['new'] / med['old']:.2f}x)"
    if "cpp" in med:
        line += f", llama.cpp {med['cpp']:.1f} (new {med['new'] / med['cpp']:.2f}x, old {med['old'] / med['cpp']:.2f}x)"
    print(line + "  rounds: " + " ".join(f"{k}=" + ",".join(f"{x:.0f}" for x in v) for k, v in res.items()), flush=True)
