//! TLS `preferred` on the aws driver, and the switch to `required` in place: a cluster made in
//! `preferred` serves TLS on each node's port and plain text on its port + 1000, and its
//! security group opens those plain-text ports to the client ports' sources. The switch is the
//! provider's sequence (`set_tls_mode`, `sync_plain_ports` before, `roll_tls_mode`,
//! `sync_plain_ports` after) with a writer using WAIT running over TLS throughout, the first
//! apply cut off after its first restart and the next one (a fresh driver) finishing it: no
//! acknowledged write is lost, the plain-text port rules stay while the nodes roll and are
//! gone after, plain text is refused afterwards, every node's own config file says `port 0`
//! (what a boot starts from), and a second roll restarts nothing.
//!
//! EC2 and SSM are moto's; the test-only SSM runner first-boots each instance and runs every
//! Run Command the driver sends (so the restarts run the product's node setup), with the
//! nodes bound to loopback stand-ins 127.251.Z.1 and run by Debian's redis-server (with TLS).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{writer, Fixture, FixtureConfig, Moto, ZONES};
use redis::cluster::ClusterClient;
use redisha_aws::instances::Scope;
use redisha_aws::security_group::{self, Rule, Source};
use redisha_aws::testing::map_hosts;
use redisha_aws::testing::ssm_runner::{ReportOnFailure, SsmRunner};
use redisha_aws::{AwsClients, AwsDriver};
use redisha_cluster::tls::{TlsMode, PLAINTEXT_PORT_OFFSET};
use redisha_cluster::{ClusterError, ClusterState, Driver, NodeConfig, Operator, Options};

const CLUSTER: &str = "awspref";
const CLUSTER_ID: &str = "00000000000000f7";
const PASSWORD: &str = "aws-pref-Cluster-pw-53";

fn stand_ins() -> Vec<String> {
    common::stand_ins("127.251")
}

/// A base port whose two nodes' TLS, plain-text and bus ports are free on every stand-in.
fn free_base_port(addresses: &[String]) -> u16 {
    (28000u16..28490)
        .find(|p| {
            addresses.iter().all(|ip| {
                [
                    0u16,
                    1,
                    PLAINTEXT_PORT_OFFSET,
                    PLAINTEXT_PORT_OFFSET + 1,
                    10000,
                    10001,
                ]
                .iter()
                .all(|d| std::net::TcpListener::bind((ip.as_str(), p + d)).is_ok())
            })
        })
        .expect("a free base port on the stand-ins")
}

fn node_config() -> NodeConfig {
    common::password_config(PASSWORD)
}

/// A cluster client over TLS, verifying the nodes with the cluster's authority.
fn tls_cluster_client(state: &ClusterState, ca: &str) -> ClusterClient {
    common::tls_cluster_client(state, PASSWORD, ca)
}

/// The cluster group's ingress rules, as EC2 has them now.
async fn group_rules(client: &AwsClients, vpc_id: &str) -> BTreeSet<Rule> {
    let scope = Scope {
        cluster: CLUSTER,
        cluster_id: Some(CLUSTER_ID),
        vpc_id,
    };
    let group = security_group::find_group(client, &scope)
        .await
        .expect("DescribeSecurityGroups")
        .expect("the cluster's group");
    security_group::existing_rules(group.ip_permissions())
}

