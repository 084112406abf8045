//! `plan`: validate, solve, name the nodes, assign slots, analyse, and explain what cannot be
//! survived and how to fix it.

use std::collections::HashMap;

use crate::fasthash::FastSet;

use serde::{Deserialize, Serialize};

use crate::error::PlanError;
use crate::model::Topology;
use crate::placement::{Node, Placement, Role};
use crate::report::{analyse_with, why, FailureKind, FailureOutcome, Report};
use crate::request::Request;
use crate::sentinel::SentinelPlan;
use crate::slots;
use crate::solver::{Copy, Problem};
use crate::validate::validate;

/// A placement, its what-if report and the warnings a reviewer must see. Serialised as the
/// JSON output of `redisha plan`, which reads back as a [`Placement`] (extra fields ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    #[serde(flatten)]
    pub placement: Placement,
    pub report: Report,
    pub warnings: Vec<String>,
    /// Sentinel mode only: the sentinels and what failures do to the primary and its
    /// replicas. `report`'s summary and verdicts are then the sentinel report's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<SentinelPlan>,
}

/// Plan a cluster. With `previous`, nodes that still fit stay where they are under their
/// names, shards keep their masters unless goal (1) needs a failover, and slots move as little
/// as possible; a fresh plan is used instead when keeping nodes would survive fewer failures.
pub fn plan(req: &Request, previous: Option<&Placement>) -> Result<Plan, PlanError> {
    plan_with_sentinels(req, previous, &[])
}

/// [`plan`] for sentinel mode with the sentinels that run now: those that still fit stay on
/// their hosts under their names, as data nodes do (ignored without `req.sentinel`).
pub fn plan_with_sentinels(
    req: &Request,
    previous: Option<&Placement>,
    previous_sentinels: &[crate::sentinel::Sentinel],
) -> Result<Plan, PlanError> {
    validate(req)?;
    let topo = Topology::build(req);
    let problem = Problem::new(&topo, req);
    problem.check_feasible()?;
    let targets = problem.targets();
    let fresh = problem.fresh(&targets)?;
    let copies = match previous {
        Some(prev) if !prev.nodes.is_empty() => match problem.incremental(prev, &targets) {
            Some(inc) if problem.shortfall(&inc) <= problem.shortfall(&fresh) => inc,
            _ => adopt_names(fresh, prev, &topo),
        },
        _ => fresh,
    };
    let placement = build_placement(&topo, req.cluster.shards, copies, previous);
    let mut report = analyse_with(&topo, &placement);
    if let Some(spec) = &req.sentinel {
        // Redis Cluster's rules (a master majority votes) do not apply: Sentinel decides.
        let sentinel =
            crate::sentinel::place_with(&topo, req, spec, &placement, previous_sentinels)?;
        crate::sentinel::verdict(req, &sentinel.report)?;
        report.summary = sentinel.report.summary.clone();
        report.survives_any_host = sentinel.report.survives_any_host;
        report.survives_any_zone = sentinel.report.survives_any_zone;
        report.goals.clear();
        let warnings = sentinel_warnings(&sentinel);
        return Ok(Plan {
            placement,
            report,
            warnings,
            sentinel: Some(sentinel),
        });
    }
    crate::survive::verdict(req, &report)?;
    let warnings = warnings(req, &topo, &report);
    Ok(Plan {
        placement,
        report,
        warnings,
        sentinel: None,
    })
}

/// One warning per zone or partition failure the sentinel deployment cannot survive, then the
/// fixes (host failures are summed up in one line, as for Redis Cluster).
fn sentinel_warnings(plan: &SentinelPlan) -> Vec<String> {
    let mut out = Vec::new();
    let mut hosts = 0;
    for f in plan.report.failures.iter().filter(|f| !f.survives) {
        if f.kind == FailureKind::Host {
            hosts += 1;
            continue;
        }
        out.push(format!("cannot survive {}: {}", f.label, f.why));
    }
    if hosts > 0 {
        out.push(format!(
            "{hosts} single-host failure(s) are not survived (see the report)"
        ));
    }
    out.extend(plan.report.advice.iter().map(|a| format!("fix: {a}")));
    out
}

