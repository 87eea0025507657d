#!/usr/bin/env python3
"""eval_kjv_recall.py — verse recall of chat models on make_kjv_recall.py's
eval.jsonl ("Quote <reference>" and "Continue: <verse>" questions on verses
the fine-tuning taught, held-in, and on whole books it never saw, held-out),
asked greedily through `lmc serve`'s /v1/chat/completions (the model's chat
template). Python 3 standard library only.

  python3 scripts/eval_kjv_recall.py --lmc build/lmc --eval D/eval.jsonl \\
      --model models/kjv-llama-chat [--model OTHER ...] [--device cuda] [--json out.json]
  python3 scripts/eval_kjv_recall.py --eval D/eval.jsonl --answers out.json   # rescore saved answers

Per model, set and task it prints
  exact     the answer, stripped of surrounding whitespace, equals the verse
  char acc  the mean over questions of 1 - min(1, d / len(verse)), d the
            Levenshtein distance between the stripped answer and the verse
            (character accuracy = 1 - character error rate)
"""
import argparse
import concurrent.futures
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def levenshtein(a, b):
    """edit distance (insertions, deletions, substitutions of one character)"""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def score(got, want):
    """(exact 0/1, character accuracy in [0, 1]) of one answer"""
    g, w = got.strip(), want.strip()
    return int(g == w), 1.0 - min(1.0, levenshtein(g, w) / max(len(w), 1))


def table(rows, answers):
    """{(set, task): [n, exact, char-accuracy sum]} plus an "all" row per set"""
    res = {}
    for r, got in zip(rows, answers):
        e, c = score(got, r["answer"])
        for key in ((r["set"], r["task"]), (r["set"], "all")):
            t = res.setdefault(key, [0, 0, 0.0])
            t[0] += 1
            t[1] += e
            t[2] += c
    return res


def ask_all(lmc, model, device, rows, max_tokens, workers, threads):
    import eval_kjv_chat as ekc  # the server start-up and HTTP helpers
    # the server caps each answer at max_tokens and at what the context leaves after the question
    extra = ["--max-tokens", str(max_tokens)] + (["--threads", str(threads)] if threads else [])
    if device:
        extra += ["--device", device]
    proc, port = ekc.start_server(lmc, model, extra)
    ask = lambda r: ekc.post(port, "/v1/chat/completions", {"messages": r["messages"], "temperature": 0})["choices"][0]["message"]["content"]
    try:
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            outs = list(ex.map(ask, rows))
        return outs, time.time() - t0
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lmc", default="build/lmc")
    ap.add_argument("--eval", required=True)
    ap.add_argument("--model", action="append", default=[], help="chat model folder (repeatable)")
    ap.add_argument("--answers", help="score the answers of a --json file written earlier instead of asking")
    ap.add_argument("--device", help="lmc serve --device (cpu or cuda)")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="first N questions per set and task (0: all)")
    ap.add_argument("--json", help="write the answers and scores here")
    ap.add_argument("--show", type=int, default=0, help="print N answers per set and task")
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.eval, encoding="utf-8") if l.strip()]
    if a.limit:
        per, keep = {}, []
        for r in rows:
            k = (r["set"], r["task"])
            per[k] = per.get(k, 0) + 1
            if per[k] <= a.limit:
                keep.append(r)
        rows = keep
    runs = []  # (model, answers, seconds)
    if a.answers:
        saved = json.load(open(a.answers, encoding="utf-8"))
        for m in saved["models"]:
            got = m["answers"]
            if len(got) != len(rows):
                raise SystemExit("%s: %d answers for %d questions" % (a.answers, len(got), len(rows)))
            runs.append((m["model"], [x["got"] for x in got], m.get("seconds", 0)))
    for model in a.model:
        outs, dt = ask_all(a.lmc, model, a.device, rows, a.max_tokens, a.workers, a.threads)
        runs.append((model, outs, dt))
    if not runs:
        raise SystemExit("give --model or --answers")
    keys = sorted({(r["set"], r["task"]) for r in rows}) + sorted({(r["set"], "all") for r in rows})
    print("| model | set | task | questions | exact | char acc |")
    print("|---|---|---|---|---|---|")
    report = {"models": []}
    for model, outs, dt in runs:
        res = table(rows, outs)
        for k in keys:
            n, e, c = res[k]
            print("| `%s` | %s | %s | %d | %d (%.1f%%) | %.3f |" % (model, k[0], k[1], n, e, 100.0 * e / n, c / n))
        if a.show:
            shown = {}
            for r, o in zip(rows, outs):
                k = (r["set"], r["task"])
                shown[k] = shown.get(k, 0) + 1
                if shown[k] <= a.show:
                    print("[%s %s %s] %s\n  want %r\n  got  %r" % (model, k[0], k[1], r["messages"][-1]["content"],
                                                                   r["answer"], o))
        report["models"].append({
            "model": model, "seconds": round(dt, 1),
            "scores": {"%s %s" % k: {"questions": v[0], "exact": v[1], "char_acc": v[2] / v[0]} for k, v in res.items()},
            "answers": [{"set": r["set"], "task": r["task"], "want": r["answer"], "got": o} for r, o in zip(rows, outs)]})
    print("exact: answer == verse; char acc: mean of 1 - min(1, levenshtein / len(verse)); greedy")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(main())
