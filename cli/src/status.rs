//! `redisha status` (the program `redisha-status`, which the planner's `redisha` runs for
//! it): the live cluster laid out by zone, host and node, refreshed every second (or once, as
//! text or JSON for scripts), with its problems marked. With `--once` it exits 0 when there is
//! no problem, 3 when there is, 1 on an error.
//!
//! The cluster is found from a seed address or from the Terraform state, whose
//! `redisha_cluster` gives the plan's layout (zone, host, shard and planned role of every
//! address): without it nodes show without zones and no master can be found in a wrong zone.
//! The password comes from `REDISHA_PASSWORD` (never an argument: anyone can read those), else
//! from the state, which holds it anyway; `REDISHA_USER` names the user it is for (default:
//! `default`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use redisha_cluster::status::{NodeStatus, StatusReport};
use redisha_cluster::{Options, Password, PlannedNode};
use redisha_planner::Role;
use serde_json::Value;

/// The environment variable holding the cluster password (with `REDISHA_USER`, that user's).
const PASSWORD_ENV: &str = "REDISHA_PASSWORD";
/// The environment variable naming the user to log in as (default: `default`); with
/// `default_user_enabled = false`, a declared user allowed `INFO` and `CLUSTER`.
const USER_ENV: &str = "REDISHA_USER";

