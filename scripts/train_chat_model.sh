#!/usr/bin/env bash
# train_chat_model.sh — remakes the default chat model (models/kjv-llama-chat)
# so that it recalls verses: the recall set of scripts/make_kjv_recall.py
# (every verse of the training books quoted by reference, three times on
# cuda, and continued, plus a sample of the locate / after / followup tasks;
# four books held out), full
# fine-tuning of models/kjv-llama (with the ChatML tokens and template of
# make_kjv_instruct.py) by `lmc finetune --full`, conversion to bf16, and the
# greedy recall table of scripts/eval_kjv_recall.py for the new model and the
# shipped one (held-in and held-out references; exact match and char acc).
#
# Usage: scripts/train_chat_model.sh OUT_DIR [--device cpu|cuda]
# --device cuda: the whole set; two 15-step calibration runs time packed rows
#   of 256 tokens (batch BATCH) and one example per row of 128 (PAD_BATCH),
#   and the layout that gets through an epoch sooner trains for the steps
#   that fill TRAIN_SECONDS (default 230): about 6 minutes in all on one H100.
# --device cpu (default): a smoke test — the first 60 verses of Genesis, STEPS
#   (default 12) steps of batch 8, a 30-question evaluation.
# env: LMC (build/lmc), TRAIN_SECONDS, STEPS (fixes the steps; 0: calibrate, as on cuda),
#      BATCH (32 cuda / 8 cpu), PAD_BATCH (128 / 16), LR (1e-3), MIN_LR (2e-5), THREADS (nproc),
#      MAX_TOKENS (answer cap of the evaluation: 160 cuda / 64 cpu).
# The finished model is OUT_DIR/kjv-llama-chat (copy it over
# models/kjv-llama-chat); OUT_DIR/recall.md holds the table, OUT_DIR/recall.json
# every answer, OUT_DIR/ft.metrics.jsonl and loss.svg the training curve.
set -eu -o pipefail
OUT=${1:?usage: scripts/train_chat_model.sh OUT_DIR [--device cpu|cuda]}
shift
DEVICE=cpu
if [ "${1:-}" = "--device" ]; then DEVICE=${2:?--device needs cpu or cuda}; fi
case $DEVICE in cpu|cuda) ;; *) echo "train_chat_model.sh: --device cpu or cuda" >&2; exit 2;; esac
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd) # the script runs from the repository root
cd "$(dirname "$0")/.."
LMC=${LMC:-build/lmc}
THREADS=${THREADS:-$(nproc)}
LR=${LR:-1e-3}; MIN_LR=${MIN_LR:-2e-5}; SEQ=256
t_start=$(date +%s)
if [ "$DEVICE" = cuda ]; then
  BATCH=${BATCH:-32}; PAD_BATCH=${PAD_BATCH:-128}; MAX_TOKENS=${MAX_TOKENS:-160}; TRAIN_SECONDS=${TRAIN_SECONDS:-230}
  DATA_ARGS=(--quote-copies 3); WORKERS=32
else
  BATCH=${BATCH:-8}; PAD_BATCH=${PAD_BATCH:-16}; MAX_TOKENS=${MAX_TOKENS:-64}; STEPS=${STEPS:-12}
  TRAIN_SECONDS=${TRAIN_SECONDS:-60}
  DATA_ARGS=(--max-verses 60 --eval-in 10 --eval-out 5); WORKERS=4
fi
python3 scripts/make_kjv_recall.py --kjv data/kjv.txt --out-dir "$OUT/data" "${DATA_ARGS[@]}" \
  --base models/kjv-llama --chatml-base "$OUT/base-chatml"
ft=(finetune -m "$OUT/base-chatml" --data "$OUT/data/train.jsonl" --full --schedule cosine --lr "$LR"
    --min-lr "$MIN_LR" --clip 1 --threads "$THREADS" --device "$DEVICE")
