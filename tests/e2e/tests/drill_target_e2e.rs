//! `redisha-drill` reads its target from a real Terraform state: the real Terraform CLI applies
//! a `redisha_cluster` (local driver) with a declared partition, a relative data_dir and the
//! persistence arguments, and `redisha_drill::Target` must extract what that state holds and
//! what the nodes run with, then find every node of the state again (`Target::locate`).

mod common;

use common::local_cluster::Cleanup;
use common::TfDir;
use redisha_cluster::Password;
use redisha_drill::Target;
use redisha_planner::Spread;

/// Octets 127.210-219 are the drills'; this test takes 218 and ports 9700+.
const OCTET: u8 = 218;
const BASE_PORT: u16 = 9700;
const PASSWORD: &str = "drill-Target-2026";

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

resource "redisha_cluster" "orders" {
  name                  = "orders"
  shards                = 3
  replicas              = 1
  node_memory_mb        = 128
  spread                = "zone"
  password              = var.password
  persistence           = "aof"
  min_replicas_to_write = 1
  redis_config = {
    "cluster-node-timeout" = "3000"
  }

  dynamic "zone" {
    for_each = ["east-1", "east-2", "west-1"]
    content {
      name = zone.value
      host {
        name      = "${zone.value}-a"
        memory_mb = 1024
        max_nodes = 2
      }
      host {
        name      = "${zone.value}-b"
        memory_mb = 512
        max_nodes = 1
      }
    }
  }

  partition {
    name = "coast"
    side = ["west-1"]
  }

  local {
    data_dir       = "nodes"
    base_port      = BASE_PORT
    loopback_octet = OCTET
  }
}
"#;

fn args(verb: &str) -> Vec<String> {
    vec![
        verb.to_string(),
        "-auto-approve".into(),
        "-no-color".into(),
        format!("-var=password={PASSWORD}"),
    ]
}

async fn config_get(address: &str, key: &str) -> String {
    let client = redis::Client::open(format!("redis://:{PASSWORD}@{address}/")).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to a node");
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(key)
        .query_async(&mut con)
        .await
        .expect("CONFIG GET");
    reply.get(1).cloned().unwrap_or_default()
}

#[test]
fn the_drill_reads_its_target_from_a_real_terraform_state() {
    let main_tf = MAIN_TF
        .replace("BASE_PORT", &BASE_PORT.to_string())
        .replace("OCTET", &OCTET.to_string());
    let tf = TfDir::dev(&main_tf);
    let data_dir = tf.path().join("nodes");
    let _cleanup = Cleanup {
        tf: &tf,
        data_dir: data_dir.clone(),
        destroy_args: args("destroy"),
    };
    let apply: Vec<String> = args("apply");
    let apply: Vec<&str> = apply.iter().map(String::as_str).collect();
    tf.run(&apply).assert_success("terraform apply");

    // The working directory, as `redisha-drill --target DIR` takes it.
    let target = Target::read(tf.path(), None, Some(Password::new(PASSWORD))).expect("target");
    assert_eq!(target.address, "redisha_cluster.orders");
    assert_eq!(target.name, "orders");
    assert_eq!(target.cluster_id.len(), 16, "{:?}", target.cluster_id);
    assert_eq!(target.state_file, tf.path().join("terraform.tfstate"));
    let r = &target.request;
    assert_eq!((r.cluster.shards, r.cluster.replicas), (3, 1));
    assert_eq!(r.cluster.node_memory_mb, 128);
    assert_eq!(r.cluster.spread, Spread::Zone);
    let zones: Vec<&str> = r.zones.iter().map(|z| z.name.as_str()).collect();
    assert_eq!(zones, ["east-1", "east-2", "west-1"]);
    let hosts: Vec<(&str, u64, u32)> = r.zones[2]
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), h.memory_mb, h.max_nodes))
        .collect();
    assert_eq!(hosts, [("west-1-a", 1024, 2), ("west-1-b", 512, 1)]);
    assert_eq!(r.partitions.len(), 1);
    assert_eq!(r.partitions[0].name, "coast");
    assert_eq!(r.partitions[0].side, ["west-1"]);
    // A relative data_dir is relative to the working directory, where Terraform ran.
    assert_eq!(target.local.data_dir, data_dir);
    assert_eq!(target.local.base_port, BASE_PORT);
    assert_eq!(target.local.loopback_octet, OCTET);
    assert_eq!(target.local.exporter, None);
    assert_eq!(target.nodes.len(), 6);

    // The node settings the nodes really run with: redis_config and the persistence
    // arguments (which the provider turns into redis.conf lines).
    let config = &target.node_config.redis_config;
    let expected = [
        ("cluster-node-timeout", "3000"),
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("min-replicas-to-write", "1"),
        ("min-replicas-max-lag", "10"),
    ];
    for (k, v) in expected {
        assert_eq!(
            config.get(k).map(String::as_str),
            Some(v),
            "{k} in {config:?}"
        );
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (_driver, state) = target
            .locate(redisha_cluster::Options::default())
            .await
            .expect("locate the nodes of the state");
        assert_eq!(state.nodes.len(), 6);
        let mut names: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
        names.sort();
        let mut in_state = target.nodes.clone();
        in_state.sort();
        assert_eq!(names, in_state);
        // What the drill would restart a node with is what the provider started it with.
        let node = state.nodes[0].target().address();
        for (k, v) in expected {
            assert_eq!(config_get(&node, k).await, v, "{k} on {node}");
        }
    });

    // A state file named directly, and a resource that is not there.
    let by_file = Target::read(
        &tf.path().join("terraform.tfstate"),
        Some("orders"),
        Some(Password::new(PASSWORD)),
    )
    .expect("target by state file");
    assert_eq!(by_file.cluster_id, target.cluster_id);
    let missing = Target::read(tf.path(), Some("payments"), Some(Password::new(PASSWORD)))
        .expect_err("no such resource");
    assert!(
        missing.to_string().contains("no redisha_cluster.payments"),
        "{missing}"
    );
    // The password is required and never read from the state.
    let no_password = Target::read(tf.path(), None, None).expect_err("password required");
    assert!(
        no_password.to_string().contains("REDISHA_PASSWORD"),
        "{no_password}"
    );
}
