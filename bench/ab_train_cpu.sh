#!/usr/bin/env bash
# ab_train_cpu.sh — lmc-only A/B of CPU seconds per training step on the
# CPU bench's shape and flags (bench/run_train_cpu.sh's `lmc train`
# command, fp32, 2 threads), for a loaded machine: ROUNDS rounds, each
# binary once per round (interleaved), STEPS steps; prints each step's
# step_cpu_ms from metrics.jsonl after the first two steps, their median,
# the median wall step_ms and the last loss.
# Usage: bench/ab_train_cpu.sh ROUNDS STEPS label=path/to/lmc ...
# env: DATA (token shards; default /tmp/lmc-train-cpu/data, written by
#      run_train_cpu.sh), WORK=/tmp/lmc-ab-train
set -u -o pipefail
R=$1 S=$2; shift 2
DATA=${DATA:-/tmp/lmc-train-cpu/data} WORK=${WORK:-/tmp/lmc-ab-train}
mkdir -p "$WORK"
for r in $(seq 1 "$R"); do
  for lb in "$@"; do
    l=${lb%%=*} b=${lb#*=} d=$WORK/run-${lb%%=*}
    rm -rf "$d"
    "$b" train --data "$DATA" -o "$d" --arch llama --layers 8 --hidden 288 --heads 6 --kv-heads 6 \
      --intermediate 768 --max-pos 256 --tie --batch 16 --seq 256 --steps "$S" --lr 1e-3 --warmup 2 \
      --schedule cosine --eval-every 0 --save-every 0 --threads 2 --dtype fp32 >/dev/null 2>&1 ||
      { echo "$l failed"; exit 1; }
    python3 - "$d/metrics.jsonl" "$r" "$l" <<'PY'
import json, sys
m = [json.loads(x) for x in open(sys.argv[1]) if 'step_cpu_ms' in x][2:]
c = sorted(x['step_cpu_ms'] for x in m); w = sorted(x['step_ms'] for x in m)
print('round', sys.argv[2], sys.argv[3], 'cpu_ms/step', ' '.join('%.0f' % x['step_cpu_ms'] for x in m),
      'median %.0f' % c[len(c) // 2], 'wall median %.0f' % w[len(w) // 2], 'loss', m[-1]['loss'])
PY
  done
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
