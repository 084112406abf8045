//! Cluster identity with the local driver and real redis-server processes: two clusters share
//! one data_dir and even their node names, and neither driver finds, stops or wipes the
//! other's nodes; a node started by a provider that then died is found by its record.

use redisha_cluster::identity::{ClusterRecord, ClusterStatus};
use redisha_cluster::{
    ClusterNode, ClusterState, Driver, DriverError, HostHandle, HostPlan, LocalConfig, LocalDriver,
    NodeConfig, NodePlan, Operator, ProcessState,
};
use redisha_planner::Role;

const ALPHA: &str = "a1a1a1a1a1a1a1a1";
const BETA: &str = "b2b2b2b2b2b2b2b2";

fn driver(data_dir: &std::path::Path, octet: u8, id: &str, name: &str) -> LocalDriver {
    let mut config = LocalConfig::new(data_dir);
    config.loopback_octet = octet;
    config.base_port = 9100;
    LocalDriver::new(config)
        .with_cluster(id, name)
        .expect("valid id")
}

fn host(octet: u8) -> HostHandle {
    HostHandle {
        name: "h1".into(),
        zone: "z1".into(),
        address: format!("127.{octet}.1.1"),
        instance_id: None,
        extra: Default::default(),
    }
}

fn node() -> NodePlan {
    NodePlan {
        name: "n1".into(),
        index_on_host: 0,
        shard: 0,
        role: Role::Master,
    }
}

/// Kills what the drivers started, whatever the test did.
struct Guard(Vec<LocalDriver>);
impl Drop for Guard {
    fn drop(&mut self) {
        for d in &self.0 {
            d.kill_all_blocking();
        }
    }
}

#[tokio::test]
async fn clusters_sharing_a_data_dir_never_touch_each_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("shared");
    let alpha = driver(&data_dir, 41, ALPHA, "alpha");
    let beta = driver(&data_dir, 42, BETA, "beta");
    let _guard = Guard(vec![alpha.clone(), beta.clone()]);
    let config = NodeConfig::default();

    alpha
        .record_cluster(&ClusterRecord::new(ALPHA, "alpha", ClusterStatus::Ready))
        .await
        .expect("record alpha");
    beta.record_cluster(&ClusterRecord::new(BETA, "beta", ClusterStatus::Ready))
        .await
        .expect("record beta");
    // The same node name in both clusters.
    let a = alpha
        .start_node(&host(41), &node(), &config)
        .await
        .expect("start alpha's n1");
    let b = beta
        .start_node(&host(42), &node(), &config)
        .await
        .expect("start beta's n1");
    assert_ne!(a.data_dir, b.data_dir, "each cluster has its own directory");
    assert!(a
        .data_dir
        .as_ref()
        .unwrap()
        .starts_with(data_dir.join(ALPHA)));

    // Each driver finds its own node only, with its record.
    let found = alpha
        .discover(ALPHA)
        .await
        .expect("discover")
        .expect("local discovers");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0.address(), a.address());
    assert_eq!(found[0].0.pid, a.pid);
    assert_eq!(found[0].1.cluster_name, "alpha");
    assert_eq!(found[0].1.role, Role::Master);
    let mut names: Vec<String> = alpha
        .find_clusters()
        .await
        .expect("find")
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);

    // A cluster planned on alpha's addresses is refused at plan, naming who is there.
    let clash = driver(&data_dir, 41, BETA, "beta");
    let plan = HostPlan {
        name: "h1".into(),
        zone: "z1".into(),
        zone_index: 0,
        host_index: 0,
        nodes: vec![node()],
    };
    let err = clash
        .preflight(&[plan], &[], &config)
        .await
        .expect_err("alpha's address is taken");
    assert!(
        matches!(&err, DriverError::PortInUse { owner: Some(o), .. } if o.contains("\"alpha\"")),
        "{err}"
    );

    // Beta's driver refuses alpha's node, which keeps running.
    assert!(matches!(
        beta.stop_node(&a).await,
        Err(DriverError::NotOurs { .. })
    ));
    assert!(matches!(
        beta.wipe_node(&a).await,
        Err(DriverError::NotOurs { .. })
    ));
    assert!(matches!(
        alpha.inspect_node(&a).await.expect("inspect"),
        ProcessState::Running { .. }
    ));

    // Destroying beta (through the operator) leaves alpha's node and directory alone.
    let mut state = ClusterState::new("local");
    state.cluster_id = BETA.into();
    state.name = "beta".into();
    state.hosts.push(host(42));
    state.nodes.push(ClusterNode {
        name: "n1".into(),
        shard: 0,
        role: Role::Master,
        zone: "z1".into(),
        host: "h1".into(),
        slots: Vec::new(),
        node_id: String::new(),
        handle: b.clone(),
    });
    Operator::new(&beta, config.clone())
        .destroy(&mut state)
        .await
        .expect("destroy beta");
    assert_eq!(beta.inspect_node(&b).await.unwrap(), ProcessState::Stopped);
    assert!(!data_dir.join(BETA).exists(), "beta's directory is gone");
    assert!(matches!(
        alpha.inspect_node(&a).await.expect("inspect"),
        ProcessState::Running { .. }
    ));
    assert!(a.data_dir.as_ref().unwrap().join("redis.conf").exists());
    assert_eq!(
        alpha.discover(ALPHA).await.unwrap().unwrap().len(),
        1,
        "alpha's node is still found"
    );
}

