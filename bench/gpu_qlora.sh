#!/usr/bin/env bash
# gpu_qlora.sh — QLoRA on the GPU in one device call (issue 12; for the
# single-GPU run issue to call, alone or after gpu_issue20.sh): build, then
#  1. check: `lmc finetune --qlora nf4|int4 --device cuda --dtype fp32` on
#     tests/fixtures/llama-tiny against the same run on the CPU (per-step
#     loss within 1e-4 relative at lr 1e-3: later steps may drift a little,
#     AdamW's first steps turn rounding-level gradients into whole steps;
#     printed, and the emulator's section qlora checks the
#     same on the CPU machine), and one bf16 run (loss finite and falling);
#  2. time: a random 1.1B Llama (TinyLlama shape, bench/bench_cuda.py
#     makemodel, kjv-llama's tokenizer) fine-tuned with LoRA and QLoRA
#     (NF4 and int4 bases quantized at load), r 16 alpha 32 all linears,
#     --dtype bf16, BATCH rows of SEQ tokens (packed prompt/completion pairs
#     from data/kjv.txt), modes interleaved ROUNDS times: median tokens/s of
#     the steps after SKIP (the metrics file) and peak device memory
#     (nvidia-smi polled every 100 ms, minus the idle reading), each ratio
#     against the LoRA run of the same round;
#  3. the PEFT peer when torch + peft (+ bitsandbytes for QLoRA) import:
#     bench/finetune_peft.py with the same settings, interleaved.
# Logs go to $OUT (the device returns few files: one summary, one tarball).
# Usage (device): source .devdeps/device-deps.sh unpack && bench/gpu_qlora.sh
# env: BUDGET_S (default 540) SEQ=2048 BATCH=1 STEPS=8 SKIP=3 ROUNDS=2
#      MODES="lora lora-sel lora-rc lora-rc16 lora-rco qlora-nf4 qlora-nf4-rc qlora-nf4-rc16
#      qlora-nf4-rco qlora-int4 lora-ra lora-rao qlora-nf4-ra qlora-nf4-rao"
#      SKIP_BUILD=1 (use build-dev as is)
# lora: LoRA with the defaults (activations the backward reads saved in
# bf16); lora-f32acts: --acts-dtype f32 (every save f32, the earlier
# default); lora-sel: --recompute selective (GEMM outputs kept in bf16,
# norms and the SwiGLU product recomputed); lora-rc: full --recompute
# (f32 saves of one layer); lora-rc16 / qlora-nf4-rc16: full --recompute
# with --acts-dtype bf16 (the residual stream's checkpoints in bf16);
# lora-rco / qlora-nf4-rco: --recompute --offload-checkpoints (the layer
# inputs in pinned host memory); lora-ra / qlora-nf4-ra: --recompute attn
# (each layer keeps its MLP's gate/up in bf16, the backward recomputes the
# norms, q/k/v, attention and the output projection, not the MLP's GEMMs);
# lora-rao / qlora-nf4-rao: --recompute attn --offload-checkpoints (the
# issue's goal 1 candidate: >= 2x PEFT's tokens/s at <= 0.5x its peak in one
# configuration). Each lmc run's first round also prints
# its memory account (the start-up line) and the device's bytes in use
# after the first step next to it (train/train_mem.h).
. "$(dirname "$0")/gpu_common.sh"
BUDGET_S=${BUDGET_S:-540}; SEQ=${SEQ:-2048}; BATCH=${BATCH:-1}; STEPS=${STEPS:-8}; SKIP=${SKIP:-3}
ROUNDS=${ROUNDS:-2}; MODES=${MODES:-lora lora-sel lora-rc qlora-nf4 qlora-int4}
OUT=${OUT:-/tmp/lmc-qlora-out}; W=${WORK:-/tmp/lmc-qlora-work}; B=build-dev; LMC=$B/lmc
mkdir -p "$OUT" "$W"
S=$OUT/summary.txt; : >"$S"
say "$(gpu_stamp name,driver_version,memory.total)"
if [ -z "${SKIP_BUILD:-}" ] || [ ! -x $LMC ]; then
  gpu_build $B "$W/build.log" lmc_cli ||
    { tail -40 "$W/build.log" | tee -a "$S"; exit 1; }
  say "build ok ($(($(date +%s) - T0)) s)"
