//! `redisha_sentinel` end to end with the real Terraform CLI, the built provider, real
//! redis-server data nodes and real Redis Sentinel processes on loopback 127.141.Z.H (data
//! ports 7900+, sentinels 8000+): create (the sentinels refuse commands without their
//! password); the primary's zone is killed; Sentinel fails over; the plan shows the drift;
//! apply restarts the zone and puts the planned primary back; the password is rotated, the
//! sentinels' with it, and they keep monitoring; a zone, a replica and two sentinels are added
//! in place; the zone goes again while its replica is the primary (failed over first, its
//! sentinel moved, the others reset); destroy leaves no process.

mod common;

use std::time::{Duration, Instant};

use common::local_cluster::{our_pids, Cleanup};
use common::sentinel::{
    addresses, ask_sentinel, assert_readable, connect, monitoring, primary_by,
    resource_values as values, write_acknowledged,
};
use common::TfDir;
use serde_json::Value as Json;

const OCTET: u8 = 141;
const BASE_PORT: u16 = 7900;
const FIRST: &str = "sentinel-e2e-Secret-1";
const SECOND: &str = "sentinel-e2e-Secret-2";
const KEYS: usize = 200;
const MASTER: &str = "orders";

/// The resource example, with this test's addresses and a quick `down_after_ms`.
fn main_tf() -> String {
    let example = std::fs::read_to_string(
        common::workspace_root().join("examples/resources/redisha_sentinel/resource.tf"),
    )
    .expect("the redisha_sentinel example");
    let tf = example
        .replace(
            "data_dir = \"${path.root}/.redisha/orders\"",
            &format!(
                "data_dir = \"${{path.root}}/.redisha/orders\"\n    loopback_octet = {OCTET}\n    base_port = {BASE_PORT}"
            ),
        )
        .replace("down_after_ms = 5000", "down_after_ms = 1000")
        // The shape as variables, so that steps add and remove zones, replicas and sentinels.
        .replace(
            "for_each = toset([\"zone-a\", \"zone-b\", \"zone-c\"])",
            "for_each = var.zones",
        )
        .replace("for_each = toset([\"1\", \"2\"])", "for_each = toset(zone.value)")
        .replace("replicas       = 2", "replicas       = var.replicas")
        .replace("count         = 3", "count         = var.sentinels");
    // The registry example leaves the provider's source to the module around it.
    let tf = format!(
        "terraform {{\n  required_providers {{\n    redisha = {{ source = \"redisha/redisha\" }}\n  }}\n}}\n\n{SHAPE}\n{tf}"
    );
    for part in [
        "loopback_octet",
        "down_after_ms = 1000",
        "var.zones",
        "zone.value",
        "var.replicas",
        "var.sentinels",
    ] {
        assert!(tf.contains(part), "{part} not in\n{tf}");
    }
    tf
}

/// The example's shape, as variables the shape steps change.
const SHAPE: &str = r#"variable "zones" {
  type = map(list(string))
  default = {
    "zone-a" = ["1", "2"]
    "zone-b" = ["1", "2"]
    "zone-c" = ["1", "2"]
  }
}

variable "replicas" {
  type    = number
  default = 2
}

variable "sentinels" {
  type    = number
  default = 3
}
"#;

/// Four zones (zone-d with one host), three replicas and five sentinels.
const GROWN: [&str; 3] = [
    r#"-var=zones={"zone-a"=["1","2"],"zone-b"=["1","2"],"zone-c"=["1","2"],"zone-d"=["1"]}"#,
    "-var=replicas=3",
    "-var=sentinels=5",
];

/// Back to three zones and two replicas, keeping five sentinels (zone-d's moves).
const SHRUNK: [&str; 2] = ["-var=replicas=2", "-var=sentinels=5"];

