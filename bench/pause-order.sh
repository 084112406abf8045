#!/usr/bin/env bash
# Checks what the piecewise copy of big keys relies on: `CLIENT UNPAUSE` followed, in the same
# write, by `MULTI`/`UNLINK k`/`EXEC` runs the UNLINK before any write the pause held back.
# 50 rounds: pause writes, a client's SET k is held, then the pipeline; if the SET ran after the
# UNLINK, k exists afterwards. One redis-server on 127.66.0.2:8603, ended by pid.
set -euo pipefail
D=$(mktemp -d); IP=127.66.0.2; P=8603
redis-server --port $P --bind $IP --dir "$D" --daemonize yes --pidfile "$D/pid" --logfile "$D/log" --save "" >/dev/null
sleep 0.3
pid=$(cat "$D/pid")
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$D"' EXIT
C="redis-cli -h $IP -p $P"
after=0
for _ in $(seq 1 50); do
  $C set k v1 >/dev/null
  $C client pause 3000 write >/dev/null
  ( $C set k v2 >/dev/null ) &
  sleep 0.05
  printf 'CLIENT UNPAUSE\r\nMULTI\r\nUNLINK k\r\nEXEC\r\n' | python3 -c "
import socket, sys, time
s = socket.create_connection(('$IP', $P)); s.sendall(sys.stdin.buffer.read()); time.sleep(0.05); s.recv(100)"
  wait
  [ "$($C get k)" = "v2" ] && after=$((after + 1))
done
echo "the held write ran after the UNLINK in $after of 50 rounds"
