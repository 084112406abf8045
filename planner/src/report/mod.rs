//! The what-if report: for every host, every zone and both sides of every declared partition,
//! what losing it would do to the cluster, plus a one-line summary a reviewer reads first.
//!
//! Redis Cluster model used: a replica is promoted only when a strict majority of the masters
//! that serve slots can vote; a side without that majority stops accepting writes. So a failure
//! is survived when the surviving side keeps a master majority and a copy of every shard.

mod goals;
mod render;

pub use goals::{GoalLevel, GoalOutcome};

pub use render::{
    render_dot, render_markdown, render_plan_markdown, render_plan_text, render_text,
};

use crate::fasthash::FastMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::model::Topology;
use crate::placement::{Placement, Role, SLOT_COUNT};
use crate::request::Request;

/// What was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Host,
    Zone,
    /// One side of a declared partition is cut off; the other side carries on.
    PartitionSide,
}

/// The outcome of one failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureOutcome {
    pub kind: FailureKind,
    /// Host, zone or partition name.
    pub name: String,
    /// Human label: `host a1`, `zone us-east-1a`, `partition campus-split: us-east-1c cut off`.
    pub label: String,
    /// The zones that carry on (for a partition side: the other side, `a+b`).
    pub surviving: String,
    pub masters_lost: u32,
    /// Shards whose master was lost and whose replica on the surviving side takes over.
    pub replicas_promoted: u32,
    /// Shards with no copy left on the surviving side (their data is unreachable).
    pub shards_without_copy: Vec<u32>,
    /// Strictly more than half of the slot-serving masters are on the surviving side.
    pub master_majority_survives: bool,
    pub writable_slots: u32,
    /// writable_slots / 16384.
    pub writable_share: f64,
    /// Every slot stays writable.
    pub survives: bool,
}

/// Per declared partition: which side (if any) keeps every slot writable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionVerdict {
    pub name: String,
    /// The side (`a+b`) that keeps all slots writable, if one does.
    pub keeps_all_slots: Option<String>,
    /// The best side and its share of writable slots.
    pub best_side: String,
    pub best_share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The line a reviewer reads first.
    pub summary: String,
    pub failures: Vec<FailureOutcome>,
    pub survives_any_host: bool,
    pub survives_any_zone: bool,
    pub partitions: Vec<PartitionVerdict>,
    /// Masters serving slots (the voters of a failover).
    pub voting_masters: u32,
    pub shards: u32,
    pub nodes: u32,
    /// Slots served by some master before any failure.
    pub slots_served: u32,
    /// One verdict per survival goal set in the request (`cluster.survive`); empty without one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub goals: Vec<GoalOutcome>,
}

/// Fast per-node facts for the failure loop.
struct Facts {
    shard_index: FastMap<u32, usize>,
    /// Per dense shard: copies, slots of its master, master serves slots.
    copies: Vec<u32>,
    slots: Vec<u32>,
    voting: Vec<bool>,
    total_voting: u32,
    /// Slots served before any failure (computed once: a failure loop must not rescan shards).
    served: u32,
}

/// The what-if report of any placement (planned, or observed live after failovers).
pub fn analyse(req: &Request, placement: &Placement) -> Report {
    analyse_with(&Topology::build(req), placement)
}

