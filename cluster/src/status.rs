//! The live status of a cluster against its plan: every node with its zone and host (from the
//! plan's layout), role, shard, slots, load and replication, per-shard figures, and the
//! problems an operator must see: a master in another zone than planned, a shard without a
//! replica, half-moved slots, a down node, a layout that no longer survives the loss of a zone.
//! `redisha status` and the `redisha_cluster_health` data source show it.

use std::collections::{BTreeMap, BTreeSet};

use redisha_planner::Role;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::health::{health, HealthReport, NodeHealth, NodeStats};
use crate::ops::Options;
use crate::secret::Password;

/// Where the plan put a node (the `nodes` of a `redisha_cluster`: its zone, host, shard and
/// planned role by address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedNode {
    pub address: String,
    pub name: String,
    pub zone: String,
    pub host: String,
    pub shard: u32,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub address: String,
    /// The plan's name, zone and host of the node at this address (empty without a layout).
    pub name: String,
    pub zone: String,
    pub host: String,
    pub id: String,
    pub alive: bool,
    pub role: Option<Role>,
    pub planned_role: Option<Role>,
    /// The shard the node serves now: the plan's shard of its live master (masters the
    /// layout does not know are numbered after the planned shards).
    pub shard: Option<u32>,
    pub slots: u32,
    pub open_slots: Vec<u16>,
    pub master_id: Option<String>,
    pub link_status: Option<String>,
    pub lag_bytes: Option<u64>,
    pub cluster_state: Option<String>,
    #[serde(flatten)]
    pub stats: NodeStats,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardStatus {
    pub shard: u32,
    /// The live master's address; `None` when no live node serves the shard.
    pub master: Option<String>,
    pub master_zone: String,
    /// The zone the plan put the shard's master in (empty without a layout).
    pub planned_master_zone: String,
    /// Replicas whose replication link is up.
    pub replicas_up: u32,
    /// The largest lag of its live replicas, in bytes of replication stream.
    pub max_lag_bytes: Option<u64>,
    pub slots: u32,
    pub keys: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    NodeDown,
    MasterInWrongZone,
    ShardWithoutReplica,
    OpenSlots,
    SlotsNotCovered,
    ZoneGuaranteeLost,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The node (address) or shard concerned, when one is.
    pub node: Option<String>,
    pub shard: Option<u32>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub cluster_state: String,
    pub slots_covered: u32,
    /// Whether losing any one zone would still leave a majority of masters and a copy of
    /// every shard; `None` without a layout (zones unknown).
    pub survives_zone_loss: Option<bool>,
    pub nodes: Vec<NodeStatus>,
    pub shards: Vec<ShardStatus>,
    pub problems: Vec<Problem>,
}

impl StatusReport {
    pub fn has(&self, kind: ProblemKind) -> bool {
        self.problems.iter().any(|p| p.kind == kind)
    }
}

/// The status of the cluster `seeds` belong to, against `layout` (may be empty).
pub async fn status(
    seeds: &[String],
    password: Option<&Password>,
    layout: &[PlannedNode],
    options: &Options,
) -> Result<StatusReport> {
    let report = health(seeds, password, options).await?;
    Ok(assess(&report, layout))
}

