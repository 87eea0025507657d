#!/usr/bin/env bash
# gpu_spec_pair.sh — issue 17's target/draft pair, made and timed in one
# device call: the ~91M KJV target (scripts/train_spec_pair.sh --target,
# the default model as its draft) trains on the GPU, its validation
# perplexity runs there, and then the speculative-decoding speed is
# measured on that machine's CPU pinned to CPUS (default two cores, the
# others idle, so the timing is quiet). After the target, two drafts are
# distilled from it on the GPU (scripts/train_spec_pair.sh --distill: lmc
# train --distill-from, kd-draft of the default model's shape from its
# weights, kd-small of about half its bytes from scratch; KD=0 skips):
#   1. `lmc generate` plain / --draft-model (the default model and each
#      distilled draft) / --prompt-lookup on KJV prompts
#      (scripts/train_spec_pair.sh --measure-only);
#   1b. bench_spec on the pair: the cost of each part of a round (a
#      K+1-token verification vs a 1-token forward, the draft's forward),
#      the cost model's table, and greedy decoding plain / the target as
#      its own draft (every draft accepted: the ceiling) / the draft with
#      adaptive and fixed K, with each round's time split (SKIP_COSTS=1
#      skips it); then bench_spec per distilled draft (plain, adaptive
#      and fixed K: acceptance and speed);
#   1c. lmc generate plain / --draft-model against llama-speculative and
#      llama-speculative-simple on kjv-target and the first distilled draft
#      (bench/spec_cli_cpu.py; only where LLAMA_BIN has llama-speculative;
#      SKIP_CLI=1 skips; CLI_DRAFTS names the drafts, CLI_THREADS the
#      thread counts, default 2);
#   2. the server against llama.cpp's server with the same pair
#      (bench/spec_pair_cpu.py; llama.cpp binaries from LLAMA_BIN, e.g.
#      a copy of ../shared/tools/build-llamacpp-peer.sh's bin/ carried
#      as .peer/bin).
# Usage (device): source .devdeps/device-deps.sh unpack && bench/gpu_spec_pair.sh
# env: OUT (logs), CPUS (0,1), LLAMA_BIN (.peer/bin), LLAMA_SRC (a llama.cpp source .tgz: built here for this
#      CPU while the target trains, and used instead of LLAMA_BIN), DRAFTS_FROM (a folder of draft folders to use as
#      they are instead of distilling), TARGETS / TARGET_STEPS (1500) / TARGET_WD / TARGET_PATIENCE
#      (scripts/train_spec_pair.sh: each shape trains with its validation loss evaluated every 25 steps, the best
#      checkpoint kept and an early stop; the best shape becomes the target),
#      W (build-dev/spec-pair: kept on a warm machine; training is
#      skipped when W/kjv-target exists, distillation when W/kd-small does), SKIP_SERVER (0), SKIP_COSTS (0),
#      KD (1), KD_STEPS (300), KD_BATCH (32), KD_ALPHA (1), KD_TEMP (1), KD_LR, KD_SMALL, KD_TINY, KD_DRAFTS (train_spec_pair.sh)
#      ONPOLICY (0; 1: after the first measurement, bench/spec_onpolicy_data.py has the target write its greedy
#      continuations (OP_TOKENS, 64, tokens each) of OP_PROMPTS (1500) training-book openings, and each distilled draft is distilled again on
#      that text for OP_STEPS (300) steps from its own weights, then measured again; OP_CONC (64) concurrent
#      requests, OP_SECONDS (0: no limit) stops sending prompts after that long), SKIP_MEASURE (0; 1: no lmc
#      generate timings on this machine, e.g. when the pair is fetched back and timed elsewhere)
. "$(dirname "$0")/gpu_common.sh"
OUT=${OUT:-/tmp/lmc-gpu-out}; CPUS=${CPUS:-0,1}; LLAMA_BIN=${LLAMA_BIN:-.peer/bin}
B=build-dev; W=${W:-$B/spec-pair}
mkdir -p "$OUT"
gpu_devdeps
S="$OUT/summary.md"
say "# gpu_spec_pair $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name --format=csv,noheader)," \
    "cpu $(lscpu | sed -n 's/^Model name: *//p'), pinned to $CPUS"