fi
python3 - "$W/sft.jsonl" <<'PY'
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
    for a, b in zip(verses[:6000], verses[1:6001]):
        f.write(json.dumps({"prompt": "Continue: " + a + "\n", "completion": b}) + "\n")
# the fixture check runs at --seq 64 on a tiny tokenizer: short pairs, so
# that truncation leaves every row a completion to learn
with open(sys.argv[1].replace(".jsonl", "-short.jsonl"), "w") as f:
    for a, b in zip(verses[:2000], verses[1:2001]):
        f.write(json.dumps({"prompt": a[:24] + "\n", "completion": b[:24]}) + "\n")
PY
losses() { sed 's/.*"loss": \([-0-9.eE+naif]*\).*/\1/' "$1"; }
# ---- 1. correctness on the fixture: GPU fp32 vs CPU, per step
rc=0
F=tests/fixtures/llama-tiny
for q in nf4 int4; do
  for dev in cpu cuda; do
    dt=""; [ $dev = cuda ] && dt="--dtype fp32"
    rm -rf "$W/chk-$q-$dev"
    timeout 120 $LMC finetune -m $F --data "$W/sft-short.jsonl" -o "$W/chk-$q-$dev" --qlora $q --steps 4 --seq 64 \
      --batch 2 --pack --lr 1e-3 --device $dev $dt >"$W/chk-$q-$dev.log" 2>&1 || { say "check $q $dev FAILED: $(tail -2 "$W/chk-$q-$dev.log")"; rc=1; }
  done
  if [ -f "$W/chk-$q-cpu.metrics.jsonl" ] && [ -f "$W/chk-$q-cuda.metrics.jsonl" ]; then
    worst=$(paste <(losses "$W/chk-$q-cpu.metrics.jsonl") <(losses "$W/chk-$q-cuda.metrics.jsonl") |
            awk '{d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > w) w = r} END {printf "%.2e", w}')
    ok=$(awk -v w="$worst" 'BEGIN {print (w <= 1e-4) ? "ok" : "FAIL"}'); [ "$ok" = ok ] || rc=1
    say "check qlora $q fixture: cuda fp32 vs cpu loss per step: worst rel $worst ($ok); $(grep 'QLoRA base' "$W/chk-$q-cuda.log")"
  fi
done
rm -rf "$W/chk-bf16"
timeout 120 $LMC finetune -m $F --data "$W/sft-short.jsonl" -o "$W/chk-bf16" --qlora nf4 --steps 6 --seq 64 --batch 2 --pack \
  --lr 1e-3 --device cuda --dtype bf16 >"$W/chk-bf16.log" 2>&1 &&
  say "check qlora nf4 bf16: losses $(losses "$W/chk-bf16.metrics.jsonl" | tr '\n' ' ')" ||
  { say "check qlora bf16 FAILED: $(tail -2 "$W/chk-bf16.log")"; rc=1; }
