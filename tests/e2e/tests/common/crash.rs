//! Fault injection for the cluster resource: Terraform runs the built provider, the harness
//! tails Terraform's provider log for the operator's checkpoint lines and SIGKILLs the provider
//! process at the N-th one, then checks what the next apply makes of what was left.
//!
//! The operator logs `tracing::debug!(checkpoint = "<name>", "checkpoint")`. With
//! `TF_LOG_PROVIDER=debug` and `TF_LOG_PATH`, Terraform writes it as
//!
//! ```text
//! 2026-11-25T16:46:56.370Z [DEBUG] provider.terraform-provider-redisha: checkpoint: checkpoint=form.nodes_met @module=redisha timestamp=...
//! ```
//!
//! with the fields in no fixed order, so a line counts when one of its words is exactly
//! `checkpoint=<name>`.
//!
//! The kill is as precise as the log's path allows: the line travels provider stderr ->
//! go-plugin -> log file -> this poller, so the provider runs on for a few milliseconds after
//! the checkpoint. [`Killed::later_checkpoints`] records the checkpoints it still logged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde_json::Value as Json;

use super::local_cluster::{kill_redis_under, redis_processes, sigkill, RedisProcess};
use super::{TfDir, TfOutput, TF_TIMEOUT};

/// `examples/local/main.tf` with what the fault tests vary as variables: the cluster's name and
/// an absolute data dir (two working dirs can share one; the process check matches it in
/// redis-server's command line), no health data source (the tests check the nodes themselves).
pub const MAIN_TF: &str = r#"
terraform {
  required_providers {
    redisha = {
      source = "redisha/redisha"
    }
  }
}

provider "redisha" {}

variable "cluster_name" {
  type = string
}

variable "data_dir" {
  type = string
}

variable "password" {
  type      = string
  sensitive = true
}

variable "shards" {
  type = number
}

variable "replicas" {
  type = number
}

variable "base_port" {
  type = number
}

variable "loopback_octet" {
  type = number
}

variable "redis_config" {
  type    = map(string)
  default = {}
}

variable "redis_server" {
  type    = string
  default = "redis-server"
}

variable "default_user_enabled" {
  type    = bool
  default = true
}

variable "operator_password_generation" {
  type    = number
  default = null
}

# ACL users: name -> rules, and name -> password.
variable "user_rules" {
  type    = map(string)
  default = {}
}

variable "user_passwords" {
  type      = map(string)
  default   = {}
  sensitive = true
}

resource "redisha_cluster" "this" {
  name           = var.cluster_name
  shards         = var.shards
  replicas       = var.replicas
  node_memory_mb = 256
  spread         = "zone"
  password       = var.password
  redis_config   = var.redis_config

  default_user_enabled         = var.default_user_enabled
  operator_password_generation = var.operator_password_generation

  dynamic "user" {
    for_each = var.user_rules
    content {
      name     = user.key
      password = var.user_passwords[user.key]
      rules    = user.value
    }
  }

  dynamic "zone" {
    for_each = ["zone-a", "zone-b", "zone-c"]
    content {
      name = zone.value
      host {
        name      = "${zone.value}-1"
        memory_mb = 1024
        max_nodes = 2
      }
      host {
        name      = "${zone.value}-2"
        memory_mb = 1024
        max_nodes = 2
      }
    }
  }

  local {
    data_dir       = var.data_dir
    base_port      = var.base_port
    loopback_octet = var.loopback_octet
    redis_server   = var.redis_server
  }
}

output "endpoints" {
  value = redisha_cluster.this.endpoints
}

output "nodes" {
  value = redisha_cluster.this.nodes
}
"#;

/// redis-server's default for `databases`: what a node runs with once the setting is removed.
pub const DEFAULT_DATABASES: &str = "16";

/// A `user { }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: String,
    pub rules: String,
}

/// Who a test connection logs in as: a user (`None`: `default`) and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: Option<String>,
    pub password: String,
}

impl Login {
    pub fn user(name: &str, password: &str) -> Self {
        Login {
            user: Some(name.to_string()),
            password: password.to_string(),
        }
    }
}

impl From<&str> for Login {
    /// The `default` user with `password`.
    fn from(password: &str) -> Self {
        Login {
            user: None,
            password: password.to_string(),
        }
    }
}

impl From<&String> for Login {
    fn from(password: &String) -> Self {
        Login::from(password.as_str())
    }
}

impl From<&Login> for Login {
    fn from(login: &Login) -> Self {
        login.clone()
    }
}

/// What one apply asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub password: String,
    pub shards: u32,
    pub replicas: u32,
    pub redis_config: BTreeMap<String, String>,
    /// `local.redis_server`: the engine's binary.
    pub redis_server: String,
    /// `user { }` blocks, in name order (as Terraform's `for_each` over the map makes them).
    pub users: Vec<User>,
    pub default_user_enabled: bool,
    /// `operator_password_generation` (`None`: unset).
    pub operator_generation: Option<u64>,
}

impl Settings {
    pub fn new(password: &str, shards: u32, replicas: u32) -> Self {
        Settings {
            password: password.to_string(),
            shards,
            replicas,
            redis_config: BTreeMap::new(),
            redis_server: "redis-server".to_string(),
            users: Vec::new(),
            default_user_enabled: true,
            operator_generation: None,
        }
    }

    pub fn operator_generation(&self, generation: u64) -> Self {
        Settings {
            operator_generation: Some(generation),
            ..self.clone()
        }
    }

    /// With a `user` block (replacing one of the same name).
    pub fn user(&self, name: &str, password: &str, rules: &str) -> Self {
        let mut s = self.clone();
        s.users.retain(|u| u.name != name);
        s.users.push(User {
            name: name.to_string(),
            password: password.to_string(),
            rules: rules.to_string(),
        });
        s.users.sort_by(|a, b| a.name.cmp(&b.name));
        s
    }

    pub fn default_user_enabled(&self, enabled: bool) -> Self {
        Settings {
            default_user_enabled: enabled,
            ..self.clone()
        }
    }

    /// Who the checks log in as: `default`, or with it off the first declared user (the
    /// tests give that one every permission).
    pub fn login(&self) -> Login {
        match self.users.first() {
            Some(u) if !self.default_user_enabled => Login::user(&u.name, &u.password),
            _ => Login::from(&self.password),
        }
    }

