//! ACL users through Terraform with the local driver: bad `user` blocks are refused at plan
//! naming `user[i].name` / `user[i].rules`; a read-only user cannot SET while a writer can; the
//! operator user redisha works as cannot run what it does not need (FLUSHALL, KEYS); no user
//! password is in clear in the node directories; a user's password rotates in place while a
//! writer logged in as that user runs with WAIT, with no acknowledged write lost, after which
//! only the new password works; `default_user_enabled = false` refuses the default user and
//! the cluster still scales out; a user made by hand survives an apply (named in the plan's
//! warning) while a declared user whose block is removed is deleted; with `default` off the
//! metrics exporters scrape (as `redisha-exporter`), `redisha_backup` backs up as a declared
//! user, `final_backup` as the operator user, and `redisha-drill` runs a zone crash with its
//! clients logged in as a declared user. Loopback 127.230.Z.H, ports 9800+.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::clients::{self, Write};
use common::local_cluster::{our_pids, Cleanup};
use common::TfDir;
use redis::AsyncCommands;

const PASSWORD: &str = "aclE2eClusterPw7";
const READER_PW: &str = "aclE2eReaderPw3";
const APP_PW_1: &str = "aclE2eAppFirst5";
const APP_PW_2: &str = "aclE2eAppSecond9";
const HANDMADE_PW: &str = "aclE2eHandmadePw4";
const BACKUP_PW: &str = "aclE2eBackupPw6";
const KEYS: usize = 300;

const MAIN_TF: &str = r#"
terraform {
  required_providers {
    redisha = { source = "redisha/redisha" }
  }
}

variable "password" {
  type      = string
  sensitive = true
}
variable "app_password" {
  type      = string
  sensitive = true
}
variable "reader_password" {
  type      = string
  sensitive = true
}
variable "shards" { type = number }
variable "default_user_enabled" { type = bool }
variable "reader_name" {
  type    = string
  default = "reader"
}
variable "with_reader" { type = bool }
variable "backup_password" {
  type      = string
  sensitive = true
}
variable "backups" {
  type    = bool
  default = false
}
variable "app_rules" {
  type    = string
  default = "~* &* +@all"
}

resource "redisha_cluster" "acl" {
  name                 = "acl"
  shards               = var.shards
  replicas             = 1
  node_memory_mb       = 64
  spread               = "zone"
  password             = var.password
  default_user_enabled = var.default_user_enabled

  dynamic "zone" {
    for_each = ["zone-a", "zone-b", "zone-c"]
    content {
      name = zone.value
      host {
        name      = "${zone.value}-1"
        memory_mb = 1024
        max_nodes = 4
      }
    }
  }

  dynamic "user" {
    for_each = var.with_reader ? [var.reader_name] : []
    content {
      name     = user.value
      password = var.reader_password
      rules    = "~* +@read"
    }
  }

  user {
    name     = "app"
    password = var.app_password
    rules    = var.app_rules
  }

  # What a backup needs: the shards, the replicas' offsets and a snapshot.
  user {
    name     = "backup"
    password = var.backup_password
    rules    = "+info +cluster|nodes +replconf +sync +psync"
  }

  final_backup = var.backups ? "${path.root}/backups" : null

  metrics {}

  local {
    data_dir       = "${path.root}/.redisha/acl"
    base_port      = 9800
    loopback_octet = 230
  }
}

resource "redisha_backup" "now" {
  count       = var.backups ? 1 : 0
  cluster_id  = redisha_cluster.acl.cluster_id
  endpoints   = redisha_cluster.acl.endpoints
  user        = "backup"
  password    = var.backup_password
  destination = "${path.root}/backups"
}

output "endpoints" {
  value = redisha_cluster.acl.endpoints
}

output "cluster_id" {
  value = redisha_cluster.acl.cluster_id
}
"#;

/// The health data source on its own, reading the cluster above.
const HEALTH_TF: &str = r#"
terraform {
  required_providers {
    redisha = { source = "redisha/redisha" }
  }
}

variable "endpoints" { type = list(string) }
variable "user" {
  type    = string
  default = null
}
variable "password" {
  type      = string
  sensitive = true
}

data "redisha_cluster_health" "h" {
  endpoints = var.endpoints
  user      = var.user
  password  = var.password
}

