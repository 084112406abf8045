//! Benchmark: backup and restore throughput against `redis-cli --rdb` on the same nodes. Run
//! through bench/backup-bench.sh. Loopback only (127.126.x.x-127.128.x.x, ports 9790+).
//!
//! A 3-shard cluster (1 replica each) is filled with BENCH_KEYS keys of BENCH_VALUE bytes, then
//! for each of BENCH_RUNS runs:
//! - `redis-cli --rdb` from each shard's replica, the three at once (what a script per node
//!   does), and redisha's `take_backup` (the same snapshots plus the replica catch-up, SHA-256,
//!   header parsing, the copy into the store and the manifest); MB/s = snapshot bytes / seconds;
//! - restore into 3 shards (masters seeded with their snapshot; the time counts the whole
//!   create: nodes started, snapshots loaded, cluster formed, replicas synchronised) and into
//!   5 shards (an empty cluster formed, then every key loaded through DUMP/RESTORE; the time
//!   counts the load only).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redisha_cluster::backup::restore::{create_restored, stage};
use redisha_cluster::backup::{take_backup, BackupRequest, DirStore};
use redisha_cluster::migrate_exec::key_slot;
use redisha_cluster::{
    ClusterState, Driver, LocalConfig, LocalDriver, NodeConfig, Operator, Options,
};
use redisha_planner::{ClusterSpec, HostSpec, Request, Spread, ZoneSpec};

fn request(shards: u32) -> Request {
    Request {
        cluster: ClusterSpec {
            shards,
            replicas: 1,
            node_memory_mb: 64,
            spread: Spread::Zone,
            survive: Default::default(),
        },
        zones: (1..=3)
            .map(|z| ZoneSpec {
                name: format!("zone-{z}"),
                hosts: vec![HostSpec {
                    name: format!("host-{z}"),
                    memory_mb: 65536,
                    max_nodes: 4,
                    rack: None,
                }],
            })
            .collect(),
        partitions: Vec::new(),
        sentinel: None,
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn driver(root: &std::path::Path, octet: u8, id: &str) -> anyhow::Result<LocalDriver> {
    let mut c = LocalConfig::new(root.join(format!("nodes-{octet}")));
    c.loopback_octet = octet;
    c.base_port = 9790;
    Ok(LocalDriver::new(c).with_cluster(id, "bench")?)
}

fn options() -> Options {
    Options {
        timeout: Duration::from_secs(600),
        command_timeout: Duration::from_secs(60),
        ..Options::default()
    }
}

async fn fill(state: &ClusterState, keys: usize, value: usize) -> anyhow::Result<()> {
    let mut cons = Vec::new();
    let mut owner = vec![0usize; 16384];
    for n in state.nodes.iter().filter(|n| !n.slots.is_empty()) {
        for r in &n.slots {
            for s in r.start..=r.end {
                owner[usize::from(s)] = cons.len();
            }
        }
        cons.push(
            redis::Client::open(format!("redis://{}/", n.address()))?
                .get_multiplexed_async_connection()
                .await?,
        );
    }
    // Values that do not compress (RDB files compress strings with LZF): a snapshot's size
    // is about the data's.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut random_value = || -> String {
        (0..value)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'!' + (seed % 90) as u8)
            })
            .collect()
    };
    for chunk in (0..keys).collect::<Vec<_>>().chunks(5000) {
        let mut pipes: Vec<redis::Pipeline> = cons.iter().map(|_| redis::pipe()).collect();
        for &i in chunk {
            let k = format!("bench:{i}");
            pipes[owner[usize::from(key_slot(k.as_bytes()))]]
                .cmd("SET")
                .arg(&k)
                .arg(random_value())
                .ignore();
        }
        for (con, p) in cons.iter_mut().zip(&pipes) {
            let () = p.query_async(con).await?;
        }
    }
    Ok(())
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

struct Guard(Vec<LocalDriver>);

