//! Sentinel mode under a crashing operator: the real Terraform CLI and provider, real
//! redis-server data nodes and Redis Sentinel processes on loopback. Each step SIGKILLs the
//! provider at an operator checkpoint of one operation (create, growing and shrinking the
//! shape, password rotation; see `common::crash::run_killed_at`), then requires of the next
//! apply what an SRE relies on after a crashed run: it converges and the plan after it is
//! empty, every sentinel names the planned primary with its quorum, every write a replica
//! acknowledged before the fault reads back, exactly the processes the state knows are
//! running, and destroy leaves none.
//!
//! Sentinel tests take 127.140-149: these 143, 144 and 145, data ports 7900+.

mod common;

use std::path::{Path, PathBuf};

use common::crash::{drop_private_state, run_killed_at, Kill};
use common::local_cluster::{redis_processes, Cleanup};
use common::sentinel::{
    addresses, assert_readable, connect, monitoring, resource_values, write_acknowledged,
};
use common::{TfDir, TfOutput, TF_TIMEOUT};

const BASE_PORT: u16 = 7900;
const MASTER: &str = "crashed";
const FIRST: &str = "sentinel-crash-Secret-1";
const SECOND: &str = "sentinel-crash-Secret-2";
const KEYS: usize = 300;

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

variable "data_dir" {
  type = string
}

variable "replicas" {
  type = number
}

variable "sentinels" {
  type = number
}

variable "zones" {
  type = number
}

resource "redisha_sentinel" "crashed" {
  name           = "crashed"
  replicas       = var.replicas
  node_memory_mb = 64
  password       = var.password

  dynamic "zone" {
    for_each = slice(["zone-a", "zone-b", "zone-c", "zone-d"], 0, var.zones)
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
    count               = var.sentinels
    master_name         = "crashed"
    down_after_ms       = 1000
    failover_timeout_ms = 10000
  }

  local {
    data_dir       = var.data_dir
    base_port      = BASE_PORT
    loopback_octet = OCTET
  }
}
"#;

/// The shape a command asks for.
#[derive(Clone, Copy)]
struct Shape {
    password: &'static str,
    replicas: usize,
    sentinels: usize,
    /// Zones of two hosts each: a replica per zone (spread = zone).
    zones: usize,
}

const SMALL: Shape = Shape {
    password: FIRST,
    replicas: 2,
    sentinels: 3,
    zones: 3,
};
const GROWN: Shape = Shape {
    password: FIRST,
    replicas: 3,
    sentinels: 5,
    zones: 4,
};

/// A deployment under test: its working dir, its (absolute) data dir and how many commands ran
/// (each gets its own provider log).
struct Deployment {
    octet: u8,
    tf: TfDir,
    data_dir: PathBuf,
    runs: std::cell::Cell<u32>,
}

impl Deployment {
    fn new(octet: u8) -> Deployment {
        let main_tf = MAIN_TF
            .replace("BASE_PORT", &BASE_PORT.to_string())
            .replace("OCTET", &octet.to_string());
        let tf = TfDir::dev(&main_tf);
        let data_dir = tf.path().join("nodes");
        Deployment {
            octet,
            tf,
            data_dir,
            runs: std::cell::Cell::new(0),
        }
    }

    fn args(&self, verb: &str, flags: &[&str], s: Shape) -> Vec<String> {
        let mut args = vec![verb.to_string(), "-no-color".to_string()];
        args.extend(flags.iter().map(|f| f.to_string()));
        args.extend([
            format!("-var=password={}", s.password),
            format!("-var=data_dir={}", self.data_dir.display()),
            format!("-var=replicas={}", s.replicas),
            format!("-var=sentinels={}", s.sentinels),
            format!("-var=zones={}", s.zones),
        ]);
        args
    }

