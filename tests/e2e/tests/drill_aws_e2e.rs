//! `redisha-drill stop` on a `redisha_cluster` of the aws driver, from a real Terraform working
//! directory: the real Terraform CLI and provider create the cluster on moto_server's EC2 (3
//! zones, one instance each running two nodes, 3 shards with a replica, cluster-node-timeout
//! 1000 ms); then the `redisha-drill` binary, given only that directory, the region, moto's
//! endpoint and the password in the environment, stops the instance of the zone holding shard
//! 0's master and starts it again. The report must show 0 acknowledged writes lost, prediction
//! = observation and the planned layout restored, and the next `terraform plan` must see no
//! change. What the aws driver cannot do is refused before anything is touched.
//!
//! As in aws_e2e.rs, the instances' nodes are real redis-server processes bound to loopback
//! stand-ins (127.137.Z.1, ports 27900-27990), started by the test-only SSM runner from the
//! product's own user data; the stop kills them (a power-off), the start boots them. Both the
//! provider and the drill reach the stand-ins through REDISHA_AWS_TEST_ADDRESS_MAP, which only
//! test builds have (`common::drill_binary` builds the drill with the feature
//! `test-address-map`).

mod common;
#[path = "common/moto.rs"]
mod moto;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::TfDir;
use moto::{Fixture, Moto, ZONES};
use redisha_aws::testing::ssm_runner::SsmRunner;
use serde_json::Value as Json;

const CLUSTER: &str = "e2e-awsdrill";
const PASSWORD: &str = "aws-drill-e2e-Secret-7";

/// The stand-in of each zone's one instance, `<zone>-1`.
fn stand_ins() -> Vec<(String, String)> {
    moto::zone_stand_ins(137)
}

/// A base port in 27900-27990 free for two nodes and their bus ports on every stand-in.
fn free_port() -> u16 {
    (27900..27990)
        .find(|p| {
            stand_ins().iter().all(|(_, ip)| {
                (*p..p + 2).all(|q| {
                    TcpListener::bind((ip.as_str(), q)).is_ok()
                        && TcpListener::bind((ip.as_str(), q + 10000)).is_ok()
                })
            })
        })
        .expect("a free port on the stand-in addresses")
}

fn main_tf(endpoint: &str, fx: &Fixture) -> String {
    let subnets: Vec<String> = fx.subnet_ids().iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"
terraform {{
  required_providers {{
    redisha = {{ source = "redisha/redisha" }}
  }}
}}

provider "redisha" {{
  region   = "us-east-1"
  endpoint = "{endpoint}"
}}

variable "password" {{
  type      = string
  sensitive = true
}}

resource "redisha_cluster" "shop" {{
  name           = "{CLUSTER}"
  shards         = 3
  replicas       = 1
  node_memory_mb = 256
  password       = var.password
  redis_config   = {{ "cluster-node-timeout" = "1000" }}

  aws {{
    subnet_ids             = [{subnets}]
    instance_type          = "t3.small"
    ami                    = "{ami}"
    max_nodes_per_instance = 2
  }}

  timeouts {{
    create = "3m"
    update = "4m"
    delete = "2m"
  }}
}}
"#,
        subnets = subnets.join(", "),
        ami = fx.ami,
    )
}

/// `redisha-drill ARGS` in the working directory, bounded in time; the password only in the
/// environment, and never in what the drill prints.
fn drill(tf: &TfDir, moto: &Moto, args: &[&str]) -> common::TfOutput {
    let mut cmd = Command::new(common::drill_binary());
    cmd.current_dir(tf.path())
        .args(args)
        .args(["--region", "us-east-1", "--endpoint", &moto.endpoint()])
        .envs(tf.env.iter().map(|(k, v)| (k, v)))
        .env("REDISHA_PASSWORD", PASSWORD)
        .env("RUST_LOG", "redisha_drill=info,redisha_aws=info");
    let out = common::run_with_timeout(cmd, Duration::from_secs(600));
    assert!(
        !out.all().contains(PASSWORD),
        "the password in the drill's output"
    );
    out
}

/// Destroys the cluster at the end, also when the test fails (before the runner and moto go).
struct Destroy<'a>(&'a TfDir);

impl Drop for Destroy<'_> {
    fn drop(&mut self) {
        let out = self.0.run(&["destroy", "-auto-approve", "-no-color"]);
        if !out.success() && !std::thread::panicking() {
            panic!("terraform destroy failed:\n{}", out.all());
        }
    }
}