impl Drop for Guard {
    fn drop(&mut self) {
        for d in &self.0 {
            d.kill_all_blocking();
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let keys = env("BENCH_KEYS", 500_000);
    let value = env("BENCH_VALUE", 200);
    let runs = env("BENCH_RUNS", 3);
    let dir = tempfile::tempdir()?;
    let src = driver(dir.path(), 126, "be00000000000001")?;
    let seeded = driver(dir.path(), 127, "be00000000000002")?;
    let loaded = driver(dir.path(), 128, "be00000000000003")?;
    let _guard = Guard(vec![src.clone(), seeded.clone(), loaded.clone()]);
    let op = Operator::with_options(&src, NodeConfig::default(), options());
    let mut state = ClusterState::new("local");
    state.cluster_id = "be00000000000001".into();
    let plan = redisha_planner::plan(&request(3), None)?;
    op.create(&request(3), &plan.placement, &mut state).await?;
    fill(&state, keys, value).await?;
    println!("dataset: {keys} keys of {value} bytes in 3 shards (1 replica each)");
    let replicas: Vec<String> = state
        .nodes
        .iter()
        .filter(|n| n.slots.is_empty())
        .map(|n| n.address())
        .collect();
    let store = DirStore::new(dir.path().join("backups"));
    let binary = src.resolve_redis_server()?;
    let engine = src.engine().await?;
    println!("| run | snapshot MB | redis-cli --rdb x3 (parallel) | redisha backup | restore, 3 shards (seeded, whole create) | restore, 5 shards (key load) |");
    println!("|---|---|---|---|---|---|");
    for run in 1..=runs {
        let started = Instant::now();
        let children: Vec<_> = replicas
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
                std::process::Command::new("redis-cli")
                    .args(["-h", host, "-p", port, "--rdb"])
                    .arg(dir.path().join(format!("cli-{i}.rdb")))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        for mut c in children {
            if !c.wait()?.success() {
                bail!("redis-cli --rdb failed");
            }
        }
        let cli_time = started.elapsed();
        let cli_bytes: u64 = (0..replicas.len())
            .map(|i| {
                std::fs::metadata(dir.path().join(format!("cli-{i}.rdb")))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum();

        let started = Instant::now();
        let manifest = take_backup(&BackupRequest {
            seeds: state.endpoints(),
            user: None,
            operator_password: None,
            password: None,
            cluster_id: state.cluster_id.clone(),
            store: &store,
            retain: Some(1),
            scratch: dir.path().to_path_buf(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(60),
            timeout: Duration::from_secs(600),
        })
        .await?;
        let backup_time = started.elapsed();
        let bytes = manifest.total_bytes();
        let location = dir
            .path()
            .join("backups")
            .join(&state.cluster_id)
            .join(&manifest.backup_id);
        let from = DirStore::new(&location);
        let staged = stage(
            &from,
            "",
            &location.display().to_string(),
            engine.as_ref(),
            dir.path(),
        )
        .await
        .context("stage")?;

        let mut times = Vec::new();
        for (d, shards) in [(&seeded, 3u32), (&loaded, 5)] {
            let op = Operator::with_options(d, NodeConfig::default(), options());
            let mut restored = ClusterState::new("local");
            restored.cluster_id = d.cluster_id().unwrap_or_default().to_string();
            let plan = redisha_planner::plan(&request(shards), None)?;
            let started = Instant::now();
            let route = create_restored(
                &op,
                &request(shards),
                &plan.placement,
                &mut restored,
                &staged,
                &binary,
            )
            .await?;
            let mut took = started.elapsed();
            if shards == 5 {
                // The key load alone: take out a plain create of the same cluster, measured after.
                op.destroy(&mut restored).await?;
                // A new operator: the old one's connections went with the destroyed nodes.
                let op = Operator::with_options(d, NodeConfig::default(), options());
                let mut empty = ClusterState::new("local");
                empty.cluster_id = restored.cluster_id.clone();
                let started = Instant::now();
                op.create(&request(shards), &plan.placement, &mut empty)
                    .await?;
                took = took.saturating_sub(started.elapsed());
                op.destroy(&mut empty).await?;
            } else {
                op.destroy(&mut restored).await?;
            }
            times.push((took, route));
        }
        println!(
            "| {run} | {:.1} | {:.2} s, {:.0} MB/s | {:.2} s, {:.0} MB/s | {:.2} s, {:.0} MB/s | {:.2} s, {:.0} MB/s |",
            bytes as f64 / 1e6,
            cli_time.as_secs_f64(),
            mb_per_s(cli_bytes, cli_time),
            backup_time.as_secs_f64(),
            mb_per_s(bytes, backup_time),
            times[0].0.as_secs_f64(),
            mb_per_s(bytes, times[0].0),
            times[1].0.as_secs_f64(),
            mb_per_s(bytes, times[1].0),
        );
    }
    op.destroy(&mut state).await?;
    Ok(())
}
