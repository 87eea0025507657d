#!/usr/bin/env bash
# test_mp_pp_serve.sh — `lmc serve --pp P` (dist/pp_infer.c, the step
# messages of infer/sched_tp.c): P ranks started with torchrun-style
# variables (a rendezvous port from the OS, tried again if it was taken
# meanwhile), rank 0 serving HTTP on a port the OS picks and running the
# scheduler and stage 0, the others following its steps as stages 1..P-1.
# On llama-tiny, qwen2-tiny (tied head on the last stage) and gpt2-tiny at
# --pp 2, a 4-layer llama-tiny (its layers repeated) at --pp 4, and
# llama-tiny at --pp 2 --tp 2 (4 ranks, each stage sharded by heads) and
# at --pp 2 with --max-step-tokens 5 (prompts prefilled over steps): 12
# concurrent requests (greedy, n = 2 greedy choices, seeded sampling, a
# streamed one) give the texts, token counts and finish reasons of the
# one-process server; /v1/models and the errors of bad requests (malformed
# JSON, a prompt over the context, an unknown model) equal the
# one-process server's; some steps were cut into several micro-batches;
# SIGTERM to rank 0 ends every rank with status 0. --kv-memory at --pp 3
# on the 4-layer llama (stages of 1, 2, 1 layers) sizes the pool for the
# 2-layer stage (twice the one-process blocks). --pp with --tp-vocab,
# and a world that is not --pp (x --tp), are refused. Waits on the servers' log lines
# (pipes), never on a clock.
# Usage: test_mp_pp_serve.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
command -v python3 >/dev/null || { echo "test_mp_pp_serve: skipped (python3 missing)"; exit 0; }
python3 tests/pp_stack_layers.py tests/fixtures/llama-tiny "$TMP/llama4" 2 || exit 1
python3 - "$LMC" "$TMP/llama4" <<'PY'
import json, os, subprocess, sys, urllib.request
sys.path.insert(0, "tests")
import mp_serve  # tests/mp_serve.py: the servers' launcher and requests
from mp_serve import check, stop
lmc, llama4 = sys.argv[1], sys.argv[2]

