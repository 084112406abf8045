//! Where the sentinels go. Exhaustive over how many sentinels each zone gets (at most 5
//! sentinels, so a few thousand spreads even over many zones); inside a zone they take
//! distinct hosts, preferring hosts away from the primary. Each spread is scored by the
//! what-if report, so the choice is exactly the one that survives the most.

use std::cmp::Reverse;

use crate::error::PlanError;
use crate::model::Topology;
use crate::placement::{Placement, Role};
use crate::report::FailureKind;
use crate::request::{Request, SentinelSpec};

use super::outcome::{analyse, SentinelReport};
use super::Sentinel;

/// Spreads tried at most; past it (hundreds of zones) only zones are tried in order.
const MAX_SPREADS: usize = 20_000;

pub(super) fn choose(
    topo: &Topology,
    req: &Request,
    spec: &SentinelSpec,
    placement: &Placement,
    previous: &[Sentinel],
) -> Result<Vec<Sentinel>, PlanError> {
    let room = room(topo, req, spec, placement);
    let total: u32 = room.iter().sum();
    if total < spec.count {
        return Err(PlanError::Infeasible {
            constraint: format!(
                "sentinel.count = {}: the hosts have room for {total} sentinel(s) of {} MB next to the data nodes",
                spec.count, spec.memory_mb
            ),
            fix: format!(
                "add a small host (memory_mb >= {}) in a zone, ideally a third zone, or lower sentinel.memory_mb",
                spec.memory_mb
            ),
        });
    }
    let primary_host = placement
        .nodes
        .iter()
        .find(|n| n.role == Role::Master)
        .and_then(|n| topo.host_index(&n.host));
    let data_on = data_nodes_per_host(topo, placement);
    // Per zone, its hosts in the order sentinels take them: away from the primary, fewer data
    // nodes, then document order.
    let zone_hosts: Vec<Vec<usize>> = topo
        .zones
        .iter()
        .map(|z| {
            let mut hs: Vec<usize> = z.hosts.iter().copied().filter(|&h| room[h] > 0).collect();
            hs.sort_by_key(|&h| (Some(h) == primary_host, data_on[h], h));
            hs
        })
        .collect();

    let mut best: Option<(Score, Vec<usize>)> = None;
    let mut consider = |hosts: Vec<usize>| {
        let sentinels = named(topo, &hosts, previous);
        let report = analyse(topo, spec, placement, &sentinels);
        let score = Score::of(&report, &hosts, topo, previous, &sentinels);
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, hosts));
        }
    };
    if let Some(kept) = kept_previous(topo, spec, previous, &room) {
        consider(kept);
    }
    let mut tried = 0usize;
    spreads(&zone_hosts, &room, spec.count, &mut |counts| {
        tried += 1;
        if let Some(hosts) = fill(&zone_hosts, &room, counts) {
            consider(hosts);
        }
        tried < MAX_SPREADS
    });
    let Some((_, hosts)) = best else {
        return Err(PlanError::Infeasible {
            constraint: format!(
                "sentinel.count = {}: no spread of the sentinels over the hosts with room",
                spec.count
            ),
            fix: format!(
                "add a small host (memory_mb >= {}) in a third zone",
                spec.memory_mb
            ),
        });
    };
    Ok(named(topo, &hosts, previous))
}

/// Sentinels each host can take beside its data nodes. Sentinels are not counted against
/// `max_nodes` (which limits redis data nodes); they need memory only.
fn room(topo: &Topology, req: &Request, spec: &SentinelSpec, placement: &Placement) -> Vec<u32> {
    let data_on = data_nodes_per_host(topo, placement);
    topo.hosts
        .iter()
        .enumerate()
        .map(|(h, host)| {
            let used = u64::from(data_on[h]).saturating_mul(req.cluster.node_memory_mb);
            let free = host.memory_mb.saturating_sub(used);
            let fits = free.checked_div(spec.memory_mb).unwrap_or(0);
            fits.min(u64::from(spec.count)) as u32
        })
        .collect()
}

fn data_nodes_per_host(topo: &Topology, placement: &Placement) -> Vec<u32> {
    let mut on = vec![0u32; topo.hosts.len()];
    for n in &placement.nodes {
        if let Some(h) = topo.host_index(&n.host) {
            on[h] += 1;
        }
    }
    on
}

/// Every way of giving `count` sentinels to the zones (each zone at most what its hosts
/// hold); `visit` returns false to stop.
fn spreads(
    zone_hosts: &[Vec<usize>],
    room: &[u32],
    count: u32,
    visit: &mut dyn FnMut(&[u32]) -> bool,
) {
    let caps: Vec<u32> = zone_hosts
        .iter()
        .map(|hs| hs.iter().map(|&h| room[h]).sum::<u32>().min(count))
        .collect();
    let mut counts = vec![0u32; caps.len()];
    fn go(
        z: usize,
        left: u32,
        caps: &[u32],
        counts: &mut Vec<u32>,
        visit: &mut dyn FnMut(&[u32]) -> bool,
    ) -> bool {
        if z == caps.len() {
            return left > 0 || visit(counts);
        }
        // Larger shares first, so that with a cut-off the zones listed first are tried.
        for k in (0..=caps[z].min(left)).rev() {
            counts[z] = k;
            if !go(z + 1, left - k, caps, counts, visit) {
                return false;
            }
        }
        counts[z] = 0;
        true
    }
    go(0, count, &caps, &mut counts, visit);
}

