//! No secret where it can leak: a cluster with a password, a `user` block, `default` switched
//! off, TLS (a generated authority) and metrics exporters goes through plan, apply, a change, `terraform show -json`,
//! `terraform output -json` and a deliberately failing apply, with `TF_LOG=trace` logs (core
//! and provider) captured to a file. Then every one of those texts, the process arguments of
//! every process redisha started (`/proc/<pid>/cmdline`: redis-server and the exporters) and
//! every file under the data directory except the mode-0600 config and key files are searched
//! for the passwords (the cluster's, the user's, the operator user's and the exporter user's)
//! and for every private key (the authority's and each node's): each PEM
//! body line (the base64 of the DER, as a PEM or an unbroken base64 copy would carry it) and
//! the raw private scalar. The only place allowed to hold a secret is the one Terraform must
//! keep: the sensitive `password` and `user[*].password` attributes in the state (and so in
//! `terraform show -json`, which prints state values, sensitive ones included); the scan
//! removes exactly those values there and requires nothing else. No key is in any Terraform
//! file at all. `redisha status` reads the cluster over TLS as the declared user, with the
//! authority from the state and from `--cacert`, and finds every node healthy. Loopback
//! 127.241.Z.H, ports 9920+.

mod common;

use std::path::{Path, PathBuf};

use common::local_cluster::{our_pids, Cleanup};
use common::TfDir;

const PASSWORD: &str = "leak-scan-Pw-5f3a9c71e2";
const USER_PASSWORD: &str = "leak-scan-UserPw-8d24b06e";

fn main_tf(policy: &str) -> String {
    format!(
        r#"
terraform {{
  required_providers {{
    redisha = {{ source = "redisha/redisha" }}
  }}
}}

variable "password" {{
  type      = string
  sensitive = true
}}

variable "user_password" {{
  type      = string
  sensitive = true
}}

resource "redisha_cluster" "scan" {{
  name           = "scan"
  shards         = 3
  replicas       = 1
  node_memory_mb = 64
  spread         = "zone"
  password       = var.password
  redis_config   = {{ "maxmemory-policy" = "{policy}" }}

  default_user_enabled = false
  user {{
    name     = "app"
    password = var.user_password
    rules    = "~* +@all"
  }}

  dynamic "zone" {{
    for_each = ["zone-a", "zone-b", "zone-c"]
    content {{
      name = zone.value
      host {{
        name      = "${{zone.value}}-1"
        memory_mb = 1024
        max_nodes = 4
      }}
    }}
  }}

  tls {{
    mode = "preferred"
  }}

  metrics {{}}

  local {{
    data_dir       = "${{path.root}}/.redisha/scan"
    base_port      = 9920
    loopback_octet = 241
    redis_server   = "/usr/bin/redis-server"
  }}
}}

output "endpoints" {{
  value = redisha_cluster.scan.endpoints
}}

output "ca" {{
  value = redisha_cluster.scan.tls_ca_cert_pem
}}
"#
    )
}

/// One secret in the forms a leak would carry it.
struct Secret {
    what: String,
    needles: Vec<Vec<u8>>,
}

fn password_secret(what: &str, password: &str) -> Secret {
    Secret {
        what: what.into(),
        needles: vec![password.as_bytes().to_vec()],
    }
}

/// A PEM private key's body lines (each base64 of part of the DER: in a leaked PEM, and in
/// any unbroken base64 copy, since the lines are 64 characters, a multiple of 4) and the
/// private scalar as raw bytes and hex. The first line is skipped: it is mostly the
/// algorithm header every key of its type shares.
fn key_secret(path: &Path) -> Secret {
    let pem = std::fs::read_to_string(path).expect("read a key");
    let body: Vec<&str> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    let mut needles: Vec<Vec<u8>> = body
        .iter()
        .skip(1)
        .filter(|l| l.len() >= 24)
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let der = base64_decode(&body.concat());
    // ECDSA (rcgen's keys): the private key is an OCTET STRING of 32 bytes (04 20 ...).
    if let Some(i) = der.windows(2).position(|w| w == [0x04, 0x20]) {
        if let Some(scalar) = der.get(i + 2..i + 34) {
            needles.push(scalar.to_vec());
            needles.push(hex(scalar).into_bytes());
        }
    }
    assert!(
        needles.len() >= 2,
        "{} gave nothing to look for",
        path.display()
    );
    Secret {
        what: format!("the private key {}", path.display()),
        needles,
    }
}