def start(model, world, tp=1, kv=("--kv-blocks", "256")):
    """one process (world 1) or world ranks as pipeline stages: returns (procs, port, logs, drains)"""
    return mp_serve.start(lmc, model, world, ["--pp", str(world // tp)] + (["--tp", str(tp)] if tp > 1 else []),
                          ("--model-name", "m"), kv)

def post(port, body, raw_body=None):  # an HTTP error status as (status, body)
    return mp_serve.post(port, body, raw_body=raw_body, http_errors=True)

def models(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=60) as r:
        j = json.loads(r.read().decode())
    for d in j.get("data", []): d.pop("created", None)
    return j

REQS = []
for i in range(12):
    b = {"prompt": f"request {i}: the quick brown fox" + " jumps" * (i % 4), "max_tokens": 10 + i % 5,
         "temperature": 0, "ignore_eos": True}
    if i % 4 == 1: b["n"] = 2
    if i % 4 == 2: b.update(temperature=0.8, seed=100 + i)
    if i % 4 == 3: b["stream"] = True
    REQS.append(b)
BAD = [(None, b"{not json"), ({"prompt": "x " * 5000, "max_tokens": 4}, None),
       ({"prompt": "hi", "max_tokens": 4, "model": "nope"}, None), ({"prompt": "hi", "max_tokens": -3}, None)]

def run_all(port):
    out = mp_serve.run_all(port, REQS, post)
    errs = []
    for body, raw in BAD:
        try: errs.append(post(port, body, raw_body=raw))
        except Exception as e: errs.append(repr(e))
    return out, models(port), errs

CHUNKED = ("--kv-blocks", "256", "--max-step-tokens", "5")  # prompts prefilled over several steps
for fx, P, T, kv in [("llama-tiny", 2, 1, None), ("qwen2-tiny", 2, 1, None), ("gpt2-tiny", 2, 1, None),
                     (llama4, 4, 1, None), ("llama-tiny", 2, 2, None), ("llama-tiny", 2, 1, CHUNKED)]:
    kv = kv or ("--kv-blocks", "256")
    model = fx if fx.startswith("/") else f"tests/fixtures/{fx}"
    name = ("llama-tiny x2 layers" if fx == llama4 else fx) + (" --max-step-tokens 5" if kv == CHUNKED else "")
    procs, port, logs, dr = start(model, 1, kv=kv)
    check(port is not None, f"{name}: one-process server did not start: {''.join(logs[0])}")
    if port is None: continue
    ref, ref_models, ref_errs = run_all(port)
    stop(procs, dr)
    what = f"--pp {P}" + (f" --tp {T}" if T > 1 else "")
    W = P * T
    procs, port, logs, dr = start(model, W, T, kv=kv)
    check(port is not None, f"{name}: {what} server did not start: {''.join(logs[0])}")
    if port is None:
        for p in procs: p.kill()
        continue
    check(any(f"pipeline parallel over {P} stages" in l for l in logs[0]), f"{name}: start-up line: {''.join(logs[0])}")
    got, got_models, got_errs = run_all(port)
    codes = stop(procs, dr)
    check(codes == [0] * W, f"{name}: {what} exit codes {codes}: {''.join(logs[-1])[-500:]}")
    for r in range(1, W):
        fl = [l for l in logs[r] if "followed" in l]
        steps = int(fl[0].split("followed ")[1].split()[0]) if fl else 0
        check(steps > 0, f"{name}: {what} rank {r} followed no step: {''.join(logs[r])[-300:]}")
    ml = [l for l in logs[0] if "micro-batches" in l and "steps in" in l]
    check(len(ml) == 1, f"{name}: no micro-batch line: {''.join(logs[0])[-400:]}")
    if ml:
        steps, mbs = int(ml[0].split("pipeline: ")[1].split()[0]), int(ml[0].split(" steps in ")[1].split()[0])
        check(steps > 0 and mbs > steps, f"{name}: {what}: {steps} steps in {mbs} micro-batches (none split)")
    for k, (a, b) in enumerate(zip(got, ref)):
        check(a == b and not isinstance(a, str), f"{name} request {k} {REQS[k]}: {what} {a} vs one process {b}")
    check(got_models == ref_models, f"{name}: /v1/models {got_models} vs {ref_models}")
    for k, (a, b) in enumerate(zip(got_errs, ref_errs)):
        check(a == b and isinstance(a, tuple) and a[0] >= 400, f"{name}: bad request {k}: {a} vs one process {b}")
    print(f"{name} {what}: {sum(a == b for a, b in zip(got, ref))}/{len(REQS)} requests equal to one process; "
          f"errors {[e[0] if isinstance(e, tuple) else e for e in got_errs]}; {ml[0].strip() if ml else ''}")
# --kv-memory at --pp 3 on the 4-layer llama (stages of 1, 2 and 1 layers): the budget holds on the 2-layer
# stage, twice the blocks of the one-process (4-layer) pool; the answers stay the one-process ones
def kv_blocks(logs):
    l = [x for x in logs[0] if " KV blocks of " in x]
    return int(l[0].split(" KV blocks of ")[0].rsplit(" ", 1)[1]) if l else None
procs, port, logs, dr = start(llama4, 1, kv=("--kv-memory", "1M"))
one_blocks = kv_blocks(logs)
if port is not None:
    ref, _, _ = run_all(port)
    stop(procs, dr)
procs, port, logs, dr = start(llama4, 3, kv=("--kv-memory", "1M"))
check(port is not None and one_blocks and kv_blocks(logs) == 2 * one_blocks,
      f"--pp 3 --kv-memory 1M: {kv_blocks(logs)} blocks, one process {one_blocks}: {''.join(logs[0])[-400:]}")
if port is not None:
    got, _, _ = run_all(port)
    codes = stop(procs, dr)
    check(codes == [0, 0, 0] and got == ref, f"--pp 3 --kv-memory: exit {codes}, {got} vs {ref}")
    print(f"--pp 3 --kv-memory 1M: {kv_blocks(logs)} KV blocks (one process {one_blocks}); "
          f"{sum(a == b for a, b in zip(got, ref))}/{len(REQS)} requests equal to one process")
# refusals: a world that is not --pp, --pp with --tp
env = dict(os.environ, RANK="0", WORLD_SIZE="1")
p = subprocess.run([lmc, "serve", "-m", "tests/fixtures/llama-tiny", "--port", "0", "--pp", "2"], env=env,
                   capture_output=True, timeout=60)
check(p.returncode == 2 and b"needs 2 ranks" in p.stderr, f"--pp 2 on one rank: {p.returncode} {p.stderr[-300:]}")
p = subprocess.run([lmc, "serve", "-m", "tests/fixtures/llama-tiny", "--port", "0", "--pp", "2", "--tp", "2",
                    "--tp-vocab"], capture_output=True, timeout=60)
check(p.returncode == 2 and b"--pp does not combine with --tp-vocab" in p.stderr,
      f"--pp 2 --tp 2 --tp-vocab: {p.returncode} {p.stderr[-300:]}")
p = subprocess.run([lmc, "serve", "-m", "tests/fixtures/llama-tiny", "--port", "0", "--pp", "2", "--tp", "2"], env=env,
                   capture_output=True, timeout=60)
check(p.returncode == 2 and b"needs 4 ranks" in p.stderr, f"--pp 2 --tp 2 on one rank: {p.returncode} {p.stderr[-300:]}")
print(f"test_mp_pp_serve: {mp_serve.fails} failed")
sys.exit(1 if mp_serve.fails else 0)
PY
