//! Taking a backup: the cluster's shards from its own view (CLUSTER NODES), one snapshot per
//! shard fetched at the same moment from a caught-up replica (the master when the shard has
//! no live replica), the files stored, the manifest last, older backups pruned.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::future::join_all;
use redisha_planner::SLOT_COUNT;
use tracing::info;

use crate::conn::{split_address, Conns, Credential, NodeLine, Target};
use crate::engine::Engine;
use crate::identity::{is_cluster_id, unix_now};
use crate::secret::Password;

use super::fetch::fetch_rdb;
use super::manifest::{Manifest, ShardBackup, MANIFEST_FILE, MANIFEST_FORMAT};
use super::rdb::read_header;
use super::store::Store;
use super::{new_backup_id, BackupError};

/// What to back up and where.
pub struct BackupRequest<'a> {
    /// host:port of one or more nodes of the cluster.
    pub seeds: Vec<String>,
    /// Who logs in: `user` (`None`: `default`) with `password`.
    pub user: Option<String>,
    pub password: Option<Password>,
    /// The operator user's password, when the caller has it (`final_backup`): tried first, so
    /// the backup works with `default` off and no user of its own.
    pub operator_password: Option<Password>,
    /// The cluster's id (`cluster_id` of `redisha_cluster`): the backups' folder in the store.
    pub cluster_id: String,
    pub store: &'a dyn Store,
    /// Keep this many backups of the cluster (this one included); `None`: keep all.
    pub retain: Option<u32>,
    /// Where snapshots are written before they are stored (a temporary directory is made in it).
    pub scratch: PathBuf,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Bound of every wait: a replica catching up, a node's fork and save.
    pub timeout: Duration,
}

/// One shard as the backup sees it.
struct Shard {
    master: NodeLine,
    replicas: Vec<NodeLine>,
}

fn target_of(line: &NodeLine) -> Result<Target, BackupError> {
    let (ip, port) = split_address(&line.address).ok_or_else(|| {
        BackupError::Other(format!(
            "node {} has no usable address {:?}",
            line.id, line.address
        ))
    })?;
    Ok(Target::new(&line.id, ip, port))
}

/// Takes a backup and returns its manifest; the backup's location is
/// `<store>/<cluster id>/<backup id>`.
pub async fn take_backup(req: &BackupRequest<'_>) -> Result<Manifest, BackupError> {
    if !is_cluster_id(&req.cluster_id) {
        return Err(BackupError::Other(format!(
            "cluster id {:?} is not 16 hex digits (use the cluster_id attribute of redisha_cluster)",
            req.cluster_id
        )));
    }
    let mut conns =
        Conns::new(None, req.connect_timeout, req.command_timeout).logging_in_as(&Credential {
            user: req.user.clone(),
            password: req.password.clone(),
        });
    conns.set_operator_passwords(req.operator_password.iter().cloned().collect());
    let started_at = unix_now();
    let shards = shards(&conns, &req.seeds).await?;
    // Writes acknowledged before this point must be in the backup: each replica is waited
    // for until it has replicated the master's offset as read now.
    let offsets = join_all(shards.iter().map(|s| async {
        let t = target_of(&s.master)?;
        let info = conns.info(&t, "replication").await?;
        Ok::<_, BackupError>(
            info.get("master_repl_offset")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0),
        )
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<u64>, _>>()?;
    let backup_id = new_backup_id(super::unix_now_ms());
    let work = tempfile_dir(&req.scratch, &backup_id)?;
    let result = async {
        let fetched = join_all(shards.iter().zip(&offsets).enumerate().map(
            |(i, (shard, offset))| fetch_shard(req, &conns, &work.0, i, shard, *offset),
        ))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        let engine = fetched[0].1.clone();
        if let Some((_, other, _)) = fetched.iter().find(|(_, e, _)| e != &engine) {
            return Err(BackupError::Other(format!(
                "the shards run different engines ({engine} and {other}); back up once an engine roll has finished"
            )));
        }
        let rdb_version = fetched[0].2;
        let shards: Vec<ShardBackup> = fetched.into_iter().map(|(s, _, _)| s).collect();
        let prefix = format!("{}/{}", req.cluster_id, backup_id);
        for s in &shards {
            req.store
                .put_file(&format!("{prefix}/{}", s.file), &work.0.join(&s.file))
                .await?;
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            backup_id: backup_id.clone(),
            cluster_id: req.cluster_id.clone(),
            engine,
            rdb_version,
            started_at,
            finished_at: unix_now(),
            shards,
        };
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| BackupError::Other(format!("cannot encode the manifest: {e}")))?;
        req.store
            .put_bytes(&format!("{prefix}/{MANIFEST_FILE}"), text)
            .await?;
        Ok(manifest)
    }
    .await;
    drop(work);
    let manifest = result?;
    info!(
        backup = %manifest.backup_id,
        shards = manifest.shards.len(),
        keys = manifest.total_keys(),
        bytes = manifest.total_bytes(),
        "backup written"
    );
    if let Some(retain) = req.retain {
        prune(req.store, &req.cluster_id, retain).await?;
    }
    Ok(manifest)
}

/// A scratch directory removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir(parent: &std::path::Path, name: &str) -> Result<ScratchDir, BackupError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = parent.join(format!(".redisha-backup-{name}"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| BackupError::Other(format!("cannot create {}: {e}", dir.display())))?;
    Ok(ScratchDir(dir))
}

