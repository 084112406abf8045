//! Rotating the operator user's password on the aws driver (`operator_password_generation`):
//! a cluster with a declared user and `default` off (so redisha works as `redisha-operator`,
//! its password in SSM) gets a new operator password while a writer runs WAIT-acknowledged
//! writes. The provider is killed (as `Options::stop_at` cuts an apply short) at
//! `acl.operator_new_accepted`, then at `acl.operator_masterauth_set`; each new provider (a new
//! driver loading SSM) resumes with the same new password, what the nodes read from SSM
//! keeps the old `masterauth` until every node accepts the new one, a node restarted after
//! either kill still replicates, and the third apply finishes: SSM keeps only the new password and its
//! generation, the old one is refused by every node, a node restarted afterwards replicates,
//! and a further apply has nothing to do. No acknowledged write is lost.
//!
//! EC2 and SSM are moto's; the test-only SSM runner first-boots each instance (the node setup
//! of its user data, `redisha-password` reading moto's SSM) on this machine, with the nodes
//! bound to loopback stand-ins 127.246.Z.1.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, Moto, ACL_ZONES as ZONES};
use redisha_aws::testing::ssm_runner::{ReportOnFailure, SsmRunner};
use redisha_aws::testing::{free_base_port, one_host_per_zone};
use redisha_aws::{secrets, AwsClients, AwsDriver};
use redisha_cluster::acl::OPERATOR_USER;
use redisha_cluster::{
    ClusterError, ClusterState, Driver, NodeConfig, Operator, Options, Password,
};

const CLUSTER: &str = "awsoprot";
const CLUSTER_ID: &str = "00000000000000f7";
const PASSWORD: &str = "aws-oprot-Cluster-pw-53";
const USER: &str = "app";
const USER_PASSWORD: &str = "aws-oprot-App-pw-29";
fn node_config() -> NodeConfig {
    common::acl_node_config(PASSWORD, USER, USER_PASSWORD, &["~*", "&*", "+@all"])
}

/// A new provider process: a driver that knows only what SSM keeps.
async fn fresh_driver(client: &AwsClients, fx: &Fixture, base: u16) -> AwsDriver {
    common::fresh_acl_driver(client, fx, (CLUSTER, CLUSTER_ID), "127.246", base).await
}

/// A new provider process with `operator_password_generation = 2` while a rotation to `new`
/// is under way: it finds the rotation and carries it on with the same password.
async fn resumed(client: &AwsClients, fx: &Fixture, base: u16, new: &Password) -> AwsDriver {
    let driver = fresh_driver(client, fx, base).await;
    driver
        .prepare_operator_rotation(Some(2))
        .await
        .expect("rotation found");
    assert_eq!(
        driver.operator_password().as_ref(),
        Some(new),
        "same new password"
    );
    driver
}

fn operator<'a>(driver: &'a AwsDriver, stop_at: Option<&'static str>) -> Operator<'a> {
    let mut op = Operator::with_options(
        driver,
        node_config(),
        Options {
            timeout: Duration::from_secs(180),
            stop_at,
            ..Options::default()
        },
    );
    op.set_acl(node_config().acl);
    op
}

async fn parameter(client: &AwsClients, name: &str) -> Option<String> {
    let prefix = secrets::parameter_prefix(CLUSTER, CLUSTER_ID);
    secrets::get_parameter(&client.ssm, &format!("{prefix}/{name}"))
        .await
        .expect("GetParameter")
}

async fn parameters(client: &AwsClients) -> Vec<(String, String)> {
    secrets::parameters_under(&client.ssm, &secrets::parameter_prefix(CLUSTER, CLUSTER_ID))
        .await
        .expect("GetParametersByPath")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_password_rotates_in_ssm_through_provider_kills_without_losing_writes() {
    common::log_to_test();
    let base = free_base_port(&common::acl_stand_ins("127.246"), 29000..29490);
    let Some(moto) = Moto::start() else { return };
    let client = moto.client().await;
    let fx = Fixture::create(&client, &ZONES).await;
    let runner = SsmRunner::booting(moto.port, CLUSTER);
    let _report = ReportOnFailure(&runner);
    let driver = fresh_driver(&client, &fx, base).await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(900),
        run(&client, &fx, &runner, &driver, base),
    )
    .await;
    let destroyed = driver.destroy().await;
    outcome.expect("test timed out");
    destroyed.expect("destroy");
    // The rotation's parameters went with the others.
    let left = parameters(&client).await;
    assert!(left.is_empty(), "parameters left after destroy: {left:?}");
}