/// Hosts for a spread: distinct hosts first in each zone, then a second sentinel per host.
fn fill(zone_hosts: &[Vec<usize>], room: &[u32], counts: &[u32]) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for (hosts, &want) in zone_hosts.iter().zip(counts) {
        let mut left = want;
        let mut used = vec![0u32; hosts.len()];
        while left > 0 {
            let before = left;
            for (i, &h) in hosts.iter().enumerate() {
                if left > 0 && used[i] < room[h] {
                    used[i] += 1;
                    out.push(h);
                    left -= 1;
                }
            }
            if left == before {
                return None;
            }
        }
    }
    Some(out)
}

/// The previous sentinels' hosts, when every one is still known and has room.
fn kept_previous(
    topo: &Topology,
    spec: &SentinelSpec,
    previous: &[Sentinel],
    room: &[u32],
) -> Option<Vec<usize>> {
    if previous.len() != spec.count as usize {
        return None;
    }
    let mut left = room.to_vec();
    let mut hosts = Vec::new();
    for s in previous {
        let h = topo.host_index(&s.host)?;
        if left[h] == 0 || topo.zones[topo.hosts[h].zone].name != s.zone {
            return None;
        }
        left[h] -= 1;
        hosts.push(h);
    }
    Some(hosts)
}

/// Names for sentinels on `hosts`: a previous sentinel's name on the same host is kept (a name
/// means one process); new ones take the lowest free `sentinel-<n>`.
fn named(topo: &Topology, hosts: &[usize], previous: &[Sentinel]) -> Vec<Sentinel> {
    let mut unclaimed: Vec<&Sentinel> = previous.iter().collect();
    let mut names: Vec<Option<String>> = hosts
        .iter()
        .map(|&h| {
            let i = unclaimed
                .iter()
                .position(|s| s.host == topo.hosts[h].name)?;
            Some(unclaimed.remove(i).name.clone())
        })
        .collect();
    let mut taken: Vec<String> = names.iter().flatten().cloned().collect();
    taken.extend(previous.iter().map(|s| s.name.clone()));
    let mut next = 1u32;
    for name in names.iter_mut().filter(|n| n.is_none()) {
        while taken.contains(&format!("sentinel-{next}")) {
            next += 1;
        }
        let fresh = format!("sentinel-{next}");
        taken.push(fresh.clone());
        *name = Some(fresh);
    }
    hosts
        .iter()
        .zip(names)
        .map(|(&h, name)| Sentinel {
            name: name.unwrap_or_default(),
            host: topo.hosts[h].name.clone(),
            zone: topo.zones[topo.hosts[h].zone].name.clone(),
        })
        .collect()
}

/// Higher is better, compared field by field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Score {
    zones_survived: usize,
    partitions_survived: usize,
    hosts_survived: usize,
    zones_quorum_ok: usize,
    hosts_quorum_ok: usize,
    most_per_host: Reverse<usize>,
    most_per_zone: Reverse<usize>,
    kept: usize,
}

impl Score {
    fn of(
        report: &SentinelReport,
        hosts: &[usize],
        topo: &Topology,
        previous: &[Sentinel],
        sentinels: &[Sentinel],
    ) -> Score {
        let count = |kind: FailureKind, ok: &dyn Fn(&super::SentinelFailure) -> bool| {
            report
                .failures
                .iter()
                .filter(|f| f.kind == kind && ok(f))
                .count()
        };
        let most = |key: &dyn Fn(usize) -> usize| {
            let mut per: std::collections::HashMap<usize, usize> = Default::default();
            for &h in hosts {
                *per.entry(key(h)).or_default() += 1;
            }
            per.values().copied().max().unwrap_or(0)
        };
        Score {
            zones_survived: count(FailureKind::Zone, &|f| f.survives),
            partitions_survived: count(FailureKind::PartitionSide, &|f| f.survives),
            hosts_survived: count(FailureKind::Host, &|f| f.survives),
            zones_quorum_ok: count(FailureKind::Zone, &|f| f.quorum_ok()),
            hosts_quorum_ok: count(FailureKind::Host, &|f| f.quorum_ok()),
            most_per_host: Reverse(most(&|h| h)),
            most_per_zone: Reverse(most(&|h| topo.hosts[h].zone)),
            kept: sentinels
                .iter()
                .filter(|s| {
                    previous
                        .iter()
                        .any(|p| p.name == s.name && p.host == s.host)
                })
                .count(),
        }
    }
}