#[test]
fn the_drill_command_stops_a_zone_of_an_aws_cluster_from_its_terraform_directory() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: redis-server not installed (apt-get install redis-server)");
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(moto.client());
    let fx = rt.block_on(Fixture::create(&client, &ZONES));
    let port = free_port();
    // Dropped after the destroy guard below: the runner ends its nodes while moto still runs.
    let runner = SsmRunner::booting(moto.port, CLUSTER);
    let mut tf = TfDir::dev(&main_tf(&moto.endpoint(), &fx));
    tf.env = moto::provider_env_at(tf.path(), &stand_ins(), port, PASSWORD);
    let tf = tf;
    let _destroy = Destroy(&tf);

    let applied = tf.run(&["apply", "-auto-approve", "-no-color"]);
    if !applied.success() {
        eprintln!("SSM runner:\n{}", runner.report());
    }
    applied.assert_success("terraform apply");
    let shown = tf.run(&["show", "-json"]);
    shown.assert_success("terraform show -json");
    let shown: Json = serde_json::from_str(&shown.stdout).expect("show -json is JSON");
    let nodes = shown["values"]["root_module"]["resources"][0]["values"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(nodes.len(), 6, "{nodes:?}");
    let master_zone = nodes
        .iter()
        .find(|n| n["shard"] == 0 && n["planned_role"] == "master")
        .and_then(|n| n["zone"].as_str())
        .expect("shard 0's master")
        .to_string();

    // What the aws driver cannot do is refused, naming what to run instead, before any call.
    for (what, says) in [
        ("hang", "SIGSTOP"),
        ("partition", "nftables"),
        ("crash", "SIGKILL"),
    ] {
        let refused = drill(&tf, &moto, &[what, "--zone", &master_zone]);
        assert_eq!(refused.code, Some(2), "{what} refused:\n{}", refused.all());
        assert!(refused.stderr.contains(says), "{}", refused.stderr);
        assert!(
            refused.stderr.contains("redisha-drill stop --zone"),
            "{}",
            refused.stderr
        );
    }

    // The zone's instance stopped for 5 s (moto stops at once: the default adds a minute for
    // EC2's OS shutdown), then started; the default heal timeout covers the boot.
    let out = drill(
        &tf,
        &moto,
        &[
            "stop",
            "--zone",
            &master_zone,
            "--seconds",
            "5",
            "--format",
            "json",
        ],
    );
    eprintln!("{}", out.stderr);
    if out.code != Some(0) {
        eprintln!("SSM runner:\n{}", runner.report());
    }
    assert_eq!(out.code, Some(0), "the drill passes:\n{}", out.all());
    let report: Json = serde_json::from_str(&out.stdout).expect("the JSON report");
    eprintln!("{report:#}");
    assert_eq!(report["failure"]["action"]["action"], "stop");
    assert_eq!(report["heal_timed_out"], false);
    let shards = report["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 3);
    let acked: u64 = shards
        .iter()
        .map(|s| s["writes_acked"].as_u64().unwrap_or(0))
        .sum();
    assert!(acked > 0, "the drill wrote: {report}");
    for s in shards {
        assert_eq!(s["acked_lost"], 0, "no acknowledged write lost: {s}");
    }
    assert_eq!(
        report["disagreements"].as_array().map(Vec::len),
        Some(0),
        "prediction = observation: {report}"
    );
    assert_eq!(report["predicted"], report["observed"]);
    assert_eq!(report["observed"]["masters_lost"], 1);
    assert_eq!(report["observed"]["replicas_promoted"], 1);
    assert_eq!(report["restore"]["planned_layout"], true, "{report}");
    assert!(
        runner
            .ran()
            .iter()
            .any(|r| r.comment == "boot" && r.code == 0),
        "the stopped instance came back by booting: {}",
        runner.report()
    );
    assert!(
        std::fs::read_dir(tf.path())
            .expect("working dir")
            .filter_map(Result::ok)
            .all(|e| !e
                .file_name()
                .to_string_lossy()
                .starts_with("redisha-drill-stopped-")),
        "the record of the stopped instance is gone once it runs"
    );

    // Back to what Terraform planned: nothing left to do.
    let after = tf.run(&["plan", "-detailed-exitcode", "-no-color"]);
    assert_eq!(after.code, Some(0), "nothing left to do:\n{}", after.all());
}
