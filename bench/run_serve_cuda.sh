#!/usr/bin/env bash
# run_serve_cuda.sh — serving benchmark on the GPU machine: builds the CUDA
# targets, runs the paged-attention op test and the GPU scheduler test,
# makes the random 1.1B Llama (bench/bench_cuda.py makemodel), starts
# `lmc serve --device cuda` on 127.0.0.1 and drives it with `lmc
# bench-serve` at concurrency 1, 8, 64, 256 (streaming, prompt P random
# tokens, M new tokens with ignore_eos), samples /metrics during each level
# for the KV waste (1 - tokens stored / (blocks used x block size); the mean
# over the samples taken while blocks were in use, and the worst), then
# times transformers' batched greedy `generate` at batch 64 on the same
# weights (prompt P, M new tokens) for the ratio. Appends a Markdown table
# to bench/results/serve-cuda-<date>.md; logs to $OUT (or /tmp/lmc-serve-out).
# Sections: build test bench hf (default: all).
# Usage (device): source .devdeps/device-deps.sh unpack && bench/run_serve_cuda.sh [SECTION ...]
# env: P, M, LEVELS, KV_BLOCKS, STEP_TOKENS, OPS_ARGS (e.g. --quick for
# test_ops_cuda), COMMIT (recorded when the tree has no .git)
set -u -o pipefail
cd "$(dirname "$0")/.."
. bench/serve_level.sh
OUT=${OUT:-/tmp/lmc-serve-out}
mkdir -p "$OUT"
secs=${*:-build test bench hf}
has() { [[ " $secs " == *" $1 "* ]]; }
P=${P:-128}; M=${M:-128}; LEVELS=${LEVELS:-"1 8 64 256"}
BLOCK=${BLOCK:-8}; KV_BLOCKS=${KV_BLOCKS:-8192}; STEP_TOKENS=${STEP_TOKENS:-2048}
B=build-dev
MODEL=/tmp/llama-1.1b
rc=0
GPU=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
echo "date $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo "${COMMIT:-unknown}") $GPU"
if has build || [ ! -x $B/lmc ]; then
  cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DLMC_WERROR=${LMC_WERROR:-OFF} >"$OUT/build.log" 2>&1 &&
    make -C $B -j16 lmc_cli test_ops_cuda test_sched_cuda >>"$OUT/build.log" 2>&1 ||
    { tail -40 "$OUT/build.log"; exit 1; }
  echo "build ok"
fi
if has test; then
  timeout 150 $B/test_ops_cuda ${OPS_ARGS:-} >"$OUT/test_ops_cuda.log" 2>&1; r=$?
  grep -E "max rel err|passed|failed" "$OUT/test_ops_cuda.log" | tail -20
  grep "^FAIL" "$OUT/test_ops_cuda.log" | head -20
  echo "test_ops_cuda rc=$r"; [ $r = 0 ] || rc=1
  timeout 120 $B/test_sched_cuda >"$OUT/test_sched_cuda.log" 2>&1; r=$?
  tail -12 "$OUT/test_sched_cuda.log"
  echo "test_sched_cuda rc=$r"; [ $r = 0 ] || rc=1
fi
RES=bench/results/serve-cuda-$(date -u +%F).md
if has bench; then
  [ -f $MODEL/config.json ] || python3 bench/bench_cuda.py makemodel $MODEL 2>&1 | grep -v Warning | tail -1
  # a byte-level tokenizer of the model's 32000 ids (bench-serve sends ids;
  # generated ids only need to decode): 256 byte tokens, the rest "w<n>"
  python3 - $MODEL <<'EOF'
import json, sys
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256)); cs = bs[:]
for b in range(256):
    if b not in bs: bs.append(b); cs.append(256 + len(cs) - 188)
