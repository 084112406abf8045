//! Cluster identity: a unique id made at create (the name is not the id), recorded on every
//! node and on the cluster, so that a driver acts only on what carries the id and a provider
//! that lost Terraform's private state (killed mid-apply) finds its nodes again.
//!
//! - `ClusterRecord`: the cluster (local: `<data_dir>/<id>/redisha-cluster.json`). Its
//!   `status` tells a create that finished from one that was interrupted, and `owner_pid` which
//!   provider process is working on it, so a second apply never takes over a running one.
//! - `NodeRecord`: one node (local: `redisha-node.json` in the node's directory), written
//!   before its process starts.

use serde::{Deserialize, Serialize};

use redisha_planner::Role;

/// The format of both records; a later version reads older ones.
pub const RECORD_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterStatus {
    /// Create started and has not finished: the next apply of the same configuration resumes it.
    Creating,
    /// Create finished: the cluster belongs to the Terraform state it was returned to.
    Ready,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    #[serde(default = "record_format")]
    pub format: u32,
    pub cluster_id: String,
    pub name: String,
    pub status: ClusterStatus,
    /// The provider process working on the cluster while `Creating`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pid: Option<u32>,
}

impl ClusterRecord {
    pub fn new(cluster_id: &str, name: &str, status: ClusterStatus) -> Self {
        ClusterRecord {
            format: RECORD_FORMAT,
            cluster_id: cluster_id.to_string(),
            name: name.to_string(),
            status,
            owner_pid: (status == ClusterStatus::Creating).then(std::process::id),
        }
    }

    /// An interrupted create: still `Creating` and its provider process is gone.
    pub fn is_abandoned_create(&self) -> bool {
        self.status == ClusterStatus::Creating && !self.owner_pid.is_some_and(pid_alive)
    }
}

/// What a node carries about itself: enough to rebuild the cluster's state without Terraform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    #[serde(default = "record_format")]
    pub format: u32,
    pub cluster_id: String,
    pub cluster_name: String,
    pub name: String,
    pub shard: u32,
    /// The planned role when the record was written.
    pub role: Role,
    pub zone: String,
    pub host: String,
    /// The host's address (what the node binds and announces).
    pub address: String,
    pub index_on_host: u16,
}

fn record_format() -> u32 {
    RECORD_FORMAT
}

/// A new cluster id: 16 lowercase hex digits from the kernel's random source.
pub fn new_cluster_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `id` has the form `new_cluster_id` makes (it names directories and tags).
pub fn is_cluster_id(id: &str) -> bool {
    id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `pid` is still a running provider process (a reused pid running something else
/// does not count).
fn pid_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).contains("terraform-provider-redisha"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let a = new_cluster_id().unwrap();
        let b = new_cluster_id().unwrap();
        assert!(is_cluster_id(&a) && is_cluster_id(&b));
        assert_ne!(a, b);
        assert!(!is_cluster_id("../etc"));
        assert!(!is_cluster_id("ABCDEF0123456789"));
    }

    #[test]
    fn a_create_whose_provider_is_gone_is_abandoned() {
        let mine = ClusterRecord::new("0123456789abcdef", "c", ClusterStatus::Creating);
        assert_eq!(mine.owner_pid, Some(std::process::id()));
        // This test process is no provider: its create counts as abandoned.
        assert!(mine.is_abandoned_create());
        let mut gone = mine.clone();
        gone.owner_pid = Some(u32::MAX - 1);
        assert!(gone.is_abandoned_create());
        let ready = ClusterRecord::new("0123456789abcdef", "c", ClusterStatus::Ready);
        assert!(!ready.is_abandoned_create());
    }
}
