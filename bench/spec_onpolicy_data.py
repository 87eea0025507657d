"""spec_onpolicy_data.py — on-policy text for distilling a speculative draft
(issue 17): the target's own greedy continuations of KJV verse openings from
the training books, so that the draft is distilled on the kind of text it
will be asked to predict (its acceptance is measured on the target's greedy
output, scripts/train_spec_pair.sh --measure-only).

Starts `lmc serve -m TARGET` (on --device, a free port), sends N prompts
(the first 8 words of every k-th verse of data/kjv.txt before the
validation books, skipping the measurement's own prompts) with
--concurrency clients, greedy, --tokens each, and writes one line per
prompt: the prompt and its continuation, newlines folded to spaces.

Usage: bench/spec_onpolicy_data.py LMC TARGET OUT.txt [--n 1500] [--tokens 64]
       [--device cuda] [--concurrency 64] [--split-line 71726] [--max-seconds S]
"""
import argparse, http.client, json, re, subprocess, sys, threading, time
from kjv_prompts import kjv_prompts, kjv_verses, VAL_LINE

ap = argparse.ArgumentParser()
ap.add_argument("lmc"); ap.add_argument("target"); ap.add_argument("out")
ap.add_argument("--n", type=int, default=1500); ap.add_argument("--tokens", type=int, default=64)
ap.add_argument("--device", default="cuda"); ap.add_argument("--concurrency", type=int, default=64)
ap.add_argument("--split-line", type=int, default=VAL_LINE)
ap.add_argument("--max-seconds", type=float, default=0, help="stop sending new prompts after this long (0: no limit)")
a = ap.parse_args()

lines = open("data/kjv.txt", encoding="utf-8").read().split("\n")
measured = set(kjv_prompts())  # the measurement's list
train = kjv_verses(lines[:a.split_line - 1])
step = max(1, len(train) // a.n)
prompts = [p for p in (" ".join(v.split()[:8]) for v in train[::step]) if p not in measured][:a.n]

p = subprocess.Popen([a.lmc, "serve", "-m", a.target, "--device", a.device, "--host", "127.0.0.1", "--port", "0",
                      "--max-batch", str(a.concurrency), "--max-connections", str(a.concurrency + 16)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
port, seen = None, []
for line in p.stderr:
    seen.append(line)
    m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    if m:
        port = int(m.group(1))
        threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
        break
if port is None: sys.exit("lmc server did not start:\n" + "".join(seen[-20:]))

out, lock, nxt, errors = [None] * len(prompts), threading.Lock(), [0], []
t0 = time.time()
def client():
    while True:
        with lock:
            i = nxt[0]; nxt[0] += 1
        if i >= len(prompts) or (a.max_seconds > 0 and time.time() - t0 > a.max_seconds): return
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        body = {"prompt": prompts[i], "max_tokens": a.tokens, "temperature": 0}
        c.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = json.loads(c.getresponse().read()); c.close()
        if "choices" not in r:
            errors.append(str(r)); return
        out[i] = prompts[i] + r["choices"][0]["text"].replace("\n", " ")
try:
    ts = [threading.Thread(target=client) for _ in range(a.concurrency)]
    for t in ts: t.start()
    for t in ts: t.join()
finally:
    p.terminate(); p.wait()
if errors: sys.exit("server: " + errors[0])
done = [o for o in out if o is not None]
with open(a.out, "w", encoding="utf-8") as f:
    for o in done: f.write(o + "\n")
print("%d on-policy lines of %d prompts (%d tokens each at most) in %.0f s -> %s"
      % (len(done), len(prompts), a.tokens, time.time() - t0, a.out))
