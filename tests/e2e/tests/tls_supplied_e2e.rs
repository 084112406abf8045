//! TLS with the user's own certificate (`tls { ca_cert_pem, cert_pem, key_pem }`) through
//! Terraform and the local driver: a certificate that misses a node's address, or whose key
//! is another certificate's, is refused at plan with the field named and nothing started; a
//! good one is what every node serves, clients verify it with `tls_ca_cert_pem`, and
//! `tls_cert_expiry` is its expiry, warned about in its last 30 days; a renewed certificate
//! rolls onto every node with no key lost; a new authority in one step is refused (nodes on
//! either side of the roll would refuse each other), the three-step change is accepted. The
//! key never appears in any output. Loopback 127.240.Z.H, ports 9900+.

mod common;

use std::path::{Path, PathBuf};

use common::clients;
use common::local_cluster::{our_pids, Cleanup};
use common::TfDir;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use redis::AsyncCommands;

const PASSWORD: &str = "supplied-e2e-Secret-7";
const ADDRESSES: [&str; 3] = ["127.240.1.1", "127.240.2.1", "127.240.3.1"];

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

resource "redisha_cluster" "own" {
  name           = "own"
  shards         = 3
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
    mode        = "required"
    ca_cert_pem = file("${path.root}/ca.pem")
    cert_pem    = file("${path.root}/node.pem")
    key_pem     = file("${path.root}/node.key")
  }

  local {
    data_dir       = "${path.root}/.redisha/own"
    base_port      = 9900
    loopback_octet = 240
    redis_server   = "/usr/bin/redis-server"
  }
}

output "endpoints" {
  value = redisha_cluster.own.endpoints
}

output "ca" {
  value = redisha_cluster.own.tls_ca_cert_pem
}

output "expiry" {
  value = redisha_cluster.own.tls_cert_expiry
}
"#;

struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn authority(name: &str) -> Authority {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    Authority {
        cert: p.self_signed(&key).expect("self-signed"),
        key,
    }
}

/// A certificate for `addresses`, valid `days`, from `ca`: (cert PEM, key PEM, expiry).
fn issue(ca: &Authority, addresses: &[&str], days: i64) -> (String, String, String) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.subject_alt_names = addresses
        .iter()
        .map(|a| SanType::IpAddress(a.parse().expect("ip")))
        .collect();
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    // Whole seconds: what the certificate records and the provider prints.
    let now =
        time::OffsetDateTime::from_unix_timestamp(time::OffsetDateTime::now_utc().unix_timestamp())
            .expect("now");
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(days);
    let expiry = p
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &ca.cert, &ca.key).expect("signed");
    (cert.pem(), key.serialize_pem(), expiry)
}

fn put(dir: &Path, ca_pem: &str, cert: &str, key: &str) {
    for (name, text) in [("ca.pem", ca_pem), ("node.pem", cert), ("node.key", key)] {
        std::fs::write(dir.join(name), text).expect("write a PEM file");
    }
}

/// `text` with every run of whitespace one space: Terraform wraps diagnostics.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The second line of a PEM key: bytes of the key itself.
fn key_body(key: &str) -> String {
    key.lines().nth(1).expect("a PEM body line").to_string()
}

fn run(tf: &TfDir, verb: &str, extra: &[&str], secrets: &[&str]) -> common::TfOutput {
    let mut a = vec![verb, "-no-color"];
    a.extend_from_slice(extra);
    let pass = format!("-var=password={PASSWORD}");
    a.push(&pass);
    let out = tf.run(&a);
    assert!(
        !out.all().contains(PASSWORD),
        "the password in {verb}'s output"
    );
    for s in secrets {
        assert!(!out.all().contains(s), "a private key in {verb}'s output");
    }
    out
}

async fn ping(address: &str, ca: &str) -> Result<String, String> {
    clients::ping_within(redis::Client::build_with_tls(
        format!("rediss://:{PASSWORD}@{address}/"),
        clients::ca_certs(ca),
    ))
    .await
}