output "healthy" {
  value = data.redisha_cluster_health.h.healthy
}
output "node_count" {
  value = length(data.redisha_cluster_health.h.nodes)
}
output "persistence_on_every_node" {
  value = data.redisha_cluster_health.h.persistence_on_every_node
}
"#;

/// `terraform apply` of [`HEALTH_TF`] reading `nodes` as `user` (`None`: unset).
fn read_health(
    tf: &TfDir,
    nodes: &[String],
    user: Option<&str>,
    password: &str,
) -> common::TfOutput {
    let list: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    let mut args = vec![
        "apply".to_string(),
        "-no-color".into(),
        "-auto-approve".into(),
        format!("-var=endpoints=[{}]", list.join(",")),
    ];
    args.extend(user.map(|u| format!("-var=user={u}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = tf.command(&args);
    // Not on the command line: Terraform logs its arguments.
    cmd.env("TF_VAR_password", password);
    let out = common::run_with_timeout(cmd, common::TF_TIMEOUT);
    assert!(
        !out.all().contains(password),
        "a password appeared in the health read's output"
    );
    out
}

struct Vars {
    shards: u32,
    default_enabled: bool,
    app_password: &'static str,
    with_reader: bool,
    backups: bool,
}

fn args(verb: &str, v: &Vars, extra: &[&str]) -> Vec<String> {
    let mut out = vec![verb.to_string(), "-no-color".into()];
    out.extend(extra.iter().map(|s| s.to_string()));
    out.extend([
        format!("-var=password={PASSWORD}"),
        format!("-var=reader_password={READER_PW}"),
        format!("-var=app_password={}", v.app_password),
        format!("-var=shards={}", v.shards),
        format!("-var=default_user_enabled={}", v.default_enabled),
        format!("-var=with_reader={}", v.with_reader),
        format!("-var=backup_password={BACKUP_PW}"),
        format!("-var=backups={}", v.backups),
    ]);
    out
}

fn run(tf: &TfDir, verb: &str, v: &Vars, extra: &[&str]) -> common::TfOutput {
    let a = args(verb, v, extra);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = tf.run(&a);
    for secret in [
        PASSWORD,
        READER_PW,
        APP_PW_1,
        APP_PW_2,
        HANDMADE_PW,
        BACKUP_PW,
    ] {
        assert!(
            !out.all().contains(secret),
            "a password appeared in terraform {verb}'s output"
        );
    }
    out
}

/// `endpoints` without the scheme.
fn addresses(tf: &TfDir) -> Vec<String> {
    common::endpoints(tf)
        .iter()
        .map(|e| e.trim_start_matches("redis://").to_string())
        .collect()
}

/// A connection to one node logged in as `user` (`None`: the default user).
async fn node_as(
    address: &str,
    user: Option<&str>,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let url = match user {
        Some(u) => format!("redis://{u}:{password}@{address}/"),
        None => format!("redis://:{password}@{address}/"),
    };
    let client = redis::Client::open(url)?;
    match tokio::time::timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::IoError,
            "connect timed out",
        ))),
    }
}

/// The error code of a command run on `address` as `user`, or "OK" when it ran.
async fn outcome(address: &str, user: Option<&str>, password: &str, cmd: &redis::Cmd) -> String {
    let mut con = match node_as(address, user, password).await {
        Ok(c) => c,
        Err(e) if redisha_cluster::conn::is_auth_error(&e) => return "login: refused".into(),
        Err(e) => return format!("login: {e}"),
    };
    match cmd.query_async::<redis::Value>(&mut con).await {
        Ok(_) => "OK".into(),
        Err(e) => e.code().unwrap_or("error").to_string(),
    }
}

/// `cmd` run on `address` as the operator user: "OK" or the error code.
async fn acl_as_operator(address: &str, operator_pw: &str, cmd: &redis::Cmd) -> String {
    outcome(address, Some("redisha-operator"), operator_pw, cmd).await
}

