#!/usr/bin/env python3
"""quant_decode_ab.py — decode cost as user CPU time per token, for A/B of lmc binaries on a shared machine.

Each binary (and "cpp": llama.cpp's llama-bench, PEER_BIN) decodes FILE at T threads (default 1) with
n = 1 and n = N new tokens from a 2-token prompt; (user CPU(N) - user CPU(1)) / (N - 1) is the decode cost
per token, loading, prefill and page-fault (system) time cancelling out. Rounds alternate the order;
medians and minima. At 1 thread no pool spins, so user CPU time is the work done, memory stalls included,
whatever share of the cores other processes take (wall-clock tok/s on a loaded machine measures the
scheduler). lmc runs `generate --device cpu --temp 0 --ignore-eos`.

usage: PEER_BIN=/path/to/llama.cpp/bin python3 bench/quant_decode_ab.py ROUNDS N FILE BIN... [cpp]
       (T=2 in the environment for 2 threads: then spinning pool workers count too)
"""
import os, resource, statistics, subprocess, sys

R, N, f, bins = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
T = os.environ.get("T", "1")
CPP = os.environ.get("PEER_BIN", "")


def user_cpu(b, n):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if b == "cpp":
        cmd = [CPP + "/llama-bench", "-m", f, "-p", "0", "-n", str(n), "-r", "1", "-t", T]
    else:
        cmd = [b, "generate", "-m", f, "-p", "ab", "-n", str(n), "--temp", "0", "--ignore-eos", "-t", T,
               "--device", "cpu"]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - r0.ru_utime


res = {b: [] for b in bins}
for r in range(R):
    for b in bins if r % 2 == 0 else bins[::-1]:
        c1 = user_cpu(b, 1)
        res[b].append(1000 * (user_cpu(b, N) - c1) / (N - 1))
for b in bins:
    x = res[b]
    print(f"{os.path.basename(f.rstrip('/'))} {b}: user CPU ms/token median {statistics.median(x):.2f} "
          f"min {min(x):.2f} rounds {' '.join('%.2f' % v for v in x)}")
