#!/usr/bin/env python3
"""serve_soak.py — the client side of tests/test_serve_soak.sh (standard
library only). Against a running `lmc serve` on 127.0.0.1:PORT it runs
ROUNDS rounds of CLIENTS concurrent clients, each round the same mix:
streamed and non-streamed completions and chat, n > 1, logprobs, stop
strings, seeded sampling (pairs that must agree), prompts sharing a long
prefix (prefix-cache hits), clients that disconnect
mid-stream or before reading, malformed JSON and oversized bodies, while
/health is probed after every 16th finished client. After each round it
waits (on /metrics values, bounded) until nothing runs and no KV block is
in use, then records the server's resident memory (/proc/PID/status and
process_resident_memory_bytes) and prefix-cache gauges. Every response is
checked; any 5xx, a /health that does not answer 200, a stream without its
[DONE], a KV block left in use or a prefix cache over its bound is a
failure. With --check-rss, resident memory after each round past the
warm-up (round 0) must stay within 5% of round 1's.

`--shutdown` instead opens N long streams, waits until each has received
its first token, and prints one JSON line when they are all in flight; the
client then sends SIGTERM to PID and checks that every stream ended with
a finish chunk or an error event followed by [DONE].

Exit status 0 when every check held; failures are printed one a line."""
import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time

HOST = "127.0.0.1"
WORDS = ("In the beginning God created the heaven and the earth And the earth was without form and void "
         "and darkness was upon the face of the deep And the Spirit of God moved upon the face of the waters "
         "And God said Let there be light and there was light And God saw the light that it was good").split()

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


async def http(port, method, path, body=None, raw=None, timeout=120.0):
    """One request on its own connection (Connection: close); returns
    (status, headers dict, body bytes de-chunked)."""
    r, w = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        if raw is None:
            data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            raw = (f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data
        w.write(raw)
        await w.drain()
        resp = await asyncio.wait_for(r.read(), timeout)
    finally:
        w.close()
    return parse_response(resp)


def parse_response(resp):
    head, _, rest = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return 0, {}, resp
    hdr = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdr[k.strip().lower()] = v.strip()
    if hdr.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            try:
                n = int(size_line.split(b";")[0], 16)
            except ValueError:
                break
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2:]
        rest = out
    return status, hdr, rest


def sse_events(body):
    """The data: payloads of an SSE body, in order."""
    ev = []
    for block in body.decode("utf-8", "replace").split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                ev.append(line[6:])
    return ev


def prompt(rng, lo=3, hi=40):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


class Round:
    def __init__(self):
        self.counts = {}
        self.finished = 0
        self.health_ok = 0

    def count(self, k):
        self.counts[k] = self.counts.get(k, 0) + 1


def check_status(kind, status, want=(200,)):
    if status >= 500 or status == 0:
        fail(f"{kind}: HTTP {status}")
        return False
    if status not in want:
        fail(f"{kind}: HTTP {status}, expected {want}")
        return False
    return True


def check_choices(kind, js, n, stream_events=None, stop=None, logprobs=False, chat=False):
    """Non-streamed body js, or the parsed events of a stream."""
    texts = {}
    finish = {}
    if stream_events is not None:
        if not stream_events or stream_events[-1] != "[DONE]":
            fail(f"{kind}: stream does not end with [DONE]")
            return None
        for e in stream_events[:-1]:
            o = json.loads(e)
            if "error" in o:
                fail(f"{kind}: error event {o['error']}")
                return None
            for c in o.get("choices", []):
                i = c["index"]
                piece = c.get("delta", {}).get("content") if chat else c.get("text")
                texts[i] = texts.get(i, "") + (piece or "")
                if c.get("finish_reason"):
                    finish[i] = c["finish_reason"]
                if logprobs and not c.get("finish_reason") and c.get("logprobs") is None and piece:
                    fail(f"{kind}: a token chunk without logprobs")
    else:
        for c in js["choices"]:
            i = c["index"]
            texts[i] = c["message"]["content"] if chat else c["text"]
            finish[i] = c["finish_reason"]
            if logprobs:
                lp = c.get("logprobs")
                toks = (lp or {}).get("content") if chat else (lp or {}).get("tokens")
                if not toks:
                    fail(f"{kind}: no logprobs")
        if js.get("usage", {}).get("completion_tokens", 0) <= 0 and all(f == "length" for f in finish.values()):
            fail(f"{kind}: usage {js.get('usage')}")
    if sorted(finish) != list(range(n)) or any(f not in ("stop", "length") for f in finish.values()):
        fail(f"{kind}: finish reasons {finish} for n={n}")
        return None
    if stop and any(stop in t for t in texts.values()):
        fail(f"{kind}: stop string {stop!r} in the output")
    return texts


