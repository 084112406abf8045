//! The aws driver's drill: a cluster of 3 zones (one instance each, 2 nodes per instance, 3
//! shards with a replica, cluster-node-timeout 1000 ms) made by the operator on moto's EC2;
//! the instance of the zone holding shard 0's master is stopped with StopInstances and started
//! again. No acknowledged write may be lost, the what-if report's prediction must be what
//! happened, and the cluster must be back in its planned layout.
//!
//! moto only flips an instance's state; the test-only SSM runner makes it real: a stopped
//! instance's nodes get SIGKILL (the power going off), a started one boots and systemd (the
//! runner's shim) starts its enabled node units from their config and data, after their rejoin
//! delay. The nodes listen on loopback stand-ins 127.136.Z.1 (the test-only address map),
//! ports 27800-27890; moto's invented private addresses are never contacted.

use std::time::Duration;

use redisha_aws::testing::ssm_runner::{ReportOnFailure, SsmRunner};
use redisha_aws::testing::{free_base_port, map_hosts, one_host_per_zone, Fixture, Moto};
use redisha_aws::{AwsClients, AwsDriver, AwsDriverConfig};
use redisha_cluster::{ClusterState, NodeConfig, Operator, Options, Password};
use redisha_drill::{
    default_window, ec2_stop, render_text, run, Action, DrillDriver, DrillOptions, DrillReport,
    Failure, Scope,
};
use redisha_planner::{plan, Role};

const CLUSTER: &str = "awsdrill";
const CLUSTER_ID: &str = "00000000000000d5";
const PASSWORD: &str = "aws-drill-Secret-16";
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const NODE_TIMEOUT_MS: u64 = 1000;

/// The stand-in addresses 127.136.Z.1, one a zone.
fn stand_ins() -> Vec<String> {
    (1..=ZONES.len())
        .map(|z| format!("127.136.{z}.1"))
        .collect()
}

fn driver(client: &AwsClients, fx: &Fixture, base: u16) -> AwsDriver {
    AwsDriver::with_client(client.clone(), driver_config(fx, base)).expect("driver")
}

fn driver_config(fx: &Fixture, base: u16) -> AwsDriverConfig {
    let mut c = AwsDriverConfig::new(CLUSTER, fx.subnet_ids(), "t3.small", fx.ami.clone());
    c.cluster_id = Some(CLUSTER_ID.into());
    c.poll_interval = Duration::from_millis(200);
    map_hosts(&mut c, &ZONES, &stand_ins(), base);
    c
}

fn node_config() -> NodeConfig {
    let mut config = NodeConfig {
        password: Some(Password::new(PASSWORD)),
        ..NodeConfig::default()
    };
    config
        .redis_config
        .insert("cluster-node-timeout".into(), NODE_TIMEOUT_MS.to_string());
    config
}

fn options() -> Options {
    Options {
        timeout: Duration::from_secs(120),
        ..Options::default()
    }
}

/// The zone of shard 0's planned master.
fn master_zone(state: &ClusterState) -> String {
    state
        .nodes
        .iter()
        .find(|n| n.shard == 0 && n.role == Role::Master)
        .map(|n| n.zone.clone())
        .expect("a master")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_stop_fails_over_its_master_and_the_started_instance_rejoins_as_planned() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "redisha_drill=info,redisha_aws=info".into()),
        )
        .with_test_writer()
        .try_init();
    let Some(moto) = Moto::start() else { return };
    let client = moto.client().await;
    let fx = Fixture::create(&client, &ZONES).await;
    let runner = SsmRunner::booting(moto.port, CLUSTER);
    let _report = ReportOnFailure(&runner);
    let records = tempfile::tempdir().expect("temp dir");
    let report = tokio::time::timeout(
        Duration::from_secs(600),
        drill(&client, &fx, &runner, records.path()),
    )
    .await
    .expect("test timed out");
    eprintln!("{}", render_text(&report));

    // 0 acknowledged writes lost, prediction = observation, the planned layout restored.
    assert!(report.passed(), "the drill failed: {report:?}");
    assert_eq!(report.observed.masters_lost, 1);
    assert_eq!(report.observed.replicas_promoted, 1);
    assert!(report.shards.iter().all(|s| s.observed_writable));
    // The stopped instance really went down and came back by booting, not by a Run Command.
    assert!(
        runner
            .ran()
            .iter()
            .any(|r| r.comment == "boot" && r.code == 0),
        "the started instance booted: {}",
        runner.report()
    );
    assert!(
        std::fs::read_dir(records.path())
            .expect("record dir")
            .next()
            .is_none(),
        "the record of the stopped instances is gone once they run"
    );
}

