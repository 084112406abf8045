//! Backups through Terraform: a cluster with `persistence = "aof"` and a `redisha_backup`
//! (retain 2), the health data source reporting both, destroy taking `final_backup`, a new
//! cluster of another shard count made with `restore_from` holding every key with its TTL, and
//! a damaged backup refused at plan with the file named and nothing started.

mod common;

use std::path::Path;

use common::local_cluster::{our_pids, Cleanup};
use common::TfDir;

const PASSWORD: &str = "backup-E2e-secret";

fn cluster(name: &str, shards: u32, octet: u32, extra: &str) -> String {
    format!(
        r#"
terraform {{
  required_providers {{
    redisha = {{
      source = "redisha/redisha"
    }}
  }}
}}

resource "redisha_cluster" "{name}" {{
  name           = "{name}"
  shards         = {shards}
  replicas       = 1
  node_memory_mb = 64
  password       = "{PASSWORD}"
{extra}
  dynamic "zone" {{
    for_each = toset(["a", "b", "c"])
    content {{
      name = zone.key
      host {{
        name      = "${{zone.key}}-1"
        memory_mb = 4096
        max_nodes = 4
      }}
    }}
  }}
  local {{
    data_dir       = "${{path.root}}/data"
    loopback_octet = {octet}
    base_port      = 9780
  }}
}}
"#
    )
}

fn source_tf() -> String {
    cluster(
        "src",
        3,
        124,
        r#"  persistence    = "aof"
  final_backup   = "${path.root}/backups""#,
    ) + &format!(
        r#"
resource "redisha_backup" "now" {{
  cluster_id  = redisha_cluster.src.cluster_id
  endpoints   = redisha_cluster.src.endpoints
  password    = "{PASSWORD}"
  destination = "${{path.root}}/backups"
  retain      = 2
}}

data "redisha_cluster_health" "src" {{
  endpoints          = redisha_cluster.src.endpoints
  password           = "{PASSWORD}"
  cluster_id         = redisha_cluster.src.cluster_id
  backup_destination = "${{path.root}}/backups"
  depends_on         = [redisha_backup.now]
}}

output "endpoints" {{
  value = redisha_cluster.src.endpoints
}}
output "cluster_id" {{
  value = redisha_cluster.src.cluster_id
}}
output "backup_id" {{
  value = redisha_backup.now.backup_id
}}
output "keys" {{
  value = redisha_backup.now.keys
}}
output "persistent" {{
  value = data.redisha_cluster_health.src.persistence_on_every_node
}}
output "last_backup_id" {{
  value = data.redisha_cluster_health.src.last_backup_id
}}
"#
    )
}

fn restored_tf(from: &Path) -> String {
    cluster(
        "copy",
        4,
        125,
        &format!("  restore_from   = \"{}\"", from.display()),
    ) + r#"
output "endpoints" {
  value = redisha_cluster.copy.endpoints
}
"#
}

fn client(endpoints: &[String]) -> redis::cluster::ClusterConnection {
    let seeds: Vec<String> = endpoints
        .iter()
        .map(|e| format!("redis://:{PASSWORD}@{e}/"))
        .collect();
    redis::cluster::ClusterClient::new(seeds)
        .expect("cluster client")
        .get_connection()
        .expect("cluster connection")
}

fn tf_run(tf: &TfDir, args: &[&str]) -> common::TfOutput {
    let mut all = args.to_vec();
    all.push("-no-color");
    tf.run(&all)
}

fn backups_of(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn backup_destroy_with_final_backup_and_restore_into_other_shards() {
    let tf = TfDir::dev(&source_tf());
    let data_dir = tf.path().join("data");
    let _cleanup = Cleanup {
        tf: &tf,
        data_dir: data_dir.clone(),
        destroy_args: vec!["destroy".into(), "-auto-approve".into(), "-no-color".into()],
    };
    // The cluster first, then its keys, then the backup of them.
    tf_run(
        &tf,
        &["apply", "-auto-approve", "-target=redisha_cluster.src"],
    )
    .assert_success("terraform apply (cluster)");
    let endpoints: Vec<String> =
        serde_json::from_value(tf.output_json()["endpoints"].clone()).expect("endpoints");
    let mut con = client(&endpoints);
    for i in 0..3000 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .arg("PX")
            .arg(3_600_000 + i)
            .exec(&mut con)
            .expect("SET");
    }
    tf_run(&tf, &["apply", "-auto-approve"]).assert_success("terraform apply (backup)");
    let out = tf.output_json();
    let cluster_id = out["cluster_id"].as_str().expect("cluster_id").to_string();
    assert_eq!(out["keys"], 3000);
    assert_eq!(out["persistent"], true);
    assert_eq!(out["last_backup_id"], out["backup_id"]);
    let backups = tf.path().join("backups").join(&cluster_id);
    let state = std::fs::read_to_string(tf.path().join("terraform.tfstate")).unwrap_or_default();
    for file in backups_of(&backups) {
        let manifest = std::fs::read_to_string(backups.join(file).join("manifest.json")).unwrap();
        assert!(
            !manifest.contains(PASSWORD),
            "the password is in a manifest"
        );
    }
    assert!(state.contains("redisha_backup"));

    // Destroy takes the final backup first.
    tf_run(&tf, &["destroy", "-auto-approve"]).assert_success("terraform destroy");
    assert!(
        our_pids(&data_dir).is_empty(),
        "processes left after destroy"
    );
    let ids = backups_of(&backups);
    assert_eq!(
        ids.len(),
        2,
        "the resource's backup and the final one: {ids:?}"
    );
    let final_backup = backups.join(ids.last().expect("final backup"));

    // A new cluster of 4 shards from the final backup: every key, with its TTL.
    std::fs::write(tf.path().join("main.tf"), restored_tf(&final_backup)).unwrap();
    tf_run(&tf, &["apply", "-auto-approve"]).assert_success("terraform apply (restore)");
    let endpoints: Vec<String> =
        serde_json::from_value(tf.output_json()["endpoints"].clone()).expect("endpoints");
    assert_eq!(endpoints.len(), 8);
    let mut con = client(&endpoints);
    for i in (0..3000).step_by(37) {
        let v: Option<i64> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut con)
            .expect("GET");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("k{i}"))
            .query(&mut con)
            .expect("PTTL");
        assert_eq!(v, Some(i), "k{i}");
        assert!(ttl > 3_000_000, "k{i} kept its TTL: {ttl} ms");
    }
    tf_run(&tf, &["destroy", "-auto-approve"]).assert_success("terraform destroy (restored)");

    // A flipped byte in one snapshot: refused at plan, naming the file; nothing starts.
    let shard = final_backup.join("shard-01.rdb");
    let mut bytes = std::fs::read(&shard).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&shard, bytes).unwrap();
    let out = tf_run(&tf, &["apply", "-auto-approve"]);
    assert!(!out.success(), "a corrupt backup was restored");
    let text = out.all();
    assert!(
        text.contains("shard-01.rdb") && text.contains("SHA-256") && text.contains("restore_from"),
        "{text}"
    );
    assert!(
        our_pids(&data_dir).is_empty(),
        "a node runs after the refused restore"
    );
}
