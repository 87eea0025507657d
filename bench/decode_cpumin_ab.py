#!/usr/bin/env python3
"""decode_cpumin_ab.py — decode CPU ms per token at 1 thread of two lmc binaries, by minima.

decode_cputime_ab.py's measurement (user + sys CPU of the child at -n 1 and -n N, the difference
per token: loading and the prompt cancel out) with the two binaries alternating every round and
the result taken from the minima, (min cpu(N) - min cpu(1)) / (N - 1): on a machine shared with
other work the other processes only ever add CPU time (cache and memory sharing), so minima over
rounds compare two builds more steadily than medians; the median of the per-round differences is
printed too. No peer: for an A/B of one change.

usage: python3 bench/decode_cpumin_ab.py NEW OLD ROUNDS N FILE|DIR...
"""
import resource, statistics, subprocess, sys, time

new, old, R, N = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
B = {"new": new, "old": old}
P = "In the beginning God created the heaven and the earth."


def cpu(b, f, n):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([b, "generate", "--device", "cpu", "-m", f, "-p", P, "-n", str(n), "--temp", "0",
                    "--ignore-eos", "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def stamp(w):
    print(w, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load", *open("/proc/loadavg").read().split()[:3],
          flush=True)


stamp("start")
for f in sys.argv[5:]:
    c1 = {k: [] for k in B}
    cn = {k: [] for k in B}
    for r in range(R):
        for k in (["new", "old"] if r % 2 == 0 else ["old", "new"]):
            c1[k].append(cpu(B[k], f, 1))
            cn[k].append(cpu(B[k], f, N))
    mn = {k: (min(cn[k]) - min(c1[k])) / (N - 1) * 1e3 for k in B}
    md = {k: statistics.median([(a - b) / (N - 1) * 1e3 for a, b in zip(cn[k], c1[k])]) for k in B}
    print(f"{f}: decode CPU ms/token (1 thread) by minima new {mn['new']:.2f} old {mn['old']:.2f} "
          f"(old/new {mn['old'] / mn['new']:.3f}x); medians new {md['new']:.2f} old {md['old']:.2f} "
          f"({md['old'] / md['new']:.3f}x); cpu(-n {N}) s new {[round(x, 2) for x in cn['new']]} "
          f"old {[round(x, 2) for x in cn['old']]}", flush=True)
stamp("end")
