//! Making the state say what exists. Terraform's private state is only a cache: a provider
//! killed mid-apply leaves it stale or drops it. Before plan, apply, read and destroy act, the
//! state is rebuilt from the two sources of truth:
//! - the driver: every node carrying the cluster's id (local: its record in its directory),
//!   with its process;
//! - the live cluster: node ids, and which slots each shard serves now (a migration that was
//!   cut short moved some of them already).

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use redisha_planner::{Role, SlotRange};
use tracing::{info, warn};

use crate::conn::{slots_to_ranges, NodeLine};
use crate::driver::{HostHandle, ProcessState};
use crate::error::Result;
use crate::ops::Operator;
use crate::state::{ClusterNode, ClusterState};

impl Operator<'_> {
    /// Rebuilds `state` from the driver and the live cluster; returns one line per change, for
    /// the log and the plan. Reads only: nothing is started, stopped or reconfigured, except
    /// that node records are rewritten where the planned roles had to be settled.
    pub async fn recover(&self, state: &mut ClusterState) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        if !state.cluster_id.is_empty() {
            if let Some(found) = self.driver.discover(&state.cluster_id).await? {
                // A node of the state the driver did not find stays unless its process is
                // known to be gone too: only then is it proven not to exist.
                let names: BTreeSet<&str> = found.iter().map(|(h, _)| h.name.as_str()).collect();
                let mut gone = BTreeSet::new();
                for n in state
                    .nodes
                    .iter()
                    .filter(|n| !names.contains(n.name.as_str()))
                {
                    if self.driver.inspect_node(&n.handle).await? == ProcessState::Stopped {
                        gone.insert(n.name.clone());
                    }
                }
                merge_discovered(state, found, &gone, &mut notes);
            }
        }
        let views = join_all(
            state
                .nodes
                .iter()
                .map(|n| async move { self.conns.cluster_nodes(&n.target()).await.ok() }),
        )
        .await;
        let views: Vec<(String, Vec<NodeLine>)> = state
            .nodes
            .iter()
            .zip(views)
            .filter_map(|(n, v)| Some((n.name.clone(), v?)))
            .collect();
        fill_node_ids(state, &views, &mut notes);
        let settled = settle_roles(state, &views, &mut notes);
        take_live_slots(state, &views, &mut notes);
        if settled {
            self.record_nodes(state).await?;
        }
        for note in &notes {
            info!(cluster = %state.name, %note, "state recovered from the cluster");
        }
        Ok(notes)
    }

    /// Rewrites every node's record from the state (after planned roles changed).
    pub async fn record_nodes(&self, state: &ClusterState) -> Result<()> {
        if state.cluster_id.is_empty() {
            return Ok(());
        }
        for n in &state.nodes {
            self.driver
                .record_node(&n.handle, &state.record_of(n))
                .await?;
        }
        Ok(())
    }
}

/// Nodes the driver found join the state; `gone` nodes (no record, no process) leave it;
/// handles take what the driver sees now (pids).
fn merge_discovered(
    state: &mut ClusterState,
    found: Vec<(crate::driver::NodeHandle, crate::identity::NodeRecord)>,
    gone: &BTreeSet<String>,
    notes: &mut Vec<String>,
) {
    let before = state.nodes.len();
    state.nodes.retain(|n| {
        let keep = !gone.contains(&n.name);
        if !keep {
            notes.push(format!(
                "node {} has neither directory nor process left: dropped from state",
                n.name
            ));
        }
        keep
    });
    let dropped = before - state.nodes.len();
    for (handle, record) in found {
        if state.host(&record.host).is_none() {
            state.hosts.push(HostHandle::of_record(&record, &handle.ip));
        }
        match state.node_mut(&record.name) {
            Some(n) => n.handle = handle,
            None => {
                notes.push(format!(
                    "node {} (shard {}, {}) found on host {}: taken into state",
                    record.name,
                    record.shard,
                    record.role.as_str(),
                    record.host
                ));
                state.nodes.push(ClusterNode {
                    name: record.name,
                    shard: record.shard,
                    role: record.role,
                    zone: record.zone,
                    host: record.host,
                    slots: Vec::new(),
                    node_id: String::new(),
                    handle,
                });
            }
        }
    }
    if dropped > 0 {
        let used: BTreeSet<String> = state.nodes.iter().map(|n| n.host.clone()).collect();
        state.hosts.retain(|h| used.contains(&h.name));
    }
    state
        .nodes
        .sort_by(|a, b| (a.shard, a.role, &a.name).cmp(&(b.shard, b.role, &b.name)));
}

