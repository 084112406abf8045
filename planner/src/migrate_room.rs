//! Migration steps that respect host capacity. [`crate::migrate::steps`] adds every new node
//! before removing any old one, which keeps redundancy up but needs room for both on a host
//! that trades an old node for a new one. Here, when a host is full at an `AddNode`, a later
//! removal of a node on that host is brought forward (when the invariant still holds without
//! that node), or else the new node waits until that removal. The result is checked by the
//! simulator for both the invariant and capacity at every step.

use std::collections::HashMap;

use crate::migrate::{check_invariant, steps, InvariantViolation, MigrateError, Step};

use crate::model::Topology;
use crate::placement::Placement;
use crate::request::Request;

/// How many nodes each host of `req` can run.
pub fn host_room(req: &Request) -> HashMap<String, u32> {
    let topo = Topology::build(req);
    topo.hosts
        .iter()
        .map(|h| (h.name.clone(), h.capacity))
        .collect()
}

/// Ordered steps from `current` to `target` such that no host ever runs more nodes than
/// `room` allows (hosts not in `room` are unlimited), nor the safety invariant breaks.
pub fn steps_within(
    current: &Placement,
    target: &Placement,
    room: &HashMap<String, u32>,
) -> Result<Vec<Step>, MigrateError> {
    let plain = steps(current, target)?;
    if check_room(current, &plain, room).is_ok() {
        return Ok(plain);
    }
    let host_of: HashMap<&str, &str> = current
        .nodes
        .iter()
        .chain(&target.nodes)
        .map(|n| (n.name.as_str(), n.host.as_str()))
        .collect();
    let mut used: HashMap<String, u32> = HashMap::new();
    for n in &current.nodes {
        *used.entry(n.host.clone()).or_default() += 1;
    }
    let full = |used: &HashMap<String, u32>, host: &str| {
        room.get(host)
            .is_some_and(|&cap| used.get(host).copied().unwrap_or(0) >= cap)
    };
    let mut todo: Vec<Step> = plain;
    let mut out: Vec<Step> = Vec::with_capacity(todo.len());
    // The first new node that had to wait: named if no safe order turns out to exist.
    let mut conflict: Option<(String, String)> = None;
    let mut i = 0;
    while i < todo.len() {
        if let Step::AddNode { node, host, .. } = &todo[i] {
            if full(&used, host) {
                let (node, host) = (node.clone(), host.clone());
                let removal = todo[i + 1..].iter().position(|s| {
                    matches!(s, Step::RemoveNode { node: gone } if host_of.get(gone.as_str()) == Some(&host.as_str()))
                });
                let Some(offset) = removal else {
                    return Err(MigrateError::NoRoom { host, node });
                };
                let at = i + 1 + offset;
                // Bring the removal forward if that is safe so far; else the new node (and its
                // attach and sync) waits until right after the removal.
                let mut trial = out.clone();
                trial.push(todo[at].clone());
                if prefix_safe(current, target, &trial) {
                    let step = todo.remove(at);
                    todo.insert(i, step);
                } else {
                    conflict.get_or_insert((host.clone(), node.clone()));
                    // A new master's replicas attach to it: they wait with it.
                    let mut group = vec![node.clone()];
                    for s in &todo {
                        if let Step::AttachReplica { node: r, master } = s {
                            if *master == node {
                                group.push(r.clone());
                            }
                        }
                    }
                    let in_group = |s: &Step| group.iter().any(|n| belongs_to(s, n));
                    let bundle: Vec<Step> = todo.iter().filter(|s| in_group(s)).cloned().collect();
                    let after = todo[..=at].iter().filter(|s| !in_group(s)).count();
                    todo.retain(|s| !in_group(s));
                    for (k, s) in bundle.into_iter().enumerate() {
                        todo.insert(after + k, s);
                    }
                }
                continue;
            }
        }
        match &todo[i] {
            Step::AddNode { host, .. } => *used.entry(host.clone()).or_default() += 1,
            Step::RemoveNode { node } => {
                if let Some(h) = host_of.get(node.as_str()) {
                    if let Some(u) = used.get_mut(*h) {
                        *u = u.saturating_sub(1);
                    }
                }
            }
            _ => {}
        }
        out.push(todo[i].clone());
        i += 1;
    }
    let room_kept = check_room(current, &out, room);
    if check_invariant(current, target, &out).is_err() || room_kept.is_err() {
        return Err(match (conflict, room_kept) {
            (Some((host, node)), _) => MigrateError::NoRoom { host, node },
            (None, Err(e)) => MigrateError::InvalidPlacement {
                which: "target".into(),
                message: format!("no safe order within host capacity: {e}"),
            },
            (None, Ok(())) => MigrateError::InvalidPlacement {
                which: "target".into(),
                message: "no safe order within host capacity".into(),
            },
        });
    }
    Ok(out)
}

/// The steps of one new node: its start, attach and sync.
fn belongs_to(step: &Step, node: &str) -> bool {
    match step {
        Step::AddNode { node: n, .. } | Step::WaitSync { node: n } => n == node,
        Step::AttachReplica { node: n, .. } => n == node,
        _ => false,
    }
}

/// The invariant holds after every step of `prefix` (the end state is not compared).
fn prefix_safe(current: &Placement, target: &Placement, prefix: &[Step]) -> bool {
    crate::migrate::simulate(current, target, prefix).is_ok()
}

/// The simulator's capacity check: after every step, no host in `room` runs more nodes than
/// its room.
pub fn check_room(
    current: &Placement,
    steps: &[Step],
    room: &HashMap<String, u32>,
) -> Result<(), InvariantViolation> {
    let mut host_of: HashMap<String, String> = current
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.host.clone()))
        .collect();
    let mut used: HashMap<String, u32> = HashMap::new();
    for n in &current.nodes {
        *used.entry(n.host.clone()).or_default() += 1;
    }
    for (k, step) in steps.iter().enumerate() {
        match step {
            Step::AddNode { node, host, .. } => {
                host_of.insert(node.clone(), host.clone());
                let u = used.entry(host.clone()).or_default();
                *u += 1;
                if let Some(&cap) = room.get(host) {
                    if *u > cap {
                        return Err(InvariantViolation {
                            step: k + 1,
                            description: step.to_string(),
                            message: format!(
                                "host {host} would run {u} nodes; it has room for {cap}"
                            ),
                        });
                    }
                }
            }
            Step::RemoveNode { node } => {
                if let Some(u) = host_of.get(node).and_then(|h| used.get_mut(h)) {
                    *u = u.saturating_sub(1);
                }
            }
            _ => {}
        }
    }
    Ok(())
}
