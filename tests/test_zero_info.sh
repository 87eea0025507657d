#!/usr/bin/env bash
# test_zero_info.sh — `lmc info --zero S --world N`: the per-rank memory of
# the ZeRO paper's formulas (16P, 4P + 12P/N, 2P + 14P/N, 16P/N bytes for
# mixed-precision Adam) and of lmc's fp32 layout, from --params or a model
# folder; bad values fail cleanly. Usage: test_zero_info.sh PATH/TO/lmc
set -u
LMC="$1"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2" >&2; fi; }
P=1200000
for s in 0 1 2 3; do
  for n in 1 4 6; do
    out=$("$LMC" info --zero $s --world $n --params $P --json)
    ok $? "info --zero $s --world $n"
    # the two totals from the JSON, the formulas' values by awk
    got=$(printf '%s' "$out" | grep -o '"total":[0-9.]*' | cut -d: -f2 | tr '\n' ' ')
    want=$(awk -v P=$P -v N=$n -v s=$s 'BEGIN {
      split("16 4 2 0", a, " "); split("0 12 14 16", b, " "); split("16 8 4 0", c, " "); split("0 8 12 16", d, " ");
      printf "%.0f %.0f \n", a[s+1]*P + b[s+1]*P/N, c[s+1]*P + d[s+1]*P/N }')
    [ "$got" = "$want" ]; ok $? "zero $s world $n: totals (mixed fp32) $got, want $want"
  done
done
if [ -d models/kjv-llama ]; then
  "$LMC" info -m models/kjv-llama --zero 3 --world 8 | grep -q "ZeRO-3, 8 ranks, 10326816 parameters"
  ok $? "info -m --zero names the model's parameter count"
fi
"$LMC" info --zero 4 --params 10 2>/dev/null; [ $? = 2 ]; ok $? "--zero 4 refused"
"$LMC" info --zero 1 2>/dev/null; [ $? = 2 ]; ok $? "--zero without -m or --params refused"
"$LMC" info --world 2 --params 5 2>/dev/null; [ $? = 2 ]; ok $? "--world without --zero refused"
echo "test_zero_info: $pass passed, $fail failed"
[ $fail = 0 ]