if [ -n "${LLAMA_SRC:-}" ]; then   # llama.cpp built on this machine for its CPU, beside the GPU work
  if [ ! -x "$B/llama.cpp/build/bin/llama-speculative" ]; then
    (rm -rf "$B/llama.cpp" && mkdir -p "$B" && tar -C "$B" -xzf "$LLAMA_SRC" &&
     cmake -S "$B/llama.cpp" -B "$B/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
       -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF &&
     cmake --build "$B/llama.cpp/build" -j"$(($(nproc) - 2))" --target llama-server llama-speculative \
       llama-speculative-simple llama-bench) >"$OUT/llama-build.log" 2>&1 &
    LLAMA_PID=$!
  fi
  LLAMA_BIN=$B/llama.cpp/build/bin
fi
gpu_build $B "$OUT/build.log" lmc_cli lmc_cuda bench_spec ||
  { tail -40 "$OUT/build.log"; exit 1; }
say "build ok ($(($(date +%s) - T0)) s)"
if [ ! -d "$W/kjv-target" ]; then
  MEASURE=0 SKIP_DRAFT=1 LMC=$B/lmc THREADS=16 TARGET_STEPS=${TARGET_STEPS:-1500} EVAL_DEVICE=cuda \
    scripts/train_spec_pair.sh "$W" --device cuda --target >"$OUT/train.log" 2>&1 ||
    { tail -30 "$OUT/train.log"; exit 1; }
  say "trained ($(($(date +%s) - T0)) s)"
  grep -E '^(##|\||kjv-target:)' "$OUT/train.log" | tee -a "$S"
