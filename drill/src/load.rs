//! The drill's traffic: one writer per shard (`SET` then `WAIT <replicas> <ms>` in one round
//! trip) and one reader per shard, each logging every success and failure with its time.
//!
//! A write is *acknowledged* when WAIT reports every replica has it; *accepted* when the
//! master answered OK but WAIT timed out first (a replica is down or cut off: by nature for
//! the shards whose replica sits in the failed zone). Only acknowledged writes are promised
//! to survive a failover; the report counts the others apart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redisha_cluster::conn::Credential;
use redisha_cluster::conn::Target;
use redisha_cluster::migrate_exec::key_slot;
use redisha_cluster::ClusterState;
use redisha_planner::Role;
use serde::{Deserialize, Serialize};

use crate::route::Route;

/// Pause after a failed request before the next try, so a dead shard is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Pause between two reads.
const READ_PAUSE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Write,
    Read,
}

/// One logged request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the drill started, when the reply (or the error) came.
    pub t_ms: f64,
    pub shard: u32,
    pub op: Op,
    /// The node the request went to.
    pub node: String,
    /// Write sequence number (the key is `drill:{tag}:<seq>`); for reads, the key read.
    pub seq: u64,
    pub ok: bool,
    /// Writes: WAIT reported every replica.
    #[serde(default)]
    pub acked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a shard's traffic needs.
#[derive(Debug, Clone)]
pub struct ShardLoad {
    pub shard: u32,
    /// A hash tag whose slot the shard serves, so every key lands on it.
    pub tag: String,
    pub nodes: Vec<Target>,
    /// Index of the planned master in `nodes`.
    pub master: usize,
    pub replicas: u32,
}

impl ShardLoad {
    pub fn key(&self, seq: u64) -> String {
        format!("drill:{{{}}}:{seq}", self.tag)
    }
}

/// Every shard's load, from the planned placement in `state`.
pub fn plan_load(state: &ClusterState) -> Vec<ShardLoad> {
    let shards: std::collections::BTreeSet<u32> = state.nodes.iter().map(|n| n.shard).collect();
    shards
        .into_iter()
        .filter_map(|shard| {
            let nodes: Vec<_> = state.nodes.iter().filter(|n| n.shard == shard).collect();
            let master = nodes.iter().position(|n| n.role == Role::Master)?;
            let slots = &nodes[master].slots;
            let tag = (0..1_000_000u32).map(|i| format!("d{i}")).find(|tag| {
                let slot = key_slot(format!("{{{tag}}}").as_bytes());
                slots.iter().any(|r| (r.start..=r.end).contains(&slot))
            })?;
            Some(ShardLoad {
                shard,
                tag,
                nodes: nodes.iter().map(|n| n.target()).collect(),
                master,
                replicas: nodes.len() as u32 - 1,
            })
        })
        .collect()
}

/// The shared log and stop flag of running traffic.
#[derive(Clone)]
pub struct Traffic {
    pub started: Instant,
    pub events: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
}

impl Traffic {
    pub fn new(started: Instant) -> Self {
        Traffic {
            started,
            events: Default::default(),
            stop: Default::default(),
        }
    }

    pub fn now_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    pub(crate) fn log(&self, e: Event) {
        if let Ok(mut v) = self.events.lock() {
            v.push(e);
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Starts a writer and a reader per shard.
    pub fn start(
        &self,
        loads: &[ShardLoad],
        login: Credential,
        wait: Duration,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for load in loads {
            let (t, l, p) = (self.clone(), load.clone(), login.clone());
            tasks.push(tokio::spawn(async move { t.write_loop(l, p, wait).await }));
            let (t, l, p) = (self.clone(), load.clone(), login.clone());
            tasks.push(tokio::spawn(async move { t.read_loop(l, p).await }));
        }
        tasks
    }

    async fn write_loop(self, load: ShardLoad, login: Credential, wait: Duration) {
        let mut route = Route::new(load.nodes.clone(), load.master, &login);
        // A write's reply bound: WAIT's own timeout plus time for the master to answer.
        let bound = wait + Duration::from_millis(200);
        let mut seq = 0u64;
        while !self.stopped() {
            seq += 1;
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(load.key(seq))
                .arg(seq)
                .ignore()
                .cmd("WAIT")
                .arg(load.replicas)
                .arg(wait.as_millis() as u64);
            let reply = route.run::<(i64,)>(&pipe, bound).await;
            let node = route.current().name.clone();
            match reply {
                Ok((n,)) => self.log(Event {
                    t_ms: self.now_ms(),
                    shard: load.shard,
                    op: Op::Write,
                    node,
                    seq,
                    ok: true,
                    acked: n >= i64::from(load.replicas),
                    error: None,
                }),
                Err(e) => {
                    self.log(Event {
                        t_ms: self.now_ms(),
                        shard: load.shard,
                        op: Op::Write,
                        node,
                        seq,
                        ok: false,
                        acked: false,
                        error: Some(e.clone()),
                    });
                    if !route.reroute(&e).await {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
        }
    }

    async fn read_loop(self, load: ShardLoad, login: Credential) {
        let mut route = Route::new(load.nodes.clone(), load.master, &login);
        let bound = Duration::from_millis(200);
        let mut n = 0u64;
        while !self.stopped() {
            n += 1;
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(load.key(n));
            let reply = route.run::<(Option<String>,)>(&pipe, bound).await;
            let node = route.current().name.clone();
            let ok = reply.is_ok();
            self.log(Event {
                t_ms: self.now_ms(),
                shard: load.shard,
                op: Op::Read,
                node,
                seq: n,
                ok,
                acked: false,
                error: reply.err(),
            });
            if !ok {
                let _ = route.reroute("").await;
            }
            tokio::time::sleep(READ_PAUSE).await;
        }
    }
}

/// Which of the shard's writes are still there: reads every key written (acknowledged or not)
/// from the shard's current master. Returns (acknowledged lost, accepted-unacknowledged lost).
pub async fn verify(
    load: &ShardLoad,
    events: &[Event],
    login: &Credential,
) -> Result<(Vec<u64>, Vec<u64>), String> {
    let mut route = Route::new(load.nodes.clone(), load.master, login);
    if !route.reroute("").await {
        return Err(format!(
            "shard {}: no writable master to read back from",
            load.shard
        ));
    }
    let written: Vec<&Event> = events
        .iter()
        .filter(|e| e.shard == load.shard && e.op == Op::Write && e.ok)
        .collect();
    let (mut acked_lost, mut unacked_lost) = (Vec::new(), Vec::new());
    for chunk in written.chunks(500) {
        let mut pipe = redis::pipe();
        let mut mget = redis::cmd("MGET");
        for e in chunk {
            mget.arg(load.key(e.seq));
        }
        pipe.add_command(mget);
        let (values,): (Vec<Option<String>>,) = route.run(&pipe, Duration::from_secs(5)).await?;
        sort_lost(chunk, values, &mut acked_lost, &mut unacked_lost);
    }
    Ok((acked_lost, unacked_lost))
}

/// The writes of `chunk` whose key read back (`values`, in the same order) no longer holds
/// their sequence number, as acknowledged or unacknowledged lost.
pub(crate) fn sort_lost(
    chunk: &[&Event],
    values: Vec<Option<String>>,
    acked_lost: &mut Vec<u64>,
    unacked_lost: &mut Vec<u64>,
) {
    for (e, v) in chunk.iter().zip(values) {
        if v.as_deref() != Some(e.seq.to_string().as_str()) {
            if e.acked {
                acked_lost.push(e.seq);
            } else {
                unacked_lost.push(e.seq);
            }
        }
    }
}