/// The user names `ACL LIST` shows on `address`.
async fn user_names(address: &str, operator_pw: &str) -> Vec<String> {
    let mut con = node_as(address, Some("redisha-operator"), operator_pw)
        .await
        .expect("log in as the operator");
    let lines: Vec<String> = redis::cmd("ACL")
        .arg("LIST")
        .query_async(&mut con)
        .await
        .expect("ACL LIST");
    lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

async fn cluster_as(
    addresses: &[String],
    user: &str,
    password: &str,
) -> redis::cluster_async::ClusterConnection {
    clients::cluster_connection(addresses, Some(user), password, None).await
}

async fn missing(addresses: &[String], keys: &[String]) -> Vec<String> {
    clients::missing_keys(&mut cluster_as(addresses, "app", APP_PW_2).await, keys).await
}

/// Writes keys as `app` until `stop`, each followed by `WAIT 1`: the keys a replica
/// acknowledged. Logs in with the new password, else the old one (a client moving over
/// during the rotation); follows MOVED.
async fn writer(addresses: Vec<String>, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut acknowledged = Vec::new();
    let mut target = addresses.first().cloned();
    let mut con: Option<redis::aio::MultiplexedConnection> = None;
    let mut i = 0usize;
    // One slot: keys with one hash tag.
    let tag = "{w}";
    while !stop.load(Ordering::SeqCst) {
        if con.is_none() {
            let a = target
                .clone()
                .unwrap_or_else(|| addresses[i % addresses.len()].clone());
            con = match node_as(&a, Some("app"), APP_PW_2).await {
                Ok(c) => Some(c),
                Err(_) => node_as(&a, Some("app"), APP_PW_1).await.ok(),
            };
            if con.is_none() {
                target = None;
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        let Some(connection) = con.as_mut() else {
            continue;
        };
        let key = format!("{tag}:{i}");
        i += 1;
        match clients::set_and_wait(connection, &key, i).await {
            Write::Acknowledged => acknowledged.push(key),
            Write::Unacknowledged => {}
            Write::Failed { redirect } => {
                target = redirect;
                con = None;
            }
            Write::TimedOut => {
                target = None;
                con = None;
            }
        }
    }
    acknowledged
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn acl_users_are_enforced_rotated_in_place_and_default_can_be_switched_off() {
    let tf = TfDir::dev(MAIN_TF);
    let data_dir = tf.path().join(".redisha/acl");
    let first = Vars {
        shards: 3,
        default_enabled: true,
        app_password: APP_PW_1,
        with_reader: true,
        backups: false,
    };
    let _cleanup = Cleanup {
        tf: &tf,
        data_dir: data_dir.clone(),
        destroy_args: args("destroy", &first, &["-auto-approve"]),
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");

    // Bad blocks are refused at plan, naming the block and attribute.
    let mut bad = args("plan", &first, &[]);
    bad.push("-var=reader_name=default".into());
    bad.push("-var=app_rules=~* >sneaky".into());
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let out = tf.run(&bad);
    assert!(!out.success(), "plan accepted a user named default");
    assert!(
        out.all().contains("user[0].name") && out.all().contains("user[1].rules"),
        "{}",
        out.all()
    );
    assert!(!out.all().contains("sneaky"), "a password rule was echoed");

    run(&tf, "apply", &first, &["-auto-approve"]).assert_success("create");
    let nodes = addresses(&tf);
    assert_eq!(nodes.len(), 6);
    let cluster_id = tf.output_json()["cluster_id"]
        .as_str()
        .expect("cluster_id")
        .to_string();
    let operator_pw = std::fs::read_to_string(data_dir.join(&cluster_id).join("operator-password"))
        .expect("the operator's password beside the cluster record");
    let operator_pw = operator_pw.trim().to_string();

    rt.block_on(async {
        let a = &nodes[0];
        // A read-only user reads but cannot write; the writer can.
        // Redis checks ACLs before it redirects: a GET it allows is answered or MOVED on any
        // node, a SET it refuses is NOPERM on every node.
        let read = outcome(a, Some("reader"), READER_PW, redis::cmd("GET").arg("{x}")).await;
        assert!(read == "OK" || read == "MOVED", "GET as reader: {read}");
        assert_eq!(
            outcome(
                a,
                Some("reader"),
                READER_PW,
                redis::cmd("SET").arg("{x}").arg(1)
            )
            .await,
            "NOPERM"
        );
        assert_eq!(
            outcome(a, Some("reader"), "wrong", &redis::cmd("PING")).await,
            "login: refused"
        );
        // The operator does its work but not what it does not need.
        assert_eq!(
            outcome(
                a,
                Some("redisha-operator"),
                &operator_pw,
                redis::cmd("CLUSTER").arg("NODES")
            )
            .await,
            "OK"
        );
        for forbidden in ["FLUSHALL", "KEYS", "SHUTDOWN", "FLUSHDB"] {
            let mut cmd = redis::cmd(forbidden);
            if forbidden == "KEYS" {
                cmd.arg("*");
            }
            assert_eq!(
                outcome(a, Some("redisha-operator"), &operator_pw, &cmd).await,
                "NOPERM",
                "the operator user may run {forbidden}"
            );
        }
        let mut con = cluster_as(&nodes, "app", APP_PW_1).await;
        for i in 0..KEYS {
            let () = con.set(format!("acl:{i}"), "v").await.expect("SET as app");
        }
    });
    let written: Vec<String> = (0..KEYS).map(|i| format!("acl:{i}")).collect();

    // Node directories keep hashes of the users' passwords, never the passwords.
    for file in walk(&data_dir) {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap_or_default()).to_string();
        for secret in [READER_PW, APP_PW_1] {
            assert!(
                !text.contains(secret),
                "{} holds a user's password",
                file.display()
            );
        }
    }
    let again = run(&tf, "plan", &first, &["-detailed-exitcode"]);
    assert!(
        again.success(),
        "a plan after create is not empty: {}",
        again.all()
    );

    // Rotation of app's password with a writer logged in as app.
    let rotated = Vars {
        app_password: APP_PW_2,
        ..first
    };
    let stop = Arc::new(AtomicBool::new(false));
    let w = rt.spawn(writer(nodes.clone(), stop.clone()));
    std::thread::sleep(Duration::from_secs(1));
    let applied = run(&tf, "apply", &rotated, &["-auto-approve"]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let acknowledged = rt.block_on(w).expect("writer");
    applied.assert_success("rotate app's password");
    assert!(
        acknowledged.len() > 20,
        "the writer barely wrote: {}",
        acknowledged.len()
    );
    let lost = rt.block_on(missing(&nodes, &acknowledged));
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost in the rotation",
        lost.len()
    );
    rt.block_on(async {
        for a in &nodes {
            assert_eq!(
                outcome(a, Some("app"), APP_PW_1, &redis::cmd("PING")).await,
                "login: refused",
                "{a}"
            );
            assert_eq!(
                outcome(a, Some("app"), APP_PW_2, &redis::cmd("PING")).await,
                "OK",
                "{a}"
            );
        }
    });

    // The default user switched off; the cluster still scales (MIGRATE as the operator).
    let no_default = Vars {
        shards: 4,
        default_enabled: false,
        app_password: APP_PW_2,
        with_reader: true,
        backups: false,
    };
    run(&tf, "apply", &no_default, &["-auto-approve"]).assert_success("default off, 4 shards");
    let nodes = addresses(&tf);
    assert_eq!(nodes.len(), 8);
    rt.block_on(async {
        for a in &nodes {
            assert_eq!(
                outcome(a, None, PASSWORD, &redis::cmd("PING")).await,
                "login: refused",
                "default still logs in on {a}"
            );
            assert_eq!(
                outcome(a, Some("app"), APP_PW_2, &redis::cmd("PING")).await,
                "OK",
                "{a}"
            );
        }
    });
    let lost = rt.block_on(missing(&nodes, &written));
    assert!(
        lost.is_empty(),
        "{} keys lost scaling out with default off",
        lost.len()
    );
    let again = run(&tf, "plan", &no_default, &["-detailed-exitcode"]);
    assert!(
        again.success(),
        "a plan after the scale-out is not empty: {}",
        again.all()
    );

    // The health data source reads the cluster as a declared user; without `user` it logs in
    // as `default`, is refused, and says to set `user`.
    let health = TfDir::dev(HEALTH_TF);
    let out = read_health(&health, &nodes, Some("app"), APP_PW_2);
    out.assert_success("the health data source as app");
    let outputs = health.output_json();
    assert_eq!(outputs["healthy"], true, "{outputs:?}");
    assert_eq!(outputs["node_count"], 8, "{outputs:?}");
    assert_eq!(outputs["persistence_on_every_node"], true, "{outputs:?}");
    let out = read_health(&health, &nodes, None, PASSWORD);
    assert!(
        !out.success(),
        "the health data source read the cluster as default, which is off"
    );
    let text = out.all().split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains("user: not set")
            && text.contains("set `user` to the name of one of its `user` blocks"),
        "the refusal does not name the `user` attribute and the fix: {text}"
    );

    // A user made by hand is left alone (and named at plan); a declared user whose block is
    // removed is deleted.
    rt.block_on(async {
        for a in &nodes {
            let made = acl_as_operator(
                a,
                &operator_pw,
                redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg("handmade")
                    .arg("on")
                    .arg(format!(">{HANDMADE_PW}"))
                    .arg("+ping"),
            )
            .await;
            assert_eq!(made, "OK", "ACL SETUSER handmade on {a}");
        }
    });
    // With `default` off, the exporters scrape as their own user.
    for a in &nodes {
        let (ip, port) = a.rsplit_once(':').expect("host:port");
        let port: u16 = port.parse().expect("port");
        let metrics = common::scrape(&format!("{ip}:{}", port + 20000));
        assert_eq!(
            common::sample(&metrics, "redis_up"),
            Some(1.0),
            "the exporter of {a} cannot log in"
        );
    }

    // The reader's block removed, and a backup taken as the declared `backup` user (the
    // resource) and one as the operator user at destroy (`final_backup`).
    let no_reader = Vars {
        with_reader: false,
        backups: true,
        ..no_default
    };
    let planned = run(&tf, "plan", &no_reader, &[]);
    planned.assert_success("plan without the reader");
    assert!(
        planned
            .all()
            .contains("ACL users redisha did not make are left alone")
            && planned.all().contains("\"handmade\""),
        "the plan does not name the hand-made user: {}",
        planned.all()
    );
    run(&tf, "apply", &no_reader, &["-auto-approve"]).assert_success("reader removed");
    rt.block_on(async {
        for a in &nodes {
            let users = user_names(a, &operator_pw).await;
            assert!(users.contains(&"handmade".to_string()), "{a}: {users:?}");
            assert!(!users.contains(&"reader".to_string()), "{a}: {users:?}");
            assert_eq!(
                outcome(a, Some("handmade"), HANDMADE_PW, &redis::cmd("PING")).await,
                "OK",
                "{a}"
            );
        }
    });
    let again = run(&tf, "plan", &no_reader, &["-detailed-exitcode"]);
    assert!(
        again.success(),
        "a plan after removing the reader is not empty: {}",
        again.all()
    );

    // A drill with `default` off: its clients log in as `app`, its own work as the operator.
    let drill = std::process::Command::new(common::drill_binary())
        .current_dir(tf.path())
        .args(["crash", "--zone", "zone-a", "--format", "json"])
        .env("REDISHA_PASSWORD", PASSWORD)
        .env("REDISHA_USER", "app")
        .env("REDISHA_USER_PASSWORD", APP_PW_2)
        .output()
        .expect("run redisha-drill");
    let stdout = String::from_utf8_lossy(&drill.stdout);
    let stderr = String::from_utf8_lossy(&drill.stderr);
    for secret in [PASSWORD, APP_PW_2] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a password in the drill's output"
        );
    }
    assert_eq!(
        drill.status.code(),
        Some(0),
        "the drill with default off:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("the drill's report");
    let shards = report["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 4, "{report}");
    for shard in shards {
        assert_eq!(shard["acked_lost"], 0, "{report}");
        assert!(shard["writes_acked"].as_u64().unwrap_or(0) > 0, "{report}");
    }
    assert!(
        report["disagreements"]
            .as_array()
            .is_some_and(|d| d.is_empty()),
        "{report}"
    );
    let again = run(&tf, "plan", &no_reader, &["-detailed-exitcode"]);
    assert!(
        again.success(),
        "a plan after the drill is not empty: {}",
        again.all()
    );

    run(&tf, "destroy", &no_reader, &["-auto-approve"]).assert_success("destroy");
    let backups = std::fs::read_dir(tf.path().join("backups").join(&cluster_id))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        backups, 2,
        "the resource's backup and the final one, both with default off"
    );
    assert!(our_pids(&data_dir).is_empty());
}
