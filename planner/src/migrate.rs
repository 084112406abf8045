//! Turning a change of placement into ordered, safe migration steps, and a simulator that
//! checks the safety invariant after every step.
//!
//! Order: (1) add every new node of an existing shard as a replica of its current master and
//! wait for it to sync; (2) add new shards (an empty master, then its replicas, synced);
//! (3) fail over each shard whose master changes, to a synced replica; (4) migrate slots
//! between masters; (5) remove replicas that go, then masters that go (by then slot-less and
//! without replicas). Adding before removing is what keeps every shard's redundancy up.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::placement::{Node, Placement, Role, SlotRange, SLOT_COUNT};

/// One migration step. After every step each shard keeps a copy and a majority of masters
/// stays up. Node names are the planner's stable node names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Start a new, empty node on `host` (in `zone`) and join it to the cluster.
    AddNode {
        node: String,
        shard: u32,
        host: String,
        zone: String,
    },
    /// Make `node` a replica of `master`.
    AttachReplica { node: String, master: String },
    /// Wait until `node`'s replication link is up and its offset caught up.
    WaitSync { node: String },
    /// Promote replica `node` to master of its shard (CLUSTER FAILOVER on `node`).
    Failover { node: String },
    /// Move `slots` (and their keys) from master `from` to master `to`.
    MigrateSlots {
        from: String,
        to: String,
        slots: SlotRange,
    },
    /// Forget and stop `node`.
    RemoveNode { node: String },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::AddNode {
                node,
                shard,
                host,
                zone,
            } => write!(
                f,
                "add node {node} (shard {shard}) on host {host} in {zone}"
            ),
            Step::AttachReplica { node, master } => {
                write!(f, "attach {node} as replica of {master}")
            }
            Step::WaitSync { node } => write!(f, "wait for {node} to sync"),
            Step::Failover { node } => write!(f, "fail over to {node}"),
            Step::MigrateSlots { from, to, slots } => {
                write!(f, "migrate slots {slots} from {from} to {to}")
            }
            Step::RemoveNode { node } => write!(f, "remove node {node}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MigrateError {
    #[error("{which} placement is not usable: {message}")]
    InvalidPlacement { which: String, message: String },
    #[error("node {node} is on host {from} in the current placement and on {to} in the target; a node never moves: give the target node a new name")]
    NodeMoved {
        node: String,
        from: String,
        to: String,
    },
    #[error("node {node} belongs to shard {from} in the current placement and shard {to} in the target; a node never changes shard")]
    ShardChanged { node: String, from: u32, to: u32 },
    #[error("slots {range} are served in the target but not in the current placement: assign them (CLUSTER ADDSLOTS) before migrating")]
    UnservedSlots { range: SlotRange },
    #[error("host {host} is full: node {node} cannot start there until a node it runs goes, and no safe order frees it first; fix: add a temporary host (or room on {host}) for the migration, or move in two applies")]
    NoRoom { host: String, node: String },
}

/// A step that broke the safety invariant (or could not be applied), found by [`simulate`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("step {step} ({description}): {message}")]
pub struct InvariantViolation {
    /// 1-based step number; 0 for the starting placement or the final comparison.
    pub step: usize,
    pub description: String,
    pub message: String,
}

fn check_shape(which: &str, p: &Placement) -> Result<(), MigrateError> {
    let bad = |message: String| MigrateError::InvalidPlacement {
        which: which.to_string(),
        message,
    };
    let mut names = HashMap::new();
    let mut masters: BTreeMap<u32, u32> = BTreeMap::new();
    for n in &p.nodes {
        if names.insert(n.name.as_str(), ()).is_some() {
            return Err(bad(format!("node name {} appears twice", n.name)));
        }
        *masters.entry(n.shard).or_default() += u32::from(n.role == Role::Master);
    }
    for (shard, count) in masters {
        if count != 1 {
            return Err(bad(format!(
                "shard {shard} has {count} masters; exactly one"
            )));
        }
    }
    Ok(())
}

