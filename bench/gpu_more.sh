#!/usr/bin/env bash
# gpu_more.sh — the capability runs of the GPU issues in one device call,
# each in its own time limit and folder, the summary printed last:
#   dm     the default model retrained on the GPU (issue 20): the README
#          recipe's shape and data with STEPS_X times its steps, for each
#          X in DM_X (default "2 5"); validation perplexity of each against
#          the shipped model's (49.3); the best run's folder comes back in
#          $OUT as dm-best.tar.gz.part-* when it beats the shipped one
#   moe    bench/gpu_moe.sh (issue 14/21: CUDA MoE ops, parity, timings)
#   chat   scripts/train_chat_model.sh --device cuda (issue 12: the chat
#          model that recalls verses; folder back as chat.tar.gz.part-*)
#   optim  bench/gpu_optim.sh (issue 16/21)
#   kv     bench/gpu_kv.sh (issue 17/21)
# Usage (device): source .devdeps/device-deps.sh unpack && bench/gpu_more.sh SECTION...
# env: BUDGET_S (whole call, default 560), LIM_<SECTION> (seconds for one).
. "$(dirname "$0")/gpu_common.sh"
BUDGET_S=${BUDGET_S:-560}
OUT=${OUT:-/tmp/lmc-gpu-out}
L=/tmp/lmc-gpu-more
rm -rf $L && mkdir -p $L "$OUT"
S=$L/summary.txt
B=build-dev
gpu_devdeps
say "date $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
gpu_build $B $L/build.log lmc_cli lmc_cuda ||
  { tail -40 $L/build.log; exit 1; }
say "build ok ($(($(date +%s) - T0)) s)"
# pack DIR NAME: DIR as $OUT/NAME.tar.gz.part-aa, -ab, ... (the device returns files of at most 16 MiB)
pack() { tar -czf $L/$2.tar.gz -C "$(dirname "$1")" "$(basename "$1")" && split -b 15M $L/$2.tar.gz "$OUT/$2.tar.gz.part-"; }
# limit SECTION DEFAULT: the section's seconds, capped by what is left
limit() { local v="LIM_$1"; local l=${!v:-$2}; local r=$(( $(left) - 10 )); echo $(( l < r ? l : r )); }

for sec in "$@"; do
  lim=$(limit $sec 200)
  [ "$lim" -gt 30 ] || { say "--- $sec skipped: $(left) s left"; continue; }
  say "--- $sec (limit ${lim} s)"
  case $sec in
  dm)
    best=""; bestp=49.3; st=$(date +%s)
    for x in ${DM_X:-2 5}; do
      rl=$(( lim - ($(date +%s) - st) )); [ $rl -gt 20 ] || { say "dm x$x: out of time"; break; }
      d=/tmp/dm-x$x; rm -rf $d
      t=$(date +%s)
      LMC=$B/lmc STEPS1=$((470 * x)) STEPS2=$((460 * x)) timeout $rl \
        scripts/train_default_model.sh $d --device cuda >$L/dm-x$x.log 2>&1
      r=$?
      p=$(grep -o '"ppl":[0-9.]*' $L/dm-x$x.log | tail -1 | cut -d: -f2)
      say "dm x$x (steps $((470 * x)) + $((460 * x))): rc=$r val ppl ${p:-none} ($(( $(date +%s) - t )) s); $(grep -E 'tok/s' $L/dm-x$x.log | tail -1 | cut -c1-100)"
      if [ $r = 0 ] && [ -n "$p" ] && awk -v a="$p" -v b="$bestp" 'BEGIN {exit !(a < b)}'; then best=$d; bestp=$p; fi
    done
    if [ -n "$best" ]; then
      cp $best/metrics.jsonl $best/kjv-llama/ 2>/dev/null; cp $best/loss.svg $best/kjv-llama/ 2>/dev/null
      pack $best/kjv-llama dm-best && say "dm: best $best (ppl $bestp) packed"
    fi
    ;;
  moe)
    [ -x bench/gpu_moe.sh ] || { say "moe: no bench/gpu_moe.sh"; continue; }
    OUT=$L/moe timeout $lim bench/gpu_moe.sh >$L/moe.log 2>&1; say "moe rc=$?"
    cat $L/moe/summary.txt >>$S 2>/dev/null
    ;;
  chat)
    [ -x scripts/train_chat_model.sh ] || { say "chat: no scripts/train_chat_model.sh"; continue; }
    rm -rf /tmp/chat
    LMC=$B/lmc TRAIN_SECONDS=${CHAT_TRAIN_S:-150} timeout $lim scripts/train_chat_model.sh /tmp/chat --device cuda >$L/chat.log 2>&1
    r=$?; say "chat rc=$r"
    cat /tmp/chat/recall.md >>$S 2>/dev/null
    [ $r = 0 ] && [ -d /tmp/chat/kjv-llama-chat ] && {
      cp /tmp/chat/recall.md /tmp/chat/ft.metrics.jsonl /tmp/chat/loss.svg /tmp/chat/kjv-llama-chat/ 2>/dev/null
      pack /tmp/chat/kjv-llama-chat chat && say "chat: packed"; }
    ;;
  optim)
    [ -x bench/gpu_optim.sh ] || { say "optim: no bench/gpu_optim.sh"; continue; }
    OUT=$L/optim BUDGET_S=$lim timeout $((lim + 10)) bench/gpu_optim.sh >$L/optim.log 2>&1; say "optim rc=$?"
    cat $L/optim/table.md >>$S 2>/dev/null
    ;;
  kv)
    [ -x bench/gpu_kv.sh ] || { say "kv: no bench/gpu_kv.sh"; continue; }
    OUT=$L/kv BUDGET_S=$lim timeout $((lim + 10)) bench/gpu_kv.sh >$L/kv.log 2>&1; say "kv rc=$?"
    tail -30 $L/kv.log >>$S
    ;;
  *) say "unknown section $sec" ;;
  esac
done
cp $S "$OUT/summary.txt"
tar -czf "$OUT/logs-more.tar.gz" -C $L --exclude='*.tar.gz' . 2>/dev/null
say "=== total $(($(date +%s) - T0)) s"