    /// Every password these settings hold: none may appear in Terraform's output.
    pub fn secrets(&self) -> Vec<&str> {
        std::iter::once(self.password.as_str())
            .chain(self.users.iter().map(|u| u.password.as_str()))
            .collect()
    }

    /// The users' passwords of `before` that these settings changed: they must be refused.
    pub fn retired_user_passwords(&self, before: &Settings) -> Vec<Login> {
        before
            .users
            .iter()
            .filter(|old| {
                self.users
                    .iter()
                    .any(|u| u.name == old.name && u.password != old.password)
            })
            .map(|old| Login::user(&old.name, &old.password))
            .collect()
    }

    /// The same cluster on the engine `binary`.
    pub fn engine(&self, binary: &str) -> Self {
        Settings {
            redis_server: binary.to_string(),
            ..self.clone()
        }
    }

    pub fn shards(&self, shards: u32) -> Self {
        Settings {
            shards,
            ..self.clone()
        }
    }

    pub fn replicas(&self, replicas: u32) -> Self {
        Settings {
            replicas,
            ..self.clone()
        }
    }

    pub fn password(&self, password: &str) -> Self {
        Settings {
            password: password.to_string(),
            ..self.clone()
        }
    }

    pub fn config(&self, key: &str, value: &str) -> Self {
        let mut s = self.clone();
        s.redis_config.insert(key.to_string(), value.to_string());
        s
    }

    pub fn without_config(&self, key: &str) -> Self {
        let mut s = self.clone();
        s.redis_config.remove(key);
        s
    }

    pub fn node_count(&self) -> usize {
        (self.shards * (1 + self.replicas)) as usize
    }

    /// The value every node must report for `databases`.
    pub fn databases(&self) -> &str {
        self.redis_config
            .get("databases")
            .map(String::as_str)
            .unwrap_or(DEFAULT_DATABASES)
    }

    /// `{k="v",...}`: HCL for the map variable.
    fn redis_config_hcl(&self) -> String {
        hcl_map(self.redis_config.iter())
    }

    fn user_rules_hcl(&self) -> String {
        hcl_map(self.users.iter().map(|u| (&u.name, &u.rules)))
    }

    fn user_passwords_hcl(&self) -> String {
        hcl_map(self.users.iter().map(|u| (&u.name, &u.password)))
    }
}

/// `{k="v",...}`: an HCL map of strings.
fn hcl_map<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let pairs: Vec<String> = pairs.map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(","))
}

/// Kill the provider at the `nth` (from 1) log line of `checkpoint`.
#[derive(Debug, Clone, Copy)]
pub struct Kill {
    pub checkpoint: &'static str,
    pub nth: usize,
    /// The apply may finish without reaching the checkpoint (see [`Kill::unless_finished`]).
    pub optional: bool,
}

impl Kill {
    pub fn at(checkpoint: &'static str, nth: usize) -> Self {
        Kill {
            checkpoint,
            nth,
            optional: false,
        }
    }

    /// For an apply that resumes a killed one: how much work the first kill left depends on
    /// its latency (on a loaded machine the provider runs on for a while before it dies), so
    /// the resumed apply may have no such checkpoint left. It is then let finish, and must
    /// succeed; otherwise it is killed there like any other.
    pub fn unless_finished(self) -> Self {
        Kill {
            optional: true,
            ..self
        }
    }
}

/// What an apply killed at a checkpoint left behind.
#[derive(Debug)]
pub struct Killed {
    pub output: TfOutput,
    pub provider_pids: Vec<u32>,
    /// Checkpoints the provider still logged after the one it was killed at (the kill's
    /// latency); printed so a report can say where it actually died.
    pub later_checkpoints: Vec<String>,
    /// Whether the checkpoint was reached and the provider killed (always, unless the kill
    /// was [`Kill::unless_finished`]).
    pub reached: bool,
}

/// Runs `cmd` (a `terraform apply` whose provider logs at debug level to `log`, see
/// `TF_LOG_PROVIDER`/`TF_LOG_PATH`) and SIGKILLs its provider at `kill`. Fails the test when the
/// checkpoint never shows up (the apply finished first) or Terraform did not fail.
#[track_caller]
pub fn run_killed_at(mut cmd: std::process::Command, log: &Path, kill: Kill) -> Killed {
    let log = log.to_path_buf();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    super::in_own_process_group(&mut cmd);
    let mut child = cmd.spawn().expect("spawn terraform");
    let stdout = drain(child.stdout.take().expect("stdout pipe"));
    let stderr = drain(child.stderr.take().expect("stderr pipe"));
    let terraform = child.id();

    let mut tail = LogTail::new(log.clone());
    let mut seen = 0usize;
    let mut provider_pids = Vec::new();
    // One attempt only: a provider Terraform starts later is not the one at the checkpoint.
    let mut attempted = false;
    let deadline = Instant::now() + TF_TIMEOUT;
    let status = loop {
        if !attempted {
            seen += tail.count_new(kill.checkpoint);
            if seen >= kill.nth {
                attempted = true;
                // The pid Terraform logged when it started the provider saves walking all
                // of /proc while the provider runs on; the walk is the fallback.
                provider_pids = tail
                    .started_pids
                    .iter()
                    .rev()
                    .copied()
                    .filter(|&pid| is_provider(pid) && is_descendant(pid, terraform))
                    .take(1)
                    .collect();
                if provider_pids.is_empty() {
                    provider_pids = provider_pids_under(terraform);
                }
                // Only a delivered signal counts: a provider gone by now was not killed.
                provider_pids.retain(|&pid| sigkill(pid));
            }
        }
        if let Some(status) = child.try_wait().expect("wait for terraform") {
            break Some(status);
        }
        if Instant::now() > deadline {
            super::kill_process_group(&mut child);
            break None;
        }
        // Tight: every millisecond is the provider running past the checkpoint.
        std::thread::sleep(Duration::from_millis(1));
    };
    let output = TfOutput {
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "terraform apply timed out after {TF_TIMEOUT:?}:\n{}",
        output.all()
    );
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    let all_checkpoints = checkpoints_in(&lines);
    if kill.optional && !attempted {
        assert!(
            output.success(),
            "the resumed apply neither reached {} #{} nor succeeded (exit {:?}):\n{}",
            kill.checkpoint,
            kill.nth,
            output.code,
            output.all()
        );
        return Killed {
            output,
            provider_pids: Vec::new(),
            later_checkpoints: all_checkpoints,
            reached: false,
        };
    }
    assert!(
        attempted,
        "the provider was never killed: checkpoint {} #{} did not appear (seen {seen} times) before terraform exited with {:?}; checkpoints logged: {all_checkpoints:?}\n{}",
        kill.checkpoint,
        kill.nth,
        output.code,
        output.all()
    );
    assert!(
        !provider_pids.is_empty(),
        "checkpoint {} #{} appeared but no provider process was left to kill (the apply ended first?); terraform exited with {:?}\n{}",
        kill.checkpoint,
        kill.nth,
        output.code,
        output.all()
    );
    assert!(
        !output.success(),
        "terraform apply succeeded although its provider (pid {provider_pids:?}) was killed at {} #{}:\n{}",
        kill.checkpoint,
        kill.nth,
        output.all()
    );
    let later_checkpoints = after_nth(&all_checkpoints, kill);
    Killed {
        output,
        provider_pids,
        later_checkpoints,
        reached: true,
    }
}

