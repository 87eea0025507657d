#!/usr/bin/env python3
"""make_kjv_instruct.py — the instruction set of the default chat model
(models/kjv-llama-chat), built from data/kjv.txt, and the ChatML base folder
it is fine-tuned from.  Python 3 standard library only.

Tasks (user -> assistant), one conversation per JSONL line in the
{"messages": [...]} layout `lmc finetune` reads:
  quote     "Quote Ruth 1:16"                     -> the verse's text
  locate    "Where is it written: <verse>"        -> "Ruth 1:16"
  continue  "Continue: <verse>"                   -> the next verse's text
  after     "Which verse comes after Ruth 1:22?"  -> "Ruth 2:1"
  followup  quote, then "And the next verse?"     -> the next verse's text
            locate, then "Quote the verse before it." -> the previous verse
Whole books are held out (--eval-books) for evaluation: no conversation of
the training file mentions a verse of them. A few famous passages (Genesis
1, Psalms 23, John 1:1-5, 3:16, 11:35: what people ask for first) are
always in the training set, their quote task three times.

  python3 scripts/make_kjv_instruct.py --kjv data/kjv.txt --out-dir kjvsft \
      [--base models/kjv-llama --chatml-base kjvsft/base-chatml]

writes OUT/train.jsonl, OUT/val.jsonl (a slice of the training books' tasks
kept apart for the validation loss) and OUT/eval.jsonl (held-out books:
{"task", "messages", "answer"}; messages end with the user turn to answer).
--base/--chatml-base copy the default model into a folder whose tokenizer
names two of its reserved special tokens <|im_start|> / <|im_end|> (ids
unchanged: no embedding row is added), with a ChatML chat template and
<|im_end|> as its end-of-sequence token.
"""
import argparse
import json
import os
import random
import re
import shutil

DEFAULT_EVAL_BOOKS = "Ruth,Jonah,Titus,Jude"
# passages people ask for first: their quote task is repeated (--famous-repeat)
# and their continue / locate tasks are always kept in the training set
FAMOUS = [("Genesis", 1, 1, 31), ("Psalms", 23, 1, 6), ("John", 1, 1, 5), ("John", 3, 16, 16), ("John", 11, 35, 35)]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def parse_kjv(path):
    """[(book, chapter, verse, text)] in file order. A chapter starts with a
    line "Book N" followed by a blank line and verse 1; a verse with
    "  N text", continued on unindented lines."""
    with open(path, encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f]
    head = re.compile(r"^(\S.*) (\d+)$")
    vline = re.compile(r"^\s+(\d+) (.*)$")
    verses = []
    book, chapter = None, 0
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        m = head.match(line)
        if m and k + 2 < len(lines) and not lines[k + 1].strip() and re.match(r"^\s+1 ", lines[k + 2]):
            book, chapter = m.group(1), int(m.group(2))
            continue
        m = vline.match(line)
        if m and book:
            verses.append([book, chapter, int(m.group(1)), m.group(2).strip()])
        elif verses:  # a wrapped verse line
            verses[-1][3] += " " + line.strip()
    return [tuple(v) for v in verses]


def ref(v):
    return "%s %d:%d" % (v[0], v[1], v[2])


