#!/usr/bin/env bash
# Wall time of `terraform plan` on a 1,000-shard redisha_placement (2,000 nodes over 3 zones,
# 210 hosts) against the same plan on a config with no provider at all. The difference is the
# provider's share: process start + handshake, GetProviderSchema, ValidateDataResourceConfig,
# ConfigureProvider, ReadDataSource (the planner itself) and Shutdown.
#
#   bench/tf-plan.sh [RUNS]        (default 7; prints a markdown table, medians in seconds)
#
# Uses the dev-profile binary (target/debug), the one the tests and e2e runs use.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-7}
cd "$root"
cargo build -q -p terraform-provider-redisha
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/provider" "$work/baseline"
scripts/tf-cli-config dev "$work/dev.tfrc" "$root/target/debug/terraform-provider-redisha"
export TF_CLI_CONFIG_FILE="$work/dev.tfrc" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 TF_INPUT=0

{
    cat <<'HCL'
terraform {
  required_providers {
    redisha = { source = "redisha/redisha" }
  }
}

data "redisha_placement" "big" {
  shards         = 1000
  replicas       = 1
  node_memory_mb = 1024
HCL
    for z in a b c; do
        echo "  zone {"
        echo "    name = \"zone-$z\""
        for h in $(seq 1 70); do
            echo "    host {"
            echo "      name      = \"$z$h\""
            echo "      memory_mb = 10240"
            echo "      max_nodes = 10"
            echo "    }"
        done
        echo "  }"
    done
    cat <<'HCL'
}

output "summary" {
  value = data.redisha_placement.big.summary
}
HCL
} >"$work/provider/main.tf"

cat >"$work/baseline/main.tf" <<'HCL'
locals {
  summary = "no provider"
}

output "summary" {
  value = local.summary
}
HCL

now() { date +%s%N; }
time_plan() {
    local dir=$1 start end
    start=$(now)
    "$root/scripts/terraform" -chdir="$dir" plan -no-color -input=false >/dev/null 2>"$work/err" || {
        cat "$work/err" >&2
        exit 1
    }
    end=$(now)
    echo $(((end - start) / 1000000))
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Warm-up (page cache, Terraform's own start-up).
time_plan "$work/baseline" >/dev/null
time_plan "$work/provider" >/dev/null

base=() prov=()
for _ in $(seq "$runs"); do
    base+=("$(time_plan "$work/baseline")")
    prov+=("$(time_plan "$work/provider")")
done
b=$(printf '%s\n' "${base[@]}" | median)
p=$(printf '%s\n' "${prov[@]}" | median)

# The provider's own share, from its debug log: for every provider process Terraform starts,
# exec to handshake ("starting plugin" .. "plugin serving") plus the time spent inside RPCs
# ("rpc done" elapsed_ms: schema, validate, configure, read). Median over the runs.
share=()
for _ in $(seq "$runs"); do
    TF_LOG_PROVIDER=debug TF_LOG_PATH="$work/log" "$root/scripts/terraform" -chdir="$work/provider" plan -no-color >/dev/null 2>&1
    share+=("$(python3 - "$work/log" <<'PY'
import re, sys, datetime
ts = lambda line: datetime.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f")
start, total, procs, reads = None, 0.0, 0, 0.0
for line in open(sys.argv[1]):
    if "provider: starting plugin" in line and "terraform-provider-redisha" in line:
        start = ts(line)
    elif "plugin serving" in line and start is not None:
        total += (ts(line) - start).total_seconds() * 1000
        start, procs = None, procs + 1
    elif "rpc done" in line:
        m = re.search(r"elapsed_ms=(\d+)", line)
        if m:
            total += int(m.group(1))
            if "ReadDataSource" in line:
                reads += int(m.group(1))
print(f"{int(total)} {procs} {int(reads)}")
PY
)")
    rm -f "$work/log"
done
s=$(printf '%s\n' "${share[@]}" | sort -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}')
s_ms=${s%% *}
rest=${s#* }
procs=${rest%% *}
read_ms=${rest#* }

tfv=$("$root/scripts/terraform" version)
tfv=${tfv%%$'\n'*}
cat <<EOF2
| measurement (median of $runs, $tfv, dev profile) | seconds |
|---|---|
| \`terraform plan\`, config with no provider | $(awk "BEGIN{printf \"%.3f\", $b/1000}") |
| \`terraform plan\`, 1,000-shard \`redisha_placement\` | $(awk "BEGIN{printf \"%.3f\", $p/1000}") |
| difference (provider + Terraform handling 2,000 nodes) | $(awk "BEGIN{printf \"%.3f\", ($p-$b)/1000}") |
| provider's share: $procs process starts + all RPCs (from TF_LOG) | $(awk "BEGIN{printf \"%.3f\", $s_ms/1000}") |
| of which ReadDataSource (validate + plan + report + encode) | $(awk "BEGIN{printf \"%.3f\", $read_ms/1000}") |
EOF2