/// Removes every redisha_cluster and redisha_sentinel resource's private state (the driver's
/// handles) from
/// `dir`/terraform.tfstate, as a hand-edited or restored state file would be, and bumps
/// `serial`. Returns whether there was any.
#[track_caller]
pub fn drop_private_state(dir: &Path) -> bool {
    let path = dir.join("terraform.tfstate");
    let text = std::fs::read_to_string(&path).expect("terraform.tfstate");
    let mut state: Json = serde_json::from_str(&text).expect("terraform.tfstate is JSON");
    let mut dropped = 0;
    for resource in state["resources"].as_array_mut().into_iter().flatten() {
        if resource["type"] != "redisha_cluster" && resource["type"] != "redisha_sentinel" {
            continue;
        }
        for instance in resource["instances"].as_array_mut().into_iter().flatten() {
            if let Some(obj) = instance.as_object_mut() {
                dropped += usize::from(obj.remove("private").is_some());
            }
        }
    }
    if dropped == 0 {
        return false;
    }
    let serial = state["serial"].as_u64().expect("serial");
    state["serial"] = Json::from(serial + 1);
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&state).expect("state JSON"),
    )
    .expect("write terraform.tfstate");
    true
}

/// One node as the resource's `nodes` output reports it.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub address: String,
    pub role: String,
    pub status: String,
    pub id: String,
    pub shard: i64,
    pub slots: Vec<String>,
}