/// Ordered steps taking `current` to `target`. Both are placements as `redisha plan` writes
/// them; nodes are matched by name.
pub fn steps(current: &Placement, target: &Placement) -> Result<Vec<Step>, MigrateError> {
    check_shape("current", current)?;
    check_shape("target", target)?;
    let cur: HashMap<&str, &Node> = current.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let tgt: HashMap<&str, &Node> = target.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    for n in &target.nodes {
        if let Some(c) = cur.get(n.name.as_str()) {
            if c.host != n.host {
                return Err(MigrateError::NodeMoved {
                    node: n.name.clone(),
                    from: c.host.clone(),
                    to: n.host.clone(),
                });
            }
            if c.shard != n.shard {
                return Err(MigrateError::ShardChanged {
                    node: n.name.clone(),
                    from: c.shard,
                    to: n.shard,
                });
            }
        }
    }
    let cur_owner = crate::slots::owners(current);
    let tgt_owner = crate::slots::owners(target);
    if let Some(&range) = runs(&tgt_owner, |slot| {
        tgt_owner[slot].is_some() && cur_owner[slot].is_none()
    })
    .first()
    {
        return Err(MigrateError::UnservedSlots { range });
    }

    let mut out = Vec::new();
    let mut tnodes: Vec<&Node> = target.nodes.iter().collect();
    tnodes.sort_by(|a, b| (a.shard, a.role, &a.name).cmp(&(b.shard, b.role, &b.name)));
    // (1) new nodes of existing shards.
    for n in tnodes.iter().filter(|n| !cur.contains_key(n.name.as_str())) {
        if let Some(master) = current.master_of(n.shard) {
            out.push(add(n));
            out.push(Step::AttachReplica {
                node: n.name.clone(),
                master: master.name.clone(),
            });
            out.push(Step::WaitSync {
                node: n.name.clone(),
            });
        }
    }
    // (2) new shards: the empty master first, then its replicas.
    for n in &tnodes {
        if cur.contains_key(n.name.as_str()) || current.master_of(n.shard).is_some() {
            continue;
        }
        out.push(add(n));
        if n.role == Role::Replica {
            if let Some(master) = target.master_of(n.shard) {
                out.push(Step::AttachReplica {
                    node: n.name.clone(),
                    master: master.name.clone(),
                });
                out.push(Step::WaitSync {
                    node: n.name.clone(),
                });
            }
        }
    }
    // (3) failovers to the target master, once it is confirmed in sync.
    let mut master_after: HashMap<u32, String> = current
        .masters()
        .map(|m| (m.shard, m.name.clone()))
        .collect();
    for m in target.masters() {
        match current.master_of(m.shard) {
            Some(cm) if cm.name != m.name => {
                if cur.contains_key(m.name.as_str()) {
                    out.push(Step::WaitSync {
                        node: m.name.clone(),
                    });
                }
                out.push(Step::Failover {
                    node: m.name.clone(),
                });
                master_after.insert(m.shard, m.name.clone());
            }
            Some(_) => {}
            None => {
                master_after.insert(m.shard, m.name.clone());
            }
        }
    }
    // (4) slots, in runs of one (from shard, to shard) pair.
    let mut slot = 0usize;
    while slot < SLOT_COUNT as usize {
        let (from, to) = (cur_owner[slot], tgt_owner[slot]);
        let mut end = slot;
        while end + 1 < SLOT_COUNT as usize
            && cur_owner[end + 1] == from
            && tgt_owner[end + 1] == to
        {
            end += 1;
        }
        if let (Some(f), Some(t)) = (from, to) {
            if f != t {
                if let (Some(fm), Some(tm)) = (master_after.get(&f), master_after.get(&t)) {
                    out.push(Step::MigrateSlots {
                        from: fm.clone(),
                        to: tm.clone(),
                        slots: SlotRange {
                            start: slot as u16,
                            end: end as u16,
                        },
                    });
                }
            }
        }
        slot = end + 1;
    }
    // (5) removals: replicas (as they are after the failovers) first, then masters.
    let mut leaving: Vec<&Node> = current
        .nodes
        .iter()
        .filter(|n| !tgt.contains_key(n.name.as_str()))
        .collect();
    let is_master_after = |n: &Node| master_after.get(&n.shard) == Some(&n.name);
    leaving.sort_by(|a, b| {
        (is_master_after(a), a.shard, &a.name).cmp(&(is_master_after(b), b.shard, &b.name))
    });
    for n in leaving {
        out.push(Step::RemoveNode {
            node: n.name.clone(),
        });
    }
    Ok(out)
}

fn add(n: &Node) -> Step {
    Step::AddNode {
        node: n.name.clone(),
        shard: n.shard,
        host: n.host.clone(),
        zone: n.zone.clone(),
    }
}

/// Maximal runs of slots for which `pred` holds.
fn runs(owner: &[Option<u32>], pred: impl Fn(usize) -> bool) -> Vec<SlotRange> {
    let mut out = Vec::new();
    let mut slot = 0;
    while slot < owner.len() {
        if pred(slot) {
            let mut end = slot;
            while end + 1 < owner.len() && pred(end + 1) {
                end += 1;
            }
            out.push(SlotRange {
                start: slot as u16,
                end: end as u16,
            });
            slot = end + 1;
        } else {
            slot += 1;
        }
    }
    out
}

