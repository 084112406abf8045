//! The manifest of a backup (`manifest.json`, written last: a backup without one is
//! incomplete) and the checks a backup passes before anything is restored from it.

use std::path::Path;

use redisha_planner::{SlotRange, SLOT_COUNT};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::Engine;

use super::rdb::read_header;
use super::BackupError;

pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format this version writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// `<UTC time to the ms>Z-<4 hex digits>`: sorts by time.
    pub backup_id: String,
    pub cluster_id: String,
    /// The engine every source node ran.
    pub engine: Engine,
    /// The snapshot format of every file.
    pub rdb_version: u32,
    /// Unix seconds: when the backup started (every write acknowledged before is in it) and
    /// when its last file was written.
    pub started_at: u64,
    pub finished_at: u64,
    pub shards: Vec<ShardBackup>,
}

/// One shard's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardBackup {
    /// 0-based, in the order of the shards' first slots.
    pub shard: u32,
    /// The slots the shard served.
    pub slots: Vec<SlotRange>,
    /// The node the snapshot came from (its cluster node id and address) and its role.
    pub source_id: String,
    pub source_address: String,
    pub source_role: String,
    /// The file name, next to the manifest.
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    /// Keys in the snapshot (its RESIZEDB record), when it has one redisha reads.
    pub keys: Option<u64>,
}

