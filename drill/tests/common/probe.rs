//! An independent client, to check what the drill's own client adds to a measured outage: a
//! plain redis-rs loop per node of a shard, none of the drill's routing code. Every node of
//! the shard gets `SET` every few ms on its own connection; a node that is not the shard's
//! writable master answers MOVED or CLUSTERDOWN, so the successes merged over the shard's
//! nodes are the moments *some* node accepted a write: the outage as a client that knew every
//! node and retried constantly would see it, on its own wall-clock timestamps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;

/// Pause between two writes to one node (and after an error): the probe's resolution.
const PAUSE: Duration = Duration::from_millis(5);
/// Bound of one connect or one reply: a hung node must not stall the loop for long.
const BOUND: Duration = Duration::from_millis(100);

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// A running probe of one shard.
pub struct Probe {
    pub shard: u32,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<f64>>>,
}

/// The successes of a stopped probe: wall-clock ms of every accepted write, sorted.
pub struct Probed {
    pub shard: u32,
    pub ok_unix_ms: Vec<f64>,
}

impl Probe {
    /// Starts one loop per address (`host:port`) of the shard, writing keys `probe:{tag}:N`
    /// (`tag` hashes to a slot of the shard).
    pub fn start(shard: u32, addresses: Vec<String>, tag: String, password: String) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = addresses
            .into_iter()
            .map(|address| {
                let (stop, tag, password) = (stop.clone(), tag.clone(), password.clone());
                tokio::spawn(async move { node_loop(address, tag, password, stop).await })
            })
            .collect();
        Probe { shard, stop, tasks }
    }

    pub async fn stop(self) -> Probed {
        self.stop.store(true, Ordering::SeqCst);
        let mut ok = Vec::new();
        for t in self.tasks {
            ok.extend(t.await.unwrap_or_default());
        }
        ok.sort_by(f64::total_cmp);
        Probed {
            shard: self.shard,
            ok_unix_ms: ok,
        }
    }
}

async fn connect(address: &str, password: &str) -> Option<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://:{password}@{address}/")).ok()?;
    tokio::time::timeout(BOUND, client.get_multiplexed_async_connection())
        .await
        .ok()?
        .ok()
}

async fn node_loop(
    address: String,
    tag: String,
    password: String,
    stop: Arc<AtomicBool>,
) -> Vec<f64> {
    let mut ok = Vec::new();
    let mut con: Option<MultiplexedConnection> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if con.is_none() {
            con = connect(&address, &password).await;
        }
        if let Some(c) = con.as_mut() {
            n += 1;
            let mut cmd = redis::cmd("SET");
            cmd.arg(format!("probe:{{{tag}}}:{n}")).arg(n);
            let set = cmd.query_async::<()>(c);
            match tokio::time::timeout(BOUND, set).await {
                Ok(Ok(())) => ok.push(unix_ms()),
                // MOVED, CLUSTERDOWN, READONLY: the node answers but is not the writable
                // master; keep the connection.
                Ok(Err(e))
                    if e.kind() != redis::ErrorKind::IoError && !e.is_connection_dropped() => {}
                _ => con = None,
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
    ok
}

/// The longest time without an accepted write between `from` and `to` (the last success
/// before `from` opens the first gap), the same definition as the drill's report.
pub fn longest_gap(ok: &[f64], from: f64, to: f64) -> f64 {
    longest_gap_at(ok, from, to).0
}

/// The longest gap and when it began, in ms after `from` (negative: before it).
pub fn longest_gap_at(ok: &[f64], from: f64, to: f64) -> (f64, f64) {
    let mut last = ok
        .iter()
        .copied()
        .filter(|t| *t < from)
        .fold(f64::NAN, f64::max);
    if last.is_nan() {
        last = from;
    }
    let mut longest = (0.0, 0.0);
    for &t in ok.iter().filter(|t| **t >= from && **t <= to) {
        if t - last > longest.0 {
            longest = (t - last, last - from);
        }
        last = t;
    }
    if to - last > longest.0 {
        longest = (to - last, last - from);
    }
    longest
}