/// [`analyse`] on an already built model (the planner has one).
pub(crate) fn analyse_with(topo: &Topology, placement: &Placement) -> Report {
    let mut facts = Facts {
        shard_index: FastMap::default(),
        copies: Vec::new(),
        slots: Vec::new(),
        voting: Vec::new(),
        total_voting: 0,
        served: 0,
    };
    let mut node_shard = Vec::with_capacity(placement.nodes.len());
    for node in &placement.nodes {
        let next = facts.shard_index.len();
        let s = *facts.shard_index.entry(node.shard).or_insert(next);
        if s == facts.copies.len() {
            facts.copies.push(0);
            facts.slots.push(0);
            facts.voting.push(false);
        }
        facts.copies[s] += 1;
        if node.role == Role::Master {
            let n: u32 = node.slots.iter().map(|r| r.len()).sum();
            facts.slots[s] += n;
        }
        node_shard.push(s);
    }
    let any_slots = facts.slots.iter().any(|&n| n > 0);
    for node in placement.nodes.iter().filter(|n| n.role == Role::Master) {
        let s = facts.shard_index[&node.shard];
        // Redis counts masters that serve slots; with no slots at all, count every master.
        facts.voting[s] = !any_slots || facts.slots[s] > 0;
    }
    facts.total_voting = facts.voting.iter().filter(|&&v| v).count() as u32;
    let slots_served: u32 = facts.slots.iter().sum::<u32>().min(SLOT_COUNT);
    facts.served = slots_served;

    // Nodes bucketed by host and by zone index (flat, no per-host allocation). Nodes on hosts
    // or zones the topology does not know are lost by no single host or zone failure.
    let by_host = Buckets::new(
        topo.hosts.len(),
        placement.nodes.iter().map(|n| topo.host_index(&n.host)),
    );
    let by_zone = Buckets::new(
        topo.zones.len(),
        placement.nodes.iter().map(|n| topo.zone_index(&n.zone)),
    );
    let mut scratch = vec![0u32; facts.copies.len()];
    // What losing `lost` (node indexes) does; the same facts and scratch for every failure.
    let mut judge = |lost: &[usize], kind, name: &str, label: String, surviving: String| {
        outcome(
            placement,
            &facts,
            &node_shard,
            &mut scratch,
            lost,
            kind,
            name,
            label,
            surviving,
        )
    };
    let mut failures = Vec::new();
    let all_zones: Vec<&str> = topo.zones.iter().map(|z| z.name.as_str()).collect();
    for (h, host) in topo.hosts.iter().enumerate() {
        let lost = by_host.get(h);
        let zone = &topo.zones[host.zone].name;
        failures.push(judge(
            lost,
            FailureKind::Host,
            &host.name,
            format!("host {} ({zone})", host.name),
            format!("every host but {}", host.name),
        ));
    }
    for (z, zone) in topo.zones.iter().enumerate() {
        let lost = by_zone.get(z);
        let rest: Vec<&str> = all_zones
            .iter()
            .copied()
            .filter(|z| *z != zone.name)
            .collect();
        failures.push(judge(
            lost,
            FailureKind::Zone,
            &zone.name,
            format!("zone {}", zone.name),
            rest.join("+"),
        ));
    }
    let mut partitions = Vec::new();
    for part in &topo.partitions {
        let declared = part.side_label(&topo.zones, true);
        let other = part.side_label(&topo.zones, false);
        let mut sides = Vec::new();
        for cut_declared in [true, false] {
            let lost: Vec<usize> = topo
                .zones
                .iter()
                .enumerate()
                .filter(|(z, _)| part.in_side[*z] == cut_declared)
                .flat_map(|(z, _)| by_zone.get(z).iter().copied())
                .collect();
            let (cut, keeps) = if cut_declared {
                (&declared, &other)
            } else {
                (&other, &declared)
            };
            let o = judge(
                &lost,
                FailureKind::PartitionSide,
                &part.name,
                format!("partition {}: {cut} cut off", part.name),
                keeps.clone(),
            );
            sides.push(o.clone());
            failures.push(o);
        }
        let best = sides
            .iter()
            .max_by(|a, b| {
                a.writable_slots
                    .cmp(&b.writable_slots)
                    .then(b.surviving.cmp(&a.surviving))
            })
            .cloned();
        if let Some(best) = best {
            partitions.push(PartitionVerdict {
                name: part.name.clone(),
                keeps_all_slots: sides
                    .iter()
                    .find(|o| o.survives)
                    .map(|o| o.surviving.clone()),
                best_side: best.surviving.clone(),
                best_share: best.writable_share,
            });
        }
    }
    let mut goal_outcomes = Vec::new();
    let wanted = [
        (GoalLevel::Zones, topo.survive.zones, topo.zones.len()),
        (GoalLevel::Hosts, topo.survive.hosts, topo.hosts.len()),
    ];
    for (level, count, units) in wanted {
        if count == 0 {
            continue;
        }
        let unit_of: Vec<Option<usize>> = placement
            .nodes
            .iter()
            .map(|n| match level {
                GoalLevel::Zones => topo.zone_index(&n.zone),
                GoalLevel::Hosts => topo.host_index(&n.host),
            })
            .collect();
        let voting_master: Vec<bool> = placement
            .nodes
            .iter()
            .zip(&node_shard)
            .map(|(n, &s)| n.role == Role::Master && facts.voting[s])
            .collect();
        let chosen = goals::worst_units(
            units,
            count as usize,
            &unit_of,
            &node_shard,
            &voting_master,
            facts.copies.len(),
        );
        let buckets = match level {
            GoalLevel::Zones => &by_zone,
            GoalLevel::Hosts => &by_host,
        };
        let lost: Vec<usize> = chosen
            .iter()
            .flat_map(|&u| buckets.get(u).iter().copied())
            .collect();
        let name_of = |u: usize| match level {
            GoalLevel::Zones => topo.zones[u].name.as_str(),
            GoalLevel::Hosts => topo.hosts[u].name.as_str(),
        };
        let names: Vec<&str> = chosen.iter().map(|&u| name_of(u)).collect();
        let name = names.join("+");
        let surviving = match level {
            GoalLevel::Zones => all_zones
                .iter()
                .copied()
                .filter(|z| !names.contains(z))
                .collect::<Vec<_>>()
                .join("+"),
            GoalLevel::Hosts => format!("every host but {name}"),
        };
        let kind = match level {
            GoalLevel::Zones => FailureKind::Zone,
            GoalLevel::Hosts => FailureKind::Host,
        };
        let worst = judge(
            &lost,
            kind,
            &name,
            format!("{} {name}", level.as_str()),
            surviving,
        );
        goal_outcomes.push(GoalOutcome {
            level,
            count,
            combinations: goals::combinations(units as u64, u64::from(count)),
            met: worst.survives,
            worst,
        });
    }
    let survives_any_host = failures
        .iter()
        .filter(|f| f.kind == FailureKind::Host)
        .all(|f| f.survives);
    let survives_any_zone = failures
        .iter()
        .filter(|f| f.kind == FailureKind::Zone)
        .all(|f| f.survives);
    let mut summary = summarise(&failures, &partitions, survives_any_host, survives_any_zone);
    for g in &goal_outcomes {
        let _ = write!(summary, "; {}", g.line(facts.total_voting));
    }
    Report {
        summary,
        failures,
        survives_any_host,
        survives_any_zone,
        partitions,
        voting_masters: facts.total_voting,
        shards: facts.copies.len() as u32,
        nodes: placement.nodes.len() as u32,
        slots_served,
        goals: goal_outcomes,
    }
}

