//! Observability end to end, with the real Terraform CLI, the built provider and `redisha`:
//! every exporter listed in `prometheus_targets` is scraped over HTTP and reads its own node
//! (`redis_up` 1, then 0 once the node is killed); after a zone is lost `redisha status --once
//! --format json` flags the shard left without a replica and the master that moved zones;
//! `reader_endpoints` match the live replicas after the failover; destroy ends the exporters.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::local_cluster::{our_pids, Cleanup};
use common::{redisha_status_binary, sample, scrape, TfDir};
use serde_json::Value as Json;

const OCTET: u8 = 111;
const BASE_PORT: u16 = 9610;
/// Exporters 50 above their nodes: 9660.. (this test's ports are 9600-9699).
const EXPORTER_OFFSET: u16 = 50;
const PASSWORD: &str = "obs-e2e-Secret";

fn main_tf() -> String {
    format!(
        r#"
terraform {{
  required_providers {{
    redisha = {{ source = "redisha/redisha" }}
  }}
}}

provider "redisha" {{}}

resource "redisha_cluster" "obs" {{
  name           = "obs"
  shards         = 3
  replicas       = 1
  node_memory_mb = 64
  spread         = "zone"
  password       = "{PASSWORD}"
  redis_config   = {{ "cluster-node-timeout" = "2000", maxmemory = "64mb" }}

  dynamic "zone" {{
    for_each = ["zone-a", "zone-b", "zone-c"]
    content {{
      name = zone.value
      host {{
        name      = "${{zone.value}}-1"
        memory_mb = 1024
        max_nodes = 2
      }}
    }}
  }}

  metrics {{
    port_offset = {EXPORTER_OFFSET}
  }}

  local {{
    data_dir       = "${{path.root}}/.redisha/obs"
    base_port      = {BASE_PORT}
    loopback_octet = {OCTET}
  }}
}}

output "nodes" {{
  value = redisha_cluster.obs.nodes
}}

output "prometheus_targets" {{
  value = redisha_cluster.obs.prometheus_targets
}}

output "reader_endpoints" {{
  value = redisha_cluster.obs.reader_endpoints
}}
"#
    )
}