/// Joins a health report with the plan's layout and finds the problems.
pub fn assess(report: &HealthReport, layout: &[PlannedNode]) -> StatusReport {
    let planned: BTreeMap<&str, &PlannedNode> =
        layout.iter().map(|p| (p.address.as_str(), p)).collect();
    // A shard is its live master (a master with slots); its number is the plan's shard of
    // that master's address, else the order of first slots.
    let mut masters: Vec<&NodeHealth> = report
        .nodes
        .iter()
        .filter(|n| n.alive && n.role == Some(Role::Master) && n.slots > 0)
        .collect();
    masters.sort_by_key(|n| {
        (
            planned.get(n.address.as_str()).map(|p| p.shard),
            n.id.clone(),
        )
    });
    let mut shard_of: BTreeMap<&str, u32> = BTreeMap::new();
    let mut next = layout.iter().map(|p| p.shard + 1).max().unwrap_or(0);
    for m in &masters {
        let s = match planned.get(m.address.as_str()) {
            Some(p) => p.shard,
            None => {
                next += 1;
                next - 1
            }
        };
        shard_of.insert(m.id.as_str(), s);
    }

    let nodes: Vec<NodeStatus> = report
        .nodes
        .iter()
        .map(|n| {
            let p = planned.get(n.address.as_str());
            let shard = match n.role {
                Some(Role::Master) => shard_of.get(n.id.as_str()).copied(),
                _ => n
                    .master_id
                    .as_deref()
                    .and_then(|m| shard_of.get(m).copied()),
            }
            .or_else(|| p.map(|p| p.shard));
            NodeStatus {
                address: n.address.clone(),
                name: p.map(|p| p.name.clone()).unwrap_or_default(),
                zone: p.map(|p| p.zone.clone()).unwrap_or_default(),
                host: p.map(|p| p.host.clone()).unwrap_or_default(),
                id: n.id.clone(),
                alive: n.alive,
                role: n.role,
                planned_role: p.map(|p| p.role),
                shard,
                slots: n.slots,
                open_slots: n.open_slots.clone(),
                master_id: n.master_id.clone(),
                link_status: n.link_status.clone(),
                lag_bytes: n.lag_bytes,
                cluster_state: n.cluster_state.clone(),
                stats: n.stats,
                error: n.error.clone(),
            }
        })
        .collect();

    let zone_of = |address: &str| planned.get(address).map(|p| p.zone.clone());
    let mut problems = Vec::new();
    let mut shards = Vec::new();
    for m in &masters {
        let shard = shard_of.get(m.id.as_str()).copied().unwrap_or_default();
        let replicas: Vec<&NodeHealth> = report
            .nodes
            .iter()
            .filter(|r| r.alive && r.master_id.as_deref() == Some(m.id.as_str()))
            .collect();
        let replicas_up = replicas
            .iter()
            .filter(|r| r.link_status.as_deref() == Some("up"))
            .count() as u32;
        let planned_master_zone = layout
            .iter()
            .find(|p| p.shard == shard && p.role == Role::Master)
            .map(|p| p.zone.clone())
            .unwrap_or_default();
        let master_zone = zone_of(&m.address).unwrap_or_default();
        if replicas_up == 0 {
            problems.push(Problem {
                kind: ProblemKind::ShardWithoutReplica,
                node: Some(m.address.clone()),
                shard: Some(shard),
                message: format!(
                    "shard {shard} (master {}) has no replica with its link up: one more failure loses its data",
                    m.address
                ),
            });
        }
        if !planned_master_zone.is_empty() && master_zone != planned_master_zone {
            problems.push(Problem {
                kind: ProblemKind::MasterInWrongZone,
                node: Some(m.address.clone()),
                shard: Some(shard),
                message: format!(
                    "shard {shard}'s master {} is in zone {} but planned in zone {planned_master_zone}; `terraform apply` fails it back",
                    m.address,
                    if master_zone.is_empty() { "(unknown)" } else { &master_zone },
                ),
            });
        }
        shards.push(ShardStatus {
            shard,
            master: Some(m.address.clone()),
            master_zone,
            planned_master_zone,
            replicas_up,
            max_lag_bytes: replicas.iter().filter_map(|r| r.lag_bytes).max(),
            slots: m.slots,
            keys: m.stats.keys,
        });
    }
    // A planned shard that no live master serves.
    let served: BTreeSet<u32> = shards.iter().map(|s| s.shard).collect();
    let planned_shards: BTreeSet<u32> = layout.iter().map(|p| p.shard).collect();
    for shard in planned_shards.difference(&served) {
        shards.push(ShardStatus {
            shard: *shard,
            master: None,
            master_zone: String::new(),
            planned_master_zone: layout
                .iter()
                .find(|p| p.shard == *shard && p.role == Role::Master)
                .map(|p| p.zone.clone())
                .unwrap_or_default(),
            replicas_up: 0,
            max_lag_bytes: None,
            slots: 0,
            keys: None,
        });
    }
    shards.sort_by_key(|s| s.shard);

    for n in &nodes {
        if !n.alive {
            problems.push(Problem {
                kind: ProblemKind::NodeDown,
                node: Some(n.address.clone()),
                shard: n.shard,
                message: format!(
                    "node {} is down ({})",
                    label(n),
                    n.error.as_deref().unwrap_or("no answer")
                ),
            });
        }
        if !n.open_slots.is_empty() {
            problems.push(Problem {
                kind: ProblemKind::OpenSlots,
                node: Some(n.address.clone()),
                shard: n.shard,
                message: format!(
                    "node {} has {} half-moved slot(s) (first {}); `terraform apply` finishes them",
                    label(n),
                    n.open_slots.len(),
                    n.open_slots[0]
                ),
            });
        }
    }
    if report.slots_covered < redisha_planner::SLOT_COUNT {
        problems.push(Problem {
            kind: ProblemKind::SlotsNotCovered,
            node: None,
            shard: None,
            message: format!(
                "only {} of {} slots are served by a live master",
                report.slots_covered,
                redisha_planner::SLOT_COUNT
            ),
        });
    }
    let survives_zone_loss = (!layout.is_empty()).then(|| {
        let lost = zone_loss_problems(&nodes);
        let ok = lost.is_empty();
        problems.extend(lost);
        ok
    });
    StatusReport {
        cluster_state: report.cluster_state.clone(),
        slots_covered: report.slots_covered,
        survives_zone_loss,
        nodes,
        shards,
        problems,
    }
}

