#!/usr/bin/env bash
# test_zero_cli.sh — the ZeRO commands. `lmc info --zero S --world N`: the
# per-rank memory of the ZeRO paper's formulas (16P, 4P + 12P/N, 2P +
# 14P/N, 16P/N bytes for mixed-precision Adam) and of lmc's fp32 layout,
# from --params or a model folder. `lmc convert-checkpoint`: a 2-rank
# sharded checkpoint (made by test_dist --make-ckpt) becomes
# model.safetensors holding the parameters at the save, bit for bit, plus
# the folder's config.json. `lmc comm-bench` over tcp from torchrun-style
# variables; `lmc train` under a malformed launcher environment refused. Bad values fail cleanly.
# Usage: test_zero_cli.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/port_hold.sh"
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
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
"$(dirname "$LMC")/test_dist" --make-ckpt "$TMP/ck"; ok $? "test_dist --make-ckpt"
echo '{"model_type": "mlp"}' >"$TMP/ck/config.json"
"$LMC" convert-checkpoint "$TMP/ck" -o "$TMP/out" 2>"$TMP/err"; ok $? "convert-checkpoint: $(cat "$TMP/err")"
cmp -s "$TMP/ck/config.json" "$TMP/out/config.json"; ok $? "config.json copied"
# the tensors are written in arena order at the end of the file: 519 floats
tail -c 2076 "$TMP/out/model.safetensors" | cmp -s - "$TMP/ck/params.f32"; ok $? "exported parameters differ"
grep -q '"w0":{"dtype":"F32","shape":\[17,13\]' "$TMP/out/model.safetensors"; ok $? "w0's shape"
"$LMC" convert-checkpoint "$TMP/nothing" -o "$TMP/out2" 2>"$TMP/err"; [ $? = 1 ]; ok $? "missing checkpoint: exit 1"
grep -q "zero-manifest.json" "$TMP/err"; ok $? "missing manifest not named: $(cat "$TMP/err")"
# torchrun-style variables: two lmc comm-bench processes meet at
# MASTER_ADDR:MASTER_PORT over tcp (a free port from the OS, held for the
# ranks: port_hold.sh)
port_hold
RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT LMC_DIST_TIMEOUT=30 \
  "$LMC" comm-bench --sizes 1001,7 --iters 2 >"$TMP/r1" 2>&1 &
RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT LMC_DIST_TIMEOUT=30 \
  "$LMC" comm-bench --sizes 1001,7 --iters 2 >"$TMP/r0" 2>&1
rc0=$?; wait $!; rc1=$?
port_release
[ $rc0 = 0 ] && [ $rc1 = 0 ]; ok $? "torchrun-style comm-bench: $(cat "$TMP/r0" "$TMP/r1")"
grep -q "tcp communicator, 2 ranks" "$TMP/r0" && grep -q "comm-bench: ok" "$TMP/r0"; ok $? "tcp comm-bench: $(cat "$TMP/r0")"
# lmc train under a malformed launcher environment: a usage error naming
# the variable (training under launchers: test_train_zero.sh)
RANK=2 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 "$LMC" train --data "$TMP/none" -o "$TMP/o" 2>"$TMP/err"
[ $? = 2 ] && grep -q "RANK" "$TMP/err"; ok $? "lmc train under a bad torchrun environment: $(cat "$TMP/err")"
echo "test_zero_cli: $pass passed, $fail failed"
[ $fail = 0 ]
