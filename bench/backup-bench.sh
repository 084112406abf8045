#!/usr/bin/env bash
# Backup and restore throughput: redisha's backup (and restore into the same and another shard
# count) vs `redis-cli --rdb` from each shard's replica, on the same nodes.
# Needs redis-server and redis-cli on PATH; uses loopback 127.126-128.x.x, ports 9790+.
# BENCH_KEYS (default 500000) keys of BENCH_VALUE (default 200) bytes, BENCH_RUNS (default 3).
# Built with the workspace's single (dev) profile, like tests and e2e runs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server not on PATH (apt-get install redis-server)" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli not on PATH (apt-get install redis-tools)" >&2; exit 1; }
exec cargo run --quiet -p redisha-cluster --example backup_bench
