//! The aws engine roll: a running cluster (3 instances, 2 nodes each, 3 shards with a replica)
//! whose AMI changes is moved onto instances of the new AMI one instance at a time, through
//! the operator (`Operator::roll_hosts`): masters fail over off an instance, the instance is
//! terminated and launched again from the new AMI with the same nodes, which resynchronise.
//! Keys written with WAIT before the roll and by a writer during it are all there afterwards,
//! and a roll cut short after an instance was terminated is finished by the next one.
//!
//! EC2 and SSM are moto's; the test-only SSM runner first-boots each new instance (the node
//! setup of its user data) on this machine, with the nodes bound to loopback stand-ins
//! 127.132.Z.1 (the address map); a terminated instance's processes end with it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, FixtureConfig, Moto};
use redisha_aws::testing::ssm_runner::{ReportOnFailure, SsmRunner};
use redisha_aws::testing::{free_base_port, map_hosts, one_host_per_zone};
use redisha_aws::{AwsClients, AwsDriver, HostStatus};
use redisha_cluster::{ClusterError, ClusterState, NodeConfig, Operator, Options, Password};

const CLUSTER: &str = "awsroll";
const CLUSTER_ID: &str = "00000000000000e7";
const PASSWORD: &str = "aws-roll-Secret-12";
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// The stand-in addresses 127.132.Z.1, one a zone.
fn stand_ins() -> Vec<String> {
    (1..=ZONES.len())
        .map(|z| format!("127.132.{z}.1"))
        .collect()
}

/// The driver for the cluster with `ami`, every host mapped to its stand-in.
fn driver(client: &AwsClients, fx: &Fixture, ami: &str, base: u16) -> AwsDriver {
    let mut c = fx.config_with_id(CLUSTER, CLUSTER_ID);
    c.ami = ami.to_string();
    map_hosts(&mut c, &ZONES, &stand_ins(), base);
    AwsDriver::with_client(client.clone(), c).expect("driver")
}

fn node_config() -> NodeConfig {
    NodeConfig {
        password: Some(Password::new(PASSWORD)),
        redis_config: Default::default(),
        acl: Default::default(),
    }
}

fn operator<'a>(driver: &'a AwsDriver, stop_at: Option<&'static str>) -> Operator<'a> {
    Operator::with_options(
        driver,
        node_config(),
        Options {
            timeout: Duration::from_secs(120),
            stop_at,
            ..Options::default()
        },
    )
}

/// The AMI of every pending or running instance of the cluster.
async fn running_images(client: &AwsClients) -> Vec<String> {
    common::instances_in(client, CLUSTER, &["pending", "running"])
        .await
        .iter()
        .map(|i| i.image_id().unwrap_or_default().to_string())
        .collect()
}

/// What is missing for every shard to have its master serving slots and a replica attached,
/// as the first node sees it; `None` when nothing is.
async fn shard_problem(state: &ClusterState) -> Option<String> {
    let first = &state.nodes[0];
    let client =
        redis::Client::open(format!("redis://:{PASSWORD}@{}/", first.address())).expect("client");
    let mut con = match client.get_multiplexed_async_connection().await {
        Ok(con) => con,
        Err(e) => return Some(format!("{}: {e}", first.address())),
    };
    let text: String = match redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut con)
        .await
    {
        Ok(text) => text,
        Err(e) => return Some(format!("CLUSTER NODES: {e}")),
    };
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    if lines.len() != 6 {
        return Some(format!("six nodes known:\n{text}"));
    }
    let masters: Vec<&Vec<&str>> = lines
        .iter()
        .filter(|l| l[2].contains("master") && l.len() > 8)
        .collect();
    if masters.len() != 3 {
        return Some(format!("three masters serving slots:\n{text}"));
    }
    for m in masters {
        let replicas = lines
            .iter()
            .filter(|l| l[3] == m[0] && !l[2].contains("fail") && l[7] == "connected")
            .count();
        if replicas != 1 {
            return Some(format!("master {} with its replica:\n{text}", m[1]));
        }
    }
    None
}