# packed rows of 256 tokens (attention runs once per packed example), or one
# example per row of 128 tokens (one attention per batch, padding computed;
# the 0.6% of examples over 128 tokens are cut)
LAYOUT=(--seq $SEQ --pack --batch "$BATCH")
if [ "${STEPS:-0}" = 0 ]; then
  # calibration: each layout's steps per epoch (the start-up line of --epochs 1000) and seconds
  # per step (median of steps 6..15), stopped at step 15 without output; the
  # layout that goes through an epoch sooner trains for TRAIN_SECONDS
  rm -f "$OUT/calib.txt"
  for lay in packed padded; do
    if [ $lay = packed ]; then L=(--seq $SEQ --pack --batch "$BATCH"); else L=(--seq 128 --batch "$PAD_BATCH"); fi
    rm -f "$OUT/calib.metrics.jsonl"
    "$LMC" "${ft[@]}" "${L[@]}" -o "$OUT/calib" --epochs 1000 --stop-at 15 2>"$OUT/calib-$lay.log" ||
      { tail -5 "$OUT/calib-$lay.log" >&2; exit 1; }
    python3 - "$OUT/calib.metrics.jsonl" "$OUT/calib-$lay.log" $lay "${L[*]}" >>"$OUT/calib.txt" <<'PY'
import json, re, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
per_slot = statistics.median(1.0 / r["tokens_per_s"] for r in rows[5:])  # seconds per token slot
m = re.search(r"batch (\d+) x (\d+) x 1 accum.*?, (\d+) steps, device", open(sys.argv[2]).read())
B, T, epoch_steps = int(m.group(1)), int(m.group(2)), max(1, round(int(m.group(3)) / 1000))  # --epochs 1000
print(sys.argv[3], per_slot * B * T, epoch_steps, sys.argv[4])
PY
  done
  rm -f "$OUT/calib.metrics.jsonl"
  read -r lay STEPS LAYOUT_S < <(python3 - "$OUT/calib.txt" "$TRAIN_SECONDS" <<'PY'
import sys
budget = float(sys.argv[2])
rows = [l.split(None, 3) for l in open(sys.argv[1]) if l.strip()]
for name, sec, n, _ in rows:
    print("calibration %s: %.1f ms/step, %d steps/epoch, %.1f s/epoch" % (name, 1e3 * float(sec), int(n),
          float(sec) * int(n)), file=sys.stderr)
name, sec, n, lay = min(rows, key=lambda r: float(r[1]) * int(r[2]))
steps = max(50, int(budget / float(sec)))
print("calibration: %s, %d steps in %.0f s = %.1f epochs" % (name, steps, budget, steps / int(n)), file=sys.stderr)
print(name, steps, lay.strip())
PY
)
  [ -n "${LAYOUT_S:-}" ] || { echo "train_chat_model.sh: calibration failed" >&2; exit 1; }
  read -r -a LAYOUT <<<"$LAYOUT_S"
  echo "training layout $lay: ${LAYOUT[*]}, $STEPS steps"
fi
WARMUP=$((STEPS / 20 > 100 ? 100 : STEPS / 20))
rm -rf "$OUT/ft" "$OUT/kjv-llama-chat"
t_train=$(date +%s)
"$LMC" "${ft[@]}" "${LAYOUT[@]}" -o "$OUT/ft" --steps "$STEPS" --warmup "$WARMUP"
t_done=$(date +%s)
"$LMC" convert -m "$OUT/ft" -o "$OUT/kjv-llama-chat" --dtype bf16
cp "$OUT/base-chatml/generation_config.json" "$OUT/kjv-llama-chat/"
rm -rf "$OUT/ft"
"$LMC" plot "$OUT/ft.metrics.jsonl" -o "$OUT/loss.svg" --metric loss || true
python3 scripts/eval_kjv_recall.py --lmc "$LMC" --eval "$OUT/data/eval.jsonl" --device "$DEVICE" \
  --model "$OUT/kjv-llama-chat" $( [ -f models/kjv-llama-chat/config.json ] && echo --model models/kjv-llama-chat ) --max-tokens "$MAX_TOKENS" \
  --workers $WORKERS --json "$OUT/recall.json" --show 2 | tee "$OUT/recall.md"
t_end=$(date +%s)
echo "train_chat_model: $STEPS steps of ${LAYOUT[*]} on $DEVICE, training $((t_done - t_train)) s, all $((t_end - t_start)) s"
du -b "$OUT/kjv-llama-chat/model.safetensors"
