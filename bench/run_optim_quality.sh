#!/usr/bin/env bash
# run_optim_quality.sh — validation-loss quality of the trainer's optimizers on
# the default model's recipe (README "The default model"): Llama, 8 layers,
# hidden 288, 6 heads / 6 kv heads, SwiGLU 768, tied, 256 positions,
# vocabulary 8192 (the models/kjv-llama tokenizer); KJV Genesis..Hebrews for
# training, James..Revelation for validation; one cosine run (lr 1.5e-3 ->
# 1.5e-4, warmup), clip 1.0, AdamW β 0.9/0.95 wd 0.1 on the AdamW group; the
# same initialisation and data order (seed) for every optimizer.
# The defaults ARE the full recipe's token budget: 930 steps of 16 x 256 =
# 3.81 M tokens (hours per optimizer on a small CPU); a loaded 2-core machine
# runs a shorter one, e.g. STEPS=200 BATCH=4 WARMUP=6 EVAL_EVERY=25 GAP=50.
# Runs AdamW, Muon, GaLore, APOLLO, APOLLO-Mini and 8-bit AdamW (JOBS at a
# time, each with THREADS threads); each run's metrics.jsonl and log in
# WORK/<kind>/ and WORK/<kind>.log; one overlaid validation-loss SVG drawn by
# bench/plot_curves.py; on stdout a Markdown table (final validation loss and
# perplexity, ratio to AdamW, the tokens at which AdamW's final validation
# loss is first reached, optimizer-state bytes from the start-up line, median
# training tokens/s of the steps, peak RSS, wall seconds) and the validation
# loss of every evaluation.
# Usage: bench/run_optim_quality.sh [OUT.svg]
# env: LMC=build/lmc THREADS=2 JOBS=1 STEPS=930 BATCH=16 LR=1.5e-3 WARMUP=30 EVAL_EVERY=50
#      EVAL_BATCHES=8 OPT_RANK=72 GAP=200 SEED=1234 KINDS="adamw muon galore apollo apollo-mini adamw8bit"
#      (also adamw8bit-emb8: 8-bit AdamW with the embedding's moments in 8 bits too;
#      any other name NAME runs with the flags in EXTRA_NAME, '-' written '_')
#      TRAIN_ARGS (extra lmc train flags, e.g. "--device cuda --dtype bf16")
#      WORK=/tmp/lmc-optim-quality KEEP_CKPT=0 (1 keeps each run's final checkpoint)
#      SKIP_TRAIN=1: no training, only the table and the SVG from the runs already in WORK
#      (e.g. after running subsets of KINDS in several invocations with the same settings);
#      UPTO=N reports only the evaluations at steps <= N (runs cut short: their common part)
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
LMC=${LMC:-build/lmc}; THREADS=${THREADS:-2}; JOBS=${JOBS:-1}; STEPS=${STEPS:-930}; BATCH=${BATCH:-16}
LR=${LR:-1.5e-3}; WARMUP=${WARMUP:-30}; EVAL_EVERY=${EVAL_EVERY:-50}; EVAL_BATCHES=${EVAL_BATCHES:-8}
TRAIN_ARGS=${TRAIN_ARGS:-} # e.g. "--device cuda --dtype bf16" (bench/gpu_optim_quality.sh)
RANK_LR=${OPT_RANK:-72}; GAP=${GAP:-200}; SEED=${SEED:-1234}; KEEP_CKPT=${KEEP_CKPT:-0}
KINDS=${KINDS:-adamw muon galore apollo apollo-mini adamw8bit}
WORK=${WORK:-/tmp/lmc-optim-quality}; SVG=${1:-$WORK/val-loss.svg}
SEQ=256
[ -x "$LMC" ] || { echo "no $LMC (build lmc_cli first)" >&2; exit 1; }
mkdir -p "$WORK"
if [ ! -f "$WORK/data/meta.json" ]; then
  "$LMC" prepare-data -m models/kjv-llama --text-file data/kjv.txt --val-from-line 71726 -o "$WORK/data" >&2 || exit 1
fi
declare -A EXTRA=(
  [adamw]="" [muon]="--optim muon" [adamw8bit]="--optim adamw8bit"
  [adamw8bit-emb8]="--optim adamw8bit --adamw8bit-embed-8bit 1"
  [galore]="--optim galore --galore-rank $RANK_LR --galore-update-gap $GAP"
  [apollo]="--optim apollo --apollo-rank $RANK_LR --apollo-update-gap $GAP"
  [apollo-mini]="--optim apollo-mini --apollo-update-gap $GAP"
)
# a kind not listed above takes its flags from EXTRA_<kind, '-' as '_'>, e.g.
# KINDS="adamw galore-s1" EXTRA_galore_s1="--optim galore --galore-rank 72 --galore-scale 1"
for k in $KINDS; do
  v="EXTRA_${k//-/_}"
  if [ -n "${!v:-}" ]; then EXTRA[$k]=${!v}
  elif [ -z "${EXTRA[$k]+set}" ]; then echo "unknown kind $k (no EXTRA_${k//-/_})" >&2; exit 2; fi
