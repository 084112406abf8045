//! Reading the real cluster, node by node, so the provider can show drift: a dead node, a
//! promoted replica, a moved slot.

use futures::future::join_all;
use redisha_planner::{Role, SlotRange};
use serde::{Deserialize, Serialize};

use crate::conn::{parse_info, Conns, Target};
use crate::driver::ProcessState;
use crate::ops::Operator;
use crate::state::{ClusterNode, ClusterState};

/// What one node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeView {
    pub address: String,
    /// Answered PING/CLUSTER NODES.
    pub alive: bool,
    pub node_id: Option<String>,
    pub role: Option<Role>,
    /// The master's node id, for replicas.
    pub master_id: Option<String>,
    /// `up`/`down` for replicas.
    pub link_status: Option<String>,
    pub slots: Vec<SlotRange>,
    /// master_repl_offset of a master, slave_repl_offset of a replica.
    pub repl_offset: Option<u64>,
    pub cluster_state: Option<String>,
    /// Why the node could not be read.
    pub error: Option<String>,
    /// Ids of the nodes this node flags `fail`: a failure the majority of masters agreed on
    /// (`fail?` is one node's suspicion and is not listed).
    #[serde(default)]
    pub failed_peers: Vec<String>,
    /// Slots this node is migrating or importing (half-moved).
    #[serde(default)]
    pub open_slots: Vec<u16>,
}

/// A node of the state and what it looks like now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeObservation {
    pub name: String,
    pub shard: u32,
    pub planned_role: Role,
    pub process: ProcessState,
    /// The name of the node it replicates, when that node is in the state.
    pub master_name: Option<String>,
    pub view: NodeView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub nodes: Vec<NodeObservation>,
}

impl Observation {
    /// Human-readable differences between plan and reality; empty when none.
    pub fn drift(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.nodes {
            if !n.view.alive {
                out.push(format!(
                    "node {} is down ({})",
                    n.name,
                    n.view.error.as_deref().unwrap_or("no answer")
                ));
                continue;
            }
            if n.view.role != Some(n.planned_role) {
                out.push(format!(
                    "node {} is {} but planned {}",
                    n.name,
                    n.view.role.map_or("unknown", Role::as_str),
                    n.planned_role.as_str()
                ));
            }
            if n.view.role == Some(Role::Replica) && n.view.link_status.as_deref() != Some("up") {
                out.push(format!("replica {} has its replication link down", n.name));
            }
            if n.view.cluster_state.as_deref() != Some("ok") {
                out.push(format!("node {} reports cluster_state not ok", n.name));
            }
        }
        out
    }

    pub fn node(&self, name: &str) -> Option<&NodeObservation> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// Reads one node: CLUSTER NODES, CLUSTER INFO and INFO replication in one round trip.
pub async fn view_node(conns: &Conns, t: &Target) -> NodeView {
    let mut view = NodeView {
        address: t.address(),
        ..Default::default()
    };
    let mut pipe = redis::pipe();
    pipe.cmd("CLUSTER")
        .arg("NODES")
        .cmd("CLUSTER")
        .arg("INFO")
        .cmd("INFO")
        .arg("replication");
    let (nodes, cinfo, rinfo): (String, String, String) =
        match conns.pipe(t, &pipe, "CLUSTER NODES").await {
            Ok(v) => v,
            Err(e) => {
                view.error = Some(e.to_string());
                return view;
            }
        };
    view.alive = true;
    let lines = match crate::conn::parse_cluster_nodes(&nodes) {
        Ok(l) => l,
        Err(e) => {
            view.error = Some(e);
            return view;
        }
    };
    let rinfo = parse_info(&rinfo);
    view.cluster_state = parse_info(&cinfo).get("cluster_state").cloned();
    view.failed_peers = lines
        .iter()
        .filter(|l| l.has_flag("fail"))
        .map(|l| l.id.clone())
        .collect();
    if let Some(me) = lines.iter().find(|l| l.is_myself()) {
        view.node_id = Some(me.id.clone());
        view.slots = me.slots.clone();
        view.open_slots = me
            .migrating
            .iter()
            .chain(&me.importing)
            .map(|m| m.slot)
            .collect();
        if me.is_master() {
            view.role = Some(Role::Master);
            view.repl_offset = rinfo.get("master_repl_offset").and_then(|v| v.parse().ok());
        } else {
            view.role = Some(Role::Replica);
            view.master_id = me.master_id.clone();
            view.link_status = rinfo.get("master_link_status").cloned();
            view.repl_offset = rinfo.get("slave_repl_offset").and_then(|v| v.parse().ok());
        }
    }
    view
}

impl Operator<'_> {
    /// Observes every node of the state (process and redis view) concurrently.
    pub async fn observe(&self, state: &ClusterState) -> Observation {
        let nodes = join_all(state.nodes.iter().map(|n| self.observe_node(state, n))).await;
        Observation { nodes }
    }

    async fn observe_node(&self, state: &ClusterState, n: &ClusterNode) -> NodeObservation {
        let process = self
            .driver
            .inspect_node(&n.handle)
            .await
            .unwrap_or(ProcessState::Unknown);
        let view = if process == ProcessState::Stopped {
            NodeView {
                address: n.address(),
                error: Some("process is not running".into()),
                ..Default::default()
            }
        } else {
            view_node(&self.conns, &n.target()).await
        };
        let master_name = view
            .master_id
            .as_deref()
            .and_then(|id| state.by_id(id))
            .map(|m| m.name.clone());
        NodeObservation {
            name: n.name.clone(),
            shard: n.shard,
            planned_role: n.role,
            process,
            master_name,
            view,
        }
    }
}
