#!/usr/bin/env bash
# Cluster benchmark: redisha's forming and slot migration vs redis-cli on the same nodes.
# Needs redis-server and redis-cli on PATH; uses loopback 127.31-49.x.x, ports 7400+.
# BENCH_PARTS (default form,scale; add big for the full-size run), BENCH_KEYS (default 100000)
# keys of 100 B for the scale run, BENCH_RUNS (default 3) repetitions; the full-size run takes
# BIG_KEYS (200000) keys of BIG_VALUE_BYTES (16384) and a hash of BIG_HASH_FIELDS (700000) fields
# and needs about 8 GB of memory. BENCH_CPU=1 prints the nodes' CPU time of each scale.
# Built with the workspace's single (dev) profile, like tests and e2e runs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server not on PATH (apt-get install redis-server)" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli not on PATH (apt-get install redis-tools)" >&2; exit 1; }
exec cargo run --quiet -p redisha-cluster --example cluster_bench
