#!/usr/bin/env bash
# What one MIGRATE of a big key costs: a hash of 1,000,000 fields (about 144 MB) and a sorted
# set of 1,000,000 members (about 103 MB) between two cluster nodes on 127.66.0.1:8601-8602.
# Prints MEMORY USAGE, the time of DUMP alone, of MIGRATE (the source is blocked all along)
# and the destination's slowlog entry for RESTORE (microseconds). Ends its nodes by pid.
set -euo pipefail
command -v redis-server >/dev/null || { echo "redis-server not on PATH" >&2; exit 1; }
D=$(mktemp -d)
IP=127.66.0.1
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$D"; }
trap cleanup EXIT
for p in 8601 8602; do
  mkdir -p "$D/n$p"
  redis-server --port $p --bind $IP --dir "$D/n$p" --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-announce-ip $IP --daemonize yes --pidfile "$D/n$p/pid" --logfile "$D/n$p/log" --save "" \
    --appendonly no --cluster-node-timeout 5000 --slowlog-log-slower-than 0
done
sleep 0.5
for p in 8601 8602; do pids+=("$(cat "$D/n$p/pid")"); done
C="redis-cli -h $IP"
$C -p 8601 cluster addslotsrange 0 8191 >/dev/null
$C -p 8602 cluster addslotsrange 8192 16383 >/dev/null
$C -p 8601 cluster meet $IP 8602 >/dev/null
sleep 2
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$(echo "$e - $s" | bc) s"; }
move() { # key, fill script
  local key=$1 fill=$2 slot src dst
  slot=$($C -p 8601 cluster keyslot "$key")
  if [ "$slot" -lt 8192 ]; then src=8601; dst=8602; else src=8602; dst=8601; fi
  $C -p $src eval "$fill" 1 "$key" >/dev/null
  echo "$key: MEMORY USAGE $($C -p $src memory usage "$key") bytes"
  echo "  DUMP alone: $(t $C -p $src eval "return string.len(redis.call('DUMP', KEYS[1]))" 1 "$key")"
  $C -p $dst cluster setslot "$slot" importing "$($C -p $src cluster myid)" >/dev/null
  $C -p $src cluster setslot "$slot" migrating "$($C -p $dst cluster myid)" >/dev/null
  $C -p $dst slowlog reset >/dev/null
  echo "  MIGRATE: $(t $C -p $src migrate $IP $dst "" 0 60000 KEYS "$key")"
  echo "  RESTORE on the destination: $($C -p $dst slowlog get 10 | grep -a -B1 -m1 '^RESTORE-ASKING$' | head -1) us"
}
move bighash "for i=1,1000000 do redis.call('HSET', KEYS[1], 'field:'..i, string.rep('x',90)) end return 1"
move bigzset "for i=1,1000000 do redis.call('ZADD', KEYS[1], i, 'member:'..i) end return 1"
