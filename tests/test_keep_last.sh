#!/usr/bin/env bash
# test_keep_last.sh — `--keep-last N` of lmc train and lmc finetune
# (train/checkpoint_dir.c lmc_ckpt_keep_last): 8 steps of a tiny llama with
# --save-every 2 --keep-last 2 leave exactly step_000006 and step_000008,
# whose model equals a run keeping every checkpoint bit for bit; a run
# stopped at step 5 (keeping 4 and 5) and resumed from the latest keeps the
# folder it resumed from (5) beside the newest two (6, 8) and writes the
# uninterrupted model bit for bit; ZeRO 1 over 2 ranks (tcp,
# tests/mp_launch.sh) keeps 6 and 8 and in OUT/zero only their shards and
# step manifests (the one-rank-per-step files of steps 2 and 4 gone), and a
# ZeRO run resumed from its latest kept checkpoint equals the uninterrupted
# one; `lmc finetune --full` (and ZeRO 1 over 2 ranks) keeps the newest two
# OUT.ckpt/step_N. --keep-last -1 is refused.
# Usage: test_keep_last.sh PATH/TO/lmc
set -u
MP_LEAKS=1 # LeakSanitizer stays on: no mpirun here (the ranks meet over tcp)
. "$(dirname "$0")/mp_launch.sh" "$1"
mp_data
A="--data $TMP/data --arch llama --layers 2 --hidden 32 --heads 4 --kv-heads 2 --intermediate 48 --seq 16 --batch 2
   --steps 8 --lr 3e-3 --warmup 2 --clip 0.5 --threads 1 --save-every 2 --eval-every 4 --eval-batches 1"
R="--data $TMP/data --threads 1 --resume latest --save-every 2 --eval-every 4 --eval-batches 1 --keep-last 2"
steps() { (cd "$TMP/$1" && ls -d step_* 2>/dev/null | tr '\n' ' '); }
same() { cmp -s "$TMP/$1/step_000008/model.safetensors" "$TMP/$2/step_000008/model.safetensors" &&
         cmp -s "$TMP/$1/step_000008/optimizer.safetensors" "$TMP/$2/step_000008/optimizer.safetensors"; }
# ---- one process
"$LMC" train $A -o "$TMP/all" 2>"$TMP/err"; ok $? "every checkpoint kept: $(tail -2 "$TMP/err")"
[ "$(steps all)" = "step_000002 step_000004 step_000006 step_000008 " ]; ok $? "without --keep-last: $(steps all)"
"$LMC" train $A --keep-last 2 -o "$TMP/k2" 2>"$TMP/err"; ok $? "--keep-last 2: $(tail -2 "$TMP/err")"
[ "$(steps k2)" = "step_000006 step_000008 " ]; ok $? "--keep-last 2 leaves: $(steps k2)"
same all k2; ok $? "--keep-last 2 writes the same step-8 checkpoint"
"$LMC" train $A --keep-last 2 --stop-at 5 -o "$TMP/rs" 2>"$TMP/err"; ok $? "stop at 5: $(tail -2 "$TMP/err")"
[ "$(steps rs)" = "step_000004 step_000005 " ]; ok $? "stopped at 5 leaves: $(steps rs)"
"$LMC" train $R -o "$TMP/rs" 2>"$TMP/err"; ok $? "resume latest: $(tail -2 "$TMP/err")"
[ "$(steps rs)" = "step_000005 step_000006 step_000008 " ]; ok $? "resumed from 5 keeps it and the newest two: $(steps rs)"
same all rs; ok $? "resumed with --keep-last equals the uninterrupted run bit for bit"
# ---- ZeRO 1 over two ranks: the shards of removed steps go too
run() { local out=$1; shift; mp_ranks 2 "$out" train "$@" -o "$TMP/$out"; }
zfiles() { (cd "$TMP/$1/zero" && ls | tr '\n' ' '); }
run zall $A --zero 1; ok $? "zero 1 keeping all: $(tail -n 2 "$TMP"/zall.r*)"
run zk $A --zero 1 --keep-last 2; ok $? "zero 1 --keep-last 2: $(tail -n 2 "$TMP"/zk.r*)"
[ "$(steps zk)" = "step_000006 step_000008 " ]; ok $? "zero 1 --keep-last 2 leaves: $(steps zk)"
[ -n "$(zfiles zk)" ] && ! zfiles zk | grep -q "step0000000[24]" && zfiles zk | grep -q "zero-step00000006-rank00001" &&
  zfiles zk | grep -q "zero-manifest-step00000008"; ok $? "zero 1 --keep-last 2: OUT/zero holds $(zfiles zk)"
[ "$(zfiles zall | tr ' ' '\n' | grep -c 'zero-step.*rank')" = 8 ]; ok $? "zero 1 keeping all: $(zfiles zall)"
same zall zk; ok $? "zero 1 --keep-last 2 writes the same step-8 checkpoint"
run zrs $A --zero 1 --keep-last 1 --stop-at 4; ok $? "zero 1 stop at 4: $(tail -n 2 "$TMP"/zrs.r*)"
[ "$(steps zrs)" = "step_000004 " ] && ! zfiles zrs | grep -q "step00000002"; ok $? "zero 1 --keep-last 1 at 4: $(steps zrs) / $(zfiles zrs)"
run zrs $R --zero 1; ok $? "zero 1 resume latest: $(tail -n 2 "$TMP"/zrs.r*)"
[ "$(steps zrs)" = "step_000004 step_000006 step_000008 " ]; ok $? "zero 1 resumed from 4 keeps: $(steps zrs)"
same zall zrs; ok $? "zero 1 resumed with --keep-last equals the uninterrupted run bit for bit"
# ---- lmc finetune --full: OUT.ckpt/step_N
for i in $(seq 1 23); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want $i\"}"
done >"$TMP/d.jsonl"
F="-m tests/fixtures/llama-tiny --data $TMP/d.jsonl --seq 32 --batch 2 --lr 1e-3 --threads 1 --warmup 1 --steps 6 --full
   --save-every 2 --keep-last 2"
"$LMC" finetune $F -o "$TMP/ft" 2>"$TMP/err"; ok $? "finetune --keep-last 2: $(tail -2 "$TMP/err")"
[ "$(steps ft.ckpt)" = "step_000004 step_000006 " ]; ok $? "finetune --keep-last 2 leaves: $(steps ft.ckpt)"
mp_ranks 2 fz finetune $F --zero 1 -o "$TMP/fz"; ok $? "finetune zero 1 --keep-last 2: $(tail -n 2 "$TMP"/fz.r*)"
[ "$(steps fz.ckpt)" = "step_000004 step_000006 " ] && ! zfiles fz.ckpt | grep -q "step0000000[2]"
ok $? "finetune zero 1 --keep-last 2 leaves: $(steps fz.ckpt) / $(zfiles fz.ckpt)"
# ---- refused
"$LMC" train $A --keep-last -1 -o "$TMP/bad" 2>"$TMP/err"; [ $? = 2 ]; ok $? "--keep-last -1: $(cat "$TMP/err")"
echo "test_keep_last: $pass passed, $fail failed"
[ $fail = 0 ]