fi
if [ -n "${DRAFTS_FROM:-}" ]; then   # drafts made earlier (e.g. fetched back from a previous call), used as they are
  for d in "$DRAFTS_FROM"/*/; do [ -f "$d/config.json" ] && rm -rf "$W/$(basename "$d")" && cp -r "$d" "$W/"; done
  KD=0
fi
if [ "${KD:-1}" = 1 ] && [ ! -d "$W/kd-small" ]; then
  MEASURE=0 SKIP_DRAFT=1 LMC=$B/lmc THREADS=16 EVAL_DEVICE=cuda \
    scripts/train_spec_pair.sh "$W" --device cuda --distill >"$OUT/distill.log" 2>&1 ||
    { tail -30 "$OUT/distill.log"; exit 1; }
  say "distilled ($(($(date +%s) - T0)) s)"
  grep -E '^(##|\|)' "$OUT/distill.log" | tee -a "$S"
fi
rm -rf "$W/kjv-draft"   # only the target's pairs (the default model and the distilled drafts as drafts) are timed
if [ "${SKIP_MEASURE:-0}" = 0 ]; then
  say "## lmc generate, greedy, 2 threads on CPUs $CPUS"
  EVAL_DEVICE=cuda LMC=$B/lmc THREADS=2 ROUNDS=${ROUNDS:-2} \
    taskset -c "$CPUS" scripts/train_spec_pair.sh "$W" --measure-only 2>"$OUT/measure.err" | tee -a "$OUT/summary.md"
  say "measured ($(($(date +%s) - T0)) s)"
fi
if [ "${ONPOLICY:-0}" = 1 ]; then   # second stage: the drafts distilled again on the target's own greedy text
  say "## on-policy distillation: the target's greedy continuations of ${OP_PROMPTS:-1500} training-book openings"
  python3 bench/spec_onpolicy_data.py $B/lmc "$W/kjv-target" "$W/onpolicy.txt" --n "${OP_PROMPTS:-1500}" \
    --tokens "${OP_TOKENS:-64}" --device cuda --concurrency "${OP_CONC:-64}" --max-seconds "${OP_SECONDS:-0}" 2>"$OUT/onpolicy.err" | tee -a "$S" || { tail -20 "$OUT/onpolicy.err"; exit 1; }
  n=$(wc -l <"$W/onpolicy.txt"); cat "$W/onpolicy.txt" "$W/kjv-val.txt" >"$W/onpolicy-val.txt"
  rm -rf "$W/op-data" "$W/kd-stage1"; mkdir -p "$W/kd-stage1"
  $B/lmc prepare-data -m models/kjv-llama --text-file "$W/onpolicy-val.txt" --val-from-line $((n + 1)) \
    -o "$W/op-data" >"$OUT/op-data.log" 2>&1 || { tail -20 "$OUT/op-data.log"; exit 1; }
  for kd in kd-draft kd-small kd-tiny; do [ -d "$W/$kd" ] && mv "$W/$kd" "$W/kd-stage1/$kd"; done
  KD_DATA="$W/op-data" KD_FROM="$W/kd-stage1" KD_STEPS=${OP_STEPS:-300} MEASURE=0 SKIP_DRAFT=1 LMC=$B/lmc \
    THREADS=16 EVAL_DEVICE=cuda scripts/train_spec_pair.sh "$W" --device cuda --distill >"$OUT/distill2.log" 2>&1 ||
    { tail -30 "$OUT/distill2.log"; exit 1; }
  grep -E '^(##|\|)' "$OUT/distill2.log" | tee -a "$S"
  if [ "${SKIP_MEASURE:-0}" = 0 ]; then
    say "## lmc generate after the on-policy stage, greedy, 2 threads on CPUs $CPUS"
    EVAL_DEVICE=cuda LMC=$B/lmc THREADS=2 ROUNDS=${ROUNDS:-2} \
      taskset -c "$CPUS" scripts/train_spec_pair.sh "$W" --measure-only 2>>"$OUT/measure.err" | tee -a "$OUT/summary.md"
    say "measured on-policy ($(($(date +%s) - T0)) s)"
  fi
fi
if [ "${SKIP_COSTS:-0}" = 0 ]; then
  say "## bench_spec: round costs, cost model, ceiling (greedy, 2 threads on CPUs $CPUS)"
  taskset -c "$CPUS" $B/bench_spec "$W/kjv-target" -d models/kjv-llama -t 2 -k 4 -n 64 -r 3 -p 3 -s PODF \
    2>"$OUT/bench_spec.err" | tee -a "$OUT/summary.md"
  taskset -c "$CPUS" $B/bench_spec "$W/kjv-target" -d models/kjv-llama -t 1 -k 4 -s C -cpu 1 \
    2>>"$OUT/bench_spec.err" | tee -a "$OUT/summary.md"
  for kd in kd-draft kd-small kd-tiny; do
    [ -d "$W/$kd" ] || continue
    say "## bench_spec: kjv-target + $kd (greedy, 2 threads on CPUs $CPUS)"
    taskset -c "$CPUS" $B/bench_spec "$W/kjv-target" -d "$W/$kd" -t 2 -k 4 -n 64 -r 3 -p 3 -s PDF \
      2>>"$OUT/bench_spec.err" | tee -a "$OUT/summary.md"
  done
  say "costs ($(($(date +%s) - T0)) s)"
fi
if [ -n "${LLAMA_PID:-}" ]; then
  wait "$LLAMA_PID" && say "llama.cpp built ($(($(date +%s) - T0)) s)" || { say "llama.cpp build failed"; tail -20 "$OUT/llama-build.log"; }
fi
if [ "${SKIP_CLI:-0}" = 0 ] && [ -x "$LLAMA_BIN/llama-speculative" ]; then
  if [ -z "${CLI_DRAFTS:-}" ]; then for kd in kd-tiny kd-small kd-draft; do [ -d "$W/$kd" ] && CLI_DRAFTS=$kd && break; done; fi
  for kd in ${CLI_DRAFTS:-}; do
    [ -d "$W/$kd" ] || continue
    for th in ${CLI_THREADS:-2}; do
      cpus=$(echo "$CPUS" | cut -d, -f1-"$th")
      say "## lmc generate vs llama-speculative(-simple), kjv-target + $kd, $th thread(s) on CPUs $cpus"
      LD_LIBRARY_PATH=$PWD/$LLAMA_BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} taskset -c "$cpus" python3 bench/spec_cli_cpu.py \
        $B/lmc "$LLAMA_BIN" "$W/kjv-target" "$W/$kd" --prompts 8 --tokens 64 --rounds "${ROUNDS:-2}" --threads "$th" \
        --gguf-dir "$W/gguf" 2>>"$OUT/cli.err" | tee -a "$OUT/summary.md"
      say "cli ($(($(date +%s) - T0)) s)"
    done
  done
fi
if [ "${SKIP_SERVER:-0}" = 0 ]; then
  say "## lmc serve vs llama-server, the same pair, 2 threads on CPUs $CPUS"
  LD_LIBRARY_PATH=$PWD/$LLAMA_BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} taskset -c "$CPUS" python3 bench/spec_pair_cpu.py $B/lmc "$LLAMA_BIN" \
    "$W/kjv-target" models/kjv-llama --levels 1,4 --threads 2 --gguf-dir "$W/gguf" 2>"$OUT/server.err" |
    tee -a "$OUT/summary.md"
  say "done ($(($(date +%s) - T0)) s)"
fi