async def client(port, rnd, rng, k, seeded):
    """Client k of a round: its kind is k modulo the mix."""
    mix = k % 16
    chat = mix in (2, 3, 9, 13)
    path = "/v1/chat/completions" if chat else "/v1/completions"
    req = {"max_tokens": rng.randint(1, 20), "temperature": rng.choice([0, 0.7, 1.0])}
    if chat:
        req["messages"] = [{"role": "user", "content": prompt(rng)}]
    elif mix == 1:  # one long shared prefix: later ones find its blocks in the prefix cache
        req["prompt"] = " ".join(WORDS[:40]) + " " + prompt(rng, 1, 10)
    else:
        req["prompt"] = prompt(rng)
    stream = mix in (0, 2, 4, 6, 8, 13, 14)
    req["stream"] = stream
    if stream and mix == 14:
        req["stream_options"] = {"include_usage": True}
    n = 1
    if mix in (4, 5):
        n = req["n"] = rng.randint(2, 3)
    logprobs = mix in (6, 7, 9)
    if logprobs:
        if chat:
            req["logprobs"] = True
            req["top_logprobs"] = 3
        else:
            req["logprobs"] = 3
    stop = None
    if mix in (8, 10):
        stop = req["stop"] = rng.choice(["the", " and", "e", "God"])
    if mix == 11:  # malformed JSON, wrong type, unknown field
        body = rng.choice([b'{"prompt": "x", ', b'{"prompt": 5}', b'{"prompt": "x", "bogus": 1}', b"[1,2]"])
        st, _, _ = await http(port, "POST", "/v1/completions", body)
        rnd.count("malformed")
        return check_status("malformed", st, (400,))
    if mix == 12:  # oversized: a body over --max-body, or a prompt over the context
        if rng.random() < 0.5:
            st, _, _ = await http(port, "POST", "/v1/completions", {"prompt": "x" * 70000})
            rnd.count("oversized")
            return check_status("oversized body", st, (413,))
        st, _, _ = await http(port, "POST", "/v1/completions", {"prompt": "God " * 400, "max_tokens": 8})
        rnd.count("too_long")
        return check_status("prompt over the context", st, (400,))
    if mix == 15:  # disconnect mid-stream (after the first chunk) or before any answer
        req["stream"] = rng.random() < 0.7
        req["max_tokens"] = 40
        data = json.dumps(req).encode()
        r, w = await asyncio.open_connection(HOST, port)
        w.write((f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n").encode() + data)
        await w.drain()
        if req["stream"]:
            got = b""
            while b"data: {" not in got:
                chunk = await asyncio.wait_for(r.read(4096), 120)
                if not chunk:
                    break
                got += chunk
            if not got.startswith(b"HTTP/1.1 200"):
                fail(f"disconnect: {got[:60]!r}")
        w.transport.abort()
        rnd.count("disconnect")
        return True
    if seeded is not None:  # a pair with one seed and prompt: the same text
        req = dict(seeded)
        stream = logprobs = chat = False
        stop = None
        n = 1
        path = "/v1/completions"
    st, _, body = await http(port, "POST", path, req)
    kind = f"{'chat' if chat else 'completion'}{' stream' if stream else ''}{' n=%d' % n if n > 1 else ''}" \
           f"{' logprobs' if logprobs else ''}{' stop' if stop else ''}{' seeded' if seeded else ''}"
    rnd.count("chat" if chat else "completion")
    if not check_status(kind, st):
        return None
    try:
        if stream:
            ev = sse_events(body)
            texts = check_choices(kind, None, n, ev, stop, logprobs, chat)
            if texts is not None and req.get("stream_options") and not any('"usage"' in e for e in ev[:-1]):
                fail(f"{kind}: no usage chunk")
        else:
            texts = check_choices(kind, json.loads(body), n, None, stop, logprobs, chat)
    except (ValueError, KeyError, TypeError) as e:
        fail(f"{kind}: cannot read the answer ({e}): {body[:200]!r}")
        return None
    return texts


async def metrics(port):
    st, _, body = await http(port, "GET", "/metrics")
    if st != 200:
        fail(f"/metrics: HTTP {st}")
        return {}
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


async def wait_idle(port, deadline_s=120.0):
    """Polls /metrics until nothing runs or waits and no KV block is used."""
    t_end = time.monotonic() + deadline_s
    while True:
        m = await metrics(port)
        if (m.get("lmc_requests_running") == 0 and m.get("lmc_requests_waiting") == 0 and
                m.get("lmc_kv_blocks_used") == 0 and m.get("lmc_http_connections") == 0):
            return m
        if time.monotonic() > t_end:
            fail(f"server not idle after {deadline_s:.0f} s: running {m.get('lmc_requests_running')}, "
                 f"waiting {m.get('lmc_requests_waiting')}, KV blocks used {m.get('lmc_kv_blocks_used')}")
            return m
        await asyncio.sleep(0.05)  # pacing of the poll; the condition is the metric


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


async def one_round(port, rnd_i, clients, seed):
    rng = random.Random(seed * 1000 + rnd_i)
    rnd = Round()
    n_pairs = max(2, clients // 16)
    seeded = {}
    for p in range(n_pairs):
        s = {"prompt": prompt(rng), "seed": rng.randint(0, 1 << 30), "temperature": 0.9, "top_p": 0.95,
             "max_tokens": 12}
        seeded[2 * p] = seeded[2 * p + 1] = s
    health = []

    async def run(k):
        res = await client(port, rnd, random.Random(seed * 100000 + rnd_i * 1000 + k), k, seeded.get(k))
        rnd.finished += 1
        if rnd.finished % 16 == 0:  # /health answers while the round is running
            st, _, body = await http(port, "GET", "/health", timeout=30)
            health.append(st)
            if st != 200:
                fail(f"/health: HTTP {st} {body[:80]!r}")
        return res

    t0 = time.monotonic()
    res = await asyncio.gather(*[run(k) for k in range(clients)], return_exceptions=True)
    for k, r in enumerate(res):
        if isinstance(r, BaseException):
            fail(f"client {k}: {type(r).__name__}: {r}")
    for p in range(n_pairs):
        a, b = res[2 * p], res[2 * p + 1]
        if isinstance(a, dict) and isinstance(b, dict) and a != b:
            fail(f"seeded pair {p}: {a!r} != {b!r}")
    m = await wait_idle(port)
    return rnd, m, health, time.monotonic() - t0


async def soak(a):
    rows = []
    for i in range(a.rounds):
        rnd, m, health, dt = await one_round(a.port, i, a.clients, a.seed)
        rss = rss_mb(a.pid)
        row = {"round": i, "seconds": round(dt, 1), "rss_mb": round(rss, 1),
               "process_resident_memory_mb": round(m.get("process_resident_memory_bytes", 0) / 2**20, 1),
               "kv_blocks_used": m.get("lmc_kv_blocks_used"), "prefix_cache_blocks": m.get("lmc_prefix_cache_blocks"),
               "prefix_cache_blocks_max": m.get("lmc_prefix_cache_blocks_max"),
               "prefix_cache_evictions": m.get("lmc_prefix_cache_evictions_total"),
               "prefix_cache_hits": m.get("lmc_prefix_cache_hits_total"),
               "open_fds": m.get("process_open_fds"), "health_ok": sum(1 for h in health if h == 200),
               "mix": rnd.counts}
        print(json.dumps(row), flush=True)
        rows.append(row)
        pm = m.get("process_resident_memory_bytes", 0) / 2**20
        if not (0.9 * rss <= pm <= 1.1 * rss):  # two reads a moment apart of one number
            fail(f"round {i}: process_resident_memory_bytes {pm:.1f} MB vs VmRSS {rss:.1f} MB")
        if m.get("lmc_kv_blocks_used") != 0:
            fail(f"round {i}: {m.get('lmc_kv_blocks_used')} KV blocks still in use")
        if not (m.get("lmc_prefix_cache_blocks", 1e18) <= m.get("lmc_prefix_cache_blocks_max", -1)):
            fail(f"round {i}: prefix cache holds {m.get('lmc_prefix_cache_blocks')} blocks, "
                 f"bound {m.get('lmc_prefix_cache_blocks_max')}")
        if not health:
            fail(f"round {i}: /health never probed")
        for code in ("500", "503", "other"):
            key = 'lmc_http_responses_total{code="%s"}' % code
            if m.get(key, 0):
                fail(f"round {i}: {m[key]:.0f} responses with code {code}")
    if a.rounds >= 3:
        last = rows[-1]
        if not last["prefix_cache_evictions"]:
            fail("the prefix cache never evicted: its bound was not exercised")
        if not last["prefix_cache_hits"]:
            fail("no prefix-cache hit in the whole soak")
    if a.check_rss and len(rows) >= 3:
        base = rows[1]["rss_mb"]
        for r in rows[2:]:
            if abs(r["rss_mb"] - base) > 0.05 * base:
                fail(f"round {r['round']}: resident memory {r['rss_mb']} MB vs {base} MB after round 1 (> 5%)")
    print(json.dumps({"rss_mb": [r["rss_mb"] for r in rows]}), flush=True)


async def shutdown(a):
    """Opens a.streams long streams and 4 long non-streamed requests; once
    each stream has its first token and /metrics shows them all running,
    sends SIGTERM and reads each to its end: every stream must end with a
    finish chunk or an error event, then [DONE]; every non-streamed one
    with its answer or a server_shutting_down error (a 503, or after the
    heartbeat's 200 the error as the body)."""
    firsts = []
    ready = asyncio.Event()
    n_plain = 4

    async def plain(k):
        req = {"prompt": prompt(random.Random(1000 + k)), "max_tokens": 150, "temperature": 0, "ignore_eos": True}
        st, _, body = await http(a.port, "POST", "/v1/completions", req, timeout=300)
        try:
            js = json.loads(body)
        except ValueError:
            fail(f"shutdown request {k}: HTTP {st}, body {body[:120]!r}")
            return "broken"
        err = js.get("error", {}).get("code") if isinstance(js.get("error"), dict) else None
        if err == "server_shutting_down" and st in (200, 503):
            return f"error:{err}:{st}"
        if st == 200 and js.get("choices") and js["choices"][0].get("finish_reason"):
            return "finished"
        fail(f"shutdown request {k}: HTTP {st}, body {body[:160]!r}")
        return "broken"

    async def one(k):
        req = {"prompt": prompt(random.Random(k)), "max_tokens": 150, "stream": True, "temperature": 0,
               "ignore_eos": True}
        data = json.dumps(req).encode()
        r, w = await asyncio.open_connection(HOST, a.port)
        w.write((f"POST /v1/completions HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)
        await w.drain()
        got = b""
        while b'"text":' not in got:
            chunk = await asyncio.wait_for(r.read(4096), 120)
            if not chunk:
                break
            got += chunk
        firsts.append(k)
        if len(firsts) == a.streams:
            ready.set()
        got += await asyncio.wait_for(r.read(), 120)
        w.close()
        st, _, body = parse_response(got)
        ev = sse_events(body)
        if st != 200 or not ev or ev[-1] != "[DONE]":
            fail(f"shutdown stream {k}: HTTP {st}, ends {ev[-1:] if ev else body[-80:]!r}")
            return "broken"
        last = json.loads(ev[-2]) if len(ev) >= 2 else {}
        if "error" in last:
            return "error:" + str(last["error"].get("code"))
        if any(c.get("finish_reason") for c in last.get("choices", [])):
            return "finished"
        fail(f"shutdown stream {k}: neither an error event nor a finish chunk before [DONE]: {ev[-2:]!r}")
        return "broken"

    tasks = [asyncio.create_task(one(k)) for k in range(a.streams)]
    tasks += [asyncio.create_task(plain(k)) for k in range(n_plain)]
    await asyncio.wait_for(ready.wait(), 300)
    t_end = time.monotonic() + 120
    while True:  # the non-streamed ones show only as running requests
        m = await metrics(a.port)
        if m.get("lmc_requests_running", 0) >= a.streams + n_plain or time.monotonic() > t_end:
            break
        await asyncio.sleep(0.05)  # pacing of the poll; the condition is the metric
    print(json.dumps({"in_flight": len(firsts), "running": m.get("lmc_requests_running")}), flush=True)
    os.kill(a.pid, signal.SIGTERM)
    ends = await asyncio.gather(*tasks, return_exceptions=True)
    out = {}
    for k, e in enumerate(ends):
        if isinstance(e, BaseException):
            fail(f"shutdown request {k}: {type(e).__name__}: {e}")
            e = "exception"
        out[e] = out.get(e, 0) + 1
    print(json.dumps({"ends": out}), flush=True)
    if sum(v for k, v in out.items() if k.startswith("error:")) == 0:
        fail("no request was cut by the shutdown: nothing was in flight")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, default=0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clients", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--check-rss", action="store_true")
    p.add_argument("--shutdown", action="store_true")
    p.add_argument("--streams", type=int, default=16)
    a = p.parse_args()
    asyncio.run(shutdown(a) if a.shutdown else soak(a))
    if failures:
        print(f"serve_soak: {len(failures)} failures", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