async fn run(client: &AwsClients, fx: &Fixture, runner: &SsmRunner, driver: &AwsDriver, base: u16) {
    // As the provider's create with `operator_password_generation = 1`.
    driver
        .load_security(true, false)
        .await
        .expect("operator password made");
    driver
        .record_operator_generation(1)
        .await
        .expect("generation recorded");
    let old = driver.operator_password().expect("an operator password");
    let request = one_host_per_zone(&ZONES);
    let plan = redisha_planner::plan(&request, None).expect("plan");
    let mut state = ClusterState::new("aws");
    state.cluster_id = CLUSTER_ID.into();
    state.name = CLUSTER.into();
    operator(driver, None)
        .create(&request, &plan.placement, &mut state)
        .await
        .expect("create");
    assert_eq!(state.nodes.len(), 6);
    assert_eq!(
        parameter(client, "operator-password-generation")
            .await
            .as_deref(),
        Some("1")
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(common::writer(
        common::cluster_client(&state, Some(USER), USER_PASSWORD),
        "rot",
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // `operator_password_generation = 2`, the provider killed once every node accepts the
    // new password.
    let first = fresh_driver(client, fx, base).await;
    first
        .prepare_operator_rotation(Some(2))
        .await
        .expect("rotation started");
    let new = first.operator_password().expect("the new password");
    assert_ne!(new, old);
    assert_eq!(first.operator_password_retiring(), Some(old.clone()));
    let mut cut_short = operator(&first, Some("acl.operator_new_accepted"));
    // Settings written for the nodes' next start before every node accepts the new password
    // (as a repair's restart would): what they read from SSM still logs in with the old one.
    first
        .write_node_config(&state.nodes[0].handle, cut_short.config())
        .await
        .expect("settings written");
    let auth = parameter(client, "node/auth").await.unwrap_or_default();
    assert!(
        auth.contains(old.expose()) && !auth.contains(new.expose()),
        "auth.conf moved to the new password before the nodes accept it"
    );
    let cut = cut_short.converge_acl(&mut state, false).await;
    assert!(
        matches!(cut, Err(ClusterError::Cancelled { .. })),
        "{cut:?}"
    );
    // SSM: the old password still the kept one, the new one beside it.
    assert_eq!(
        parameter(client, "operator-password").await.as_deref(),
        Some(old.expose())
    );
    assert_eq!(
        parameter(client, "operator-password-next").await.as_deref(),
        Some(new.expose())
    );

    // A replica restarted now (its start reads auth.conf from SSM) still replicates; it
    // comes back with the passwords its own config file has, the old one.
    let restarted = common::restart_replica(runner, &state, 2);
    common::replica_linked((&restarted.0, restarted.1), &old)
        .await
        .expect("a replica restarted once the new password is accepted replicates");

    // The next apply, killed once replication moved to the new password.
    let second = resumed(client, fx, base, &new).await;
    let cut = operator(&second, Some("acl.operator_masterauth_set"))
        .converge_acl(&mut state, false)
        .await;
    assert!(
        matches!(cut, Err(ClusterError::Cancelled { .. })),
        "{cut:?}"
    );
    assert_eq!(
        parameter(client, "operator-password").await.as_deref(),
        Some(old.expose()),
        "SSM keeps a password every node accepts"
    );
    let auth = parameter(client, "node/auth").await.unwrap_or_default();
    assert!(
        auth.contains(&format!("masterauth {}", new.expose()))
            || auth.contains(&format!("masterauth \"{}\"", new.expose())),
        "the nodes' next start logs in with the new password"
    );
    // A replica restarted now (its start reads auth.conf from SSM) still replicates.
    let restarted = common::restart_replica(runner, &state, 0);
    common::replica_linked((&restarted.0, restarted.1), &new)
        .await
        .expect("a replica restarted mid-rotation replicates");

    // The third apply finishes it, with the same password.
    let third = resumed(client, fx, base, &new).await;
    operator(&third, None)
        .converge_acl(&mut state, false)
        .await
        .expect("rotation finished");
    assert_eq!(
        parameter(client, "operator-password").await.as_deref(),
        Some(new.expose())
    );
    assert_eq!(parameter(client, "operator-password-next").await, None);
    assert_eq!(
        parameter(client, "operator-password-generation")
            .await
            .as_deref(),
        Some("2")
    );
    let auth = parameter(client, "node/auth").await.unwrap_or_default();
    assert!(
        !auth.contains(old.expose()),
        "no old password left in auth.conf"
    );

    // Then nothing to do: a further apply with the same number changes nothing.
    let fourth = fresh_driver(client, fx, base).await;
    fourth
        .prepare_operator_rotation(Some(2))
        .await
        .expect("nothing under way");
    assert_eq!(fourth.operator_password(), Some(new.clone()));
    assert_eq!(fourth.operator_password_retiring(), None);
    let changed = operator(&fourth, None)
        .converge_acl(&mut state, false)
        .await
        .expect("converge");
    assert!(!changed, "a further apply has nothing to do");

    // Every node: the old password refused, the new one accepted.
    for n in &state.nodes {
        let at = (n.handle.ip.as_str(), n.handle.port);
        let refused = common::connect(at, OPERATOR_USER, old.expose()).await;
        assert!(
            refused.is_err(),
            "{}: the old password still logs in",
            n.name
        );
        let mut con = common::connect(at, OPERATOR_USER, new.expose())
            .await
            .unwrap_or_else(|e| panic!("{}: the new password refused: {e}", n.name));
        let _: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .expect("PING");
    }
    // A replica restarted after the rotation replicates.
    let restarted = common::restart_replica(runner, &state, 1);
    common::replica_linked((&restarted.0, restarted.1), &new)
        .await
        .expect("a replica restarted after the rotation replicates");

    // The metrics exporters (where the package is installed) moved to the new exporter
    // password before the old one went: each reports its node up.
    common::assert_exporters_up(&state).await;

    // No acknowledged write lost.
    stop.store(true, Ordering::SeqCst);
    let acknowledged = writing.await.expect("writer").acknowledged;
    assert!(
        acknowledged.len() > 10,
        "the writer got writes acknowledged during the rotation: {}",
        acknowledged.len()
    );
    let lost = common::lost_keys(
        &common::cluster_client(&state, Some(USER), USER_PASSWORD),
        &acknowledged,
    )
    .await;
    eprintln!(
        "operator rotation: {} acknowledged writes, {} lost",
        acknowledged.len(),
        lost.len()
    );
    assert_eq!(lost, Vec::<String>::new(), "acknowledged writes lost");
}
