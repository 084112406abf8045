//! Sentinel mode: one primary with replicas (redis-server without cluster mode) watched by
//! Redis Sentinel processes that fail over. The planner places both
//! (`redisha_planner::sentinel`); this module starts them through the driver
//! ([`crate::Driver::start_process`]), reads what Sentinel sees, repairs proven failures,
//! puts the planned primary back with `SENTINEL FAILOVER`, rotates the password without a
//! moment where Sentinel cannot log in, and tears everything down.
//!
//! Sentinel owns failover: redisha never promotes a replica itself in this mode (two deciders
//! would race). It only restarts processes the driver proves stopped, and asks Sentinel for a
//! failover when the user wants the planned primary back.

mod hosts;
mod lifecycle;
mod observe;
mod recover;
mod reshape;
mod rotate;

pub use lifecycle::SentinelRepair;
pub use observe::{DataView, SentinelObservation, SentinelView};
pub use reshape::Reshape;

use redisha_planner::{Node, Placement, Role, Sentinel};
use serde::{Deserialize, Serialize};

use crate::conn::{Conns, Target};
use crate::driver::{HostHandle, NodeHandle, ProcessKind};
use crate::ops::Operator;
use crate::secret::Password;

/// Ports of sentinels: the driver's port for node index `SENTINEL_INDEX_BASE + k` (local:
/// base_port + 100 + k), clear of any data node index.
pub const SENTINEL_INDEX_BASE: u16 = 100;

/// Sentinel-mode settings beyond the node settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelSettings {
    /// The name clients ask Sentinel for (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
    pub master_name: String,
    pub quorum: u32,
    /// Sentinel's `down-after-milliseconds`: how long the primary may not answer before a
    /// sentinel thinks it is down.
    pub down_after_ms: u64,
    pub failover_timeout_ms: u64,
    /// The primary refuses writes with fewer replicas connected, lagging less than
    /// `min_replicas_max_lag` seconds (bounds what an isolated primary accepts).
    pub min_replicas_to_write: u32,
    pub min_replicas_max_lag: u32,
}

impl Default for SentinelSettings {
    fn default() -> Self {
        SentinelSettings {
            master_name: "redisha".into(),
            quorum: 2,
            down_after_ms: 5000,
            failover_timeout_ms: 60_000,
            min_replicas_to_write: 1,
            min_replicas_max_lag: 10,
        }
    }
}

/// One process of the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub handle: NodeHandle,
    pub zone: String,
    /// Data nodes: the one the plan wants as primary.
    #[serde(default)]
    pub planned_primary: bool,
}

impl Member {
    pub fn target(&self) -> Target {
        Target::new(
            self.handle.name.clone(),
            self.handle.ip.clone(),
            self.handle.port,
        )
    }
    pub fn address(&self) -> String {
        self.handle.address()
    }
}

/// What exists, as the driver's handles: the provider keeps it as private state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelState {
    pub hosts: Vec<HostHandle>,
    /// The primary and its replicas.
    pub data: Vec<Member>,
    pub sentinels: Vec<Member>,
}

impl SentinelState {
    pub fn planned_primary(&self) -> Option<&Member> {
        self.data.iter().find(|m| m.planned_primary)
    }
    pub fn host(&self, name: &str) -> Option<&HostHandle> {
        self.hosts.iter().find(|h| h.name == name)
    }
    pub fn data_node(&self, address: &str) -> Option<&Member> {
        self.data.iter().find(|m| m.address() == address)
    }

    /// The data nodes as the planner's placement: the planned primary as the master. What
    /// runs is the previous placement of the next plan, and what a drill predicts from.
    pub fn placement(&self) -> Placement {
        Placement {
            nodes: self
                .data
                .iter()
                .map(|m| Node {
                    name: m.handle.name.clone(),
                    shard: 0,
                    role: if m.planned_primary {
                        Role::Master
                    } else {
                        Role::Replica
                    },
                    host: m.handle.host.clone(),
                    zone: m.zone.clone(),
                    slots: Vec::new(),
                })
                .collect(),
        }
    }

