//! The planner's output: where every node runs, its role and its slots.

use serde::{Deserialize, Serialize};

pub const SLOT_COUNT: u32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Replica => "replica",
        }
    }
}

/// An inclusive range of hash slots, `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
}

impl SlotRange {
    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::fmt::Display for SlotRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// One redis-server process. `name` is stable for the life of the node, whatever its role:
/// a failover swaps roles, never names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// 0-based shard index.
    pub shard: u32,
    pub role: Role,
    pub host: String,
    pub zone: String,
    /// Slots served when this node is the shard's master; empty for replicas.
    #[serde(default)]
    pub slots: Vec<SlotRange>,
}

/// A complete placement. Nodes are sorted by (shard, role master first, name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Placement {
    pub nodes: Vec<Node>,
}

impl Placement {
    pub fn masters(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Master)
    }
    pub fn shard_nodes(&self, shard: u32) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.shard == shard)
    }
    pub fn master_of(&self, shard: u32) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.shard == shard && n.role == Role::Master)
    }
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
    pub fn shard_count(&self) -> u32 {
        self.nodes.iter().map(|n| n.shard + 1).max().unwrap_or(0)
    }
}
