#!/usr/bin/env bash
# gpu_mp.sh — issue 18 (model parallelism) on one multi-GPU NCCL host
# (e.g. 8 x H100): what can be measured there today, and the PyTorch peer
# numbers the issue's GPU goals are stated against. NOT RUN YET (no
# multi-GPU machine was lent when it was written); every section prints
# what it measures. lmc's tensor/pipeline/context parallelism runs on host
# (CPU) buffers today — the TP linears, the pipeline's send/recv and ring
# attention are not wired to CUDA/NCCL — so no lmc-vs-PyTorch GPU ratio
# can be taken yet; the sections below are the host-side figures that do
# not need that, and the peer's figures for when it exists.
#
# Sections (default: all, in this order):
#   build        Release build of lmc_cli, bench_pp and the test_mp_* programs (build-mp/).
#   check        the model-parallel correctness tests (ctest -R test_mp_) on the host's real
#                cores: TP/PP/CP/DP layouts against one process (no timing).
#   bubble       bench_pp: the 1F1B bubble measured on P real cores (forked ranks, a fixed
#                CPU workload per micro-batch) against (P-1)/(M+P-1), P = 2,4,8, M = 4..32;
#                the issue's goal: within 5% of the model.
#   cp           `lmc train --cp C` (mpirun, C ranks, 2 threads each) on a random 8-layer
#                llama (hidden 512) at sequence lengths SEQS (default 4096 16384 65536) for
#                C = 1 2 4 8: tokens/s of the steps after the first and every rank's peak RSS
#                (VmHWM), next to `lmc info --cp C --seq N`'s per-rank activation bytes;
#                "how far CP goes" on this host's memory (CPU figures, not GPU ones).
#   peer         bench/torch_tp_peer.py under torchrun on all GPUs (NCCL): all-reduce and
#                all-gather bus bandwidth 1 MiB..1 GiB, then a Megatron-style TP-NGPU Llama-8B-
#                shape layer stack (bf16, 4 layers, 4096 tokens): step time, tokens/s, MFU
#                against --peak-tflops (H100 SXM bf16 dense 989). The issue's >= 45% MFU goal
#                is for lmc; this is the peer's figure to compare with once lmc's TP runs on GPUs.
# Results: $OUT/gpu-mp.md (Markdown: date, commit, machine, commands, tables) and the logs.
# Usage: bench/gpu_mp.sh [build] [check] [bubble] [cp] [peer]
# env: OUT (default /tmp/lmc-gpu-mp), NGPU (default: nvidia-smi's count), SEQS, CPS ("1 2 4 8"),
#      CP_LINES (cp data lines, 120000), B (build dir, build-mp), PEAK_TFLOPS (989), BUDGET_S (whole script, default 1500; sections skipped when it runs out)
. "$(dirname "$0")/gpu_common.sh"
OUT=${OUT:-/tmp/lmc-gpu-mp}
B=${B:-build-mp}
BUDGET_S=${BUDGET_S:-1500}
SEQS=${SEQS:-4096 16384 65536}
CPS=${CPS:-1 2 4 8}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l)}
mkdir -p "$OUT"
MD="$OUT/gpu-mp.md"
secs=${*:-build check bubble cp peer}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPI="mpirun --allow-run-as-root --bind-to none --mca btl self,vader,tcp"
{
  echo "# gpu_mp.sh — model parallelism on a multi-GPU host"
  echo
  echo "date $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null), $(nproc) CPUs,"\
       "$NGPU GPUs: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
  echo "command: bench/gpu_mp.sh $secs"
  echo
} >"$MD"
rc=0
if has build; then
  echo "== build: Release lmc_cli, bench_pp, test_mp_*"
  cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DLMC_WERROR=ON >"$OUT/build.log" 2>&1 &&
    make -C $B -j"$(nproc)" lmc_cli bench_pp test_mp_tp test_mp_tp_model test_mp_tp_train test_mp_pp \
      test_mp_pp_model test_mp_ring test_mp_cp_train test_mp_split test_mp_mem >>"$OUT/build.log" 2>&1 ||
    { tail -30 "$OUT/build.log"; exit 1; }
fi
if has check && [ "$(left)" -gt 120 ]; then
  echo "== check: ctest -R test_mp_ (layouts against one process; correctness only)"
  ctest --test-dir $B -R test_mp_ -j4 >"$OUT/check.log" 2>&1; r=$?
  tail -4 "$OUT/check.log"
  { echo "## check (ctest -R test_mp_): rc $r"; echo; echo '```'; tail -4 "$OUT/check.log"; echo '```'; echo; } >>"$MD"
  [ $r = 0 ] || rc=1
fi
if has bubble && [ "$(left)" -gt 120 ]; then
  echo "== bubble: bench_pp on real cores (1F1B measured vs (P-1)/(M+P-1))"
  timeout 600 $B/bench_pp --stages 2,4,8 --micro 4,8,16,32 --rounds 5 >"$OUT/bubble.log" 2>&1; r=$?
  cat "$OUT/bubble.log"
  { echo "## bubble: \`$B/bench_pp --stages 2,4,8 --micro 4,8,16,32 --rounds 5\` (rc $r)"; echo; echo '```';
    cat "$OUT/bubble.log"; echo '```'; echo; } >>"$MD"
