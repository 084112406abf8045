//! Slots left half-moved by a provider killed mid-migration. Each kill point of
//! `migrate_slots` is reproduced by issuing the commands it had sent when it died (the cluster
//! is then exactly as the kill left it); `finish_open_slots` must finish every one with every
//! key readable and no mark left, roll back only where that loses nothing, and say what the
//! user must do where neither is safe.

mod common;

use std::ops::RangeInclusive;
use std::time::Duration;

use common::*;
use redisha_cluster::conn::{parse_cluster_nodes, NodeLine};
use redisha_cluster::migrate_exec::key_slot;
use redisha_cluster::open_slots::OpenSlotsAction;
use redisha_cluster::{ClusterState, NodeConfig, Operator};
use redisha_planner::SlotRange;

const KEYS: usize = 6_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kill_point_is_found_and_finished_then_the_migration_resumes() {
    let fx = Fixture::new(61, 8100);
    tokio::time::timeout(Duration::from_secs(300), kill_points(&fx))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolls_back_only_what_the_gone_destination_holds_no_key_of() {
    let fx = Fixture::new(62, 8200);
    tokio::time::timeout(Duration::from_secs(300), rollback(&fx))
        .await
        .expect("test timed out");
}

async fn myself(state: &ClusterState, name: &str) -> NodeLine {
    let mut con = node(state, name).await;
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut con)
        .await
        .expect("CLUSTER NODES");
    parse_cluster_nodes(&text)
        .expect("parse")
        .into_iter()
        .find(NodeLine::is_myself)
        .expect("myself line")
}

async fn setslot(state: &ClusterState, on: &str, slots: RangeInclusive<u16>, how: &str, id: &str) {
    let mut con = node(state, on).await;
    let mut pipe = redis::pipe();
    for s in slots {
        let cmd = pipe.cmd("CLUSTER").arg("SETSLOT").arg(s).arg(how);
        if how != "STABLE" {
            cmd.arg(id);
        }
        cmd.ignore();
    }
    let () = pipe
        .query_async(&mut con)
        .await
        .unwrap_or_else(|e| panic!("SETSLOT {how} on {on}: {e}"));
}

/// The test keys (`key(0..KEYS)`) in `slots`.
fn keys_in(slots: RangeInclusive<u16>) -> Vec<String> {
    (0..KEYS)
        .map(key)
        .filter(|k| slots.contains(&key_slot(k.as_bytes())))
        .collect()
}

/// MIGRATEs `keys` from `from` to `to`, as a migration does.
async fn migrate_keys(state: &ClusterState, from: &str, to: &str, keys: &[String]) {
    let dst = state.node(to).expect("dst");
    let mut con = node(state, from).await;
    for k in keys {
        let _: redis::Value = redis::cmd("MIGRATE")
            .arg(&dst.handle.ip)
            .arg(dst.handle.port)
            .arg(k)
            .arg(0)
            .arg(5000)
            .query_async(&mut con)
            .await
            .unwrap_or_else(|e| panic!("MIGRATE {k}: {e}"));
    }
}

fn id(state: &ClusterState, name: &str) -> String {
    state.node(name).expect("node").node_id.clone()
}

fn owns(line: &NodeLine, slot: u16) -> bool {
    line.slots.iter().any(|r| r.start <= slot && slot <= r.end)
}

