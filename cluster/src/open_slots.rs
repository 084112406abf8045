//! Slots left half-moved by an interrupted migration (the provider killed between the
//! IMPORTING and MIGRATING pipelines, during the key moves, or between SETSLOT NODE on the
//! destination and on the source): finding them, and finishing or rolling them back.
//!
//! Redis keeps serving a half-moved slot (the source answers for the keys it still has and
//! sends clients to the destination for the others with ASK), but nothing ever closes it, and
//! a later failover of either side loses the mark and with it the way to the keys on the other
//! side. So every apply closes open slots first.
//!
//! Rules: finishing moves keys the same way a migration does and is always safe while both
//! masters answer. Rolling back (SETSLOT STABLE) makes the source the only owner again, which
//! is safe only when the destination holds none of the slot's keys: that is checked, never
//! assumed. Anything else is left alone (a node does not answer: the slot keeps being served,
//! a later apply continues) or reported to the user.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use futures::future::join_all;
use redisha_planner::SlotRange;
use tracing::{info, warn};

use crate::conn::{NodeLine, Target};
use crate::error::{ClusterError, Result};
use crate::migrate_exec::{owns, Progress, SlotMove};
use crate::ops::Operator;
use crate::state::{ClusterNode, ClusterState};

/// A run of half-moved slots with one source, one destination and one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSlots {
    pub slots: SlotRange,
    /// Planner name of the source master (the node id when the state does not know it).
    pub source: String,
    pub source_id: String,
    /// Planner name of the destination master (the node id when the state does not know it).
    pub destination: String,
    pub destination_id: String,
    pub action: OpenSlotsAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenSlotsAction {
    /// Move the keys left on the source and make the destination the owner.
    Finish,
    /// The destination already owns the slots: only marks are left to clear.
    Clear,
    /// SETSLOT STABLE: the source keeps the slots; the destination is gone and holds none of
    /// their keys (`why` says how that was checked).
    RollBack { why: String },
    /// A node involved does not answer: the slots keep being served as they are, and an
    /// apply after it is back closes them.
    Wait { why: String },
    /// Neither finishing nor rolling back is known to be safe.
    Stuck { why: String, remedy: String },
}

impl fmt::Display for OpenSlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = if self.slots.start == self.slots.end {
            format!("slot {}", self.slots.start)
        } else {
            format!("slots {}", self.slots)
        };
        write!(
            f,
            "{slots} half-moved from {} to {}: ",
            self.source, self.destination
        )?;
        match &self.action {
            OpenSlotsAction::Finish => write!(f, "will finish"),
            OpenSlotsAction::Clear => write!(
                f,
                "{} owns them already; will clear the marks left",
                self.destination
            ),
            OpenSlotsAction::RollBack { why } => write!(f, "will roll back ({why})"),
            OpenSlotsAction::Wait { why } => write!(f, "left as they are for now: {why}"),
            OpenSlotsAction::Stuck { why, remedy } => {
                write!(
                    f,
                    "cannot be finished or rolled back safely: {why}; {remedy}"
                )
            }
        }
    }
}

/// What one node of the state says about itself.
struct Seen<'s> {
    node: &'s ClusterNode,
    /// Its CLUSTER NODES, or None when it does not answer.
    view: Option<Vec<NodeLine>>,
    /// COUNTKEYSINSLOT of every marked slot.
    counts: HashMap<u16, u64>,
}

impl Seen<'_> {
    fn me(&self) -> Option<&NodeLine> {
        self.view.as_ref()?.iter().find(|l| l.is_myself())
    }
    fn id(&self) -> &str {
        self.me()
            .map_or(self.node.node_id.as_str(), |m| m.id.as_str())
    }
}

/// One slot's decision before runs are merged.
#[derive(Clone, PartialEq, Eq)]
struct Decision {
    source_id: String,
    destination_id: String,
    action: OpenSlotsAction,
}