/// Every shard has its master and its replica, once gossip has carried the last failover to
/// the node asked (bounded wait).
async fn assert_every_shard_whole(state: &ClusterState, when: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let Some(problem) = shard_problem(state).await else {
            return;
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{when}: waited 30 s for {problem}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ami_change_replaces_instances_one_at_a_time_without_losing_acknowledged_writes() {
    common::log_to_test();
    let Some(moto) = Moto::start() else { return };
    let client = moto.client().await;
    let fx = Fixture::create(&client, &ZONES).await;
    let runner = SsmRunner::booting(moto.port, CLUSTER);
    let _report = ReportOnFailure(&runner);
    tokio::time::timeout(Duration::from_secs(900), run(&client, &fx))
        .await
        .expect("test timed out");
}

async fn run(client: &AwsClients, fx: &Fixture) {
    let base = free_base_port(&stand_ins(), 9700..9790);
    // One instance per zone, `<zone>-1`, each running two nodes: 3 shards with one replica.
    let request = one_host_per_zone(&ZONES);
    let old = driver(client, fx, &fx.ami, base);
    let op = operator(&old, None);
    let mut state = ClusterState::new("aws");
    state.cluster_id = CLUSTER_ID.into();
    state.name = CLUSTER.into();
    let plan = redisha_planner::plan(&request, None).expect("plan");
    op.create(&request, &plan.placement, &mut state)
        .await
        .expect("create");
    assert_eq!(running_images(client).await, vec![fx.ami.clone(); 3]);

    // Keys a replica acknowledged before the roll.
    let cluster = common::cluster_client(&state, None, PASSWORD);
    let mut con = cluster.get_async_connection().await.expect("cluster");
    let before = common::acknowledged_keys(&mut con, "before", 300).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(common::writer(
        common::cluster_client(&state, None, PASSWORD),
        "roll",
        stop.clone(),
    ));

    // The new AMI: every instance is outdated, and the plan says from what to what.
    let new = driver(client, fx, &fx.other_ami, base);
    new.remember_hosts(&state.hosts).await;
    let cut = operator(&new, Some("host_roll.host_removed"));
    let change = cut.host_change(&state).await.expect("host change");
    assert_eq!(change.refusal, None);
    assert_eq!(change.hosts.len(), 3, "{change:?}");
    for h in &change.hosts {
        assert_eq!(h.running, format!("{} with redis-server", fx.ami));
        assert_eq!(h.target, format!("{} with redis-server", fx.other_ami));
    }

    // A roll stopped right after the first instance was terminated (as a provider killed
    // there): one instance gone, nothing launched in its place yet.
    let saved = state.clone();
    let mut cut_state = state.clone();
    let stopped = cut.roll_hosts(&request, &mut cut_state).await;
    assert!(
        matches!(stopped, Err(ClusterError::Cancelled { at }) if at == "host_roll.host_removed"),
        "{stopped:?}"
    );
    assert_eq!(
        running_images(client).await.len(),
        2,
        "one instance terminated"
    );

    // The next apply: the state as Terraform kept it, rebuilt from the driver and the cluster;
    // the terminated host leaves it (sync_hosts), repair launches it from the new AMI, and the
    // roll replaces the two left.
    let op = operator(&new, None);
    let mut state = saved;
    op.recover(&mut state).await.expect("recover");
    let statuses = new.read_hosts(&state.hosts).await.expect("read hosts");
    let gone: Vec<String> = statuses
        .iter()
        .filter_map(|s| match s {
            HostStatus::Present { .. } => None,
            HostStatus::Missing { name, .. } => Some(name.clone()),
            HostStatus::Stopped { handle } => Some(handle.name.clone()),
        })
        .collect();
    assert_eq!(gone.len(), 1, "{statuses:?}");
    state.hosts.retain(|h| !gone.contains(&h.name));
    op.repair(&request, &mut state).await.expect("repair");
    let left = op.host_change(&state).await.expect("host change");
    assert_eq!(left.hosts.len(), 2, "the repaired host runs the new AMI");
    let replaced = op.roll_hosts(&request, &mut state).await.expect("roll");
    assert_eq!(replaced.len(), 2, "{replaced:?}");

    stop.store(true, Ordering::SeqCst);
    let written = writing.await.expect("writer");

    // Every instance runs the new AMI, the cluster is whole, and no acknowledged key is lost.
    assert_eq!(running_images(client).await, vec![fx.other_ami.clone(); 3]);
    assert!(op
        .host_change(&state)
        .await
        .expect("host change")
        .hosts
        .is_empty());
    op.wait_converged(&state).await.expect("converged");
    assert_every_shard_whole(&state, "after the roll").await;
    assert!(
        !written.acknowledged.is_empty(),
        "the writer got writes acknowledged during the roll ({} others)",
        written.other
    );
    let lost = common::lost_keys(
        &common::cluster_client(&state, None, PASSWORD),
        before.iter().chain(&written.acknowledged),
    )
    .await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged keys lost: {:?}",
        lost.len(),
        before.len() + written.acknowledged.len(),
        &lost[..lost.len().min(10)]
    );
    eprintln!(
        "roll done: {} keys acknowledged during it, {} writes not acknowledged",
        written.acknowledged.len(),
        written.other
    );
    new.destroy().await.expect("destroy");
}