async fn kill_points(fx: &Fixture) {
    let op = Operator::with_options(&fx.driver, NodeConfig::default(), options());
    let plan = placement(3, 0);
    let mut state = ClusterState::default();
    op.create(&fx.request, &plan, &mut state)
        .await
        .expect("create");
    let con = cluster_client(&state, None).await;
    write_keys(&con, KEYS).await;
    let (s0, s1) = (id(&state, "s0-m"), id(&state, "s1-m"));
    assert!(op.open_slots(&state).await.expect("open slots").is_empty());

    // 0-99: killed between the IMPORTING pipeline and the MIGRATING one.
    setslot(&state, "s1-m", 0..=99, "IMPORTING", &s0).await;
    // 100-199: killed during the key moves: half of each slot's keys moved.
    setslot(&state, "s1-m", 100..=199, "IMPORTING", &s0).await;
    setslot(&state, "s0-m", 100..=199, "MIGRATING", &s1).await;
    let half: Vec<String> = keys_in(100..=199).into_iter().step_by(2).collect();
    assert!(half.len() > 10, "too few keys in 100-199");
    migrate_keys(&state, "s0-m", "s1-m", &half).await;
    // 200-299: killed between SETSLOT NODE on the destination and on the source.
    setslot(&state, "s1-m", 200..=299, "IMPORTING", &s0).await;
    setslot(&state, "s0-m", 200..=299, "MIGRATING", &s1).await;
    migrate_keys(&state, "s0-m", "s1-m", &keys_in(200..=299)).await;
    setslot(&state, "s1-m", 200..=299, "NODE", &s1).await;
    // 300-349: keys partly moved, then the destination lost its mark (a restart of an
    // older redis, a manual STABLE).
    setslot(&state, "s1-m", 300..=349, "IMPORTING", &s0).await;
    setslot(&state, "s0-m", 300..=349, "MIGRATING", &s1).await;
    let some: Vec<String> = keys_in(300..=349).into_iter().step_by(3).collect();
    migrate_keys(&state, "s0-m", "s1-m", &some).await;
    setslot(&state, "s1-m", 300..=349, "STABLE", "").await;
    // 350-399: keys partly moved, then the source lost its mark.
    setslot(&state, "s1-m", 350..=399, "IMPORTING", &s0).await;
    setslot(&state, "s0-m", 350..=399, "MIGRATING", &s1).await;
    let some: Vec<String> = keys_in(350..=399).into_iter().step_by(3).collect();
    migrate_keys(&state, "s0-m", "s1-m", &some).await;
    setslot(&state, "s0-m", 350..=399, "STABLE", "").await;

    let open = op.open_slots(&state).await.expect("open slots");
    let found: Vec<(SlotRange, &str, &str, &OpenSlotsAction)> = open
        .iter()
        .map(|o| {
            (
                o.slots,
                o.source.as_str(),
                o.destination.as_str(),
                &o.action,
            )
        })
        .collect();
    let r = |start, end| SlotRange { start, end };
    assert_eq!(
        found,
        vec![
            (r(0, 199), "s0-m", "s1-m", &OpenSlotsAction::Finish),
            (r(200, 299), "s0-m", "s1-m", &OpenSlotsAction::Clear),
            (r(300, 399), "s0-m", "s1-m", &OpenSlotsAction::Finish),
        ],
        "{open:#?}"
    );
    assert_eq!(
        open[0].to_string(),
        "slots 0-199 half-moved from s0-m to s1-m: will finish"
    );

    let lines = op.finish_open_slots(&state).await.expect("finish");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("finished slots 0-199"), "{lines:?}");
    assert!(op.open_slots(&state).await.expect("open slots").is_empty());
    for name in ["s0-m", "s1-m", "s2-m"] {
        let me = myself(&state, name).await;
        assert!(
            me.migrating.is_empty() && me.importing.is_empty(),
            "{name} keeps marks: {me:?}"
        );
    }
    let s1_me = myself(&state, "s1-m").await;
    let s0_me = myself(&state, "s0-m").await;
    assert!((0..=399).all(|s| owns(&s1_me, s) && !owns(&s0_me, s)));
    let missing = missing_keys(&state, None, KEYS).await;
    assert!(
        missing.is_empty(),
        "{} keys lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Idempotent: nothing left to do.
    assert!(op
        .finish_open_slots(&state)
        .await
        .expect("again")
        .is_empty());

    // The interrupted update runs again: the whole step, of which 0-399 are done.
    op.migrate_slots(&state, "s0-m", "s1-m", r(0, 5460))
        .await
        .expect("resumed migration");
    let s0_me = myself(&state, "s0-m").await;
    assert_eq!(s0_me.slot_count(), 0, "{s0_me:?}");
    assert_eq!(myself(&state, "s1-m").await.slot_count(), 5461 * 2);
    let missing = missing_keys(&state, None, KEYS).await;
    assert!(missing.is_empty(), "{} keys lost resuming", missing.len());
}

