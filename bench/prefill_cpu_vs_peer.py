#!/usr/bin/env python3
"""prefill_cpu_vs_peer.py — 512-token prefill in tokens per CPU-second: two builds' bench_prefill_ab
(forward only, in-process CPU time, our GEMM path: --paths 1) and llama.cpp's llama-bench on the same
weights (GGUF), in turn, ROUNDS times (order rotated), medians. llama-bench's CPU time is its run with
`-p 512` minus that with `-p 2` (`-n 0 -r 1 --no-warmup`, getrusage of the child: it memory-maps the
weights, so loading cancels). At THREADS=1 no thread spins at barriers, so CPU time is the work done
whatever share of the cores other processes take; at 2 threads both engines' spinning counts.

usage: PEER_BIN=/path/to/llama.cpp/bin THREADS=1 python3 bench/prefill_cpu_vs_peer.py NEW_BENCH OLD_BENCH ROUNDS DIR GGUF
 (NEW_BENCH / OLD_BENCH: two builds' bench_prefill_ab; DIR: the HF folder; GGUF: the same weights for llama.cpp)
"""
import os, re, resource, statistics, subprocess, sys
new, old, R, d, gguf = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
CPP, TH = os.environ["PEER_BIN"], os.environ.get("THREADS", "1")
def lmc(b):
    out = subprocess.run([b, "--dir", d, "--threads", TH, "--reps", "3", "--paths", "1"], check=True,
                         capture_output=True, text=True).stdout
    return float(re.search(r"our AVX2[^|]*\|\s*([\d.]+)\s*\|\s*([\d.]+)", out).group(2))
def cpp_cpu(p):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([CPP + "/llama-bench", "-m", gguf, "-p", str(p), "-n", "0", "-r", "1", "-t", TH, "--no-warmup"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=dict(os.environ, LD_LIBRARY_PATH=CPP))
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
res = {"new": [], "old": [], "cpp": []}
names = list(res)
for r in range(R):
    for k in names[r % 3:] + names[:r % 3]:
        res[k].append(lmc(new) if k == "new" else lmc(old) if k == "old" else 510.0 / (cpp_cpu(512) - cpp_cpu(2)))
m = {k: statistics.median(v) for k, v in res.items()}
print(f"prefill tokens per CPU-second, {TH} thread(s), {R} rounds: new {m['new']:.1f}, old {m['old']:.1f}, "
      f"llama.cpp {m['cpp']:.1f}; new/old {m['new'] / m['old']:.3f}x, new/llama.cpp {m['new'] / m['cpp']:.3f}x, "
      f"old/llama.cpp {m['old'] / m['cpp']:.3f}x")
print("rounds: " + "  ".join(f"{k}=" + ",".join(f"{x:.0f}" for x in v) for k, v in res.items()))