/// Node ids from each node's own line; a node that answers with another id than the state's
/// lost its data (repair replaces the old identity), so a known id is kept.
fn fill_node_ids(
    state: &mut ClusterState,
    views: &[(String, Vec<NodeLine>)],
    notes: &mut Vec<String>,
) {
    for (name, view) in views {
        let Some(me) = view.iter().find(|l| l.is_myself()) else {
            continue;
        };
        if let Some(n) = state.node_mut(name) {
            if n.node_id.is_empty() {
                n.node_id = me.id.clone();
            } else if n.node_id != me.id {
                notes.push(format!(
                    "node {name} answers with a new cluster id (it lost its data); repair replaces the old one"
                ));
            }
        }
    }
}

/// Each shard's planned master takes the slots the shard serves now. A master's own line is
/// authoritative; for a shard with no answering master (it failed, and no replica took over
/// yet) the freshest view of the others says what its master serves.
fn take_live_slots(
    state: &mut ClusterState,
    views: &[(String, Vec<NodeLine>)],
    notes: &mut Vec<String>,
) {
    let mut served: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
    let mut answered: BTreeSet<u32> = BTreeSet::new();
    for (name, view) in views {
        let (Some(me), Some(node)) = (view.iter().find(|l| l.is_myself()), state.node(name)) else {
            continue;
        };
        if me.is_master() {
            answered.insert(node.shard);
            served
                .entry(node.shard)
                .or_default()
                .extend(me.slots.iter().flat_map(|r| r.start..=r.end));
        }
    }
    // Shards with no answering master: what the freshest other view says their ids serve.
    let freshest = views
        .iter()
        .max_by_key(|(_, v)| v.iter().map(|l| l.config_epoch).max().unwrap_or(0));
    if let Some((_, view)) = freshest {
        for line in view.iter().filter(|l| l.is_master() && !l.slots.is_empty()) {
            if let Some(node) = state.by_id(&line.id) {
                if !answered.contains(&node.shard) {
                    served
                        .entry(node.shard)
                        .or_default()
                        .extend(line.slots.iter().flat_map(|r| r.start..=r.end));
                }
            }
        }
    }
    if views.is_empty() {
        return; // nothing answered: keep the state's plan
    }
    let shards: BTreeSet<u32> = state.nodes.iter().map(|n| n.shard).collect();
    for shard in shards {
        let live: Vec<SlotRange> = slots_to_ranges(served.remove(&shard).unwrap_or_default());
        let Some(master) = state
            .nodes
            .iter_mut()
            .find(|n| n.shard == shard && n.role == Role::Master)
        else {
            continue;
        };
        if master.slots != live {
            let count: u32 = live.iter().map(SlotRange::len).sum();
            notes.push(format!(
                "shard {shard} serves {count} slots now (the state said otherwise): the plan starts from there"
            ));
            master.slots = live;
        }
    }
}

/// Every shard has exactly one planned master. Records written across a failover that was
/// cut short can name two or none: the node that serves the shard's slots now wins.
/// Returns whether a role changed.
fn settle_roles(
    state: &mut ClusterState,
    views: &[(String, Vec<NodeLine>)],
    notes: &mut Vec<String>,
) -> bool {
    let serving: BTreeSet<String> = views
        .iter()
        .filter(|(_, v)| {
            v.iter()
                .any(|l| l.is_myself() && l.is_master() && l.slot_count() > 0)
        })
        .map(|(n, _)| n.clone())
        .collect();
    let shards: BTreeSet<u32> = state.nodes.iter().map(|n| n.shard).collect();
    let mut changed = false;
    for shard in shards {
        let members: Vec<&ClusterNode> = state.nodes.iter().filter(|n| n.shard == shard).collect();
        let masters = members.iter().filter(|n| n.role == Role::Master).count();
        if masters == 1 {
            continue;
        }
        let chosen = members
            .iter()
            .find(|n| serving.contains(&n.name))
            .or_else(|| members.iter().find(|n| n.role == Role::Master))
            .or_else(|| members.first())
            .map(|n| n.name.clone());
        let Some(chosen) = chosen else { continue };
        warn!(shard, master = %chosen, "the records name {masters} masters for the shard; settling on the one serving it");
        notes.push(format!(
            "shard {shard}: records named {masters} planned masters; {chosen} is its master now"
        ));
        let slots: Vec<SlotRange> = state
            .nodes
            .iter()
            .filter(|n| n.shard == shard)
            .flat_map(|n| n.slots.clone())
            .collect();
        for n in state.nodes.iter_mut().filter(|n| n.shard == shard) {
            n.role = if n.name == chosen {
                Role::Master
            } else {
                Role::Replica
            };
            n.slots = if n.name == chosen {
                slots.clone()
            } else {
                Vec::new()
            };
        }
        changed = true;
    }
    changed
}
