#!/bin/bash
# ab_serve_cputime.sh — A/B of lmc serve builds on a loaded machine: output
# tok/s and each server's CPU seconds (utime + stime from /proc, ticks of
# 1/100 s) over each `lmc bench-serve` run; runs interleaved, the order
# reversed on even rounds. Servers: NEW (default pool), NEW with
# --kv-dtype f32, and MAIN (a baseline build), all on GGUF with 2 threads.
#   NEW=build/lmc MAIN=/path/to/main/lmc LEVELS="8 64" NREQ=N ROUNDS=1 [SKIP32=1] bench/ab_serve_cputime.sh
# SKIP32=1: no --kv-dtype f32 server (new and main only). Each (level,
# round) sends its own prompt set (bench-serve --prompt-set: no prefix-cache
# hits from earlier runs), the same for every server of that round.
# One line per run: name, concurrency, round, load, cpu_ticks, wall, the bench-serve JSON.
G=${GGUF:-/tmp/lmc-bench-125m-f16.gguf}
NEW=${NEW:-build/lmc}; MAIN=${MAIN:?set MAIN to the baseline lmc}
TMP=$(mktemp -d)
declare -A PIDS URLS
start() { # name extra-args bin
  local n=$1 extra=$2 bin=$3
  # shellcheck disable=SC2086
  "$bin" serve -m "$G" --port 0 --threads 2 --max-batch 64 --max-connections 272 --ctx 272 $extra 2>"$TMP/$n.log" &
  PIDS[$n]=$!
}
NAMES="new new32 main"; [ "${SKIP32:-0}" = 1 ] && NAMES="new main"
start new "" "$NEW"; [ "${SKIP32:-0}" = 1 ] || start new32 "--kv-dtype f32" "$NEW"; start main "" "$MAIN"
trap 'kill ${PIDS[new]} ${PIDS[new32]:-} ${PIDS[main]} 2>/dev/null; rm -rf "$TMP"' EXIT
for n in $NAMES; do
  for _ in $(seq 300); do u=$(grep -o "http://127.0.0.1:[0-9]*" "$TMP/$n.log" | head -1); [ -n "$u" ] && break; sleep 0.3; done
  [ -n "$u" ] || { cat "$TMP/$n.log" >&2; exit 1; }
  URLS[$n]=$u; head -1 "$TMP/$n.log"
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
set_no=0
for C in ${LEVELS:-8 64}; do
  N=${NREQ:-$(( C * 2 > 32 ? C * 2 : 32 ))}
  for r in $(seq "${ROUNDS:-1}"); do
    set_no=$((set_no + 1))
    order="new main new32"; [ $((r % 2)) = 0 ] && order="new32 main new"
    [ "${SKIP32:-0}" = 1 ] && { order="new main"; [ $((r % 2)) = 0 ] && order="main new"; }
    for n in $order; do
      c0=$(cpu "${PIDS[$n]}"); t0=$(date +%s.%N); l0=$(cut -d' ' -f1 /proc/loadavg)
      j=$("$NEW" bench-serve --url "${URLS[$n]}" --concurrency "$C" --requests "$N" --prompt-len 128 --max-tokens 128 --prompt-set "$set_no" --json 2>/dev/null)
      c1=$(cpu "${PIDS[$n]}"); t1=$(date +%s.%N)
      echo "$n C=$C r=$r load=$l0 cpu_ticks=$((c1 - c0)) wall=$(echo "$t1 - $t0" | bc) $j"
    done
  done
done