/// The cluster's shards from the first seed that answers. Refused while a slot is half-moved
/// or unserved: the snapshot of a shard must hold exactly the slots the manifest names.
async fn shards(conns: &Conns, seeds: &[String]) -> Result<Vec<Shard>, BackupError> {
    let lines = crate::health::discover(conns, seeds).await?;
    let mut masters: Vec<&NodeLine> = lines
        .iter()
        .filter(|l| l.is_master() && !l.is_failed() && l.slot_count() > 0)
        .collect();
    masters.sort_by_key(|l| l.slots.first().map_or(u32::MAX, |r| u32::from(r.start)));
    let served: u32 = masters.iter().map(|m| m.slot_count()).sum();
    if served != SLOT_COUNT {
        return Err(BackupError::Other(format!(
            "only {served} of {SLOT_COUNT} slots are served by a live master; repair the cluster first"
        )));
    }
    let mut out = Vec::new();
    for m in masters {
        // The master's own view carries its half-moved slots.
        let own = conns.cluster_nodes(&target_of(m)?).await?;
        if let Some(me) = own.iter().find(|l| l.is_myself()) {
            if !me.migrating.is_empty() || !me.importing.is_empty() {
                return Err(BackupError::Other(format!(
                    "node {} ({}) has half-moved slots; back up once the migration has finished (terraform apply finishes it)",
                    m.id, m.address
                )));
            }
        }
        out.push(Shard {
            master: m.clone(),
            replicas: lines
                .iter()
                .filter(|l| l.master_id.as_deref() == Some(&m.id) && !l.is_failed())
                .cloned()
                .collect(),
        });
    }
    Ok(out)
}

