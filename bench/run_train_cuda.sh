#!/usr/bin/env bash
# run_train_cuda.sh — training throughput on the GPU machine, one call: lmc
# vs PyTorch (transformers models; torch.compile and eager) on GPT-2 124M
# (12 layers, 768 wide, 12 heads, vocab 50304, 1024 positions) and a Llama of
# the same size (hidden 768, 12 layers, 12 heads / 12 KV heads, intermediate
# 2048, vocab 50304, tied embeddings: 123.6M parameters), B=16, T=1024, bf16
# mixed precision with fp32 master weights, AdamW, clip 1.0, random tokens.
#
#  1. builds lmc (cmake -S . -B build-dev && make lmc_cli; the CUDA module
#     comes with it), unpacking .devdeps first when the libraries are missing;
#  2. writes random token shards in lmc's format (bench_train.py write-shards);
#  3. `lmc train --device cuda` for each model: tokens/s and MFU are the
#     medians over the steps after LMC_SKIP of OUT/metrics.jsonl; peak memory
#     is the GPU's memory.used (nvidia-smi, polled every 0.2 s) minus the idle
#     value read just before — lmc has no allocator statistics, so this
#     counts everything the process holds (CUDA context, cuBLAS workspace);
#  4. bench/bench_train.py for each model, torch.compile then eager, each in
#     its own process (its own JSON line: tokens/s from the median step, MFU by
#     lmc's formula, torch.cuda.max_memory_allocated / reserved), with the same
#     nvidia-smi poll so both systems also have one memory number measured alike;
#  5. appends a Markdown table (+ lmc / torch ratios) to
#     bench/results/train-cuda-<date>.md and copies it and every log to $OUT.
#
# Usage (device):  source .devdeps/device-deps.sh unpack && bench/run_train_cuda.sh
# env (defaults): DEVICE=cuda  MODELS="gpt2 llama"  SYSTEMS="lmc compile eager"
#   LAYERS=12 HIDDEN=768 HEADS=12 INTER=2048 VOCAB=50304 MAXPOS=1024 SEQ=1024 BATCH=16
#   LLAMA_TIE=1  LMC_STEPS=30 LMC_SKIP=5  TORCH_WARMUP=5 TORCH_STEPS=25  PEAK_TFLOPS=989
#   LMC_TIMEOUT=150 TORCH_TIMEOUT=100 COMPILE_TIMEOUT=240 (each run), BUDGET_S=470 (the
#   whole script: a run gets at most what is left; one that cannot start is recorded as
#   skipped), BUILD_DIR (build-dev; cpu: build), SKIP_BUILD=1, JOBS=16, LMC_ARGS (extra
#   lmc train flags), PYTHON=python3, RESULTS (the .md), OUT (/tmp/lmc-train-bench),
#   WORK (/tmp/lmc-train-bench-work: data, checkpoints), COMMIT (when there is no .git)
# CPU smoke test (here, no GPU):
#   DEVICE=cpu LAYERS=2 HIDDEN=64 HEADS=4 INTER=128 VOCAB=512 MAXPOS=64 SEQ=32 BATCH=2 \
#     LMC_STEPS=3 LMC_SKIP=1 TORCH_WARMUP=1 TORCH_STEPS=2 bench/run_train_cuda.sh
#   (cpu: SYSTEMS defaults to "lmc eager", memory is the peak RSS (VmHWM), RESULTS to
#   $OUT/train-cpu-smoke.md so bench/results/ is left alone)
# Exit: 1 when building or any lmc run fails, else 2 when a PyTorch run fails, else 0;
# the table is written in every case.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
T_START=$(date +%s)
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/lmc-train-bench}
WORK=${WORK:-/tmp/lmc-train-bench-work}
mkdir -p "$OUT" "$WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 # models are built from configs; nothing is fetched
MODELS=${MODELS:-gpt2 llama}
if [ "$DEVICE" = cuda ]; then SYSTEMS=${SYSTEMS:-lmc compile eager}; else SYSTEMS=${SYSTEMS:-lmc eager}; fi
LAYERS=${LAYERS:-12}; HIDDEN=${HIDDEN:-768}; HEADS=${HEADS:-12}; INTER=${INTER:-2048}
VOCAB=${VOCAB:-50304}; MAXPOS=${MAXPOS:-1024}; SEQ=${SEQ:-1024}; BATCH=${BATCH:-16}
LLAMA_TIE=${LLAMA_TIE:-1}
LMC_STEPS=${LMC_STEPS:-30}; LMC_SKIP=${LMC_SKIP:-5}
TORCH_WARMUP=${TORCH_WARMUP:-5}; TORCH_STEPS=${TORCH_STEPS:-25}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
LMC_TIMEOUT=${LMC_TIMEOUT:-150}; TORCH_TIMEOUT=${TORCH_TIMEOUT:-100}; COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-240}
BUDGET_S=${BUDGET_S:-470}
PY=${PYTHON:-python3}
JOBS=${JOBS:-16}
if [ "$DEVICE" = cuda ]; then B=${BUILD_DIR:-build-dev}; else B=${BUILD_DIR:-build}; fi
DATE=$(date -u +%F)
if [ "$DEVICE" = cuda ]; then RESULTS=${RESULTS:-bench/results/train-cuda-$DATE.md}
else RESULTS=${RESULTS:-$OUT/train-cpu-smoke.md}; fi
JSONL=$OUT/train_results.jsonl
: >"$JSONL"
has() { [[ " $SYSTEMS " == *" $1 "* ]]; }
left() { echo $((BUDGET_S - ($(date +%s) - T_START))); }
lmc_rc=0
torch_rc=0

