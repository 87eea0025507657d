#!/usr/bin/env bash
# test_dist_mpi.sh — the mpi communicator under mpirun (2 and 4 ranks on
# this machine, oversubscribed): collectives against serial reductions and
# ZeRO 0-3 against the one-process run (test_dist --mpi), also with MPI's
# own collectives (LMC_DIST_MPI_NATIVE=1); `lmc comm-bench`
# (checked collectives, one process and 3 ranks); a rank killed
# mid-step ends the job with a non-zero status naming it; ranks started
# with different batches are refused at start-up. Skipped when mpirun is
# missing or lmc was built without MPI. Usage: test_dist_mpi.sh PATH/TO/lmc
set -u
LMC="$1"
BIN="$(dirname "$1")/test_dist"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2" >&2; fi; }
skip() { echo "test_dist_mpi: skipped: $1 ($pass passed before)"; exit 0; }
# lmc comm-bench without a launcher: the single communicator's identities
"$LMC" comm-bench --sizes 1000,7 --iters 2 2>/dev/null | grep -q "comm-bench: ok"; ok $? "comm-bench, one process"
command -v mpirun >/dev/null 2>&1 || skip "no mpirun (apt-get install openmpi-bin libopenmpi-dev)"
[ -x "$BIN" ] || skip "no $BIN"
"$BIN" --mpi >/dev/null 2>&1; [ $? = 77 ] && skip "lmc built without MPI"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
# OpenMPI's own allocations are not ours to leak-check in sanitizer builds
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# loopback only, no InfiniBand probing, and an outer guard so nothing hangs
MPIRUN=(timeout 120 mpirun --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)

for n in 2 4; do
  "${MPIRUN[@]}" -np $n "$BIN" --mpi >"$TMP/out" 2>&1
  ok $? "mpirun -np $n test_dist --mpi: $(tail -20 "$TMP/out")"
  grep -q "test_dist --mpi: ok" "$TMP/out"; ok $? "np $n: no ok line: $(tail -5 "$TMP/out")"
  grep "mpi world" "$TMP/out"
done

# MPI's own collectives (LMC_DIST_MPI_NATIVE=1): the same checks within
# 1e-6 (their order of the sums is MPI's, so stages need not match bitwise)
LMC_DIST_MPI_NATIVE=1 "${MPIRUN[@]}" -x LMC_DIST_MPI_NATIVE -np 3 "$BIN" --mpi >"$TMP/out" 2>&1
ok $? "native: mpirun -np 3 test_dist --mpi: $(tail -20 "$TMP/out")"
grep -q "mpi-native world 3 stage 3" "$TMP/out"; ok $? "native: not used: $(tail -5 "$TMP/out")"
grep "mpi-native world" "$TMP/out" | tail -1

# lmc comm-bench under mpirun: checked collectives through lmc_dist_init, on odd sizes
"${MPIRUN[@]}" -np 3 "$LMC" comm-bench --sizes 1001,65537 --iters 2 >"$TMP/out" 2>&1
ok $? "mpirun -np 3 lmc comm-bench: $(tail -5 "$TMP/out")"
grep -q "comm-bench: ok" "$TMP/out"; ok $? "comm-bench: $(cat "$TMP/out")"
grep -q "mpi communicator, 3 ranks" "$TMP/out"; ok $? "comm-bench did not use mpi: $(cat "$TMP/out")"

# a killed rank: mpirun ends the job non-zero and names the rank
"${MPIRUN[@]}" -np 3 "$BIN" --mpi-die >"$TMP/out" 2>&1
rc=$?
[ $rc != 0 ] && [ $rc != 124 ]; ok $? "killed rank: exit $rc"
grep -Eiq "rank 1( |,)|process rank 1" "$TMP/out"; ok $? "killed rank not named: $(cat "$TMP/out")"
grep -Ei "rank 1" "$TMP/out" | head -2

# different batches: refused at start-up on every rank
"${MPIRUN[@]}" -np 2 "$BIN" --mpi-mismatch >"$TMP/out" 2>&1
rc=$?
[ $rc != 0 ] && [ $rc != 124 ]; ok $? "mismatch: exit $rc"
grep -q "ranks disagree on the training configuration: rank 1 has" "$TMP/out"; ok $? "mismatch message: $(cat "$TMP/out")"

echo "test_dist_mpi: $pass passed, $fail failed"
[ $fail = 0 ]
