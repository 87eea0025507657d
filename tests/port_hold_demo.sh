#!/bin/bash
# port_hold_demo.sh LMC (as root, under `unshare -n`): in a private network namespace with 16 ephemeral ports, a
# "thief" process takes every free port but two (as concurrent tests' probes and
# connections may, here made certain); old: probe-and-close; new: port_hold.
# Not a test (CMake runs tests/test_*.sh only): the evidence for port_hold.sh.
LMC=$1
TMPD=$(mktemp -d); trap 'rm -rf "$TMPD"' EXIT
ip link set lo up
sysctl -q -w net.ipv4.ip_local_port_range="40000 40015"
. "$(dirname "$0")/port_hold.sh"
thief() { python3 -c '
import socket, sys
keep = int(sys.argv[1])  # the port under test: never given back
held = []
while True:
    s = socket.socket()
    try: s.bind(("127.0.0.1", 0))
    except OSError: break
    held.append(s)
for s in [s for s in held if s.getsockname()[1] != keep][:2]:  # two free for the ranks own listeners
    held.remove(s); s.close()
print(len(held), "incl. it" if keep in [s.getsockname()[1] for s in held] else "not it", flush=True)
sys.stdin.read()' "$1"; }
run() { # PORT: a 2-rank tcp comm-bench
  RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$1 LMC_DIST_TIMEOUT=5 "$LMC" comm-bench --sizes 7 --iters 1 >$TMPD/r1 2>&1 &
  RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$1 LMC_DIST_TIMEOUT=5 "$LMC" comm-bench --sizes 7 --iters 1 >$TMPD/r0 2>&1
  local rc0=$?; wait $!; echo "rank 0 rc $rc0, rank 1 rc $?: $(grep -h 'cannot listen\|comm-bench: ok' $TMPD/r0 | head -1)"
}
echo "old (probe, close, then launch):"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
coproc T { thief $port; }; read -r n <&"${T[0]}"; echo "  thief holds $n ports"
run $port
eval "exec ${T[1]}>&-"; wait $T_PID
echo "new (port_hold):"
port_hold
coproc T { thief $HELD_PORT; }; read -r n <&"${T[0]}"; echo "  thief holds $n ports"
run $HELD_PORT
eval "exec ${T[1]}>&-"; wait $T_PID
port_release