#[tokio::test]
async fn recover_rebuilds_a_lost_state_from_the_node_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("nodes");
    let d = driver(&data_dir, 43, ALPHA, "alpha");
    let _guard = Guard(vec![d.clone()]);
    let started = d
        .start_node(&host(43), &node(), &NodeConfig::default())
        .await
        .expect("start");

    // A provider that started the node and died before saving anything: only the id is known.
    let mut state = ClusterState::new("local");
    state.cluster_id = ALPHA.into();
    state.name = "alpha".into();
    let op = Operator::new(&d, NodeConfig::default());
    let notes = op.recover(&mut state).await.expect("recover");
    assert!(!notes.is_empty(), "recovery says what it found");
    assert_eq!(state.nodes.len(), 1);
    let n = &state.nodes[0];
    assert_eq!((n.name.as_str(), n.shard, n.role), ("n1", 0, Role::Master));
    assert_eq!(n.handle.address(), started.address());
    assert_eq!(n.handle.pid, started.pid);
    assert_eq!(n.node_id.len(), 40, "the node id is read from the node");
    assert_eq!(state.hosts.len(), 1);
    assert_eq!(state.hosts[0].address, "127.43.1.1");

    // Another cluster's id finds nothing.
    let mut other = ClusterState::new("local");
    other.cluster_id = BETA.into();
    let other_driver = driver(&data_dir, 43, BETA, "beta");
    Operator::new(&other_driver, NodeConfig::default())
        .recover(&mut other)
        .await
        .expect("recover");
    assert!(other.nodes.is_empty());
}

/// A create holds its record while it runs: the lease is renewed (so an apply on another
/// machine does not take over a create that is still working), and when another owner shows up
/// on the record (this one was frozen longer than its lease) the create is cancelled at its
/// next checkpoint instead of working beside the new owner. Time is tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn a_running_create_renews_its_lease_and_yields_to_a_new_owner() {
    use redisha_cluster::identity::{unix_now, LEASE_RENEWAL};
    use redisha_cluster::lease::hold_create;
    use redisha_cluster::Cancel;

    let dir = tempfile::tempdir().expect("temp dir");
    let d = driver(dir.path(), 41, ALPHA, "alpha");
    let mut record = ClusterRecord::new(ALPHA, "alpha", ClusterStatus::Creating);
    // As if written long ago: the lease has run out.
    record.lease_until = Some(0);
    d.record_cluster(&record).await.expect("record");
    let read = |d: LocalDriver| async move {
        d.find_clusters()
            .await
            .expect("find")
            .into_iter()
            .find(|r| r.cluster_id == ALPHA)
            .expect("the record")
    };

    let cancel = Cancel::default();
    tokio::select! {
        never = hold_create(&d, &record, &cancel) => match never {},
        () = tokio::time::sleep(LEASE_RENEWAL + LEASE_RENEWAL / 2) => {}
    }
    let renewed = read(d.clone()).await;
    assert!(renewed.is_mine());
    assert!(
        renewed.lease_until.is_some_and(|t| t > unix_now()),
        "the lease was renewed: {renewed:?}"
    );
    assert!(!cancel.is_cancelled());

    // Another machine took the create over.
    let mut theirs = renewed.clone();
    theirs.owner_machine = Some("another-machine".into());
    theirs.owner_pid = Some(4242);
    d.record_cluster(&theirs).await.expect("record");
    tokio::select! {
        never = hold_create(&d, &record, &cancel) => match never {},
        () = tokio::time::sleep(LEASE_RENEWAL * 3) => {}
    }
    assert!(
        cancel.is_cancelled(),
        "the create stops at its next checkpoint"
    );
    assert_eq!(
        read(d).await,
        theirs,
        "the new owner's record is left as it is"
    );
}