fn run(tf: &TfDir, verb: &str, password: &str, extra: &[&str]) -> common::TfOutput {
    let mut args = vec![verb.to_string(), "-no-color".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("-var=password={password}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tf.run(&args);
    assert!(
        !out.all().contains(FIRST) && !out.all().contains(SECOND),
        "a password appeared in terraform {verb}'s output"
    );
    out
}

/// Every sentinel takes `SENTINEL FAILOVER` only from a client with its password.
async fn refuses_without_password(sentinels: &[String], wrong: &[&str]) {
    for s in sentinels {
        let open = ask_sentinel::<()>(s, None, MASTER, "FAILOVER").await;
        assert!(
            open.as_ref()
                .is_err_and(|e| e.to_string().contains("NOAUTH")),
            "{s} takes SENTINEL FAILOVER without a password: {open:?}"
        );
        for w in wrong {
            assert!(
                ask_sentinel::<()>(s, Some(w), MASTER, "FAILOVER")
                    .await
                    .is_err(),
                "{s} takes SENTINEL FAILOVER with a wrong password"
            );
        }
    }
}

#[test]
fn sentinel_deployment_fails_over_shows_drift_is_restored_rotated_and_destroyed() {
    let tf = TfDir::dev(&main_tf());
    let data_dir = tf.path().join(".redisha/orders");
    let _cleanup = Cleanup {
        tf: &tf,
        data_dir: data_dir.clone(),
        destroy_args: vec![
            "destroy".into(),
            "-auto-approve".into(),
            "-no-color".into(),
            format!("-var=password={SECOND}"),
        ],
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");

    // 1. Create.
    run(&tf, "apply", FIRST, &["-auto-approve"]).assert_success("create");
    let v = values(&tf);
    let planned = v["primary"].as_str().expect("primary").to_string();
    let sentinels: Vec<String> = v["sentinel_addresses"]
        .as_array()
        .expect("sentinel_addresses")
        .iter()
        .filter_map(|s| s.as_str().map(String::from))
        .collect();
    assert_eq!(sentinels.len(), 3);
    assert_eq!(v["master_name"], "orders");
    assert!(v["placement_report"]
        .as_str()
        .unwrap_or("")
        .contains("any one zone: yes"));
    let cluster_id = v["cluster_id"].as_str().expect("cluster_id").to_string();
    rt.block_on(monitoring(&sentinels, FIRST, MASTER, &planned, 2));
    rt.block_on(refuses_without_password(&sentinels, &[SECOND]));
    let nodes = v["nodes"].as_array().expect("nodes").clone();
    let primary_zone = nodes
        .iter()
        .find(|n| n["address"] == planned.as_str())
        .and_then(|n| n["zone"].as_str())
        .expect("the primary's zone")
        .to_string();

    // Writes acknowledged by a replica.
    let acked = rt.block_on(write_acknowledged(&planned, FIRST, "order", KEYS));
    assert!(acked.len() > KEYS / 2);

    // 2. The primary's zone dies: every process there, by its pid.
    let zone_dirs: Vec<std::path::PathBuf> = nodes
        .iter()
        .filter(|n| n["zone"] == primary_zone.as_str())
        .map(|n| {
            data_dir
                .join(&cluster_id)
                .join(n["name"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        zone_dirs.len(),
        2,
        "one data node and one sentinel in the zone"
    );
    let mut killed = 0;
    for dir in &zone_dirs {
        let pid: Option<u32> = std::fs::read_to_string(dir.join("redis.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        // Only a pid that runs this directory's config file is ours to kill (the provider ran
        // it with the data_dir as configured, relative to Terraform's directory).
        let tail = dir
            .strip_prefix(&data_dir)
            .expect("under data_dir")
            .join("redis.conf");
        let ours = |pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&*tail.to_string_lossy()))
                .unwrap_or(false)
        };
        if let Some(pid) = pid.filter(ours) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            killed += 1;
        }
    }
    assert_eq!(killed, 2, "the zone's data node and sentinel run");

    // 3. The surviving sentinels fail over.
    let live: Vec<&String> = sentinels
        .iter()
        .filter(|s| {
            !nodes
                .iter()
                .any(|n| n["address"] == s.as_str() && n["zone"] == primary_zone.as_str())
        })
        .collect();
    let start = Instant::now();
    let promoted = loop {
        let named = rt.block_on(primary_by(live[0], FIRST, MASTER));
        if let Some(p) = named.filter(|p| *p != planned) {
            break p;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no failover");
        std::thread::sleep(Duration::from_millis(200));
    };
    rt.block_on(assert_readable(&promoted, FIRST, &acked));

    // 4. The plan shows the drift: another primary, processes down.
    let plan = run(&tf, "plan", FIRST, &["-detailed-exitcode"]);
    assert_eq!(plan.code, Some(2), "plan shows changes:\n{}", plan.all());
    assert!(plan.stdout.contains(&promoted), "{}", plan.stdout);
    assert!(plan.stdout.contains("\"down\""), "{}", plan.stdout);

    // 5. Apply restarts the zone and puts the planned primary back.
    run(&tf, "apply", FIRST, &["-auto-approve"]).assert_success("repair and restore");
    let v = values(&tf);
    assert_eq!(v["primary"], planned.as_str());
    assert!(v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["status"] == "up"));
    rt.block_on(monitoring(&sentinels, FIRST, MASTER, &planned, 2));
    let after = run(&tf, "plan", FIRST, &["-detailed-exitcode"]);
    assert_eq!(after.code, Some(0), "nothing left to do:\n{}", after.all());

    // 6. Password rotation.
    run(&tf, "apply", SECOND, &["-auto-approve"]).assert_success("rotate the password");
    rt.block_on(async {
        let mut con = connect(&planned, SECOND)
            .await
            .expect("the new password works");
        let n: usize = redis::cmd("DBSIZE")
            .query_async(&mut con)
            .await
            .expect("DBSIZE");
        assert!(n >= acked.len());
        let old = match connect(&planned, FIRST).await {
            Ok(mut c) => redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok(),
            Err(_) => false,
        };
        assert!(!old, "the old password still works");
    });
    // The sentinels moved to the new password with it, and still monitor with a quorum.
    rt.block_on(monitoring(&sentinels, SECOND, MASTER, &planned, 2));
    rt.block_on(refuses_without_password(&sentinels, &[FIRST]));

    // 7. The shape grows in place: zone-d with a replica, two more sentinels.
    let plan = run(&tf, "plan", SECOND, &GROWN);
    plan.assert_success("plan the grown shape");
    assert!(
        plan.all().contains("changes shape in place") && plan.all().contains("zone-d"),
        "{}",
        plan.all()
    );
    assert!(!plan.stdout.contains("must be replaced"), "{}", plan.stdout);
    run(
        &tf,
        "apply",
        SECOND,
        &[&["-auto-approve"][..], &GROWN[..]].concat(),
    )
    .assert_success("grow the shape");
    let v = values(&tf);
    assert_eq!(v["primary"], planned.as_str(), "the primary stays");
    let data = addresses(&v, "data");
    let sentinels = addresses(&v, "sentinel");
    assert_eq!((data.len(), sentinels.len()), (4, 5), "{v}");
    rt.block_on(monitoring(&sentinels, SECOND, MASTER, &planned, 3));
    let grown_nodes = v["nodes"].as_array().expect("nodes").clone();
    let zone_d = grown_nodes
        .iter()
        .find(|n| n["kind"] == "data" && n["zone"] == "zone-d")
        .and_then(|n| n["address"].as_str())
        .expect("a data node in zone-d")
        .to_string();
    let original: Vec<&Json> = nodes.iter().collect();
    for n in &original {
        assert!(
            grown_nodes
                .iter()
                .any(|g| g["name"] == n["name"] && g["address"] == n["address"]),
            "{} was not kept in place",
            n["name"]
        );
    }

    // zone-d's replica becomes the primary (as after a failover), then zone-d goes: redisha
    // must have Sentinel fail over away from it before removing it.
    rt.block_on(async {
        for d in data.iter().filter(|d| **d != zone_d && **d != planned) {
            let mut con = connect(d, SECOND).await.expect("connect to a replica");
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("replica-priority")
                .arg(0)
                .query_async(&mut con)
                .await
                .expect("CONFIG SET replica-priority");
        }
        // The old primary is demoted by the failover itself, before it could be picked.
        let _: () = ask_sentinel(&sentinels[0], Some(SECOND), MASTER, "FAILOVER")
            .await
            .expect("SENTINEL FAILOVER");
    });
    let start = Instant::now();
    for s in &sentinels {
        while rt.block_on(primary_by(s, SECOND, MASTER)).as_deref() != Some(zone_d.as_str()) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no failover to zone-d"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let shrink = run(&tf, "plan", SECOND, &SHRUNK);
    shrink.assert_success("plan the shrunk shape");
    assert!(
        shrink.all().contains("remove data node") && shrink.all().contains("SENTINEL RESET"),
        "{}",
        shrink.all()
    );
    run(
        &tf,
        "apply",
        SECOND,
        &[&["-auto-approve"][..], &SHRUNK[..]].concat(),
    )
    .assert_success("shrink the shape");
    let v = values(&tf);
    assert_eq!(
        v["primary"],
        planned.as_str(),
        "the planned primary is back"
    );
    let data = addresses(&v, "data");
    let sentinels = addresses(&v, "sentinel");
    assert_eq!((data.len(), sentinels.len()), (3, 5), "{v}");
    assert!(!data.contains(&zone_d), "zone-d's node is gone");
    assert!(
        v["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .all(|n| n["zone"] != "zone-d" && n["status"] == "up"),
        "{v}"
    );
    rt.block_on(monitoring(&sentinels, SECOND, MASTER, &planned, 2));
    rt.block_on(assert_readable(&planned, SECOND, &acked));
    let after = run(
        &tf,
        "plan",
        SECOND,
        &[&["-detailed-exitcode"][..], &SHRUNK[..]].concat(),
    );
    assert_eq!(after.code, Some(0), "nothing left to do:\n{}", after.all());

    // 8. Destroy.
    run(
        &tf,
        "destroy",
        SECOND,
        &[&["-auto-approve"][..], &SHRUNK[..]].concat(),
    )
    .assert_success("destroy");
    assert!(
        our_pids(&data_dir).is_empty(),
        "processes left after destroy"
    );
}
