#!/usr/bin/env bash
# test_grammar_cli.sh — structured output end to end: `lmc generate
# --json-schema FILE` and `--grammar json` on the three tiny fixtures
# (byte-level BPE and metaspace with byte fallback), greedy and sampled with
# several seeds; every output that ends (finish_reason stop) must be JSON
# valid against its schema — checked with Python's jsonschema (pip), or
# only parsed when that is not installed. Bad schemas give clear errors.
# Usage: test_grammar_cli.sh PATH/TO/lmc
set -u
LMC="$1"
FIX=tests/fixtures
. "$(dirname "$0")/cli_common.sh"
printf '%s' '{"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":"integer","minimum":0,"maximum":9},"tag":{"enum":["x","y"]}},"required":["ok","n"]}' >"$TMP/s1.json"
printf '%s' '{"type":"array","items":{"type":"integer","minimum":-5,"maximum":5},"minItems":1,"maxItems":3}' >"$TMP/s2.json"
printf '%s' '{"$defs":{"p":{"type":"object","properties":{"name":{"type":"string","maxLength":4},"age":{"type":["integer","null"],"minimum":0,"maximum":99}},"required":["name","age"]}},"type":"object","properties":{"people":{"type":"array","items":{"$ref":"#/$defs/p"},"maxItems":2}},"required":["people"]}' >"$TMP/s3.json"
printf '%s' '{"anyOf":[{"type":"boolean"},{"const":"done"},{"type":"null"}]}' >"$TMP/s4.json"
ended=0
for m in qwen2-tiny llama-tiny gpt2-tiny; do
  for s in s1 s2 s3 s4; do
    for mode in "--temp 0" "--temp 1.0 --seed 1" "--temp 1.0 --seed 2" "--temp 1.5 --seed 3"; do
      "$LMC" generate -m "$FIX/$m" -p "JSON please:" --json-schema "$TMP/$s.json" -n 96 $mode --json \
        >"$TMP/out.json" 2>"$TMP/err"
      rc=$?
      ok $rc "$m $s $mode exit: $(tail -1 "$TMP/err")"
      [ $rc -eq 0 ] || continue
      python3 - "$TMP/out.json" "$TMP/$s.json" <<'PY'
import json, sys
out = json.load(open(sys.argv[1])); schema = json.load(open(sys.argv[2]))
if out["finish_reason"] != "stop":
    sys.exit(3)  # cut by -n: nothing to check
value = json.loads(out["text"])
try:
    import jsonschema
except ImportError:
    sys.exit(0)
jsonschema.validate(value, schema)
PY
      r=$?
      if [ $r -eq 3 ]; then continue; fi
      ok $r "$m $s $mode: $(python3 -c "import json;print(json.load(open('$TMP/out.json'))['text'])") is valid"
      [ $r -eq 0 ] && ended=$((ended+1))
    done
  done
  "$LMC" generate -m "$FIX/$m" -p "{" --grammar json -n 64 --temp 0.8 --seed 4 --json >"$TMP/out.json" 2>"$TMP/err"
  ok $? "$m --grammar json exit"
  python3 -c "import json,sys; o=json.load(open('$TMP/out.json')); sys.exit(0 if o['finish_reason']!='stop' or isinstance(json.loads(o['text']), dict) else 1)"
  ok $? "$m --grammar json gives an object"
done
[ $ended -ge 30 ]; ok $? "at least 30 of 48 schema runs ended (got $ended)"
printf '%s' '{"type":"string","pattern":"^(?=a)$"}' >"$TMP/bad.json"
"$LMC" generate -m "$FIX/qwen2-tiny" -p x --json-schema "$TMP/bad.json" >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "pattern" "$TMP/err"; ok $? "unsupported keyword named: $(cat "$TMP/err")"
# a GBNF file: yes/no answers, or a small list
printf '%s\n' 'root ::= answer | "[" item ("," item){0,2} "]"' 'answer ::= "yes" | "no"' 'item ::= [a-c]+' >"$TMP/g.gbnf"
for seed in 1 2 3 4; do
  "$LMC" generate -m "$FIX/qwen2-tiny" -p "say:" --grammar "$TMP/g.gbnf" -n 40 --temp 1.0 --seed $seed --json >"$TMP/out.json" 2>"$TMP/err"
  ok $? "gbnf seed $seed exit: $(cat "$TMP/err")"
  python3 -c "
import json, re, sys
o = json.load(open('$TMP/out.json'))
sys.exit(0 if o['finish_reason'] != 'stop' or re.fullmatch(r'yes|no|\[[a-c]+(,[a-c]+){0,2}\]', o['text']) else 1)"
  ok $? "gbnf seed $seed: $(python3 -c "import json;print(json.load(open('$TMP/out.json'))['text'])") matches"
done
printf '%s\n' 'root ::= missing' >"$TMP/bad.gbnf"
"$LMC" generate -m "$FIX/qwen2-tiny" -p x --grammar "$TMP/bad.gbnf" >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "not defined" "$TMP/err"; ok $? "a bad GBNF file: $(cat "$TMP/err")"
echo "test_grammar_cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