impl Operator<'_> {
    /// Every half-moved slot across the nodes of `state`, grouped into runs per (source,
    /// destination, decision). Nodes that do not answer are skipped (their marks are
    /// unknown); a slot they are part of gets `Wait` or `RollBack` as the rules allow.
    pub async fn open_slots(&self, state: &ClusterState) -> Result<Vec<OpenSlots>> {
        let seen = self.look(state).await;
        let mut decisions: BTreeMap<u16, Vec<Decision>> = BTreeMap::new();
        let marked: BTreeSet<u16> = seen
            .iter()
            .filter_map(Seen::me)
            .flat_map(|m| m.migrating.iter().chain(&m.importing).map(|k| k.slot))
            .collect();
        for slot in marked {
            decisions.insert(slot, decide(slot, &seen));
        }
        // Runs of consecutive slots with the same decision.
        let mut out: Vec<OpenSlots> = Vec::new();
        for (slot, list) in decisions {
            for d in list {
                let extend = out.iter_mut().rev().find(|o| {
                    u32::from(o.slots.end) + 1 == u32::from(slot)
                        && o.source_id == d.source_id
                        && o.destination_id == d.destination_id
                        && o.action == d.action
                });
                match extend {
                    Some(o) => o.slots.end = slot,
                    None => out.push(OpenSlots {
                        slots: SlotRange {
                            start: slot,
                            end: slot,
                        },
                        source: name_of(state, &d.source_id),
                        source_id: d.source_id,
                        destination: name_of(state, &d.destination_id),
                        destination_id: d.destination_id,
                        action: d.action,
                    }),
                }
            }
        }
        out.sort_by_key(|o| (o.slots.start, o.source_id.clone()));
        Ok(out)
    }

    /// Closes every half-moved slot: finishes it (re-issuing the IMPORTING/MIGRATING mark a
    /// side lost, moving the keys left, then SETSLOT NODE on the destination, the source and
    /// the other masters), clears marks left after the owner changed, or rolls it back where
    /// the destination is gone and holds none of its keys. Returns one line per action.
    /// Slots whose nodes do not answer are left as they are (a line says so). Slots neither
    /// finishable nor safely rolled back make it return an error naming them and what to do,
    /// after everything else was done. Idempotent; meant for the start of every apply.
    pub async fn finish_open_slots(&self, state: &ClusterState) -> Result<Vec<String>> {
        let open = self.open_slots(state).await?;
        let mut lines = Vec::new();
        let mut stuck = Vec::new();
        if open.is_empty() {
            return Ok(lines);
        }
        for o in &open {
            info!(open_slots = %o, "half-moved slots");
        }
        let finishing = open
            .iter()
            .any(|o| matches!(o.action, OpenSlotsAction::Finish));
        if finishing {
            // As in a migration: a master emptied of its last slot must not turn into a
            // replica of the receiver. `update` restores the user's setting.
            self.replica_migration_best_effort(state, "no").await;
        }
        let progress = Progress::new(open.iter().map(|o| u64::from(o.slots.len())).sum());
        for o in &open {
            let slots: Vec<u16> = (o.slots.start..=o.slots.end).collect();
            match &o.action {
                OpenSlotsAction::Finish => {
                    let (Some(src), Some(dst)) =
                        (state.by_id(&o.source_id), state.by_id(&o.destination_id))
                    else {
                        stuck.push(format!("{o} (a side is not in the cluster state)"));
                        continue;
                    };
                    let moves: Vec<SlotMove> = slots
                        .iter()
                        .map(|&slot| SlotMove {
                            slot,
                            src_owns: true,
                            dst_owns: false,
                            resumed: true,
                        })
                        .collect();
                    self.move_slots(state, src, dst, &moves, &progress).await?;
                    lines.push(format!(
                        "finished slots {}: moved the keys left from {} to {}, which owns them now",
                        o.slots, o.source, o.destination
                    ));
                }
                OpenSlotsAction::Clear => {
                    self.clear_landed(state, o, &slots).await?;
                    lines.push(format!(
                        "closed slots {}: {} owned them already; cleared the marks left",
                        o.slots, o.destination
                    ));
                }
                OpenSlotsAction::RollBack { why } => {
                    self.roll_back(state, o, &slots).await?;
                    lines.push(format!(
                        "rolled back slots {}: {} keeps them ({why})",
                        o.slots, o.source
                    ));
                }
                OpenSlotsAction::Wait { why } => {
                    warn!(open_slots = %o, "left half-moved");
                    lines.push(format!(
                        "left slots {} half-moved from {} to {}: {why}",
                        o.slots, o.source, o.destination
                    ));
                }
                OpenSlotsAction::Stuck { .. } => stuck.push(o.to_string()),
            }
        }
        if finishing {
            // The user's setting again, unless a source was emptied by the finish: it must
            // stay a master until the update that planned this decides (it restores it).
            let mut emptied = false;
            for o in open
                .iter()
                .filter(|o| matches!(o.action, OpenSlotsAction::Finish))
            {
                if let Some(src) = state.by_id(&o.source_id) {
                    let t = src.target();
                    let slots = match self.conns.cluster_nodes(&t).await {
                        Ok(view) => view
                            .iter()
                            .find(|l| l.is_myself())
                            .map_or(0, NodeLine::slot_count),
                        Err(_) => 0,
                    };
                    emptied |= slots == 0;
                }
            }
            if !emptied {
                self.replica_migration_best_effort(state, self.replica_migration_setting())
                    .await;
            }
        }
        if !stuck.is_empty() {
            return Err(ClusterError::Plan(format!(
                "half-moved slots need a decision: {}{}",
                stuck.join("; "),
                if lines.is_empty() {
                    String::new()
                } else {
                    format!(" (done meanwhile: {})", lines.join("; "))
                }
            )));
        }
        Ok(lines)
    }

    /// CLUSTER NODES of every node, and the key counts of every marked slot on every node
    /// that answers.
    async fn look<'s>(&self, state: &'s ClusterState) -> Vec<Seen<'s>> {
        let views = join_all(state.nodes.iter().map(|n| async move {
            let t = n.target();
            match self.retry("CLUSTER NODES", || self.conns.cluster_nodes(&t)).await {
                Ok(v) => Some(v),
                Err(e) => {
                    warn!(node = %n.name, error = %e, "no answer while looking for half-moved slots");
                    None
                }
            }
        }))
        .await;
        let mut seen: Vec<Seen> = state
            .nodes
            .iter()
            .zip(views)
            .map(|(node, view)| Seen {
                node,
                view,
                counts: HashMap::new(),
            })
            .collect();
        let marked: Vec<u16> = seen
            .iter()
            .filter_map(Seen::me)
            .flat_map(|m| m.migrating.iter().chain(&m.importing).map(|k| k.slot))
            .collect::<BTreeSet<u16>>()
            .into_iter()
            .collect();
        if marked.is_empty() {
            return seen;
        }
        let counts = join_all(seen.iter().map(|s| {
            let marked = &marked;
            async move {
                s.view.as_ref()?;
                let mut pipe = redis::pipe();
                for slot in marked {
                    pipe.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(*slot);
                }
                let t = s.node.target();
                self.conns
                    .pipe::<Vec<u64>>(&t, &pipe, "CLUSTER COUNTKEYSINSLOT")
                    .await
                    .ok()
            }
        }))
        .await;
        for (s, c) in seen.iter_mut().zip(counts) {
            if let Some(c) = c {
                s.counts = marked.iter().copied().zip(c).collect();
            }
        }
        seen
    }

    /// SETSLOT NODE destination on the destination (clears its IMPORTING mark), the source
    /// (clears MIGRATING; it holds no key, checked) and the other masters.
    async fn clear_landed(&self, state: &ClusterState, o: &OpenSlots, slots: &[u16]) -> Result<()> {
        let mut assign = redis::pipe();
        for s in slots {
            assign
                .cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(*s)
                .arg("NODE")
                .arg(&o.destination_id)
                .ignore();
        }
        let dst = state
            .by_id(&o.destination_id)
            .map(ClusterNode::target)
            .ok_or_else(|| ClusterError::Plan(format!("{o}: destination not in the state")))?;
        self.retry("CLUSTER SETSLOT NODE", || {
            self.conns.pipe::<()>(&dst, &assign, "CLUSTER SETSLOT NODE")
        })
        .await?;
        if let Some(src) = state.by_id(&o.source_id) {
            let t = src.target();
            if let Err(e) = self
                .retry("CLUSTER SETSLOT NODE", || {
                    self.conns.pipe::<()>(&t, &assign, "CLUSTER SETSLOT NODE")
                })
                .await
            {
                // It did not answer when we looked either; its mark is cleared by the apply
                // that finds it back.
                warn!(node = %src.name, error = %e, "could not clear the source's mark");
            }
        }
        let others = state
            .nodes
            .iter()
            .filter(|n| n.node_id != o.source_id && n.node_id != o.destination_id)
            .map(|n| {
                let assign = &assign;
                async move {
                    let t = n.target();
                    // Replicas refuse SETSLOT; they follow their master. Gossip covers misses.
                    let _ = self
                        .conns
                        .pipe::<()>(&t, assign, "CLUSTER SETSLOT NODE")
                        .await;
                }
            });
        join_all(others).await;
        Ok(())
    }

    /// SETSLOT STABLE on the source and, if it answers, the destination.
    async fn roll_back(&self, state: &ClusterState, o: &OpenSlots, slots: &[u16]) -> Result<()> {
        let mut stable = redis::pipe();
        for s in slots {
            stable
                .cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(*s)
                .arg("STABLE")
                .ignore();
        }
        let src = state
            .by_id(&o.source_id)
            .map(ClusterNode::target)
            .ok_or_else(|| ClusterError::Plan(format!("{o}: source not in the state")))?;
        self.retry("CLUSTER SETSLOT STABLE", || {
            self.conns
                .pipe::<()>(&src, &stable, "CLUSTER SETSLOT STABLE")
        })
        .await?;
        if let Some(dst) = state.by_id(&o.destination_id) {
            let t = dst.target();
            if let Err(e) = self
                .conns
                .pipe::<()>(&t, &stable, "CLUSTER SETSLOT STABLE")
                .await
            {
                warn!(node = %dst.name, error = %e, "could not clear the destination's mark");
            }
        }
        Ok(())
    }

    async fn replica_migration_best_effort(&self, state: &ClusterState, value: &str) {
        let jobs = state.nodes.iter().map(|n| async move {
            let t: Target = n.target();
            if let Err(e) = self
                .conns
                .query::<redis::Value>(
                    &t,
                    redis::cmd("CONFIG")
                        .arg("SET")
                        .arg("cluster-allow-replica-migration")
                        .arg(value),
                    "CONFIG SET cluster-allow-replica-migration",
                )
                .await
            {
                warn!(node = %n.name, error = %e, "CONFIG SET cluster-allow-replica-migration");
            }
        });
        join_all(jobs).await;
    }
}

