#!/usr/bin/env bash
# bench_train_ep.sh — `lmc train --ep 2` against one process on the same
# cores: a random Mixtral-shape model from scratch (--arch mixtral, 8
# experts top-2) on a small corpus, the same global batch (one process
# --batch 2B with --threads 2; EP 2: two ranks of --batch B with --threads
# 1 each, joined over tcp), the two alternated round by round. Reports the
# median training tokens/s over each run's steps after the first (from
# metrics.jsonl) and each process's peak resident memory (GNU time's
# maximum RSS), with the load average before and after.
#   bench/bench_train_ep.sh PATH/TO/lmc [ROUNDS] [STEPS]
set -eu
LMC="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
ROUNDS=${2:-2}
STEPS=${3:-6}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
for i in $(seq 1 3000); do
  echo "line $i: the quick brown fox $((i % 17)) jumps over the lazy dog $((i % 13)) and runs $((i % 7)) miles"
done >"$TMP/c.txt"
"$LMC" train-tokenizer --text-file "$TMP/c.txt" --vocab 2000 --style llama3 -o "$TMP/tok" 2>/dev/null
"$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/c.txt" --docs line --val-fraction 0.01 -o "$TMP/data" 2>/dev/null
B=4
A="--data $TMP/data --arch mixtral --layers 4 --hidden 256 --heads 8 --kv-heads 2 --intermediate 512 --seq 64
   --steps $STEPS --lr 1e-3 --warmup 1 --eval-every 0 --save-every 100000"
med() { # OUT: median tokens_per_s of steps 2..
  python3 -c "import json,statistics,sys; r=[json.loads(l) for l in open(sys.argv[1])][1:]; print('%.0f' % statistics.median(x['tokens_per_s'] for x in r))" "$1"
}
rss() { sed -n 's/^MAXRSS \([0-9]*\)/\1/p' "$1" | tail -1; }
trss() { sed -n 's/.*peak resident \([0-9]*\) MiB training.*/\1/p' "$1" | tail -1; }
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| round | run | tokens/s (median of steps 2-$STEPS) | peak RSS per process, MiB (whole run) | peak RSS per process before the checkpoint, MiB |"
echo "|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  /usr/bin/time -f "MAXRSS %M" "$LMC" train $A --batch $((2 * B)) --threads 2 -o "$TMP/one$r" 2>"$TMP/one$r.err"
  echo "| $r | one process, batch $((2 * B)), 2 threads | $(med "$TMP/one$r/metrics.jsonl") | $(( $(rss "$TMP/one$r.err") / 1024 )) | $(trss "$TMP/one$r.err") |"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port /usr/bin/time -f "MAXRSS %M" \
    "$LMC" train $A --batch $B --threads 1 --ep 2 -o "$TMP/ep$r" 2>"$TMP/ep$r.r1" &
  RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port /usr/bin/time -f "MAXRSS %M" \
    "$LMC" train $A --batch $B --threads 1 --ep 2 -o "$TMP/ep$r" 2>"$TMP/ep$r.r0"
  wait
  echo "| $r | --ep 2, 2 ranks x batch $B, 1 thread each | $(med "$TMP/ep$r/metrics.jsonl") | $(( $(rss "$TMP/ep$r.r0") / 1024 )) / $(( $(rss "$TMP/ep$r.r1") / 1024 )) | $(trss "$TMP/ep$r.r0") / $(trss "$TMP/ep$r.r1") |"
done
grep "parameters" "$TMP/one1.err" | head -1
grep "expert parallel" "$TMP/ep1.r0" | head -1
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