#[derive(Debug, Clone)]
struct SimNode {
    node: Node,
    /// The replica this node follows (for replicas).
    master: Option<String>,
    /// Holds the shard's data: an original node, a synced replica, or a master given slots.
    has_data: bool,
    live: bool,
}

/// Apply `steps` to `current` and return the result, checking after every step that:
/// every slot served at the start is served by a live master; every shard that serves slots
/// keeps at least `min(copies now, copies in target)` copies holding its data (never fewer than
/// one); no master that serves slots is removed, so the voting masters all stay up.
pub fn simulate(
    current: &Placement,
    target: &Placement,
    steps: &[Step],
) -> Result<Placement, InvariantViolation> {
    let mut nodes: Vec<SimNode> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for n in &current.nodes {
        index.insert(n.name.clone(), nodes.len());
        nodes.push(SimNode {
            node: n.clone(),
            master: current
                .master_of(n.shard)
                .filter(|_| n.role == Role::Replica)
                .map(|m| m.name.clone()),
            has_data: true,
            live: true,
        });
    }
    let mut owner: Vec<Option<usize>> = vec![None; SLOT_COUNT as usize];
    for (i, n) in current.nodes.iter().enumerate() {
        if n.role == Role::Master {
            for r in &n.slots {
                for s in r.start..=r.end.min((SLOT_COUNT - 1) as u16) {
                    owner[usize::from(s)] = Some(i);
                }
            }
        }
    }
    let count = |p: &Placement| {
        let mut m: HashMap<u32, usize> = HashMap::new();
        for n in &p.nodes {
            *m.entry(n.shard).or_default() += 1;
        }
        m
    };
    let (cur_copies, tgt_copies) = (count(current), count(target));
    let required = |shard: u32| -> usize {
        match (cur_copies.get(&shard), tgt_copies.get(&shard)) {
            (Some(&a), Some(&b)) => a.min(b).max(1),
            _ => 1,
        }
    };
    let fail = |step: usize, s: Option<&Step>, message: String| InvariantViolation {
        step,
        description: s.map(|s| s.to_string()).unwrap_or_else(|| "start".into()),
        message,
    };
    let check = |nodes: &[SimNode], owner: &[Option<usize>], step: usize, s: Option<&Step>| {
        let mut serving: BTreeMap<u32, bool> = BTreeMap::new();
        for o in owner.iter().flatten() {
            let n = &nodes[*o];
            if !n.live || n.node.role != Role::Master {
                return Err(fail(
                    step,
                    s,
                    format!("slots owned by {} which is not a live master", n.node.name),
                ));
            }
            serving.insert(n.node.shard, true);
        }
        for shard in serving.keys() {
            let copies = nodes
                .iter()
                .filter(|n| n.live && n.has_data && n.node.shard == *shard)
                .count();
            if copies < required(*shard) {
                return Err(fail(
                    step,
                    s,
                    format!(
                        "shard {shard} is down to {copies} copies, below {}",
                        required(*shard)
                    ),
                ));
            }
        }
        Ok(())
    };
    check(&nodes, &owner, 0, None)?;
    for (k, step) in steps.iter().enumerate() {
        let no = k + 1;
        let err = |m: String| fail(no, Some(step), m);
        let live = |name: &str| index.get(name).copied().filter(|&i| nodes[i].live);
        match step {
            Step::AddNode {
                node,
                shard,
                host,
                zone,
            } => {
                if index.contains_key(node) {
                    return Err(err(format!("node name {node} is already used")));
                }
                index.insert(node.clone(), nodes.len());
                nodes.push(SimNode {
                    node: Node {
                        name: node.clone(),
                        shard: *shard,
                        role: Role::Master,
                        host: host.clone(),
                        zone: zone.clone(),
                        slots: Vec::new(),
                    },
                    master: None,
                    has_data: false,
                    live: true,
                });
            }
            Step::AttachReplica { node, master } => {
                let (Some(i), Some(m)) = (live(node), live(master)) else {
                    return Err(err("unknown or removed node".into()));
                };
                if nodes[m].node.role != Role::Master || nodes[m].node.shard != nodes[i].node.shard
                {
                    return Err(err(format!("{master} is not the master of {node}'s shard")));
                }
                if owner.contains(&Some(i)) {
                    return Err(err(format!("{node} still serves slots")));
                }
                nodes[i].node.role = Role::Replica;
                nodes[i].master = Some(master.clone());
                nodes[i].has_data = false;
            }
            Step::WaitSync { node } => {
                let Some(i) = live(node) else {
                    return Err(err("unknown or removed node".into()));
                };
                if nodes[i].node.role != Role::Replica {
                    return Err(err(format!("{node} is not a replica")));
                }
                nodes[i].has_data = true;
            }
            Step::Failover { node } => {
                let Some(i) = live(node) else {
                    return Err(err("unknown or removed node".into()));
                };
                if nodes[i].node.role != Role::Replica || !nodes[i].has_data {
                    return Err(err(format!("{node} is not a synced replica")));
                }
                let Some(m) = nodes[i].master.clone().and_then(|m| live(&m)) else {
                    return Err(err(format!("{node} follows no live master")));
                };
                let (old, new) = (nodes[m].node.name.clone(), node.clone());
                nodes[m].node.role = Role::Replica;
                nodes[m].master = Some(new.clone());
                nodes[i].node.role = Role::Master;
                nodes[i].master = None;
                for o in owner.iter_mut() {
                    if *o == Some(m) {
                        *o = Some(i);
                    }
                }
                for n in nodes.iter_mut() {
                    if n.master.as_deref() == Some(old.as_str()) {
                        n.master = Some(new.clone());
                    }
                }
            }
            Step::MigrateSlots { from, to, slots } => {
                let (Some(f), Some(t)) = (live(from), live(to)) else {
                    return Err(err("unknown or removed node".into()));
                };
                if nodes[t].node.role != Role::Master {
                    return Err(err(format!("{to} is not a master")));
                }
                if slots.start > slots.end || u32::from(slots.end) >= SLOT_COUNT {
                    return Err(err(format!("invalid slot range {slots}")));
                }
                for s in slots.start..=slots.end {
                    if owner[usize::from(s)] != Some(f) {
                        return Err(err(format!("slot {s} is not served by {from}")));
                    }
                    owner[usize::from(s)] = Some(t);
                }
                nodes[t].has_data = true;
            }
            Step::RemoveNode { node } => {
                let Some(i) = live(node) else {
                    return Err(err("unknown or removed node".into()));
                };
                if owner.contains(&Some(i)) {
                    return Err(err(format!("{node} still serves slots")));
                }
                if nodes
                    .iter()
                    .any(|n| n.live && n.master.as_deref() == Some(node.as_str()))
                {
                    return Err(err(format!("{node} still has replicas")));
                }
                nodes[i].live = false;
            }
        }
        check(&nodes, &owner, no, Some(step))?;
    }
    let mut out: Vec<Node> = Vec::new();
    for (i, n) in nodes.iter().enumerate().filter(|(_, n)| n.live) {
        let mut node = n.node.clone();
        let own: Vec<Option<u32>> = owner
            .iter()
            .map(|o| (*o == Some(i)).then_some(node.shard))
            .collect();
        node.slots = crate::slots::ranges_by_shard(&own, node.shard + 1)
            .pop()
            .unwrap_or_default();
        out.push(node);
    }
    crate::plan::sort_nodes(&mut out);
    Ok(Placement { nodes: out })
}