impl Node {
    fn from_json(v: &Json) -> Node {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Node {
            name: s("name"),
            address: s("address"),
            role: s("role"),
            status: s("status"),
            id: s("id"),
            shard: v["shard"].as_i64().unwrap_or(-1),
            slots: v["slots"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// The octet's base port: tests pick octets from 150 up, each gets its own ten ports.
pub fn base_port(octet: u8) -> u16 {
    9100 + 10 * u16::from(octet.saturating_sub(150))
}

/// A cluster under test: a Terraform working dir, the data dir its nodes live in and the
/// settings last asked for. Dropping it destroys what is left and then ends, by pid, every
/// redis-server that names the data dir, so a failed test leaves nothing running.
pub struct Cluster {
    pub name: String,
    pub octet: u8,
    pub base_port: u16,
    pub data_dir: PathBuf,
    /// Other clusters may live in `data_dir` too: only processes on this cluster's addresses
    /// (127.<octet>.*) are its own.
    pub shared_data_dir: bool,
    pub tf: TfDir,
    /// The settings of the last command: destroy needs the variables too.
    settings: Settings,
    /// Numbers the provider logs of this working dir.
    runs: std::cell::Cell<u32>,
    started: Instant,
}

impl Cluster {
    /// A cluster whose data dir lies in its own working dir.
    pub fn new(name: &str, octet: u8) -> Cluster {
        let tf = TfDir::dev(MAIN_TF);
        let data_dir = tf.path().join("data");
        Self::with_tf(tf, name, octet, data_dir, false)
    }

    /// A cluster whose nodes live under `data_dir`, which other clusters may share.
    pub fn in_data_dir(name: &str, octet: u8, data_dir: &Path) -> Cluster {
        Self::with_tf(
            TfDir::dev(MAIN_TF),
            name,
            octet,
            data_dir.to_path_buf(),
            true,
        )
    }

    fn with_tf(
        tf: TfDir,
        name: &str,
        octet: u8,
        data_dir: PathBuf,
        shared_data_dir: bool,
    ) -> Cluster {
        assert!(data_dir.is_absolute(), "data_dir must be absolute");
        Cluster {
            name: name.to_string(),
            octet,
            base_port: base_port(octet),
            data_dir,
            shared_data_dir,
            tf,
            settings: Settings::new("unset", 3, 1),
            runs: std::cell::Cell::new(0),
            started: Instant::now(),
        }
    }

    /// A progress line on stderr (shown for failed tests): where the time went.
    pub fn stage(&self, what: &str) {
        eprintln!(
            "[{} 127.{}] {:>6.1}s {what}",
            self.name,
            self.octet,
            self.started.elapsed().as_secs_f64()
        );
    }

    fn args(&self, verb: &str, flags: &[&str], s: &Settings) -> Vec<String> {
        let mut args = vec![verb.to_string(), "-no-color".to_string()];
        args.extend(flags.iter().map(|f| f.to_string()));
        args.extend([
            format!("-var=cluster_name={}", self.name),
            format!("-var=data_dir={}", self.data_dir.display()),
            format!("-var=password={}", s.password),
            format!("-var=shards={}", s.shards),
            format!("-var=replicas={}", s.replicas),
            format!("-var=base_port={}", self.base_port),
            format!("-var=loopback_octet={}", self.octet),
            format!("-var=redis_config={}", s.redis_config_hcl()),
            format!("-var=redis_server={}", s.redis_server),
            format!("-var=default_user_enabled={}", s.default_user_enabled),
            format!("-var=user_rules={}", s.user_rules_hcl()),
            format!("-var=user_passwords={}", s.user_passwords_hcl()),
        ]);
        args.extend(
            s.operator_generation
                .map(|g| format!("-var=operator_password_generation={g}")),
        );
        args
    }

    /// `terraform VERB -no-color FLAGS -var=...` with `s`.
    pub fn run(&mut self, verb: &str, flags: &[&str], s: &Settings) -> TfOutput {
        self.settings = s.clone();
        let args = self.args(verb, flags, s);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.tf.command(&args);
        self.log_provider(&mut cmd);
        super::run_with_timeout(cmd, TF_TIMEOUT)
    }

    /// Sends the provider's debug log of `cmd` to a new file in the working dir: the kill
    /// watches it, and a failed test prints its end (see Drop).
    fn log_provider(&self, cmd: &mut std::process::Command) -> PathBuf {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let log = self.tf.path().join(format!("provider-{n}.log"));
        cmd.env("TF_LOG_PROVIDER", "debug").env("TF_LOG_PATH", &log);
        log
    }

    /// The provider's last log lines of the latest Terraform command, a run of lines with the
    /// same message (a wait's progress) shown once with its count.
    fn last_log_lines(&self, count: usize) -> Vec<String> {
        let log = self
            .tf
            .path()
            .join(format!("provider-{}.log", self.runs.get()));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let marker = "provider.terraform-provider-redisha: ";
        let mut lines: Vec<(String, String, usize)> = Vec::new();
        for line in text.lines() {
            let Some((_, rest)) = line.split_once(marker) else {
                continue;
            };
            // The same line but for its timestamps (hclog writes the fields in any order).
            let mut words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("timestamp="))
                .collect();
            words.sort_unstable();
            let message = words.join(" ");
            match lines.last_mut() {
                Some((m, last, n)) if *m == message => {
                    *last = line.to_string();
                    *n += 1;
                }
                _ => lines.push((message, line.to_string(), 1)),
            }
        }
        lines[lines.len().saturating_sub(count)..]
            .iter()
            .map(|(_, line, n)| match n {
                1 => line.clone(),
                n => format!("{line}   (x{n})"),
            })
            .collect()
    }

    #[track_caller]
    pub fn apply(&mut self, s: &Settings) -> TfOutput {
        let out = self.run("apply", &["-auto-approve"], s);
        out.assert_success("terraform apply");
        for secret in s.secrets() {
            assert!(
                !out.all().contains(secret),
                "a password appeared in terraform's output"
            );
        }
        out
    }

    /// `terraform plan -detailed-exitcode` exits 0: nothing left to do.
    #[track_caller]
    pub fn assert_plan_clean(&mut self, s: &Settings) {
        let out = self.run("plan", &["-detailed-exitcode"], s);
        assert_eq!(
            out.code,
            Some(0),
            "plan after the apply is not empty (exit {:?}):\n{}",
            out.code,
            out.all()
        );
    }

    /// `terraform apply` that gets its provider SIGKILLed at `kill`. Fails the test when the
    /// checkpoint never shows up (the apply finished first) or Terraform did not fail.
    #[track_caller]
    pub fn apply_killed_at(&mut self, s: &Settings, kill: Kill) -> Killed {
        self.settings = s.clone();
        let args = self.args("apply", &["-auto-approve"], s);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.tf.command(&args);
        let log = self.log_provider(&mut cmd);
        let killed = run_killed_at(cmd, &log, kill);
        if killed.reached {
            self.stage(&format!(
                "provider {:?} killed at {} #{}; checkpoints it logged after that: {:?}",
                killed.provider_pids, kill.checkpoint, kill.nth, killed.later_checkpoints
            ));
        }
        killed
    }

    /// Logs what a kill left (not asserted: how far the provider got depends on the kill's
    /// latency): redis-servers, their roles, open slots and how many see `cluster_state:ok`.
    pub fn describe_wreck<L>(&self, rt: &tokio::runtime::Runtime, logins: &[L])
    where
        L: Clone + Into<Login>,
    {
        let logins: Vec<Login> = logins.iter().cloned().map(Into::into).collect();
        let processes = self.processes();
        let views = rt.block_on(futures::future::join_all(processes.iter().map(|p| async {
            let address = p.address.clone().unwrap_or_default();
            for pw in &logins {
                if let Ok(nodes) = cluster_nodes(&address, pw).await {
                    let info = query_text(&address, pw, redis::cmd("CLUSTER").arg("INFO"))
                        .await
                        .unwrap_or_default();
                    return Some((nodes, info.contains("cluster_state:ok")));
                }
            }
            None
        })));
        let (mut masters, mut replicas, mut open, mut ok, mut unanswered) = (0, 0, 0, 0, 0);
        for view in &views {
            let Some((nodes, state_ok)) = view else {
                unanswered += 1;
                continue;
            };
            let lines = parse_cluster_nodes(nodes);
            if let Some(me) = lines.iter().find(|l| l.is("myself")) {
                if me.is("master") {
                    masters += 1;
                } else {
                    replicas += 1;
                }
            }
            open += nodes.lines().filter(|l| l.contains('[')).count();
            ok += usize::from(*state_ok);
        }
        self.stage(&format!(
            "left by the kill: {} redis-server ({masters} master, {replicas} replica, {unanswered} not answering), {open} CLUSTER NODES lines with open slots, cluster_state:ok on {ok}",
            processes.len()
        ));
    }

    /// `terraform state list`: the resource addresses Terraform records.
    pub fn state_list(&self) -> Vec<String> {
        let out = self.tf.run(&["state", "list", "-no-color"]);
        // No state file at all is an empty state, not an error worth failing on here.
        if !out.success() && !self.tf.path().join("terraform.tfstate").exists() {
            return Vec::new();
        }
        out.assert_success("terraform state list");
        out.stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Whether terraform.tfstate holds private state for the cluster resource. Terraform
    /// itself drops it when the provider dies during ApplyResourceChange: it keeps the prior
    /// attributes but takes the (absent) response's private state.
    pub fn has_private_state(&self) -> bool {
        let path = self.tf.path().join("terraform.tfstate");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let state: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
        state["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["type"] == "redisha_cluster")
            .flat_map(|r| r["instances"].as_array().into_iter().flatten())
            .any(|i| i.get("private").is_some())
    }

    /// Removes the cluster resource's private state from terraform.tfstate (see
    /// [`drop_private_state`]). Returns whether there was any.
    #[track_caller]
    pub fn drop_private_state(&self) -> bool {
        let dropped = drop_private_state(self.tf.path());
        self.stage(if dropped {
            "private state dropped from terraform.tfstate"
        } else {
            "no private state in terraform.tfstate to drop"
        });
        dropped
    }

    pub fn nodes(&self) -> Vec<Node> {
        nodes_of(&self.tf.output_json())
    }

    pub fn endpoints(&self) -> Vec<String> {
        endpoints_of(&self.tf.output_json())
    }

    /// This cluster's redis-servers: every one naming the data dir, or, when the data dir is
    /// shared, those on this cluster's addresses.
    pub fn processes(&self) -> Vec<RedisProcess> {
        let prefix = format!("127.{}.", self.octet);
        redis_processes(&self.data_dir)
            .into_iter()
            .filter(|p| {
                !self.shared_data_dir || p.address.as_ref().is_some_and(|a| a.starts_with(&prefix))
            })
            .collect()
    }

    /// The next apply after a fault: it converges to `s`, the plan after it is empty, and the
    /// cluster is what `s` says (see [`Cluster::assert_cluster`]).
    #[track_caller]
    pub fn assert_recovers(
        &mut self,
        rt: &tokio::runtime::Runtime,
        s: &Settings,
        keys: &Keys,
        retired_password: Option<&str>,
    ) {
        self.stage("recovery apply");
        self.apply(s);
        self.stage("plan");
        self.assert_plan_clean(s);
        self.stage("checks");
        self.assert_cluster(rt, s, keys, retired_password);
    }

    /// The cluster as `s` asks: the node count and roles, every node up and every process one
    /// of the nodes (nothing the state does not know), every node sees `cluster_state:ok`
    /// with all slots and no slot open, replicas linked, `databases` as configured, the
    /// password `s.password` (and `retired_password` refused), and every key of `keys` reads.
    #[track_caller]
    pub fn assert_cluster(
        &self,
        rt: &tokio::runtime::Runtime,
        s: &Settings,
        keys: &Keys,
        retired_password: Option<&str>,
    ) {
        let outputs = self.tf.output_json();
        let nodes = nodes_of(&outputs);
        let summary: Vec<String> = nodes
            .iter()
            .map(|n| format!("{} {} {} {}", n.name, n.address, n.role, n.status))
            .collect();
        assert_eq!(
            nodes.len(),
            s.node_count(),
            "node count; nodes: {summary:?}"
        );
        assert_eq!(
            nodes.iter().filter(|n| n.role == "master").count(),
            s.shards as usize,
            "master count; nodes: {summary:?}"
        );
        assert!(
            nodes.iter().all(|n| n.status == "up"),
            "a node is not up: {summary:?}"
        );
        let addresses: BTreeSet<String> = nodes.iter().map(|n| n.address.clone()).collect();
        assert_eq!(addresses.len(), nodes.len(), "two nodes share an address");
        let endpoints: BTreeSet<String> = endpoints_of(&outputs).into_iter().collect();
        assert!(
            !endpoints.is_empty() && endpoints.is_subset(&addresses),
            "endpoints {endpoints:?} are not nodes of the cluster {addresses:?}"
        );
        assert_only_known_processes(&self.processes(), &addresses);
        rt.block_on(assert_nodes_healthy(&nodes, s, retired_password));
        rt.block_on(assert_logins(&nodes, s, &[]));
        let unreadable = rt.block_on(unreadable_keys(&endpoints_of(&outputs), s.login(), keys));
        assert!(
            unreadable.is_empty(),
            "{} of {} acknowledged keys unreadable, e.g. {:?}",
            unreadable.len(),
            keys.count,
            &unreadable[..unreadable.len().min(5)]
        );
    }

    /// Every node refuses each of `retired` (passwords a change replaced).
    #[track_caller]
    pub fn assert_refused(&self, rt: &tokio::runtime::Runtime, s: &Settings, retired: &[Login]) {
        rt.block_on(assert_logins(&self.nodes(), s, retired));
    }

    /// The cluster's directory, `<data_dir>/<cluster id>` (the only one: the data dir is
    /// this cluster's own).
    pub fn cluster_dir(&self) -> PathBuf {
        let dirs: Vec<PathBuf> = std::fs::read_dir(&self.data_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        assert_eq!(dirs.len(), 1, "one cluster directory expected: {dirs:?}");
        dirs[0].clone()
    }

    /// The operator user's password as the cluster directory keeps it.
    pub fn operator_password(&self) -> String {
        let path = self.cluster_dir().join("operator-password");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// `terraform destroy` works and leaves no redis-server and no data of this cluster.
    #[track_caller]
    pub fn assert_destroys(&mut self) {
        self.stage("destroy");
        let s = self.settings.clone();
        let out = self.run("destroy", &["-auto-approve"], &s);
        out.assert_success("terraform destroy");
        let left = self.processes();
        assert!(left.is_empty(), "redis-server left after destroy: {left:?}");
        if !self.shared_data_dir {
            let files = files_under(&self.data_dir);
            assert!(files.is_empty(), "data left after destroy: {files:?}");
        }
        assert!(self.state_list().is_empty(), "state after destroy");
        self.stage("destroyed");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[{} 127.{}] the provider's last log lines:",
                self.name, self.octet
            );
            for line in self.last_log_lines(40) {
                eprintln!("    {line}");
            }
        }
        let tfstate = self.tf.path().join("terraform.tfstate");
        let recorded = std::fs::read_to_string(&tfstate)
            .map(|t| t.contains("redisha_cluster"))
            .unwrap_or(false);
        if recorded {
            let s = self.settings.clone();
            let args = self.args("destroy", &["-auto-approve"], &s);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_quietly(self.tf.command(&args), super::TF_TIMEOUT);
        }
        // A node the state never learnt of survives destroy: end it by its pid.
        if self.shared_data_dir {
            for p in self.processes() {
                sigkill(p.pid);
            }
        } else {
            kill_redis_under(&self.data_dir);
        }
    }
}

fn nodes_of(outputs: &serde_json::Map<String, Json>) -> Vec<Node> {
    outputs
        .get("nodes")
        .and_then(Json::as_array)
        .map(|a| a.iter().map(Node::from_json).collect())
        .unwrap_or_default()
}

fn endpoints_of(outputs: &serde_json::Map<String, Json>) -> Vec<String> {
    outputs
        .get("endpoints")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every file and directory below `dir` (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut queue = vec![dir.to_path_buf()];
    while let Some(d) = queue.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                queue.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

/// Runs `cmd` to its end or kills it at `timeout`, never panicking: Drop uses it while a
/// failed test unwinds, where a second panic would abort the whole test binary.
fn run_quietly(mut cmd: std::process::Command, timeout: Duration) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    super::in_own_process_group(&mut cmd);
    let Ok(mut child) = cmd.spawn() else {
        return;
    };
    let deadline = Instant::now() + timeout;
    while let Ok(None) = child.try_wait() {
        if Instant::now() > deadline {
            super::kill_process_group(&mut child);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a child's pipe to the end on a thread, so it never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// Follows a growing log file, counting the complete lines that carry a checkpoint.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
    /// Pids from Terraform's `plugin started: path=... pid=N` lines, in order.
    started_pids: Vec<u32>,
}

impl LogTail {
    fn new(path: PathBuf) -> Self {
        LogTail {
            path,
            offset: 0,
            partial: String::new(),
            started_pids: Vec::new(),
        }
    }

    /// Lines naming `checkpoint` appended since the last call.
    fn count_new(&mut self, checkpoint: &str) -> usize {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return 0;
        };
        if meta.len() <= self.offset {
            return 0;
        }
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return 0;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return 0;
        }
        let mut bytes = Vec::new();
        let Ok(read) = file.read_to_end(&mut bytes) else {
            return 0;
        };
        self.offset += read as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        // Only whole lines: the rest waits for its newline.
        let Some(end) = self.partial.rfind('\n') else {
            return 0;
        };
        let complete: String = self.partial.drain(..=end).collect();
        self.started_pids.extend(
            complete
                .lines()
                .filter(|l| l.contains("plugin started:"))
                .filter_map(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("pid="))
                        .and_then(|p| p.parse::<u32>().ok())
                }),
        );
        checkpoints_in(&complete)
            .iter()
            .filter(|c| c.as_str() == checkpoint)
            .count()
    }
}

/// The checkpoint names in a provider log, in order.
pub fn checkpoints_in(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("checkpoint="))
                .map(|name| name.trim_matches('"').to_string())
        })
        .collect()
}

/// The checkpoints after the `kill.nth` occurrence of `kill.checkpoint`.
fn after_nth(all: &[String], kill: Kill) -> Vec<String> {
    let mut seen = 0;
    let at = all.iter().position(|c| {
        seen += usize::from(c == kill.checkpoint);
        seen == kill.nth
    });
    at.map(|i| all[i + 1..].to_vec()).unwrap_or_default()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether `root` is an ancestor of `pid`.
fn is_descendant(pid: u32, root: u32) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        match parent_of(p) {
            Some(parent) if parent == root => return true,
            Some(parent) if parent > 1 => p = parent,
            _ => return false,
        }
    }
    false
}

