#!/usr/bin/env python3
"""decode_cputime_ab.py — decode cost in CPU time, for a machine shared with other work.

Two lmc binaries (NEW, OLD: after / before a change) and, with PEER_BIN set, llama.cpp's
llama-bench, decode the same GGUF files at 1 thread; each run's CPU time (user + sys, from
getrusage of the child) at n = 1 and n = N new tokens gives the decode CPU ms per token,
(cpu(N) - cpu(1)) / (N - 1), loading and the prompt cancelling out. Rounds alternate the
order; medians. At 1 thread no pool spins, so CPU time is the work done, stalls on memory
included, whatever share of the cores the other processes take (wall-clock tok/s on a loaded
2-core machine measures mostly the scheduler: llama-bench's spinning threads fall to 1-3 tok/s).

usage: PEER_BIN=/path/to/llama.cpp/bin python3 bench/decode_cputime_ab.py NEW OLD ROUNDS N FILE.gguf...
"""
import resource, subprocess, sys, statistics, os
new, old, R, N = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
P = "In the beginning God created the heaven and the earth."
CPP = os.environ.get("PEER_BIN")
def cpu(b, f, n):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if b == "cpp":
        cmd = [CPP + "/llama-bench", "-m", f, "-p", "0", "-n", str(n), "-r", "1", "-t", "1"]
    else:
        cmd = [b, "generate", "-m", f, "-p", P, "-n", str(n), "--temp", "0", "--ignore-eos", "--threads", "1"]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   env=dict(os.environ, LD_LIBRARY_PATH=CPP or ""))
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
for f in sys.argv[5:]:
    names = ["new", "old"] + (["cpp"] if CPP else [])
    res = {k: [] for k in names}
    for r in range(R):
        for name in (names if r % 2 == 0 else names[::-1]):
            b = {"new": new, "old": old, "cpp": "cpp"}[name]
            c1 = cpu(b, f, 1); cN = cpu(b, f, N)
            res[name].append(1000 * (cN - c1) / (N - 1))
    mn, mo = statistics.median(res["new"]), statistics.median(res["old"])
    line = f"{os.path.basename(f)}: decode CPU ms/token (1 thread) lmc {mn:.1f}, lmc before {mo:.1f} (before/after {mo/mn:.2f}x)"
    if CPP:
        mc = statistics.median(res["cpp"])
        line += f", llama.cpp {mc:.1f} (lmc speed / llama.cpp {mc/mn:.2f}x, before {mc/mo:.2f}x)"
    print(line + "; rounds " + ", ".join(k + " " + " ".join("%.1f" % v for v in res[k]) for k in names), flush=True)
