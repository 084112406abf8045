//! What the provider stores in Terraform state for a cluster: the driver's handles plus each
//! node's planner identity and redis node id.

use redisha_planner::{Node, Placement, Request, Role, SlotRange};
use serde::{Deserialize, Serialize};

use crate::conn::Target;
use crate::driver::{HostHandle, HostPlan, NodeHandle, NodePlan};
use crate::error::{ClusterError, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterState {
    /// `Driver::kind` of the driver that made the hosts (`imported` for adopted clusters).
    pub driver: String,
    pub hosts: Vec<HostHandle>,
    pub nodes: Vec<ClusterNode>,
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
