//! Migration that fits real data: MIGRATE batches bounded by bytes, and big keys (hash, sorted
//! set, set, list, string) copied piece by piece, one of them written to all along, without
//! blocking a node long enough for the cluster to fail it over (checked through every node's
//! role and config epoch, with a short cluster-node-timeout).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use redis::AsyncCommands;
use redisha_cluster::conn::{parse_cluster_nodes, parse_info, NodeLine};
use redisha_cluster::migrate_exec::{key_slot, partial_key};
use redisha_cluster::{ClusterState, NodeConfig, Operator, Options};
use redisha_planner::SlotRange;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_bounded_by_bytes() {
    let fx = Fixture::new(63, 8300);
    tokio::time::timeout(Duration::from_secs(300), byte_batches(&fx))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_keys_move_piecewise_without_a_failover() {
    let fx = Fixture::new(64, 8400);
    tokio::time::timeout(Duration::from_secs(600), big_keys(&fx))
        .await
        .expect("test timed out");
}

async fn command_calls(state: &ClusterState, name: &str) -> HashMap<String, u64> {
    let mut con = node(state, name).await;
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut con)
        .await
        .expect("INFO");
    parse_info(&text)
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("cmdstat_")?.to_string();
            let calls = v.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name, calls.parse().ok()?))
        })
        .collect()
}

/// A hash tag whose slot master `s0-m` of a 3-shard placement serves (0-5460).
fn tag_on_s0(prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|t| key_slot(t.as_bytes()) <= 5460)
        .expect("a tag")
}

async fn byte_batches(fx: &Fixture) {
    let options = Options {
        migrate_batch_bytes: 256 << 10,
        ..options()
    };
    let op = Operator::with_options(&fx.driver, NodeConfig::default(), options);
    let plan = placement(3, 0);
    let mut state = ClusterState::default();
    op.create(&fx.request, &plan, &mut state)
        .await
        .expect("create");
    let tag = tag_on_s0("blob");
    let slot = key_slot(tag.as_bytes());
    let mut con = cluster_client(&state, None).await;
    const BLOBS: usize = 40;
    for i in 0..BLOBS {
        let value: Vec<u8> = (0..64 * 1024).map(|b| (b * 7 + i) as u8).collect();
        let () = con
            .set(format!("{{{tag}}}:blob:{i}"), value)
            .await
            .expect("SET");
    }
    let before = command_calls(&state, "s0-m").await;
    op.migrate_slots(
        &state,
        "s0-m",
        "s1-m",
        SlotRange {
            start: slot,
            end: slot,
        },
    )
    .await
    .expect("migrate");
    let after = command_calls(&state, "s0-m").await;
    let migrates =
        after.get("migrate").copied().unwrap_or(0) - before.get("migrate").copied().unwrap_or(0);
    // 40 values of 64 KB are 2.5 MB: at most 256 KB per MIGRATE means at least 10 calls
    // (bounded by keys alone, 1,000 per call, it would be one).
    assert!(
        migrates >= 10,
        "{migrates} MIGRATE calls for 2.5 MB in 256 KB batches"
    );
    let mut con = cluster_client(&state, None).await;
    for i in 0..BLOBS {
        let v: Vec<u8> = con.get(format!("{{{tag}}}:blob:{i}")).await.expect("GET");
        let want: Vec<u8> = (0..64 * 1024).map(|b| (b * 7 + i) as u8).collect();
        assert!(v == want, "blob {i} differs after the move");
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    role_master: bool,
    epoch: u64,
}

/// Every node's own view of its role and config epoch.
async fn roles_and_epochs(state: &ClusterState) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    for n in &state.nodes {
        let mut con = node(state, &n.name).await;
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut con)
            .await
            .expect("CLUSTER NODES");
        let me = parse_cluster_nodes(&text)
            .expect("parse")
            .into_iter()
            .find(NodeLine::is_myself)
            .expect("myself");
        out.insert(
            n.name.clone(),
            Seen {
                role_master: me.is_master(),
                epoch: me.config_epoch,
            },
        );
    }
    out
}

