//! Benchmark: redisha's cluster forming and slot migration against redis-cli on the same
//! started nodes. Run through bench/cluster-bench.sh. Loopback only (127.31.x.x).
//!
//! 1. form: 6 nodes (3 shards x 1 replica) from "processes up" to healthy (cluster_state:ok
//!    everywhere, replicas linked): `redis-cli --cluster create --cluster-replicas 1` vs
//!    `Operator::form`.
//! 2. scale: 3 masters holding BENCH_KEYS keys plus 2 empty masters; time until the slots are
//!    spread over 5: `redis-cli --cluster rebalance --cluster-use-empty-masters` vs
//!    redisha's MigrateSlots steps. Reports keys moved per second.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt};
use redis::AsyncCommands;
use redisha_cluster::{ClusterState, LocalConfig, LocalDriver, NodeConfig, Operator, Options};
use redisha_planner::{
    ClusterSpec, HostSpec, Node, Placement, Request, Role, SlotRange, Spread, Step, ZoneSpec,
    SLOT_COUNT,
};

/// Value size of the scale run's keys.
const VALUE_BYTES: usize = 100;

fn request() -> Request {
    Request {
        cluster: ClusterSpec {
            shards: 3,
            replicas: 1,
            node_memory_mb: 64,
            spread: Spread::Zone,
            survive: Default::default(),
        },
        zones: (1..=3)
            .map(|z| ZoneSpec {
                name: format!("zone-{z}"),
                hosts: (1..=2)
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

fn slots(i: u32, n: u32) -> SlotRange {
    SlotRange {
        start: (i * SLOT_COUNT / n) as u16,
        end: ((i + 1) * SLOT_COUNT / n - 1) as u16,
    }
}

/// `masters` masters of which the first `with_slots` share all slots; `replicas` per shard.
fn placement(masters: u32, with_slots: u32, replicas: u32) -> Placement {
    let mut nodes = Vec::new();
    for s in 0..masters {
        let host_i = s / 3 + 1;
        let at = |z: u32| {
            (
                format!("zone-{}", z + 1),
                format!("host-{}-{host_i}", z + 1),
            )
        };
        let (zone, host) = at(s % 3);
        let slot_list = if s < with_slots {
            vec![slots(s, with_slots)]
        } else {
            Vec::new()
        };
        nodes.push(Node {
            name: format!("s{s}-m"),
            shard: s,
            role: Role::Master,
            host,
            zone,
            slots: slot_list,
        });
        for k in 0..replicas {
            let (zone, host) = at((s + k + 1) % 3);
            nodes.push(Node {
                name: format!("s{s}-r{k}"),
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

fn slot_moves(current: &Placement, target: &Placement) -> Vec<Step> {
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
        match steps.last_mut() {
            Some(Step::MigrateSlots { from, to, slots })
                if *from == a[s] && *to == b[s] && slots.end as usize + 1 == s =>
            {
                slots.end = s as u16
            }
            _ => steps.push(Step::MigrateSlots {
                from: a[s].clone(),
                to: b[s].clone(),
                slots: SlotRange {
                    start: s as u16,
                    end: s as u16,
                },
            }),
        }
    }
    steps
}

struct Env {
    driver: LocalDriver,
    _dir: tempfile::TempDir,
}

impl Env {
    fn new(octet: u8) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cfg = LocalConfig::new(dir.path().join("nodes"));
        cfg.loopback_octet = octet;
        cfg.base_port = 7400;
        Ok(Env {
            driver: LocalDriver::new(cfg),
            _dir: dir,
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.driver.kill_all_blocking();
    }
}

fn options() -> Options {
    Options {
        timeout: Duration::from_secs(120),
        ..Options::default()
    }
}

fn redis_cli(args: &[String]) -> anyhow::Result<()> {
    let out = std::process::Command::new("redis-cli")
        .args(args)
        .output()
        .context("run redis-cli")?;
    if !out.status.success() {
        bail!(
            "redis-cli {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

async fn bench_form(run: u8) -> anyhow::Result<(Duration, Duration)> {
    let req = request();
    let plan = placement(3, 3, 1);
    // redis-cli --cluster create
    let env = Env::new(31 + 2 * run)?;
    let op = Operator::with_options(&env.driver, NodeConfig::default(), options());
    let mut state = ClusterState::default();
    op.start(&req, &plan, &mut state).await?;
    settle().await;
    // redis-cli takes masters first, then pairs replicas: list masters first.
    let mut addrs: Vec<String> = plan
        .masters()
        .filter_map(|m| state.node(&m.name))
        .map(|n| n.address())
        .collect();
    addrs.extend(
        plan.nodes
            .iter()
            .filter(|n| n.role == Role::Replica)
            .filter_map(|n| state.node(&n.name))
            .map(|n| n.address()),
    );
    let started = Instant::now();
    let mut args = vec!["--cluster".to_string(), "create".to_string()];
    args.extend(addrs);
    args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
    redis_cli(&args)?;
    op.wait_converged(&state).await?;
    let cli = started.elapsed();
    op.destroy(&mut state).await?;

    let env = Env::new(32 + 2 * run)?;
    let op = Operator::with_options(&env.driver, NodeConfig::default(), options());
    let mut state = ClusterState::default();
    op.start(&req, &plan, &mut state).await?;
    settle().await;
    let started = Instant::now();
    op.form(&mut state).await?;
    let ours = started.elapsed();
    op.destroy(&mut state).await?;
    Ok((cli, ours))
}

/// A restarted master refuses cluster_state:ok for 2 s after its start (redis'
/// CLUSTER_WRITABLE_DELAY) whoever forms the cluster; wait that out so the timing compares
/// the forming itself.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(2100)).await;
}

async fn write_keys(state: &ClusterState, n: usize) -> anyhow::Result<()> {
    let seeds: Vec<String> = state
        .endpoints()
        .into_iter()
        .map(|a| format!("redis://{a}"))
        .collect();
    let client = redis::cluster::ClusterClient::new(seeds)?;
    let con = client.get_async_connection().await?;
    let results: Vec<redis::RedisResult<()>> = stream::iter(0..n)
        .map(|i| {
            let mut con = con.clone();
            async move { con.set(format!("key:{i}"), "x".repeat(VALUE_BYTES)).await }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

/// utime + stime (clock ticks) of this process.
fn self_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// utime + stime (clock ticks) of every node's process.
fn cpu_ticks(state: &ClusterState) -> u64 {
    let read = |pid: String| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_string();
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0)
    };
    state
        .nodes
        .iter()
        .filter_map(|n| n.handle.pid)
        .map(|p| {
            let t = read(p.to_string());
            if std::env::var_os("BENCH_CPU_EACH").is_some() {
                eprint!(" {p}:{t}");
            }
            t
        })
        .sum::<u64>()
}

async fn dbsize(addr: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(format!("redis://{addr}"))?;
    let mut con = client.get_multiplexed_async_connection().await?;
    Ok(redis::cmd("DBSIZE").query_async(&mut con).await?)
}

/// `before` (5 masters, the first 3 with all slots) with slots spread over all 5: each old
/// master hands 2184 slots to the new ones and keeps the rest, the same amount redis-cli's
/// rebalance moves (it only fills the empty masters).
fn spread(before: &Placement) -> Placement {
    let mut after = before.clone();
    let r = |start: u16, end: u16| SlotRange { start, end };
    let spread = [
        ("s0-m", vec![r(0, 3276)]),
        ("s1-m", vec![r(5461, 8737)]),
        ("s2-m", vec![r(10923, 14199)]),
        ("s3-m", vec![r(3277, 5460), r(8738, 9829)]),
        ("s4-m", vec![r(9830, 10922), r(14200, 16383)]),
    ];
    for n in &mut after.nodes {
        if let Some((_, s)) = spread.iter().find(|(name, _)| *name == n.name) {
            n.slots = s.clone();
        }
    }
    after
}

/// Returns (elapsed, keys moved) for redis-cli and for redisha.
async fn bench_scale(keys: usize, run: u8) -> anyhow::Result<[(Duration, u64); 2]> {
    let req = request();
    let before = placement(5, 3, 0);
    let after = spread(&before);
    let mut out = [(Duration::ZERO, 0); 2];
    for (i, octet) in [(0usize, 41 + 2 * run), (1, 42 + 2 * run)] {
        // BENCH_ONLY_REDISHA=1 skips redis-cli (for profiling redisha's side).
        if i == 0 && std::env::var_os("BENCH_ONLY_REDISHA").is_some() {
            out[0] = (Duration::from_secs(1), 1);
            continue;
        }
        let env = Env::new(octet)?;
        let op = Operator::with_options(&env.driver, NodeConfig::default(), options());
        let mut state = ClusterState::default();
        op.create(&req, &before, &mut state).await?;
        write_keys(&state, keys).await?;
        let cpu_before = cpu_ticks(&state);
        let self_before = self_ticks();
        let started = Instant::now();
        if i == 0 {
            let seed = state.node("s0-m").context("s0-m")?.address();
            redis_cli(&[
                "--cluster".into(),
                "rebalance".into(),
                seed,
                "--cluster-use-empty-masters".into(),
            ])?;
        } else {
            op.update(&req, &after, &slot_moves(&before, &after), &mut state)
                .await?;
        }
        op.wait_converged(&state).await?;
        let elapsed = started.elapsed();
        if std::env::var_os("BENCH_CPU").is_some() {
            let used = cpu_ticks(&state) - cpu_before;
            let own = self_ticks() - self_before;
            eprintln!(
                "    CPU during the scale: redis-servers {:.2} s, this process {:.2} s (wall {:.3} s)",
                used as f64 / 100.0,
                own as f64 / 100.0,
                elapsed.as_secs_f64()
            );
        }
        let mut moved = 0;
        for name in ["s3-m", "s4-m"] {
            moved += dbsize(&state.node(name).context("new master")?.address()).await?;
        }
        out[i] = (elapsed, moved);
        op.destroy(&mut state).await?;
    }
    Ok(out)
}

/// Pseudo-random bytes (xorshift): real data does not compress like repeated bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every node's own (is master, config epoch).
async fn roles(state: &ClusterState) -> anyhow::Result<Vec<(String, bool, u64)>> {
    let mut out = Vec::new();
    for n in &state.nodes {
        let client = redis::Client::open(format!("redis://{}", n.address()))?;
        let mut con = client.get_multiplexed_async_connection().await?;
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut con)
            .await?;
        let me = redisha_cluster::conn::parse_cluster_nodes(&text)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .find(|l| l.is_myself())
            .context("myself line")?;
        out.push((n.name.clone(), me.is_master(), me.config_epoch));
    }
    Ok(out)
}

/// Full size: 3 -> 5 masters with one replica each, holding `keys` keys of `value_bytes`
/// (pseudo-random) plus one hash of `hash_fields` fields in a slot that moves. While the
/// update runs, a probe PINGs every master every 10 ms and keeps the longest reply time;
/// afterwards every node's role and config epoch are compared with before (a failover
/// would change them).
async fn bench_big(keys: usize, value_bytes: usize, hash_fields: usize) -> anyhow::Result<()> {
    let req = request();
    let before = placement(5, 3, 1);
    let after = spread(&before);
    let env = Env::new(49)?;
    let op = Operator::with_options(&env.driver, NodeConfig::default(), options());
    let mut state = ClusterState::default();
    op.create(&req, &before, &mut state).await?;
    let seeds: Vec<String> = state
        .endpoints()
        .into_iter()
        .map(|a| format!("redis://{a}"))
        .collect();
    let client = redis::cluster::ClusterClientBuilder::new(seeds)
        .response_timeout(Duration::from_secs(60))
        .build()?;
    let con = client.get_async_connection().await?;
    let started = Instant::now();
    let results: Vec<redis::RedisResult<()>> = stream::iter(0..keys)
        .map(|i| {
            let mut con = con.clone();
            async move {
                con.set(format!("key:{i}"), noise(i as u64, value_bytes))
                    .await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for r in results {
        r?;
    }
    // The big hash lives in a slot s0-m hands to s3-m (3277-5460).
    let tag = (0..)
        .map(|n| format!("bighash{n}"))
        .find(|t| (3277..=5460).contains(&redisha_cluster::migrate_exec::key_slot(t.as_bytes())))
        .context("tag")?;
    let hash = format!("{{{tag}}}");
    let mut c = con.clone();
    for start in (0..hash_fields).step_by(1000) {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&hash);
        for f in start..(start + 1000).min(hash_fields) {
            cmd.arg(format!("field:{f}")).arg(noise(f as u64 + 7, 90));
        }
        let _: u64 = cmd.query_async(&mut c).await?;
    }
    let hash_bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&hash)
        .query_async(&mut c)
        .await?;
    println!(
        "  loaded {keys} keys of {value_bytes} B and a hash of {hash_fields} fields ({:.1} MB) in {:.1} s",
        hash_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let roles_before = roles(&state).await?;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let masters: Vec<(String, String)> = state
        .nodes
        .iter()
        .filter(|n| n.role == Role::Master)
        .map(|n| (n.name.clone(), n.address()))
        .collect();
    let probes: Vec<_> = masters
        .into_iter()
        .map(|(name, addr)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let client = redis::Client::open(format!("redis://{addr}"))?;
                let mut con = client.get_multiplexed_async_connection().await?;
                let mut longest = Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let t = Instant::now();
                    let _: String = redis::cmd("PING").query_async(&mut con).await?;
                    longest = longest.max(t.elapsed());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                anyhow::Ok((name, longest))
            })
        })
        .collect();
    let t = Instant::now();
    op.update(&req, &after, &slot_moves(&before, &after), &mut state)
        .await?;
    let elapsed = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut moved = 0;
    for name in ["s3-m", "s4-m"] {
        moved += dbsize(&state.node(name).context("new master")?.address()).await?;
    }
    let bytes = moved as f64 * value_bytes as f64 + hash_bytes as f64;
    println!(
        "  update: {moved} keys incl. the hash, about {:.0} MB, in {:.1} s = {:.0} keys/s, {:.1} MB/s",
        bytes / 1e6,
        elapsed.as_secs_f64(),
        moved as f64 / elapsed.as_secs_f64(),
        bytes / 1e6 / elapsed.as_secs_f64()
    );
    for p in probes {
        let (name, longest) = p.await??;
        println!(
            "  longest PING reply from {name} during the update: {:.0} ms",
            longest.as_secs_f64() * 1e3
        );
    }
    let roles_after = roles(&state).await?;
    let changed: Vec<String> = roles_before
        .iter()
        .zip(&roles_after)
        .filter(|(b, a)| {
            b.1 != a.1 || (b.2 != a.2 && !(a.0.starts_with("s3-") || a.0.starts_with("s4-")))
        })
        .map(|(b, a)| {
            format!(
                "{}: master {} -> {}, epoch {} -> {}",
                b.0, b.1, a.1, b.2, a.2
            )
        })
        .collect();
    if changed.is_empty() {
        println!("  no failover: every node kept its role; only the receiving shards' config epochs grew");
    } else {
        println!("  FAILOVER or role change: {changed:?}");
    }
    op.destroy(&mut state).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let keys: usize = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runs: u8 = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .clamp(1, 4);
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "form,scale".into());
    let parts: Vec<&str> = parts.split(',').map(str::trim).collect();
    if parts.contains(&"form") {
        println!("form 3 shards x 1 replica (6 nodes), processes up -> healthy");
    }
    for run in (0..runs).filter(|_| parts.contains(&"form")) {
        let (cli, ours) = bench_form(run).await?;
        println!(
            "  run {run}: redis-cli --cluster create {:>8.3} s   redisha form {:>8.3} s",
            cli.as_secs_f64(),
            ours.as_secs_f64()
        );
    }
    if parts.contains(&"scale") {
        // The ratio depends on the host's CPU (redis-cli's small round trips and config
        // saves cost more, relative to MIGRATE, on some processors than on others): say
        // which one this was.
        println!(
            "scale 3 -> 5 masters with {keys} keys of {VALUE_BYTES} B (CPU: {})",
            cpu_model()
        );
    }
    let mut ratios = Vec::new();
    for run in (0..runs).filter(|_| parts.contains(&"scale")) {
        let [(cli_t, cli_k), (our_t, our_k)] = bench_scale(keys, run).await?;
        let ratio = (our_k as f64 / our_t.as_secs_f64()) / (cli_k as f64 / cli_t.as_secs_f64());
        ratios.push(ratio);
        println!(
            "  run {run}: redis-cli --cluster rebalance {cli_k} keys in {:.3} s = {:.0} keys/s   redisha {our_k} keys in {:.3} s = {:.0} keys/s   ({ratio:.1}x)",
            cli_t.as_secs_f64(),
            cli_k as f64 / cli_t.as_secs_f64(),
            our_t.as_secs_f64(),
            our_k as f64 / our_t.as_secs_f64()
        );
    }
    if let Some(m) = median(&mut ratios) {
        println!("  median ratio over {} runs: {m:.1}x", ratios.len());
    }
    if parts.contains(&"big") {
        let env = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (keys, value, fields) = (
            env("BIG_KEYS", 200_000),
            env("BIG_VALUE_BYTES", 16 * 1024),
            env("BIG_HASH_FIELDS", 700_000),
        );
        println!(
            "full size: 3 -> 5 masters (1 replica each), {keys} keys of {value} B and one big hash"
        );
        bench_big(keys, value, fields).await?;
    }
    Ok(())
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The processor's model name, as /proc/cpuinfo gives it.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}
