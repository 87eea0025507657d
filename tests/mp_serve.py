"""mp_serve.py — what the multi-rank `lmc serve` tests share (the Python
parts of tests/test_mp_serve.sh, test_mp_serve_ep.sh, test_mp_pp_serve.sh and
test_mp_lora_tp_serve.sh import it; not a test itself): check and the failure count, a free port,
starting one server process or `world` ranks at a rendezvous port from the
OS (started again when another process took the port meanwhile), reading
their stderr, posting /v1/completions requests (the streamed text joined),
running a list of requests in parallel and stopping the ranks."""
import json, os, signal, socket, subprocess, threading, urllib.error, urllib.request, sys

fails = 0


def check(cond, what):
    global fails
    if not cond:
        fails += 1
        print("FAIL:", what, file=sys.stderr)


_held = []  # the ports free_port gave, still bound here (see tests/port_hold.sh)


def free_port():
    """a port from the OS for a rendezvous, kept bound (SO_REUSEADDR, not listening) for this process's
    life, so no other process takes it before rank 0 listens on it (port_hold.sh says why)"""
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 0))
    _held.append(s)
    return s.getsockname()[1]


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


def start(lmc, model, world, rank_args=(), args=(), kv=("--kv-blocks", "256"), dtype=("--dtype", "f32")):
    """`lmc serve` of model on 127.0.0.1 at a port from the OS (one thread, batch 16, the dtype
    options (f32; () for the folder's), the kv options, then args): one process (world 1), or world
    ranks each with rank_args appended (rank 0 serves). Returns (procs, port or None, each rank's
    stderr lines, the threads reading them)."""
    # the KV cache in f32 for every world: the multi-rank modes keep f32 (serve's CPU default is f16),
    # so the one-process reference must too
    base = [lmc, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0", "--threads", "1", *kv,
            "--kv-dtype", "f32", "--max-batch", "16", *dtype, *args]
    logs = [[] for _ in range(world)]
    if world == 1:
        procs = [subprocess.Popen(base, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)]
    else:
        mp = free_port()
        procs = []
        for r in range(world - 1, -1, -1):
            env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(mp))
            procs.insert(0, subprocess.Popen(base + list(rank_args), env=env, stderr=subprocess.PIPE,
                                             stdout=subprocess.DEVNULL))
    port = wait_listening(procs[0], logs[0])
    drains = [drain(procs[r], logs[r]) for r in range(world)]
    if port is not None: return procs, port, logs, drains
    for p in procs:
        p.kill(); p.wait()
    return procs, None, logs, []


def post(port, body, path="/v1/completions", raw_body=None, http_errors=False):
    """one request: [(text, finish_reason) per choice] + [completion tokens] (streamed: [(joined text,
    finish_reason)]); an HTTP error status raises, or with http_errors is returned as (status, body)"""
    data = raw_body if raw_body is not None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            raw = r.read().decode()
    except urllib.error.HTTPError as e:
        if not http_errors: raise
        return (e.code, json.loads(e.read().decode()))
    if body and body.get("stream"):  # join the streamed text
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


def run_all(port, reqs, send=post):
    """every request at once (a thread each): send's results in order, an exception as its repr"""
    out = [None] * len(reqs)
    def one(k):
        try: out[k] = send(port, reqs[k])
        except Exception as e: out[k] = repr(e)
    ts = [threading.Thread(target=one, args=(k,)) for k in range(len(reqs))]
    for t in ts: t.start()
    for t in ts: t.join()
    return out


def stop(procs, drains=()):
    """SIGTERM to rank 0 (the others follow it); every rank's exit code, once their stderr is read"""
    procs[0].send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=120) for p in procs]
    for t in drains: t.join(timeout=60)
    return codes
