#!/usr/bin/env bash
# gpu_optim_quality.sh — issue 16's quality goals at the full recipe, in one
# device call: bench/run_optim_quality.sh with its defaults (the default
# model's recipe: 930 steps of 16 x 256 tokens, cosine 1.5e-3 -> 1.5e-4,
# the same seed, initialisation and data order for every optimizer) for
# AdamW, Muon, GaLore, APOLLO, APOLLO-Mini and 8-bit AdamW, trained with
# `--device cuda --dtype bf16`. Writes $OUT/table.md (final validation
# perplexity per optimizer and its ratio to AdamW's, the tokens at which
# AdamW's final validation loss is reached, state bytes) and
# $OUT/val-loss.svg. Goals: Muon reaches AdamW's final validation loss in
# <= 0.75 of the tokens; GaLore, APOLLO and 8-bit AdamW within 2% of AdamW's
# final perplexity.
# Usage (device): source .devdeps/device-deps.sh unpack && bench/gpu_optim_quality.sh
# env: OUT, KINDS, STEPS (930), BUDGET_S (540)
. "$(dirname "$0")/gpu_common.sh"
OUT=${OUT:-/tmp/lmc-optim-quality-out}; BUDGET_S=${BUDGET_S:-540}; B=build-dev
mkdir -p "$OUT"; S=$OUT/summary.txt; : >"$S"
gpu_devdeps
say "$(gpu_stamp)"
gpu_build $B "$OUT/build.log" lmc_cli lmc_cuda || { tail -30 "$OUT/build.log"; exit 1; }
say "build ok ($(($(date +%s) - T0)) s)"
LMC=$B/lmc TRAIN_ARGS="--device cuda --dtype bf16" WORK=/tmp/lmc-optim-quality \
  timeout $(( $(left) - 10 )) bash bench/run_optim_quality.sh "$OUT/val-loss.svg" >"$OUT/table.md" 2>"$OUT/run.log"
say "run rc=$? ($(($(date +%s) - T0)) s)"
tail -5 "$OUT/run.log" | tee -a "$S"
cat "$OUT/table.md" | tee -a "$S"
