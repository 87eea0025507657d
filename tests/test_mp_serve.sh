#!/usr/bin/env bash
# test_mp_serve.sh — `lmc serve --tp 2` (infer/sched_tp.c): two ranks
# started with torchrun-style variables (a rendezvous port from the OS,
# tried again if it was taken meanwhile), rank 0 serving HTTP on a port
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
import json, os, signal, socket, subprocess, sys, threading, urllib.request
lmc = sys.argv[1]
fails = 0
def check(cond, what):
    global fails
    if not cond:
        fails += 1
        print("FAIL:", what, file=sys.stderr)

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_listening(p, lines):
    """reads p's stderr until the listening line (or its end); returns the port or None"""
    for raw in p.stderr:
        line = raw.decode(errors="replace")
        lines.append(line)
        if "listening on http://127.0.0.1:" in line:
            return int(line.rsplit(":", 1)[1])
    return None

def drain(p, lines):
    t = threading.Thread(target=lambda: lines.extend(l.decode(errors="replace") for l in p.stderr), daemon=True)
    t.start()
    return t

def start(model, world, extra=()):
    """one process (world 1) or world ranks: returns (procs, port, logs)"""
    args = [lmc, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0", "--threads", "1", "--kv-blocks", "256",
            "--max-batch", "16", "--dtype", "f32"]
    for _ in range(3):
        logs = [[] for _ in range(world)]
        if world == 1:
            procs = [subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)]
        else:
            mp = free_port()
            procs = []
            for r in range(world - 1, -1, -1):
                env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(mp))
                procs.insert(0, subprocess.Popen(args + ["--tp", str(world)] + list(extra), env=env, stderr=subprocess.PIPE,
                                                 stdout=subprocess.DEVNULL))
        port = wait_listening(procs[0], logs[0])
        for r in range(1, world): drain(procs[r], logs[r])
        if port is not None: return procs, port, logs
        for p in procs:
            p.kill(); p.wait()
        if not any("cannot listen" in l for l in logs[0]): break
    return procs, None, logs

def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        raw = r.read().decode()
    if body.get("stream"):  # join the streamed text
        text, fin = "", None
        for ev in raw.split("\n\n"):
            ev = ev.strip()
            if not ev.startswith("data: ") or ev == "data: [DONE]": continue
            j = json.loads(ev[6:])
            for c in j.get("choices", []):
                text += c.get("text", "")
                fin = c.get("finish_reason") or fin
        return [(text, fin)]
    j = json.loads(raw)
    return [(c["text"], c["finish_reason"]) for c in j["choices"]] + [j["usage"]["completion_tokens"]]

REQS = []
for i in range(12):
    b = {"prompt": f"request {i}: the quick brown fox" + " jumps" * (i % 4), "max_tokens": 10 + i % 5,
         "temperature": 0, "ignore_eos": True}
    if i % 4 == 1: b["n"] = 2
    if i % 4 == 2: b.update(temperature=0.8, seed=100 + i)
    if i % 4 == 3: b["stream"] = True
    REQS.append(b)

def run_all(port):
    out = [None] * len(REQS)
    def one(k):
        try: out[k] = post(port, REQS[k])
        except Exception as e: out[k] = repr(e)
    ts = [threading.Thread(target=one, args=(k,)) for k in range(len(REQS))]
    for t in ts: t.start()
    for t in ts: t.join()
    return out

def stop(procs):
    procs[0].send_signal(signal.SIGTERM)
    return [p.wait(timeout=120) for p in procs]

for fx in ["llama-tiny", "qwen2-tiny"]:
    model = f"tests/fixtures/{fx}"
    procs, port, logs = start(model, 1)
    check(port is not None, f"{fx}: one-process server did not start: {''.join(logs[0])}")
    if port is None: continue
    ref = run_all(port)
    stop(procs)
    for extra in ((), ("--tp-vocab",)):  # heads/MLP split; and the embedding/head by vocabulary rows too
        what = " ".join(("--tp 2",) + extra)
        procs, port, logs = start(model, 2, extra)
        check(port is not None, f"{fx}: {what} server did not start: {''.join(logs[0])}")
        if port is None:
            for p in procs: p.kill()
            continue
        check(any("tensor parallel over 2 ranks" in l for l in logs[0]), f"{fx}: start-up line: {''.join(logs[0])}")
        got = run_all(port)
        codes = stop(procs)
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
print(f"test_mp_serve: {fails} failed")
sys.exit(1 if fails else 0)
PY
