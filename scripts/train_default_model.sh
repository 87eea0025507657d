#!/usr/bin/env bash
# train_default_model.sh — remakes the default model (models/kjv-llama) from
# scratch, as the README's "The default model" section describes: a byte-level
# BPE tokenizer trained on Genesis..Hebrews of data/kjv.txt, token shards with
# James..Revelation held out for validation, two cosine runs of `lmc train`,
# conversion to bf16, the generation settings, the validation perplexity, the
# loss curve and a sample.
# Usage: scripts/train_default_model.sh OUT_DIR [--device cpu|cuda]
# env: LMC (default build/lmc), STEPS1 (470), STEPS2 (460), THREADS (nproc),
#      VOCAB (8192). The finished model is OUT_DIR/kjv-llama; copy it over
#      models/kjv-llama to replace the default one.
set -eu -o pipefail
OUT=${1:?usage: scripts/train_default_model.sh OUT_DIR [--device cpu|cuda]}
shift
DEVICE=cpu
if [ "${1:-}" = "--device" ]; then DEVICE=${2:?--device needs cpu or cuda}; fi
cd "$(dirname "$0")/.."
LMC=${LMC:-build/lmc}
STEPS1=${STEPS1:-470}; STEPS2=${STEPS2:-460}; THREADS=${THREADS:-$(nproc)}; VOCAB=${VOCAB:-8192}
SPLIT=71726   # the first line of James: the validation books start here
mkdir -p "$OUT"
head -n $((SPLIT - 1)) data/kjv.txt >"$OUT/kjv-train.txt"
tail -n +$SPLIT data/kjv.txt >"$OUT/kjv-val.txt"
"$LMC" train-tokenizer --text-file "$OUT/kjv-train.txt" --vocab "$VOCAB" --style llama3 -o "$OUT/tok"
"$LMC" prepare-data -m "$OUT/tok" --text-file data/kjv.txt --val-from-line $SPLIT -o "$OUT/data"
common=(--data "$OUT/data" --batch 16 --seq 256 --schedule cosine --eval-every 50 --eval-batches 8
        --save-every 100 --tokenizer "$OUT/tok" --threads "$THREADS" --device "$DEVICE")
"$LMC" train "${common[@]}" -o "$OUT/run1" --arch llama --layers 8 --hidden 288 --heads 6 \
    --kv-heads 6 --intermediate 768 --max-pos 256 --tie --steps "$STEPS1" --lr 1.5e-3 \
    --min-lr 1.5e-4 --warmup $((STEPS1 < 30 ? 0 : 30))
last1=$(ls -d "$OUT"/run1/step_* | sort | tail -1)
"$LMC" train "${common[@]}" -o "$OUT/run2" -m "$last1" --steps "$STEPS2" --lr 1e-3 --min-lr 1e-4 \
    --warmup $((STEPS2 < 20 ? 0 : 20)) --seed 2
last2=$(ls -d "$OUT"/run2/step_* | sort | tail -1)
rm -rf "$OUT/kjv-llama"
"$LMC" convert -m "$last2" -o "$OUT/kjv-llama" --dtype bf16
python3 - "$OUT/kjv-llama" <<'PY'
import json, os, sys
d = sys.argv[1]
tc = json.load(open(os.path.join(d, "tokenizer_config.json")))
tc["model_max_length"] = 256
json.dump(tc, open(os.path.join(d, "tokenizer_config.json"), "w"), indent=2)
cfg = json.load(open(os.path.join(d, "config.json")))
gen = {"eos_token_id": cfg.get("eos_token_id"), "do_sample": True, "temperature": 0.8,
       "top_p": 0.95, "max_new_tokens": 64}
json.dump(gen, open(os.path.join(d, "generation_config.json"), "w"), indent=2)
PY
cat "$OUT"/run1/metrics.jsonl "$OUT"/run2/metrics.jsonl >"$OUT/metrics.jsonl"
"$LMC" plot "$OUT/metrics.jsonl" -o "$OUT/loss.svg" --metric loss,val_loss
echo "validation (James..Revelation):"
"$LMC" eval -m "$OUT/kjv-llama" --text-file "$OUT/kjv-val.txt" --json
echo "sample:"
"$LMC" generate -m "$OUT/kjv-llama" -p "And God said" -n 48 --seed 1
echo
du -b "$OUT/kjv-llama/model.safetensors"
