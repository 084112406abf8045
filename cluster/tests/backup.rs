//! Backups and restores with real redis-server processes: 200,000 keys of every type with
//! TTLs, backed up while a writer runs, the cluster destroyed, restored into 3 shards (each
//! master seeded with its snapshot) and into 5 (keys loaded and routed by slot), and the
//! full dump compared. A damaged backup is refused before any node starts; retention prunes.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use redis::aio::MultiplexedConnection;
use redisha_cluster::backup::restore::{create_restored, stage, Route};
use redisha_cluster::backup::{take_backup, BackupRequest, DirStore, Store};
use redisha_cluster::migrate_exec::key_slot;
use redisha_cluster::{ClusterState, LocalDriver, NodeConfig, Operator, Password};

const KEYS: usize = 200_000;

fn config() -> NodeConfig {
    NodeConfig {
        password: Some(Password::new("backup-test-pw")),
        ..NodeConfig::default()
    }
}

fn cluster_id(n: u8) -> String {
    format!("b0000000000000{n:02x}")
}

async fn connect(addr: &str) -> MultiplexedConnection {
    redis::Client::open(format!("redis://:backup-test-pw@{addr}/"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// The masters of a state and the slot owner table.
async fn masters(state: &ClusterState) -> (Vec<MultiplexedConnection>, Vec<usize>) {
    let mut cons = Vec::new();
    let mut owner = vec![0usize; 16384];
    for n in state.nodes.iter().filter(|n| !n.slots.is_empty()) {
        for r in &n.slots {
            for s in r.start..=r.end {
                owner[usize::from(s)] = cons.len();
            }
        }
        cons.push(connect(&n.address()).await);
    }
    (cons, owner)
}

/// Key `i`: six types in turn, a third of them with a TTL of about an hour.
fn write_cmds(pipe: &mut redis::Pipeline, i: usize) {
    let k = format!("k:{i}");
    match i % 6 {
        0 => pipe.cmd("SET").arg(&k).arg(format!("v{i}")),
        1 => pipe.cmd("HSET").arg(&k).arg("a").arg(i).arg("b").arg("x"),
        2 => pipe.cmd("RPUSH").arg(&k).arg(i).arg("y").arg(i + 1),
        3 => pipe.cmd("SADD").arg(&k).arg(i).arg("z"),
        4 => pipe.cmd("ZADD").arg(&k).arg(1.5).arg(i).arg(2).arg("w"),
        _ => pipe.cmd("XADD").arg(&k).arg("*").arg("f").arg(i),
    }
    .ignore();
    if i.is_multiple_of(3) {
        pipe.cmd("PEXPIRE").arg(&k).arg(3_600_000 + i).ignore();
    }
}

async fn write_dataset(state: &ClusterState) {
    let (mut cons, owner) = masters(state).await;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(5000) {
        let mut pipes: Vec<redis::Pipeline> = cons.iter().map(|_| redis::pipe()).collect();
        for &i in chunk {
            let m = owner[usize::from(key_slot(format!("k:{i}").as_bytes()))];
            write_cmds(&mut pipes[m], i);
        }
        for (con, pipe) in cons.iter_mut().zip(&pipes) {
            let () = pipe.query_async(con).await.expect("write");
        }
    }
}

/// type, value (normalised) and absolute expiry (ms, -1 for none) of every key.
type Dump = BTreeMap<String, (String, String, i64)>;

async fn dump(state: &ClusterState) -> Dump {
    let (mut cons, _) = masters(state).await;
    let mut out = Dump::new();
    for con in &mut cons {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(2000)
                .query_async(con)
                .await
                .expect("SCAN");
            let mut p = redis::pipe();
            for k in &keys {
                p.cmd("TYPE").arg(k).cmd("PEXPIRETIME").arg(k);
            }
            let meta: Vec<(String, i64)> = p.query_async(con).await.expect("TYPE");
            let mut p = redis::pipe();
            for (k, (t, _)) in keys.iter().zip(&meta) {
                match t.as_str() {
                    "string" => p.cmd("GET").arg(k),
                    "hash" => p.cmd("HGETALL").arg(k),
                    "list" => p.cmd("LRANGE").arg(k).arg(0).arg(-1),
                    "set" => p.cmd("SMEMBERS").arg(k),
                    "zset" => p.cmd("ZRANGE").arg(k).arg(0).arg(-1).arg("WITHSCORES"),
                    _ => p.cmd("XRANGE").arg(k).arg("-").arg("+"),
                };
            }
            let values: Vec<redis::Value> = p.query_async(con).await.expect("values");
            for ((k, (t, exp)), v) in keys.into_iter().zip(meta).zip(values) {
                let mut text = format!("{v:?}");
                if t == "set" || t == "hash" {
                    let mut parts: Vec<String> = match v {
                        redis::Value::Array(items) => {
                            items.iter().map(|i| format!("{i:?}")).collect()
                        }
                        other => vec![format!("{other:?}")],
                    };
                    if t == "set" {
                        parts.sort();
                    } else {
                        let mut pairs: Vec<String> = parts.chunks(2).map(|c| c.join("=")).collect();
                        pairs.sort();
                        parts = pairs;
                    }
                    text = parts.join(",");
                }
                out.insert(k, (t, text, exp));
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    out
}

fn assert_same(before: &Dump, after: &Dump, what: &str) {
    let mut problems = Vec::new();
    for (k, (t, v, exp)) in before {
        match after.get(k) {
            None => problems.push(format!("{k} missing")),
            Some((t2, v2, exp2)) => {
                if t != t2 || v != v2 {
                    problems.push(format!("{k}: {t} {v} became {t2} {v2}"));
                } else if (exp - exp2).abs() > 1000 {
                    problems.push(format!("{k}: expiry {exp} became {exp2}"));
                }
            }
        }
        if problems.len() > 5 {
            break;
        }
    }
    assert!(problems.is_empty(), "{what}: {problems:?}");
}

/// A 3-shard cluster of id `cluster_id(n)` in the fixture, and its driver.
async fn make_cluster(fx: &Fixture, n: u8, name: &str) -> (LocalDriver, ClusterState) {
    let driver = fx
        .driver
        .clone()
        .with_cluster(&cluster_id(n), name)
        .unwrap();
    let op = Operator::with_options(&driver, config(), options());
    let mut state = ClusterState::new("local");
    state.cluster_id = cluster_id(n);
    op.create(&request(3, 1), &placement(3, 1), &mut state)
        .await
        .expect("create");
    (driver, state)
}

fn backup_request<'a>(
    state: &ClusterState,
    store: &'a dyn Store,
    scratch: &std::path::Path,
    retain: Option<u32>,
) -> BackupRequest<'a> {
    BackupRequest {
        seeds: state.endpoints(),
        user: None,
        operator_password: None,
        password: Some(Password::new("backup-test-pw")),
        cluster_id: state.cluster_id.clone(),
        store,
        retain,
        scratch: scratch.to_path_buf(),
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(15),
        timeout: Duration::from_secs(60),
    }
}

fn redis_server() -> std::path::PathBuf {
    LocalDriver::new(redisha_cluster::LocalConfig::new("/nonexistent"))
        .resolve_redis_server()
        .expect("redis-server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cycle_backup_destroy_restore_into_3_and_5_shards() {
    tokio::time::timeout(Duration::from_secs(600), full_cycle())
        .await
        .expect("test timed out");
}

async fn full_cycle() {
    let fx = Fixture::new(120, 9700);
    let backups = fx.dir.path().join("backups");
    let store = DirStore::new(&backups);
    let (driver, mut state) = make_cluster(&fx, 1, "src").await;
    write_dataset(&state).await;
    let before = dump(&state).await;
    assert_eq!(before.len(), KEYS);

    // A writer runs all through the backup; what it had acknowledged when the backup
    // started must be in it.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, acked, state) = (stop.clone(), acked.clone(), state.clone());
        tokio::spawn(async move {
            let (mut cons, owner) = masters(&state).await;
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let k = format!("live:{n}");
                let m = owner[usize::from(key_slot(k.as_bytes()))];
                let () = redis::cmd("SET")
                    .arg(&k)
                    .arg(n)
                    .query_async(&mut cons[m])
                    .await
                    .expect("live SET");
                n += 1;
                acked.store(n, Ordering::SeqCst);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked_before = acked.load(Ordering::SeqCst);
    let manifest = take_backup(&backup_request(&state, &store, fx.dir.path(), None))
        .await
        .expect("backup");
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    assert!(
        acked_before > 0,
        "the writer wrote nothing before the backup"
    );
    assert_eq!(manifest.shards.len(), 3);
    assert!(
        manifest.shards.iter().all(|s| s.source_role == "replica"),
        "{:?}",
        manifest.shards
    );
    assert!(manifest.total_keys() >= KEYS as u64 + acked_before);
    let location = backups.join(&state.cluster_id).join(&manifest.backup_id);
    let manifest_text = std::fs::read_to_string(location.join("manifest.json")).unwrap();
    assert!(!manifest_text.contains("backup-test-pw"));

    Operator::with_options(&driver, config(), options())
        .destroy(&mut state)
        .await
        .expect("destroy");

    for (n, shards, seeded) in [(2u8, 3u32, true), (3, 5, false)] {
        let driver = fx
            .driver
            .clone()
            .with_cluster(&cluster_id(n), "restored")
            .unwrap();
        let from = DirStore::new(&location);
        let engine = redisha_cluster::Driver::engine(&driver).await.unwrap();
        let staged = stage(
            &from,
            "",
            &location.display().to_string(),
            engine.as_ref(),
            fx.dir.path(),
        )
        .await
        .expect("stage");
        // The seeded restore runs with an append-only file: a node that finds none would
        // otherwise ignore its snapshot.
        let mut node_config = config();
        if seeded {
            node_config.redis_config =
                redisha_cluster::persistence::Persistence::parse(Some("aof"), None, None, None)
                    .unwrap()
                    .settings();
        }
        let op = Operator::with_options(&driver, node_config, options());
        let mut restored = ClusterState::new("local");
        restored.cluster_id = cluster_id(n);
        let route = create_restored(
            &op,
            &request(shards, 1),
            &placement(shards, 1),
            &mut restored,
            &staged,
            &redis_server(),
        )
        .await
        .expect("restore");
        assert_eq!(
            matches!(route, Route::Seeded),
            seeded,
            "{shards} shards: {route:?}"
        );
        if seeded {
            let (mut cons, _) = masters(&restored).await;
            let aof: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("appendonly")
                .query_async(&mut cons[0])
                .await
                .unwrap();
            assert_eq!(aof[1], "yes", "the append-only file is on once restored");
        }
        let after = dump(&restored).await;
        assert_same(&before, &after, &format!("restored into {shards} shards"));
        for i in 0..acked_before {
            assert!(
                after.contains_key(&format!("live:{i}")),
                "live:{i} was acknowledged before the backup started"
            );
        }
        op.destroy(&mut restored).await.expect("destroy restored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_backups_are_refused_before_any_node_starts_and_retain_prunes() {
    tokio::time::timeout(Duration::from_secs(300), damaged())
        .await
        .expect("test timed out");
}

async fn damaged() {
    let fx = Fixture::new(121, 9720);
    let backups = fx.dir.path().join("backups");
    let store = DirStore::new(&backups);
    let (driver, mut state) = make_cluster(&fx, 4, "small").await;
    let (mut cons, owner) = masters(&state).await;
    for i in 0..300 {
        let k = format!("k:{i}");
        let () = redis::cmd("SET")
            .arg(&k)
            .arg(i)
            .query_async(&mut cons[owner[usize::from(key_slot(k.as_bytes()))]])
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let m = take_backup(&backup_request(&state, &store, fx.dir.path(), Some(2)))
            .await
            .expect("backup");
        ids.push(m.backup_id);
    }
    let left: Vec<String> = redisha_cluster::backup::list_backups(&store, &state.cluster_id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.backup_id)
        .collect();
    assert_eq!(
        left,
        [ids[2].clone(), ids[1].clone()],
        "retain = 2 keeps the newest two"
    );
    Operator::with_options(&driver, config(), options())
        .destroy(&mut state)
        .await
        .expect("destroy");

    let location = backups.join(&state.cluster_id).join(&ids[2]);
    let target = driver_engine(&driver).await;
    let restore_into = fx
        .driver
        .clone()
        .with_cluster(&cluster_id(5), "restored")
        .unwrap();
    let attempt = |dir: std::path::PathBuf| {
        let restore_into = restore_into.clone();
        let target = target.clone();
        let scratch = fx.dir.path().to_path_buf();
        async move {
            let from = DirStore::new(&dir);
            let staged = stage(&from, "", "the-backup", Some(&target), &scratch).await?;
            let op = Operator::with_options(&restore_into, config(), options());
            let mut s = ClusterState::new("local");
            s.cluster_id = cluster_id(5);
            create_restored(
                &op,
                &request(3, 1),
                &placement(3, 1),
                &mut s,
                &staged,
                &redis_server(),
            )
            .await
        }
    };

    // A flipped byte in one snapshot.
    let file = location.join("shard-01.rdb");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let e = attempt(location.clone())
        .await
        .expect_err("a corrupt backup is refused")
        .to_string();
    assert!(
        e.contains("shard-01.rdb") && e.contains("SHA-256") && e.contains("corrupt"),
        "{e}"
    );
    bytes[middle] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();

    // A missing shard file.
    std::fs::rename(
        location.join("shard-02.rdb"),
        fx.dir.path().join("aside.rdb"),
    )
    .unwrap();
    let e = attempt(location.clone())
        .await
        .expect_err("a missing file is refused")
        .to_string();
    assert!(e.contains("shard-02.rdb") && e.contains("missing"), "{e}");
    std::fs::rename(
        fx.dir.path().join("aside.rdb"),
        location.join("shard-02.rdb"),
    )
    .unwrap();

    // A backup of a newer engine than the one that would restore it.
    let manifest_path = location.join("manifest.json");
    let original = std::fs::read_to_string(&manifest_path).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
    m["engine"] = serde_json::json!({"name": "valkey", "version": "8.1.8"});
    m["rdb_version"] = serde_json::json!(11);
    std::fs::write(&manifest_path, serde_json::to_vec(&m).unwrap()).unwrap();
    let e = attempt(location.clone())
        .await
        .expect_err("a newer format is refused")
        .to_string();
    assert!(
        e.contains("manifest.json") && e.contains("RDB version 11"),
        "{e}"
    );
    std::fs::write(&manifest_path, &original).unwrap();

    // Nothing of the refused restores runs or was left behind.
    let dirs = std::fs::read_dir(restore_into.config().data_dir.join(cluster_id(5)))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(dirs, 0, "a refused restore left node directories");
    assert_eq!(
        restore_into.kill_all_blocking(),
        0,
        "a refused restore left nodes running"
    );
}

async fn driver_engine(driver: &LocalDriver) -> redisha_cluster::engine::Engine {
    redisha_cluster::Driver::engine(driver)
        .await
        .unwrap()
        .expect("local engine")
}
