#!/usr/bin/env bash
# test_kjv_recall.sh — the verse-recall evaluation of the default chat model
# (scripts/eval_kjv_recall.py) scores right on a tiny case worked out by
# hand: exact match after stripping whitespace, character accuracy 1 -
# min(1, Levenshtein / len(verse)) per question and its mean per set and
# task; and scripts/make_kjv_recall.py builds a held-in / held-out split
# whose held-out books no training conversation mentions. Also asks
# models/kjv-llama-chat two questions through `lmc serve` and checks that
# rescoring the saved answers gives the same table. Python 3 stdlib only.
# Usage: test_kjv_recall.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"

# three questions; answers chosen so that every number is known by hand:
#   "abcd" vs " abcd\n"  exact 1, char acc 1
#   "abcd" vs "abed"     one substitution: exact 0, 1 - 1/4 = 0.75
#   "ab"   vs "xyzwvu"   distance 6 > len 2: exact 0, char acc 0 (clipped)
cat >"$TMP/eval.jsonl" <<'EOF'
{"set": "held-in", "task": "quote", "messages": [{"role": "user", "content": "Quote A 1:1"}], "answer": "abcd"}
{"set": "held-in", "task": "quote", "messages": [{"role": "user", "content": "Quote A 1:2"}], "answer": "abcd"}
{"set": "held-out", "task": "continue", "messages": [{"role": "user", "content": "Continue: x"}], "answer": "ab"}
EOF
cat >"$TMP/ans.json" <<'EOF'
{"models": [{"model": "m", "answers": [{"got": " abcd\n"}, {"got": "abed"}, {"got": "xyzwvu"}]}]}
EOF
python3 scripts/eval_kjv_recall.py --eval "$TMP/eval.jsonl" --answers "$TMP/ans.json" --json "$TMP/s.json" >"$TMP/out"
ok $? "rescoring saved answers: $(cat "$TMP/out")"
python3 - "$TMP/s.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["models"][0]["scores"]
want = {"held-in quote": (2, 1, 0.875), "held-in all": (2, 1, 0.875),
        "held-out continue": (1, 0, 0.0), "held-out all": (1, 0, 0.0)}
assert sorted(s) == sorted(want), sorted(s)
for k, (n, e, c) in want.items():
    assert s[k]["questions"] == n and s[k]["exact"] == e and abs(s[k]["char_acc"] - c) < 1e-12, (k, s[k])
PY
ok $? "scores by hand: held-in 1/2 exact, char acc 0.875; held-out 0/1, 0"
grep -q '| `m` | held-in | quote | 2 | 1 (50.0%) | 0.875 |' "$TMP/out"; ok $? "table row: $(grep held-in "$TMP/out" | head -1)"
python3 - <<'PY'
import sys
sys.path.insert(0, "scripts")
from eval_kjv_recall import levenshtein, score
cases = [("", "", 0), ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("abc", "", 3), ("", "abc", 3),
         ("And God said", "And God saith", 2)]
for a, b, d in cases:
    assert levenshtein(a, b) == d == levenshtein(b, a), (a, b, levenshtein(a, b), d)
assert score("sitting", "kitten") == (0, 0.5), score("sitting", "kitten")
PY
ok $? "Levenshtein distances and a char accuracy by hand"

# the split: held-out books never in training; held-in questions are training verses
python3 scripts/make_kjv_recall.py --kjv data/kjv.txt --out-dir "$TMP/d" --max-verses 40 --eval-in 5 \
  --eval-out 3 --other-fraction 0.2 >"$TMP/mk" 2>&1
ok $? "make_kjv_recall: $(tail -2 "$TMP/mk")"
python3 - "$TMP/d" <<'PY'
import json, sys
d = sys.argv[1]
train = [json.loads(l) for l in open(d + "/train.jsonl")]
ev = [json.loads(l) for l in open(d + "/eval.jsonl")]
text = "\n".join(m["content"] for t in train for m in t["messages"])
for b in ("Ruth", "Jonah", "Titus", "Jude"):
    assert b + " " not in text, b
pairs = {(t["messages"][0]["content"], t["messages"][1]["content"]) for t in train if len(t["messages"]) == 2}
n = {}
for r in ev:
    n[(r["set"], r["task"])] = n.get((r["set"], r["task"]), 0) + 1
    q = r["messages"][-1]["content"]
    if r["set"] == "held-in":
        assert (q, r["answer"]) in pairs, q
    else:
        assert all(q != p[0] for p in pairs) and r["answer"] not in text, q
assert n == {("held-in", "quote"): 5, ("held-in", "continue"): 5, ("held-out", "quote"): 3,
             ("held-out", "continue"): 3}, n
quotes = [p for p in pairs if p[0].startswith("Quote Genesis 1:")]
assert len(quotes) >= 31 and sum(t["messages"][0]["content"] == "Quote Genesis 1:1" and len(t["messages"]) == 2 for t in train) == 2
PY
ok $? "held-out books absent from training, held-in questions taught, every verse quoted twice"

# end to end through lmc serve (two questions), then the saved answers rescored alike
if [ -x "$LMC" ] && [ -d models/kjv-llama-chat ]; then
  python3 scripts/eval_kjv_recall.py --lmc "$LMC" --eval "$TMP/d/eval.jsonl" --model models/kjv-llama-chat \
    --limit 1 --max-tokens 24 --threads 1 --workers 2 --json "$TMP/live.json" >"$TMP/live" 2>&1
  ok $? "live evaluation: $(tail -3 "$TMP/live")"
  python3 scripts/eval_kjv_recall.py --eval "$TMP/d/eval.jsonl" --answers "$TMP/live.json" --limit 1 >"$TMP/re"
  diff <(grep '^| `' "$TMP/live") <(grep '^| `' "$TMP/re") >/dev/null; ok $? "rescored table equals the live one"
fi
echo "test_kjv_recall: $pass passed, $fail failed"
[ $fail = 0 ]
