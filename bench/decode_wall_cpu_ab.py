#!/usr/bin/env python3
"""decode_wall_cpu_ab.py — two lmc binaries' decode at THREADS threads, interleaved (the order
reversed every other round): wall tok/s (lmc's own line) at N new tokens after a 2-token prompt,
`--device cpu`, and CPU ms per token = (cpu(N) - cpu(1)) / (N - 1) from the children's rusage (at
2 threads it includes the pool's spinning). Prints medians, the best wall tok/s and every round's.

usage: python3 bench/decode_wall_cpu_ab.py NEW OLD ROUNDS N THREADS MODEL...
"""
import resource, subprocess, sys, statistics, os, re
new, old, R, N, T = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def run(b, m, n):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([b, "generate", "-m", m, "-p", "ab", "-n", str(n), "--temp", "0", "--ignore-eos", "-t", T, "--device", "cpu"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    tps = float(re.search(r"generated \d+ tokens at ([0-9.]+) tok/s", p.stderr).group(1))
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), tps
for m in sys.argv[6:]:
    res = {"new": ([], []), "old": ([], [])}
    for r in range(R):
        for name in (["new", "old"] if r % 2 == 0 else ["old", "new"]):
            b = new if name == "new" else old
            c1, _ = run(b, m, 1); cN, tps = run(b, m, N)
            res[name][0].append(1000 * (cN - c1) / (N - 1)); res[name][1].append(tps)
    cn, co = statistics.median(res["new"][0]), statistics.median(res["old"][0])
    tn, to = statistics.median(res["new"][1]), statistics.median(res["old"][1])
    print(f"{os.path.basename(m)}: max tok/s new {max(res['new'][1]):.1f} old {max(res['old'][1]):.1f}; CPU ms/token new {cn:.2f} old {co:.2f} (old/new {co/cn:.3f}x); tok/s new {tn:.1f} old {to:.1f} ({tn/to:.3f}x); "
          f"tok/s new {[round(x) for x in res['new'][1]]} old {[round(x) for x in res['old'][1]]}", flush=True)