done
MINLR=$(python3 -c "print($LR/10)")
export OPENBLAS_NUM_THREADS=1 # the CPU backend sets it too; keeps JOBS x THREADS the whole thread count
run_one() { # KIND: trains, then writes WORK/KIND.wall and WORK/KIND.rss (peak RSS, KiB)
  local k=$1 t0 t1 rc
  rm -rf "${WORK:?}/$k"
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  local timer=(/usr/bin/time -f "%M" -o "$WORK/$k.rss")
  [ -x /usr/bin/time ] || { timer=(); echo 0 >"$WORK/$k.rss"; }
  "${timer[@]}" "$LMC" train --data "$WORK/data" -o "$WORK/$k" --arch llama --layers 8 \
      --hidden 288 --heads 6 --kv-heads 6 --intermediate 768 --max-pos 256 --tie --vocab 8192 --batch "$BATCH" \
      --seq $SEQ --steps "$STEPS" --lr "$LR" --min-lr "$MINLR" --warmup "$WARMUP" --schedule cosine \
      --eval-every "$EVAL_EVERY" --eval-batches "$EVAL_BATCHES" --save-every 0 --threads "$THREADS" --seed "$SEED" \
      ${EXTRA[$k]} $TRAIN_ARGS 2>"$WORK/$k.log"
  rc=$?
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f\n", b - a}' >"$WORK/$k.wall"
  [ "$KEEP_CKPT" = 1 ] || rm -rf "$WORK/$k"/step_*
  if [ $rc != 0 ]; then echo "FAIL: $k: $(tail -3 "$WORK/$k.log")" >&2; return 1; fi
  echo "$k done ($(cat "$WORK/$k.wall") s)" >&2
}
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  echo "start $(date -u +%FT%TZ); load: $(uptime | sed 's/.*load average: //')" >&2
  fail=0
  for k in $KINDS; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || fail=1; done
    run_one "$k" &
  done
  while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || fail=1; done
  echo "end $(date -u +%FT%TZ); load: $(uptime | sed 's/.*load average: //')" >&2
  [ $fail = 0 ] || exit 1
fi
python3 - "$WORK" "$KINDS" "$((BATCH * SEQ))" "${UPTO:-0}" "$STEPS" <<'PY'
import json, math, os, re, statistics, sys
work, kinds, tps, upto, nsteps = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
runs = {k: [json.loads(l) for l in open(os.path.join(work, k, "metrics.jsonl")) if l.strip()] for k in kinds}
if upto > 0:
    runs = {k: [r for r in v if r["step"] <= upto] for k, v in runs.items()}
def num(path, default):
    try:
        return float(open(path).read().split()[-1])
    except (OSError, ValueError, IndexError):
        return default
vals = {k: [r for r in runs[k] if "val_loss" in r] for k in kinds}
base = vals["adamw"][-1]["val_loss"] if "adamw" in kinds else None
base_steps = vals["adamw"][-1]["step"] if "adamw" in kinds else None
end = upto if upto > 0 else nsteps
print(f"| optimizer | val loss at step {end} | val perplexity | ppl / AdamW | tokens to AdamW's val loss at its last "
      f"evaluation (fraction) | state bytes (per param) | median tokens/s | peak RSS MiB | wall s |")
print("|---|---|---|---|---|---|---|---|---|")
for k in kinds:
    v = vals[k][-1]["val_loss"]
    cut = vals[k][-1]["step"] < end # a run stopped early: its last evaluation, marked
    reach = next((r["step"] for r in vals[k] if base is not None and r["val_loss"] <= base), None)
    reach_s = f"{reach * tps:,} ({reach / base_steps:.2f})" if reach else "not reached"
    m = re.search(r"state (\d+) bytes \(([\d.]+) per parameter\)", open(os.path.join(work, k + ".log")).read())
    st = f"{int(m.group(1)):,} ({float(m.group(2)):.3f})" if m else "? (AdamW: 8 bytes per parameter)"
    med = statistics.median(r["tokens_per_s"] for r in runs[k] if "tokens_per_s" in r)
    rss = num(os.path.join(work, k + ".rss"), float("nan")) / 1024
    wall = num(os.path.join(work, k + ".wall"), float("nan"))
    ratio = math.exp(v - base) if base is not None else float("nan")
    vs = f"{v:.4f}" + (f" (cut: step {vals[k][-1]['step']})" if cut else "")
    print(f"| {k} | {vs} | {math.exp(v):.2f} | {'—' if cut else f'{ratio:.3f}'} | {reach_s} | {st} | {med:.0f} | {rss:.0f} | {wall:.0f} |")
print()
steps = sorted({r["step"] for k in kinds for r in vals[k]})
print("| step | tokens | " + " | ".join(kinds) + " |")
print("|---|---|" + "---|" * len(kinds))
for s in steps:
    cells = [next((f"{r['val_loss']:.4f}" for r in vals[k] if r["step"] == s), "") for k in kinds]
    print(f"| {s} | {s * tps:,} | " + " | ".join(cells) + " |")
PY
args=()
for k in $KINDS; do args+=("$k=$WORK/$k/metrics.jsonl"); done
python3 bench/plot_curves.py --max-step "${UPTO:-0}" -o "$SVG" --key val_loss --ylabel "validation loss" --tokens-per-step $((BATCH * SEQ)) \
  --title "KJV, default model shape: validation loss by optimizer ($STEPS steps x $BATCH x $SEQ tokens)" "${args[@]}" >&2