vocab = {chr(c): i for i, c in enumerate(cs)}
while len(vocab) < 32000: vocab["w%d" % len(vocab)] = len(vocab)
bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
json.dump({"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": bl,
           "post_processor": None, "decoder": bl, "model": {"type": "BPE", "unk_token": None,
           "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []}},
          open(sys.argv[1] + "/tokenizer.json", "w"))
json.dump({"model_max_length": 2048}, open(sys.argv[1] + "/tokenizer_config.json", "w"))
EOF
  LOG="$OUT/serve.log"
  $B/lmc serve -m $MODEL --device cuda --port 0 --max-batch 256 --block-size $BLOCK \
    --kv-blocks $KV_BLOCKS --max-step-tokens $STEP_TOKENS --max-connections 600 --max-active 600 2>"$LOG" &
  SRV=$!
  trap 'kill $SRV 2>/dev/null' EXIT
  for _ in $(seq 600); do grep -q "listening on" "$LOG" && break; sleep 0.1; done
  URL=$(grep -o "http://127.0.0.1:[0-9]*" "$LOG" | head -1)
  [ -n "$URL" ] || { cat "$LOG"; exit 1; }
  {
    echo "## Run at $(date -u +%FT%TZ)"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo "${COMMIT:-unknown}")$(git rev-parse -q HEAD >/dev/null 2>&1 && ! git diff --quiet HEAD -- src tools && echo ' (+ uncommitted changes)')"
    echo "- device: $GPU"
    echo "- model: random 1.1B Llama (bench/bench_cuda.py makemodel: 22 layers, hidden 2048, 32 heads, 4 KV heads, bf16 weights, bf16 KV pool)"
    echo "- server: \`lmc serve --device cuda --max-batch 256 --block-size $BLOCK --kv-blocks $KV_BLOCKS --max-step-tokens $STEP_TOKENS --max-connections 600 --max-active 600\`"
    echo "- load: \`lmc bench-serve\`, streaming, prompt $P random tokens, $M new tokens (ignore_eos), greedy"
    echo "- command: \`bench/run_serve_cuda.sh $*\`"
    echo
    echo "| concurrency | requests | failed | output tok/s | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) | KV waste mean / worst sample |"
    echo "|---|---|---|---|---|---|---|"
  } >>"$RES"
  # warm-up (plans, allocations)
  $B/lmc bench-serve --url "$URL" --concurrency 8 --requests 8 --prompt-len "$P" --max-tokens 16 >/dev/null 2>&1
  for C in $LEVELS; do
    N=$(( C * 2 > 8 ? C * 2 : 8 ))
    serve_level $B/lmc "$URL" "$C" "$N" "$P" "$M" "$BLOCK" "$OUT/bench_serve.json" | tee -a "$RES"
  done
  kill $SRV 2>/dev/null; wait $SRV 2>/dev/null
  echo >>"$RES"
fi
if has hf; then
  PYTHONUNBUFFERED=1 timeout 200 python3 - "$MODEL" "$P" "$M" <<'EOF' 2>&1 | grep -v -i -e warn -e "Loading weights" | tee -a "$RES"
import sys, time, torch
from transformers import LlamaForCausalLM
d, P, G = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = LlamaForCausalLM.from_pretrained(d, dtype=torch.bfloat16).cuda().eval()
ids = torch.randint(0, m.config.vocab_size, (64, P), device="cuda")
gen = lambda: m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=G,
                         min_new_tokens=G, do_sample=False, pad_token_id=0)
with torch.no_grad():
    gen()
    ts = []
    for _ in range(2):
        torch.cuda.synchronize(); t0 = time.perf_counter(); gen(); torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
t = sorted(ts)[len(ts) // 2]
print(f"\ntransformers {__import__('transformers').__version__} batched generate, batch 64, prompt {P}, "
      f"{G} new tokens, greedy, bf16: {t:.2f} s, {64 * G / t:.1f} output tokens/s (median of 2 after a warm-up)\n")
EOF
fi
cp "$RES" "$OUT/" 2>/dev/null
echo "results appended to $RES"
exit $rc