/// Node indices grouped by a dense key, stored flat (counting sort).
struct Buckets {
    start: Vec<usize>,
    items: Vec<usize>,
}

impl Buckets {
    fn new(keys: usize, of: impl Iterator<Item = Option<usize>>) -> Self {
        let of: Vec<Option<usize>> = of.collect();
        let mut start = vec![0usize; keys + 1];
        for k in of.iter().flatten() {
            start[k + 1] += 1;
        }
        for k in 0..keys {
            start[k + 1] += start[k];
        }
        let mut fill = start.clone();
        let mut items = vec![0usize; start[keys]];
        for (i, k) in of.iter().enumerate() {
            if let Some(k) = k {
                items[fill[*k]] = i;
                fill[*k] += 1;
            }
        }
        Buckets { start, items }
    }

    fn get(&self, key: usize) -> &[usize] {
        &self.items[self.start[key]..self.start[key + 1]]
    }
}

#[allow(clippy::too_many_arguments)]
fn outcome(
    placement: &Placement,
    facts: &Facts,
    node_shard: &[usize],
    scratch: &mut [u32],
    lost: &[usize],
    kind: FailureKind,
    name: &str,
    label: String,
    surviving: String,
) -> FailureOutcome {
    let mut masters_lost = 0u32;
    let mut voting_lost = 0u32;
    let mut master_lost_shards = Vec::new();
    for &i in lost {
        let s = node_shard[i];
        scratch[s] += 1;
        if placement.nodes[i].role == Role::Master {
            masters_lost += 1;
            master_lost_shards.push(s);
            if facts.voting[s] {
                voting_lost += 1;
            }
        }
    }
    let majority =
        2 * (facts.total_voting - voting_lost.min(facts.total_voting)) > facts.total_voting;
    let mut without: Vec<u32> = Vec::new();
    let mut lost_slots = 0u32;
    for &i in lost {
        let s = node_shard[i];
        if scratch[s] == facts.copies[s] {
            scratch[s] = u32::MAX; // count each shard once
            without.push(placement.nodes[i].shard);
            lost_slots += facts.slots[s];
        }
    }
    let promoted = if majority {
        master_lost_shards
            .iter()
            .filter(|&&s| scratch[s] != u32::MAX)
            .count() as u32
    } else {
        0
    };
    for &i in lost {
        scratch[node_shard[i]] = 0;
    }
    without.sort_unstable();
    let served = facts.served;
    let writable = if majority {
        served - lost_slots.min(served)
    } else {
        0
    };
    FailureOutcome {
        kind,
        name: name.to_string(),
        label,
        surviving,
        masters_lost,
        replicas_promoted: promoted,
        survives: majority && without.is_empty() && writable == served,
        shards_without_copy: without,
        master_majority_survives: majority,
        writable_slots: writable,
        writable_share: f64::from(writable) / f64::from(SLOT_COUNT),
    }
}

