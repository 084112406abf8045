//! The operator user's password rotating on the local driver, with a node started in the
//! middle of it. Until every node accepts the new password, a node that starts (a repair, a
//! resumed apply) must log in to its master with the old one, which its master still accepts:
//! with the new one it would not replicate until the rotation went on. Once every node accepts
//! the new password, the config files move to it, and the end of the rotation leaves only the
//! new one.

mod common;

use std::time::Duration;

use common::*;
use redisha_cluster::{ClusterState, Driver, NodeConfig, Operator, Password};

const CLUSTER_ID: &str = "0066000000000066";
const CLUSTER_PASSWORD: &str = "cluster-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_mid_rotation_replicates_with_the_password_its_master_accepts() {
    let fx = Fixture::new(66, 7600);
    tokio::time::timeout(Duration::from_secs(300), run(&fx))
        .await
        .expect("test timed out");
}

fn config() -> NodeConfig {
    NodeConfig {
        password: Some(Password::new(CLUSTER_PASSWORD)),
        ..NodeConfig::default()
    }
}

/// The `masterauth` line of a node's config file.
fn masterauth(state: &ClusterState, name: &str) -> String {
    let node = state.node(name).expect("node in state");
    let path = node.handle.config_file.as_ref().expect("config file");
    let text = std::fs::read_to_string(path).expect("read config");
    text.lines()
        .find(|l| l.starts_with("masterauth "))
        .unwrap_or("")
        .trim_start_matches("masterauth ")
        .trim_matches('"')
        .to_string()
}

async fn connect(
    address: &str,
    user: Option<&str>,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp(
            address
                .rsplit_once(':')
                .map_or(address, |(h, _)| h)
                .to_string(),
            address
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(6379),
        ),
        redis: redis::RedisConnectionInfo {
            username: user.map(str::to_string),
            password: Some(password.to_string()),
            ..Default::default()
        },
    };
    redis::Client::open(info)?
        .get_multiplexed_async_connection()
        .await
}

/// `master_link_status` of a replica, as its `INFO replication` says.
async fn link_status(state: &ClusterState, name: &str) -> String {
    let address = state.node(name).expect("node in state").address();
    let Ok(mut con) = connect(&address, None, CLUSTER_PASSWORD).await else {
        return "unreachable".into();
    };
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut con)
        .await
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("master_link_status:"))
        .unwrap_or("none")
        .trim()
        .to_string()
}

/// Waits (bounded) for every replica's link to its master to be up; the names still down.
async fn replicas_linked(state: &ClusterState) -> Vec<String> {
    let replicas: Vec<String> = (0..3).map(|s| replica_name(s, 0)).collect();
    let mut down = Vec::new();
    for _ in 0..100 {
        down.clear();
        for r in &replicas {
            if link_status(state, r).await != "up" {
                down.push(r.clone());
            }
        }
        if down.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    down
}

async fn run(fx: &Fixture) {
    let mut driver = fx
        .driver
        .clone()
        .with_cluster(CLUSTER_ID, "rotation")
        .expect("cluster id");
    let old = driver
        .load_operator_password(true)
        .expect("operator password")
        .expect("made at create");
    driver.record_operator_generation(1).expect("generation");
    let mut state = ClusterState::new("local");
    state.cluster_id = CLUSTER_ID.into();
    Operator::with_options(&driver, config(), options())
        .create(&fx.request, &placement(3, 1), &mut state)
        .await
        .expect("create");
    let con = cluster_client(&state, Some(&Password::new(CLUSTER_PASSWORD))).await;
    write_keys(&con, 1_000).await;

    // The rotation starts: the driver keeps a new password beside the old one. No node
    // accepts the new one yet.
    driver.prepare_operator_rotation(Some(2)).expect("rotation");
    let new = driver.operator_password().expect("new password");
    assert_ne!(new, old, "a rotation keeps a new password");
    assert_eq!(driver.operator_password_retiring(), Some(old.clone()));

    // Shard 0's replica dies and is started again before the rotation went any further.
    let replica = replica_name(0, 0);
    let pid = state
        .node(&replica)
        .and_then(|n| n.handle.pid)
        .expect("pid");
    kill9(pid);
    for _ in 0..100 {
        if !pid_alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Operator::with_options(&driver, config(), options())
        .repair(&fx.request, &mut state)
        .await
        .expect("repair mid-rotation");
    assert_eq!(
        masterauth(&state, &replica),
        old.expose(),
        "a node started before every node accepts the new password logs in with the old one"
    );
    let down = replicas_linked(&state).await;
    assert!(
        down.is_empty(),
        "replicas not linked to their masters mid-rotation: {down:?}"
    );

    // The rotation goes on to its end: every node accepts the new password, replication and
    // the config files move to it, and the old one goes.
    let mut op = Operator::with_options(&driver, config(), options());
    op.converge_acl(&mut state, false)
        .await
        .expect("rotation finished");
    assert_eq!(driver.operator_password(), Some(new.clone()));
    assert_eq!(driver.operator_password_retiring(), None);
    for n in &state.nodes {
        assert_eq!(
            masterauth(&state, &n.name),
            new.expose(),
            "{}: config file after the rotation",
            n.name
        );
        let address = n.handle.address();
        assert!(
            connect(&address, Some("redisha-operator"), new.expose())
                .await
                .is_ok(),
            "{}: the new operator password is refused",
            n.name
        );
        assert!(
            connect(&address, Some("redisha-operator"), old.expose())
                .await
                .is_err(),
            "{}: the old operator password is still accepted",
            n.name
        );
    }
    let down = replicas_linked(&state).await;
    assert!(
        down.is_empty(),
        "replicas not linked after the rotation: {down:?}"
    );
    let missing = missing_keys(&state, Some(&Password::new(CLUSTER_PASSWORD)), 1_000).await;
    assert!(
        missing.is_empty(),
        "keys written before the rotation are gone: {missing:?}"
    );
}