async fn fill(
    con: &mut redis::aio::MultiplexedConnection,
    cmd: &str,
    key: &str,
    n: usize,
    item: impl Fn(usize) -> Vec<Vec<u8>>,
) {
    for start in (0..n).step_by(1000) {
        let mut c = redis::cmd(cmd);
        c.arg(key);
        for i in start..(start + 1000).min(n) {
            for part in item(i) {
                c.arg(part);
            }
        }
        let _: redis::Value = c.query_async(con).await.expect("fill");
    }
}

const ELEMENTS: usize = 200_000;
const STREAM_ENTRIES: usize = 30_000;

async fn big_keys(fx: &Fixture) {
    let mut config = NodeConfig::default();
    // A short node timeout: a node blocked for 1.5 s is flagged failing and its replica
    // takes over within about 3 s, which this test would see.
    config
        .redis_config
        .insert("cluster-node-timeout".into(), "1500".into());
    let options = Options {
        migrate_big_key_bytes: 1 << 20,
        ..options()
    };
    let op = Operator::with_options(&fx.driver, config, options);
    let plan = placement(3, 1);
    let mut state = ClusterState::default();
    op.create(&fx.request, &plan, &mut state)
        .await
        .expect("create");
    let tag = tag_on_s0("big");
    let slot = key_slot(tag.as_bytes());
    let k = |kind: &str| format!("{{{tag}}}:{kind}");
    let mut s0 = node(&state, "s0-m").await;
    // Built in pieces so that building them blocks nothing either.
    let value = |i: usize| format!("{i:0>60}").into_bytes();
    fill(&mut s0, "HSET", &k("hash"), ELEMENTS, |i| {
        vec![format!("f{i}").into_bytes(), value(i)]
    })
    .await;
    fill(&mut s0, "ZADD", &k("zset"), ELEMENTS, |i| {
        vec![
            format!("{}.25", i % 977).into_bytes(),
            format!("m{i}").into_bytes(),
        ]
    })
    .await;
    fill(&mut s0, "SADD", &k("set"), ELEMENTS, |i| vec![value(i)]).await;
    fill(&mut s0, "RPUSH", &k("list"), ELEMENTS, |i| vec![value(i)]).await;
    // A stream has no piecewise copy: it must still arrive, by one MIGRATE.
    for start in (0..STREAM_ENTRIES).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 1000).min(STREAM_ENTRIES) {
            pipe.cmd("XADD")
                .arg(k("stream"))
                .arg("*")
                .arg("n")
                .arg(i)
                .arg("v")
                .arg(value(i))
                .ignore();
        }
        let () = pipe.query_async(&mut s0).await.expect("XADD");
    }
    let stream_size: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(k("stream"))
        .query_async(&mut s0)
        .await
        .expect("MEMORY USAGE");
    assert!(
        stream_size > 1 << 20,
        "the stream is only {stream_size} bytes"
    );
    let string: Vec<u8> = (0..3 << 20).map(|b: usize| (b % 251) as u8).collect();
    let () = s0.set(k("string"), &string).await.expect("SET string");
    let () = s0.pexpire(k("hash"), 3_600_000).await.expect("PEXPIRE");
    let size: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(k("hash"))
        .query_async(&mut s0)
        .await
        .expect("MEMORY USAGE");
    assert!(size > 8 << 20, "the hash is only {size} bytes");
    let hash_before: HashMap<String, String> = s0.hgetall(k("hash")).await.expect("HGETALL");
    let zset_before: Vec<(String, f64)> = s0
        .zrange_withscores(k("zset"), 0, -1)
        .await
        .expect("ZRANGE");
    let list_before: Vec<String> = s0.lrange(k("list"), 0, -1).await.expect("LRANGE");
    let mut set_before: Vec<String> = s0.smembers(k("set")).await.expect("SMEMBERS");
    set_before.sort();
    let roles_before = roles_and_epochs(&state).await;
    let calls_before = command_calls(&state, "s0-m").await;

    // A client writes into the hash all along: every copy but the last sees it changed.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut con = cluster_client(&state, None).await;
        let key = k("hash");
        tokio::spawn(async move {
            let mut written = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let r: redis::RedisResult<()> =
                    con.hset(&key, format!("w{written}"), written).await;
                r.expect("HSET during the migration");
                written += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            written
        })
    };
    op.migrate_slots(
        &state,
        "s0-m",
        "s1-m",
        SlotRange {
            start: slot,
            end: slot,
        },
    )
    .await
    .expect("migrate");
    stop.store(true, Ordering::SeqCst);
    let written = writer.await.expect("writer");
    assert!(written > 0);

    // No failover: every node kept its role; epochs only grew on the receiving shard (the
    // bump of SETSLOT NODE), and a failover would have given some replica a new epoch.
    let roles_after = roles_and_epochs(&state).await;
    for (name, before) in &roles_before {
        let after = &roles_after[name];
        assert_eq!(after.role_master, before.role_master, "{name} changed role");
        if !name.starts_with("s1-") {
            assert_eq!(after.epoch, before.epoch, "{name}'s config epoch changed");
        }
    }
    // The piecewise copy ran (scans and ranges on the source), not one MIGRATE per key.
    let calls_after = command_calls(&state, "s0-m").await;
    for cmd in [
        "hscan",
        "zrange",
        "sscan",
        "lrange",
        "getrange",
        "client|pause",
    ] {
        let n = calls_after.get(cmd).copied().unwrap_or(0)
            - calls_before.get(cmd).copied().unwrap_or(0);
        assert!(n > 0, "no {cmd} on the source: {calls_after:?}");
    }

    // Everything arrived, with the writer's writes and the hash's expiry.
    let mut s1 = node(&state, "s1-m").await;
    let mut hash_after: HashMap<String, String> = s1.hgetall(k("hash")).await.expect("HGETALL");
    for i in 0..written {
        assert_eq!(
            hash_after.remove(&format!("w{i}")),
            Some(i.to_string()),
            "write w{i} lost"
        );
    }
    assert!(hash_after == hash_before, "the hash differs after the move");
    let ttl: i64 = s1.pttl(k("hash")).await.expect("PTTL");
    assert!(ttl > 0 && ttl <= 3_600_000, "expiry lost: {ttl}");
    let zset_after: Vec<(String, f64)> = s1
        .zrange_withscores(k("zset"), 0, -1)
        .await
        .expect("ZRANGE");
    assert!(zset_after == zset_before, "the sorted set differs");
    let list_after: Vec<String> = s1.lrange(k("list"), 0, -1).await.expect("LRANGE");
    assert!(list_after == list_before, "the list differs");
    let mut set_after: Vec<String> = s1.smembers(k("set")).await.expect("SMEMBERS");
    set_after.sort();
    assert!(set_after == set_before, "the set differs");
    let stream_len: usize = redis::cmd("XLEN")
        .arg(k("stream"))
        .query_async(&mut s1)
        .await
        .expect("XLEN");
    assert_eq!(stream_len, STREAM_ENTRIES, "the stream differs");
    let string_after: Vec<u8> = s1.get(k("string")).await.expect("GET");
    assert!(string_after == string, "the string differs");
    // Nothing left on the source, no scratch key on the destination.
    let left: u64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(&mut s0)
        .await
        .expect("COUNTKEYSINSLOT");
    assert_eq!(left, 0);
    let scratch: u64 = s1.exists(partial_key(slot)).await.expect("EXISTS");
    assert_eq!(scratch, 0, "scratch key left");
}
