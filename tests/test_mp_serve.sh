#!/usr/bin/env bash
# test_mp_serve.sh — `lmc serve --tp 2` (infer/sched_tp.c): two ranks
# started with torchrun-style variables (a rendezvous port from the OS,
# held for them: mp_serve.py's free_port), rank 0 serving HTTP on a port
# the OS picks, rank 1 following its steps. On llama-tiny (2 KV heads,
# split) and qwen2-tiny (1 KV head, replicated; q/k/v biases): 12
# concurrent requests (greedy, n = 2 greedy choices, seeded sampling, a
# streamed one) give the texts, token ids' count and finish reasons of the
# one-process server on the same requests; SIGTERM to rank 0 ends both
# ranks with status 0; the same with --tp-vocab (the embedding and head
# split by vocabulary rows, the logits gathered for rank 0's sampler);
# --tp with a world of the wrong size is refused.
# Waits on the servers' log lines (pipes), never on a clock.
# Usage: test_mp_serve.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
command -v python3 >/dev/null || { echo "test_mp_serve: skipped (python3 missing)"; exit 0; }
python3 - "$LMC" <<'PY'
import os, subprocess, sys
sys.path.insert(0, "tests")
import mp_serve  # tests/mp_serve.py: the servers' launcher and requests
from mp_serve import check, stop
lmc = sys.argv[1]

def start(model, world, extra=()):
    """one process (world 1) or world ranks at --tp world: returns (procs, port, logs, drains)"""
    return mp_serve.start(lmc, model, world, ["--tp", str(world)] + list(extra))

REQS = []
for i in range(12):
    b = {"prompt": f"request {i}: the quick brown fox" + " jumps" * (i % 4), "max_tokens": 10 + i % 5,
         "temperature": 0, "ignore_eos": True}
    if i % 4 == 1: b["n"] = 2
    if i % 4 == 2: b.update(temperature=0.8, seed=100 + i)
    if i % 4 == 3: b["stream"] = True
    REQS.append(b)

def run_all(port): return mp_serve.run_all(port, REQS)

for fx in ["llama-tiny", "qwen2-tiny"]:
    model = f"tests/fixtures/{fx}"
    procs, port, logs, dr = start(model, 1)
    check(port is not None, f"{fx}: one-process server did not start: {''.join(logs[0])}")
    if port is None: continue
    ref = run_all(port)
    stop(procs, dr)
    for extra in ((), ("--tp-vocab",)):  # heads/MLP split; and the embedding/head by vocabulary rows too
        what = " ".join(("--tp 2",) + extra)
        procs, port, logs, dr = start(model, 2, extra)
        check(port is not None, f"{fx}: {what} server did not start: {''.join(logs[0])}")
        if port is None:
            for p in procs: p.kill()
            continue
        check(any("tensor parallel over 2 ranks" in l for l in logs[0]), f"{fx}: start-up line: {''.join(logs[0])}")
        got = run_all(port)
        codes = stop(procs, dr)
        check(codes == [0, 0], f"{fx}: {what} exit codes {codes}: {''.join(logs[1])[-500:]}")
        fl = [l for l in logs[1] if "followed" in l]
        steps = int(fl[0].split("followed ")[1].split()[0]) if fl else 0
        check(steps > 0, f"{fx}: {what} rank 1 followed no step: {fl}")
        for k, (a, b) in enumerate(zip(got, ref)):
            check(a == b and not isinstance(a, str), f"{fx} request {k} {REQS[k]}: {what} {a} vs one process {b}")
        print(f"{fx} {what}: {sum(a == b for a, b in zip(got, ref))}/{len(REQS)} requests equal to one process")
# a world that is not --tp
env = dict(os.environ, RANK="0", WORLD_SIZE="1")
p = subprocess.run([lmc, "serve", "-m", "tests/fixtures/llama-tiny", "--port", "0", "--tp", "2"], env=env,
                   capture_output=True, timeout=60)
check(p.returncode == 2 and b"needs 2 ranks" in p.stderr, f"--tp 2 on one rank: {p.returncode} {p.stderr[-300:]}")
p = subprocess.run([lmc, "serve", "-m", "tests/fixtures/llama-tiny", "--port", "0", "--tp", "2", "--device", "cuda"],
                   capture_output=True, timeout=60)
check(p.returncode == 2 and b"CPU" in p.stderr, f"--tp 2 --device cuda: {p.returncode} {p.stderr[-300:]}")
print(f"test_mp_serve: {mp_serve.fails} failed")
sys.exit(1 if mp_serve.fails else 0)
PY
