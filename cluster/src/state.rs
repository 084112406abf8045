//! What the provider stores in Terraform state for a cluster: the driver's handles plus each
//! node's planner identity and redis node id.

use std::collections::BTreeSet;

use redisha_planner::{Node, Placement, Request, Role, SlotRange};
use serde::{Deserialize, Serialize};

use crate::conn::Target;
use crate::driver::{HostHandle, HostPlan, NodeHandle, NodePlan};
use crate::error::{ClusterError, Result};
use crate::identity::NodeRecord;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterState {
    /// The cluster's unique id (`identity::new_cluster_id`), recorded on every node; empty in
    /// states written before ids existed (the next apply gives them one).
    #[serde(default)]
    pub cluster_id: String,
    /// The cluster's name (`name` in Terraform).
    #[serde(default)]
    pub name: String,
    /// `Driver::kind` of the driver that made the hosts (`imported` for adopted clusters).
    pub driver: String,
    pub hosts: Vec<HostHandle>,
    pub nodes: Vec<ClusterNode>,
    /// The ACL users redisha made on the nodes (the names `user` blocks declared at some
    /// apply): a user no longer declared is deleted only if it is named here, so one made by
    /// hand is left alone. `None`: not known (a private state lost or written by an older
    /// provider, an imported cluster); the caller then counts only the users the last applied
    /// configuration declared as redisha's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_users: Option<BTreeSet<String>>,
}

/// One node: where the plan put it and what exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub name: String,
    pub shard: u32,
    /// The planned role (the observed one may differ after a failover: that is drift).
    pub role: Role,
    pub zone: String,
    pub host: String,
    /// Planned slots (masters).
    #[serde(default)]
    pub slots: Vec<SlotRange>,
    /// The redis cluster node id (CLUSTER MYID); empty until the node answered.
    #[serde(default)]
    pub node_id: String,
    pub handle: NodeHandle,
}

impl ClusterNode {
    /// A node where the plan puts it, with what exists for it.
    pub fn planned(node: &Node, node_id: String, handle: NodeHandle) -> Self {
        ClusterNode {
            name: node.name.clone(),
            shard: node.shard,
            role: node.role,
            zone: node.zone.clone(),
            host: node.host.clone(),
            slots: node.slots.clone(),
            node_id,
            handle,
        }
    }

    pub fn target(&self) -> Target {
        Target::new(&self.name, &self.handle.ip, self.handle.port)
    }

    /// What the driver starts for this node.
    pub fn node_plan(&self) -> NodePlan {
        NodePlan {
            name: self.name.clone(),
            index_on_host: self.handle.index_on_host,
            shard: self.shard,
            role: self.role,
        }
    }
    pub fn address(&self) -> String {
        self.handle.address()
    }
}

impl ClusterState {
    pub fn new(driver: &str) -> Self {
        ClusterState {
            driver: driver.to_string(),
            ..Default::default()
        }
    }

    /// The placement this state was planned as (input of `redisha_planner::migrate::steps`).
    pub fn placement(&self) -> Placement {
        let mut nodes: Vec<Node> = self
            .nodes
            .iter()
            .map(|n| Node {
                name: n.name.clone(),
                shard: n.shard,
                role: n.role,
                host: n.host.clone(),
                zone: n.zone.clone(),
                slots: n.slots.clone(),
            })
            .collect();
        nodes.sort_by(|a, b| (a.shard, a.role, &a.name).cmp(&(b.shard, b.role, &b.name)));
        Placement { nodes }
    }

    /// The record the driver keeps on `node` (see `identity`).
    pub fn record_of(&self, node: &ClusterNode) -> NodeRecord {
        NodeRecord {
            format: crate::identity::RECORD_FORMAT,
            cluster_id: self.cluster_id.clone(),
            cluster_name: self.name.clone(),
            name: node.name.clone(),
            shard: node.shard,
            role: node.role,
            zone: node.zone.clone(),
            host: node.host.clone(),
            address: node.handle.ip.clone(),
            index_on_host: node.handle.index_on_host,
        }
    }

    pub fn node(&self, name: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn node_mut(&mut self, name: &str) -> Option<&mut ClusterNode> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }

    pub(crate) fn require(&self, name: &str) -> Result<&ClusterNode> {
        self.node(name)
            .ok_or_else(|| ClusterError::Plan(format!("node {name:?} is not in the cluster state")))
    }

    pub fn host(&self, name: &str) -> Option<&HostHandle> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn by_id(&self, id: &str) -> Option<&ClusterNode> {
        self.nodes
            .iter()
            .find(|n| !id.is_empty() && n.node_id == id)
    }

