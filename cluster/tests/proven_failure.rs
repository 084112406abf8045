//! Repair acts only on failures it can prove. A healthy master that redisha cannot
//! authenticate to is left alone (no failover, no restart), and a master whose whole shard
//! is gone is not restarted into data loss unless the user opts in.

mod common;

use common::{kill9, master_name, options, placement, replica_name, Fixture};
use redisha_cluster::{
    ClusterError, ClusterNode, ClusterState, Driver, NodeConfig, Operator, Options, Password,
    ProcessState,
};
use redisha_planner::Role;

fn config() -> NodeConfig {
    NodeConfig {
        password: Some(Password::new("proven-Secret-1")),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_never_harms_a_node_it_cannot_prove_failed() {
    let fx = Fixture::new(44, 9200);
    let op = Operator::with_options(&fx.driver, config(), options());
    let mut state = ClusterState::default();
    op.create(&fx.request, &placement(3, 1), &mut state)
        .await
        .expect("create");

    // A master whose password differs from the configured one (a rotation half done by
    // hand): it keeps serving the cluster, but redisha cannot log in.
    let master = state.node(&master_name(0)).expect("s0 master").clone();
    let url = format!("redis://:proven-Secret-1@{}/", master.address());
    let client = redis::Client::open(url).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("someone-elses")
        .query_async(&mut con)
        .await
        .expect("CONFIG SET requirepass");
    let epoch_before = config_epoch(&master.address(), "someone-elses").await;

    let fresh = Operator::with_options(&fx.driver, config(), options());
    let err = fresh
        .repair(&fx.request, &mut state)
        .await
        .expect_err("repair must refuse to act on an unverified node");
    match &err {
        ClusterError::Unverified(nodes) => {
            assert_eq!(nodes.len(), 1, "{err}");
            assert_eq!(nodes[0].node, master.name);
            assert!(nodes[0].cause.contains("authentication"), "{err}");
        }
        other => panic!("expected Unverified, got {other}"),
    }
    // Untouched: same process, still the master, same epoch; its replica still follows it.
    assert_eq!(
        running_pid(&fx, &master).await,
        master.handle.pid,
        "the master was not restarted"
    );
    let (role, epoch) = epoch_and_role(&master.address(), "someone-elses").await;
    assert_eq!(role, "master");
    assert_eq!(epoch, epoch_before, "no failover happened");
    let replica = state.node(&replica_name(0, 0)).expect("replica").clone();
    let seen = fresh.observe(&state).await;
    assert_eq!(
        seen.node(&replica.name).and_then(|n| n.view.role),
        Some(Role::Replica)
    );

    // With the password set back, repair has nothing to do.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("proven-Secret-1")
        .query_async(&mut con)
        .await
        .expect("restore requirepass");
    let report = fresh
        .repair(&fx.request, &mut state)
        .await
        .expect("repair with the password back");
    assert!(report.actions.is_empty(), "{:?}", report.actions);

    // A shard with no copy left: its master and replica both die. Restarting the master
    // would bring back its last snapshot at best: refused without allow_data_loss.
    let shard1: Vec<_> = state
        .nodes
        .iter()
        .filter(|n| n.shard == 1)
        .cloned()
        .collect();
    for n in &shard1 {
        kill9(n.handle.pid.expect("pid"));
    }
    let err = fresh
        .repair(&fx.request, &mut state)
        .await
        .expect_err("restarting a shard with no copy loses data");
    assert!(
        matches!(err, ClusterError::WouldLoseData { .. }),
        "expected WouldLoseData, got {err}"
    );
    assert!(err.to_string().contains("allow_data_loss"), "{err}");
    for n in &shard1 {
        assert_eq!(running_pid(&fx, n).await, None, "{} was restarted", n.name);
    }
    // The user opts in: the shard comes back.
    let allowing = Operator::with_options(
        &fx.driver,
        config(),
        Options {
            allow_data_loss: true,
            ..options()
        },
    );
    allowing
        .repair(&fx.request, &mut state)
        .await
        .expect("repair with allow_data_loss");
    let seen = allowing.observe(&state).await;
    assert!(seen.drift().is_empty(), "{:?}", seen.drift());
}

async fn epoch_and_role(address: &str, password: &str) -> (String, u64) {
    let client = redis::Client::open(format!("redis://:{password}@{address}/")).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut con)
        .await
        .expect("CLUSTER NODES");
    let me = nodes
        .lines()
        .find(|l| l.contains("myself"))
        .expect("myself line");
    let fields: Vec<&str> = me.split_whitespace().collect();
    let role = if fields[2].contains("master") {
        "master"
    } else {
        "replica"
    };
    (role.to_string(), fields[6].parse().expect("config epoch"))
}

async fn config_epoch(address: &str, password: &str) -> u64 {
    epoch_and_role(address, password).await.1
}

async fn running_pid(fx: &Fixture, node: &ClusterNode) -> Option<u32> {
    match fx.driver.inspect_node(&node.handle).await.expect("inspect") {
        ProcessState::Running { pid } => pid,
        _ => None,
    }
}
