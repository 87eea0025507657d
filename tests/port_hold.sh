# shellcheck shell=bash
# port_hold.sh — a free port for a torchrun-style rendezvous, held from the
# moment it is picked until the ranks are done (sourced; not a test). A port
# probed with bind(0) and closed can be taken by any other process (another
# test's probe or rank 0, an outgoing connection's source port) before this
# run's rank 0 listens on it; the ranks then fail ("cannot listen", or a
# rank 1 that joins someone else's rendezvous). Here a helper process keeps
# the port bound with SO_REUSEADDR but not listening: rank 0's bind + listen
# (SO_REUSEADDR too, src/dist/xport_tcp.c) still succeed, while bind(0) and
# connect() elsewhere never pick a bound port.
#   port_hold    sets HELD_PORT and keeps it reserved (the helper lives until
#                port_release, or until this shell exits: its stdin is a pipe
#                from here)
#   port_release frees it
port_hold() {
  coproc PORT_HOLDER { exec python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
sys.stdin.read()' 2>/dev/null; }
  read -r HELD_PORT <&"${PORT_HOLDER[0]}"
}
port_release() {
  local w=${PORT_HOLDER[1]:-} pid=${PORT_HOLDER_PID:-}
  [ -n "$w" ] && eval "exec $w>&-"
  [ -n "$pid" ] && wait "$pid" 2>/dev/null
  PORT_HOLDER_PID=
  return 0
}
