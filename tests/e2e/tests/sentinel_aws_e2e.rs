//! `redisha_sentinel` on the aws driver under a crashing provider and a lost instance: the real
//! Terraform CLI and provider on moto_server's EC2 and SSM (3 zones, one instance each running
//! a data node and a sentinel), the processes real redis-server and Redis Sentinel bound to
//! loopback stand-ins (127.195.Z.1, data ports 28600-28689, sentinels 100 above), started by
//! the test-only SSM runner from the product's own user data and Run Command scripts. The
//! provider reaches them through REDISHA_AWS_TEST_ADDRESS_MAP (test builds only).
//!
//! 1. A create SIGKILLed after its data nodes started: Terraform recorded nothing; the next
//!    apply finds the create by its record (the security group's tags) and finishes it under
//!    the same id, on the same instances.
//! 2. A shrink (a replica fewer) SIGKILLed once the primary was kept, then applied again with
//!    the private state removed: the instances' tags alone find every process.
//! 3. The primary's instance terminated outside redisha: the plan shows it down, apply
//!    launches a replacement, starts its data node and sentinel there and puts the planned
//!    primary back.
//!
//! After each: the plan is empty, every sentinel names the primary and sees exactly the
//! replicas and peers that run, every write a replica acknowledged (WAIT) reads back. Destroy
//! leaves no instance and no password parameter.

mod common;
#[path = "common/moto.rs"]
mod moto;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::crash::{drop_private_state, run_killed_at, Kill};
use common::sentinel::{
    addresses, assert_readable, monitoring, resource_values, write_acknowledged,
};
use common::{TfDir, TfOutput, TF_TIMEOUT};
use moto::{Fixture, Moto, ZONES};
use redisha_aws::testing::ssm_runner::SsmRunner;

const NAME: &str = "e2e-awssent";
const PASSWORD: &str = "aws-sentinel-e2e-Secret-5";
const KEYS: usize = 200;

/// The stand-in of each zone's one instance, `<zone>-1`.
fn stand_ins() -> Vec<(String, String)> {
    moto::zone_stand_ins(195)
}

