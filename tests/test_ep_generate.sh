#!/usr/bin/env bash
# test_ep_generate.sh — expert parallelism end to end: `lmc generate --ep N`
# on mixtral-tiny (4 experts) and qwen3moe-tiny (8 experts) gives the
# one-process greedy ids (--json, 12 tokens, float32): 2 ranks joined by
# torchrun-style variables over tcp (a free port from the OS, held for
# them: port_hold.sh), and under mpirun (--oversubscribe, run-as-root
# allowed) 2 and 4 ranks, plus the alltoallv checks of
# test_comm_alltoallv --mpi on 2 and 3 ranks; rank 0 alone prints. A run
# whose world is not --ep, more ranks than experts and a dense model are
# refused. The mpirun part is skipped when mpirun is missing or lmc was
# built without MPI. Usage: test_ep_generate.sh PATH/TO/lmc
set -u
MP_LEAKS=1 # the one-process and tcp runs with LeakSanitizer on; off for mpirun's ranks (mp_leaks_off below)
export LMC_DIST_TIMEOUT=${LMC_DIST_TIMEOUT:-300} # the library's default under mpirun (the tcp pair: 60)
. "$(dirname "$0")/mp_launch.sh" "$1"
A2A="$(dirname "$LMC")/test_comm_alltoallv"
ids() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p' "$1"; }
GEN=(generate -p "hello world, this is" -n 12 --temp 0 --ignore-eos --dtype f32 --json)
for fx in mixtral-tiny qwen3moe-tiny; do
  M=tests/fixtures/$fx
  "$LMC" "${GEN[@]}" -m "$M" >"$TMP/$fx.one" 2>"$TMP/one.err"
  ok $? "$fx one process: $(cat "$TMP/one.err")"
  [ -n "$(ids "$TMP/$fx.one")" ]; ok $? "$fx: no ids"
  # two ranks over tcp: rank r's stdout in $TMP/tcp.r<r>, its stderr in $TMP/tcp.r<r>.err
  LMC_DIST_TIMEOUT=60 MP_SPLIT=1 mp_ranks 2 tcp "${GEN[@]}" -m "$M" --ep 2
  ok $? "$fx --ep 2 (tcp): $(cat "$TMP/tcp.r0.err" "$TMP/tcp.r1.err")"
  [ "$(ids "$TMP/$fx.one")" = "$(ids "$TMP/tcp.r0")" ]; ok $? "$fx --ep 2 (tcp) ids [$(ids "$TMP/tcp.r0")] vs [$(ids "$TMP/$fx.one")]"
  [ ! -s "$TMP/tcp.r1" ]; ok $? "$fx rank 1 printed: $(cat "$TMP/tcp.r1")"
done
# refusals
"$LMC" "${GEN[@]}" -m tests/fixtures/mixtral-tiny --ep 2 >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ] && grep -q "needs 2 ranks" "$TMP/err"; ok $? "--ep 2 without ranks: $(cat "$TMP/err")"
"$LMC" "${GEN[@]}" -m tests/fixtures/mixtral-tiny --ep 0 >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ]; ok $? "--ep 0 accepted"

command -v mpirun >/dev/null 2>&1 || { echo "test_ep_generate: mpirun part skipped (no mpirun)"; echo "test_ep_generate: $pass passed, $fail failed"; [ $fail = 0 ]; exit; }
"$A2A" --mpi >/dev/null 2>&1; [ $? = 77 ] && { echo "test_ep_generate: mpirun part skipped (built without MPI)"; echo "test_ep_generate: $pass passed, $fail failed"; [ $fail = 0 ]; exit; }
mp_leaks_off
MPIRUN=(timeout 120 "${MPIRUN[@]}")
for n in 2 3; do
  "${MPIRUN[@]}" -np $n "$A2A" --mpi >"$TMP/out" 2>&1
  ok $? "mpirun -np $n test_comm_alltoallv --mpi: $(tail -20 "$TMP/out")"
  grep -q "test_comm_alltoallv --mpi: ok ($n ranks)" "$TMP/out"; ok $? "np $n: no ok line: $(tail -5 "$TMP/out")"
done
for run in "mixtral-tiny 2" "mixtral-tiny 4" "qwen3moe-tiny 4"; do
  set -- $run
  "${MPIRUN[@]}" -np $2 "$LMC" "${GEN[@]}" -m tests/fixtures/$1 --ep $2 --threads 1 >"$TMP/mpi" 2>"$TMP/mpi.err"
  ok $? "$1 mpirun --ep $2: $(tail -5 "$TMP/mpi.err")"
  [ "$(grep -c '"ids"' "$TMP/mpi")" = 1 ]; ok $? "$1 mpirun --ep $2: one rank prints: $(cat "$TMP/mpi")"
  [ "$(ids "$TMP/$1.one")" = "$(ids "$TMP/mpi")" ]; ok $? "$1 mpirun --ep $2 ids [$(ids "$TMP/mpi")] vs [$(ids "$TMP/$1.one")]"
done
# more ranks than experts (mixtral-tiny has 4)
"${MPIRUN[@]}" -np 5 "$LMC" "${GEN[@]}" -m tests/fixtures/mixtral-tiny --ep 5 --threads 1 >"$TMP/o" 2>"$TMP/err"
[ $? != 0 ] && grep -q "4 experts cannot be split over 5 ranks" "$TMP/err"; ok $? "--ep 5 on 4 experts: $(tail -3 "$TMP/err")"
# a dense model
"${MPIRUN[@]}" -np 2 "$LMC" "${GEN[@]}" -m tests/fixtures/llama-tiny --ep 2 --threads 1 >"$TMP/o" 2>"$TMP/err"
[ $? != 0 ] && grep -q "is a dense model" "$TMP/err"; ok $? "--ep on a dense model: $(tail -3 "$TMP/err")"
echo "test_ep_generate: $pass passed, $fail failed"
[ $fail = 0 ]