impl Manifest {
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }

    pub fn total_keys(&self) -> u64 {
        self.shards.iter().filter_map(|s| s.keys).sum()
    }

    /// Parses a manifest read from `location` and checks it is whole: a known format, safe
    /// file names, every slot in exactly one shard, an engine whose snapshot format is known.
    pub fn parse(location: &str, data: &[u8]) -> Result<Manifest, BackupError> {
        let invalid = |problem: String| BackupError::Invalid {
            backup: location.to_string(),
            file: MANIFEST_FILE.to_string(),
            problem,
        };
        let m: Manifest = serde_json::from_slice(data)
            .map_err(|e| invalid(format!("not a redisha backup manifest: {e}")))?;
        if m.format != MANIFEST_FORMAT {
            return Err(invalid(format!(
                "manifest format {} is not the one this provider reads ({MANIFEST_FORMAT}); use the redisha version that wrote it",
                m.format
            )));
        }
        if m.shards.is_empty() {
            return Err(invalid("lists no shard".into()));
        }
        let mut owner = vec![None::<u32>; SLOT_COUNT as usize];
        for s in &m.shards {
            if super::store::check_key(&s.file).is_err()
                || s.file.contains('/')
                || s.file == MANIFEST_FILE
            {
                return Err(invalid(format!(
                    "shard {} names file {:?}, not a plain file name",
                    s.shard, s.file
                )));
            }
            for r in &s.slots {
                if r.start > r.end || u32::from(r.end) >= SLOT_COUNT {
                    return Err(invalid(format!(
                        "shard {}: slot range {r} is invalid",
                        s.shard
                    )));
                }
                for slot in r.start..=r.end {
                    if let Some(other) = owner[usize::from(slot)].replace(s.shard) {
                        return Err(invalid(format!(
                            "slot {slot} is in shard {other} and shard {}",
                            s.shard
                        )));
                    }
                }
            }
        }
        if let Some(missing) = owner.iter().position(Option::is_none) {
            return Err(invalid(format!(
                "slot {missing} is in no shard: a shard's file is missing from the backup"
            )));
        }
        if m.engine.rdb_version().is_none() {
            return Err(invalid(format!(
                "written by {}, whose snapshot (RDB) format redisha does not know",
                m.engine
            )));
        }
        Ok(m)
    }

    /// Why `target` cannot load this backup's snapshots, if it cannot: its RDB version must
    /// be known and at least the backup's.
    pub fn engine_refusal(&self, target: &Engine) -> Option<String> {
        match target.rdb_version() {
            None => Some(format!(
                "redisha does not know which snapshot (RDB) format {target} reads, so it cannot tell whether it loads this backup (RDB version {}, from {})",
                self.rdb_version, self.engine
            )),
            Some(v) if v < self.rdb_version => Some(format!(
                "{target} reads snapshots up to RDB version {v}, but this backup's are RDB version {} (written by {}); restore onto {} or newer",
                self.rdb_version, self.engine, self.engine
            )),
            Some(_) => None,
        }
    }

    /// Checks one shard's file against the manifest: size, SHA-256, and an RDB header of the
    /// manifest's version.
    pub fn verify_file(
        &self,
        location: &str,
        shard: &ShardBackup,
        path: &Path,
    ) -> Result<(), BackupError> {
        let invalid = |problem: String| BackupError::Invalid {
            backup: location.to_string(),
            file: shard.file.clone(),
            problem,
        };
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(invalid(
                    "missing: the manifest lists it, the backup does not have it".into(),
                ))
            }
            Err(e) => return Err(invalid(format!("cannot read {}: {e}", path.display()))),
        };
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        if bytes != shard.bytes {
            return Err(invalid(format!(
                "{bytes} bytes, but the manifest says {}: the file is truncated or was replaced",
                shard.bytes
            )));
        }
        let mut hash = Sha256::new();
        std::io::copy(&mut file, &mut hash)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let sum = super::fetch::hex(&hash.finalize());
        if sum != shard.sha256 {
            return Err(invalid(format!(
                "SHA-256 {sum} does not match the manifest's {}: the file is corrupt",
                shard.sha256
            )));
        }
        let header = std::fs::File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|f| read_header(std::io::BufReader::new(f)))
            .map_err(|p| invalid(format!("not a snapshot: {p}")))?;
        if header.version != self.rdb_version {
            return Err(invalid(format!(
                "RDB version {}, but the manifest says {}",
                header.version, self.rdb_version
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(ranges: &[(u16, u16)]) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            backup_id: "20240101T000000Z-abcd".into(),
            cluster_id: "0123456789abcdef".into(),
            engine: Engine {
                name: "redis".into(),
                version: "7.0.15".into(),
            },
            rdb_version: 10,
            started_at: 1,
            finished_at: 2,
            shards: ranges
                .iter()
                .enumerate()
                .map(|(i, (start, end))| ShardBackup {
                    shard: i as u32,
                    slots: vec![SlotRange {
                        start: *start,
                        end: *end,
                    }],
                    source_id: "id".into(),
                    source_address: "127.0.0.1:1".into(),
                    source_role: "replica".into(),
                    file: format!("shard-{i}.rdb"),
                    bytes: 0,
                    sha256: String::new(),
                    keys: Some(0),
                })
                .collect(),
        }
    }

    #[test]
    fn a_manifest_must_cover_every_slot_once() {
        let good = manifest(&[(0, 8191), (8192, 16383)]);
        let text = serde_json::to_vec(&good).unwrap();
        assert_eq!(Manifest::parse("b", &text).unwrap(), good);
        let gap = serde_json::to_vec(&manifest(&[(0, 8191)])).unwrap();
        let e = Manifest::parse("b", &gap).unwrap_err().to_string();
        assert!(
            e.contains("manifest.json") && e.contains("slot 8192 is in no shard"),
            "{e}"
        );
        let overlap = serde_json::to_vec(&manifest(&[(0, 9000), (8192, 16383)])).unwrap();
        assert!(Manifest::parse("b", &overlap).is_err());
        let mut odd = good.clone();
        odd.shards[0].file = "../x.rdb".into();
        assert!(Manifest::parse("b", &serde_json::to_vec(&odd).unwrap()).is_err());
    }

    #[test]
    fn newer_or_unknown_snapshot_formats_are_refused() {
        let m = manifest(&[(0, 16383)]);
        let e = |n: &str, v: &str| Engine {
            name: n.into(),
            version: v.into(),
        };
        assert_eq!(m.engine_refusal(&e("redis", "7.0.15")), None);
        assert_eq!(m.engine_refusal(&e("valkey", "8.1.8")), None);
        let old = m.engine_refusal(&e("redis", "6.2.14")).unwrap();
        assert!(old.contains("up to RDB version 9"), "{old}");
        assert!(m.engine_refusal(&e("redis", "9.0.0")).is_some());
        let mut unknown = m.clone();
        unknown.engine = e("redis", "99.1.0");
        let e = Manifest::parse("b", &serde_json::to_vec(&unknown).unwrap()).unwrap_err();
        assert!(e.to_string().contains("does not know"), "{e}");
    }
}
