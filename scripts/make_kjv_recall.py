#!/usr/bin/env python3
"""make_kjv_recall.py — the verse-recall fine-tuning set of the default chat
model (scripts/train_chat_model.sh), built from data/kjv.txt with the
helpers of make_kjv_instruct.py (its verse parser, tasks and ChatML base).
Python 3 standard library only.

Every verse of the training books is taught, not a sample: the aim is recall.
train.jsonl ({"messages": [...]}, lmc finetune's chat layout) holds
  quote     "Quote Genesis 1:3" -> the verse            (--quote-copies each)
  continue  "Continue: <verse>" -> the next verse       (every verse with a next one in its book)
  and a --other-fraction sample of make_kjv_instruct.py's locate / after /
  followup conversations, so the model keeps those skills.
eval.jsonl ({"set", "task", "messages", "answer"}; messages end with the
user turn to answer) holds quote and continue questions on
  held-in   --eval-in of each task, verses drawn (--seed) from the training set
  held-out  --eval-out of each task from the held-out books (--eval-books,
            default make_kjv_instruct.py's Ruth, Jonah, Titus, Jude), which no
            training conversation mentions.
--max-verses N trains on the first N verses of the training books only (a
CPU smoke test); the held-in questions are then drawn from those.

  python3 scripts/make_kjv_recall.py --kjv data/kjv.txt --out-dir D \\
      [--base models/kjv-llama --chatml-base D/base-chatml]
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_kjv_instruct as mki  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kjv", default="data/kjv.txt")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--eval-books", default=mki.DEFAULT_EVAL_BOOKS)
    ap.add_argument("--quote-copies", type=int, default=2)
    ap.add_argument("--other-fraction", type=float, default=0.05,
                    help="share of the locate / after / followup conversations kept")
    ap.add_argument("--max-verses", type=int, default=0, help="train on the first N training verses (0: all)")
    ap.add_argument("--eval-in", type=int, default=100, help="held-in questions per task")
    ap.add_argument("--eval-out", type=int, default=50, help="held-out questions per task")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--base", help="the default model folder (with --chatml-base)")
    ap.add_argument("--chatml-base", help="write the ChatML base folder here")
    a = ap.parse_args()
    verses = mki.parse_kjv(a.kjv)
    books = {v[0] for v in verses}
    held = [b.strip() for b in a.eval_books.split(",") if b.strip()]
    for b in held:
        if b not in books:
            raise SystemExit("--eval-books: no book '%s' in %s" % (b, a.kjv))
    rng = random.Random(a.seed)
    tr_idx = [i for i, v in enumerate(verses) if v[0] not in held]
    if a.max_verses:
        tr_idx = tr_idx[:a.max_verses]
    ev_idx = [i for i, v in enumerate(verses) if v[0] in held]
    in_train = set(tr_idx)
    u = lambda c: {"role": "user", "content": c}
    asst = lambda c: {"role": "assistant", "content": c}

    def recall(idx):
        """(task, index, messages) of the quote and continue questions"""
        out = []
        for i in idx:
            out.append(("quote", i, [u("Quote " + mki.ref(verses[i])), asst(verses[i][3])]))
            j = i + 1
            if j < len(verses) and verses[j][0] == verses[i][0] and (j in in_train or i not in in_train):
                out.append(("continue", i, [u("Continue: " + verses[i][3]), asst(verses[j][3])]))
        return out

    train = []
    for task, _, m in recall(tr_idx):
        train += [m] * (a.quote_copies if task == "quote" else 1)
    other = [m for t, m in mki.conversations(verses, tr_idx, rng, 10 ** 6) if t in ("locate", "after", "followup")]
    train += other[:int(round(a.other_fraction * len(other)))]
    rng.shuffle(train)

    def pick(idx, n, name):
        rows = []
        for task in ("quote", "continue"):
            cand = [(i, m) for t, i, m in recall(idx) if t == task]
            rng.shuffle(cand)
            rows += [{"set": name, "task": task, "messages": m[:-1], "answer": m[-1]["content"]}
                     for _, m in cand[:n]]
        return rows

    evals = pick(tr_idx, a.eval_in, "held-in") + pick(ev_idx, a.eval_out, "held-out")
    os.makedirs(a.out_dir, exist_ok=True)
    mki.write_jsonl(os.path.join(a.out_dir, "train.jsonl"), [{"messages": m} for m in train])
    mki.write_jsonl(os.path.join(a.out_dir, "eval.jsonl"), evals)
    n_ev = {}
    for r in evals:
        n_ev[r["set"] + " " + r["task"]] = n_ev.get(r["set"] + " " + r["task"], 0) + 1
    print("%d verses; training on %d verses of %d books, held out %s (%d verses)" %
          (len(verses), len(tr_idx), len({verses[i][0] for i in tr_idx}), ",".join(held), len(ev_idx)))
    print("train %d conversations (%d locate/after/followup), eval %s" %
          (len(train), int(round(a.other_fraction * len(other))),
           ", ".join("%s %d" % kv for kv in sorted(n_ev.items()))))
    if a.chatml_base:
        if not a.base:
            raise SystemExit("--chatml-base needs --base")
        mki.make_chatml_base(a.base, a.chatml_base)
        print("ChatML base in", a.chatml_base)


if __name__ == "__main__":
    main()