/// Whether `pid` runs the provider binary (` (deleted)` when cargo replaced the file meanwhile).
fn is_provider(pid: u32) -> bool {
    let binary_name = super::provider_binary()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|name| name.starts_with(&binary_name))
}

/// `(pid, parent pid)` of every process.
fn process_parents() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((pid, parent_of(pid)?))
        })
        .collect()
}

/// Every descendant of `root` (children, their children, ...): `scripts/terraform` may run
/// terraform through a wrapper, so the provider need not be a direct child.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, ppid) in process_parents() {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            found.push(c);
            queue.push(c);
        }
    }
    found
}

/// The provider processes Terraform (`root`) runs: descendants whose executable is the
/// provider binary.
pub fn provider_pids_under(root: u32) -> Vec<u32> {
    descendants(root)
        .into_iter()
        .filter(|&pid| is_provider(pid))
        .collect()
}

/// Every one of `processes` listens on one of `known`, one per address: nothing runs that the
/// state does not know.
#[track_caller]
pub fn assert_only_known_processes(processes: &[RedisProcess], known: &BTreeSet<String>) {
    let strays: Vec<&RedisProcess> = processes
        .iter()
        .filter(|p| !p.address.as_ref().is_some_and(|a| known.contains(a)))
        .collect();
    assert!(
        strays.is_empty(),
        "redis-server processes the state does not know: {strays:?} (known: {known:?})"
    );
    let mut by_address: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for p in processes {
        by_address
            .entry(p.address.as_deref().unwrap_or_default())
            .or_default()
            .push(p.pid);
    }
    let doubles: Vec<_> = by_address.iter().filter(|(_, p)| p.len() > 1).collect();
    assert!(doubles.is_empty(), "two processes per address: {doubles:?}");
    assert_eq!(
        processes.len(),
        known.len(),
        "one process per node expected: {processes:?} for {known:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Redis side: keys written with WAIT, slot maps, node checks.

/// `count` keys `crash:<i>` with values naming `tag`.
#[derive(Debug, Clone)]
pub struct Keys {
    pub tag: String,
    pub count: usize,
    /// Bytes of filler per value: more data makes a migration take long enough that a kill
    /// at a slot chunk finds other slots still in flight.
    pub value_size: usize,
}

impl Keys {
    pub fn new(tag: &str, count: usize) -> Self {
        Keys {
            tag: tag.to_string(),
            count,
            value_size: 0,
        }
    }
    pub fn with_value_size(self, value_size: usize) -> Self {
        Keys { value_size, ..self }
    }
    pub fn name(&self, i: usize) -> String {
        format!("crash:{i}")
    }
    pub fn value(&self, i: usize) -> String {
        let head = format!("{}-{i}-", self.tag);
        let fill = self.value_size.saturating_sub(head.len());
        // Deterministic filler that differs per key, so a value mixed up with another's shows.
        let filler: String = (0..fill)
            .map(|j| char::from(b'a' + ((i + j) % 26) as u8))
            .collect();
        head + &filler
    }
    /// No keys: for scenarios where nothing was written before the fault.
    pub fn none() -> Self {
        Keys::new("none", 0)
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A connection to one node, logged in as `login` (a bare password: `default`); bounded
/// connect and replies.
pub async fn connect(
    address: &str,
    login: impl Into<Login>,
) -> redis::RedisResult<MultiplexedConnection> {
    let login = login.into();
    let (host, port) = address.rsplit_once(':').ok_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "address without port",
        ))
    })?;
    let port: u16 = port.parse().map_err(|_| {
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad port"))
    })?;
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp(host.to_string(), port),
        redis: redis::RedisConnectionInfo {
            username: login.user,
            password: Some(login.password),
            ..Default::default()
        },
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(5))
        .set_response_timeout(Duration::from_secs(10));
    redis::Client::open(info)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

