#!/usr/bin/env bash
# run_finetune_cpu.sh — CPU fine-tuning cost in one run: LoRA, QLoRA (NF4
# and int4 bases quantized at load) and full fine-tuning, on the default
# model (models/kjv-llama: Llama, 8 layers, hidden 288, vocab 8192, tied) or,
# with MODEL=125m, a random Llama of the 125M bench shape (hidden 768, 12
# layers, 12 heads, MLP 3072, vocab 8192 with kjv-llama's tokenizer, F16 on
# disk, made by bench/make_r125m.py): `lmc finetune` on
# prompt/completion pairs built from data/kjv.txt ("Continue: <verse>" ->
# the next verse), packed into rows of SEQ tokens, BATCH rows per step,
# THREADS threads, fp32 compute. Modes (MODES), interleaved ROUNDS times:
# lora (r 16 alpha 32, all linears), qlora-nf4 / qlora-int4 (the same
# adapter over `--qlora nf4|int4`), full (--full). Per run: wall tokens/s
# (median over the steps after SKIP of the metrics file; tokens = BATCH x
# SEQ per step, padding included) and peak RSS (/usr/bin/time -v). Prints
# one line per run and the medians, with ratios to the first mode.
# Usage: bench/run_finetune_cpu.sh   env: LMC=build/lmc THREADS=2 ROUNDS=2 STEPS=6 SKIP=2 SEQ=128 BATCH=8
#        MODEL=models/kjv-llama|125m MODES="lora qlora-nf4 qlora-int4 full"
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
LMC=${LMC:-build/lmc}; THREADS=${THREADS:-2}; ROUNDS=${ROUNDS:-2}; STEPS=${STEPS:-6}; SKIP=${SKIP:-2}
SEQ=${SEQ:-128}; BATCH=${BATCH:-8}; MODEL=${MODEL:-models/kjv-llama}; WORK=${WORK:-/tmp/lmc-finetune-cpu}
MODES=${MODES:-lora qlora-nf4 qlora-int4 full}
mkdir -p "$WORK"
if [ "$MODEL" = 125m ]; then
  MODEL=$WORK/r125m
  [ -f "$MODEL/model.safetensors" ] || python3 bench/make_r125m.py models/kjv-llama "$MODEL" || exit 1
fi
echo "date $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null) model $MODEL threads $THREADS seq $SEQ batch $BATCH" \
     "cpu $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$WORK/sft.jsonl" <<'PY'
import json, re, sys
verses, cur = [], None
for line in open("data/kjv.txt"):
    m = re.match(r"^\s+(\d+) (.*)", line)
    if not line.strip():
        cur = None
    elif m:
        verses.append(m.group(2).strip())
        cur = len(verses) - 1
    elif cur is not None:
        verses[cur] += " " + line.strip()
with open(sys.argv[1], "w") as f:
    for a, b in zip(verses[:2000], verses[1:2001]):
        f.write(json.dumps({"prompt": "Continue: " + a + "\n", "completion": b}) + "\n")
PY
RES=$WORK/results.txt; : >"$RES"
for r in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    extra="--lora-r 16 --lora-alpha 32 --lora-targets all-linear"
    case $mode in
      full) extra="--full --lr 2e-5" ;;
      qlora-*) extra="$extra --qlora ${mode#qlora-}" ;;
    esac
    rm -rf "$WORK/out-$mode"
    /usr/bin/time -v "$LMC" finetune -m "$MODEL" --data "$WORK/sft.jsonl" -o "$WORK/out-$mode" --seq "$SEQ" \
      --batch "$BATCH" --pack --steps "$STEPS" --threads "$THREADS" $extra 2>"$WORK/err-$mode" >/dev/null \
      || { echo "run failed: $(tail -3 "$WORK/err-$mode")"; exit 1; }
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/err-$mode")
    tps=$(tail -n +$((SKIP + 1)) "$WORK/out-$mode.metrics.jsonl" | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/' | sort -g |
          awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
    train=$(sed -n 's/.*, \([0-9]*\) trainable of \([0-9]*\) parameters.*/\1 of \2/p' "$WORK/err-$mode")
    echo "round $r $mode: $tps tok/s, peak RSS $((rss / 1024)) MiB, trainable $train"
    echo "$mode $tps $rss" >>"$RES"
  done
done
med() { awk -v m="$1" -v c="$2" '$1 == m {print $c}' "$RES" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
first=${MODES%% *}; ft=$(med "$first" 2); fr=$(med "$first" 3)
for mode in $MODES; do
  t=$(med "$mode" 2); m=$(med "$mode" 3)
  echo "median $mode: $t tok/s, peak RSS $((${m%.*} / 1024)) MiB; vs $first: tok/s $(awk -v a="$t" -v b="$ft" \
       'BEGIN {printf "%.2f", a / b}')x, RSS $(awk -v a="$m" -v b="$fr" 'BEGIN {printf "%.2f", a / b}')x"
done
