#!/usr/bin/env bash
# zero_rss.sh — per-rank peak resident set of `mpirun -np N lmc train` for
# ZeRO 0-3 at N = 1, 2, 4 on a random llama trained for 2 steps: each
# rank's peak after set-up (/usr/bin/time %M: lmc restarts the kernel's
# peak counter at the end of set-up, lmc_zero_mark_setup, so this is the
# training and final checkpoint's peak), the set-up peak lmc logs on rank 0
# (every rank runs the same set-up), and rank 0's ZeRO state. A rank's
# whole-run peak is the larger of its two figures. With a second binary (BASE, e.g. the parent
# commit's) every configuration also runs with it, interleaved, so the two
# set-ups are compared in one run on one machine.
# Usage: bench/zero_rss.sh LMC [BASE_LMC]   (env: LAYERS HIDDEN INTER WORLDS STAGES)
# Prints a Markdown table: binary, N, ZeRO, each rank's peak since set-up
# (MiB), rank 0's set-up peak and ZeRO state (from its log).
set -u
LMC="$1"; BASE="${2:-}"
LAYERS=${LAYERS:-8}; HIDDEN=${HIDDEN:-512}; INTER=${INTER:-1536}
WORLDS=${WORLDS:-"1 2 4"}; STAGES=${STAGES:-"0 1 2 3"}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo
        --mca oob_tcp_if_include lo)
for i in $(seq 1 300); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 13))"; done >"$TMP/c.txt"
"$LMC" train-tokenizer --text-file "$TMP/c.txt" --vocab 300 --style llama3 -o "$TMP/tok" 2>/dev/null &&
"$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/c.txt" --docs line --val-fraction 0.1 -o "$TMP/data" 2>/dev/null ||
  { echo "zero_rss: cannot make the data" >&2; exit 1; }
A="--data $TMP/data --arch llama --layers $LAYERS --hidden $HIDDEN --heads 8 --intermediate $INTER --seq 16
   --batch 1 --steps 2 --save-every 0 --eval-every 0 --threads 1"
echo "| binary | N | ZeRO | peak RSS since set-up, per rank (MiB) | set-up peak, rank 0 (MiB) | rank 0 ZeRO state (MiB) |"
echo "|---|---|---|---|---|---|"
for n in $WORLDS; do
  for z in $STAGES; do
    for b in new base; do
      bin="$LMC"; [ $b = base ] && bin="$BASE"
      [ -n "$bin" ] || continue
      "${MPIRUN[@]}" -np "$n" bash -c '/usr/bin/time -f "RSS $OMPI_COMM_WORLD_RANK %M" -o "$0.$OMPI_COMM_WORLD_RANK" "$@"' \
        "$TMP/rss" "$bin" train $A --zero "$z" -o "$TMP/out" 2>"$TMP/err" ||
        { echo "zero_rss: $b N=$n zero $z failed: $(tail -n 3 "$TMP/err")" >&2; continue; }
      rss=$(for r in $(seq 0 $((n - 1))); do awk '/^RSS/ {printf "%.0f", $3 / 1024}' "$TMP/rss.$r"; echo; done | paste -sd/)
      setup=$(sed -n 's/.*(set-up \([0-9.]*\) MiB).*/\1/p' "$TMP/err" | tail -n 1)
      state=$(sed -n 's/.*: state \([0-9.]*\) MiB.*/\1/p' "$TMP/err" | tail -n 1)
      echo "| $b | $n | $z | $rss | ${setup:--} | ${state:--} |"
      rm -rf "$TMP/out" "$TMP"/rss.*
    done
  done
done
