//! Sentinel mode with real redis-server processes and real Redis Sentinel (redis-server
//! --sentinel, what Debian's redis-sentinel runs) on loopback 127.140.Z.H, ports 9800+ (data)
//! and 9900+ (sentinels): create, lose the primary's zone, Sentinel fails over without losing a
//! WAIT-acknowledged write, repair brings the zone back as replicas, the planned primary is
//! put back with SENTINEL FAILOVER, the password is rotated, and destroy leaves nothing.

mod common;

use std::time::{Duration, Instant};

use common::Fixture;
use redisha_cluster::sentinel::{SentinelOperator, SentinelSettings, SentinelState};
use redisha_cluster::{Driver, NodeConfig, Operator, Password, ProcessState};
use redisha_planner::{HostSpec, Request, SentinelSpec, Spread, ZoneSpec};

const OCTET: u8 = 140;
const BASE_PORT: u16 = 9800;
const KEYS: usize = 300;

fn request() -> Request {
    let zones = (1..=3)
        .map(|z| ZoneSpec {
            name: format!("zone-{z}"),
            hosts: (1..=2)
                .map(|h| HostSpec {
                    name: format!("z{z}h{h}"),
                    memory_mb: 1024,
                    max_nodes: 1,
                    rack: None,
                })
                .collect(),
        })
        .collect();
    Request {
        cluster: redisha_planner::ClusterSpec {
            shards: 1,
            replicas: 2,
            node_memory_mb: 256,
            spread: Spread::Zone,
            survive: Default::default(),
        },
        zones,
        partitions: Vec::new(),
        sentinel: Some(SentinelSpec::default()),
    }
}

fn settings() -> SentinelSettings {
    SentinelSettings {
        master_name: "orders".into(),
        quorum: 2,
        // Short, so the test's failover is quick; production keeps 5 s.
        down_after_ms: 1000,
        failover_timeout_ms: 10_000,
        ..SentinelSettings::default()
    }
}

fn config(password: &str) -> NodeConfig {
    NodeConfig {
        password: Some(Password::new(password)),
        ..NodeConfig::default()
    }
}

