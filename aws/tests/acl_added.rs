//! An aws cluster made without ACL users (redisha works as `default` there, and the metrics
//! exporters log in as `default`) gains its first `user` block with `default` switched off,
//! in place, as the provider's update does it: the operator user's password is made in SSM,
//! then `converge_acl`. Afterwards `default` is refused, the user works, every exporter still
//! reports its node up (logging in as `redisha-exporter` now: as `default` it would be
//! refused), a replica restarted from what its instance has (its unit, reading SSM again)
//! replicates and keeps `default` off, and no write acknowledged before is lost.
//!
//! EC2 and SSM are moto's; the test-only SSM runner first-boots each instance (the node setup
//! of its user data, `redisha-password` reading moto's SSM) on this machine, with the nodes
//! bound to loopback stand-ins 127.248.Z.1.

mod common;

use std::time::Duration;

use common::{Fixture, Moto, ACL_ZONES as ZONES};
use redisha_aws::testing::ssm_runner::{ReportOnFailure, SsmRunner};
use redisha_aws::testing::{free_base_port, one_host_per_zone};
use redisha_aws::{AwsClients, AwsDriver};
use redisha_cluster::acl::OPERATOR_USER;
use redisha_cluster::{ClusterState, Driver, NodeConfig, Operator, Options, Password};

const CLUSTER: &str = "awsacladd";
const CLUSTER_ID: &str = "00000000000000a8";
const PASSWORD: &str = "aws-acladd-Cluster-pw-41";
const USER: &str = "app";
const USER_PASSWORD: &str = "aws-acladd-App-pw-17";
const NET: &str = "127.248";

fn plain_config() -> NodeConfig {
    NodeConfig {
        password: Some(Password::new(PASSWORD)),
        ..NodeConfig::default()
    }
}

fn acl_config() -> NodeConfig {
    common::acl_node_config(PASSWORD, USER, USER_PASSWORD, &["~*", "&*", "+@all"])
}

/// A new provider process: a driver that knows only what SSM keeps.
async fn fresh_driver(client: &AwsClients, fx: &Fixture, base: u16) -> AwsDriver {
    common::fresh_acl_driver(client, fx, (CLUSTER, CLUSTER_ID), NET, base).await
}

fn options() -> Options {
    Options {
        timeout: Duration::from_secs(180),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_gaining_its_first_user_with_default_off_keeps_metrics_and_replication() {
    common::log_to_test();
    let base = free_base_port(&common::acl_stand_ins(NET), 29000..29490);
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
}

async fn run(client: &AwsClients, fx: &Fixture, runner: &SsmRunner, driver: &AwsDriver, base: u16) {
    // Created without users: no operator user, redisha and the exporters log in as `default`.
    let request = one_host_per_zone(&ZONES);
    let plan = redisha_planner::plan(&request, None).expect("plan");
    let mut state = ClusterState::new("aws");
    state.cluster_id = CLUSTER_ID.into();
    state.name = CLUSTER.into();
    Operator::with_options(driver, plain_config(), options())
        .create(&request, &plan.placement, &mut state)
        .await
        .expect("create");
    assert_eq!(state.nodes.len(), 6);
    assert!(driver.operator_password().is_none(), "no operator user yet");
    common::assert_exporters_up(&state).await;
    let before = common::cluster_client(&state, None, PASSWORD);
    let mut con = before.get_async_connection().await.expect("cluster");
    let written: Vec<(String, usize)> = (0..100).map(|i| (format!("added:{i}"), i)).collect();
    for (key, value) in &written {
        assert_eq!(
            common::set_acknowledged(&mut con, key, *value).await,
            Ok(true),
            "{key} acknowledged"
        );
    }

    // The next apply declares a user and switches `default` off: as the provider's update,
    // a new driver makes the operator user's password, then the ACL converges.
    let second = fresh_driver(client, fx, base).await;
    second
        .load_security(true, false)
        .await
        .expect("operator password made");
    let operator_password = second.operator_password().expect("operator password");
    let mut op = Operator::with_options(&second, plain_config(), options());
    op.set_acl(acl_config().acl);
    op.converge_acl(&mut state, false)
        .await
        .expect("ACL converged");

    // `default` refused, the user and the operator user accepted, on every node.
    let check_logins = |when: &'static str| {
        let state = &state;
        let operator_password = operator_password.clone();
        async move {
            for n in &state.nodes {
                let at = (n.handle.ip.as_str(), n.handle.port);
                assert!(
                    common::connect(at, "default", PASSWORD).await.is_err(),
                    "{}: default still logs in {when}",
                    n.name
                );
                assert!(
                    common::connect(at, USER, USER_PASSWORD).await.is_ok(),
                    "{}: the user is refused {when}",
                    n.name
                );
                assert!(
                    common::connect(at, OPERATOR_USER, operator_password.expose())
                        .await
                        .is_ok(),
                    "{}: the operator user is refused {when}",
                    n.name
                );
            }
        }
    };
    check_logins("after the apply").await;
    // The exporters log in as their own user now: as `default` they would be refused.
    common::assert_exporters_up(&state).await;

    // A replica restarted from what its instance keeps replicates, with `default` still off
    // and the user still there.
    let (ip, port) = common::restart_replica(runner, &state, 0);
    common::replica_linked((&ip, port), &operator_password)
        .await
        .unwrap_or_else(|why| panic!("replica {ip}:{port} restarted: not linked: {why}"));
    check_logins("after the replicas restarted").await;
    common::assert_exporters_up(&state).await;

    let lost = common::lost_keys(
        &common::cluster_client(&state, Some(USER), USER_PASSWORD),
        &written,
    )
    .await;
    assert_eq!(lost, Vec::<String>::new(), "acknowledged writes lost");
}
