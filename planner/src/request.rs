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