async fn client(
    address: &str,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let url = format!("redis://:{password}@{address}/");
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

/// `SENTINEL FAILOVER` sent to a sentinel with `password` (none: unauthenticated); the
/// error text when refused.
async fn sentinel_failover(address: &str, password: Option<&str>) -> Result<(), String> {
    let url = match password {
        Some(p) => format!("redis://:{p}@{address}/"),
        None => format!("redis://{address}/"),
    };
    let mut con = redis::Client::open(url)
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg("orders")
        .query_async::<()>(&mut con)
        .await
        .map_err(|e| e.to_string())
}

async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mode_fails_over_a_lost_zone_repairs_restores_and_rotates() {
    let fx = Fixture::new(OCTET, BASE_PORT);
    let req = request();
    let plan = redisha_planner::plan(&req, None).expect("plan");
    let sentinel_plan = plan.sentinel.clone().expect("sentinel plan");
    assert!(sentinel_plan.report.survives_any_zone);

    let op = Operator::with_options(&fx.driver, config("first-Secret-1"), common::options());
    let sop = SentinelOperator::new(op, settings(), "00000000000000aa");
    let mut state = SentinelState::default();
    sop.create(&req, &plan.placement, &sentinel_plan.sentinels, &mut state)
        .await
        .expect("create");
    let planned = state.planned_primary().cloned().expect("planned primary");
    let view = sop.observe(&state).await;
    assert_eq!(view.primary.as_deref(), Some(planned.address().as_str()));
    assert_eq!(view.sentinels.len(), 3);
    assert!(view
        .sentinels
        .iter()
        .all(|s| s.up && s.replicas_seen == 2 && s.peers_seen == 2));
    // The sentinels have a password (the data nodes' one unless told otherwise): no one
    // without it reconfigures them.
    for m in &state.sentinels {
        let refused = sentinel_failover(&m.address(), None).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("NOAUTH")),
            "{} takes SENTINEL FAILOVER without a password: {refused:?}",
            m.handle.name
        );
    }

    // Writes acknowledged by a replica (WAIT 1) before the primary's zone goes.
    let mut con = client(&planned.address(), "first-Secret-1")
        .await
        .expect("connect");
    let mut acked = Vec::new();
    for i in 0..KEYS {
        let key = format!("k{i}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(i)
            .query_async(&mut con)
            .await
            .expect("SET");
        let n: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(1000)
            .query_async(&mut con)
            .await
            .expect("WAIT");
        if n >= 1 {
            acked.push(key);
        }
    }
    assert!(
        acked.len() > KEYS / 2,
        "only {} of {KEYS} acknowledged",
        acked.len()
    );

    // The primary's whole zone dies: its data node and its sentinel (SIGKILL by pid).
    let zone = planned.zone.clone();
    let mut killed = Vec::new();
    for m in state
        .data
        .iter()
        .chain(state.sentinels.iter())
        .filter(|m| m.zone == zone)
    {
        let ProcessState::Running { pid: Some(pid) } =
            fx.driver.inspect_node(&m.handle).await.unwrap()
        else {
            panic!("{} is not running", m.handle.name);
        };
        // SAFETY-free: kill(2) on a pid we started and just checked runs our config file.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        killed.push(m.handle.name.clone());
    }
    assert_eq!(
        killed.len(),
        2,
        "the primary's zone holds one data node and one sentinel"
    );
    let new_primary = wait_for(
        "the sentinels to promote a replica",
        Duration::from_secs(40),
        || async {
            let v = sop.observe(&state).await;
            v.primary.filter(|p| *p != planned.address())
        },
    )
    .await;
    let survivor = state.data_node(&new_primary).expect("a data node").clone();
    assert_ne!(survivor.zone, zone);

    // Every acknowledged write is on the new primary.
    let mut con = client(&new_primary, "first-Secret-1")
        .await
        .expect("connect");
    let mut lost = 0;
    for key in &acked {
        let v: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("GET");
        if v.is_none() {
            lost += 1;
        }
    }
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged writes lost",
        acked.len()
    );

    // Repair: the zone's processes come back; the old primary as a replica of the new one.
    let report = sop.repair(&mut state).await.expect("repair");
    assert_eq!(report.actions.len(), 2, "{:?}", report.actions);
    let view = sop.observe(&state).await;
    assert_eq!(view.primary.as_deref(), Some(new_primary.as_str()));
    let old = view
        .data
        .iter()
        .find(|d| d.name == planned.handle.name)
        .unwrap();
    assert_eq!(old.role, "replica");
    assert!(old.link_up);

    // The planned primary is put back by Sentinel itself.
    assert!(sop.restore_primary(&state).await.expect("restore"));
    let view = sop.observe(&state).await;
    assert_eq!(view.primary.as_deref(), Some(planned.address().as_str()));
    assert!(
        !sop.restore_primary(&state).await.expect("restore again"),
        "nothing to do"
    );

    // Password rotation: the new one works everywhere, the old one nowhere, and Sentinel still
    // logs in (it names the primary and sees both replicas).
    let op = Operator::with_options(&fx.driver, config("second-Secret-2"), common::options());
    let mut sop = SentinelOperator::new(op, settings(), "00000000000000aa")
        .with_sentinel_password(Some(Password::new("sentinel-Secret-3")));
    sop.also_accept_on_sentinels([Some(Password::new("first-Secret-1"))]);
    sop.rotate_password(&state, Some(Password::new("first-Secret-1")))
        .await
        .expect("rotate");
    sop.rotate_sentinel_password(&state)
        .await
        .expect("rotate the sentinels' password");
    for m in &state.data {
        assert!(
            client(&m.address(), "second-Secret-2").await.is_ok(),
            "{}",
            m.handle.name
        );
        let mut c = client(&m.address(), "first-Secret-1").await;
        if let Ok(c) = c.as_mut() {
            let r: redis::RedisResult<String> = redis::cmd("PING").query_async(c).await;
            assert!(
                r.is_err(),
                "{} still accepts the old password",
                m.handle.name
            );
        }
        let conf = std::fs::read_to_string(m.handle.config_file.as_ref().unwrap()).unwrap();
        assert!(conf.contains("second-Secret-2") && !conf.contains("first-Secret-1"));
    }
    sop.wait_sentinels_agree(&state)
        .await
        .expect("sentinels after rotation");
    for m in &state.sentinels {
        let conf = std::fs::read_to_string(m.handle.config_file.as_ref().unwrap()).unwrap();
        assert!(
            !conf.contains("first-Secret-1"),
            "{} keeps the old auth-pass or password",
            m.handle.name
        );
        for old in [None, Some("first-Secret-1"), Some("second-Secret-2")] {
            let refused = sentinel_failover(&m.address(), old).await;
            assert!(
                refused.is_err(),
                "{} takes SENTINEL FAILOVER with {old:?}",
                m.handle.name
            );
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(m.handle.config_file.as_ref().unwrap())
                .unwrap()
                .permissions(),
        );
        assert_eq!(
            mode & 0o077,
            0,
            "{} config is readable by others",
            m.handle.name
        );
    }

    // The sentinels still reach each other: restarted from the files the rotation left
    // (so every link between them logs in again, with the new password), they elect a leader
    // and fail over a killed primary.
    for m in &state.sentinels {
        fx.driver
            .stop_node(&m.handle)
            .await
            .expect("stop a sentinel");
    }
    let restarted = sop.repair(&mut state).await.expect("restart the sentinels");
    assert_eq!(restarted.actions.len(), 3, "{:?}", restarted.actions);
    let ProcessState::Running { pid: Some(pid) } =
        fx.driver.inspect_node(&planned.handle).await.unwrap()
    else {
        panic!("the primary is not running");
    };
    // SAFETY-free: kill(2) on a pid we started and just checked runs our config file.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for(
        "the sentinels to fail over after the rotation",
        Duration::from_secs(40),
        || async {
            let v = sop.observe(&state).await;
            v.primary.filter(|p| *p != planned.address())
        },
    )
    .await;

    // Destroy: every process gone (by pid), every directory removed.
    let handles: Vec<_> = state
        .data
        .iter()
        .chain(state.sentinels.iter())
        .map(|m| m.handle.clone())
        .collect();
    sop.destroy(&mut state).await.expect("destroy");
    for h in &handles {
        assert_eq!(
            fx.driver.inspect_node(h).await.unwrap(),
            ProcessState::Stopped
        );
        assert!(
            !h.data_dir.as_ref().unwrap().exists(),
            "{} dir left",
            h.name
        );
    }
}
