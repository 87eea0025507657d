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
MP_LEAKS=1 # the one-process comm-bench with LeakSanitizer on; off for mpirun's ranks (mp_leaks_off below)
export LMC_DIST_TIMEOUT=${LMC_DIST_TIMEOUT:-300} # the library's default, not mp_launch.sh's 120
. "$(dirname "$0")/mp_launch.sh" "$1"
BIN="$(dirname "$LMC")/test_dist"
skip() { echo "test_dist_mpi: skipped: $1 ($pass passed before)"; exit 0; }
# lmc comm-bench without a launcher: the single communicator's identities
"$LMC" comm-bench --sizes 1000,7 --iters 2 2>/dev/null | grep -q "comm-bench: ok"; ok $? "comm-bench, one process"
command -v mpirun >/dev/null 2>&1 || skip "no mpirun (apt-get install openmpi-bin libopenmpi-dev)"
[ -x "$BIN" ] || skip "no $BIN"
"$BIN" --mpi >/dev/null 2>&1; [ $? = 77 ] && skip "lmc built without MPI"
# OpenMPI's own allocations are not ours to leak-check in sanitizer builds
mp_leaks_off
# mp_launch.sh's loopback-only mpirun, with an outer guard so nothing hangs
MPIRUN=(timeout 120 "${MPIRUN[@]}")

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
