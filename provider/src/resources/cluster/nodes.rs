//! The `nodes`, `endpoints` attribute values: as planned (before apply) and as observed (read).

use redisha_cluster::observe::Observation;
use redisha_cluster::state::{host_plans, ClusterState};
use redisha_planner::{Node, Placement, Request, Role, SlotRange};

use crate::tfplugin::framework::Attr;
use crate::topology::slot_strings;

use super::drivers::BuiltDriver;
use super::model::NodeValue;

/// The `nodes` and `endpoints` attributes.
pub type NodesAndEndpoints = (Attr<Vec<NodeValue>>, Attr<Vec<String>>);

/// `n` (as planned) with what is known of it now: its id, address, live role and slots.
fn node_object(
    id: Attr<String>,
    n: &Node,
    address: Attr<String>,
    role: Role,
    status: &str,
    slots: &[SlotRange],
) -> NodeValue {
    NodeValue {
        id,
        name: n.name.clone().into(),
        address,
        role: role.as_str().to_string().into(),
        planned_role: n.role.as_str().to_string().into(),
        status: status.to_string().into(),
        shard: n.shard.into(),
        zone: n.zone.clone().into(),
        host: n.host.clone().into(),
        slots: slot_strings(slots).into(),
    }
}

/// The nodes as the plan will leave them. A node keeps its id when it exists and answered at
/// the last read; a new or dead node's id is only known after apply. Addresses are known when
/// the driver can tell them before anything runs (always, for the local driver).
pub fn planned(
    request: &Request,
    placement: &Placement,
    prior: &ClusterState,
    prior_nodes: &[NodeValue],
    driver: &BuiltDriver,
) -> NodesAndEndpoints {
    let plans = host_plans(request, placement, prior).unwrap_or_default();
    let mut endpoints = Vec::new();
    let mut all_known = true;
    let nodes = placement.nodes.iter().map(|n| {
        let existing = prior.node(&n.name);
        let was_up = prior_nodes
            .iter()
            .find(|v| v.name.value() == Some(&n.name))
            .is_some_and(|v| v.status.value().is_some_and(|s| s == "up"));
        let id = match existing {
            Some(e) if was_up && !e.node_id.is_empty() => Attr::Known(e.node_id.clone()),
            _ => Attr::Unknown,
        };
        // A node keeps its address while its host is in state; a host taken out of state
        // (its instance is gone) gets a new machine, whose address is known after apply.
        let address = match existing {
            Some(e) if !e.handle.ip.is_empty() && prior.host(&e.host).is_some() => {
                Some(e.address())
            }
            _ => plans.iter().find(|h| h.name == n.host).and_then(|h| {
                let np = h.nodes.iter().find(|p| p.name == n.name)?;
                driver.planned_address(h, np)
            }),
        };
        let address = match address {
            Some(a) => {
                endpoints.push(a.clone());
                Attr::Known(a)
            }
            None => {
                all_known = false;
                Attr::Unknown
            }
        };
        node_object(id, n, address, n.role, "up", &n.slots)
    });
    let nodes = Attr::Known(nodes.collect());
    let endpoints = if all_known {
        Attr::Known(endpoints)
    } else {
        Attr::Unknown
    };
    (nodes, endpoints)
}

/// The nodes as the cluster reports them now: a dead node is `down`, a promoted replica says
/// `master`, moved slots show where they are.
pub fn observed(state: &ClusterState, observation: &Observation) -> NodesAndEndpoints {
    let placement = state.placement();
    let nodes = placement.nodes.iter().filter_map(|n| {
        let s = state.node(&n.name)?;
        let o = observation.node(&n.name);
        let view = o.map(|o| &o.view);
        let alive = view.is_some_and(|v| v.alive);
        let id = view
            .and_then(|v| v.node_id.clone())
            .unwrap_or_else(|| s.node_id.clone());
        let role = view
            .and_then(|v| v.role)
            .filter(|_| alive)
            .unwrap_or(n.role);
        let slots: Vec<SlotRange> = match view {
            Some(v) if alive => v.slots.clone(),
            _ => n.slots.clone(),
        };
        Some(node_object(
            id.into(),
            n,
            s.address().into(),
            role,
            if alive { "up" } else { "down" },
            &slots,
        ))
    });
    let endpoints = placement
        .nodes
        .iter()
        .filter_map(|n| state.node(&n.name))
        .map(|s| s.address());
    (
        Attr::Known(nodes.collect()),
        Attr::Known(endpoints.collect()),
    )
}

/// The nodes of a state as recorded (an imported cluster, before any read).
pub fn recorded(state: &ClusterState) -> NodesAndEndpoints {
    let placement = state.placement();
    let nodes = placement.nodes.iter().filter_map(|n| {
        let s = state.node(&n.name)?;
        Some(node_object(
            s.node_id.clone().into(),
            n,
            s.address().into(),
            n.role,
            "up",
            &n.slots,
        ))
    });
    let endpoints = state.nodes.iter().map(|s| s.address());
    (
        Attr::Known(nodes.collect()),
        Attr::Known(endpoints.collect()),
    )
}

/// `planned` for an apply that replaces the machines of `hosts` (a host roll): their nodes
/// rejoin empty, with new ids, on machines with new addresses, so both are known after apply.
pub fn on_new_machines(
    hosts: &std::collections::BTreeSet<String>,
    (nodes, endpoints): NodesAndEndpoints,
) -> NodesAndEndpoints {
    if hosts.is_empty() {
        return (nodes, endpoints);
    }
    let nodes = match nodes {
        Attr::Known(list) => Attr::Known(
            list.into_iter()
                .map(|mut n| {
                    if n.host.value().is_some_and(|h| hosts.contains(h)) {
                        n.id = Attr::Unknown;
                        n.address = Attr::Unknown;
                    }
                    n
                })
                .collect(),
        ),
        other => other,
    };
    (nodes, Attr::Unknown)
}