/// A base port in 28600-28689 free on every stand-in, with the sentinels' 100 above.
fn free_port() -> u16 {
    (28600..28690)
        .find(|p| {
            stand_ins().iter().all(|(_, ip)| {
                [*p, p + 100]
                    .iter()
                    .all(|q| TcpListener::bind((ip.as_str(), *q)).is_ok())
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

variable "replicas" {{
  type = number
}}

resource "redisha_sentinel" "orders" {{
  name           = "{NAME}"
  replicas       = var.replicas
  node_memory_mb = 256
  password       = var.password

  sentinel {{
    master_name         = "orders"
    down_after_ms       = 1500
    failover_timeout_ms = 10000
  }}

  aws {{
    subnet_ids    = [{subnets}]
    instance_type = "t3.small"
    ami           = "{ami}"
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

/// The working dir, with a provider log per command.
struct Deployment {
    tf: TfDir,
    runs: std::cell::Cell<u32>,
}

impl Deployment {
    fn command(&self, verb: &str, flags: &[&str], replicas: usize) -> (Command, PathBuf) {
        let mut args = vec![verb.to_string(), "-no-color".to_string()];
        args.extend(flags.iter().map(|f| f.to_string()));
        args.push(format!("-var=replicas={replicas}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.tf.command(&args);
        self.runs.set(self.runs.get() + 1);
        let log = self
            .tf
            .path()
            .join(format!("provider-{}.log", self.runs.get()));
        cmd.env("TF_LOG_PROVIDER", "debug").env("TF_LOG_PATH", &log);
        (cmd, log)
    }

    fn run(&self, verb: &str, flags: &[&str], replicas: usize) -> TfOutput {
        let (cmd, _) = self.command(verb, flags, replicas);
        let out = common::run_with_timeout(cmd, TF_TIMEOUT);
        assert!(
            !out.all().contains(PASSWORD),
            "the password in terraform {verb}'s output"
        );
        out
    }

    /// An apply whose provider is SIGKILLed at `kill`; false when a resumed apply
    /// (`Kill::unless_finished`) finished before reaching it.
    #[track_caller]
    fn apply_killed_at(&self, replicas: usize, kill: Kill) -> bool {
        let (cmd, log) = self.command("apply", &["-auto-approve"], replicas);
        let killed = run_killed_at(cmd, &log, kill);
        eprintln!(
            "killed at {} #{}: {} (checkpoints it logged after: {:?})",
            kill.checkpoint, kill.nth, killed.reached, killed.later_checkpoints
        );
        killed.reached
    }

    /// `terraform plan -detailed-exitcode`'s exit code (0: no change, 2: changes).
    fn plan_code(&self, replicas: usize) -> Option<i32> {
        let out = self.run("plan", &["-detailed-exitcode"], replicas);
        if out.code == Some(1) {
            panic!("terraform plan failed:\n{}", out.all());
        }
        out.code
    }

    /// The checks after every apply (see the module doc); returns the primary.
    fn assert_converged(
        &self,
        rt: &tokio::runtime::Runtime,
        replicas: usize,
        acked: &[String],
    ) -> String {
        let v = resource_values(&self.tf);
        let data = addresses(&v, "data");
        let sentinels = addresses(&v, "sentinel");
        assert_eq!((data.len(), sentinels.len()), (replicas + 1, 3), "{v}");
        let nodes = v["nodes"].as_array().expect("nodes");
        assert!(nodes.iter().all(|n| n["status"] == "up"), "{v}");
        let primary = v["primary"].as_str().expect("primary").to_string();
        let planned: Vec<&str> = nodes
            .iter()
            .filter(|n| n["role"] == "primary")
            .filter_map(|n| n["address"].as_str())
            .collect();
        assert_eq!(planned, [primary.as_str()], "one primary: {v}");
        rt.block_on(monitoring(
            &sentinels, PASSWORD, "orders", &primary, replicas,
        ));
        rt.block_on(assert_readable(&primary, PASSWORD, acked));
        assert_eq!(
            self.plan_code(replicas),
            Some(0),
            "the plan after the apply is empty"
        );
        primary
    }
}

/// Destroys what is left at the end, also when the test fails (before the runner and moto go).
struct Destroy<'a>(&'a Deployment);

impl Drop for Destroy<'_> {
    fn drop(&mut self) {
        let out = self.0.run("destroy", &["-auto-approve"], 1);
        if !out.success() && !std::thread::panicking() {
            panic!("terraform destroy failed:\n{}", out.all());
        }
    }
}

/// The deployment's instances not terminated, as (host, instance id), and every cluster id
/// they carry.
async fn live_instances(
    client: &aws_sdk_ec2::Client,
) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let mut hosts = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for i in moto::instances(client, NAME).await {
        if matches!(i.state.as_str(), "terminated" | "shutting-down") {
            continue;
        }
        hosts.insert((i.host().to_string(), i.id.clone()));
        ids.extend(i.tags.get("redisha:cluster-id").cloned());
    }
    (hosts, ids)
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sentinel_on_aws_survives_a_killed_provider_and_a_terminated_instance() {
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
    // Dropped after the destroy guard below: the runner ends its processes while moto runs.
    let runner = SsmRunner::booting(moto.port, NAME);
    let mut tf = TfDir::dev(&main_tf(&moto.endpoint(), &fx));
    tf.env = moto::provider_env_at(tf.path(), &stand_ins(), port, PASSWORD);
    let d = Deployment {
        tf,
        runs: std::cell::Cell::new(0),
    };
    let _destroy = Destroy(&d);
    let report = || eprintln!("SSM runner:\n{}", runner.report());

    // 1. The create killed after its data nodes started; Terraform recorded nothing.
    d.apply_killed_at(2, Kill::at("sentinel.data_started", 1));
    let listed = d.tf.run(&["state", "list"]);
    assert!(listed.stdout.trim().is_empty(), "{}", listed.all());
    let (killed_hosts, killed_ids) = rt.block_on(live_instances(&client));
    assert_eq!(killed_hosts.len(), 3, "{killed_hosts:?}");
    assert_eq!(killed_ids.len(), 1, "{killed_ids:?}");
    // The next apply finishes that create: same id, same instances.
    let out = d.run("apply", &["-auto-approve"], 2);
    if !out.success() {
        report();
    }
    out.assert_success("the apply after the killed create");
    let v = resource_values(&d.tf);
    assert_eq!(
        Some(v["cluster_id"].as_str().unwrap_or_default().to_string()),
        killed_ids.iter().next().cloned(),
        "the create resumed under the killed one's id"
    );
    assert_eq!(rt.block_on(live_instances(&client)).0, killed_hosts);
    let primary = d.assert_converged(&rt, 2, &[]);
    let acked = rt.block_on(write_acknowledged(&primary, PASSWORD, "before", KEYS));
    assert!(acked.len() > KEYS / 2, "only {} acknowledged", acked.len());

    // 2. A replica fewer, killed once the primary was kept and again (without the private
    //    state) once the replica was removed; the next apply without the private state finds
    //    every process by the instances' tags.
    d.apply_killed_at(1, Kill::at("sentinel.reshape.primary_kept", 1));
    drop_private_state(d.tf.path());
    if d.apply_killed_at(1, Kill::at("sentinel.reshape.removed", 1).unless_finished()) {
        drop_private_state(d.tf.path());
    }
    let out = d.run("apply", &["-auto-approve"], 1);
    if !out.success() {
        report();
    }
    out.assert_success("the apply after the killed shrink, without private state");
    let after = d.assert_converged(&rt, 1, &acked);
    assert_eq!(after, primary, "the shrink kept the primary");
    assert!(drop_private_state(d.tf.path()));
    assert_eq!(
        d.plan_code(1),
        Some(0),
        "a plan without private state finds it all"
    );
    // A refresh keeps what read rebuilt: the private state is back.
    d.run("apply", &["-refresh-only", "-auto-approve"], 1)
        .assert_success("terraform apply -refresh-only");

    // 3. The primary's instance terminated outside redisha.
    let v = resource_values(&d.tf);
    let primary_host = v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["role"] == "primary")
        .and_then(|n| n["host"].as_str())
        .expect("the primary's host")
        .to_string();
    let (hosts, _) = rt.block_on(live_instances(&client));
    let old: Vec<String> = hosts
        .iter()
        .filter(|(h, _)| *h == primary_host)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(old.len(), 1, "{hosts:?}");
    rt.block_on(client.terminate_instances().instance_ids(&old[0]).send())
        .expect("TerminateInstances");
    wait_until(
        "the primary to die with its instance",
        Duration::from_secs(30),
        || std::net::TcpStream::connect(&primary).is_err(),
    );
    assert_eq!(d.plan_code(1), Some(2), "the plan shows the lost processes");
    let out = d.run("apply", &["-auto-approve"], 1);
    if !out.success() {
        report();
    }
    out.assert_success("the apply after the instance was terminated");
    let back = d.assert_converged(&rt, 1, &acked);
    assert_eq!(back, primary, "the planned primary is back");
    let (hosts, ids) = rt.block_on(live_instances(&client));
    assert_eq!(hosts.len(), 3, "{hosts:?}");
    assert!(
        hosts
            .iter()
            .any(|(h, id)| *h == primary_host && *id != old[0]),
        "a replacement instance for {primary_host}: {hosts:?}"
    );
    assert_eq!(ids.len(), 1, "{ids:?}");

    // Destroy: no instance and no parameter left.
    let cluster_id = ids.iter().next().cloned().unwrap_or_default();
    d.run("destroy", &["-auto-approve"], 1)
        .assert_success("terraform destroy");
    assert!(rt.block_on(live_instances(&client)).0.is_empty());
    for name in [
        redisha_aws::secrets::parameter_name(NAME, &cluster_id),
        redisha_aws::secrets::sentinel_parameter_name(NAME, &cluster_id),
    ] {
        let found = rt.block_on(client.ssm.get_parameter().name(&name).send());
        assert!(found.is_err(), "parameter {name} left after destroy");
    }
}
