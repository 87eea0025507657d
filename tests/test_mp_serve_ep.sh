#!/usr/bin/env bash
# test_mp_serve_ep.sh — `lmc serve --ep N` (tools/cmd_serve.c): N ranks
# started with torchrun-style variables (a rendezvous port from the OS,
# held for them: mp_serve.py's free_port), each holding 1/N of every layer's
# experts; rank 0 serves HTTP on a port the OS picks and runs the
# scheduler, the others run each batched step with it (replicated mode: the
# MoE layers exchange each rank's slice of the step's tokens). On
# mixtral-tiny (4 experts) at EP 2 and qwen3moe-tiny (8 experts) at EP 2
# and EP 4: 12 concurrent greedy requests (prompts of different lengths,
# n = 2, a streamed one) give the texts, completion token counts and
# finish reasons of the one-process server; SIGTERM to rank 0 ends every
# rank with status 0 and each follower reports the steps it ran; a world
# other than --ep, --ep with --tp, --spec or --device cuda, and a dense
# model are refused. Waits on the servers' log lines (pipes), never on a
# clock. Usage: test_mp_serve_ep.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
command -v python3 >/dev/null || { echo "test_mp_serve_ep: skipped (python3 missing)"; exit 0; }
python3 - "$LMC" <<'PY'
import os, subprocess, sys
sys.path.insert(0, "tests")
import mp_serve  # tests/mp_serve.py: the servers' launcher and requests
from mp_serve import check, free_port, stop
lmc = sys.argv[1]

def start(model, world, extra=()):
    """one process (world 1) or world ranks at --ep world: returns (procs, port, logs, drains)"""
    return mp_serve.start(lmc, model, world, ["--ep", str(world)] + list(extra))

REQS = []
for i in range(12):
    b = {"prompt": f"request {i}: the quick brown fox" + " jumps" * (i % 4), "max_tokens": 10 + i % 5,
         "temperature": 0, "ignore_eos": True}
    if i % 4 == 1: b["n"] = 2
    if i % 4 == 2: b["prompt"] = "a longer prompt for request %d: " % i + "one two three four five six " * 3
    if i % 4 == 3: b["stream"] = True
    REQS.append(b)

def run_all(port): return mp_serve.run_all(port, REQS)

for fx, worlds in (("mixtral-tiny", (2,)), ("qwen3moe-tiny", (2, 4))):
    model = f"tests/fixtures/{fx}"
    procs, port, logs, dr = start(model, 1)
    check(port is not None, f"{fx}: one-process server did not start: {''.join(logs[0])}")
    if port is None: continue
    ref = run_all(port)
    stop(procs, dr)
    check(all(not isinstance(r, str) for r in ref), f"{fx}: one-process requests failed: {ref}")
    for world in worlds:
        what = f"--ep {world}"
        procs, port, logs, dr = start(model, world)
        check(port is not None, f"{fx}: {what} server did not start: {''.join(logs[0])}")
        if port is None:
            for p in procs: p.kill()
            continue
        check(any(f"expert parallel over {world} ranks" in l for l in logs[0]), f"{fx}: start-up line: {''.join(logs[0])}")
        got = run_all(port)
        codes = stop(procs, dr)
        check(codes == [0] * world, f"{fx}: {what} exit codes {codes}: {''.join(logs[1])[-500:]}")
        for r in range(1, world):
            fl = [l for l in logs[r] if "followed" in l]
            steps = int(fl[0].split("followed ")[1].split()[0]) if fl else 0
            check(steps > 0, f"{fx}: {what} rank {r} followed no step: {fl}")
        for k, (a, b) in enumerate(zip(got, ref)):
            check(a == b and not isinstance(a, str), f"{fx} request {k} {REQS[k]}: {what} {a} vs one process {b}")
        print(f"{fx} {what}: {sum(a == b for a, b in zip(got, ref))}/{len(REQS)} requests equal to one process")
# refusals
env = dict(os.environ, RANK="0", WORLD_SIZE="1")
M = "tests/fixtures/mixtral-tiny"
p = subprocess.run([lmc, "serve", "-m", M, "--port", "0", "--ep", "2"], env=env, capture_output=True, timeout=60)
check(p.returncode == 2 and b"needs 2 ranks" in p.stderr, f"--ep 2 on one rank: {p.returncode} {p.stderr[-300:]}")
for extra, what in ((["--tp", "2"], b"--tp"), (["--device", "cuda"], b"--device"), (["--spec", "prompt-lookup"], b"--spec")):
    p = subprocess.run([lmc, "serve", "-m", M, "--port", "0", "--ep", "2"] + extra, capture_output=True, timeout=60)
    check(p.returncode == 2 and b"--ep does not combine with " + what in p.stderr,
          f"--ep 2 {extra}: {p.returncode} {p.stderr[-300:]}")
# a dense model: both ranks meet, then each refuses it
mp = free_port()
procs = [subprocess.Popen([lmc, "serve", "-m", "tests/fixtures/llama-tiny", "--port", "0", "--threads", "1", "--ep",
                           "2"], env=dict(os.environ, RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                          MASTER_PORT=str(mp)), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
         for r in (0, 1)]
outs = [p.communicate(timeout=180)[1] for p in procs]
codes = [p.returncode for p in procs]
check(codes == [1, 1] and all(b"dense model" in o for o in outs),
      f"--ep 2 on a dense model: exit codes {codes}: {outs[0][-300:]} {outs[1][-300:]}")
print(f"test_mp_serve_ep: {mp_serve.fails} failed")
sys.exit(1 if mp_serve.fails else 0)
PY