/// A replica of the shard whose link is up and that has caught up with `offset`, if any.
async fn caught_up_replica(
    req: &BackupRequest<'_>,
    conns: &Conns,
    shard: &Shard,
    offset: u64,
) -> Option<(NodeLine, Target)> {
    let deadline = Instant::now() + req.timeout;
    let candidates: Vec<(NodeLine, Target)> = shard
        .replicas
        .iter()
        .filter_map(|r| Some((r.clone(), target_of(r).ok()?)))
        .collect();
    loop {
        for (line, t) in &candidates {
            let Ok(info) = conns.info(t, "replication").await else {
                continue;
            };
            let up = info.get("master_link_status").map(String::as_str) == Some("up");
            let at: u64 = info
                .get("slave_repl_offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if up && at >= offset {
                return Some((line.clone(), t.clone()));
            }
        }
        if candidates.is_empty() || Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fetch_shard(
    req: &BackupRequest<'_>,
    conns: &Conns,
    dir: &std::path::Path,
    index: usize,
    shard: &Shard,
    offset: u64,
) -> Result<(ShardBackup, Engine, u32), BackupError> {
    let (source, role, target) = match caught_up_replica(req, conns, shard, offset).await {
        Some((line, t)) => (line, "replica", t),
        None => (shard.master.clone(), "master", target_of(&shard.master)?),
    };
    let info = conns.info(&target, "server").await?;
    let engine = Engine::from_info(&info).ok_or_else(|| {
        BackupError::Other(format!(
            "node {} does not say which engine it runs",
            source.address
        ))
    })?;
    let file = format!("shard-{index:02}.rdb");
    let path = dir.join(&file);
    let credential = conns.credential_for(&target).await;
    let fetched = fetch_rdb(&target, &credential, &path, req.timeout).await?;
    let header = std::fs::File::open(&path)
        .map_err(|e| e.to_string())
        .and_then(|f| read_header(std::io::BufReader::new(f)))
        .map_err(|p| BackupError::Fetch {
            node: source.id.clone(),
            address: source.address.clone(),
            problem: format!("what it sent is not a snapshot: {p}"),
        })?;
    info!(shard = index, source = %source.address, role, bytes = fetched.bytes, "shard snapshot fetched");
    Ok((
        ShardBackup {
            shard: u32::try_from(index).unwrap_or(u32::MAX),
            slots: shard.master.slots.clone(),
            source_id: source.id.clone(),
            source_address: source.address.clone(),
            source_role: role.into(),
            file,
            bytes: fetched.bytes,
            sha256: fetched.sha256,
            keys: header.keys,
        },
        engine,
        header.version,
    ))
}

/// Every complete backup of `cluster_id` in `store` (one with a manifest), newest first.
pub async fn list_backups(
    store: &dyn Store,
    cluster_id: &str,
) -> Result<Vec<Manifest>, BackupError> {
    let mut out = Vec::new();
    for id in backup_ids(store, cluster_id).await? {
        let key = format!("{cluster_id}/{id}/{MANIFEST_FILE}");
        if let Some(data) = store.get_bytes(&key).await? {
            let location = format!("{}/{cluster_id}/{id}", store.location());
            if let Ok(m) = Manifest::parse(&location, &data) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// Backup ids (folders) of `cluster_id`, complete or not, newest first.
async fn backup_ids(store: &dyn Store, cluster_id: &str) -> Result<Vec<String>, BackupError> {
    let mut ids: Vec<String> = store
        .list(&format!("{cluster_id}/"))
        .await?
        .iter()
        .filter_map(|k| k.split('/').nth(1).map(str::to_string))
        .collect();
    ids.sort();
    ids.dedup();
    ids.reverse();
    Ok(ids)
}

/// Keeps the newest `retain` complete backups of `cluster_id` and removes every older one,
/// with what an interrupted backup older than them left behind. Returns the removed ids.
pub async fn prune(
    store: &dyn Store,
    cluster_id: &str,
    retain: u32,
) -> Result<Vec<String>, BackupError> {
    let complete: Vec<String> = list_backups(store, cluster_id)
        .await?
        .into_iter()
        .map(|m| m.backup_id)
        .collect();
    let keep = usize::try_from(retain.max(1)).unwrap_or(usize::MAX);
    let Some(oldest_kept) = complete.get(keep.min(complete.len()).saturating_sub(1)) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for id in backup_ids(store, cluster_id).await? {
        if id.as_str() < oldest_kept.as_str() {
            store.delete_prefix(&format!("{cluster_id}/{id}/")).await?;
            info!(backup = %id, "pruned");
            removed.push(id);
        }
    }
    Ok(removed)
}