async fn rollback(fx: &Fixture) {
    let mut config = NodeConfig::default();
    // No automatic failover while the destination is down: the test decides what is gone.
    config
        .redis_config
        .insert("cluster-node-timeout".into(), "60000".into());
    let op = Operator::with_options(&fx.driver, config, options());
    let plan = placement(3, 1);
    let mut state = ClusterState::default();
    op.create(&fx.request, &plan, &mut state)
        .await
        .expect("create");
    let mut con = cluster_client(&state, None).await;
    write_keys(&con, KEYS).await;
    // Every slot of 400-419 holds keys.
    for slot in 400..=419 {
        for i in 0..3 {
            let (k, v) = slot_key(slot, i);
            let () = redis::AsyncCommands::set(&mut con, k, v)
                .await
                .expect("SET");
        }
    }
    let (s0, s1) = (id(&state, "s0-m"), id(&state, "s1-m"));

    // 400-409: both marks set, no key moved yet. 410-419: every key moved to s1-m.
    setslot(&state, "s1-m", 400..=419, "IMPORTING", &s0).await;
    setslot(&state, "s0-m", 400..=419, "MIGRATING", &s1).await;
    let mut moved = keys_in(410..=419);
    moved.extend((410..=419).flat_map(|s| (0..3).map(move |i| slot_key(s, i).0)));
    migrate_keys(&state, "s0-m", "s1-m", &moved).await;
    let mut s1_con = node(&state, "s1-m").await;
    let acked: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query_async(&mut s1_con)
        .await
        .expect("WAIT");
    assert_eq!(acked, 1, "the replica did not get the moved keys");
    // The destination dies.
    kill9(state.node("s1-m").expect("s1-m").handle.pid.expect("pid"));

    // A state that no longer knows the destination: its replica holds keys of 410-419 and
    // nobody can tell whether the dead node held more, so the user must decide.
    let mut forgetful = state.clone();
    forgetful.nodes.retain(|n| n.name != "s1-m");
    let open = op.open_slots(&forgetful).await.expect("open slots");
    assert!(
        matches!(open.as_slice(), [a, b]
            if a.slots == SlotRange { start: 400, end: 409 }
            && matches!(a.action, OpenSlotsAction::RollBack { .. })
            && b.slots == SlotRange { start: 410, end: 419 }
            && matches!(b.action, OpenSlotsAction::Stuck { .. })),
        "{open:#?}"
    );
    let err = op
        .finish_open_slots(&forgetful)
        .await
        .expect_err("410-419 cannot be decided");
    let msg = err.to_string();
    assert!(
        msg.contains("410-419") && msg.contains("CLUSTER SETSLOT"),
        "{msg}"
    );
    assert!(msg.contains("rolled back slots 400-409"), "{msg}");

    // With the full state: 410-419 wait for s1-m to come back, nothing else is left.
    let open = op.open_slots(&state).await.expect("open slots");
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(
        open[0].slots,
        SlotRange {
            start: 410,
            end: 419
        }
    );
    assert!(
        matches!(open[0].action, OpenSlotsAction::Wait { .. }),
        "{open:#?}"
    );
    let lines = op.finish_open_slots(&state).await.expect("finish");
    assert!(
        lines.iter().any(|l| l.starts_with("left slots 410-419")),
        "{lines:?}"
    );

    // Rolled back: s0-m owns 400-409 without a mark and serves every key of them.
    let me = myself(&state, "s0-m").await;
    assert!((400..=419).all(|s| owns(&me, s)));
    assert!(me.migrating.iter().all(|m| (410..=419).contains(&m.slot)));
    assert_eq!(me.migrating.len(), 10);
    let mut s0_con = node(&state, "s0-m").await;
    for (k, v) in (400..=409).flat_map(|s| (0..3).map(move |i| slot_key(s, i))) {
        let got: Option<String> = redis::cmd("GET")
            .arg(&k)
            .query_async(&mut s0_con)
            .await
            .expect("GET on s0-m");
        assert_eq!(got, Some(v), "{k}");
    }
    for k in keys_in(400..=409) {
        let v: Option<String> = redis::cmd("GET")
            .arg(&k)
            .query_async(&mut s0_con)
            .await
            .expect("GET on s0-m");
        let i: usize = k.trim_start_matches("key:").parse().expect("index");
        assert_eq!(v.as_deref(), Some(format!("value-{i}").as_str()), "{k}");
    }
    // The keys moved before the kill are still there, on the dead node's replica (which
    // redirects keyed commands for slots its master does not own: list them instead).
    let mut r_con = node(&state, "s1-r0").await;
    let mut held: Vec<String> = Vec::new();
    for slot in 410..=419 {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(1000)
            .query_async(&mut r_con)
            .await
            .expect("GETKEYSINSLOT");
        held.extend(keys);
    }
    held.sort();
    moved.sort();
    assert_eq!(held, moved, "keys moved before the kill are lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_migration_stops_between_chunks_with_no_slot_open() {
    let fx = Fixture::new(65, 8500);
    tokio::time::timeout(Duration::from_secs(300), cancelled(&fx))
        .await
        .expect("test timed out");
}

async fn cancelled(fx: &Fixture) {
    // Stage marks with times: shown when the test fails, to tell where it got stuck.
    let t0 = std::time::Instant::now();
    let plan = placement(3, 0);
    let mut state = ClusterState::default();
    Operator::with_options(&fx.driver, NodeConfig::default(), options())
        .create(&fx.request, &plan, &mut state)
        .await
        .expect("create");
    eprintln!("stage: created at {:?}", t0.elapsed());
    let con = cluster_client(&state, None).await;
    write_keys(&con, KEYS).await;
    eprintln!("stage: wrote keys at {:?}", t0.elapsed());

    // The user pressed Ctrl-C before the move: it stops at the first chunk boundary.
    let stopping = options();
    stopping.cancel.cancel();
    let op = Operator::with_options(&fx.driver, NodeConfig::default(), stopping);
    let err = op
        .migrate_slots(
            &state,
            "s0-m",
            "s1-m",
            SlotRange {
                start: 0,
                end: 5460,
            },
        )
        .await
        .expect_err("cancelled");
    assert!(
        matches!(
            err,
            redisha_cluster::ClusterError::Cancelled {
                at: "migrate.slot_chunk"
            }
        ),
        "{err}"
    );
    eprintln!("stage: cancelled at {:?}", t0.elapsed());
    // A consistent point: no slot open anywhere, the first chunk moved, the rest not.
    assert!(op.open_slots(&state).await.expect("open slots").is_empty());
    let s0_me = myself(&state, "s0-m").await;
    let s1_me = myself(&state, "s1-m").await;
    let moved = (0..=5460).filter(|s| owns(&s1_me, *s)).count();
    assert!(moved > 0 && moved < 5461, "{moved} slots moved");
    assert!((0..=5460).all(|s| owns(&s0_me, s) != owns(&s1_me, s)));
    eprintln!("stage: checked marks at {:?}", t0.elapsed());
    let missing = missing_keys(&state, None, KEYS).await;
    assert!(missing.is_empty(), "{} keys lost", missing.len());
    eprintln!("stage: read keys at {:?}", t0.elapsed());

    // The next apply resumes and completes the move.
    let op = Operator::with_options(&fx.driver, NodeConfig::default(), options());
    op.migrate_slots(
        &state,
        "s0-m",
        "s1-m",
        SlotRange {
            start: 0,
            end: 5460,
        },
    )
    .await
    .expect("resumed");
    assert_eq!(myself(&state, "s0-m").await.slot_count(), 0);
    let missing = missing_keys(&state, None, KEYS).await;
    assert!(missing.is_empty(), "{} keys lost resuming", missing.len());
}