fi
if has cp && [ "$(left)" -gt 180 ]; then
  echo "== cp: lmc train --cp C, tokens/s and per-rank peak RSS by sequence length (host CPUs)"
  W=$OUT/cp-work
  rm -rf "$W" && mkdir -p "$W"
  python3 - "$W/c.txt" "${CP_LINES:-120000}" <<'PY'
import random, sys
random.seed(1)
words = [f"w{i}" for i in range(3000)]
with open(sys.argv[1], "w") as f:
    for _ in range(int(sys.argv[2])): f.write(" ".join(random.choice(words) for _ in range(12)) + "\n")
PY
  $B/lmc train-tokenizer --text-file "$W/c.txt" --vocab 4096 --style llama3 -o "$W/tok" >"$OUT/cp-data.log" 2>&1 &&
    $B/lmc prepare-data -m "$W/tok" --text-file "$W/c.txt" --val-fraction 0.01 -o "$W/data" >>"$OUT/cp-data.log" 2>&1 ||
    { echo "cp: data failed: $(tail -3 "$OUT/cp-data.log")"; rc=1; }
  ARCH="--arch llama --layers 8 --hidden 512 --heads 8 --kv-heads 4 --intermediate 1408 --max-pos 262144"
  # the model's folder for lmc info (one step at a short length)
  $B/lmc train --data "$W/data" $ARCH --seq 64 --batch 1 --steps 1 --warmup 0 -o "$W/init" >>"$OUT/cp-data.log" 2>&1
  { echo "## cp: \`mpirun -np C lmc train --data D $ARCH --seq N --batch 1 --steps 4 --cp C --threads 2\`"; echo;
    echo "| seq | C | tokens/s (steps 2-4) | peak RSS per rank, MiB (max over ranks) | lmc info: activations per rank, MiB | status |";
    echo "|---|---|---|---|---|---|"; } >>"$MD"
  for N in $SEQS; do
    for C in $CPS; do
      [ "$(left)" -gt 150 ] || { echo "cp: budget spent"; break 2; }
      [ $((C * 2)) -le "$(nproc)" ] || continue
      log="$OUT/cp-$N-$C.log"
      info=$($B/lmc info -m "$W/init/step_000001" --tp 1 --pp 1 --cp "$C" --seq "$N" --batch 1 --json 2>/dev/null |
             python3 -c 'import json,sys; print(round(json.load(sys.stdin)["activations"] / 2**20, 1))' 2>/dev/null)
      /usr/bin/time -f "rss_kib %M" timeout 300 $MPI -np "$C" $B/lmc train --data "$W/data" $ARCH --seq "$N" --batch 1 \
        --steps 4 --warmup 0 --cp "$C" --threads 2 -o "$W/out-$N-$C" >"$log" 2>&1
      r=$?
      tps=$(python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][1:]; print(round(sum(x["tokens_per_s"] for x in r)/len(r),1) if r else "-")' \
            "$W/out-$N-$C/metrics.jsonl" 2>/dev/null || echo -)
      rss=$(sed -n 's/^rss_kib \([0-9]*\)/\1/p' "$log" | tail -1)
      echo "| $N | $C | $tps | ${rss:+$((rss / 1024))} | ${info:--} | rc $r$(grep -q 'out of memory\|Killed' "$log" && echo ', OOM') |" >>"$MD"
      echo "seq $N cp $C: $tps tok/s, rss ${rss:-?} KiB (largest rank), rc $r"
      rm -rf "$W/out-$N-$C"
    done
  done
  echo >>"$MD"
  echo "(peak RSS is GNU time's largest process of the job: the largest rank's VmHWM.)" >>"$MD"
fi
if has peer && [ "$(left)" -gt 120 ]; then
  if [ "$NGPU" -lt 2 ]; then
    echo "peer: needs >= 2 GPUs (found $NGPU); skipped" | tee -a "$MD"
  else
    echo "== peer: PyTorch NCCL collectives and TP-$NGPU Llama-8B-shape layers (bench/torch_tp_peer.py)"
    timeout "$(( $(left) - 30 ))" torchrun --standalone --nproc-per-node "$NGPU" bench/torch_tp_peer.py collectives tp \
      --peak-tflops "$PEAK_TFLOPS" >"$OUT/peer.log" 2>&1; r=$?
    grep '^{' "$OUT/peer.log"
    { echo "## peer: \`torchrun --nproc-per-node $NGPU bench/torch_tp_peer.py collectives tp --peak-tflops $PEAK_TFLOPS\` (rc $r)";
      echo; echo '```'; grep '^{' "$OUT/peer.log"; echo '```'; echo;
      echo "The PyTorch peer's figures only: lmc's TP/PP/CP do not run on GPUs yet, so no ratio."; } >>"$MD"
    [ $r = 0 ] || rc=1
  fi
fi
echo "=== $MD ($(($(date +%s) - T0)) s)"
exit $rc
