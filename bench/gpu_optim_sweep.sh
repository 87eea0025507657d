#!/usr/bin/env bash
# gpu_optim_sweep.sh — issue 16's quality recipe (bench/run_optim_quality.sh
# at its defaults: the default model's 930 steps of 16 x 256 tokens) for
# AdamW and for GaLore / APOLLO at other group scales and ranks, on the GPU
# (`--device cuda --dtype bf16`), one device call: which settings of the
# low-rank optimizers reach AdamW's final perplexity. GaLore's authors train
# the projected matrices with a larger learning rate than AdamW's (lr 0.01,
# scale 0.25 against AdamW's 0.001 on their 60M-350M LLaMAs); lmc's groups
# share --lr, so the scale carries that ratio here.
# Writes $OUT/sweep.md (the table and curves of run_optim_quality.sh) and
# $OUT/sweep.svg.
# Usage (device): source .devdeps/device-deps.sh unpack && bench/gpu_optim_sweep.sh
# env: OUT, OPT_RANK (72), BUDGET_S (540), SWEEP (the kinds, default below), SKIP_BUILD=1
. "$(dirname "$0")/gpu_common.sh"
OUT=${OUT:-/tmp/lmc-optim-sweep-out}; BUDGET_S=${BUDGET_S:-540}; B=build-dev; R=${OPT_RANK:-72}
mkdir -p "$OUT"; S=$OUT/sweep-summary.txt; : >"$S"
gpu_devdeps
say "$(gpu_stamp)"
if [ -z "${SKIP_BUILD:-}" ] || [ ! -x $B/lmc ]; then
  gpu_build $B "$OUT/sweep-build.log" lmc_cli lmc_cuda || { tail -30 "$OUT/sweep-build.log"; exit 1; }
fi
say "build ok ($(($(date +%s) - T0)) s)"
g="--optim galore --galore-update-gap 200"; a="--optim apollo --apollo-update-gap 200"
export EXTRA_galore_s1="$g --galore-rank $R --galore-scale 1" EXTRA_galore_s2="$g --galore-rank $R --galore-scale 2"
export EXTRA_galore_r2_s1="$g --galore-rank $((2 * R)) --galore-scale 1"
export EXTRA_apollo_s2="$a --apollo-rank $R --apollo-scale 2" EXTRA_apollo_s4="$a --apollo-rank $R --apollo-scale 4"
export EXTRA_apollo_r2_s2="$a --apollo-rank $((2 * R)) --apollo-scale 2"
KINDS=${SWEEP:-adamw galore galore-s1 galore-s2 galore-r2-s1 apollo apollo-s2 apollo-s4 apollo-r2-s2} \
  LMC=$B/lmc TRAIN_ARGS="--device cuda --dtype bf16" WORK=/tmp/lmc-optim-sweep OPT_RANK=$R \
  timeout $(( $(left) - 10 )) bash bench/run_optim_quality.sh "$OUT/sweep.svg" >"$OUT/sweep.md" 2>"$OUT/sweep-run.log"
say "run rc=$? ($(($(date +%s) - T0)) s)"
tail -3 "$OUT/sweep-run.log" | tee -a "$S"
tee -a "$S" <"$OUT/sweep.md"
