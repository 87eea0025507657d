#!/usr/bin/env bash
# test_gguf_convert.sh — `lmc convert -o FILE.gguf`: each fixture (Llama,
# GPT-2, Qwen2) written as f32, f16, bf16, q8_0 and q4_0 GGUF; when numpy and
# llama.cpp's gguf Python package are installed, tests/quant/
# check_gguf_convert.py reads the files with gguf-py and checks names,
# shapes, values (Q/K permutation and Conv1D transpose undone), Q8_0/Q4_0
# bytes against gguf-py's own quantizers, hyper-parameters and tokenizer
# metadata; otherwise that part reports itself skipped. GGUF files in:
# each f32 GGUF converted back to a Hugging Face folder (`lmc convert -m
# FILE.gguf`: Q/K order and Conv1D layout undone, config and tokenizer.json
# rebuilt from the metadata — the Llama SentencePiece merges from the
# scores) passes `lmc parity` against the fixture's transformers references
# (logits, greedy ids, tokenizer ids); q8_0 and q4_0 files come back with a
# perplexity within 2% / 10% of the float model's; GGUF files written by
# llama.cpp's own gguf-py (tests/quant/write_gguf_py.py) pass parity too.
# Bad options fail cleanly. Usage: test_gguf_convert.sh PATH/TO/lmc
set -u
LMC="$1"
pass=0; fail=0; skipped=0
ok() { if [ "$1" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2" >&2; fi; }
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
have_py=0
python3 -c "import numpy, gguf" 2>/dev/null && have_py=1
for m in llama-tiny gpt2-tiny qwen2-tiny; do
  for dt in f32 f16 bf16 q8_0 q4_0; do
    out="$TMP/$m-$dt.gguf"
    "$LMC" convert -m "tests/fixtures/$m" -o "$out" --dtype $dt 2>"$TMP/err"; ok $? "$m $dt: $(cat "$TMP/err")"
    [ "$(head -c 4 "$out")" = GGUF ]; ok $? "$m $dt: GGUF magic"
    case $dt in f32|q8_0|q4_0)
      if [ $have_py = 1 ]; then
        python3 tests/quant/check_gguf_convert.py "tests/fixtures/$m" "$out" $dt >"$TMP/py" 2>&1; ok $? "$m $dt: $(tail -3 "$TMP/py")"
      else skipped=$((skipped+1)); fi;;
    esac
  done
done
TEXT="And God said, Let there be light: and there was light. And God saw the light, that it was good."
ppl() { "$LMC" eval -m "$1" --text "$TEXT" --json 2>/dev/null | sed -n 's/.*"ppl":\([0-9.e+-]*\).*/\1/p'; }
back() { # back FILE.gguf FIXTURE DIR: convert to a folder with the fixture's references beside it
  rm -rf "$3"; "$LMC" convert -m "$1" -o "$3" --dtype f32 2>"$TMP/err"; ok $? "$1 -> folder: $(cat "$TMP/err")"
  cp "tests/fixtures/$2/ref.json" "tests/fixtures/$2/ref_logits.safetensors" "tests/fixtures/$2/generation_config.json" "$3/"
}
for m in llama-tiny gpt2-tiny qwen2-tiny; do
  back "$TMP/$m-f32.gguf" $m "$TMP/back"
  "$LMC" parity "$TMP/back" >"$TMP/par" 2>&1; ok $? "$m GGUF round trip parity: $(grep -v PASS "$TMP/par" | tail -5)"
  p0=$(ppl tests/fixtures/$m)
  for dt in q8_0 q4_0; do
    back "$TMP/$m-$dt.gguf" $m "$TMP/back"
    p=$(ppl "$TMP/back"); tol=$([ $dt = q8_0 ] && echo 0.02 || echo 0.10)
    awk -v a="$p" -v b="$p0" -v t=$tol 'BEGIN { d = a / b - 1; if (d < 0) d = -d; exit !(a > 0 && d < t) }'
    ok $? "$m $dt GGUF back: perplexity $p vs float $p0"
  done
  if [ $have_py = 1 ] && [ $m != qwen2-tiny ]; then
    python3 tests/quant/write_gguf_py.py tests/fixtures/$m "$TMP/py.gguf" >/dev/null 2>"$TMP/err"; ok $? "gguf-py write $m: $(cat "$TMP/err")"
    back "$TMP/py.gguf" $m "$TMP/back"
    "$LMC" parity "$TMP/back" >"$TMP/par" 2>&1; ok $? "$m written by gguf-py: parity $(grep -v PASS "$TMP/par" | tail -5)"
  fi
done
"$LMC" convert -m fuzz/seeds/fuzz_gguf/llama_small.gguf -o "$TMP/y" --dtype f32 2>"$TMP/err"
[ $? = 1 ] && grep -q "llama.feed_forward_length' is missing" "$TMP/err"; ok $? "missing key named: $(cat "$TMP/err")"
head -c 300 "$TMP/llama-tiny-f32.gguf" >"$TMP/cut.gguf"
"$LMC" convert -m "$TMP/cut.gguf" -o "$TMP/y" --dtype f32 2>"$TMP/err"
[ $? = 1 ] && grep -q "cut.gguf: .*cannot fit\|cut.gguf: truncated" "$TMP/err"; ok $? "truncated GGUF: $(cat "$TMP/err")"
"$LMC" convert -m tests/fixtures/llama-tiny -o "$TMP/x.gguf" --dtype q3_k 2>"$TMP/err"
[ $? = 2 ] && grep -q "expected f32, f16, bf16, q8_0, q4_0" "$TMP/err"; ok $? "q3_k refused: $(cat "$TMP/err")"
"$LMC" convert -m "$TMP/nope" -o "$TMP/x.gguf" --dtype f16 2>"$TMP/err"
[ $? = 1 ] && grep -q "nope" "$TMP/err"; ok $? "missing folder named: $(cat "$TMP/err")"
[ $skipped = 0 ] || echo "test_gguf_convert: $skipped gguf-py checks skipped (pip install numpy gguf)"
echo "test_gguf_convert: $pass passed, $fail failed"
[ $fail = 0 ]
