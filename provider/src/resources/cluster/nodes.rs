//! The `nodes`, `endpoints` attribute values: as planned (before apply) and as observed (read).

use redisha_cluster::observe::Observation;
use redisha_cluster::state::{host_plans, ClusterState};
use redisha_planner::{Node, Placement, Request, Role, SlotRange};

use crate::tfplugin::value::Value;

use super::drivers::BuiltDriver;

fn slots_value(slots: &[SlotRange]) -> Value {
    Value::strings(slots.iter().map(|r| format!("{}-{}", r.start, r.end)))
}

fn node_object(
    id: Value,
    n: &Node,
    address: Value,
    role: Role,
    status: &str,
    slots: &[SlotRange],
) -> Value {
    Value::object([
        ("id", id),
        ("name", Value::from(n.name.as_str())),
        ("address", address),
        ("role", Value::from(role.as_str())),
        ("status", Value::from(status)),
        ("shard", Value::from(n.shard)),
        ("zone", Value::from(n.zone.as_str())),
        ("host", Value::from(n.host.as_str())),
        ("slots", slots_value(slots)),
    ])
}

/// The nodes as the plan will leave them. A node keeps its id when it exists and answered at
/// the last read; a new or dead node's id is only known after apply. Addresses are known when
/// the driver can tell them before anything runs (always, for the local driver).
pub fn planned(
    request: &Request,
    placement: &Placement,
    prior: &ClusterState,
    prior_nodes: &Value,
    driver: &BuiltDriver,
) -> (Value, Value) {
    let plans = host_plans(request, placement, prior).unwrap_or_default();
    let mut endpoints = Vec::new();
    let mut all_known = true;
    let nodes = placement.nodes.iter().map(|n| {
        let existing = prior.node(&n.name);
        let was_up = prior_nodes
            .as_list()
            .and_then(|l| {
                l.iter()
                    .find(|v| v.get("name").as_str() == Some(n.name.as_str()))
            })
            .is_some_and(|v| v.get("status").as_str() == Some("up"));
        let id = match existing {
            Some(e) if was_up && !e.node_id.is_empty() => Value::from(e.node_id.as_str()),
            _ => Value::Unknown,
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
                endpoints.push(Value::from(a.as_str()));
                Value::from(a)
            }
            None => {
                all_known = false;
                Value::Unknown
            }
        };
        node_object(id, n, address, n.role, "up", &n.slots)
    });
    let nodes = Value::list(nodes.collect::<Vec<_>>());
    let endpoints = if all_known {
        Value::List(endpoints)
    } else {
        Value::Unknown
    };
    (nodes, endpoints)
}

/// The nodes as the cluster reports them now: a dead node is `down`, a promoted replica says
/// `master`, moved slots show where they are.
pub fn observed(state: &ClusterState, observation: &Observation) -> (Value, Value) {
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
            Value::from(id),
            n,
            Value::from(s.address()),
            role,
            if alive { "up" } else { "down" },
            &slots,
        ))
    });
    let nodes = Value::list(nodes.collect::<Vec<_>>());
    let endpoints = Value::strings(
        placement
            .nodes
            .iter()
            .filter_map(|n| state.node(&n.name))
            .map(|s| s.address()),
    );
    (nodes, endpoints)
}

/// The nodes of a state as recorded (an imported cluster, before any read).
pub fn recorded(state: &ClusterState) -> (Value, Value) {
    let placement = state.placement();
    let nodes = placement.nodes.iter().filter_map(|n| {
        let s = state.node(&n.name)?;
        Some(node_object(
            Value::from(s.node_id.as_str()),
            n,
            Value::from(s.address()),
            n.role,
            "up",
            &n.slots,
        ))
    });
    let nodes = Value::list(nodes.collect::<Vec<_>>());
    let endpoints = Value::strings(state.nodes.iter().map(|s| s.address()));
    (nodes, endpoints)
}
