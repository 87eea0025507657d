#!/usr/bin/env bash
# train_chat_model.sh — remakes the default chat model (models/kjv-llama-chat)
# so that it recalls verses: the recall set of scripts/make_kjv_recall.py
# (every verse of the training books quoted by reference and continued, plus
# a sample of the locate / after / followup tasks; four books held out), full
# fine-tuning of models/kjv-llama (with the ChatML tokens and template of
# make_kjv_instruct.py) by `lmc finetune --full`, conversion to bf16, and the
# greedy recall table of scripts/eval_kjv_recall.py for the new model and the
# shipped one (held-in and held-out references; exact match and char acc).
#
# Usage: scripts/train_chat_model.sh OUT_DIR [--device cpu|cuda]
# --device cuda: the whole set; a 15-step calibration run measures tokens/s
#   and the main run gets the steps that fill TRAIN_SECONDS (default 230),
#   so that everything ends within about 6 minutes on one H100.
# --device cpu (default): a smoke test — the first 60 verses of Genesis, STEPS
#   (default 12) steps of batch 8, a 30-question evaluation.
# env: LMC (build/lmc), TRAIN_SECONDS, STEPS (fixes the steps, no calibration),
#      BATCH (64 cuda / 8 cpu), LR (1e-3), MIN_LR (2e-5), THREADS (nproc),
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
cd "$(dirname "$0")/.."
LMC=${LMC:-build/lmc}
THREADS=${THREADS:-$(nproc)}
LR=${LR:-1e-3}; MIN_LR=${MIN_LR:-2e-5}; SEQ=256
t_start=$(date +%s)
mkdir -p "$OUT"
if [ "$DEVICE" = cuda ]; then
  BATCH=${BATCH:-64}; MAX_TOKENS=${MAX_TOKENS:-160}; TRAIN_SECONDS=${TRAIN_SECONDS:-230}
  DATA_ARGS=(); WORKERS=32
else
  BATCH=${BATCH:-8}; MAX_TOKENS=${MAX_TOKENS:-64}; STEPS=${STEPS:-12}
  DATA_ARGS=(--max-verses 60 --eval-in 10 --eval-out 5); WORKERS=4
fi
python3 scripts/make_kjv_recall.py --kjv data/kjv.txt --out-dir "$OUT/data" "${DATA_ARGS[@]}" \
  --base models/kjv-llama --chatml-base "$OUT/base-chatml"
ft=(finetune -m "$OUT/base-chatml" --data "$OUT/data/train.jsonl" --full --seq $SEQ --pack --batch "$BATCH"
    --schedule cosine --lr "$LR" --min-lr "$MIN_LR" --clip 1 --threads "$THREADS" --device "$DEVICE")
if [ -z "${STEPS:-}" ]; then # calibration: tokens/s of steps 6..15 (the first ones warm up)
  rm -rf "$OUT/calib"
  "$LMC" "${ft[@]}" -o "$OUT/calib" --steps 15
  STEPS=$(python3 - "$OUT/calib.metrics.jsonl" "$TRAIN_SECONDS" "$BATCH" $SEQ <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tps = statistics.median(r["tokens_per_s"] for r in rows[5:])
budget, B, T = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(max(50, int(budget * tps / (B * T))))
print("calibration: %.0f tokens/s -> %d steps of %d x %d in %.0f s" % (tps, int(budget * tps / (B * T)), B, T, budget),
      file=sys.stderr)
PY
)
  rm -rf "$OUT/calib" "$OUT/calib.metrics.jsonl"
fi
WARMUP=$((STEPS / 20 > 100 ? 100 : STEPS / 20))
rm -rf "$OUT/ft" "$OUT/kjv-llama-chat"
t_train=$(date +%s)
"$LMC" "${ft[@]}" -o "$OUT/ft" --steps "$STEPS" --warmup "$WARMUP"
t_done=$(date +%s)
"$LMC" convert -m "$OUT/ft" -o "$OUT/kjv-llama-chat" --dtype bf16
cp "$OUT/base-chatml/generation_config.json" "$OUT/kjv-llama-chat/"
rm -rf "$OUT/ft"
"$LMC" plot "$OUT/ft.metrics.jsonl" -o "$OUT/loss.svg" --metric loss || true
python3 scripts/eval_kjv_recall.py --lmc "$LMC" --eval "$OUT/data/eval.jsonl" --device "$DEVICE" \
  --model "$OUT/kjv-llama-chat" $( [ -f models/kjv-llama-chat/config.json ] && echo --model models/kjv-llama-chat ) --max-tokens "$MAX_TOKENS" \
  --workers $WORKERS --json "$OUT/recall.json" --show 2 | tee "$OUT/recall.md"
t_end=$(date +%s)
echo "train_chat_model: $STEPS steps of $BATCH x $SEQ on $DEVICE, training $((t_done - t_train)) s, all $((t_end - t_start)) s"
du -b "$OUT/kjv-llama-chat/model.safetensors"