pub async fn query_text(
    address: &str,
    login: impl Into<Login>,
    cmd: &redis::Cmd,
) -> Result<String, String> {
    let mut conn = connect(address, login)
        .await
        .map_err(|e| format!("{address}: {e}"))?;
    cmd.query_async::<String>(&mut conn)
        .await
        .map_err(|e| format!("{address}: {e}"))
}

pub async fn cluster_nodes(address: &str, login: impl Into<Login>) -> Result<String, String> {
    query_text(address, login, redis::cmd("CLUSTER").arg("NODES")).await
}

/// One line of CLUSTER NODES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    pub id: String,
    pub address: String,
    pub flags: Vec<String>,
    pub master: String,
    pub config_epoch: u64,
    pub slots: Vec<String>,
}

impl NodeLine {
    pub fn is(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

pub fn parse_cluster_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            Some(NodeLine {
                id: f[0].to_string(),
                // "ip:port@cport[,hostname]"
                address: f[1].split('@').next().unwrap_or_default().to_string(),
                flags: f[2].split(',').map(str::to_string).collect(),
                master: f[3].to_string(),
                config_epoch: f[6].parse().unwrap_or(0),
                slots: f[8..].iter().map(|s| s.to_string()).collect(),
            })
        })
        .collect()
}

/// Slot ranges and the address of their master, from CLUSTER SLOTS of the first endpoint
/// that answers.
pub async fn slot_map(endpoints: &[String], login: impl Into<Login>) -> Vec<(u16, u16, String)> {
    let login = login.into();
    let mut last_error = String::from("no endpoints");
    for address in endpoints {
        let mut conn = match connect(address, &login).await {
            Ok(c) => c,
            Err(e) => {
                last_error = format!("{address}: {e}");
                continue;
            }
        };
        match redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<redis::Value>(&mut conn)
            .await
        {
            Ok(v) => return parse_cluster_slots(&v),
            Err(e) => last_error = format!("{address}: {e}"),
        }
    }
    panic!("no endpoint answers CLUSTER SLOTS: {last_error}");
}

