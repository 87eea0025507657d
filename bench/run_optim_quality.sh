#!/usr/bin/env bash
# run_optim_quality.sh — validation-loss quality of the trainer's optimizers
# on the default model's recipe shape (Llama, 8 layers, hidden 288, 6 heads
# / 6 kv heads, SwiGLU 768, tied, 256 positions, vocabulary 8192: the
# models/kjv-llama tokenizer; KJV Genesis..Hebrews for training, James..
# Revelation for validation; cosine schedule, warmup, clip 1.0, AdamW
# β 0.9/0.95 wd 0.1 on the AdamW group) with a SMALL token budget that fits
# a loaded 2-core machine: STEPS steps of BATCH x 256 tokens (defaults 40 x
# 4 x 256 = 40,960 tokens, about 1% of the recipe's 3.81 M), the same data
# order and initialisation (seed) for every optimizer. Runs AdamW, Muon,
# GaLore, APOLLO, APOLLO-Mini and 8-bit AdamW one after another; each run's
# metrics.jsonl in WORK/<kind>/; one overlaid validation-loss SVG through
# `lmc plot` (the runs merged into one JSONL, one key per optimizer); a
# Markdown table (final validation loss and perplexity, ratio to AdamW,
# optimizer-state bytes from the start-up line, wall seconds) on stdout.
# Usage: bench/run_optim_quality.sh [OUT.svg]
# env: LMC=build/lmc THREADS=2 STEPS=40 BATCH=4 LR=1.5e-3 EVAL_EVERY=5 EVAL_BATCHES=4
#      RANK=72 GAP=20 KINDS="adamw muon galore apollo apollo-mini adamw8bit" WORK=/tmp/lmc-optim-quality
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
LMC=${LMC:-build/lmc}; THREADS=${THREADS:-2}; STEPS=${STEPS:-40}; BATCH=${BATCH:-4}; LR=${LR:-1.5e-3}
EVAL_EVERY=${EVAL_EVERY:-5}; EVAL_BATCHES=${EVAL_BATCHES:-4}; RANK=${RANK:-72}; GAP=${GAP:-20}
KINDS=${KINDS:-adamw muon galore apollo apollo-mini adamw8bit}
WORK=${WORK:-/tmp/lmc-optim-quality}; SVG=${1:-$WORK/val-loss.svg}
mkdir -p "$WORK"
if [ ! -f "$WORK/data/meta.json" ]; then
  "$LMC" prepare-data -m models/kjv-llama --text-file data/kjv.txt --val-from-line 71726 -o "$WORK/data" >&2 || exit 1
fi
declare -A EXTRA=(
  [adamw]="" [muon]="--optim muon" [adamw8bit]="--optim adamw8bit"
  [galore]="--optim galore --galore-rank $RANK --galore-update-gap $GAP"
  [apollo]="--optim apollo --apollo-rank $RANK --apollo-update-gap $GAP"
  [apollo-mini]="--optim apollo-mini --apollo-update-gap $GAP"
)
for k in $KINDS; do
  rm -rf "$WORK/$k"
  t0=$(date +%s.%N)
  "$LMC" train --data "$WORK/data" -o "$WORK/$k" --arch llama --layers 8 --hidden 288 --heads 6 --kv-heads 6 \
      --intermediate 768 --max-pos 256 --tie --vocab 8192 --batch "$BATCH" --seq 256 --steps "$STEPS" \
      --lr "$LR" --min-lr "$(python3 -c "print($LR/10)")" --warmup $((STEPS / 10)) --schedule cosine \
      --eval-every "$EVAL_EVERY" --eval-batches "$EVAL_BATCHES" --save-every 0 --threads "$THREADS" --seed 1234 \
      ${EXTRA[$k]} 2>"$WORK/$k.log" || { echo "FAIL: $k: $(tail -3 "$WORK/$k.log")" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$k $(python3 -c "print(round($t1-$t0,1))")" >>"$WORK/times"
  echo "$k done" >&2
done
python3 - "$WORK" "$KINDS" <<'PY'
import json, math, os, re, sys
work, kinds = sys.argv[1], sys.argv[2].split()
times = {}
for l in open(os.path.join(work, "times")):
    k, t = l.split(); times[k] = float(t)
runs = {}
for k in kinds:
    runs[k] = [json.loads(l) for l in open(os.path.join(work, k, "metrics.jsonl"))]
steps = sorted({r["step"] for k in kinds for r in runs[k] if "val_loss" in r})
with open(os.path.join(work, "merged.jsonl"), "w") as f:
    for s in steps:
        row = {"step": s}
        for k in kinds:
            for r in runs[k]:
                if r["step"] == s and "val_loss" in r: row["val_" + k.replace("-", "_")] = r["val_loss"]
        f.write(json.dumps(row) + "\n")
base = [r for r in runs["adamw"] if "val_loss" in r][-1]["val_loss"] if "adamw" in runs else None
print("| optimizer | final val loss | val perplexity | ppl / AdamW | first step at AdamW's final val loss | state bytes (per param) | wall s |")
print("|---|---|---|---|---|---|---|")
for k in kinds:
    vals = [r for r in runs[k] if "val_loss" in r]
    v = vals[-1]["val_loss"]
    reach = next((r["step"] for r in vals if base is not None and r["val_loss"] <= base), None)
    m = re.search(r"state (\d+) bytes \(([\d.]+) per parameter\)", open(os.path.join(work, k + ".log")).read())
    ratio = math.exp(v) / math.exp(base) if base is not None else float("nan")
    print(f"| {k} | {v:.4f} | {math.exp(v):.1f} | {ratio:.3f} | {reach if reach else '-'} | "
          f"{m.group(1) if m else '?'} ({m.group(2) if m else '?'}) | {times.get(k, 0):.0f} |")
PY
metrics=$(for k in $KINDS; do printf "val_%s," "${k//-/_}"; done)
"$LMC" plot "$WORK/merged.jsonl" -o "$SVG" --metric "${metrics%,}" >&2
