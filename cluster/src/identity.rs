//! Cluster identity: a unique id made at create (the name is not the id), recorded on every
//! node and on the cluster, so that a driver acts only on what carries the id and a provider
//! that lost Terraform's private state (killed mid-apply) finds its nodes again.
//!
//! - `ClusterRecord`: the cluster (local: `<data_dir>/<id>/redisha-cluster.json`; aws: tags on
//!   the cluster's security group). Its `status` tells a create that finished from one that was
//!   interrupted, and its owner (machine, pid, lease) which provider process is working on it,
//!   so a second apply never takes over a running one, on this machine or another.
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
    /// The machine that process runs on (see [`this_machine`]): its pid means nothing on
    /// another machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_machine: Option<String>,
    /// Unix seconds until which the owner holds the create. The owner renews it while it works
    /// (see [`CREATE_LEASE`]); from another machine, only a lease run out proves the owner gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<u64>,
}

/// How long a create's owner holds it without renewing. An apply on another machine resumes
/// an interrupted create only after this: the owner's pid cannot be checked from there.
pub const CREATE_LEASE: std::time::Duration = std::time::Duration::from_secs(180);

/// How often a working create renews its lease: several renewals fit in one lease, so a slow
/// API call does not let it run out.
pub const LEASE_RENEWAL: std::time::Duration = std::time::Duration::from_secs(30);

impl ClusterRecord {
    pub fn new(cluster_id: &str, name: &str, status: ClusterStatus) -> Self {
        ClusterRecord {
            format: RECORD_FORMAT,
            cluster_id: cluster_id.to_string(),
            name: name.to_string(),
            status,
            owner_pid: None,
            owner_machine: None,
            lease_until: None,
        }
        .owned_now()
    }

    /// The record with this process as owner and a fresh lease while `Creating` (no owner once
    /// `Ready`): what a working create writes, and rewrites every [`LEASE_RENEWAL`].
    pub fn owned_now(mut self) -> Self {
        let creating = self.status == ClusterStatus::Creating;
        self.owner_pid = creating.then(std::process::id);
        self.owner_machine = creating.then(this_machine);
        self.lease_until = creating.then(|| unix_now() + CREATE_LEASE.as_secs());
        self
    }

    /// Whether this process is the create's owner.
    pub fn is_mine(&self) -> bool {
        self.owner_pid == Some(std::process::id())
            && self
                .owner_machine
                .as_deref()
                .is_none_or(|m| m == this_machine())
    }

    /// An interrupted create: still `Creating` and its owner is proven gone. On the owner's
    /// machine (or for a record that names none) its process must be gone; from another
    /// machine its lease must have run out.
    pub fn is_abandoned_create(&self) -> bool {
        if self.status != ClusterStatus::Creating {
            return false;
        }
        match self.owner_machine.as_deref() {
            Some(m) if m != this_machine() => self.lease_until.is_some_and(|t| unix_now() > t),
            _ => !self.owner_pid.is_some_and(pid_alive),
        }
    }

    /// Who holds the create, for messages: `pid 123 on machine abc`.
    pub fn owner(&self) -> String {
        let pid = self
            .owner_pid
            .map_or("an unknown process".to_string(), |p| format!("process {p}"));
        match &self.owner_machine {
            Some(m) if *m != this_machine() => format!("{pid} on machine {m}"),
            _ => format!("{pid} on this machine"),
        }
    }
}

/// This machine's identity: systemd's machine id, else the kernel's boot id, else the host
/// name. Two machines never share the first two; the host name is the last resort.
pub fn this_machine() -> String {
    [
        "/etc/machine-id",
        "/proc/sys/kernel/random/boot_id",
        "/proc/sys/kernel/hostname",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| s.trim().replace('-', ""))
    .find(|s| !s.is_empty())
    .unwrap_or_else(|| "unknown".to_string())
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
        assert_eq!(ready.owner_machine, None);
    }

    #[test]
    fn another_machines_create_is_abandoned_only_once_its_lease_ran_out() {
        let mut theirs = ClusterRecord::new("0123456789abcdef", "c", ClusterStatus::Creating);
        theirs.owner_machine = Some("someothermachine".into());
        // Its pid may well be alive here: that proves nothing about another machine.
        theirs.owner_pid = Some(1);
        assert!(!theirs.is_abandoned_create(), "a live lease is held");
        assert!(!theirs.is_mine());
        theirs.lease_until = Some(unix_now() - 1);
        assert!(theirs.is_abandoned_create());
        theirs.lease_until = None;
        assert!(
            !theirs.is_abandoned_create(),
            "no lease: nothing proves it gone"
        );
        assert!(theirs.owner().contains("on machine someothermachine"));
    }

    #[test]
    fn records_of_older_providers_still_read() {
        let old: ClusterRecord = serde_json::from_str(
            r#"{"format":1,"cluster_id":"0123456789abcdef","name":"c","status":"creating","owner_pid":4294967294}"#,
        )
        .unwrap();
        assert_eq!(old.owner_machine, None);
        assert!(
            old.is_abandoned_create(),
            "its pid is checked on this machine"
        );
    }
}