/// Check `steps` from `current` keep the invariant at every step (see [`simulate`]) and end in
/// exactly `target` (same nodes, roles, hosts and slots).
pub fn check_invariant(
    current: &Placement,
    target: &Placement,
    steps: &[Step],
) -> Result<(), InvariantViolation> {
    let end = simulate(current, target, steps)?;
    let mut want = target.nodes.clone();
    crate::plan::sort_nodes(&mut want);
    let normalise = |nodes: &[Node]| -> Vec<Node> {
        nodes
            .iter()
            .map(|n| {
                let own: Vec<Option<u32>> = {
                    let mut o = vec![None; SLOT_COUNT as usize];
                    for r in &n.slots {
                        for s in r.start..=r.end.min((SLOT_COUNT - 1) as u16) {
                            o[usize::from(s)] = Some(n.shard);
                        }
                    }
                    o
                };
                let mut n = n.clone();
                n.slots = crate::slots::ranges_by_shard(&own, n.shard + 1)
                    .pop()
                    .unwrap_or_default();
                n
            })
            .collect()
    };
    if normalise(&end.nodes) != normalise(&want) {
        let diff = end
            .nodes
            .iter()
            .zip(want.iter())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("got {a:?}, want {b:?}"))
            .unwrap_or_else(|| format!("{} nodes, want {}", end.nodes.len(), want.len()));
        return Err(InvariantViolation {
            step: steps.len(),
            description: "end".into(),
            message: format!("the steps do not end in the target placement: {diff}"),
        });
    }
    Ok(())
}
