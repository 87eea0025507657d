#!/usr/bin/env bash
# gpu_moe.sh — mixture of experts on the GPU in one device call (issue 14),
# under 4 minutes on an H100 after the build (each step has its own time
# limit; a cold build of lmc_cuda adds a few minutes: SKIP_BUILD=1 reuses
# build-dev):
#  1. build lmc_cli, lmc_cuda, test_moe_ops_cuda, bench_moe_cuda (build-dev);
#  2. test_moe_ops_cuda: every CUDA MoE op (routing, gather, combine and
#     their backward, clamp, the grouped GEMM both ways) vs its CPU twin;
#  3. lmc parity on every MoE fixture (mixtral, qwen2moe, qwen3moe, olmoe,
#     olmoe-clip) on cuda: inference and --train, fp32 and bf16; then the
#     CLI on cuda: generate, finetune with LoRA on the experts, generate
#     with the adapter, `lmc train --arch mixtral|qwen2moe|olmoe` from
#     scratch with the load-balancing loss;
#  4. timing: the expert GEMM (bench_moe_cuda gemm: one grouped launch vs
#     the per-expert cuBLASLt loop), then a random Mixtral-shape model
#     (bench_moe_hf.py makemodel: 8 experts top-2, ~1.2 B total) — prefill
#     of PROMPT tokens and batch-BATCH decode steps, lmc (bench_moe_cuda
#     model) and transformers (bench_moe_hf.py hf) in the same run.
# Logs and summary.txt go to $OUT (default /tmp/lmc-moe-out).
# Usage (device): source .devdeps/device-deps.sh unpack && bench/gpu_moe.sh
# env: SKIP_BUILD=1 (use build-dev as is), PROMPT=512 BATCH=64 CTX=128 STEPS=32 ROUNDS=3
. "$(dirname "$0")/gpu_common.sh"
OUT=${OUT:-/tmp/lmc-moe-out}; B=build-dev; W=${WORK:-/tmp/lmc-moe-work}
PROMPT=${PROMPT:-512}; BATCH=${BATCH:-64}; CTX=${CTX:-128}; STEPS=${STEPS:-32}; ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT" "$W"
S=$OUT/summary.txt; : >"$S"
rc=0
say "$(gpu_stamp)"
# ---- 1. build
if [ -z "${SKIP_BUILD:-}" ] || [ ! -x $B/lmc ] || [ ! -x $B/bench_moe_cuda ] || [ ! -x $B/test_moe_ops_cuda ]; then
  GPU_MAKE_TIMEOUT=300 gpu_build $B "$OUT/build.log" lmc_cli lmc_cuda test_moe_ops_cuda bench_moe_cuda ||
    { tail -40 "$OUT/build.log" | tee -a "$S"; exit 1; }
  say "build ok ($(($(date +%s) - T0)) s)"
fi
# ---- 2. the op test
timeout 60 $B/test_moe_ops_cuda >"$OUT/test_moe_ops_cuda.log" 2>&1; r=$?
grep "^FAIL" "$OUT/test_moe_ops_cuda.log" | head -20 | tee -a "$S"
say "test_moe_ops_cuda rc=$r: $(tail -2 "$OUT/test_moe_ops_cuda.log" | tr '\n' ' ')"
[ $r = 0 ] || rc=1
# ---- 3. parity on the GPU
for f in mixtral qwen2moe qwen3moe olmoe olmoe-clip; do
  F=tests/fixtures/$f-tiny
  for mode in infer train; do
    for dt in fp32 bf16; do
      tr=""; [ $mode = train ] && tr=--train
      timeout 60 $B/lmc parity $F $tr --device cuda --dtype $dt >"$OUT/parity.tmp" 2>&1; r=$?
      { echo "=== lmc parity $F $tr --device cuda --dtype $dt (rc $r)"; cat "$OUT/parity.tmp"; } >>"$OUT/parity.log"
      say "parity $f $mode $dt rc=$r: $(tail -1 "$OUT/parity.tmp"); $(grep -iE 'logits|loss' "$OUT/parity.tmp" | head -2 | tr -s ' ' | tr '\n' ';' | cut -c1-160)"
      [ $r = 0 ] || rc=1
    done
  done
done
# ---- 3b. the CLI on the GPU: generate, LoRA on the experts, training from scratch (metrics: expert load)
ok() { if [ "$1" = 0 ]; then say "ok   $2"; else say "FAIL $2"; rc=1; fi; }
timeout 30 $B/lmc generate -m tests/fixtures/mixtral-tiny -p "And" -n 8 --device cuda >"$OUT/gen.log" 2>&1
ok $? "generate mixtral-tiny --device cuda: $(tail -1 "$OUT/gen.log" | cut -c1-80)"
for i in $(seq 1 16); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want\"}"
done >"$W/d.jsonl"
rm -rf "$W/ad"
timeout 60 $B/lmc finetune -m tests/fixtures/mixtral-tiny --data "$W/d.jsonl" -o "$W/ad" --seq 32 --batch 4 --lr 1e-2 \
  --schedule constant --steps 8 --lora-r 4 --lora-alpha 8 --lora-targets w1,w2,w3 --device cuda >"$OUT/finetune.log" 2>&1
