//! Shared fixtures: a loopback topology, hand-built placements and migration steps, a
//! cluster-aware client, and a guard that ends every process by pid even when a test fails.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use redis::AsyncCommands;
use redisha_cluster::{ClusterState, LocalConfig, LocalDriver, Options, Password};
use redisha_planner::{
    ClusterSpec, HostSpec, Node, Placement, Request, Role, SlotRange, Spread, Step, ZoneSpec,
    SLOT_COUNT,
};

pub const ZONES: u32 = 3;
pub const HOSTS_PER_ZONE: u32 = 3;

/// A data dir plus a driver; dropping it SIGKILLs our redis-servers (pid-checked) and removes
/// the directory.
pub struct Fixture {
    pub driver: LocalDriver,
    pub request: Request,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(loopback_octet: u8, base_port: u16) -> Self {
        Self::configured(loopback_octet, base_port, None)
    }

    /// A fixture whose nodes each run a metrics exporter (`port_offset` above the node).
    pub fn with_exporters(loopback_octet: u8, base_port: u16, port_offset: u16) -> Self {
        let exporter = redisha_cluster::LocalExporter {
            port_offset,
            ..Default::default()
        };
        Self::configured(loopback_octet, base_port, Some(exporter))
    }

    fn configured(
        loopback_octet: u8,
        base_port: u16,
        exporter: Option<redisha_cluster::LocalExporter>,
    ) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "redisha_cluster=info".into()),
            )
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = LocalConfig::new(dir.path().join("nodes"));
        config.loopback_octet = loopback_octet;
        config.base_port = base_port;
        config.exporter = exporter;
        Fixture {
            driver: LocalDriver::new(config),
            request: request(3, 1),
            dir,
        }
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.driver.config().data_dir.clone()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Show what the nodes logged: the test's error alone rarely says why.
            if let Ok(entries) = std::fs::read_dir(self.data_dir()) {
                for e in entries.flatten() {
                    let log =
                        std::fs::read_to_string(e.path().join("redis.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    eprintln!("--- {} ---", e.path().display());
                    for l in tail.into_iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
        self.driver.kill_all_blocking();
    }
}

pub fn options() -> Options {
    Options {
        timeout: Duration::from_secs(60),
        ..Options::default()
    }
}

pub fn request(shards: u32, replicas: u32) -> Request {
    Request {
        cluster: ClusterSpec {
            shards,
            replicas,
            node_memory_mb: 64,
            spread: Spread::Zone,
            survive: Default::default(),
        },
        zones: (1..=ZONES)
            .map(|z| ZoneSpec {
                name: format!("zone-{z}"),
                hosts: (1..=HOSTS_PER_ZONE)
                    .map(|h| HostSpec {
                        name: format!("host-{z}-{h}"),
                        memory_mb: 4096,
                        max_nodes: 4,
                        rack: None,
                    })
                    .collect(),
            })
            .collect(),
        partitions: Vec::new(),
        sentinel: None,
    }
}

pub fn master_name(shard: u32) -> String {
    format!("s{shard}-m")
}

pub fn replica_name(shard: u32, k: u32) -> String {
    format!("s{shard}-r{k}")
}

fn even_slots(shard: u32, shards: u32) -> SlotRange {
    let start = shard * SLOT_COUNT / shards;
    let end = (shard + 1) * SLOT_COUNT / shards - 1;
    SlotRange {
        start: start as u16,
        end: end as u16,
    }
}

/// Shard s: master in zone s%3, replica k in zone (s+k+1)%3; host index (s/3)%3.
pub fn placement(shards: u32, replicas: u32) -> Placement {
    let mut nodes = Vec::new();
    for s in 0..shards {
        let host_i = (s / ZONES) % HOSTS_PER_ZONE + 1;
        let place = |zone: u32| {
            (
                format!("zone-{}", zone + 1),
                format!("host-{}-{host_i}", zone + 1),
            )
        };
        let (zone, host) = place(s % ZONES);
        nodes.push(Node {
            name: master_name(s),
            shard: s,
            role: Role::Master,
            host,
            zone,
            slots: vec![even_slots(s, shards)],
        });
        for k in 0..replicas {
            let (zone, host) = place((s + k + 1) % ZONES);
            nodes.push(Node {
                name: replica_name(s, k),
                shard: s,
                role: Role::Replica,
                host,
                zone,
                slots: Vec::new(),
            });
        }
    }
    Placement { nodes }
}

/// MigrateSlots steps turning the slot owners of `current` into those of `target`.
pub fn slot_moves(current: &Placement, target: &Placement) -> Vec<Step> {
    let owner = |p: &Placement| {
        let mut by_slot = vec![String::new(); SLOT_COUNT as usize];
        for m in p.masters() {
            for r in &m.slots {
                for s in r.start..=r.end {
                    by_slot[s as usize] = m.name.clone();
                }
            }
        }
        by_slot
    };
    let (a, b) = (owner(current), owner(target));
    let mut steps: Vec<Step> = Vec::new();
    for s in 0..SLOT_COUNT as usize {
        if a[s] == b[s] {
            continue;
        }
        let slot = s as u16;
        match steps.last_mut() {
            Some(Step::MigrateSlots { from, to, slots })
                if *from == a[s] && *to == b[s] && u32::from(slots.end) + 1 == s as u32 =>
            {
                slots.end = slot
            }
            _ => steps.push(Step::MigrateSlots {
                from: a[s].clone(),
                to: b[s].clone(),
                slots: SlotRange {
                    start: slot,
                    end: slot,
                },
            }),
        }
    }
    steps
}

pub fn add_shard_steps(target: &Placement, shard: u32) -> Vec<Step> {
    let mut steps = Vec::new();
    for n in target.shard_nodes(shard) {
        steps.push(Step::AddNode {
            node: n.name.clone(),
            shard,
            host: n.host.clone(),
            zone: n.zone.clone(),
        });
    }
    for n in target
        .shard_nodes(shard)
        .filter(|n| n.role == Role::Replica)
    {
        steps.push(Step::AttachReplica {
            node: n.name.clone(),
            master: master_name(shard),
        });
        steps.push(Step::WaitSync {
            node: n.name.clone(),
        });
    }
    steps
}

pub fn seeds(state: &ClusterState) -> Vec<String> {
    state
        .endpoints()
        .into_iter()
        .map(|a| format!("redis://{a}"))
        .collect()
}

pub async fn cluster_client(
    state: &ClusterState,
    password: Option<&Password>,
) -> redis::cluster_async::ClusterConnection {
    let mut builder = redis::cluster::ClusterClientBuilder::new(seeds(state))
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(5));
    if let Some(p) = password {
        builder = builder.password(p.expose().to_string());
    }
    let client = builder.build().expect("cluster client");
    client
        .get_async_connection()
        .await
        .expect("cluster connection")
}

pub fn key(i: usize) -> String {
    format!("key:{i}")
}

pub async fn write_keys(con: &redis::cluster_async::ClusterConnection, n: usize) {
    let results: Vec<redis::RedisResult<()>> = stream::iter(0..n)
        .map(|i| {
            let mut con = con.clone();
            async move {
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    con.set(key(i), format!("value-{i}")),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(redis::RedisError::from((
                        redis::ErrorKind::IoError,
                        "SET timed out",
                    ))),
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for r in results {
        r.expect("SET through the cluster client");
    }
}

/// Every key that was written, read back through the cluster client; returns the missing.
/// The keys among `key(0..n)` that cannot be read back with their value. A cluster client that
/// got stuck refreshing its slot map after a topology change (seen with the redis crate's
/// cluster client right after a failover) would report every key missing though the cluster
/// serves them all; like an application would, retry the missing ones on a fresh client.
pub async fn missing_keys(
    state: &ClusterState,
    password: Option<&Password>,
    n: usize,
) -> Vec<String> {
    let mut missing: Vec<usize> = (0..n).collect();
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        match tokio::time::timeout(Duration::from_secs(10), cluster_client(state, password)).await {
            // A stuck client times out on every key: bound the whole pass, not only each key.
            Ok(con) => {
                match tokio::time::timeout(Duration::from_secs(30), unreadable(&con, &missing))
                    .await
                {
                    Ok(still) => missing = still,
                    Err(_) => {
                        eprintln!("cluster client stuck for 30 s reading keys; trying a fresh one")
                    }
                }
            }
            Err(_) => eprintln!("cluster client did not connect in 10 s; trying a fresh one"),
        }
        if missing.is_empty() {
            break;
        }
    }
    missing.into_iter().map(key).collect()
}

async fn unreadable(con: &redis::cluster_async::ClusterConnection, which: &[usize]) -> Vec<usize> {
    let values: Vec<(usize, Option<String>)> = stream::iter(which.iter().copied())
        .map(|i| {
            let mut con = con.clone();
            async move {
                let v = tokio::time::timeout(Duration::from_secs(2), con.get(key(i))).await;
                (i, v.ok().and_then(|r| r.ok()).flatten())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    values
        .into_iter()
        .filter(|(i, v)| v.as_deref() != Some(format!("value-{i}").as_str()))
        .map(|(i, _)| i)
        .collect()
}

pub fn slot_owners(state: &ClusterState) -> BTreeMap<String, u32> {
    state
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.slots.iter().map(|r| r.len()).sum()))
        .collect()
}

pub fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

pub fn kill9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // SIGKILL is asynchronous: wait until the process is really gone.
    for _ in 0..500 {
        if !pid_alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("pid {pid} survived SIGKILL");
}

/// A hash tag whose keys fall in `slot`.
pub fn tag_for_slot(slot: u16) -> String {
    (0u64..)
        .map(|n| format!("t{n}"))
        .find(|t| redisha_cluster::migrate_exec::key_slot(t.as_bytes()) == slot)
        .expect("some tag hashes to every slot")
}

/// Key `i` of `slot` (a hash-tagged name) and its value.
pub fn slot_key(slot: u16, i: usize) -> (String, String) {
    let tag = tag_for_slot(slot);
    (format!("{{{tag}}}:k{i}"), format!("v{slot}-{i}"))
}

/// A plain connection to one node of the state (no password), for tests that poke a node.
pub async fn node(state: &ClusterState, name: &str) -> redis::aio::MultiplexedConnection {
    let addr = state.node(name).expect("node in state").address();
    redis::Client::open(format!("redis://{addr}"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}
