//! Restoring a backup. Everything is checked before any node starts: the manifest (format,
//! every slot in one shard, a known engine), every file (present, its size and SHA-256, an RDB
//! header of the manifest's version) and the target engine (it must read that RDB version).
//!
//! Then either each new master starts from its shard's snapshot (same shards: `seed_plan`,
//! placed by `Driver::seed_snapshot`), or the new cluster starts empty and every key is
//! loaded into it (`load_keys`): each snapshot is opened by a temporary redis-server on a
//! unix socket in a scratch directory (no port, nothing reachable from outside, ended by its
//! pid in every case), read with SCAN, DUMP and PTTL, and written with RESTORE ... REPLACE
//! to the master serving each key's slot, pipelined.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redisha_planner::{SlotRange, SLOT_COUNT};
use tracing::info;

use crate::conn::{split_address, Conns, Target};
use crate::engine::Engine;
use crate::migrate_exec::key_slot;
use crate::secret::Password;

use super::manifest::{Manifest, MANIFEST_FILE};
use super::store::Store;
use super::BackupError;

/// The key of `name` in a backup whose files are under `base` ("" when the store is the
/// backup's own folder).
fn key(base: &str, name: &str) -> String {
    let base = base.trim_matches('/');
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// Reads and checks the manifest of the backup at `base` in `store`; `location` names the
/// backup in messages.
pub async fn open(store: &dyn Store, base: &str, location: &str) -> Result<Manifest, BackupError> {
    let data = store
        .get_bytes(&key(base, MANIFEST_FILE))
        .await?
        .ok_or_else(|| BackupError::Invalid {
            backup: location.to_string(),
            file: MANIFEST_FILE.into(),
            problem:
                "missing: this is not a complete redisha backup (a backup writes its manifest last)"
                    .into(),
        })?;
    Manifest::parse(location, &data)
}

/// A backup whose files are all on this machine and checked.
pub struct Staged {
    pub location: String,
    pub manifest: Manifest,
    /// One file per shard of the manifest, in its order.
    pub files: Vec<PathBuf>,
    /// Files fetched from a remote store live here until the restore ends.
    _scratch: Option<tempfile::TempDir>,
}

/// Brings every file of the backup to this machine (a directory store's files are read in
/// place; others are copied under `scratch_parent`) and checks each against the manifest,
/// and the manifest against `target` (the engine the new nodes run), when known.
pub async fn stage(
    store: &dyn Store,
    base: &str,
    location: &str,
    target: Option<&Engine>,
    scratch_parent: &Path,
) -> Result<Staged, BackupError> {
    let manifest = open(store, base, location).await?;
    if let Some(refusal) = target.and_then(|t| manifest.engine_refusal(t)) {
        return Err(BackupError::Invalid {
            backup: location.to_string(),
            file: MANIFEST_FILE.into(),
            problem: refusal,
        });
    }
    let mut scratch = None;
    let mut files = Vec::new();
    for shard in &manifest.shards {
        let k = key(base, &shard.file);
        let path = match store.local_path(&k) {
            Some(p) => p,
            None => {
                if scratch.is_none() {
                    std::fs::create_dir_all(scratch_parent).map_err(|e| {
                        BackupError::Other(format!(
                            "cannot create {}: {e}",
                            scratch_parent.display()
                        ))
                    })?;
                    scratch = Some(
                        tempfile::Builder::new()
                            .prefix(".redisha-restore-")
                            .tempdir_in(scratch_parent)
                            .map_err(|e| {
                                BackupError::Other(format!(
                                    "cannot create a scratch directory in {}: {e}",
                                    scratch_parent.display()
                                ))
                            })?,
                    );
                }
                let dir = scratch
                    .as_ref()
                    .map(|d| d.path().to_path_buf())
                    .unwrap_or_default();
                let to = dir.join(&shard.file);
                if !store.get_file(&k, &to).await? {
                    return Err(BackupError::Invalid {
                        backup: location.to_string(),
                        file: shard.file.clone(),
                        problem: "missing: the manifest lists it, the backup does not have it"
                            .into(),
                    });
                }
                to
            }
        };
        manifest.verify_file(location, shard, &path)?;
        files.push(path);
    }
    Ok(Staged {
        location: location.to_string(),
        manifest,
        files,
        _scratch: scratch,
    })
}

fn slot_set(ranges: &[SlotRange]) -> Vec<u16> {
    let mut slots: Vec<u16> = ranges.iter().flat_map(|r| r.start..=r.end).collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// Which snapshot each new master starts from, when the new cluster's shards serve exactly
/// the backup's shards' slots (`masters`: planned master name and slots). `None`: the keys
/// must be loaded and routed instead.
pub fn seed_plan(
    manifest: &Manifest,
    masters: &[(String, Vec<SlotRange>)],
) -> Option<Vec<(String, usize)>> {
    if masters.len() != manifest.shards.len() {
        return None;
    }
    let mut out = Vec::new();
    for (name, slots) in masters {
        let want = slot_set(slots);
        let shard = manifest
            .shards
            .iter()
            .position(|s| slot_set(&s.slots) == want)?;
        out.push((name.clone(), shard));
    }
    Some(out)
}

/// A redis-server of our own on a unix socket, serving one snapshot; killed (by its pid,
/// through the child handle) when dropped, whatever happened.
struct ScratchServer {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
}

impl ScratchServer {
    async fn start(
        binary: &Path,
        rdb: &Path,
        timeout: Duration,
    ) -> Result<(Self, MultiplexedConnection), BackupError> {
        let other = |m: String| BackupError::Other(m);
        let (Some(rdb_dir), Some(rdb_name)) = (rdb.parent(), rdb.file_name()) else {
            return Err(other(format!("{} is not a file path", rdb.display())));
        };
        let dir = tempfile::Builder::new()
            .prefix("redisha-scratch-")
            .tempdir()
            .map_err(|e| other(format!("cannot create a scratch directory: {e}")))?;
        let socket = dir.path().join("redis.sock");
        let log = dir.path().join("redis.log");
        let child = tokio::process::Command::new(binary)
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(rdb_dir)
            .arg("--dbfilename")
            .arg(rdb_name)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| other(format!("cannot run {}: {e}", binary.display())))?;
        let mut server = ScratchServer { child, dir };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                return Err(other(format!(
                    "the redis-server reading {} exited ({status}): {}",
                    rdb.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            if let Ok(mut con) = server.connect(&socket).await {
                // LOADING until the snapshot is in memory.
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut con).await;
                if pong.is_ok() {
                    return Ok((server, con));
                }
            }
            if Instant::now() > deadline {
                return Err(other(format!(
                    "the redis-server reading {} was not ready within {timeout:?}",
                    rdb.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn connect(&self, socket: &Path) -> redis::RedisResult<MultiplexedConnection> {
        let info = redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Unix(socket.to_path_buf()),
            redis: Default::default(),
        };
        redis::Client::open(info)?
            .get_multiplexed_async_connection()
            .await
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = &self.dir;
    }
}

/// Where every slot is served in the new cluster.
async fn slot_owners(
    conns: &Conns,
    seeds: &[String],
) -> Result<(Vec<Target>, Vec<usize>), BackupError> {
    let lines = crate::health::discover(conns, seeds).await?;
    let mut masters = Vec::new();
    let mut owner = vec![usize::MAX; SLOT_COUNT as usize];
    for l in lines.iter().filter(|l| l.is_master() && l.slot_count() > 0) {
        let (ip, port) = split_address(&l.address)
            .ok_or_else(|| BackupError::Other(format!("node {} has no usable address", l.id)))?;
        for r in &l.slots {
            for s in r.start..=r.end {
                owner[usize::from(s)] = masters.len();
            }
        }
        masters.push(Target::new(&l.id, ip, port));
    }
    if let Some(slot) = owner.iter().position(|o| *o == usize::MAX) {
        return Err(BackupError::Other(format!(
            "slot {slot} of the new cluster is not served; the keys cannot be loaded"
        )));
    }
    Ok((masters, owner))
}

/// What `load_keys` needs besides the backup.
pub struct LoadRequest<'a> {
    /// host:port of nodes of the new cluster.
    pub seeds: Vec<String>,
    pub password: Option<Password>,
    /// The operator user's password (tried first): the new cluster may have `default` off.
    pub operator_password: Option<Password>,
    /// The redis-server binary that opens each snapshot (it must read the backup's RDB
    /// version, and write DUMP payloads the new cluster's engine accepts).
    pub redis_server: &'a Path,
    /// Keys read and written per round.
    pub batch: usize,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

/// Loads every key of the backup into the new cluster, routed by slot, TTLs kept. A key
/// that already exists is replaced, so a load cut short can simply run again. Returns the
/// number of keys written.
pub async fn load_keys(staged: &Staged, req: &LoadRequest<'_>) -> Result<u64, BackupError> {
    let mut conns = Conns::new(req.password.clone(), req.connect_timeout, req.timeout);
    conns.set_operator_passwords(req.operator_password.iter().cloned().collect());
    let (masters, owner) = slot_owners(&conns, &req.seeds).await?;
    // Every snapshot at once: each has its own scratch server, and the writes of all of them
    // spread over every master.
    let loads = staged
        .manifest
        .shards
        .iter()
        .zip(&staged.files)
        .map(|(shard, file)| {
            let (conns, masters, owner) = (&conns, &masters, &owner);
            async move {
                let started = Instant::now();
                let (server, mut src) =
                    ScratchServer::start(req.redis_server, file, req.timeout).await?;
                let loaded = copy_keys(&mut src, conns, masters, owner, req).await;
                server.stop().await;
                let loaded = loaded.map_err(|e| match e {
                    BackupError::Other(m) => {
                        BackupError::Other(format!("{} ({}): {m}", staged.location, shard.file))
                    }
                    e => e,
                })?;
                info!(file = %shard.file, keys = loaded, seconds = started.elapsed().as_secs_f64(), "keys loaded");
                Ok::<u64, BackupError>(loaded)
            }
        });
    let mut total = 0u64;
    for r in join_all(loads).await {
        total += r?;
    }
    Ok(total)
}

async fn copy_keys(
    src: &mut MultiplexedConnection,
    conns: &Conns,
    masters: &[Target],
    owner: &[usize],
    req: &LoadRequest<'_>,
) -> Result<u64, BackupError> {
    let read =
        |e: redis::RedisError| BackupError::Other(format!("reading the snapshot failed: {e}"));
    let mut cursor: u64 = 0;
    let mut loaded = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(req.batch)
            .query_async(src)
            .await
            .map_err(read)?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("DUMP").arg(k).cmd("PTTL").arg(k);
            }
            let replies: Vec<redis::Value> = pipe.query_async(src).await.map_err(read)?;
            let mut per_master: Vec<redis::Pipeline> =
                (0..masters.len()).map(|_| redis::pipe()).collect();
            let mut counts = vec![0usize; masters.len()];
            for (k, pair) in keys.iter().zip(replies.chunks(2)) {
                let (redis::Value::BulkString(payload), Some(ttl)) = (&pair[0], pair.get(1)) else {
                    continue; // expired or gone since SCAN
                };
                let ttl: i64 = redis::from_redis_value(ttl).map_err(read)?;
                let ttl = match ttl {
                    -2 => continue,
                    t if t < 0 => 0,
                    t => t,
                };
                let m = owner[usize::from(key_slot(k))];
                per_master[m]
                    .cmd("RESTORE")
                    .arg(k)
                    .arg(ttl)
                    .arg(payload.as_slice())
                    .arg("REPLACE")
                    .ignore();
                counts[m] += 1;
            }
            let writes = masters
                .iter()
                .zip(&per_master)
                .zip(&counts)
                .filter(|(_, c)| **c > 0)
                .map(|((t, pipe), _)| conns.pipe_within::<()>(t, pipe, "RESTORE", req.timeout));
            for r in join_all(writes).await {
                r?;
            }
            loaded += counts.iter().sum::<usize>() as u64;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(loaded);
        }
    }
}

/// How a restore brought the data in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Each master started from its shard's snapshot.
    Seeded,
    /// The cluster started empty and this many keys were loaded.
    Loaded(u64),
}

/// Creates the cluster of `placement` from a staged (checked) backup: with the backup's
/// shards and a driver that can, each master is seeded with its snapshot before its first
/// start; otherwise the cluster is created empty and every key is loaded into it with
/// `redis_server` (the binary that opens the snapshots).
pub async fn create_restored(
    op: &crate::ops::Operator<'_>,
    request: &redisha_planner::Request,
    placement: &redisha_planner::Placement,
    state: &mut crate::state::ClusterState,
    staged: &Staged,
    redis_server: &Path,
) -> Result<Route, BackupError> {
    let masters: Vec<(String, Vec<SlotRange>)> = placement
        .masters()
        .map(|m| (m.name.clone(), m.slots.clone()))
        .collect();
    let seeds = seed_plan(&staged.manifest, &masters).filter(|_| op.driver.seeds_snapshots());
    if let Some(seeds) = &seeds {
        let hosts = crate::state::host_plans(request, placement, state)?;
        for (name, shard) in seeds {
            let plan = hosts
                .iter()
                .flat_map(|h| &h.nodes)
                .find(|n| &n.name == name)
                .ok_or_else(|| BackupError::Other(format!("node {name} is not in the plan")))?;
            op.driver
                .seed_snapshot(plan, &staged.files[*shard])
                .await
                .map_err(crate::error::ClusterError::from)?;
        }
        info!(backup = %staged.location, masters = seeds.len(), "masters seeded with their shard's snapshot");
    }
    if seeds.is_some() {
        create_seeded(op, request, placement, state, staged).await?;
        return Ok(Route::Seeded);
    }
    op.create(request, placement, state).await?;
    let load = LoadRequest {
        seeds: state.nodes.iter().map(|n| n.address()).collect(),
        password: op.config.password.clone(),
        operator_password: op.config.acl.operator_password.clone(),
        redis_server,
        batch: 1000,
        timeout: op.options.timeout,
        connect_timeout: op.options.connect_timeout,
    };
    let keys = load_keys(staged, &load).await?;
    Ok(Route::Loaded(keys))
}

/// The create of a seeded restore. With an append-only file configured, a node that finds none
/// starts empty and ignores `dump.rdb`: the nodes start with it off, load their snapshots, and
/// it is turned on once the cluster is formed (each node then writes its file from memory).
async fn create_seeded(
    op: &crate::ops::Operator<'_>,
    request: &redisha_planner::Request,
    placement: &redisha_planner::Placement,
    state: &mut crate::state::ClusterState,
    staged: &Staged,
) -> Result<(), BackupError> {
    let aof = op
        .config
        .redis_config
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("appendonly") && v.eq_ignore_ascii_case("yes"));
    if aof {
        let mut loading = op.config.clone();
        loading
            .redis_config
            .retain(|k, _| !k.eq_ignore_ascii_case("appendonly"));
        loading
            .redis_config
            .insert("appendonly".into(), "no".into());
        let mut first = crate::ops::Operator::with_options(op.driver, loading, op.options.clone());
        first.create(request, placement, state).await?;
        first.reconfigure(state, op.config.clone()).await?;
    } else {
        op.create(request, placement, state).await?;
    }
    // A snapshot the masters did not load would leave an empty cluster that looks restored.
    let expected = staged.manifest.total_keys();
    if expected > 0 {
        let mut found = 0u64;
        for n in state.nodes.iter().filter(|n| !n.slots.is_empty()) {
            found += op
                .conns
                .query::<u64>(&n.target(), &redis::cmd("DBSIZE"), "DBSIZE")
                .await?;
        }
        if found == 0 {
            return Err(BackupError::Other(format!(
                "{}: the masters started without the snapshots' {expected} keys; destroy this cluster and restore again",
                staged.location
            )));
        }
    }
    Ok(())
}
