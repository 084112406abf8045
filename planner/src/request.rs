//! The planner's input: a cluster shape plus the failure-domain topology.
//! The same shape is read from JSON or TOML and built by the Terraform data source.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub cluster: ClusterSpec,
    pub zones: Vec<ZoneSpec>,
    #[serde(default)]
    pub partitions: Vec<PartitionSpec>,
    /// Sentinel mode: one shard (a primary and its replicas) watched by Redis Sentinel
    /// processes, for applications that cannot use Redis Cluster. Unset: Redis Cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<SentinelSpec>,
}

/// The sentinels of a sentinel-mode deployment ([`crate::sentinel`] places them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelSpec {
    /// Sentinel processes: 3 or 5 (an odd count, so a majority is well defined and one more
    /// than half can be spread over three zones).
    #[serde(default = "default_sentinels")]
    pub count: u32,
    /// Sentinels that must agree the primary is down before a failover is attempted. Unset: a
    /// majority of `count`. A failover also needs a majority of all sentinels to elect a
    /// leader, whatever the quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// Memory one sentinel needs on its host (they are small; default 64 MB).
    #[serde(default = "default_sentinel_memory_mb")]
    pub memory_mb: u64,
    /// `min-replicas-to-write` on the primary: it refuses writes with fewer connected replicas,
    /// so a primary cut off from its replicas stops taking writes that a failover on the other
    /// side would throw away. 0 turns the guard off (not advised).
    #[serde(default = "default_min_replicas_to_write")]
    pub min_replicas_to_write: u32,
}

impl Default for SentinelSpec {
    fn default() -> Self {
        SentinelSpec {
            count: default_sentinels(),
            quorum: None,
            memory_mb: default_sentinel_memory_mb(),
            min_replicas_to_write: default_min_replicas_to_write(),
        }
    }
}

impl SentinelSpec {
    /// More than half of all sentinels: what electing a failover leader needs.
    pub fn majority(&self) -> u32 {
        self.count / 2 + 1
    }
    /// The quorum in effect (the majority when unset).
    pub fn quorum(&self) -> u32 {
        self.quorum.unwrap_or_else(|| self.majority())
    }
    /// Sentinels a side needs to fail over: the quorum to agree, a majority to authorise.
    pub fn needed(&self) -> u32 {
        self.quorum().max(self.majority())
    }
}

fn default_sentinels() -> u32 {
    3
}
fn default_sentinel_memory_mb() -> u64 {
    64
}
fn default_min_replicas_to_write() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub shards: u32,
    pub replicas: u32,
    pub node_memory_mb: u64,
    #[serde(default)]
    pub spread: Spread,
    /// Failures the plan must survive, as a hard requirement. Unset (all zero) keeps the
    /// default goal: survive any one zone and every declared partition where the topology allows.
    #[serde(default, skip_serializing_if = "Survive::is_unset")]
    pub survive: Survive,
}

/// A survival goal: any `zones` simultaneous zone losses, and any `hosts` simultaneous host
/// losses, leave a copy of every shard and a strict majority of the masters. A plan that cannot
/// meet it is refused (`PlanError::Infeasible`) rather than returned with a warning, since the
/// user asked for it explicitly. 0 means "no requirement" for that level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Survive {
    #[serde(default)]
    pub zones: u32,
    #[serde(default)]
    pub hosts: u32,
}

impl Survive {
    pub fn is_unset(&self) -> bool {
        self.zones == 0 && self.hosts == 0
    }
}

/// The failure-domain level at which two copies of one shard may never meet.
/// Copies never share a host whatever the level.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    Host,
    Rack,
    #[default]
    Zone,
}

impl Spread {
    pub fn as_str(self) -> &'static str {
        match self {
            Spread::Host => "host",
            Spread::Rack => "rack",
            Spread::Zone => "zone",
        }
    }
}

impl std::str::FromStr for Spread {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host" => Ok(Spread::Host),
            "rack" => Ok(Spread::Rack),
            "zone" => Ok(Spread::Zone),
            other => Err(format!("unknown spread {other:?}: use host, rack or zone")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    pub name: String,
    pub hosts: Vec<HostSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub name: String,
    pub memory_mb: u64,
    #[serde(default = "default_max_nodes")]
    pub max_nodes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

fn default_max_nodes() -> u32 {
    1
}

/// One side of a possible network split; every zone not named is on the other side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    pub name: String,
    pub side: Vec<String>,
}