/// Text around the first secret found in `text`, the secret itself masked, for the report.
fn around(text: &[u8], secrets: &[Secret]) -> String {
    for n in secrets.iter().flat_map(|s| &s.needles) {
        if let Some(i) = text.windows(n.len()).position(|w| w == n.as_slice()) {
            let from = i.saturating_sub(200);
            let to = (i + n.len() + 80).min(text.len());
            let before = String::from_utf8_lossy(&text[from..i]);
            let after = String::from_utf8_lossy(&text[i + n.len()..to]);
            return format!("{before}<SECRET>{after}");
        }
    }
    String::new()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("a PEM body is base64")
}

/// The secrets found in `haystack`, by name.
fn found(secrets: &[Secret], haystack: &[u8]) -> Vec<String> {
    secrets
        .iter()
        .filter(|s| {
            s.needles
                .iter()
                .any(|n| haystack.windows(n.len()).any(|w| w == n.as_slice()))
        })
        .map(|s| s.what.clone())
        .collect()
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

/// The command lines of the processes running from `data_dir` now; one ended by a roll may
/// linger as a zombie (no command line) until something reaps it.
fn command_lines(data_dir: &Path) -> Vec<(u32, Vec<u8>)> {
    our_pids(data_dir)
        .into_iter()
        .filter_map(|pid| Some((pid, std::fs::read(format!("/proc/{pid}/cmdline")).ok()?)))
        .filter(|(_, c)| !c.is_empty())
        .collect()
}

/// The pids of the redis-server processes among `cmdlines` (the exporters are left out).
fn node_pids(cmdlines: &[(u32, Vec<u8>)]) -> std::collections::BTreeSet<u32> {
    cmdlines
        .iter()
        .filter(|(_, c)| String::from_utf8_lossy(c).contains("redis-server"))
        .map(|(pid, _)| *pid)
        .collect()
}

fn mode(path: &Path) -> u32 {
    let meta = std::fs::metadata(path).expect("stat");
    std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777
}

/// The sensitive passwords of a `redisha_cluster`'s attributes removed: `password` and each
/// `user` block's.
fn remove_passwords(attributes: &mut serde_json::Map<String, serde_json::Value>) {
    attributes.remove("password");
    for user in attributes
        .get_mut("user")
        .and_then(|u| u.as_array_mut())
        .into_iter()
        .flatten()
    {
        if let Some(u) = user.as_object_mut() {
            u.remove("password");
        }
    }
}

/// `json` without the value of every sensitive password attribute of a `redisha_cluster`
/// (`password` and `user[*].password`, which Terraform keeps in state and prints in
/// `show -json`).
fn without_sensitive_password(json: &mut serde_json::Value) {
    match json {
        serde_json::Value::Object(map) => {
            if map.get("type").and_then(|t| t.as_str()) == Some("redisha_cluster") {
                // `show -json`: the resource's `values`; the state file: each instance's
                // `attributes`.
                let instances = map
                    .get_mut("instances")
                    .and_then(|i| i.as_array_mut())
                    .map(|list| list.iter_mut().collect::<Vec<_>>())
                    .unwrap_or_default();
                for holder in instances {
                    if let Some(a) = holder.get_mut("attributes").and_then(|v| v.as_object_mut()) {
                        remove_passwords(a);
                    }
                }
                if let Some(v) = map.get_mut("values").and_then(|v| v.as_object_mut()) {
                    remove_passwords(v);
                }
            }
            for v in map.values_mut() {
                without_sensitive_password(v);
            }
        }
        serde_json::Value::Array(list) => list.iter_mut().for_each(without_sensitive_password),
        _ => {}
    }
}

#[test]
fn no_password_or_private_key_anywhere_terraform_or_the_nodes_show() {
    let mut tf = TfDir::dev(&main_tf("noeviction"));
    let log = tf.path().join("tf-trace.log");
    tf.env.push(("TF_LOG".into(), "trace".into()));
    // Through the environment, as a pipeline would pass it: Terraform logs its command-line
    // arguments, so a `-var=password=...` would be in the log by Terraform's own doing.
    tf.env.push(("TF_VAR_password".into(), PASSWORD.into()));
    tf.env
        .push(("TF_VAR_user_password".into(), USER_PASSWORD.into()));
    tf.env
        .push(("TF_LOG_PATH".into(), log.display().to_string()));
    let data_dir = tf.path().join(".redisha/scan");
    let pass = "-input=false".to_string();
    let _cleanup = Cleanup {
        tf: &tf,
        data_dir: data_dir.clone(),
        destroy_args: vec!["destroy".into(), "-auto-approve".into(), pass.clone()],
    };
    // Every text Terraform printed, by the command that printed it.
    let mut shown: Vec<(String, Vec<u8>)> = Vec::new();
    let mut run = |args: &[&str], what: &str| -> common::TfOutput {
        let mut a = args.to_vec();
        a.push(&pass);
        let out = tf.run(&a);
        shown.push((format!("terraform {what}"), out.all().into_bytes()));
        out
    };

    run(&["plan", "-no-color"], "plan").assert_success("plan");
    run(&["apply", "-auto-approve", "-no-color"], "apply").assert_success("create");
    // A change that rolls every node (a redis_config setting).
    std::fs::write(tf.path().join("main.tf"), main_tf("allkeys-lru")).expect("main.tf");
    run(&["plan", "-no-color"], "plan of a change").assert_success("plan a change");
    run(
        &["apply", "-auto-approve", "-no-color"],
        "apply of a change",
    )
    .assert_success("change");
    // Every process redisha started, with the cluster whole: 6 nodes, 6 exporters.
    let mut cmdlines = command_lines(&data_dir);
    assert!(
        cmdlines.len() >= 12,
        "6 nodes and 6 exporters expected, read {} command lines",
        cmdlines.len()
    );
    // A deliberately failing apply: a value the nodes refuse at CONFIG SET.
    std::fs::write(tf.path().join("main.tf"), main_tf("no-such-policy")).expect("main.tf");
    let failed = run(&["apply", "-auto-approve", "-no-color"], "failing apply");
    assert!(!failed.success(), "an invalid maxmemory-policy was applied");
    // The refused value stops nothing: no node was restarted into a config it cannot start
    // with, and the error names what to fix.
    // (Terraform wraps a diagnostic's lines.)
    let said = failed
        .all()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        said.contains("redis_config") && said.contains("no node was restarted"),
        "{said}"
    );
    let after_failure = command_lines(&data_dir);
    assert_eq!(
        node_pids(&after_failure),
        node_pids(&cmdlines),
        "the failing apply stopped or restarted nodes"
    );
    assert_eq!(node_pids(&after_failure).len(), 6, "six nodes run");
    std::fs::write(tf.path().join("main.tf"), main_tf("allkeys-lru")).expect("main.tf");

    let mut show = tf.run(&["show", "-json"]);
    show.assert_success("show -json");
    let outputs = tf.run(&["output", "-json"]);
    outputs.assert_success("output -json");
    shown.push(("terraform output -json".into(), outputs.all().into_bytes()));
    let mut show_json: serde_json::Value =
        serde_json::from_str(&show.stdout).expect("show -json is JSON");
    for p in [PASSWORD, USER_PASSWORD] {
        assert!(
            show.stdout.contains(p),
            "show -json is expected to print the sensitive passwords (else this scan proves nothing there)"
        );
    }
    without_sensitive_password(&mut show_json);
    show.stdout = show_json.to_string();
    shown.push((
        "terraform show -json, less the sensitive password".into(),
        show.all().into_bytes(),
    ));
    let mut state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tf.path().join("terraform.tfstate")).expect("state"),
    )
    .expect("state is JSON");
    without_sensitive_password(&mut state);
    shown.push((
        "terraform.tfstate, less the sensitive password".into(),
        state.to_string().into_bytes(),
    ));
    // `redisha status` over TLS, as the declared user (`default` is off): the authority from
    // the state, then from a file (`--cacert`); every node healthy either way.
    let ca = tf.output_json()["ca"]
        .as_str()
        .expect("the ca output")
        .to_string();
    let ca_file = tf.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("ca.pem");
    let state_file = tf.path().join("terraform.tfstate");
    for cacert in [None, Some(&ca_file)] {
        let mut cmd = std::process::Command::new(common::redisha_status_binary());
        cmd.args(["--once", "--format", "json", "--state"])
            .arg(&state_file)
            .env("REDISHA_USER", "app")
            .env("REDISHA_PASSWORD", USER_PASSWORD);
        if let Some(f) = cacert {
            cmd.arg("--cacert").arg(f);
        }
        let out = cmd.output().expect("run redisha status");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "status printed no JSON ({e}): {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(
            out.status.code(),
            Some(0),
            "status with {cacert:?}: {report}"
        );
        let nodes = report["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 6, "{report}");
        assert!(
            nodes.iter().all(|n| n["alive"] == true),
            "status with {cacert:?}: {report}"
        );
        assert_eq!(report["cluster_state"], "ok", "{report}");
        let mut said = out.stdout.clone();
        said.extend(&out.stderr);
        shown.push((format!("redisha status (--cacert {cacert:?})"), said));
    }

    let log_text = std::fs::read(&log).expect("the trace log");
    assert!(
        String::from_utf8_lossy(&log_text).contains("\"@module\":\"redisha\"")
            || String::from_utf8_lossy(&log_text).contains("provider.terraform-provider-redisha"),
        "the trace log has no provider lines"
    );
    shown.push(("TF_LOG=trace log".into(), log_text));

    // The secrets: the passwords (the cluster's, the user's, the operator user's and the
    // exporter user's), the authority's key and every node's key.
    let cluster_id = show_json["values"]["root_module"]["resources"][0]["values"]["cluster_id"]
        .as_str()
        .expect("cluster_id in show -json")
        .to_string();
    let operator_pw = std::fs::read_to_string(data_dir.join(&cluster_id).join("operator-password"))
        .expect("the operator user's password beside the cluster record");
    let operator_pw = operator_pw.trim().to_string();
    let exporter_pw = redisha_cluster::acl::exporter_password(&redisha_cluster::Password::new(
        operator_pw.clone(),
    ));
    let mut secrets = vec![
        password_secret("the password", PASSWORD),
        password_secret("the user's password", USER_PASSWORD),
        password_secret("the operator user's password", &operator_pw),
        password_secret("the exporter user's password", exporter_pw.expose()),
    ];
    let keys: Vec<PathBuf> = walk(&data_dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
        .collect();
    assert_eq!(keys.len(), 7, "six node keys and the authority's: {keys:?}");
    secrets.extend(keys.iter().map(|k| key_secret(k)));

    let mut leaks = Vec::new();
    for (what, text) in &shown {
        for s in found(&secrets, text) {
            leaks.push(format!("{s} in {what}: ...{}...", around(text, &secrets)));
        }
    }
    // The processes running after the failing apply too (it may restart some).
    cmdlines.extend(command_lines(&data_dir));
    for (pid, cmdline) in &cmdlines {
        for s in found(&secrets, cmdline) {
            leaks.push(format!("{s} in the arguments of pid {pid}"));
        }
    }
    let mut scanned = 0;
    for file in walk(&data_dir) {
        if mode(&file) == 0o600 {
            continue;
        }
        scanned += 1;
        let bytes = std::fs::read(&file).unwrap_or_default();
        for s in found(&secrets, &bytes) {
            leaks.push(format!(
                "{s} in {} (mode {:o})",
                file.display(),
                mode(&file)
            ));
        }
    }
    assert!(
        scanned > 0,
        "no file under the data directory was readable to scan"
    );
    // The 0600 files that may hold secrets are exactly the config, password and key files.
    for file in walk(&data_dir) {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let bytes = std::fs::read(&file).unwrap_or_default();
        if !found(&secrets, &bytes).is_empty() {
            assert_eq!(
                mode(&file),
                0o600,
                "{} holds a secret and is not 0600",
                file.display()
            );
            assert!(
                name.ends_with(".conf") || name.ends_with(".key") || name.contains("password"),
                "{} holds a secret but is neither a config, key nor password file",
                file.display()
            );
        }
    }
    assert!(leaks.is_empty(), "secrets found:\n{}", leaks.join("\n"));

    let destroyed = tf.run(&["destroy", "-auto-approve", &pass]);
    destroyed.assert_success("destroy");
    assert!(our_pids(&data_dir).is_empty());
}