    /// `host:port` of every node.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(ClusterNode::address).collect()
    }

    pub fn targets(&self) -> Vec<Target> {
        self.nodes.iter().map(ClusterNode::target).collect()
    }

    /// Updates the planned role/slots from a target placement (after an update).
    pub fn adopt_plan(&mut self, placement: &Placement) {
        for n in &mut self.nodes {
            if let Some(p) = placement.node(&n.name) {
                n.role = p.role;
                n.shard = p.shard;
                n.slots = p.slots.clone();
            }
        }
    }

    /// Follows a finished migration step, so that a state saved after a later failure names
    /// the planned roles and slots as they now are (the next plan starts from there).
    pub fn apply_step(&mut self, step: &redisha_planner::Step) {
        use redisha_planner::Step;
        match step {
            Step::Failover { node } => {
                let Some(shard) = self.node(node).map(|n| n.shard) else {
                    return;
                };
                let slots: Vec<SlotRange> = self
                    .nodes
                    .iter()
                    .filter(|n| n.shard == shard)
                    .flat_map(|n| n.slots.clone())
                    .collect();
                for n in self.nodes.iter_mut().filter(|n| n.shard == shard) {
                    let promoted = &n.name == node;
                    n.role = if promoted {
                        Role::Master
                    } else {
                        Role::Replica
                    };
                    n.slots = if promoted { slots.clone() } else { Vec::new() };
                }
            }
            Step::MigrateSlots { from, to, slots } => {
                let moved = |s: &u16| (slots.start..=slots.end).contains(s);
                if let Some(f) = self.node_mut(from) {
                    let kept: Vec<u16> = f
                        .slots
                        .iter()
                        .flat_map(|r| r.start..=r.end)
                        .filter(|s| !moved(s))
                        .collect();
                    f.slots = crate::conn::slots_to_ranges(kept);
                }
                if let Some(t) = self.node_mut(to) {
                    let mut all: Vec<u16> = t.slots.iter().flat_map(|r| r.start..=r.end).collect();
                    all.extend(slots.start..=slots.end);
                    t.slots = crate::conn::slots_to_ranges(all);
                }
            }
            _ => {}
        }
    }

    /// The lowest node index on `host` not used by a node of this state.
    pub(crate) fn free_index_on(&self, host: &str) -> u16 {
        let used: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.host == host)
            .map(|n| n.handle.index_on_host)
            .collect();
        (0..).find(|i| !used.contains(i)).unwrap_or(0)
    }
}

/// The zone and host indexes of `host` in the request.
pub fn locate_host(request: &Request, host: &str) -> Result<(u32, u32, String)> {
    for (zi, zone) in request.zones.iter().enumerate() {
        if let Some(hi) = zone.hosts.iter().position(|h| h.name == host) {
            let zi = u32::try_from(zi).map_err(|_| ClusterError::Plan("too many zones".into()))?;
            let hi = u32::try_from(hi).map_err(|_| ClusterError::Plan("too many hosts".into()))?;
            return Ok((zi, hi, zone.name.clone()));
        }
    }
    Err(ClusterError::Plan(format!(
        "host {host:?} of the placement is not in the request's zones"
    )))
}

/// The hosts a placement uses, with their nodes and node indexes. Nodes already in `state`
/// keep their index; new ones take the lowest free index on their host.
pub fn host_plans(
    request: &Request,
    placement: &Placement,
    state: &ClusterState,
) -> Result<Vec<HostPlan>> {
    let mut plans: Vec<HostPlan> = Vec::new();
    let mut scratch = state.clone();
    for node in &placement.nodes {
        let index = match state.node(&node.name) {
            Some(existing) => existing.handle.index_on_host,
            None => {
                let i = scratch.free_index_on(&node.host);
                scratch.nodes.push(placeholder(node, i));
                i
            }
        };
        let plan = match plans.iter_mut().position(|h| h.name == node.host) {
            Some(i) => &mut plans[i],
            None => {
                let (zone_index, host_index, zone) = locate_host(request, &node.host)?;
                plans.push(HostPlan {
                    name: node.host.clone(),
                    zone,
                    zone_index,
                    host_index,
                    nodes: Vec::new(),
                });
                let last = plans.len() - 1;
                &mut plans[last]
            }
        };
        plan.nodes.push(NodePlan {
            name: node.name.clone(),
            index_on_host: index,
            shard: node.shard,
            role: node.role,
        });
    }
    Ok(plans)
}

fn placeholder(node: &Node, index: u16) -> ClusterNode {
    ClusterNode {
        name: node.name.clone(),
        shard: node.shard,
        role: node.role,
        zone: node.zone.clone(),
        host: node.host.clone(),
        slots: Vec::new(),
        node_id: String::new(),
        handle: NodeHandle {
            name: node.name.clone(),
            host: node.host.clone(),
            ip: String::new(),
            port: 0,
            index_on_host: index,
            pid: None,
            data_dir: None,
            config_file: None,
        },
    }
}