/// The live cluster by zone, host and node, refreshed every second; problems marked. The
/// password comes from the REDISHA_PASSWORD environment variable (or the state). With --once
/// it exits 0 when there is no problem and 3 when there is.
#[derive(Parser)]
#[command(name = "redisha status", bin_name = "redisha status", version)]
struct StatusArgs {
    /// host:port of a node (repeatable); default: the addresses in the state.
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// A Terraform state (terraform.tfstate, or `terraform show -json` output) holding the
    /// `redisha_cluster`: its nodes are the plan the live layout is compared with.
    #[arg(long)]
    state: Option<PathBuf>,
    /// The cluster's `name`, when the state holds several.
    #[arg(long)]
    cluster: Option<String>,
    /// Print once and exit (the default refreshes every second until interrupted).
    #[arg(long)]
    once: bool,
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    format: StatusFormat,
    /// The certificate (PEM file) of a TLS cluster's authority, to connect over TLS and verify
    /// the nodes with; default: `tls_ca_cert_pem` from the state, if it has one.
    #[arg(long)]
    cacert: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StatusFormat {
    Text,
    Json,
}

/// What the state says of one cluster.
#[derive(Debug, Default, PartialEq)]
struct FromState {
    name: String,
    layout: Vec<PlannedNode>,
    endpoints: Vec<String>,
    password: Option<String>,
    /// `tls_ca_cert_pem`: set when the cluster speaks TLS.
    ca_cert_pem: Option<String>,
}

fn main() -> ExitCode {
    // Usage errors exit 2 (clap's), help 0.
    match run(StatusArgs::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the command: true when the cluster shows no problem.
fn run(args: StatusArgs) -> Result<bool> {
    let from_state = match &args.state {
        Some(path) => read_state(path, args.cluster.as_deref())?,
        None => FromState::default(),
    };
    let seeds: Vec<String> = if args.seeds.is_empty() {
        from_state.endpoints.clone()
    } else {
        args.seeds.clone()
    };
    // A TLS cluster's endpoints say `rediss://`; whether to speak TLS follows from the CA.
    let seeds: Vec<String> = seeds
        .iter()
        .map(|s| s.strip_prefix("rediss://").unwrap_or(s).to_string())
        .collect();
    let ca_cert_pem = match &args.cacert {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --cacert {}", path.display()))?,
        ),
        None => from_state.ca_cert_pem.clone(),
    };
    if seeds.is_empty() {
        bail!("give a node's address with --seed host:port, or the Terraform state with --state terraform.tfstate");
    }
    let password = std::env::var(PASSWORD_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .or(from_state.password.clone())
        .map(Password::new);
    if args.format == StatusFormat::Json && !args.once {
        bail!("--format json prints one report: add --once");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let options = Options {
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        tls: ca_cert_pem.map(|ca_cert_pem| redisha_cluster::tls::ClientTls { ca_cert_pem }),
        user: std::env::var(USER_ENV).ok().filter(|u| !u.is_empty()),
        ..Options::default()
    };
    let fetch = || {
        runtime.block_on(redisha_cluster::status(
            &seeds,
            password.as_ref(),
            &from_state.layout,
            &options,
        ))
    };
    if args.once {
        let report = fetch().context("cannot read the cluster")?;
        let out = match args.format {
            StatusFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
            StatusFormat::Text => render(&from_state.name, &report),
        };
        print!("{out}");
        return Ok(report.problems.is_empty());
    }
    let mut stdout = std::io::stdout();
    loop {
        let screen = match fetch() {
            Ok(report) => render(&from_state.name, &report),
            Err(e) => format!("cannot read the cluster: {e}\n"),
        };
        // Clear the terminal and draw from its top-left corner.
        write!(stdout, "\x1b[2J\x1b[H{screen}")?;
        stdout.flush()?;
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The `redisha_cluster` in a state file (`terraform.tfstate` or `terraform show -json`).
fn read_state(path: &Path, cluster: Option<&str>) -> Result<FromState> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON (a Terraform state)", path.display()))?;
    let mut found = Vec::new();
    collect_clusters(&doc, &mut found);
    let names: Vec<String> = found.iter().map(|c| c.name.clone()).collect();
    let mut matching: Vec<FromState> = found
        .into_iter()
        .filter(|c| cluster.is_none_or(|want| c.name == want))
        .collect();
    match (matching.len(), cluster) {
        (1, _) => Ok(matching.remove(0)),
        (0, Some(want)) => bail!(
            "{}: no redisha_cluster named {want:?} (found: {})",
            path.display(),
            names.join(", ")
        ),
        (0, None) => bail!("{}: holds no redisha_cluster", path.display()),
        _ => bail!(
            "{}: holds several redisha_cluster resources ({}); choose one with --cluster NAME",
            path.display(),
            names.join(", ")
        ),
    }
}

/// Every `redisha_cluster`'s attributes: `resources[].instances[].attributes` in a state
/// file, `resources[].values` in `terraform show -json` (modules included).
fn collect_clusters(v: &Value, out: &mut Vec<FromState>) {
    match v {
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("redisha_cluster")
                && map.get("mode").and_then(Value::as_str) != Some("data")
            {
                if let Some(values) = map.get("values") {
                    out.extend(cluster_of(values));
                }
                for i in map
                    .get("instances")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    out.extend(i.get("attributes").and_then(cluster_of));
                }
                return;
            }
            map.values().for_each(|x| collect_clusters(x, out));
        }
        Value::Array(list) => list.iter().for_each(|x| collect_clusters(x, out)),
        _ => {}
    }
}

fn cluster_of(attributes: &Value) -> Option<FromState> {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let layout = attributes
        .get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let role = text(n, "planned_role").or_else(|| text(n, "role"))?;
            Some(PlannedNode {
                address: text(n, "address")?,
                name: text(n, "name").unwrap_or_default(),
                zone: text(n, "zone").unwrap_or_default(),
                host: text(n, "host").unwrap_or_default(),
                shard: n.get("shard").and_then(Value::as_u64)? as u32,
                role: if role == "master" {
                    Role::Master
                } else {
                    Role::Replica
                },
            })
        })
        .collect();
    Some(FromState {
        name: text(attributes, "name")?,
        layout,
        endpoints: attributes
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect(),
        password: text(attributes, "password"),
        ca_cert_pem: text(attributes, "tls_ca_cert_pem"),
    })
}

/// The terminal view: zone -> host -> node, then the shards and the problems.
fn render(cluster: &str, r: &StatusReport) -> String {
    let mut out = String::new();
    let survives = match r.survives_zone_loss {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "unknown (no --state)",
    };
    out.push_str(&format!(
        "redisha status {cluster}  cluster_state {}  slots {}/16384  survives a zone loss: {survives}\n\n",
        r.cluster_state, r.slots_covered
    ));
    // Zone, then host (the node's IP when the plan does not say), then node.
    let mut tree: BTreeMap<String, BTreeMap<String, Vec<&NodeStatus>>> = BTreeMap::new();
    for n in &r.nodes {
        let zone = if n.zone.is_empty() {
            "(zone unknown)".to_string()
        } else {
            n.zone.clone()
        };
        let host = if n.host.is_empty() {
            n.address
                .rsplit_once(':')
                .map_or(n.address.clone(), |(ip, _)| ip.to_string())
        } else {
            n.host.clone()
        };
        tree.entry(zone)
            .or_default()
            .entry(host)
            .or_default()
            .push(n);
    }
    out.push_str(&format!(
        "   {:<24} {:<21} {:<8} {:>5} {:>6} {:>7} {:>17} {:>8} {:>9} {:>5}\n",
        "node", "address", "role", "shard", "slots", "ops/s", "memory", "keys", "lag", "link"
    ));
    for (zone, hosts) in &tree {
        out.push_str(&format!("zone {zone}\n"));
        for (host, nodes) in hosts {
            out.push_str(&format!(" host {host}\n"));
            for n in nodes {
                out.push_str(&node_line(n, r));
            }
        }
    }
    out.push_str("\nshards\n");
    for s in &r.shards {
        out.push_str(&format!(
            "  shard {:<3} master {:<21} zone {:<12} (planned {:<12}) replicas up {}  max lag {}\n",
            s.shard,
            s.master.as_deref().unwrap_or("NONE"),
            dash(&s.master_zone),
            dash(&s.planned_master_zone),
            s.replicas_up,
            s.max_lag_bytes.map_or("-".into(), bytes),
        ));
    }
    if r.problems.is_empty() {
        out.push_str("\nno problems\n");
    } else {
        out.push_str("\nproblems\n");
        for p in &r.problems {
            out.push_str(&format!("  ! {}\n", p.message));
        }
    }
    out
}

fn node_line(n: &NodeStatus, r: &StatusReport) -> String {
    let flagged = r
        .problems
        .iter()
        .any(|p| p.node.as_deref() == Some(n.address.as_str()));
    let role = match (n.alive, n.role) {
        (false, _) => "DOWN".to_string(),
        (true, Some(Role::Master)) => "master".into(),
        (true, Some(Role::Replica)) => "replica".into(),
        (true, None) => "?".into(),
    };
    let memory = match (n.stats.memory_used_bytes, n.stats.maxmemory_bytes) {
        (Some(used), Some(max)) if max > 0 => format!(
            "{}/{} {:>3.0}%",
            bytes(used),
            bytes(max),
            100.0 * used as f64 / max as f64
        ),
        (Some(used), _) => bytes(used),
        _ => "-".into(),
    };
    let slots = if n.open_slots.is_empty() {
        n.slots.to_string()
    } else {
        format!("{}+open", n.slots)
    };
    format!(
        "{} {:<24} {:<21} {:<8} {:>5} {:>6} {:>7} {:>17} {:>8} {:>9} {:>5}\n",
        if flagged { " !" } else { "  " },
        if n.name.is_empty() { "-" } else { &n.name },
        n.address,
        role,
        n.shard.map_or("-".into(), |s| s.to_string()),
        slots,
        n.stats.ops_per_sec.map_or("-".into(), |o| o.to_string()),
        memory,
        n.stats.keys.map_or("-".into(), |k| k.to_string()),
        n.lag_bytes.map_or("-".into(), bytes),
        n.link_status.as_deref().unwrap_or("-"),
    )
}

fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// 1536 -> `1.5K`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = r#"{
      "version": 4,
      "resources": [
        {"mode": "data", "type": "redisha_cluster_health", "name": "h", "instances": []},
        {"mode": "managed", "type": "redisha_cluster", "name": "c", "instances": [{"attributes": {
          "name": "demo",
          "password": "pw",
          "endpoints": ["127.0.1.1:7000", "127.0.2.1:7000"],
          "nodes": [
            {"address": "127.0.1.1:7000", "name": "shard-0-0", "zone": "a", "host": "a-1", "shard": 0, "role": "replica", "planned_role": "master"},
            {"address": "127.0.2.1:7000", "name": "shard-0-1", "zone": "b", "host": "b-1", "shard": 0, "role": "master", "planned_role": "replica"}
          ]
        }}]}
      ]
    }"#;

    #[test]
    fn the_state_gives_the_planned_layout_not_the_live_roles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("terraform.tfstate");
        std::fs::write(&path, STATE).unwrap();
        let s = read_state(&path, None).unwrap();
        assert_eq!(s.name, "demo");
        assert_eq!(s.endpoints.len(), 2);
        assert_eq!(s.layout[0].role, Role::Master);
        assert_eq!(s.layout[1].zone, "b");
        assert_eq!(s.password.as_deref(), Some("pw"));
        let err = read_state(&path, Some("other")).unwrap_err().to_string();
        assert!(
            err.contains("no redisha_cluster named \"other\" (found: demo)"),
            "{err}"
        );
    }

    #[test]
    fn sizes_read_like_a_terminal_tool() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(64 * 1024 * 1024), "64.0M");
    }
}
