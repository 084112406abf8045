//! CI drills on a sentinel-mode deployment (local driver): 3 zones of 2 hosts, a primary and 2
//! replicas one per zone, 3 sentinels one per zone, down-after-milliseconds 1000, built with
//! the operator `redisha_sentinel` runs. Each drill must lose no acknowledged write, see what
//! the planner's sentinel report predicts for the deployment as placed, and leave it in its
//! planned layout. One drill at a time; each on its own loopback octet (127.214-217), data
//! ports 9500+ and sentinels 9600+.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use redisha_cluster::identity::new_cluster_id;
use redisha_cluster::sentinel::{SentinelOperator, SentinelSettings, SentinelState};
use redisha_cluster::{LocalConfig, LocalDriver, NodeConfig, Operator, Options, Password};
use redisha_drill::sentinel::{
    render_text, run_sentinel, sentinel_window, SentinelDeployment, SentinelDrillReport,
};
use redisha_drill::{Action, DrillOptions, Failure, Scope};
use redisha_planner::{plan, ClusterSpec, Request, SentinelSpec, Spread};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn request() -> Request {
    Request {
        cluster: ClusterSpec {
            survive: Default::default(),
            shards: 1,
            replicas: 2,
            node_memory_mb: 256,
            spread: Spread::Zone,
        },
        zones: common::zones(3, 2, 1, |z, h| format!("z{z}h{h}")),
        partitions: Vec::new(),
        sentinel: Some(SentinelSpec::default()),
    }
}

fn settings(down_after_ms: u64, min_replicas_max_lag: u32) -> SentinelSettings {
    SentinelSettings {
        master_name: "drill".into(),
        quorum: 2,
        down_after_ms,
        failover_timeout_ms: 10_000,
        min_replicas_to_write: 1,
        min_replicas_max_lag,
    }
}

fn options() -> Options {
    Options {
        timeout: Duration::from_secs(90),
        ..Options::default()
    }
}

/// A driver over a temporary data dir; dropping it SIGKILLs its processes (pid-checked).
struct Deployed {
    driver: LocalDriver,
    _dir: tempfile::TempDir,
}

impl Drop for Deployed {
    fn drop(&mut self) {
        self.driver.kill_all_blocking();
    }
}

/// Builds the deployment and runs one drill on it.
fn drill(
    octet: u8,
    down_after_ms: u64,
    min_replicas_max_lag: u32,
    action: Action,
    scope: impl FnOnce(&SentinelState) -> Scope,
) -> SentinelDrillReport {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut local = LocalConfig::new(dir.path().join("nodes"));
        local.loopback_octet = octet;
        local.base_port = 9500;
        let id = new_cluster_id().expect("cluster id");
        let d = Deployed {
            driver: LocalDriver::new(local)
                .with_cluster(&id, "drill-sentinel")
                .expect("driver"),
            _dir: dir,
        };
        let config = NodeConfig {
            password: Some(Password::new("drill-secret")),
            ..NodeConfig::default()
        };
        let settings = settings(down_after_ms, min_replicas_max_lag);
        let request = request();
        let planned = plan(&request, None).expect("plan");
        let sentinels = planned.sentinel.clone().expect("sentinel plan").sentinels;
        let mut state = SentinelState::default();
        SentinelOperator::new(
            Operator::with_options(&d.driver, config.clone(), options()),
            settings.clone(),
            &id,
        )
        .create(&request, &planned.placement, &sentinels, &mut state)
        .await
        .expect("create");
        let failure = Failure {
            action,
            scope: scope(&state),
            window: sentinel_window(&settings),
        };
        let opts = DrillOptions {
            operator: options(),
            ..DrillOptions::default()
        };
        let deployment = SentinelDeployment {
            driver: &d.driver,
            request: &request,
            config: &config,
            settings: &settings,
            cluster_id: &id,
            placement: &planned.placement,
            sentinels: &sentinels,
            sentinel_password: None,
        };
        let report = tokio::time::timeout(
            Duration::from_secs(240),
            run_sentinel(&deployment, state, &failure, &opts),
        )
        .await
        .expect("the drill finished in time")
        .expect("the drill ran");
        eprintln!("{}", render_text(&report));
        report
    })
}

