#!/usr/bin/env bash
# test_plot.sh — `lmc plot`: an SVG with one line per metric, legend, axis
# labels and ticks that python3's XML parser accepts; log scale; malformed
# lines reported with their line number and skipped; clear errors and exit
# codes for missing files, unknown metrics and bad options; and the
# train-tokenizer / prepare-data commands end to end on a small corpus.
# Usage: test_plot.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"

python3 - "$TMP/m.jsonl" <<'PY'
import json, math, sys
with open(sys.argv[1], "w") as f:
    for s in range(1, 301):
        row = {"step": s, "loss": 2 + 8 * math.exp(-s / 60), "lr": 1e-3 * min(1, s / 30)}
        if s % 50 == 0:
            row["val_loss"] = 2.1 + 8 * math.exp(-s / 60)
        f.write(json.dumps(row) + "\n")
        if s == 120:
            f.write('{"step": 121, "loss": \n')   # line 121: malformed
            f.write('\n')                         # blank lines are fine
        if s == 200:
            f.write('{"step": 201, "loss": "nan"}\n')
PY

"$LMC" plot "$TMP/m.jsonl" -o "$TMP/c.svg" 2>"$TMP/err"
ok $? "plot exit status"
grep -q "m.jsonl:121: not a JSON object" "$TMP/err"; ok $? "malformed line reported with its number: $(cat "$TMP/err")"
grep -q "m.jsonl:203: not a finite number: loss" "$TMP/err"; ok $? "non-numeric value reported with its line"
python3 - "$TMP/c.svg" <<'PY'
import sys, xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
root = ET.parse(sys.argv[1]).getroot()
lines = root.findall(f".//{ns}polyline")
assert len(lines) == 2, len(lines)
npts = sorted(len(l.get("points").split()) for l in lines)
assert npts == [6, 300], npts                       # val_loss every 50 steps, loss every step
texts = [t.text or "" for t in root.iter(f"{ns}text")]
for want in ("loss", "val_loss", "step", "m.jsonl", "0", "300"):
    assert want in texts, (want, texts)
assert len(root.findall(f".//{ns}circle")) == 6     # sparse series get markers
# every point lies inside the plot area
import re
for l in lines:
    for p in l.get("points").split():
        x, y = map(float, p.split(","))
        assert 0 < x < 900 and 0 < y < 520, p
PY
ok $? "SVG content"

"$LMC" plot "$TMP/m.jsonl" -o "$TMP/lr.svg" --metric lr --log --title 'lr <schedule>' 2>/dev/null
ok $? "log-scale plot"
python3 - "$TMP/lr.svg" <<'PY'
import sys, xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
root = ET.parse(sys.argv[1]).getroot()
texts = [t.text or "" for t in root.iter(f"{ns}text")]
assert "lr <schedule>" in texts, texts
assert any("log scale" in t for t in texts), texts
assert "0.001" in texts and "0.0001" in texts, texts
assert len(root.findall(f".//{ns}polyline")) == 1
PY
ok $? "log-scale SVG content"

if command -v rsvg-convert >/dev/null; then
  rsvg-convert "$TMP/c.svg" -o "$TMP/c.png"; ok $? "rsvg-convert renders the SVG"
fi

"$LMC" plot "$TMP/none.jsonl" -o "$TMP/x.svg" 2>"$TMP/err"
[ $? = 1 ] && grep -q "none.jsonl" "$TMP/err"; ok $? "missing file: exit 1 naming it"
"$LMC" plot "$TMP/m.jsonl" -o "$TMP/x.svg" --metric accuracy 2>"$TMP/err"
[ $? = 1 ] && grep -q "accuracy" "$TMP/err"; ok $? "unknown metric: exit 1 naming it"
"$LMC" plot "$TMP/m.jsonl" 2>/dev/null
[ $? = 2 ]; ok $? "no -o: usage, exit 2"
"$LMC" plot "$TMP/m.jsonl" -o "$TMP/x.svg" --bogus 2>/dev/null
[ $? = 2 ]; ok $? "unknown option: exit 2"
"$LMC" plot "$TMP/m.jsonl" -o /nonexistent/dir/x.svg 2>"$TMP/err"
[ $? = 1 ] && grep -q "/nonexistent/dir/x.svg" "$TMP/err"; ok $? "unwritable output named"

# train-tokenizer and prepare-data end to end on this repository's sources
cat src/tokenizer/*.c src/io/*.c > "$TMP/corpus.txt"
"$LMC" train-tokenizer --text-file "$TMP/corpus.txt" --vocab 600 --style llama3 -o "$TMP/tok" 2>"$TMP/err"
ok $? "train-tokenizer: $(cat "$TMP/err")"
[ -f "$TMP/tok/tokenizer.json" ] && [ -f "$TMP/tok/tokenizer_config.json" ]; ok $? "tokenizer files written"
ids=$("$LMC" tokenize -m "$TMP/tok" --text "static int main(void)" --add-special 2>/dev/null)
case "$ids" in "[592,"*) ok 0 "";; *) ok 1 "llama3 style starts with BOS 592: $ids";; esac
text=$("$LMC" detokenize -m "$TMP/tok" --ids "$(echo "$ids" | tr -d '[]' | cut -d, -f2-)" 2>/dev/null)
[ "$text" = "static int main(void)" ]; ok $? "detokenize round trip: '$text'"
"$LMC" train-tokenizer --text-file "$TMP/corpus.txt" --vocab 100 --style gpt2 -o "$TMP/t2" 2>"$TMP/err"
[ $? = 1 ] && grep -q "vocab size 100" "$TMP/err"; ok $? "too small a vocab: $(cat "$TMP/err")"
"$LMC" train-tokenizer --text-file "$TMP/corpus.txt" --vocab 600 --style sentencepiece -o "$TMP/t2" 2>/dev/null
[ $? = 2 ]; ok $? "unknown style: exit 2"

"$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/corpus.txt" -o "$TMP/data" --val-fraction 0.1 --seed 7 2>"$TMP/err"
ok $? "prepare-data: $(cat "$TMP/err")"
python3 - "$TMP/data" <<'PY'
import json, struct, sys, os
d = sys.argv[1]
meta = json.load(open(os.path.join(d, "meta.json")))
for split in ("train", "val"):
    b = open(os.path.join(d, f"{split}_00000.bin"), "rb").read()
    assert b[:8] == b"LMCTOK01"
    ver, dt, vocab, eos, n, docs = struct.unpack("<IIIIQQ", b[8:40])
    assert (ver, dt, vocab) == (1, 2, 600) and len(b) == 64 + 2 * n
    ids = struct.unpack(f"<{n}H", b[64:])
    assert max(ids) < vocab and ids[-1] == eos and ids.count(eos) == docs
    assert meta[split]["tokens"] == n and meta[split]["documents"] == docs
assert meta["val"]["documents"] > 0 and meta["train"]["documents"] > 5 * meta["val"]["documents"]
PY
ok $? "prepare-data shards and meta.json"
printf '{"text": "a"}\nnot json\n' > "$TMP/bad.jsonl"
"$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/bad.jsonl" --jsonl -o "$TMP/d2" 2>"$TMP/err"
[ $? = 1 ] && grep -q "bad.jsonl:2" "$TMP/err"; ok $? "bad JSONL line named: $(cat "$TMP/err")"

echo "test_plot: $pass passed, $fail failed"
[ "$fail" = 0 ]