    /// `terraform VERB` with the provider's debug log in a file of its own.
    fn command(&self, verb: &str, flags: &[&str], s: Shape) -> (std::process::Command, PathBuf) {
        let args = self.args(verb, flags, s);
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

    fn run(&self, verb: &str, flags: &[&str], s: Shape) -> TfOutput {
        let (cmd, _) = self.command(verb, flags, s);
        let out = common::run_with_timeout(cmd, TF_TIMEOUT);
        for p in [FIRST, SECOND] {
            assert!(
                !out.all().contains(p),
                "a password appeared in terraform {verb}'s output"
            );
        }
        out
    }

    #[track_caller]
    fn apply(&self, s: Shape) {
        self.run("apply", &["-auto-approve"], s)
            .assert_success("terraform apply");
    }

    /// An apply whose provider is SIGKILLed at `kill`; false when a resumed apply
    /// (`Kill::unless_finished`) finished before reaching it.
    #[track_caller]
    fn apply_killed_at(&self, s: Shape, kill: Kill) -> bool {
        let (cmd, log) = self.command("apply", &["-auto-approve"], s);
        let killed = run_killed_at(cmd, &log, kill);
        eprintln!(
            "[127.{}] killed at {} #{}: {} (checkpoints it logged after: {:?})",
            self.octet, kill.checkpoint, kill.nth, killed.reached, killed.later_checkpoints
        );
        killed.reached
    }

    /// Applies killed at each of `kills` in turn (each resuming what the previous left), then
    /// the apply that must finish. With `drop_private`, every apply starts without private
    /// state (as a hand-edited or restored state file has none): the driver's records alone
    /// must find the processes.
    fn converge_after_kills(&self, s: Shape, kills: &[Kill], drop_private: bool) {
        for (i, &kill) in kills.iter().enumerate() {
            if drop_private {
                drop_private_state(self.tf.path());
            }
            let kill = if i == 0 { kill } else { kill.unless_finished() };
            if !self.apply_killed_at(s, kill) {
                break;
            }
        }
        if drop_private {
            drop_private_state(self.tf.path());
        }
        self.apply(s);
    }

    #[track_caller]
    fn assert_plan_clean(&self, s: Shape) {
        let out = self.run("plan", &["-detailed-exitcode"], s);
        assert_eq!(
            out.code,
            Some(0),
            "plan after the apply is not empty (exit {:?}):\n{}",
            out.code,
            out.all()
        );
    }

    fn state_list(&self) -> Vec<String> {
        let out = self.tf.run(&["state", "list"]);
        out.stdout.lines().map(str::to_string).collect()
    }

    /// Everything an SRE checks after the apply that followed a crash, for shape `s`: the state
    /// lists every process up, exactly those run, the sentinels monitor the planned primary
    /// with their quorum, the plan is empty and `acked` reads back. Returns the primary.
    fn assert_converged(&self, rt: &tokio::runtime::Runtime, s: Shape, acked: &[String]) -> String {
        let v = resource_values(&self.tf);
        let data = addresses(&v, "data");
        let sentinels = addresses(&v, "sentinel");
        assert_eq!(
            (data.len(), sentinels.len()),
            (s.replicas + 1, s.sentinels),
            "the state's nodes: {v}"
        );
        let nodes = v["nodes"].as_array().expect("nodes");
        assert!(nodes.iter().all(|n| n["status"] == "up"), "{v}");
        let primary = v["primary"].as_str().expect("primary").to_string();
        let primaries: Vec<&str> = nodes
            .iter()
            .filter(|n| n["role"] == "primary")
            .filter_map(|n| n["address"].as_str())
            .collect();
        assert_eq!(primaries, [primary.as_str()], "one primary: {v}");
        assert_only_known_processes(&self.data_dir, &data, &sentinels);
        rt.block_on(monitoring(
            &sentinels, s.password, MASTER, &primary, s.replicas,
        ));
        rt.block_on(assert_readable(&primary, s.password, acked));
        self.assert_plan_clean(s);
        primary
    }

    #[track_caller]
    fn assert_destroys(&self, s: Shape) {
        self.run("destroy", &["-auto-approve"], s)
            .assert_success("terraform destroy");
        let left = redis_processes(&self.data_dir);
        assert!(left.is_empty(), "processes left after destroy: {left:?}");
        assert!(self.state_list().is_empty(), "destroy left state behind");
    }
}

/// Every redis-server or sentinel process started from `data_dir` listens on an address the
/// state lists, and each listed address has exactly one: nothing runs that the state does not
/// know, and nothing it knows is missing.
#[track_caller]
fn assert_only_known_processes(data_dir: &Path, data: &[String], sentinels: &[String]) {
    let mut running: Vec<String> = redis_processes(data_dir)
        .into_iter()
        .map(|p| {
            p.address
                .unwrap_or_else(|| format!("pid {} (no address)", p.pid))
        })
        .collect();
    running.sort();
    let mut known: Vec<String> = data.iter().chain(sentinels).cloned().collect();
    known.sort();
    assert_eq!(
        running, known,
        "the processes running are not those the state lists"
    );
}

fn cleanup(d: &Deployment, s: Shape) -> Cleanup<'_> {
    Cleanup {
        tf: &d.tf,
        data_dir: d.data_dir.clone(),
        destroy_args: d.args("destroy", &["-auto-approve"], s),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

/// A create killed after its data nodes started and again after its sentinels did: Terraform
/// recorded nothing, the next apply finishes the same deployment (no second set of processes).
/// Then growing the shape (a zone, a replica and two sentinels more) is killed after the replica was
/// added and again after the sentinels were.
#[test]
fn sentinel_create_and_growth_killed_midway_are_finished_by_the_next_apply() {
    let rt = runtime();
    let d = Deployment::new(143);
    let _cleanup = cleanup(&d, GROWN);

    d.converge_after_kills(
        SMALL,
        &[
            Kill::at("sentinel.data_started", 1),
            Kill::at("sentinel.sentinels_started", 1),
        ],
        false,
    );
    let primary = d.assert_converged(&rt, SMALL, &[]);
    let acked = write_most(&rt, &primary, "before-growth");

    d.converge_after_kills(
        GROWN,
        &[
            Kill::at("sentinel.reshape.replicas_added", 1),
            Kill::at("sentinel.reshape.sentinels_added", 1),
        ],
        false,
    );
    let after = d.assert_converged(&rt, GROWN, &acked);
    assert_eq!(after, primary, "growing the shape kept the primary");
    d.assert_destroys(GROWN);
}

/// Shrinking the shape is killed after the processes were removed (before the sentinels were
/// reset); a password rotation is killed after both passwords were accepted and again after
/// the sentinels moved to the new one. The old password must end refused, the new accepted.
/// Every apply here starts without private state.
#[test]
fn sentinel_shrink_and_rotation_killed_midway_are_finished_by_the_next_apply() {
    let rt = runtime();
    let d = Deployment::new(144);
    let rotated = Shape {
        password: SECOND,
        ..SMALL
    };
    let _cleanup = cleanup(&d, rotated);

    d.apply(GROWN);
    let primary = d.assert_converged(&rt, GROWN, &[]);
    let acked = write_most(&rt, &primary, "before-shrink");

    d.converge_after_kills(SMALL, &[Kill::at("sentinel.reshape.removed", 1)], true);
    d.assert_converged(&rt, SMALL, &acked);

    d.converge_after_kills(
        rotated,
        &[
            Kill::at("sentinel.rotate.both_accepted", 1),
            Kill::at("sentinel.rotate.sentinels_moved", 1),
        ],
        true,
    );
    let primary = d.assert_converged(&rt, rotated, &acked);
    let v = resource_values(&d.tf);
    assert_refused(&rt, &addresses(&v, "data"), FIRST);
    assert!(!primary.is_empty());
    // Plan and destroy without private state find every process too.
    assert!(
        drop_private_state(d.tf.path()),
        "no private state after the apply"
    );
    d.assert_plan_clean(rotated);
    // (A plan writes no state: destroy starts without private state too.)
    d.assert_destroys(rotated);
}

/// A create killed once its hosts were provisioned and again once its replicas synced; a
/// shrink killed once the primary was known to stay and again after the first sentinel was
/// reset; a rotation of the password the sentinels share, killed once the sentinels accepted
/// both passwords and again once they sent the new one to their peers. The shrink and the
/// rotation start without private state.
#[test]
fn sentinel_kills_between_the_other_steps_are_finished_by_the_next_apply() {
    let rt = runtime();
    let d = Deployment::new(145);
    let rotated = Shape {
        password: SECOND,
        ..SMALL
    };
    let _cleanup = cleanup(&d, rotated);

    d.converge_after_kills(
        SMALL,
        &[
            Kill::at("sentinel.hosts_provisioned", 1),
            Kill::at("sentinel.replicas_synced", 1),
        ],
        false,
    );
    d.assert_converged(&rt, SMALL, &[]);
    d.apply(GROWN);
    let primary = d.assert_converged(&rt, GROWN, &[]);
    let acked = write_most(&rt, &primary, "before-shrink");

    d.converge_after_kills(
        SMALL,
        &[
            Kill::at("sentinel.reshape.primary_kept", 1),
            Kill::at("sentinel.reshape.sentinel_reset", 1),
        ],
        true,
    );
    d.assert_converged(&rt, SMALL, &acked);

    d.converge_after_kills(
        rotated,
        &[
            Kill::at("sentinel.rotate.sentinels_accept_both", 1),
            Kill::at("sentinel.rotate.sentinels_send_new", 1),
        ],
        true,
    );
    d.assert_converged(&rt, rotated, &acked);
    let v = resource_values(&d.tf);
    assert_refused(&rt, &addresses(&v, "data"), FIRST);
    assert_refused(&rt, &addresses(&v, "sentinel"), FIRST);
    d.assert_destroys(rotated);
}

/// No process at `addresses` takes `password` any more.
#[track_caller]
fn assert_refused(rt: &tokio::runtime::Runtime, addresses: &[String], password: &str) {
    for address in addresses {
        let taken = rt.block_on(async {
            match connect(address, password).await {
                Ok(mut c) => redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        });
        assert!(!taken, "{address} still takes the old password");
    }
}

/// `KEYS` writes to `primary` acknowledged with WAIT (see `write_acknowledged`); more than half
/// must be, or the test would prove little. Returns the acknowledged keys.
#[track_caller]
fn write_most(rt: &tokio::runtime::Runtime, primary: &str, prefix: &str) -> Vec<String> {
    let acked = rt.block_on(write_acknowledged(primary, FIRST, prefix, KEYS));
    assert!(
        acked.len() > KEYS / 2,
        "only {} writes acknowledged",
        acked.len()
    );
    acked
}
