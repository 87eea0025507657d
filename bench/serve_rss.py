#!/usr/bin/env python3
"""serve_rss.py — resident memory of an `lmc serve` across rounds of
concurrent streaming requests (issue 9's measurement). Starts LMC serve -m
MODEL --port 0 [EXTRA...], then runs ROUNDS rounds of 128 concurrent
streaming /v1/completions requests (prompts of 2-40 KJV words, 1-64 new
tokens, greedy or temperature 0.8, one connection each), and after each
round waits until /metrics shows nothing running and prints the server's
VmRSS. Usage: serve_rss.py LMC MODEL ROUNDS [EXTRA SERVE ARGS...]"""
import asyncio, json, random, re, subprocess, sys, time

lmc, model, rounds, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
words = sorted(set(re.findall(r"[A-Za-z]+", open("data/kjv.txt").read())))


def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) / 1024


async def req(port, raw):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(raw)
    await w.drain()
    data = await r.read()
    w.close()
    return data


async def one(port, rng):
    body = json.dumps({"prompt": " ".join(rng.choice(words) for _ in range(rng.randint(2, 40))),
                       "max_tokens": rng.randint(1, 64), "stream": True,
                       "temperature": rng.choice([0, 0.8])}).encode()
    data = await req(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    return data.startswith(b"HTTP/1.1 200") and b"[DONE]" in data


async def idle(port):
    while True:
        m = (await req(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).decode()
        if re.search(r"^lmc_requests_running 0$", m, re.M) and re.search(r"^lmc_http_connections 0$", m, re.M):
            return
        await asyncio.sleep(0.05)


async def main(port, pid):
    rng = random.Random(3)
    print(f"start: {rss(pid):.0f} MB", flush=True)
    for k in range(rounds):
        t = time.time()
        ok = await asyncio.gather(*[one(port, rng) for _ in range(128)])
        await idle(port)
        print(f"round {k}: {sum(ok)}/128 ok, {time.time() - t:.1f} s, RSS {rss(pid):.0f} MB", flush=True)


p = subprocess.Popen([lmc, "serve", "-m", model, "--port", "0", "--max-connections", "160"] + extra,
                     stderr=subprocess.PIPE, text=True)
port = None
for line in p.stderr:
    m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    if m:
        port = int(m.group(1))
        break
try:
    asyncio.run(main(port, p.pid))
finally:
    p.terminate()
    p.wait()
