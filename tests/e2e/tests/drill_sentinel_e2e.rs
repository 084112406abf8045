//! `redisha-drill` on a `redisha_sentinel`: the real Terraform CLI applies a sentinel-mode
//! deployment (local driver, sentinels with their own password, a relative data_dir), then
//! `redisha_drill::sentinel::SentinelTarget` must read from that state what the provider
//! planned and runs, and the `redisha-drill` command itself crashes the planned primary's zone,
//! sees Sentinel fail over as the planner predicts, loses no acknowledged write and restores
//! the planned layout, which the next `terraform plan` confirms (no change).

mod common;

use common::local_cluster::Cleanup;
use common::TfDir;
use redisha_cluster::Password;
use redisha_drill::sentinel::SentinelTarget;
use serde_json::Value as Json;

/// Sentinel tests take 127.140-149; this one 142, data ports 7950+ and sentinels 8050+.
const OCTET: u8 = 142;
const BASE_PORT: u16 = 7950;
const PASSWORD: &str = "drill-Sentinel-Data-1";
const SENTINEL_PASSWORD: &str = "drill-Sentinel-Own-1";

const MAIN_TF: &str = r#"
terraform {
  required_providers {
    redisha = {
      source = "redisha/redisha"
    }
  }
}

provider "redisha" {}

variable "password" {
  type      = string
  sensitive = true
}

variable "sentinel_password" {
  type      = string
  sensitive = true
}

resource "redisha_sentinel" "payments" {
  name              = "payments"
  replicas          = 2
  node_memory_mb    = 128
  password          = var.password
  sentinel_password = var.sentinel_password

  dynamic "zone" {
    for_each = ["zone-a", "zone-b", "zone-c"]
    content {
      name = zone.value
      host {
        name      = "${zone.value}-1"
        memory_mb = 512
      }
      host {
        name      = "${zone.value}-2"
        memory_mb = 512
      }
    }
  }

  sentinel {
    count                = 3
    master_name          = "pay"
    down_after_ms        = 1000
    failover_timeout_ms  = 10000
    min_replicas_max_lag = 2
  }

  local {
    data_dir       = "nodes"
    base_port      = BASE_PORT
    loopback_octet = OCTET
  }
}
"#;

fn args(verb: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![verb.to_string(), "-no-color".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("-var=password={PASSWORD}"));
    args.push(format!("-var=sentinel_password={SENTINEL_PASSWORD}"));
    args
}