# ---- 2. timing on the 1.1B shape
M=/tmp/llama-1.1b
[ -f $M/config.json ] || python3 bench/bench_cuda.py makemodel $M 2>&1 | tail -1 | tee -a "$S"
for f in tokenizer.json tokenizer_config.json; do [ -f $M/$f ] || cp models/kjv-llama/$f $M/; done
peft_ok=0; python3 -c "import torch, peft" 2>/dev/null && peft_ok=1
bnb_ok=0; python3 -c "import bitsandbytes" 2>/dev/null && bnb_ok=1
idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
RES=$W/results.txt; : >"$RES"
# run NAME CMD...: peak device memory (polled) and the command's output
run() {
  local name=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$W/mem-$name" 2>/dev/null &
  local mp=$!
  timeout $(( $(left) > 30 ? $(left) - 20 : 10 )) "$@" >"$W/run-$name.log" 2>&1; local r=$?
  kill $mp 2>/dev/null; wait $mp 2>/dev/null
  local peak; peak=$(sort -g "$W/mem-$name" | tail -1)
  echo "$r $(( ${peak:-0} - idle ))"
}
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    [ "$(left)" -gt 60 ] || { say "out of time before round $round $mode"; break 2; }
    extra="--lora-r 16 --lora-alpha 32 --lora-targets all-linear"
    case $mode in
      qlora-nf4-rc) extra="$extra --qlora nf4 --recompute" ;;
      qlora-nf4-rc16) extra="$extra --qlora nf4 --recompute --acts-dtype bf16" ;;
      qlora-nf4-rco) extra="$extra --qlora nf4 --recompute --offload-checkpoints" ;;
      qlora-nf4-ra) extra="$extra --qlora nf4 --recompute attn" ;;
      qlora-nf4-rao) extra="$extra --qlora nf4 --recompute attn --offload-checkpoints" ;;
      qlora-*) extra="$extra --qlora ${mode#qlora-}" ;;
      lora-rc) extra="$extra --recompute" ;;
      lora-rc16) extra="$extra --recompute --acts-dtype bf16" ;;
      lora-rco) extra="$extra --recompute --offload-checkpoints" ;;
      lora-ra) extra="$extra --recompute attn" ;;
      lora-rao) extra="$extra --recompute attn --offload-checkpoints" ;;
      lora-sel) extra="$extra --recompute selective" ;;
      lora-f32acts) extra="$extra --acts-dtype f32" ;;
    esac
    rm -rf "$W/out-$mode"
    read -r r mib < <(run "$mode" $LMC finetune -m $M --data "$W/sft.jsonl" -o "$W/out-$mode" --seq "$SEQ" --batch "$BATCH" \
      --pack --steps "$STEPS" --device cuda --dtype bf16 $extra)
    if [ "$r" != 0 ]; then say "round $round $mode FAILED rc=$r: $(tail -2 "$W/run-$mode.log")"; rc=1; continue; fi
    tps=$(tail -n +$((SKIP + 1)) "$W/out-$mode.metrics.jsonl" | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/' | sort -g |
          awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
    say "round $round lmc $mode: $tps tok/s, peak device $mib MiB; $(grep -o 'Q*LoRA base.*' "$W/run-$mode.log")"
    [ "$round" = 1 ] && grep -o 'memory (MiB).*\|device memory after.*' "$W/run-$mode.log" | sed "s/^/  $mode /" | tee -a "$S"
    echo "lmc-$mode $tps $mib" >>"$RES"
    pm=${mode%%-*}
    if [ $peft_ok = 1 ] && { [ "$mode" = lora ] || { [ "$mode" = qlora-nf4 ] && [ $bnb_ok = 1 ]; }; } && [ "$(left)" -gt 90 ]; then
      read -r r mib < <(run "peft-$pm" python3 bench/finetune_peft.py $M $pm "$SEQ" "$BATCH" "$STEPS" "$SKIP")
      line=$(grep '^peft' "$W/run-peft-$pm.log")
      if [ "$r" = 0 ] && [ -n "$line" ]; then
        say "round $round $line; polled peak $mib MiB"
        echo "peft-$pm $(echo "$line" | sed 's/.*: \([0-9.]*\) tok\/s.*/\1/') $mib" >>"$RES"
      else
        say "round $round peft $pm failed rc=$r: $(tail -2 "$W/run-peft-$pm.log")"
      fi
    fi
  done
done
med() { awk -v m="$1" -v c="$2" '$1 == m {print $c}' "$RES" | sort -g | awk '{a[NR]=$1} END {if (NR) print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
lt=$(med lmc-lora 2); lm=$(med lmc-lora 3)
for name in $(awk '{print $1}' "$RES" | sort -u); do
  t=$(med "$name" 2); m=$(med "$name" 3)
  say "median $name: $t tok/s, peak $m MiB; vs lmc-lora: tok/s $(awk -v a="$t" -v b="$lt" 'BEGIN {if (b > 0) printf "%.2f", a / b}')x," \
      "memory $(awk -v a="$m" -v b="$lm" 'BEGIN {if (b > 0) printf "%.2f", a / b}')x"
done
tar -czf "$OUT/logs.tar.gz" -C "$W" $(cd "$W" && ls *.log *.metrics.jsonl results.txt 2>/dev/null) 2>/dev/null
say "=== total $(($(date +%s) - T0)) s, rc=$rc"
exit $rc