/// Give fresh copies the previous names of nodes on the same host for the same shard.
fn adopt_names(mut copies: Vec<Copy>, prev: &Placement, topo: &Topology) -> Vec<Copy> {
    let mut by_place: HashMap<(u32, usize), &str> = HashMap::new();
    for n in &prev.nodes {
        if let Some(h) = topo.host_index(&n.host) {
            by_place.entry((n.shard, h)).or_insert(&n.name);
        }
    }
    for c in &mut copies {
        if let Some(name) = by_place.get(&(c.shard, c.host)) {
            c.name = Some((*name).to_string());
        }
    }
    copies
}

fn build_placement(
    topo: &Topology,
    shards: u32,
    copies: Vec<Copy>,
    previous: Option<&Placement>,
) -> Placement {
    // New names never reuse a name of the previous placement: a name means one process.
    let mut taken: FastSet<String> = previous
        .map(|p| p.nodes.iter().map(|n| n.name.clone()).collect())
        .unwrap_or_default();
    taken.extend(copies.iter().filter_map(|c| c.name.clone()));
    // Without a previous placement every name is new and s<shard>-<n> is unique by construction.
    let check_taken = !taken.is_empty();
    let mut next: Vec<u32> = vec![0; shards as usize];
    let owners = previous.map(slots::owners).unwrap_or_default();
    let slot_ranges = if owners.is_empty() {
        slots::fresh(shards)
    } else {
        slots::rebalance(&owners, shards)
    };
    let mut nodes: Vec<Node> = copies
        .into_iter()
        .map(|c| {
            let name = c.name.unwrap_or_else(|| loop {
                let k = &mut next[c.shard as usize];
                let candidate = format!("s{}-{}", c.shard, k);
                *k += 1;
                if !check_taken || taken.insert(candidate.clone()) {
                    break candidate;
                }
            });
            let host = &topo.hosts[c.host];
            Node {
                name,
                shard: c.shard,
                role: if c.master {
                    Role::Master
                } else {
                    Role::Replica
                },
                host: host.name.clone(),
                zone: topo.zones[host.zone].name.clone(),
                slots: if c.master {
                    slot_ranges[c.shard as usize].clone()
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    sort_nodes(&mut nodes);
    Placement { nodes }
}

/// The one node order: shard, master first, then name (names compare by their number part
/// too, so s0-10 follows s0-9).
pub fn sort_nodes(nodes: &mut [Node]) {
    // Keys borrow the names: no allocation per comparison on 30,000-node placements.
    nodes.sort_by(|a, b| {
        (a.shard, a.role, name_key(&a.name)).cmp(&(b.shard, b.role, name_key(&b.name)))
    });
}

fn name_key(name: &str) -> (&str, u64, &str) {
    let digits_at = name
        .rfind(|c: char| !c.is_ascii_digit())
        .map(|i| i + 1)
        .unwrap_or(0);
    let (stem, num) = name.split_at(digits_at);
    (stem, num.parse().unwrap_or(0), name)
}

/// One warning per failure of goal (1) the plan cannot survive: which, why, and the fix.
fn warnings(req: &Request, topo: &Topology, report: &Report) -> Vec<String> {
    let s = req.cluster.shards;
    let usable_zones = topo
        .zones
        .iter()
        .filter(|z| z.hosts.iter().any(|&h| topo.hosts[h].capacity > 0))
        .count();
    let mut out = Vec::new();
    if s < 3 {
        // Said first and plainly: no layout fixes this, only more shards do.
        out.push(format!(
            "only {s} master(s): Redis Cluster promotes a replica only when a strict majority of the masters votes for it, so with fewer than 3 masters the loss of any master is never failed over automatically; fix: use 3 or more shards (the plan still keeps the failures it cannot survive to the fewest)"
        ));
    }
    for f in &report.failures {
        if f.survives || f.kind == FailureKind::Host {
            continue;
        }
        if f.kind == FailureKind::PartitionSide {
            // A partition is survived when either side keeps everything; warn once, if neither.
            let verdict = report.partitions.iter().find(|p| p.name == f.name);
            if verdict.is_some_and(|v| v.keeps_all_slots.is_some()) {
                continue;
            }
            if out
                .iter()
                .any(|w: &String| w.starts_with(&format!("cannot survive partition {}:", f.name)))
            {
                continue;
            }
            let sides: Vec<&FailureOutcome> = report
                .failures
                .iter()
                .filter(|g| g.kind == FailureKind::PartitionSide && g.name == f.name)
                .collect();
            let detail: Vec<String> = sides
                .iter()
                .map(|g| format!("side {}: {}", g.surviving, why(g, report.voting_masters)))
                .collect();
            out.push(format!(
                "cannot survive partition {}: neither side keeps a master majority and a copy of every shard ({}); fix: {}",
                f.name,
                detail.join("; "),
                partition_fix(req, s)
            ));
            continue;
        }
        out.push(format!(
            "cannot survive losing {}: {}; fix: {}",
            f.label,
            why(f, report.voting_masters),
            zone_fix(req, f, s, usable_zones)
        ));
    }
    // A single-host failure that is not survived is a plan fact worth one line, not thousands.
    let bad_hosts: Vec<&FailureOutcome> = report
        .failures
        .iter()
        .filter(|f| f.kind == FailureKind::Host && !f.survives)
        .collect();
    if let Some(first) = bad_hosts.first() {
        let fix = if req.cluster.replicas == 0 {
            "set replicas >= 1".to_string()
        } else if s < 3 {
            "use at least 3 shards so one host never holds half of the masters".to_string()
        } else {
            "add hosts so no host holds half of the masters".to_string()
        };
        out.push(format!(
            "cannot survive losing {} host(s), e.g. {}: {}; fix: {fix}",
            bad_hosts.len(),
            first.label,
            why(first, report.voting_masters)
        ));
    }
    out
}

/// Shard counts near `s` for which `zones` zones can each hold fewer than half the masters.
fn workable_shards(s: u32, zones: u32) -> (Option<u32>, Option<u32>) {
    let ok = |n: u32| n >= 1 && u64::from(zones) * u64::from((n - 1) / 2) >= u64::from(n);
    let below = (1..s).rev().find(|&n| ok(n));
    let above = (s + 1..=crate::placement::SLOT_COUNT).find(|&n| ok(n));
    (below, above)
}

fn zone_fix(req: &Request, f: &FailureOutcome, s: u32, usable_zones: usize) -> String {
    let c = req.cluster.replicas + 1;
    if !f.shards_without_copy.is_empty() && f.master_majority_survives {
        return if req.cluster.replicas == 0 {
            "set replicas >= 1 so every shard has a copy in another zone".into()
        } else {
            format!("add capacity outside {} so each shard can keep a copy elsewhere, or use spread=zone", f.name)
        };
    }
    if usable_zones < 3 {
        let per_zone = (u64::from(s) * u64::from(c)).div_ceil(3);
        return format!(
            "add {} zone(s) with room for about {per_zone} nodes each: with {usable_zones} zone(s) one zone always holds at least half of the masters",
            3 - usable_zones
        );
    }
    let (below, above) = workable_shards(s, usable_zones as u32);
    let limit = u64::from(usable_zones as u32) * u64::from(s.saturating_sub(1) / 2);
    if limit < u64::from(s) {
        let mut options = Vec::new();
        if let Some(b) = below {
            options.push(format!("shards={b}"));
        }
        if let Some(a) = above {
            options.push(format!("shards={a}"));
        }
        return format!(
            "with {s} shards over {usable_zones} zones some zone holds at least half of the masters; use {}, or add a zone",
            options.join(" or ")
        );
    }
    format!(
        "add capacity in the other zones so masters can move out of {} (it holds {} of {s})",
        f.name, f.masters_lost
    )
}

fn partition_fix(req: &Request, s: u32) -> String {
    if s.is_multiple_of(2) {
        format!(
            "with {s} shards the sides can tie; use shards={} or add capacity on the side that should win",
            s + 1
        )
    } else if req.cluster.replicas == 0 {
        "set replicas >= 1 so the winning side can hold a copy of every shard".into()
    } else {
        "add capacity on one side so it can hold more than half of the masters and a copy of every shard".into()
    }
}