fn terraform(tf: &TfDir, verb: &str, extra: &[&str]) -> common::TfOutput {
    let args = args(verb, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tf.run(&args)
}

#[test]
fn the_drill_command_runs_on_a_sentinel_deployment_from_a_real_terraform_state() {
    let main_tf = MAIN_TF
        .replace("BASE_PORT", &BASE_PORT.to_string())
        .replace("OCTET", &OCTET.to_string());
    let tf = TfDir::dev(&main_tf);
    let data_dir = tf.path().join("nodes");
    let _cleanup = Cleanup {
        tf: &tf,
        data_dir: data_dir.clone(),
        destroy_args: args("destroy", &["-auto-approve"]),
    };
    terraform(&tf, "apply", &["-auto-approve"]).assert_success("terraform apply");
    let show = tf.run(&["show", "-json"]);
    show.assert_success("terraform show -json");
    let shown: Json = serde_json::from_str(&show.stdout).expect("show -json is JSON");
    let values = &shown["values"]["root_module"]["resources"][0]["values"];
    let primary = values["primary"].as_str().expect("primary").to_string();

    // What the library entry of the command reads from the working directory.
    let target = SentinelTarget::read(
        tf.path(),
        None,
        Some(Password::new(PASSWORD)),
        Some(Password::new(SENTINEL_PASSWORD)),
    )
    .expect("target");
    assert_eq!(target.address, "redisha_sentinel.payments");
    assert_eq!(target.name, "payments");
    assert_eq!(
        target.cluster_id,
        values["cluster_id"].as_str().unwrap_or("")
    );
    assert_eq!(target.state_file, tf.path().join("terraform.tfstate"));
    let s = &target.settings;
    assert_eq!(s.master_name, "pay");
    assert_eq!(
        (s.quorum, s.down_after_ms, s.failover_timeout_ms),
        (2, 1000, 10_000)
    );
    assert_eq!((s.min_replicas_to_write, s.min_replicas_max_lag), (1, 2));
    let r = &target.request;
    assert_eq!((r.cluster.shards, r.cluster.replicas), (1, 2));
    assert_eq!(r.cluster.node_memory_mb, 128);
    assert_eq!(r.sentinel.map(|s| s.count), Some(3));
    let zones: Vec<&str> = r.zones.iter().map(|z| z.name.as_str()).collect();
    assert_eq!(zones, ["zone-a", "zone-b", "zone-c"]);
    assert_eq!(target.local.data_dir, data_dir);
    assert_eq!(
        (target.local.base_port, target.local.loopback_octet),
        (BASE_PORT, OCTET)
    );
    // The planned primary comes from the provider's record, and is the one running.
    let planned = target
        .recorded
        .planned_primary()
        .expect("a planned primary")
        .clone();
    assert_eq!(planned.address(), primary);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_driver, state) = rt
        .block_on(target.locate())
        .expect("every process of the state found again");
    assert_eq!((state.data.len(), state.sentinels.len()), (3, 3));
    assert!(
        state
            .data
            .iter()
            .chain(state.sentinels.iter())
            .all(|m| m.handle.pid.is_some()),
        "{state:?}"
    );

    // Passwords come from the environment only: the sentinels' own one is required too.
    let refused = SentinelTarget::read(tf.path(), None, Some(Password::new(PASSWORD)), None)
        .expect_err("the sentinel password is required");
    assert!(
        refused.to_string().contains("REDISHA_SENTINEL_PASSWORD"),
        "{refused}"
    );
    // A cluster-only read names what it did not find.
    let not_cluster = redisha_drill::Target::read(tf.path(), None, None)
        .expect_err("no redisha_cluster in this state");
    assert!(
        not_cluster.to_string().contains("no redisha_cluster"),
        "{not_cluster}"
    );

    // The command: the planned primary's zone crashes.
    let out = std::process::Command::new(common::drill_binary())
        .current_dir(tf.path())
        .args(["crash", "--zone", &planned.zone, "--format", "json"])
        .env("REDISHA_PASSWORD", PASSWORD)
        .env("REDISHA_SENTINEL_PASSWORD", SENTINEL_PASSWORD)
        .output()
        .expect("run redisha-drill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "a password in the drill's output"
    );
    assert!(
        !stdout.contains(SENTINEL_PASSWORD) && !stderr.contains(SENTINEL_PASSWORD),
        "the sentinel password in the drill's output"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "the drill passes:\n{stdout}\n{stderr}"
    );
    let report: Json = serde_json::from_str(&stdout).expect("the JSON report");
    assert_eq!(report["master_name"], "pay");
    assert_eq!(report["predicted"]["failover"], true);
    assert_eq!(report["observed"]["failover"], true);
    assert_eq!(report["acked_lost"], 0);
    assert!(report["writes_acked"].as_u64().unwrap_or(0) > 0, "{report}");
    assert_eq!(report["restore"]["planned_layout"], true, "{report}");
    let hit: Vec<&str> = report["hit"]
        .as_array()
        .expect("hit")
        .iter()
        .filter_map(Json::as_str)
        .collect();
    assert!(hit.contains(&planned.handle.name.as_str()), "{hit:?}");

    // The drill left the deployment as Terraform planned it.
    let after = terraform(&tf, "plan", &["-detailed-exitcode"]);
    assert_eq!(after.code, Some(0), "nothing left to do:\n{}", after.all());
}