def conversations(verses, idx, rng, max_words):
    """Every task for the verses at indices idx (all of one set of books)."""
    out = []
    short = lambda i: len(verses[i][3].split()) <= max_words
    same_book = lambda i, j: 0 <= j < len(verses) and verses[i][0] == verses[j][0]
    for i in idx:
        v = verses[i]
        if not short(i):
            continue
        nxt = i + 1 if same_book(i, i + 1) and short(i + 1) else None
        prv = i - 1 if same_book(i, i - 1) and short(i - 1) else None
        u = lambda c: {"role": "user", "content": c}
        a = lambda c: {"role": "assistant", "content": c}
        out.append(("quote", [u("Quote " + ref(v)), a(v[3])]))
        out.append(("locate", [u("Where is it written: " + v[3]), a(ref(v))]))
        if nxt is not None:
            out.append(("continue", [u("Continue: " + v[3]), a(verses[nxt][3])]))
            out.append(("after", [u("Which verse comes after %s?" % ref(v)), a(ref(verses[nxt]))]))
            out.append(("followup", [u("Quote " + ref(v)), a(v[3]), u("And the next verse?"),
                                     a(verses[nxt][3])]))
        if prv is not None:
            out.append(("followup", [u("Where is it written: " + v[3]), a(ref(v)),
                                     u("Quote the verse before it."), a(verses[prv][3])]))
    rng.shuffle(out)
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def make_chatml_base(base, out):
    """The default model with <|im_start|>/<|im_end|> in place of
    <|reserved_special_token_0|>/<|reserved_special_token_1|>."""
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(base):
        shutil.copy(os.path.join(base, name), os.path.join(out, name))
    with open(os.path.join(base, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    rename = {"<|reserved_special_token_0|>": "<|im_start|>", "<|reserved_special_token_1|>": "<|im_end|>"}
    ids = {}
    for t in tok["added_tokens"]:
        if t["content"] in rename:
            t["content"] = rename[t["content"]]
            ids[t["content"]] = t["id"]
    vocab = tok["model"]["vocab"]
    for old, new in rename.items():
        if old in vocab:
            vocab[new] = vocab.pop(old)
    if len(ids) != 2:
        raise SystemExit("%s: no reserved special tokens 0 and 1 to rename" % base)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(base, "tokenizer_config.json"), encoding="utf-8") as f:
        tc = json.load(f)
    tc["eos_token"] = "<|im_end|>"
    tc["pad_token"] = "<|end_of_text|>"
    tc["chat_template"] = CHAT_TEMPLATE
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tc, f, indent=2)
    with open(os.path.join(base, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    old_eos = cfg.get("eos_token_id")
    cfg["eos_token_id"] = ids["<|im_end|>"]
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
    gc = {"eos_token_id": [ids["<|im_end|>"], old_eos] if isinstance(old_eos, int) else ids["<|im_end|>"],
          "do_sample": True, "temperature": 0.2, "top_p": 0.95, "max_new_tokens": 128}
    with open(os.path.join(out, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump(gc, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kjv", default="data/kjv.txt")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--eval-books", default=DEFAULT_EVAL_BOOKS, help="comma-separated whole books held out")
    ap.add_argument("--eval-per-task", type=int, default=40)
    ap.add_argument("--val", type=int, default=200, help="training-book conversations kept for validation loss")
    ap.add_argument("--train-size", type=int, default=8000, help="training conversations kept (0: all)")
    ap.add_argument("--famous-repeat", type=int, default=3, help="copies of each famous passage's quote task")
    ap.add_argument("--max-words", type=int, default=40, help="verses longer than this are not used")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rl-out", help="also write RL tasks here: rl_tasks.jsonl (2000) and rl_eval.jsonl (100), "
                    "'Which verse comes after' questions on verses of the training books with the answer")
    ap.add_argument("--base", help="the default model folder (with --chatml-base)")
    ap.add_argument("--chatml-base", help="write the ChatML base folder here")
    a = ap.parse_args()
    verses = parse_kjv(a.kjv)
    books = []
    for v in verses:
        if not books or books[-1] != v[0]:
            books.append(v[0])
    held = [b.strip() for b in a.eval_books.split(",") if b.strip()]
    for b in held:
        if b not in books:
            raise SystemExit("--eval-books: no book '%s' in %s" % (b, a.kjv))
    rng = random.Random(a.seed)
    tr_idx = [i for i, v in enumerate(verses) if v[0] not in held]
    ev_idx = [i for i, v in enumerate(verses) if v[0] in held]
    train = conversations(verses, tr_idx, rng, a.max_words)
    if a.train_size:
        train = train[:a.val + a.train_size]
    famous = [i for i, v in enumerate(verses)
              if any(v[0] == b and v[1] == c and lo <= v[2] <= hi for b, c, lo, hi in FAMOUS)]
    extra = [t for t in conversations(verses, famous, rng, 10 ** 6) if t[0] in ("quote", "continue", "locate")]
    extra += [t for t in extra if t[0] == "quote"] * (a.famous_repeat - 1)
    train = train[:a.val] + sorted(train[a.val:] + extra, key=lambda _: rng.random())
    evals = conversations(verses, ev_idx, rng, a.max_words)
    os.makedirs(a.out_dir, exist_ok=True)
    write_jsonl(os.path.join(a.out_dir, "train.jsonl"), [{"messages": m} for _, m in train[a.val:]])
    write_jsonl(os.path.join(a.out_dir, "val.jsonl"), [{"messages": m} for _, m in train[:a.val]])
    per = {}
    rows = []
    for task, m in evals:
        if per.get(task, 0) >= a.eval_per_task:
            continue
        per[task] = per.get(task, 0) + 1
        rows.append({"task": task, "messages": m[:-1], "answer": m[-1]["content"]})
    rows.sort(key=lambda r: r["task"])
    write_jsonl(os.path.join(a.out_dir, "eval.jsonl"), rows)
    print("%d verses in %d books; held out %s (%d verses)" % (len(verses), len(books), ",".join(held), len(ev_idx)))
    print("train %d, val %d, eval %d (%s)" % (len(train) - a.val, a.val, len(rows),
                                              ", ".join("%s %d" % kv for kv in sorted(per.items()))))
    if a.rl_out:
        os.makedirs(a.rl_out, exist_ok=True)
        idx = [i for i in range(len(verses) - 1) if verses[i][0] not in held and verses[i + 1][0] == verses[i][0]]
        r = random.Random(7)
        r.shuffle(idx)
        task = lambda i: {"messages": [{"role": "user", "content": "Which verse comes after %s?" % ref(verses[i])}],
                          "answer": ref(verses[i + 1])}
        write_jsonl(os.path.join(a.rl_out, "rl_tasks.jsonl"), [task(i) for i in idx[:2000]])
        write_jsonl(os.path.join(a.rl_out, "rl_eval.jsonl"), [task(i) for i in idx[2000:2100]])
    if a.chatml_base:
        if not a.base:
            raise SystemExit("--chatml-base needs --base")
        make_chatml_base(a.base, a.chatml_base)
        print("ChatML base in", a.chatml_base)


if __name__ == "__main__":
    main()