async fn cluster(addresses: &[String], ca: &str) -> redis::cluster_async::ClusterConnection {
    clients::tls_cluster(addresses, ca, PASSWORD).await
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

fn addresses(tf: &TfDir) -> Vec<String> {
    common::endpoints(tf)
        .iter()
        .map(|e| {
            e.strip_prefix("rediss://")
                .unwrap_or_else(|| panic!("endpoint {e} does not say rediss://"))
                .to_string()
        })
        .collect()
}

#[test]
fn a_supplied_certificate_is_checked_at_plan_served_by_every_node_and_rolled_when_renewed() {
    redisha_cluster::conn::install_crypto_provider();
    let tf = TfDir::dev(MAIN_TF);
    let data_dir: PathBuf = tf.path().join(".redisha/own");
    let _cleanup = Cleanup {
        tf: &tf,
        data_dir: data_dir.clone(),
        destroy_args: vec![
            "destroy".into(),
            "-auto-approve".into(),
            format!("-var=password={PASSWORD}"),
        ],
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let ca = authority("team CA one");
    let ca_pem = ca.cert.pem();

    // A certificate that misses a node's address: refused at plan, naming it.
    let (short, short_key, _) = issue(&ca, &ADDRESSES[..2], 400);
    put(tf.path(), &ca_pem, &short, &short_key);
    let out = run(&tf, "plan", &[], &[&key_body(&short_key)]);
    assert!(
        !out.success(),
        "plan accepted a certificate without 127.240.3.1"
    );
    assert!(
        flat(&out.all()).contains("does not name node address 127.240.3.1")
            && out.all().contains("cert_pem"),
        "{}",
        out.all()
    );
    // Another certificate's key: refused at key_pem, the key not shown.
    let (good, good_key, _) = issue(&ca, &ADDRESSES, 20);
    put(tf.path(), &ca_pem, &good, &short_key);
    let out = run(&tf, "plan", &[], &[&key_body(&short_key)]);
    assert!(!out.success(), "plan accepted a key of another certificate");
    assert!(
        flat(&out.all()).contains("not the key of the first certificate"),
        "{}",
        out.all()
    );
    assert!(
        our_pids(&data_dir).is_empty(),
        "a refused plan started something"
    );

    // A good certificate 20 days from expiry: the plan says so; every node serves it.
    put(tf.path(), &ca_pem, &good, &good_key);
    let secrets = [key_body(&good_key), key_body(&short_key)];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let plan = run(&tf, "plan", &[], &secrets);
    plan.assert_success("plan with a supplied certificate");
    let said = flat(&plan.all());
    assert!(
        (said.contains("The supplied TLS certificate expires in 19 days")
            || said.contains("The supplied TLS certificate expires in 20 days"))
            && said.contains("redisha cannot renew"),
        "{said}"
    );
    run(&tf, "apply", &["-auto-approve"], &secrets).assert_success("create");
    let outputs = tf.output_json();
    assert_eq!(outputs["ca"].as_str(), Some(ca_pem.as_str()));
    let nodes = addresses(&tf);
    assert_eq!(nodes.len(), 6);
    for a in &nodes {
        assert_eq!(
            served_cert(a),
            good.trim(),
            "{a} serves another certificate"
        );
        assert_eq!(rt.block_on(ping(a, &ca_pem)).as_deref(), Ok("PONG"), "{a}");
    }
    let written: Vec<String> = (0..300).map(|i| format!("own:{i}")).collect();
    rt.block_on(async {
        let mut con = cluster(&nodes, &ca_pem).await;
        for k in &written {
            let () = con.set(k, "v").await.expect("SET over TLS");
        }
    });
    let again = run(&tf, "plan", &["-detailed-exitcode"], &secrets);
    assert!(
        again.success(),
        "a plan after create is not empty: {}",
        again.all()
    );

    // Renewed by the team's PKI: apply restarts every node onto it, nothing lost.
    let (renewed, renewed_key, renewed_expiry) = issue(&ca, &ADDRESSES, 400);
    put(tf.path(), &ca_pem, &renewed, &renewed_key);
    let secrets = [key_body(&renewed_key), key_body(&good_key)];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let plan = run(&tf, "plan", &[], &secrets);
    plan.assert_success("plan a renewed certificate");
    assert!(
        flat(&plan.all()).contains("restarts 6 node(s) onto the new certificate"),
        "{}",
        plan.all()
    );
    run(&tf, "apply", &["-auto-approve"], &secrets).assert_success("roll the renewed certificate");
    assert_eq!(
        tf.output_json()["expiry"].as_str(),
        Some(renewed_expiry.as_str())
    );
    for a in &nodes {
        assert_eq!(
            served_cert(a),
            renewed.trim(),
            "{a} still serves the old certificate"
        );
    }
    let lost: Vec<String> = rt.block_on(async {
        let mut con = cluster(&nodes, &ca_pem).await;
        let mut lost = Vec::new();
        for k in &written {
            let v: Option<String> = con.get(k).await.unwrap_or(None);
            if v.is_none() {
                lost.push(k.clone());
            }
        }
        lost
    });
    assert!(
        lost.is_empty(),
        "{} keys lost in the certificate roll",
        lost.len()
    );

    // A new authority in one step: refused, nodes on either side would refuse each other.
    let ca2 = authority("team CA two");
    let (other, other_key, _) = issue(&ca2, &ADDRESSES, 400);
    put(tf.path(), &ca2.cert.pem(), &other, &other_key);
    let secrets = [key_body(&other_key), key_body(&renewed_key)];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let out = run(&tf, "plan", &[], &secrets);
    assert!(!out.success(), "plan accepted a new authority in one step");
    assert!(
        flat(&out.all()).contains("cannot be rolled out node by node"),
        "{}",
        out.all()
    );
    // In steps: both authorities first (the certificate unchanged) is accepted.
    let both = format!("{}{}", ca_pem, ca2.cert.pem());
    put(tf.path(), &both, &renewed, &renewed_key);
    run(&tf, "apply", &["-auto-approve"], &secrets).assert_success("add the second authority");
    put(tf.path(), &both, &other, &other_key);
    run(&tf, "apply", &["-auto-approve"], &secrets)
        .assert_success("the new authority's certificate");
    for a in &nodes {
        assert_eq!(
            served_cert(a),
            other.trim(),
            "{a} after the authority change"
        );
        assert_eq!(
            rt.block_on(ping(a, &ca2.cert.pem())).as_deref(),
            Ok("PONG"),
            "{a}"
        );
    }

    run(&tf, "destroy", &["-auto-approve"], &secrets).assert_success("destroy");
    assert!(our_pids(&data_dir).is_empty());
}
