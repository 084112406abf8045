//! Backups of a whole cluster and restores from them.
//!
//! - [`take::take_backup`]: one snapshot per shard, fetched from a caught-up replica of the
//!   shard where one exists (over the replication protocol, see `fetch`), stored with a
//!   [`Manifest`] (cluster id, engine, slot ranges, key counts, sizes, SHA-256 of every file),
//!   then older backups of the cluster pruned to `retain`.
//! - [`restore`]: a backup checked whole before any node starts ([`restore::open`],
//!   [`restore::stage`]); each master seeded with its shard's snapshot when the new cluster
//!   has the same shards ([`restore::seed_plan`]), else every key loaded and routed by slot
//!   ([`restore::load_keys`]).
//!
//! Stores: [`DirStore`] here, S3 in the aws crate (both behind [`Store`]). Keys:
//! `<cluster id>/<backup id>/manifest.json` and `.../shard-NN.rdb`. A backup's own location
//! (what `restore_from` names) is `<store location>/<cluster id>/<backup id>`.
//! Backup ids are `<UTC time to the ms>Z-<4 hex digits>`, so they sort by time.

pub mod fetch;
pub mod manifest;
pub mod rdb;
pub mod restore;
pub mod store;
pub mod take;

pub use manifest::{Manifest, ShardBackup, MANIFEST_FILE};
pub use store::{DirStore, Store, StoreError};
pub use take::{list_backups, prune, take_backup, BackupRequest};

use crate::error::ClusterError;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A backup that cannot be restored: names the file and what is wrong with it.
    #[error("backup {backup}: {file}: {problem}")]
    Invalid {
        backup: String,
        file: String,
        problem: String,
    },
    #[error("node {node} ({address}): fetching its snapshot failed: {problem}")]
    Fetch {
        node: String,
        address: String,
        problem: String,
    },
    #[error("backup store {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Other(String),
}

/// A new backup id: the UTC time to the millisecond (ids sort by time), then 4 random hex
/// digits (two backups in one millisecond).
pub fn new_backup_id(unix_ms: u64) -> String {
    let random = crate::identity::new_cluster_id().unwrap_or_default();
    let stamp = utc_stamp(unix_ms / 1000);
    format!(
        "{}.{:03}Z-{}",
        stamp.trim_end_matches('Z'),
        unix_ms % 1000,
        &random[..random.len().min(4)]
    )
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `20240131T235959Z`.
pub fn utc_stamp(unix_secs: u64) -> String {
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(0);
    let rest = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_706_745_599), "20240131T235959Z");
        let id = new_backup_id(1_706_745_599_042);
        assert!(
            id.starts_with("20240131T235959.042Z-") && id.len() == 25,
            "{id}"
        );
    }
}
