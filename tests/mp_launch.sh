# mp_launch.sh — sourced by the model-parallel command tests: launch W CMD
# OUT ARGS... starts W ranks of `lmc CMD` (mpirun, oversubscribed, when it
# works with this lmc; else torchrun-style variables at a port from the OS,
# tried again if it was taken meanwhile); rank 0's stderr in $TMP/OUT.err.
# Needs LMC, TMP, A (a quick `lmc train` argument list for the probe) and
# ok() from the sourcing test.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
USE_MPI=0
if command -v mpirun >/dev/null 2>&1; then
  timeout 120 mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo \
    --mca oob_tcp_if_include lo -np 2 "$LMC" train $A --batch 4 --steps 1 --warmup 0 --cp 2 -o "$TMP/probe" \
    >"$TMP/probe.err" 2>&1 && USE_MPI=1
  if [ $USE_MPI = 0 ]; then
    grep -q "without MPI\|no MPI" "$TMP/probe.err" || ok 1 "mpirun --cp 2: $(tail -n 4 "$TMP/probe.err")"
    echo "$(basename "$0"): mpirun not usable with this lmc; the tcp launcher instead"
  fi
fi
# launch W CMD OUT ARGS...: W ranks (mpirun, else torchrun-style variables at a free port); stderr in OUT.err
launch() {
  local W=$1 cmd=$2 out=$3; shift 3
  if [ $USE_MPI = 1 ]; then
    timeout 300 mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo \
      --mca oob_tcp_if_include lo -np "$W" "$LMC" $cmd "$@" -o "$TMP/$out" >"$TMP/$out.err" 2>&1
    return $?
  fi
  for try in 1 2 3; do
    local port pids=() rc=0
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    for r in $(seq $((W - 1)) -1 1); do
      RANK=$r WORLD_SIZE=$W MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$LMC" $cmd "$@" -o "$TMP/$out" >"$TMP/$out.r$r" 2>&1 &
      pids+=($!)
    done
    RANK=0 WORLD_SIZE=$W MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$LMC" $cmd "$@" -o "$TMP/$out" >"$TMP/$out.err" 2>&1 || rc=1
    for p in "${pids[@]}"; do wait $p || rc=1; done
    grep -q "cannot listen" "$TMP/$out.err" || return $rc
    rm -rf "${TMP:?}/$out"
  done
  return $rc
}
last() { tail -n 3 "$TMP/$1.err"; }