ok $? "finetune mixtral-tiny, LoRA on the experts, --device cuda: losses $(sed -n 's/.*"loss": \([0-9.]*\).*/\1/p' "$W/ad.metrics.jsonl" 2>/dev/null | tr '\n' ' ')"
timeout 30 $B/lmc generate -m tests/fixtures/mixtral-tiny --lora "$W/ad" -p "Verse 3 says:" -n 6 --device cuda >"$OUT/gen_lora.log" 2>&1
ok $? "generate with expert adapters --device cuda: $(tail -1 "$OUT/gen_lora.log" | cut -c1-80)"
for i in $(seq 1 300); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 17))"; done >"$W/corpus.txt"
$B/lmc train-tokenizer --text-file "$W/corpus.txt" --vocab 300 --style llama3 -o "$W/tok" >/dev/null 2>&1
$B/lmc prepare-data -m "$W/tok" --text-file "$W/corpus.txt" --docs line --val-fraction 0.1 -o "$W/data" >/dev/null 2>&1
for a in mixtral qwen2moe olmoe; do
  rm -rf "$W/run_$a"
  timeout 60 $B/lmc train --data "$W/data" --arch $a --layers 2 --hidden 64 --heads 4 --kv-heads 2 --batch 2 --seq 16 \
    --steps 4 --lr 3e-3 --warmup 1 --save-every 4 --router-aux-coef 0.01 --device cuda -o "$W/run_$a" >"$OUT/train_$a.log" 2>&1
  ok $? "train --arch $a --device cuda: $(grep -E '\| aux' "$OUT/train_$a.log" | tail -1 | cut -c1-120)"
done
say "checks done ($(($(date +%s) - T0)) s), rc=$rc"
# ---- 4. timing
timeout 60 $B/bench_moe_cuda gemm --E 8 --C 2048 --I 5632 --k 2 --rows 1,64,512,4096 >"$OUT/bench_gemm.log" 2>&1 ||
  say "bench_moe_cuda gemm FAILED"
cat "$OUT/bench_gemm.log" | tee -a "$S"
M=$W/mixtral-rand
if [ ! -f $M/config.json ]; then
  timeout 90 python3 bench/bench_moe_hf.py makemodel $M >"$OUT/makemodel.log" 2>&1 || { say "makemodel FAILED: $(tail -3 "$OUT/makemodel.log")"; }
fi
say "$(tail -1 "$OUT/makemodel.log" 2>/dev/null)"
if [ -f $M/config.json ]; then
  say "--- lmc (bench_moe_cuda model, bf16)"
  timeout 60 $B/bench_moe_cuda model $M --prompt $PROMPT --batch $BATCH --ctx $CTX --steps $STEPS --rounds $ROUNDS \
    >"$OUT/bench_model_lmc.log" 2>&1 || say "lmc model bench FAILED"
  cat "$OUT/bench_model_lmc.log" | tee -a "$S"
  say "--- transformers (bf16)"
  timeout 90 python3 bench/bench_moe_hf.py hf $M $PROMPT $BATCH $CTX $STEPS $ROUNDS >"$OUT/bench_model_hf.log" 2>&1 ||
    say "transformers bench FAILED: $(tail -3 "$OUT/bench_model_hf.log")"
  grep -E "^(prefill|decode)" "$OUT/bench_model_hf.log" | tee -a "$S"
  hp=$(sed -n 's/^prefill .*: \([0-9.]*\) ms.*/\1/p' "$OUT/bench_model_hf.log")
  hd=$(sed -n 's/^decode .*: \([0-9.]*\) ms\/step.*/\1/p' "$OUT/bench_model_hf.log")
  for path in table loop grouped; do
    lp=$(sed -n "s/^prefill .*\[$path\]: \([0-9.]*\) ms.*/\1/p" "$OUT/bench_model_lmc.log")
    ld=$(sed -n "s/^decode .*\[$path\]: \([0-9.]*\) ms\/step.*/\1/p" "$OUT/bench_model_lmc.log")
    [ -n "$lp" ] && [ -n "$hp" ] && say "prefill $PROMPT [$path]: lmc $lp ms, transformers $hp ms: lmc $(awk -v a="$hp" -v b="$lp" 'BEGIN {printf "%.2f", a / b}')x"
    [ -n "$ld" ] && [ -n "$hd" ] && say "decode batch $BATCH [$path]: lmc $ld ms/step, transformers $hd ms/step: lmc $(awk -v a="$hd" -v b="$ld" 'BEGIN {printf "%.2f", a / b}')x"
  done
fi
say "=== total $(($(date +%s) - T0)) s, checks rc=$rc"
exit $rc
