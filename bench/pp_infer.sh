#!/usr/bin/env bash
# pp_infer.sh — pipeline-parallel inference on the CPU: decode tok/s and
# each rank's peak RSS (/usr/bin/time %M) and the CPU seconds of all ranks
# (user + system, whole run: load included; less sensitive to a loaded
# machine than tok/s) of `lmc generate` at PP 1 (one
# process, 1 and 2 threads) and PP 2 (two ranks over tcp, 1 thread each),
# interleaved for R rounds (medians), with the weight bytes each stage's
# loader reports. Greedy, fixed prompt, N new tokens; checks that every run
# gives the PP 1 ids before timing counts. Prints a Markdown table.
# Usage: bench/pp_infer.sh [LMC] [MODEL] [ROUNDS] [N]
set -u
LMC=${1:-build/lmc}; M=${2:-models/kjv-llama}; R=${3:-3}; N=${4:-128}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
G=(-m "$M" -p "And the LORD said unto Moses" -n "$N" --temp 0 --ignore-eos --json)
tps() { sed -n 's/.*"tokens_per_s":\([0-9.]*\).*/\1/p' "$1"; }
ids() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p' "$1"; }
one() { # one THREADS OUT
  /usr/bin/time -f "%M %U %S" -o "$TMP/$2.rss0" "$LMC" generate "${G[@]}" --threads "$1" >"$TMP/$2" 2>"$TMP/$2.err"
}
pp2() { # pp2 OUT
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port /usr/bin/time -f "%M %U %S" -o "$TMP/$1.rss1" \
    "$LMC" generate "${G[@]}" --threads 1 --pp 2 >/dev/null 2>"$TMP/$1.r1.err" &
  RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port /usr/bin/time -f "%M %U %S" -o "$TMP/$1.rss0" \
    "$LMC" generate "${G[@]}" --threads 1 --pp 2 >"$TMP/$1" 2>"$TMP/$1.err"
  wait
}
med() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
for r in $(seq 1 "$R"); do
  one 1 "a$r"; one 2 "b$r"; pp2 "c$r"
  for k in a b c; do
    [ "$(ids "$TMP/$k$r")" = "$(ids "$TMP/a1")" ] || { echo "ids differ: $k$r" >&2; exit 1; }
  done
done
echo "load before/after: $(uptime)" >&2
echo "| run | decode tok/s (median of $R) | CPU s, all ranks (median) | peak RSS rank 0 (MiB) | peak RSS rank 1 (MiB) | stage weight bytes |"
echo "|---|---|---|---|---|---|"
rss() { awk '{print $1}' "$1"; }
cpu() { awk '{s += $2 + $3} END {print s}' "$@"; }
row() { # row LABEL KEY
  local t r0 r1 w c
  t=$(for r in $(seq 1 "$R"); do tps "$TMP/$2$r"; done | med)
  c=$(for r in $(seq 1 "$R"); do cpu "$TMP/$2$r".rss*; done | med)
  r0=$(for r in $(seq 1 "$R"); do rss "$TMP/$2$r.rss0"; done | med)
  r1=$( [ -f "$TMP/${2}1.rss1" ] && for r in $(seq 1 "$R"); do rss "$TMP/$2$r.rss1"; done | med)
  w=$( [ -f "$TMP/${2}1.r1.err" ] && echo "$(sed -n 's/.* \([0-9]*\) weight bytes/\1/p' "$TMP/${2}1.err") / $(sed -n 's/.* \([0-9]*\) weight bytes/\1/p' "$TMP/${2}1.r1.err")")
  printf "| %s | %s | %s | %.1f | %s | %s |\n" "$1" "$t" "$c" "$(echo "$r0 / 1024" | bc -l)" \
    "$( [ -n "$r1" ] && printf %.1f "$(echo "$r1 / 1024" | bc -l)" || echo -)" "${w:--}"
}
row "PP 1, 1 thread" a
row "PP 1, 2 threads" b
row "PP 2 (1 thread a rank)" c