fn parse_cluster_slots(v: &redis::Value) -> Vec<(u16, u16, String)> {
    use redis::Value;
    let Value::Array(ranges) = v else {
        return Vec::new();
    };
    ranges
        .iter()
        .filter_map(|r| {
            let Value::Array(r) = r else { return None };
            let int = |v: &Value| match v {
                Value::Int(i) => u16::try_from(*i).ok(),
                _ => None,
            };
            let (start, end) = (int(r.first()?)?, int(r.get(1)?)?);
            let Value::Array(master) = r.get(2)? else {
                return None;
            };
            let ip = match master.first()? {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let port = int(master.get(1)?)?;
            Some((start, end, format!("{ip}:{port}")))
        })
        .collect()
}

fn owner_of(map: &[(u16, u16, String)], key: &str) -> Option<String> {
    let slot = redis::cluster_routing::get_slot(key.as_bytes());
    map.iter()
        .find(|(s, e, _)| (*s..=*e).contains(&slot))
        .map(|(_, _, a)| a.clone())
}

fn group_by_owner(map: &[(u16, u16, String)], keys: &Keys) -> BTreeMap<String, Vec<usize>> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in 0..keys.count {
        let owner = owner_of(map, &keys.name(i)).unwrap_or_else(|| "unassigned".to_string());
        groups.entry(owner).or_default().push(i);
    }
    groups
}

/// Writes `keys` on their masters and has each master's writes acknowledged by a replica
/// (`WAIT 1`): what the user relies on surviving. Fails the test if a write is not acknowledged.
pub async fn write_acknowledged(endpoints: &[String], login: impl Into<Login>, keys: &Keys) {
    let login = &login.into();
    let map = slot_map(endpoints, login).await;
    let groups = group_by_owner(&map, keys);
    let jobs = groups.into_iter().map(|(owner, idx)| async move {
        let mut conn = connect(&owner, login)
            .await
            .unwrap_or_else(|e| panic!("connect {owner}: {e}"));
        let mut pipe = redis::pipe();
        for &i in &idx {
            pipe.cmd("SET")
                .arg(keys.name(i))
                .arg(keys.value(i))
                .ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("SET on {owner}: {e}"));
        // WAIT on the connection that wrote: it counts replicas that have those writes.
        let mut acked = 0i64;
        for _ in 0..5 {
            acked = redis::cmd("WAIT")
                .arg(1)
                .arg(2000)
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("WAIT on {owner}: {e}"));
            if acked >= 1 {
                break;
            }
        }
        assert!(
            acked >= 1,
            "no replica acknowledged {} writes on {owner}",
            idx.len()
        );
    });
    futures::future::join_all(jobs).await;
}