fn primary_zone(state: &SentinelState) -> Scope {
    Scope::Zone(
        state
            .planned_primary()
            .map(|m| m.zone.clone())
            .expect("a planned primary"),
    )
}

fn assert_passed(r: &SentinelDrillReport) {
    assert_eq!(r.acked_lost_total(), 0, "acknowledged writes lost");
    assert!(
        r.disagreements.is_empty(),
        "prediction != observation: {:?}",
        r.disagreements
    );
    assert!(
        r.restore.planned_layout,
        "not back to the planned layout: {:?}",
        r.restore
    );
}

#[test]
fn sentinel_zone_crash_fails_over_and_loses_no_acknowledged_write() {
    let r = drill(214, 1000, 2, Action::Crash, primary_zone);
    assert_passed(&r);
    assert!(r.predicted.failover && r.observed.failover);
    assert!(r.failover_after_ms.is_some());
    // The writes went on at the promoted replica, outside the crashed zone.
    let end = r.primary_at_end.clone().expect("a primary took writes");
    assert!(!r.hit.contains(&end), "{end} was in the crashed zone");
}

#[test]
fn sentinel_primary_zone_partition_fails_over_and_the_cut_off_primary_refuses_writes() {
    let r = drill(215, 1000, 2, Action::Partition, primary_zone);
    assert_passed(&r);
    assert!(r.observed.failover);
    let cut = r.isolated.clone().expect("the cut-off primary's figures");
    // min-replicas-to-write: once its replicas' lag passed min-replicas-max-lag it refused.
    assert!(cut.refused > 0, "{cut:?}");
    assert!(!r.observed.isolated_primary_accepts_writes);
    // Whatever it accepted alone was not acknowledged by every replica, and is gone after the
    // heal, when Sentinel turned it into a replica of the promoted one.
    assert_eq!(cut.acked_lost, 0, "{cut:?}");
}

#[test]
fn sentinel_zone_hang_fails_over_and_the_resumed_primary_rejoins_as_a_replica() {
    let r = drill(216, 1000, 2, Action::Hang, primary_zone);
    assert_passed(&r);
    assert!(r.observed.failover);
}

/// The figures of docs/drills.md: the write outage of a zone crash and of a primary-zone
/// partition against down-after-milliseconds, with redisha's default min-replicas-max-lag
/// (10 s). A measurement, not a check: run with
/// `cargo test -p redisha-drill --test sentinel_drills -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_sentinel_outage_against_down_after() {
    let mut rows = Vec::new();
    for down_after in [1000u64, 2000, 5000] {
        for action in [Action::Crash, Action::Partition] {
            // One after the other on one octet: each deployment is gone before the next.
            let r = drill(217, down_after, 10, action, primary_zone);
            assert_passed(&r);
            let cut = r.isolated.clone();
            rows.push(format!(
                "| {down_after} | {} | {:.0} | {:.0} | {} | {} | {} | {:.0} |",
                action.as_str(),
                r.failover_after_ms.unwrap_or(f64::NAN),
                r.write_outage_ms,
                r.acked_lost_total(),
                cut.as_ref().map_or("-".into(), |c| format!(
                    "{} ({} lost)",
                    c.accepted, c.lost_after_heal
                )),
                cut.as_ref().map_or("-".into(), |c| format!(
                    "{} (first after {:.0} ms)",
                    c.refused,
                    c.refused_after_ms.unwrap_or(f64::NAN)
                )),
                r.restore.took_ms,
            ));
        }
    }
    println!("| down-after ms | failure | failover announced ms | write outage ms | acked lost | cut-off primary accepted | cut-off primary refused | restore ms |");
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