    /// The sentinels as the planner places them.
    pub fn placed_sentinels(&self) -> Vec<Sentinel> {
        self.sentinels
            .iter()
            .map(|m| Sentinel {
                name: m.handle.name.clone(),
                host: m.handle.host.clone(),
                zone: m.zone.clone(),
            })
            .collect()
    }
}

/// Runs a sentinel-mode deployment with one driver and the shared node settings.
pub struct SentinelOperator<'a> {
    pub(crate) op: Operator<'a>,
    pub(crate) settings: SentinelSettings,
    /// Seeds the sentinels' fixed run ids.
    pub(crate) cluster_id: String,
    /// The sentinels' own password (by default the data nodes' one).
    pub(crate) sentinel_password: Option<Password>,
    /// Connections to sentinels: the sentinel password first, then any a rotation cut short
    /// may have left, then none (sentinels made before they had a password).
    pub(crate) sentinel_conns: Conns,
}

impl<'a> SentinelOperator<'a> {
    /// The sentinels get the data nodes' password as theirs unless
    /// [`SentinelOperator::with_sentinel_password`] gives them another.
    pub fn new(op: Operator<'a>, settings: SentinelSettings, cluster_id: &str) -> Self {
        let sentinel_password = op.config.password.clone();
        let sentinel_conns = Conns::new(
            sentinel_password.clone(),
            op.options.connect_timeout,
            op.options.command_timeout,
        );
        let mut this = SentinelOperator {
            op,
            settings,
            cluster_id: cluster_id.to_string(),
            sentinel_password,
            sentinel_conns,
        };
        this.also_accept_on_sentinels([]);
        this
    }

    /// The sentinels' own password, when it is not the data nodes' (`None`: theirs).
    pub fn with_sentinel_password(mut self, password: Option<Password>) -> Self {
        if password.is_some() {
            self.sentinel_password = password;
            self.also_accept_on_sentinels([]);
        }
        self
    }

    /// Passwords the sentinels may still accept (the previous one, while a rotation is
    /// under way or was cut short), tried after the configured one to connect.
    pub fn also_accept_on_sentinels(
        &mut self,
        passwords: impl IntoIterator<Item = Option<Password>>,
    ) {
        let mut all = vec![self.sentinel_password.clone()];
        all.extend(passwords);
        all.push(None);
        self.sentinel_conns.set_passwords(all);
    }

    pub fn sentinel_password(&self) -> Option<&Password> {
        self.sentinel_password.as_ref()
    }

    pub fn settings(&self) -> &SentinelSettings {
        &self.settings
    }

    pub fn operator(&self) -> &Operator<'a> {
        &self.op
    }

    pub(crate) fn standalone(&self, replica_of: Option<(String, u16)>) -> ProcessKind {
        ProcessKind::Standalone {
            replica_of,
            min_replicas_to_write: self.settings.min_replicas_to_write,
            min_replicas_max_lag: self.settings.min_replicas_max_lag,
        }
    }

    pub(crate) fn sentinel_kind(&self, name: &str, primary: (String, u16)) -> ProcessKind {
        ProcessKind::Sentinel {
            master_name: self.settings.master_name.clone(),
            primary,
            quorum: self.settings.quorum,
            down_after_ms: self.settings.down_after_ms,
            failover_timeout_ms: self.settings.failover_timeout_ms,
            myid: sentinel_id(&self.cluster_id, name),
            password: self.sentinel_password.clone(),
        }
    }
}

/// A sentinel's run id: 40 hex digits, the same for one sentinel of one deployment every time
/// (FNV-1a over the cluster id and the name, three salts).
pub fn sentinel_id(cluster_id: &str, name: &str) -> String {
    let mut out = String::new();
    for salt in 0u8..3 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in [salt]
            .iter()
            .chain(cluster_id.as_bytes())
            .chain(b"/")
            .chain(name.as_bytes())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out.truncate(40);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_ids_are_stable_distinct_and_well_formed() {
        let a = sentinel_id("0123456789abcdef", "sentinel-1");
        assert_eq!(a, sentinel_id("0123456789abcdef", "sentinel-1"));
        assert_ne!(a, sentinel_id("0123456789abcdef", "sentinel-2"));
        assert_ne!(a, sentinel_id("fedcba9876543210", "sentinel-1"));
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