/// The rules of the plain-text client ports (6379 + 1000 and up).
fn plain_port_rules(rules: &BTreeSet<Rule>) -> BTreeSet<Rule> {
    let first = i32::from(redisha_aws::settings::REDIS_BASE_PORT + PLAINTEXT_PORT_OFFSET);
    rules.iter().filter(|r| r.from == first).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_serves_both_and_switches_to_required_without_losing_acknowledged_writes() {
    common::log_to_test();
    let Some(moto) = Moto::start() else { return };
    let client = moto.client().await;
    let fx = Fixture::create(&client, &ZONES).await;
    let runner = SsmRunner::booting(moto.port, CLUSTER);
    let _report = ReportOnFailure(&runner);
    let base = free_base_port(&stand_ins());
    let mut config = fx.config_with_id(CLUSTER, CLUSTER_ID);
    // A client network besides the group itself: the plain-text ports open to it too.
    config.allowed_cidrs = vec!["10.20.0.0/16".to_string()];
    map_hosts(&mut config, &ZONES, &stand_ins(), base);
    let driver = AwsDriver::with_client(client.clone(), config.clone()).expect("driver");
    let outcome = tokio::time::timeout(
        Duration::from_secs(900),
        run(&client, &driver, &config, &runner, &fx.vpc_id),
    )
    .await;
    // Whatever happened: nothing of the cluster left behind.
    let destroyed = driver.destroy().await;
    outcome.expect("test timed out");
    destroyed.expect("destroy");
}

async fn run(
    client: &AwsClients,
    driver: &AwsDriver,
    config: &redisha_aws::AwsDriverConfig,
    runner: &SsmRunner,
    vpc_id: &str,
) {
    // As the provider's create: the mode, then the authority made.
    driver.set_tls_mode(Some(TlsMode::Preferred));
    driver
        .load_security(false, true)
        .await
        .expect("load security");
    let ca = driver.client_tls().expect("client TLS").ca_cert_pem;
    let (_created, state) =
        common::create_one_host_per_zone(driver, node_config(), (CLUSTER, CLUSTER_ID), &ZONES)
            .await;
    assert_eq!(state.nodes.len(), 6);

    // The group opens the plain-text ports to exactly the client ports' sources.
    let rules = group_rules(client, vpc_id).await;
    let plain_rules = plain_port_rules(&rules);
    let client_sources: BTreeSet<Source> = rules
        .iter()
        .filter(|r| r.from == i32::from(redisha_aws::settings::REDIS_BASE_PORT))
        .map(|r| r.source.clone())
        .collect();
    let plain_sources: BTreeSet<Source> = plain_rules.iter().map(|r| r.source.clone()).collect();
    assert!(
        !plain_rules.is_empty(),
        "plain-text port rules in {rules:?}"
    );
    assert_eq!(plain_sources, client_sources, "{rules:?}");

    // Both kinds of client work on every node: plain text on port + 1000, TLS on the port.
    for n in &state.nodes {
        let (ip, port) = (n.handle.ip.as_str(), n.handle.port);
        let plain = common::plain_text_answer(ip, port + PLAINTEXT_PORT_OFFSET, PASSWORD).await;
        assert_eq!(
            plain,
            b"+OK\r\n+PONG\r\n",
            "{}: plain text on port + 1000: {:?}",
            n.name,
            String::from_utf8_lossy(&plain)
        );
        assert!(
            common::tls_ping(&ca, ip, port, PASSWORD).await,
            "{}: TLS on its port",
            n.name
        );
    }

    // Keys a replica acknowledged before the switch, written over TLS.
    let cluster = tls_cluster_client(&state, &ca);
    let mut con = cluster.get_async_connection().await.expect("TLS cluster");
    let before = common::acknowledged_keys(&mut con, "before", 50).await;

    // The switch, as the provider's update runs it, with a writer going throughout.
    let ran_before = runner.ran().len();
    driver.set_tls_mode(Some(TlsMode::Required));
    driver.sync_plain_ports(false).await.expect("sync before");
    assert_eq!(
        plain_port_rules(&group_rules(client, vpc_id).await),
        plain_rules,
        "the plain-text ports stay open while nodes still listen on them"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(
        tls_cluster_client(&state, &ca),
        "switch:",
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The apply is cut off after the roll's first restart (as a killed provider would be):
    // its state keeps `preferred`, and it never reaches the sync after the roll.
    let cut = Operator::with_options(
        driver,
        node_config(),
        Options {
            timeout: Duration::from_secs(180),
            stop_at: Some("rolling.node_restarted"),
            ..Default::default()
        },
    );
    let stopped = cut.roll_tls_mode(&state, TlsMode::Required).await;
    assert!(
        matches!(stopped, Err(ClusterError::Cancelled { .. })),
        "the roll stops at its first restart: {stopped:?}"
    );
    let mut plain_answers = 0;
    for n in &state.nodes {
        let plain = common::plain_text_answer(
            &n.handle.ip,
            n.handle.port + PLAINTEXT_PORT_OFFSET,
            PASSWORD,
        )
        .await;
        plain_answers += usize::from(!plain.is_empty());
    }
    assert!(
        (1..state.nodes.len()).contains(&plain_answers),
        "cut mid-roll: {plain_answers} of {} nodes still serve plain text",
        state.nodes.len()
    );
    assert_eq!(
        plain_port_rules(&group_rules(client, vpc_id).await),
        plain_rules,
        "the plain-text ports stay open while nodes still listen on them"
    );

    // The next apply is a new provider process: a fresh driver with nothing in memory, the
    // same sequence. It finishes the roll (the node already in `required` is not restarted
    // again), then closes the plain-text ports.
    let driver = &AwsDriver::with_client(client.clone(), config.clone()).expect("driver");
    driver.set_tls_mode(Some(TlsMode::Required));
    driver
        .load_security(false, true)
        .await
        .expect("load security again");
    driver.sync_plain_ports(false).await.expect("sync before");
    let op = Operator::with_options(
        driver,
        node_config(),
        Options {
            timeout: Duration::from_secs(180),
            ..Default::default()
        },
    );
    let ran_resumed = runner.ran().len();
    op.roll_tls_mode(&state, TlsMode::Required)
        .await
        .expect("roll to required, resumed");
    let resumed_restarts = runner.ran().len() - ran_resumed;
    assert_eq!(
        plain_port_rules(&group_rules(client, vpc_id).await),
        plain_rules,
        "the roll itself leaves the group alone"
    );
    driver.sync_plain_ports(true).await.expect("sync after");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let written = writing.await.expect("writer");
    let restarts = runner.ran().len() - ran_before;
    // Each node restarted: a stop and a start each; the one restarted before the cut not
    // again.
    assert!(restarts >= 12, "{restarts} Run Commands for 6 nodes");
    assert!(
        resumed_restarts < restarts,
        "the resumed roll sent {resumed_restarts} Run Commands of {restarts}: it restarted the node done before the cut again"
    );

    // The plain-text port rules are gone; nothing else changed.
    let after = group_rules(client, vpc_id).await;
    assert_eq!(plain_port_rules(&after), BTreeSet::new(), "{after:?}");
    let others: BTreeSet<Rule> = rules.difference(&plain_rules).cloned().collect();
    assert_eq!(after, others);

    // No acknowledged write lost.
    common::assert_none_lost(&cluster, &before, &written, "switch").await;
    eprintln!(
        "switch (cut after its first restart, resumed by a fresh driver): {restarts} Run Commands, {resumed_restarts} of them resumed"
    );

    // Plain text is refused now; TLS still works; every node's own file (what a boot starts
    // it from: a boot runs no setup) says `port 0` only.
    let instances = driver.unknown_hosts(&[]).await.expect("instances");
    for n in &state.nodes {
        let (ip, port) = (n.handle.ip.as_str(), n.handle.port);
        let plain = common::plain_text_answer(ip, port + PLAINTEXT_PORT_OFFSET, PASSWORD).await;
        assert!(
            plain.is_empty(),
            "{}: answered plain text after the switch: {:?}",
            n.name,
            String::from_utf8_lossy(&plain)
        );
        assert!(
            common::tls_ping(&ca, ip, port, PASSWORD).await,
            "{}: TLS after the switch",
            n.name
        );
        let instance = instances
            .iter()
            .find(|i| i.host == n.host)
            .expect("the node's instance");
        let machine = runner
            .machine(&instance.instance_id)
            .expect("the instance's machine");
        let file = machine.read(&format!("/etc/redisha/node-{port}.conf"));
        let ports: Vec<&str> = file.lines().filter(|l| l.starts_with("port ")).collect();
        assert!(
            !ports.is_empty() && ports.iter().all(|l| *l == "port 0"),
            "{}: port lines {ports:?}",
            n.name
        );
    }

    // A second roll (the next apply of the same configuration) restarts nothing.
    let ran = runner.ran().len();
    op.roll_tls_mode(&state, TlsMode::Required)
        .await
        .expect("second roll");
    assert_eq!(runner.ran().len(), ran, "no Run Command sent");
}
