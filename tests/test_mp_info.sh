#!/usr/bin/env bash
# test_mp_info.sh — `lmc info --tp --pp --cp`: per-rank memory of a
# layout (text and json agree; CP 4 carries a quarter of the activations of
# CP 1 for a long sequence); --fits lists the layouts under a budget: a
# 65536-token sequence on llama-tiny does not fit 0.2 GiB with CP 1 and
# does with CP 4; --tp-vocab holds fewer parameters per rank; layouts that
# do not split and bad values are refused.
# Usage: test_mp_info.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
M=tests/fixtures/llama-tiny
out=$("$LMC" info -m $M --tp 2 --pp 2 --micro-batches 4 --json); ok $? "json run"
echo "$out" | grep -q '"tp":2,"pp":2,"cp":1,' && echo "$out" | grep -q '"layers":1,'; ok $? "json fields: $out"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["total"]==d["weights"]+d["grads"]+d["optimizer"]+d["activations"]' "$out"; ok $? "total is the sum: $out"
a1=$("$LMC" info -m $M --seq 65536 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["activations"])')
a4=$("$LMC" info -m $M --seq 65536 --cp 4 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["activations"])')
python3 -c "import sys; a1,a4=float('$a1'),float('$a4'); sys.exit(0 if 3.5*a4 < a1 < 4.5*a4 else 1)"; ok $? "CP 4 activations $a4 vs CP 1 $a1"
fits=$("$LMC" info -m $M --seq 65536 --fits 0.2); ok $? "fits run"
echo "$fits" | grep -q " 1x1x4: " && ! echo "$fits" | grep -q " 1x1x1: "; ok $? "fits: $fits"
"$LMC" info -m $M --tp 3 >/dev/null 2>&1; [ $? = 1 ]; ok $? "--tp 3 exit"
"$LMC" info -m $M --tp 3 2>&1 | grep -q "4 attention heads do not split in 3"; ok $? "--tp 3 message"
"$LMC" info -m $M --cp 0 >/dev/null 2>&1; [ $? = 2 ]; ok $? "--cp 0 accepted"
pv=$("$LMC" info -m $M --tp 2 --tp-vocab --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["tp_vocab"]; print(d["params"])')
pr=$("$LMC" info -m $M --tp 2 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert not d["tp_vocab"]; print(d["params"])')
[ -n "$pv" ] && [ -n "$pr" ] && [ "$pv" -lt "$pr" ]; ok $? "--tp-vocab per-rank parameters $pv below $pr"
echo "test_mp_info: $pass passed, $fail failed"
[ $fail = 0 ]