pub(crate) fn percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 0.05 {
        format!("{:.0}%", p)
    } else {
        format!("{:.1}%", p)
    }
}

/// Why a failure is not survived, in a few words.
pub fn why(f: &FailureOutcome, voting: u32) -> String {
    if !f.master_majority_survives {
        format!(
            "{} keeps {} of {voting} masters, not a strict majority, so no failover and no writes",
            f.surviving,
            voting.saturating_sub(f.masters_lost.min(voting))
        )
    } else if !f.shards_without_copy.is_empty() {
        format!(
            "{} shard(s) lose every copy ({}), {} writable",
            f.shards_without_copy.len(),
            shard_list(&f.shards_without_copy),
            percent(f.writable_share)
        )
    } else {
        format!("{} writable", percent(f.writable_share))
    }
}

fn shard_list(shards: &[u32]) -> String {
    let mut s: Vec<String> = shards
        .iter()
        .take(5)
        .map(|x| format!("shard {x}"))
        .collect();
    if shards.len() > 5 {
        s.push(format!("{} more", shards.len() - 5));
    }
    s.join(", ")
}

fn summarise(
    failures: &[FailureOutcome],
    partitions: &[PartitionVerdict],
    any_host: bool,
    any_zone: bool,
) -> String {
    let first_bad = |kind| failures.iter().find(|f| f.kind == kind && !f.survives);
    let yes_no = |ok: bool, kind| -> String {
        if ok {
            "yes".into()
        } else {
            match first_bad(kind) {
                Some(f) => {
                    let n = failures
                        .iter()
                        .filter(|g| g.kind == kind && !g.survives)
                        .count();
                    if n > 1 {
                        format!("no ({} and {} more)", f.label, n - 1)
                    } else {
                        format!("no ({})", f.label)
                    }
                }
                None => "no".into(),
            }
        }
    };
    let mut out = format!(
        "survives any single host: {}; any single zone: {}",
        yes_no(any_host, FailureKind::Host),
        yes_no(any_zone, FailureKind::Zone)
    );
    for p in partitions {
        match &p.keeps_all_slots {
            Some(side) => {
                let _ = write!(out, "; partition {}: side {side} keeps all slots", p.name);
            }
            None => {
                let _ = write!(
                    out,
                    "; partition {}: no side keeps all slots (side {} keeps {})",
                    p.name,
                    p.best_side,
                    percent(p.best_share)
                );
            }
        }
    }
    out
}