async fn drill(
    client: &AwsClients,
    fx: &Fixture,
    runner: &SsmRunner,
    records: &std::path::Path,
) -> DrillReport {
    let base = free_base_port(&stand_ins(), 27800..27890);
    // One instance per zone, `<zone>-1`, each running two nodes: 3 shards with one replica.
    let request = one_host_per_zone(&ZONES);
    let driver = driver(client, fx, base);
    let config = node_config();
    let mut state = ClusterState::new("aws");
    state.cluster_id = CLUSTER_ID.into();
    state.name = CLUSTER.into();
    let planned = plan(&request, None).expect("plan");
    Operator::with_options(&driver, config.clone(), options())
        .create(&request, &planned.placement, &mut state)
        .await
        .expect("create");
    let failure = Failure {
        action: Action::Stop,
        scope: Scope::Zone(master_zone(&state)),
        window: default_window(NODE_TIMEOUT_MS),
    };
    let opts = DrillOptions {
        operator: options(),
        // The started nodes wait their rejoin delay (2 x node timeout + 5 s) before they run.
        heal_timeout: Duration::from_secs(120),
        ..DrillOptions::default()
    };
    let report = run(
        DrillDriver::Aws {
            driver: &driver,
            record_dir: records,
        },
        &request,
        &config,
        state,
        &failure,
        &opts,
    )
    .await
    .unwrap_or_else(|e| panic!("the drill ran: {e}\n{}", runner.report()));
    leftovers_are_started_and_other_clusters_untouched(client, fx, &driver, records, base).await;
    let destroyed = driver.destroy().await;
    assert!(destroyed.is_ok(), "destroy: {destroyed:?}");
    report
}

/// A drill killed while its instances were stopped leaves its record; the next drill's
/// `start_leftovers` starts them. A driver of another cluster id (same name, same VPC) finds
/// none of them and may not stop them.
async fn leftovers_are_started_and_other_clusters_untouched(
    client: &AwsClients,
    fx: &Fixture,
    driver: &AwsDriver,
    records: &std::path::Path,
    base: u16,
) {
    let zone = ZONES[2];
    let ids: Vec<String> = driver
        .running_in_zone(zone)
        .await
        .expect("running instances")
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(ids.len(), 1, "one instance in {zone}");

    let mut other = driver_config(fx, base);
    other.cluster_id = Some("00000000000000d6".into());
    let other = AwsDriver::with_client(client.clone(), other).expect("driver");
    assert!(other
        .running_in_zone(zone)
        .await
        .expect("lookup")
        .is_empty());
    assert!(
        other.stop_instances(&ids).await.is_err(),
        "another cluster id may not stop this cluster's instance"
    );

    let stopped = ec2_stop::stop(driver, records, CLUSTER_ID, ids.clone())
        .await
        .expect("stopped");
    // The drill is killed here: nothing starts them but the record.
    drop(stopped);
    assert!(driver
        .running_in_zone(zone)
        .await
        .expect("lookup")
        .is_empty());
    let started = ec2_stop::start_leftovers(driver, records, CLUSTER_ID)
        .await
        .expect("leftovers started");
    assert_eq!(started, ids);
    assert_eq!(
        driver
            .running_in_zone(zone)
            .await
            .expect("lookup")
            .into_iter()
            .map(|i| i.instance_id)
            .collect::<Vec<_>>(),
        ids
    );
    assert!(
        ec2_stop::start_leftovers(driver, records, CLUSTER_ID)
            .await
            .expect("no leftovers")
            .is_empty(),
        "the record went with the start"
    );
}
