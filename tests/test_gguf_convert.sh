#!/usr/bin/env bash
# test_gguf_convert.sh — `lmc convert -o FILE.gguf`: each fixture (Llama,
# GPT-2, Qwen2) written as f32, f16, bf16, q8_0 and q4_0 GGUF; when numpy and
# llama.cpp's gguf Python package are installed, tests/quant/
# check_gguf_convert.py reads the files with gguf-py and checks names,
# shapes, values (Q/K permutation and Conv1D transpose undone), Q8_0/Q4_0
# bytes against gguf-py's own quantizers, hyper-parameters and tokenizer
# metadata; otherwise that part reports itself skipped. Bad options fail
# cleanly. Usage: test_gguf_convert.sh PATH/TO/lmc
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
"$LMC" convert -m tests/fixtures/llama-tiny -o "$TMP/x.gguf" --dtype q4_k 2>"$TMP/err"
[ $? = 2 ] && grep -q "expected f32, f16, bf16, q8_0 or q4_0" "$TMP/err"; ok $? "q4_k refused: $(cat "$TMP/err")"
"$LMC" convert -m "$TMP/nope" -o "$TMP/x.gguf" --dtype f16 2>"$TMP/err"
[ $? = 1 ] && grep -q "nope" "$TMP/err"; ok $? "missing folder named: $(cat "$TMP/err")"
[ $skipped = 0 ] || echo "test_gguf_convert: $skipped gguf-py checks skipped (pip install numpy gguf)"
echo "test_gguf_convert: $pass passed, $fail failed"
[ $fail = 0 ]