/// `redisha status --once --format json` on the state (the program `redisha-status`): its exit
/// code and report.
fn status(tf: &TfDir) -> (i32, Json) {
    let state = tf.path().join("terraform.tfstate");
    let out = Command::new(redisha_status_binary())
        .args(["--once", "--format", "json", "--state"])
        .arg(&state)
        .env("REDISHA_PASSWORD", PASSWORD)
        .output()
        .expect("run redisha status");
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "status printed no JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn problems(report: &Json, kind: &str) -> Vec<Json> {
    report["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["kind"] == kind)
        .cloned()
        .collect()
}

#[test]
fn exporters_status_and_reader_endpoints_follow_a_lost_zone() {
    let tf = TfDir::dev(&main_tf());
    let data_dir = tf.path().join(".redisha/obs");
    let _cleanup = Cleanup {
        tf: &tf,
        data_dir: data_dir.clone(),
        destroy_args: vec!["destroy".into(), "-auto-approve".into(), "-no-color".into()],
    };
    tf.run(&["apply", "-auto-approve", "-no-color"])
        .assert_success("terraform apply");
    let out = tf.output_json();
    let nodes: Vec<Json> = out["nodes"].as_array().cloned().unwrap_or_default();
    let address_of: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| {
            let name = n["name"].as_str().unwrap_or_default().to_string();
            (name, n["address"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    let targets: Json = serde_json::from_str(out["prometheus_targets"].as_str().expect("targets"))
        .expect("prometheus_targets is JSON");
    let targets = targets.as_array().cloned().unwrap_or_default();
    assert_eq!(targets.len(), nodes.len(), "one target per node");

    // Every exporter reads its own node: the node the file_sd labels name, by its port.
    let mut exporter_of: BTreeMap<String, String> = BTreeMap::new();
    for t in &targets {
        let target = t["targets"][0].as_str().expect("target").to_string();
        let labels = &t["labels"];
        for label in ["cluster", "node", "shard", "role", "zone", "host"] {
            assert!(labels[label].is_string(), "{label} missing in {t}");
        }
        assert_eq!(labels["cluster"], "obs");
        let node = labels["node"].as_str().expect("node label").to_string();
        let port = address_of[&node]
            .rsplit(':')
            .next()
            .expect("port")
            .to_string();
        let metrics = scrape(&target);
        assert_eq!(
            sample(&metrics, "redis_up"),
            Some(1.0),
            "{node} at {target}"
        );
        assert!(
            metrics.contains(&format!("tcp_port=\"{port}\"")),
            "{target} does not read node {node} (port {port})"
        );
        exporter_of.insert(node, target);
    }
    let exporter_pids: Vec<u32> = our_pids(&data_dir)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("redis-exporter"))
        })
        .collect();
    assert_eq!(exporter_pids.len(), nodes.len());

    let (code, report) = status(&tf);
    assert_eq!(code, 0, "a fresh cluster has no problem: {report:#}");
    assert_eq!(report["survives_zone_loss"], true);

    // Zone a is lost: every redis-server there is killed (its exporters stay).
    let zone_a: Vec<&Json> = nodes.iter().filter(|n| n["zone"] == "zone-a").collect();
    assert!(!zone_a.is_empty());
    for n in &zone_a {
        let name = n["name"].as_str().expect("name");
        let dir = std::fs::read_dir(&data_dir)
            .expect("data dir")
            .flatten()
            .map(|e| e.path().join(name))
            .find(|p| p.is_dir())
            .expect("node dir");
        let pid = std::fs::read_to_string(dir.join("redis.pid")).expect("pidfile");
        let ok = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }
    let zone_a_master = zone_a
        .iter()
        .find(|n| n["planned_role"] == "master")
        .expect("a master in zone a");
    let shard = zone_a_master["shard"].as_u64().expect("shard");
    let deadline = Instant::now() + Duration::from_secs(90);
    let report = loop {
        let (code, report) = status(&tf);
        if !problems(&report, "master_in_wrong_zone").is_empty() {
            assert_eq!(code, 3, "problems exit 3");
            break report;
        }
        assert!(Instant::now() < deadline, "no failover seen: {report:#}");
        std::thread::sleep(Duration::from_millis(500));
    };
    for n in &zone_a {
        let metrics = scrape(&exporter_of[n["name"].as_str().expect("name")]);
        assert_eq!(sample(&metrics, "redis_up"), Some(0.0), "{n}");
    }
    let moved = problems(&report, "master_in_wrong_zone");
    assert_eq!(moved.len(), 1, "{report:#}");
    assert_eq!(moved[0]["shard"], shard);
    let promoted = nodes
        .iter()
        .find(|n| n["shard"] == shard && n["planned_role"] == "replica")
        .expect("the shard's replica");
    assert_eq!(moved[0]["node"], promoted["address"]);
    let lonely = problems(&report, "shard_without_replica");
    assert!(
        lonely.iter().any(|p| p["shard"] == shard),
        "shard {shard} has no replica left: {report:#}"
    );
    assert_eq!(report["survives_zone_loss"], false);
    let text = Command::new(redisha_status_binary())
        .args(["--once", "--state"])
        .arg(tf.path().join("terraform.tfstate"))
        .env("REDISHA_PASSWORD", PASSWORD)
        .output()
        .expect("redisha status");
    eprintln!("{}", String::from_utf8_lossy(&text.stdout));

    // Read follows the failover: reader endpoints are the replicas that are up, by zone.
    tf.run(&["apply", "-refresh-only", "-auto-approve", "-no-color"])
        .assert_success("terraform apply -refresh-only");
    let readers = tf.output_json()["reader_endpoints"].clone();
    let mut live: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in report["nodes"].as_array().into_iter().flatten() {
        let zone = n["zone"].as_str().unwrap_or_default().to_string();
        let list = live.entry(zone).or_default();
        if n["alive"] == true && n["role"] == "replica" {
            list.push(n["address"].as_str().unwrap_or_default().to_string());
        }
    }
    let readers: BTreeMap<String, Vec<String>> =
        serde_json::from_value(readers).expect("reader_endpoints is a map of lists");
    let sorted = |m: BTreeMap<String, Vec<String>>| -> BTreeMap<String, Vec<String>> {
        m.into_iter()
            .map(|(k, mut v)| {
                v.sort();
                (k, v)
            })
            .collect()
    };
    assert_eq!(sorted(readers), sorted(live));
    assert!(
        !tf.output_json()["reader_endpoints"]
            .to_string()
            .contains(promoted["address"].as_str().expect("address")),
        "the promoted replica serves writes now"
    );

    tf.run(&["destroy", "-auto-approve", "-no-color"])
        .assert_success("terraform destroy");
    for pid in exporter_pids {
        let alive = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty());
        assert!(!alive, "exporter {pid} outlived destroy");
    }
}