fn label(n: &NodeStatus) -> String {
    if n.name.is_empty() {
        n.address.clone()
    } else {
        format!("{} ({})", n.name, n.address)
    }
}

/// What losing each zone would do to the live layout: the plan's guarantee is that losing
/// any one zone keeps a strict majority of masters and a copy of every shard.
fn zone_loss_problems(nodes: &[NodeStatus]) -> Vec<Problem> {
    let live: Vec<&NodeStatus> = nodes.iter().filter(|n| n.alive).collect();
    let masters: Vec<&&NodeStatus> = live
        .iter()
        .filter(|n| n.role == Some(Role::Master) && n.slots > 0)
        .collect();
    let shards: BTreeSet<u32> = masters.iter().filter_map(|m| m.shard).collect();
    let zones: BTreeSet<&str> = nodes
        .iter()
        .map(|n| n.zone.as_str())
        .filter(|z| !z.is_empty())
        .collect();
    let mut out = Vec::new();
    for zone in zones {
        let left = masters.iter().filter(|m| m.zone != zone).count();
        let mut why = Vec::new();
        if masters.is_empty() || 2 * left <= masters.len() {
            why.push(format!(
                "{left} of {} masters would be left (no majority to fail over)",
                masters.len()
            ));
        }
        let lost: Vec<String> = shards
            .iter()
            .filter(|s| !live.iter().any(|n| n.shard == Some(**s) && n.zone != zone))
            .map(u32::to_string)
            .collect();
        if !lost.is_empty() {
            why.push(format!(
                "shard(s) {} would lose every copy",
                lost.join(", ")
            ));
        }
        if !why.is_empty() {
            out.push(Problem {
                kind: ProblemKind::ZoneGuaranteeLost,
                node: None,
                shard: None,
                message: format!("losing zone {zone}: {}", why.join("; ")),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, address: &str, role: Role, master: Option<&str>, slots: u32) -> NodeHealth {
        NodeHealth {
            id: id.into(),
            address: address.into(),
            alive: true,
            role: Some(role),
            master_id: master.map(str::to_string),
            link_status: master.map(|_| "up".to_string()),
            lag_bytes: master.map(|_| 0),
            slots,
            cluster_state: Some("ok".into()),
            error: None,
            open_slots: Vec::new(),
            stats: NodeStats::default(),
        }
    }

    fn planned(address: &str, zone: &str, shard: u32, role: Role) -> PlannedNode {
        PlannedNode {
            address: address.into(),
            name: format!("{zone}-{shard}"),
            zone: zone.into(),
            host: zone.into(),
            shard,
            role,
        }
    }

    /// Two shards over zones a, b, c: shard 0 master in a, replica in b; shard 1 master in b,
    /// replica in c.
    fn layout() -> Vec<PlannedNode> {
        vec![
            planned("a:1", "a", 0, Role::Master),
            planned("b:1", "b", 0, Role::Replica),
            planned("b:2", "b", 1, Role::Master),
            planned("c:1", "c", 1, Role::Replica),
        ]
    }

    fn report(nodes: Vec<NodeHealth>) -> HealthReport {
        HealthReport {
            cluster_state: "ok".into(),
            slots_covered: redisha_planner::SLOT_COUNT,
            nodes,
        }
    }

    #[test]
    fn a_cluster_as_planned_has_no_problem_but_two_masters_cannot_survive_a_zone() {
        let r = report(vec![
            node("m0", "a:1", Role::Master, None, 8192),
            node("r0", "b:1", Role::Replica, Some("m0"), 0),
            node("m1", "b:2", Role::Master, None, 8192),
            node("r1", "c:1", Role::Replica, Some("m1"), 0),
        ]);
        let s = assess(&r, &layout());
        // Two masters: losing either zone leaves 1 of 2, no majority.
        assert_eq!(s.survives_zone_loss, Some(false));
        let kinds: BTreeSet<_> = s.problems.iter().map(|p| format!("{:?}", p.kind)).collect();
        assert_eq!(kinds, BTreeSet::from(["ZoneGuaranteeLost".to_string()]));
        assert_eq!(s.shards.len(), 2);
        assert_eq!(s.shards[1].planned_master_zone, "b");
        assert_eq!(s.nodes[2].zone, "b");
        assert_eq!(s.nodes[3].shard, Some(1));
    }

    #[test]
    fn a_failover_shows_the_master_in_the_wrong_zone_and_the_shard_without_replica() {
        // Zone a is gone: shard 0's replica in b took over.
        let mut dead = node("m0", "a:1", Role::Master, None, 0);
        dead.alive = false;
        dead.role = None;
        let r = report(vec![
            dead,
            node("r0", "b:1", Role::Master, None, 8192),
            node("m1", "b:2", Role::Master, None, 8192),
            node("r1", "c:1", Role::Replica, Some("m1"), 0),
        ]);
        let s = assess(&r, &layout());
        let wrong: Vec<_> = s
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::MasterInWrongZone)
            .collect();
        assert_eq!(wrong.len(), 1);
        assert_eq!(wrong[0].node.as_deref(), Some("b:1"));
        assert_eq!(wrong[0].shard, Some(0));
        let lonely: Vec<_> = s
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::ShardWithoutReplica)
            .collect();
        assert_eq!(lonely.len(), 1);
        assert_eq!(lonely[0].shard, Some(0));
        assert!(s.has(ProblemKind::NodeDown));
        // Both masters now share zone b.
        assert!(s
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::ZoneGuaranteeLost && p.message.contains("zone b")));
    }

    #[test]
    fn half_moved_slots_are_flagged() {
        let mut m0 = node("m0", "a:1", Role::Master, None, 8192);
        m0.open_slots = vec![42];
        let r = report(vec![m0, node("r0", "b:1", Role::Replica, Some("m0"), 0)]);
        let s = assess(&r, &[]);
        assert!(s.has(ProblemKind::OpenSlots));
        assert_eq!(s.survives_zone_loss, None);
        assert_eq!(s.nodes[0].shard, Some(0));
    }
}