fn name_of(state: &ClusterState, id: &str) -> String {
    match state.by_id(id) {
        Some(n) => n.name.clone(),
        None if id.is_empty() => "a node that does not answer".to_string(),
        None => id.to_string(),
    }
}

/// The decision for one marked slot (usually one; one per stale mark when several are left).
fn decide(slot: u16, seen: &[Seen]) -> Vec<Decision> {
    let reachable = || seen.iter().filter(|s| s.me().is_some());
    let by_id = |id: &str| seen.iter().find(|s| s.id() == id);
    let named = |id: &str| by_id(id).map_or_else(|| id.to_string(), |s| s.node.name.clone());
    let keys_on = |s: &Seen| s.counts.get(&slot).copied();
    // The owner: the answering master that claims the slot with the highest config epoch
    // (after SETSLOT NODE the destination bumps its epoch, so its claim wins).
    let owner = reachable()
        .filter(|s| s.me().is_some_and(|m| m.is_master() && owns(m, slot)))
        .max_by_key(|s| s.me().map_or(0, |m| m.config_epoch));
    let migrating_to = |s: &Seen| {
        s.me()?
            .migrating
            .iter()
            .find(|k| k.slot == slot)
            .map(|k| k.node_id.clone())
    };
    let importing_from = |s: &Seen| {
        s.me()?
            .importing
            .iter()
            .find(|k| k.slot == slot)
            .map(|k| k.node_id.clone())
    };
    let Some(owner) = owner else {
        // Nobody that answers serves the slot: whoever does is down.
        let (src, dst) = reachable()
            .find_map(|s| {
                importing_from(s)
                    .map(|f| (f, s.id().to_string()))
                    .or_else(|| migrating_to(s).map(|t| (s.id().to_string(), t)))
            })
            .unwrap_or_default();
        return vec![why_wait(
            &src,
            &dst,
            format!("no master that answers serves slot {slot}; the one that does is down"),
        )];
    };
    let owner_id = owner.id().to_string();

    // A move in progress from the owner.
    let importers: BTreeSet<String> = reachable()
        .filter(|s| s.id() != owner_id && importing_from(s).is_some())
        .map(|s| s.id().to_string())
        .collect();
    let destination = match migrating_to(owner) {
        Some(d) => Some(d),
        None if importers.len() == 1 => importers.first().cloned(),
        None if importers.len() > 1 => {
            return vec![Decision {
                source_id: owner_id.clone(),
                destination_id: importers.iter().cloned().collect::<Vec<_>>().join(","),
                action: OpenSlotsAction::Stuck {
                    why: format!(
                        "{} all import slot {slot} from {}",
                        importers.iter().map(|i| named(i)).collect::<Vec<_>>().join(", "),
                        owner.node.name
                    ),
                    remedy: format!(
                        "keep the one that should receive it and run CLUSTER SETSLOT {slot} STABLE on the others once they hold no key of it (CLUSTER COUNTKEYSINSLOT {slot})"
                    ),
                },
            }]
        }
        None => None,
    };
    if let Some(dst_id) = destination {
        let action = match by_id(&dst_id) {
            Some(d) if d.me().is_some_and(NodeLine::is_master) => OpenSlotsAction::Finish,
            Some(d) if d.me().is_some() => match keys_on(d) {
                Some(0) => OpenSlotsAction::RollBack {
                    why: format!("{} is no longer a master and holds none of their keys", d.node.name),
                },
                n => OpenSlotsAction::Stuck {
                    why: format!(
                        "{} is no longer a master and holds {} of their keys",
                        d.node.name,
                        n.map_or("an unknown number".to_string(), |n| n.to_string())
                    ),
                    remedy: format!(
                        "make {} a master again (CLUSTER FAILOVER on it) and apply again, which finishes the move",
                        d.node.name
                    ),
                },
            },
            known => {
                // Gone or down: what its replicas hold is what it held.
                let replicas: Vec<&Seen> = reachable()
                    .filter(|s| s.me().and_then(|m| m.master_id.as_deref()) == Some(dst_id.as_str()))
                    .collect();
                let held: Option<u64> = replicas
                    .iter()
                    .map(|r| keys_on(r))
                    .try_fold(0u64, |a, n| n.map(|n| a.max(n)));
                match (replicas.is_empty(), held, known) {
                    (false, Some(0), _) => OpenSlotsAction::RollBack {
                        why: format!(
                            "{} does not answer and its replica {} holds none of their keys",
                            named(&dst_id),
                            replicas.iter().map(|r| r.node.name.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    },
                    (_, _, Some(_)) => OpenSlotsAction::Wait {
                        why: format!(
                            "{} does not answer and may hold keys of them; the apply that brings it back finishes the move",
                            named(&dst_id)
                        ),
                    },
                    (_, _, None) => OpenSlotsAction::Stuck {
                        why: format!(
                            "the destination {dst_id} is not a node of the cluster state and cannot be asked which of their keys it holds"
                        ),
                        remedy: format!(
                            "if it never received keys of them, run CLUSTER SETSLOT <slot> STABLE on {} for each slot; otherwise bring that node back and apply again",
                            owner.node.name
                        ),
                    },
                }
            }
        };
        return vec![Decision {
            source_id: owner_id,
            destination_id: dst_id,
            action,
        }];
    }

    // No move from the owner: marks left after the owner changed (killed between SETSLOT
    // NODE on the destination and on the source), or an IMPORTING mark on the owner itself.
    let mut out = Vec::new();
    for s in reachable().filter(|s| s.id() != owner_id) {
        if migrating_to(s).is_none() {
            continue;
        }
        let action = match keys_on(s) {
            Some(0) => OpenSlotsAction::Clear,
            n => OpenSlotsAction::Stuck {
                why: format!(
                    "{} no longer owns slot {slot} but holds {} of its keys",
                    s.node.name,
                    n.map_or("an unknown number".to_string(), |n| n.to_string())
                ),
                remedy: format!(
                    "compare them with the owner {}'s and delete them from {} once safe (CLUSTER GETKEYSINSLOT {slot} 100), then apply again",
                    owner.node.name, s.node.name
                ),
            },
        };
        out.push(Decision {
            source_id: s.id().to_string(),
            destination_id: owner_id.clone(),
            action,
        });
    }
    if out.is_empty() {
        if let Some(from) = importing_from(owner) {
            out.push(Decision {
                source_id: from,
                destination_id: owner_id,
                action: OpenSlotsAction::Clear,
            });
        }
    }
    out
}

/// A `Wait` between two node ids (either may be empty when unknown).
fn why_wait(src: &str, dst: &str, why: String) -> Decision {
    Decision {
        source_id: src.to_string(),
        destination_id: dst.to_string(),
        action: OpenSlotsAction::Wait { why },
    }
}
