#!/usr/bin/env python3
"""eval_kjv_chat.py — held-out exact-match accuracy of the default chat
model's tasks (scripts/make_kjv_instruct.py's eval.jsonl: whole books never
seen in fine-tuning), per task type, for a chat model (its chat template,
through `lmc serve`'s /v1/chat/completions) and for a base model prompted
few-shot (plain "question\\nanswer" pairs from training books, through
/v1/completions, cut at the first newline). Greedy decoding. Python 3
standard library only.

  python3 scripts/eval_kjv_chat.py --lmc build/lmc --eval kjvsft/eval.jsonl \\
      --chat models/kjv-llama-chat --base models/kjv-llama [--json out.json]

Exact match: the answer stripped of surrounding whitespace equals the
reference. Also counted, a softer measure: the first five words equal, or
for a reference answer ("Ruth 1:15") chapter:verse equal.
"""
import argparse
import concurrent.futures
import json
import re
import subprocess
import sys
import time
import urllib.request

# few-shot examples (training books only) per task: (user turns, assistant turns)
SHOTS = {
    "quote": [(["Quote Genesis 1:3"], ["And God said, Let there be light: and there was light."]),
              (["Quote John 11:35"], ["Jesus wept."]),
              (["Quote Psalms 23:1"], ["The LORD is my shepherd; I shall not want."])],
    "locate": [(["Where is it written: And God said, Let there be light: and there was light."], ["Genesis 1:3"]),
               (["Where is it written: Jesus wept."], ["John 11:35"]),
               (["Where is it written: The LORD is my shepherd; I shall not want."], ["Psalms 23:1"])],
    "continue": [(["Continue: In the beginning God created the heaven and the earth."],
                  ["And the earth was without form, and void; and darkness was upon the face of the deep. "
                   "And the Spirit of God moved upon the face of the waters."]),
                 (["Continue: The LORD is my shepherd; I shall not want."],
                  ["He maketh me to lie down in green pastures: he leadeth me beside the still waters."])],
    "after": [(["Which verse comes after Genesis 1:3?"], ["Genesis 1:4"]),
              (["Which verse comes after Exodus 40:38?"], ["Leviticus 1:1"]),
              (["Which verse comes after Psalms 23:6?"], ["Psalms 24:1"]),
              (["Which verse comes after Mark 4:12?"], ["Mark 4:13"])],
    "followup": [(["Quote Genesis 1:3", "And the next verse?"],
                  ["And God said, Let there be light: and there was light.",
                   "And God saw the light, that it was good: and God divided the light from the darkness."]),
                 (["Where is it written: He maketh me to lie down in green pastures: he leadeth me beside the still "
                   "waters.", "Quote the verse before it."],
                  ["Psalms 23:2", "The LORD is my shepherd; I shall not want."])],
}


def few_shot_prompt(task, messages):
    parts = []
    for users, answers in SHOTS[task]:
        parts.append("".join(u + "\n" + a + "\n" for u, a in zip(users, answers)))
    cur = ""
    for m in messages:
        cur += m["content"] + "\n"
    return "\n".join(parts) + "\n" + cur


def start_server(lmc, model, extra):
    p = subprocess.Popen([lmc, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0"] + extra,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            return p, int(m.group(1))
    p.wait()
    raise SystemExit("lmc serve -m %s did not start" % model)


def post(port, path, body):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def ask(port, mode, row, max_tokens):
    if mode == "chat":
        r = post(port, "/v1/chat/completions", {"messages": row["messages"], "temperature": 0,
                                                 "max_tokens": max_tokens})
        return r["choices"][0]["message"]["content"]
    r = post(port, "/v1/completions", {"prompt": few_shot_prompt(row["task"], row["messages"]), "temperature": 0,
                                       "max_tokens": max_tokens, "stop": ["\n"]})
    return r["choices"][0]["text"]


def soft(task, got, want):
    """references: chapter:verse equal (the book of a held-out book is a name
    the fine-tuning never gave as an answer); text: the first five words"""
    m = re.fullmatch(r".+ (\d+:\d+)", want)
    if m:
        g = re.search(r"(\d+:\d+)\s*$", got.strip())
        return bool(g) and g.group(1) == m.group(1)
    return got.split()[:5] == want.split()[:5]


def evaluate(lmc, model, mode, rows, max_tokens, workers, threads):
    extra = ["--threads", str(threads)] if threads else []
    proc, port = start_server(lmc, model, extra)
    try:
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            outs = list(ex.map(lambda r: ask(port, mode, r, max_tokens), rows))
        dt = time.time() - t0
    finally:
        proc.terminate()
        proc.wait()
    res = {}
    for r, o in zip(rows, outs):
        t = res.setdefault(r["task"], {"n": 0, "exact": 0, "soft": 0})
        t["n"] += 1
        t["exact"] += o.strip() == r["answer"]
        t["soft"] += soft(r["task"], o, r["answer"])
    return res, outs, dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lmc", default="build/lmc")
    ap.add_argument("--eval", required=True)
    ap.add_argument("--chat", help="chat model folder (chat template)")
    ap.add_argument("--base", help="base model folder (few-shot)")
    ap.add_argument("--max-tokens", type=int, default=80)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="first N rows per task (0: all)")
    ap.add_argument("--json", help="write results and every answer here")
    ap.add_argument("--show", type=int, default=0, help="print N answers per task")
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.eval, encoding="utf-8") if l.strip()]
    if a.limit:
        per, keep = {}, []
        for r in rows:
            per[r["task"]] = per.get(r["task"], 0) + 1
            if per[r["task"]] <= a.limit:
                keep.append(r)
        rows = keep
    report = {}
    for mode, model in (("base few-shot", a.base), ("chat", a.chat)):
        if not model:
            continue
        res, outs, dt = evaluate(a.lmc, model, "chat" if mode == "chat" else "base", rows, a.max_tokens,
                                 a.workers, a.threads)
        report[mode] = {"model": model, "tasks": res, "seconds": round(dt, 1),
                        "answers": [{"task": r["task"], "want": r["answer"], "got": o} for r, o in zip(rows, outs)]}
        if a.show:
            shown = {}
            for r, o in zip(rows, outs):
                shown[r["task"]] = shown.get(r["task"], 0) + 1
                if shown[r["task"]] <= a.show:
                    print("[%s %s] want %r\n%s got  %r" % (mode, r["task"], r["answer"], " " * len(mode), o))
    tasks = sorted({r["task"] for r in rows})
    print("| model | " + " | ".join(tasks) + " | all |")
    print("|---" * (len(tasks) + 2) + "|")
    for mode, rep in report.items():
        cells, tot_n, tot_e, tot_s = [], 0, 0, 0
        for t in tasks:
            x = rep["tasks"].get(t, {"n": 0, "exact": 0, "soft": 0})
            cells.append("%d/%d (%d)" % (x["exact"], x["n"], x["soft"]))
            tot_n, tot_e, tot_s = tot_n + x["n"], tot_e + x["exact"], tot_s + x["soft"]
        cells.append("%d/%d = %.1f%% (%d)" % (tot_e, tot_n, 100.0 * tot_e / max(tot_n, 1), tot_s))
        print("| %s `%s` | %s |" % (mode, rep["model"], " | ".join(cells)))
    print("cells: exact matches / items (soft matches: first five words, or chapter:verse)")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(main())
