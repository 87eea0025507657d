#!/usr/bin/env bash
# test_convert.sh — `lmc convert`: an fp32 fixture rewritten in bf16 and f16
# has every tensor in the new dtype, half the weight bytes, torch_dtype set
# and the tokenizer files copied; it loads and gives a perplexity close to the
# fp32 model's; converting back to f32 gives the bf16 model's perplexity (to 1e-5: the
# bf16 weights are exact in f32, only the kernels differ); bad options and an output
# folder equal to the input fail cleanly. Usage: test_convert.sh PATH/TO/lmc
set -u
LMC="$1"
SRC=tests/fixtures/llama-tiny
. "$(dirname "$0")/cli_common.sh"
dtypes() { head -c 100000 "$1" | tr -d '\0' | tr ',' '\n' | sed -n 's/.*"dtype":"\([A-Z0-9]*\)".*/\1/p' | sort -u | tr '\n' ' '; }
ppl() { "$LMC" eval -m "$1" --text "And God said, Let there be light: and there was light." --json 2>/dev/null |
        sed -n 's/.*"ppl":\([0-9.e+-]*\).*/\1/p'; }

p32=$(ppl "$SRC")
for dt in bf16 f16; do
  "$LMC" convert -m "$SRC" -o "$TMP/$dt" --dtype $dt 2>"$TMP/err"; ok $? "convert $dt: $(cat "$TMP/err")"
  want=$([ $dt = bf16 ] && echo BF16 || echo F16)
  [ "$(dtypes "$TMP/$dt/model.safetensors")" = "$want " ]; ok $? "$dt: dtypes '$(dtypes "$TMP/$dt/model.safetensors")'"
  for f in config.json tokenizer.json; do cmp -s "$SRC/$f" "$TMP/$dt/$f" || [ $f = config.json ]; ok $? "$dt: $f copied"; done
  t=$([ $dt = bf16 ] && echo bfloat16 || echo float16)
  grep -q "\"torch_dtype\":[[:space:]]*\"$t\"" "$TMP/$dt/config.json"; ok $? "$dt: torch_dtype $t"
  s32=$(wc -c <"$SRC/model.safetensors"); s=$(wc -c <"$TMP/$dt/model.safetensors")
  [ $((s * 2)) -lt $((s32 + 4096)) ]; ok $? "$dt: $s bytes vs fp32 $s32"
  p=$(ppl "$TMP/$dt")
  awk -v a="$p" -v b="$p32" 'BEGIN { d = a / b - 1; if (d < 0) d = -d; exit !(a > 0 && d < 0.02) }'
  ok $? "$dt: perplexity $p vs fp32 $p32"
  "$LMC" generate -m "$TMP/$dt" -p "Hello" -n 4 --temp 0 >/dev/null 2>"$TMP/err"; ok $? "$dt: generate: $(cat "$TMP/err")"
done
"$LMC" convert -m "$TMP/bf16" -o "$TMP/back" --dtype f32 2>"$TMP/err"; ok $? "bf16 -> f32: $(cat "$TMP/err")"
[ "$(dtypes "$TMP/back/model.safetensors")" = "F32 " ]; ok $? "back: F32"
pb=$(ppl "$TMP/back"); pbf=$(ppl "$TMP/bf16")
awk -v a="$pb" -v b="$pbf" 'BEGIN { d = a / b - 1; if (d < 0) d = -d; exit !(a > 0 && d < 1e-5) }'
ok $? "f32 from bf16 gives the bf16 model's perplexity ($pb vs $pbf)"

"$LMC" convert -m "$SRC" -o "$TMP/x" --dtype int3 2>"$TMP/err"; [ $? = 2 ] && grep -q "bf16" "$TMP/err"; ok $? "bad dtype"
"$LMC" convert -m "$TMP/bf16" -o "$TMP/bf16" --dtype f16 2>"$TMP/err"; [ $? = 1 ] && grep -q "must differ" "$TMP/err"
ok $? "same folder refused"
"$LMC" convert -m "$TMP/missing" -o "$TMP/y" --dtype bf16 2>"$TMP/err"; [ $? = 1 ] && grep -q "missing" "$TMP/err"
ok $? "missing input named"
"$LMC" convert -m "$SRC" --dtype bf16 2>/dev/null; [ $? = 2 ]; ok $? "missing -o"

echo "test_convert: $pass passed, $fail failed"
[ "$fail" = 0 ]
