# shellcheck shell=bash
# mp_launch.sh — the launcher set-up every model-parallel test shares
# (tests/test_mp_*.sh and the other multi-rank tests source it; not a test
# itself: CMake globs test_*.sh).
#   . "$(dirname "$0")/mp_launch.sh" "$1"
# sets LMC (the lmc binary, made absolute), pass / fail and ok, TMP (a
# temporary folder removed at exit; KEEP_TMP=DIR keeps DIR instead), exports
# LMC_DIST_TIMEOUT=120 (unless set), Open MPI's run-as-root and
# oversubscribe variables and, unless MP_LEAKS=1 was set before sourcing,
# LeakSanitizer off (Open MPI's own allocations are never freed; mp_leaks_off
# turns it off later); MPIRUN, mpirun's command line (loopback tcp, run as
# root allowed, oversubscribed; HAVE_MPIRUN=1 when it is installed); and
#   mp_ranks W OUT ARGS...  W ranks of `lmc ARGS...` over tcp (torchrun-style
#       variables at a port from the OS, held for them from the pick until
#       they are done: port_hold.sh, so no other process takes it before
#       rank 0 listens). Rank r's stdout and
#       stderr in $TMP/OUT.r<r>; with MP_SPLIT=1 its stderr in
#       $TMP/OUT.r<r>.err; rank 0's in $TMP/OUT.$MP_R0 when MP_R0 is set.
#       Returns rank 0's exit status, else 1 when another rank failed.
#   mp_no_mpi FILE  true when FILE says lmc was built without MPI
#   mp_probe ARGS...  USE_MPI=1 when `mpirun -np 2 lmc ARGS... -o $TMP/probe`
#       works with this lmc (its stderr in $TMP/probe.err; a failure other
#       than "no MPI" counts as a failed check), else USE_MPI=0
#   launch W CMD OUT ARGS...  W ranks of `lmc CMD ARGS... -o $TMP/OUT`:
#       under mpirun when USE_MPI=1, else mp_ranks; rank 0's stderr in
#       $TMP/OUT.err (with mpirun every rank's)
#   last OUT  the last 3 lines of $TMP/OUT.err
#   mp_data  the tests' corpus (300 numbered lines) in $TMP/c.txt, a llama3-style
#       byte-level BPE tokenizer of 300 in $TMP/tok and the corpus's token
#       shards (a tenth for validation) in $TMP/data; the test ends (FAIL) if not
LMC="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
. "$(dirname "${BASH_SOURCE[0]}")/port_hold.sh"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2" >&2; fi; }
TMP=${KEEP_TMP:-$(mktemp -d)}; [ -n "${KEEP_TMP:-}" ] || trap 'rm -rf "$TMP"' EXIT
mp_leaks_off() { export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"; }
[ "${MP_LEAKS:-0}" = 1 ] || mp_leaks_off
export LMC_DIST_TIMEOUT=${LMC_DIST_TIMEOUT:-120}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo
        --mca oob_tcp_if_include lo)
HAVE_MPIRUN=0; command -v mpirun >/dev/null 2>&1 && HAVE_MPIRUN=1
USE_MPI=0

mp_ranks() {
  local W=$1 out=$2; shift 2
  local f0="$TMP/$out.${MP_R0:-r0}" r rc=0 pids=()
  port_hold
  for r in $(seq $((W - 1)) -1 1); do
    if [ "${MP_SPLIT:-0}" = 1 ]; then
      RANK=$r WORLD_SIZE=$W MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT "$LMC" "$@" >"$TMP/$out.r$r" 2>"$TMP/$out.r$r.err" &
    else
      RANK=$r WORLD_SIZE=$W MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT "$LMC" "$@" >"$TMP/$out.r$r" 2>&1 &
    fi
    pids+=($!)
  done
  if [ "${MP_SPLIT:-0}" = 1 ]; then
    RANK=0 WORLD_SIZE=$W MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT "$LMC" "$@" >"$f0" 2>"$f0.err" || rc=$?
  else
    RANK=0 WORLD_SIZE=$W MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT "$LMC" "$@" >"$f0" 2>&1 || rc=$?
  fi
  for p in "${pids[@]}"; do wait "$p" || { [ $rc != 0 ] || rc=1; }; done
  port_release
  return $rc
}

mp_no_mpi() { grep -q "without MPI\|no MPI" "$1"; }

mp_probe() {
  USE_MPI=0
  [ $HAVE_MPIRUN = 1 ] || { echo "$(basename "$0"): no mpirun; the tcp launcher instead"; return 0; }
  timeout 120 "${MPIRUN[@]}" -np 2 "$LMC" "$@" -o "$TMP/probe" >"$TMP/probe.err" 2>&1 && USE_MPI=1
  if [ $USE_MPI = 0 ]; then
    mp_no_mpi "$TMP/probe.err" || ok 1 "mpirun probe ($*): $(tail -n 4 "$TMP/probe.err")"
    echo "$(basename "$0"): mpirun not usable with this lmc; the tcp launcher instead"
  fi
}

launch() {
  local W=$1 cmd=$2 out=$3; shift 3
  if [ $USE_MPI = 1 ]; then
    timeout 300 "${MPIRUN[@]}" -np "$W" "$LMC" $cmd "$@" -o "$TMP/$out" >"$TMP/$out.err" 2>&1
    return $?
  fi
  MP_R0=err mp_ranks "$W" "$out" $cmd "$@" -o "$TMP/$out"
}

last() { tail -n 3 "$TMP/$1.err"; }

mp_data() {
  for i in $(seq 1 300); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 13))"; done >"$TMP/c.txt"
  "$LMC" train-tokenizer --text-file "$TMP/c.txt" --vocab 300 --style llama3 -o "$TMP/tok" 2>"$TMP/err" &&
    "$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/c.txt" --docs line --val-fraction 0.1 -o "$TMP/data" \
      2>"$TMP/err" || { echo "FAIL: data: $(cat "$TMP/err")" >&2; exit 1; }
}