COMMIT_ID=$(git rev-parse --short HEAD 2>/dev/null || echo "${COMMIT:-unknown}")
if git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  COMMIT_ID="$COMMIT_ID (+ uncommitted changes)"
fi
if [ "$DEVICE" = cuda ]; then
  DEVNAME=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader -i "${GPU_INDEX:-0}" 2>/dev/null | head -1)
else
  DEVNAME="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs"
fi
echo "date $(date -u +%FT%TZ) commit $COMMIT_ID device ${DEVNAME:-unknown}"

# ---- build
build_ok=1
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  # the GPU machine lacks cJSON, civetweb and the PCRE2 headers: .devdeps carries them
  if ! pkg-config --exists libcjson 2>/dev/null && [ -f .devdeps/device-deps.sh ]; then
    # shellcheck disable=SC1091
    source .devdeps/device-deps.sh unpack
  fi
  case "${PKG_CONFIG_PATH:-}" in */tmp/devdeps/*) export PKG_CONFIG_SYSROOT_DIR=${PKG_CONFIG_SYSROOT_DIR:-/tmp/devdeps} ;; esac
  t0=$(date +%s)
  if [ "$DEVICE" = cuda ] || [ ! -f "$B/Makefile" ]; then
    cmake -S . -B "$B" -DLMC_WERROR="${LMC_WERROR:-OFF}" >"$OUT/build.log" 2>&1 || build_ok=0
  fi
  [ $build_ok = 1 ] && { make -C "$B" -j"$JOBS" lmc_cli >>"$OUT/build.log" 2>&1 || build_ok=0; }
  if [ $build_ok = 1 ]; then echo "build ok ($(($(date +%s) - t0)) s)"; else tail -40 "$OUT/build.log"; echo "build FAILED"; fi
fi
LMC=$B/lmc
[ -x "$LMC" ] || { build_ok=0; echo "no $LMC"; }
if [ "$DEVICE" = cuda ] && [ $build_ok = 1 ] && ! ls "$B"/liblmc_cuda.so >/dev/null 2>&1; then
  echo "warning: $B has no liblmc_cuda.so (built without nvcc?): lmc train --device cuda will fail"
fi
[ $build_ok = 1 ] || lmc_rc=1

# ---- data: random ids, enough windows that an epoch is never repeated in the timed steps
DATA=$WORK/data-v$VOCAB
NTOK=$((BATCH * (SEQ + 1) * (LMC_STEPS + 2)))
[ $NTOK -lt 1048576 ] && NTOK=1048576
if has lmc && [ $build_ok = 1 ]; then
  "$PY" bench/bench_train.py write-shards "$DATA" --vocab "$VOCAB" --tokens $NTOK --val-tokens 65536 || lmc_rc=1
fi

# ---- the memory poller and a measured run
smi_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "${GPU_INDEX:-0}" 2>/dev/null | head -1 | tr -dc '0-9'; }
# poll_mem PID FILE: the max of the GPU's memory.used (cuda) or of the child's VmHWM (cpu),
# in MiB, every 0.2 s while PID lives; FILE always holds the max so far
poll_mem() {
  local pid=$1 f=$2 max=0 v c
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$DEVICE" = cuda ]; then
      v=$(smi_used)
    else # PID is timeout(1); its child is the measured process
      c=$(awk '{print $1}' "/proc/$pid/task/$pid/children" 2>/dev/null)
      v=$(awk '/^VmHWM/{print int($2/1024)}' "/proc/${c:-$pid}/status" 2>/dev/null)
    fi
    if [ -n "$v" ] && [ "$v" -gt "$max" ]; then max=$v; echo "$max" >"$f"; fi
    sleep 0.2
  done
}
# measured NAME LIMIT_S LOG CMD...: sets RC, WALL, MEM_BASE, MEM_PEAK
measured() {
  local name=$1 lim=$2 log=$3; shift 3
  local memf=$OUT/$name.mem
  MEM_BASE=0
  [ "$DEVICE" = cuda ] && MEM_BASE=$(smi_used)
  MEM_BASE=${MEM_BASE:-0}
  echo 0 >"$memf"
  local s; s=$(date +%s.%N)
  timeout --kill-after=10 "$lim" "$@" >"$log" 2>&1 &
  local pid=$!
  poll_mem $pid "$memf" &
  local poller=$!
  wait $pid
  RC=$?
  wait $poller 2>/dev/null
  WALL=$(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
  MEM_PEAK=$(cat "$memf")
}
# budget LIMIT: the limit a run may have now, or 0 when fewer than 30 s are left
budget() { local l; l=$(left); [ "$l" -lt 30 ] && { echo 0; return; }; [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }
mem_kind=nvidia-smi
[ "$DEVICE" = cuda ] || mem_kind="peak RSS"

# ---- lmc
LMC_COMMON="--vocab $VOCAB --layers $LAYERS --hidden $HIDDEN --heads $HEADS --max-pos $MAXPOS --batch $BATCH --seq $SEQ \
--steps $LMC_STEPS --lr 3e-4 --warmup 0 --eval-every 0 --save-every 0 --device $DEVICE --peak-tflops $PEAK_TFLOPS"
[ "$DEVICE" = cuda ] && LMC_COMMON="$LMC_COMMON --dtype bf16"
lmc_arch_args() {
  if [ "$1" = gpt2 ]; then echo "--arch gpt2"  # MLP 4*hidden, tied, learned positions
  else echo "--arch llama --kv-heads $HEADS --intermediate $INTER$([ "$LLAMA_TIE" = 1 ] && echo " --tie")"; fi
}
LMC_CMDS=""
if has lmc; then
  for m in $MODELS; do
    run=$WORK/run-$m
    rm -rf "$run"
    # shellcheck disable=SC2086
    args="--data $DATA -o $run $(lmc_arch_args "$m") $LMC_COMMON${LMC_ARGS:+ $LMC_ARGS}"
    LMC_CMDS="$LMC_CMDS; \`lmc train $args\`"
    lim=$(budget "$LMC_TIMEOUT")
    if [ $build_ok != 1 ] || [ "$lim" = 0 ]; then
      why=$([ $build_ok != 1 ] && echo "not run: build failed" || echo "not run: out of time budget")
      "$PY" bench/bench_train.py record --results "$JSONL" --system lmc --model "$m" --rc 1 --note "$why" >/dev/null
      lmc_rc=1
      continue
    fi
    echo "--- lmc train $m (limit ${lim} s)"
    # shellcheck disable=SC2086
    measured "lmc-$m" "$lim" "$OUT/lmc-$m.log" "$LMC" train $args
    cp "$run/metrics.jsonl" "$OUT/lmc-$m-metrics.jsonl" 2>/dev/null
    grep -v '^\s*$' "$OUT/lmc-$m.log" | grep -v '^step' | tail -4
    grep '^step' "$OUT/lmc-$m.log" | tail -2
    note=""
    [ $RC = 0 ] || note=$(grep -v '^\s*$' "$OUT/lmc-$m.log" | grep -v '^step' | tail -1 | cut -c1-160 | tr '|' '/')
    [ $RC = 124 ] || [ $RC = 137 ] && note="cut at the time limit (${lim} s)"
    "$PY" bench/bench_train.py record --results "$JSONL" --system lmc --model "$m" --rc $RC --wall-s "$WALL" \
      --mem-peak-mib "$MEM_PEAK" --mem-base-mib "$MEM_BASE" --mem-kind "$mem_kind" \
      --lmc-metrics "$run/metrics.jsonl" --lmc-log "$OUT/lmc-$m.log" --skip "$LMC_SKIP" --note "$note"
    [ $RC = 0 ] || lmc_rc=1
    rm -rf "$run" # the final checkpoint (model + AdamW moments in f32)
  done
fi

# ---- PyTorch: torch.compile first (the issue's peer), then eager
TORCH_ARGS="--device $DEVICE --layers $LAYERS --hidden $HIDDEN --heads $HEADS --intermediate $INTER --vocab $VOCAB \
--max-pos $MAXPOS --seq $SEQ --batch $BATCH --warmup $TORCH_WARMUP --steps $TORCH_STEPS --llama-tie $LLAMA_TIE \
--peak-tflops $PEAK_TFLOPS"
for mode in compile eager; do
  has $mode || continue
  for m in $MODELS; do
    sys=$([ $mode = compile ] && echo torch.compile || echo "torch eager")
    lim=$(budget "$([ $mode = compile ] && echo "$COMPILE_TIMEOUT" || echo "$TORCH_TIMEOUT")")
    if [ "$lim" = 0 ]; then
      "$PY" bench/bench_train.py record --results "$JSONL" --system "$sys" --model "$m" --rc 1 \
        --note "not run: out of time budget" >/dev/null
      torch_rc=2
      continue
    fi
    echo "--- $sys $m (limit ${lim} s)"
    # shellcheck disable=SC2086
    measured "torch-$mode-$m" "$lim" "$OUT/torch-$mode-$m.log" "$PY" bench/bench_train.py --model "$m" --mode $mode $TORCH_ARGS
    grep -E '^\{' "$OUT/torch-$mode-$m.log" | tail -1 | cut -c1-400
    [ $RC = 0 ] || tail -5 "$OUT/torch-$mode-$m.log"
    note=""
    [ $RC = 124 ] || [ $RC = 137 ] && note="cut at the time limit (${lim} s)"
    "$PY" bench/bench_train.py record --results "$JSONL" --system "$sys" --model "$m" --rc $RC --wall-s "$WALL" \
      --mem-peak-mib "$MEM_PEAK" --mem-base-mib "$MEM_BASE" --mem-kind "$mem_kind" \
      --torch-log "$OUT/torch-$mode-$m.log" --note "$note" >/dev/null
    [ $RC = 0 ] || torch_rc=2
  done
done

# ---- the table
TV=$(grep -h -o '"torch": "[^"]*", "transformers": "[^"]*"' "$OUT"/torch-*.log 2>/dev/null | head -1 | tr -d '"')
mkdir -p "$(dirname "$RESULTS")"
[ -s "$RESULTS" ] || printf '# Training throughput, lmc vs PyTorch — %s\n\n' "$DATE" >"$RESULTS"
if [ "$DEVICE" = cuda ]; then PREC="bf16 mixed precision, fp32 master weights"; else PREC="fp32"; fi
llama_tie_s=$([ "$LLAMA_TIE" = 1 ] && echo tied || echo untied)
"$PY" bench/bench_train.py report --results "$JSONL" --md "$RESULTS" \
  --title "$DEVICE, $(date -u +%FT%TZ)" \
  --header "date: $(date -u +%FT%TZ); commit: $COMMIT_ID; device: ${DEVNAME:-unknown}" \
  --header "command: \`DEVICE=$DEVICE MODELS=\"$MODELS\" SYSTEMS=\"$SYSTEMS\" LMC_STEPS=$LMC_STEPS LMC_SKIP=$LMC_SKIP TORCH_WARMUP=$TORCH_WARMUP TORCH_STEPS=$TORCH_STEPS PEAK_TFLOPS=$PEAK_TFLOPS bench/run_train_cuda.sh\` ($(($(date +%s) - T_START)) s in all)" \
  --header "models: GPT-2 (layers $LAYERS, hidden $HIDDEN, heads $HEADS, MLP 4x, vocab $VOCAB, $MAXPOS positions, tied) and Llama (same layers/hidden/heads, $HEADS KV heads, intermediate $INTER, $llama_tie_s embeddings), random init; batch $BATCH x $SEQ tokens, $PREC, AdamW (lr 3e-4, betas 0.9/0.95, wd 0.1), global-norm clip 1.0, random token ids" \
  --header "lmc:${LMC_CMDS#;}; tokens/s and MFU = medians of metrics.jsonl over steps > $LMC_SKIP" \
  --header "PyTorch: \`bench/bench_train.py --model M --mode compile|eager $TORCH_ARGS\` (${TV:-torch version unknown}); transformers GPT2LMHeadModel / LlamaForCausalLM with SDPA attention, the loss (cross-entropy on fp32 logits) inside the compiled module, fused AdamW, loss.item() every step; $TORCH_WARMUP warm-up steps (compilation in the first), tokens/s from the median of $TORCH_STEPS timed steps" \
  --header "MFU: (6 N + 12 L T H d_head) FLOPs per token (lmc_trainer_flops_per_token; N counts tied embeddings once, identical in both systems) x tokens/s / $PEAK_TFLOPS TFLOP/s" \
  --header "peak memory: \"$mem_kind\" column = the largest $([ "$DEVICE" = cuda ] && echo "GPU memory.used (nvidia-smi, polled every 0.2 s) minus the idle value before the run, for both systems alike: everything the process holds (CUDA context, cuBLAS workspace, allocator cache); lmc has no allocator statistics, so this is its only number" || echo "VmHWM of the process (polled)"); PyTorch's own torch.cuda.max_memory_allocated / max_memory_reserved beside it" \
  --header "peers quoted in the issue, not measured here (H200, GPT-2 124M, B=16, T=1024, bf16): PyTorch 2.11 eager 203k tokens/s, torch.compile 337k tokens/s (peak 19.5 GB)" \
  >/dev/null
cp "$RESULTS" "$OUT/" 2>/dev/null
echo "=== $RESULTS"
# the section just written
awk -v t="## $DEVICE, " 'index($0, t) == 1 {buf = ""} {buf = buf $0 "\n"} END {printf "%s", buf}' "$RESULTS"
echo "total $(($(date +%s) - T_START)) s; lmc rc=$lmc_rc torch rc=$torch_rc"
[ $lmc_rc = 0 ] || exit 1
exit $torch_rc