/// The keys that do not read back with their value, asking each key's master by the slot map
/// and following MOVED/ASK redirects for the rest (as a cluster client would).
pub async fn unreadable_keys(
    endpoints: &[String],
    login: impl Into<Login>,
    keys: &Keys,
) -> Vec<String> {
    if keys.count == 0 {
        return Vec::new();
    }
    let login = &login.into();
    let map = slot_map(endpoints, login).await;
    let groups = group_by_owner(&map, keys);
    let jobs = groups.into_iter().map(|(owner, idx)| async move {
        let read = async {
            let mut conn = connect(&owner, login).await.ok()?;
            let mut pipe = redis::pipe();
            for &i in &idx {
                pipe.cmd("GET").arg(keys.name(i));
            }
            pipe.query_async::<Vec<Option<String>>>(&mut conn)
                .await
                .ok()
        }
        .await;
        let mut wrong = Vec::new();
        match read {
            Some(values) => {
                for (&i, v) in idx.iter().zip(values) {
                    if v.as_deref() != Some(keys.value(i).as_str()) {
                        wrong.push(i);
                    }
                }
            }
            None => wrong = idx.clone(),
        }
        let mut unreadable = Vec::new();
        for i in wrong {
            let got = get_redirected(&owner, &keys.name(i), login).await;
            if got.as_ref().ok().and_then(|v| v.as_deref()) != Some(keys.value(i).as_str()) {
                unreadable.push(format!("{} ({got:?})", keys.name(i)));
            }
        }
        unreadable
    });
    futures::future::join_all(jobs)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// GET `key` starting at `address`, following up to four redirects.
async fn get_redirected(address: &str, key: &str, login: &Login) -> Result<Option<String>, String> {
    let mut address = address.to_string();
    let mut asking = false;
    for _ in 0..5 {
        let mut conn = connect(&address, login)
            .await
            .map_err(|e| format!("{address}: {e}"))?;
        let result = if asking {
            redis::pipe()
                .cmd("ASKING")
                .ignore()
                .cmd("GET")
                .arg(key)
                .query_async::<(Option<String>,)>(&mut conn)
                .await
                .map(|(v,)| v)
        } else {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(&mut conn)
                .await
        };
        match result {
            Ok(v) => return Ok(v),
            Err(e) => match (e.kind(), e.redirect_node()) {
                (redis::ErrorKind::Moved, Some((to, _))) => {
                    address = to.to_string();
                    asking = false;
                }
                (redis::ErrorKind::Ask, Some((to, _))) => {
                    address = to.to_string();
                    asking = true;
                }
                _ => return Err(format!("{address}: {e}")),
            },
        }
    }
    Err(format!("{key}: too many redirects"))
}

/// Per node: CLUSTER INFO says ok with every slot assigned and knows every node, CLUSTER
/// NODES has no open slot (`[` marks one migrating or importing), a replica's link is up,
/// `databases` is what `s` asks, and `retired_password` no longer authenticates.
pub async fn assert_nodes_healthy(nodes: &[Node], s: &Settings, retired_password: Option<&str>) {
    let login = &s.login();
    let checks = nodes.iter().map(|n| async move {
        let mut problems = Vec::new();
        let pw = login;
        let addr = n.address.as_str();
        match query_text(addr, pw, redis::cmd("CLUSTER").arg("INFO")).await {
            Ok(info) => {
                for want in [
                    "cluster_state:ok".to_string(),
                    "cluster_slots_assigned:16384".to_string(),
                    format!("cluster_known_nodes:{}", nodes.len()),
                ] {
                    if !info.lines().any(|l| l.trim() == want) {
                        problems.push(format!("CLUSTER INFO lacks {want}"));
                    }
                }
            }
            Err(e) => problems.push(format!("CLUSTER INFO: {e}")),
        }
        match cluster_nodes(addr, pw).await {
            Ok(text) => {
                let open: Vec<&str> = text.lines().filter(|l| l.contains('[')).collect();
                if !open.is_empty() {
                    problems.push(format!("open slots: {open:?}"));
                }
            }
            Err(e) => problems.push(format!("CLUSTER NODES: {e}")),
        }
        if n.role == "replica" {
            match query_text(addr, pw, redis::cmd("INFO").arg("replication")).await {
                Ok(info) if info.contains("master_link_status:up") => {}
                Ok(info) => problems.push(format!(
                    "replica link not up: {}",
                    info.lines()
                        .filter(|l| l.starts_with("master_"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )),
                Err(e) => problems.push(format!("INFO replication: {e}")),
            }
        }
        match connect(addr, pw).await {
            Ok(mut conn) => {
                let got: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("databases")
                    .query_async(&mut conn)
                    .await;
                match got {
                    Ok(kv) if kv.get(1).map(String::as_str) == Some(s.databases()) => {}
                    other => {
                        problems.push(format!("databases: want {}, got {other:?}", s.databases()))
                    }
                }
            }
            Err(e) => problems.push(format!("connect: {e}")),
        }
        if let Some(old) = retired_password {
            if logs_in(addr, old).await {
                problems.push("the old password still works".to_string());
            }
        }
        (format!("{} {addr}", n.name), problems)
    });
    assert_no_problems(checks, "unhealthy nodes").await;
}

/// Fails the test with every node's problems (`checks`: per node, its name and problems).
async fn assert_no_problems(
    checks: impl IntoIterator<Item = impl std::future::Future<Output = (String, Vec<String>)>>,
    what: &str,
) {
    let bad: Vec<(String, Vec<String>)> = futures::future::join_all(checks)
        .await
        .into_iter()
        .filter(|(_, p)| !p.is_empty())
        .collect();
    assert!(bad.is_empty(), "{what}: {bad:#?}");
}

/// Whether `login` can log in on `address`: connecting authenticates, and PING proves it
/// (a user allowed no PING is answered NOPERM, which only a logged-in user gets).
pub async fn logs_in(address: &str, login: impl Into<Login>) -> bool {
    match connect(address, login).await {
        Ok(mut conn) => match redis::cmd("PING").query_async::<String>(&mut conn).await {
            Ok(_) => true,
            Err(e) => e.code() == Some("NOPERM"),
        },
        Err(_) => false,
    }
}

/// Per node: every declared user logs in with its password, `default` only when enabled, and
/// none of `retired`.
pub async fn assert_logins(nodes: &[Node], s: &Settings, retired: &[Login]) {
    let checks = nodes.iter().map(|n| async move {
        let addr = n.address.as_str();
        let mut problems = Vec::new();
        for u in &s.users {
            if !logs_in(addr, Login::user(&u.name, &u.password)).await {
                problems.push(format!("user {} cannot log in with its password", u.name));
            }
        }
        let default = logs_in(addr, &s.password).await;
        if default != s.default_user_enabled {
            problems.push(format!(
                "default logs in: {default}, default_user_enabled = {}",
                s.default_user_enabled
            ));
        }
        for old in retired {
            if logs_in(addr, old).await {
                problems.push(format!(
                    "{} still logs in with a replaced password",
                    old.user.as_deref().unwrap_or("default")
                ));
            }
        }
        (format!("{} {addr}", n.name), problems)
    });
    assert_no_problems(checks, "logins not as configured").await;
}
