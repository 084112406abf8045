//! The placement solver: a greedy constructive algorithm over per-zone heaps of failure
//! domains, with exact counting for the hard constraints and for goal (1).
//!
//! Hard constraints: host capacity, at most one copy of a shard per spread domain (and so per
//! host), one master per shard. Feasibility is the degree condition
//! `sum_d min(cap_d, S') >= S' * C` (S' shards still to place, C copies each): every shard needs
//! C distinct domains and a domain can serve each shard once. The greedy keeps it true after
//! every shard by always taking enough "tight" domains (those with cap_d >= S'), which it counts
//! with a Fenwick tree, so it never paints itself into a corner.
//!
//! Goal (1) is decided at zone level: how many masters each zone holds and which zones each
//! shard's copies use. Targets for masters per zone come first (even water-filling, then one
//! side of each partition given a strict majority); the greedy steers copies towards them; a
//! final role pass swaps master/replica inside shards while that lowers the number of failures
//! the plan cannot survive, then the master imbalance.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use crate::error::PlanError;
use crate::model::Topology;
use crate::placement::{Placement, Role};
use crate::request::{Request, Spread};

/// One copy of a shard as the solver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Copy {
    pub shard: u32,
    pub host: usize,
    pub master: bool,
    /// Kept from a previous placement; new copies are named later.
    pub name: Option<String>,
}

pub(crate) struct Problem<'a> {
    pub topo: &'a Topology,
    pub shards: u32,
    pub copies: u32,
    pub replicas: u32,
    pub spread: Spread,
    pub node_memory_mb: u64,
    /// Domains at the spread level: (zone, hosts).
    pub domains: Vec<(usize, Vec<usize>)>,
    pub domain_of_host: Vec<usize>,
    /// Usable capacity of each domain: min(sum of its hosts' capacity, S).
    pub domain_cap: Vec<u32>,
}

/// Master count per zone the greedy aims at, and per partition the side meant to keep the
/// majority (`Some(true)` = the declared side).
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    pub masters: Vec<u32>,
    pub winners: Vec<Option<bool>>,
}

impl<'a> Problem<'a> {
    pub fn new(topo: &'a Topology, req: &Request) -> Self {
        let spread = req.cluster.spread;
        let domains = topo.domains(spread);
        let mut domain_of_host = vec![0; topo.hosts.len()];
        let shards = req.cluster.shards;
        let domain_cap = domains
            .iter()
            .enumerate()
            .map(|(d, (_, hosts))| {
                let mut sum = 0u64;
                for &h in hosts {
                    domain_of_host[h] = d;
                    sum += u64::from(topo.hosts[h].capacity);
                }
                sum.min(u64::from(shards)) as u32
            })
            .collect();
        Problem {
            topo,
            shards,
            copies: req.cluster.replicas + 1,
            replicas: req.cluster.replicas,
            spread,
            node_memory_mb: req.cluster.node_memory_mb,
            domains,
            domain_of_host,
            domain_cap,
        }
    }

    fn level(&self) -> &'static str {
        self.spread.as_str()
    }

    /// The hard constraints, checked by counting; the error names the constraint and the fix.
    pub fn check_feasible(&self) -> Result<(), PlanError> {
        let (s, c) = (u64::from(self.shards), u64::from(self.copies));
        let need = s * c;
        let total = self.topo.total_capacity();
        if total == 0 {
            let largest = self
                .topo
                .hosts
                .iter()
                .map(|h| h.memory_mb)
                .max()
                .unwrap_or(0);
            return Err(PlanError::Infeasible {
                constraint: format!(
                    "capacity: no host fits a node of node_memory_mb={} (the largest host has memory_mb={largest})",
                    self.node_memory_mb
                ),
                fix: "lower node_memory_mb or add hosts with more memory".into(),
            });
        }
        let usable = self.domain_cap.iter().filter(|&&cap| cap > 0).count() as u64;
        if usable < c {
            let fix = match self.spread {
                Spread::Zone => format!(
                    "add {} zone(s) with hosts that fit a node, set replicas={}, or use spread=rack",
                    c - usable,
                    usable.saturating_sub(1)
                ),
                Spread::Rack => format!(
                    "add {} rack(s) (a host without a rack counts as its own), set replicas={}, or use spread=host",
                    c - usable,
                    usable.saturating_sub(1)
                ),
                Spread::Host => format!(
                    "add {} host(s) that fit a node, or set replicas={}",
                    c - usable,
                    usable.saturating_sub(1)
                ),
            };
            return Err(PlanError::Infeasible {
                constraint: format!(
                    "replicas={} with spread={} needs {c} {}s with free capacity; the topology has {usable}",
                    self.replicas,
                    self.level(),
                    self.level()
                ),
                fix,
            });
        }
        if total < need {
            return Err(PlanError::Infeasible {
                constraint: format!(
                    "capacity: {s} shards x {c} copies need {need} nodes of {} MB; the hosts fit {total}",
                    self.node_memory_mb
                ),
                fix: format!(
                    "add hosts for {} more nodes (a host fits min(max_nodes, memory_mb / node_memory_mb)), or lower shards, replicas or node_memory_mb",
                    need - total
                ),
            });
        }
        let useful: u64 = self.domain_cap.iter().map(|&x| u64::from(x)).sum();
        if useful < need {
            return Err(PlanError::Infeasible {
                constraint: format!(
                    "spread={}: a {} holds at most one copy of each shard, so only {useful} of the {need} copies fit (the hosts fit {total} nodes, but too many of them share a {})",
                    self.level(),
                    self.level(),
                    self.level()
                ),
                fix: format!(
                    "add capacity for {} more nodes in other {}s, or use a finer spread",
                    need - useful,
                    self.level()
                ),
            });
        }
        Ok(())
    }

    /// Per-zone copy capacity: a zone can hold at most one copy per shard per domain.
    fn zone_copy_cap(&self) -> Vec<u32> {
        let mut cap = vec![0u64; self.topo.zones.len()];
        for (d, (zone, _)) in self.domains.iter().enumerate() {
            cap[*zone] += u64::from(self.domain_cap[d]);
        }
        cap.into_iter()
            .map(|x| x.min(u64::from(self.shards)) as u32)
            .collect()
    }

    /// Masters each zone may hold. With `survive.hosts = n`, any n hosts must hold fewer than
    /// half of the masters, so no host takes more than floor(floor((S-1)/2) / n) of them and a
    /// zone no more than its hosts together; zone targets above that would leave the host
    /// pass (which never moves masters between zones) unable to meet the goal.
    fn zone_master_cap(&self, zc: &[u32]) -> Vec<u32> {
        let n = self.topo.survive.hosts;
        if n == 0 {
            return zc.to_vec();
        }
        let per_host = (self.shards.saturating_sub(1) / 2) / n;
        if per_host == 0 {
            // The goal cannot be met at all; validation says so. Keep the plain capacities.
            return zc.to_vec();
        }
        self.topo
            .zones
            .iter()
            .zip(zc)
            .map(|(zone, &cap)| {
                let hosts: u64 = zone
                    .hosts
                    .iter()
                    .map(|&h| u64::from(self.topo.hosts[h].capacity.min(per_host)))
                    .sum();
                cap.min(hosts.min(u64::from(u32::MAX)) as u32)
            })
            .collect()
    }

    /// Masters per zone: as even as capacity allows (water-filling), then, for each declared
    /// partition whose sides tie, one master moved so one side holds a strict majority, unless
    /// that would break a zone's or an earlier partition's majority.
    pub fn targets(&self) -> Targets {
        let zc = self.zone_copy_cap();
        let mc = self.zone_master_cap(&zc);
        let nz = zc.len();
        let mut m = vec![0u32; nz];
        let mut order: Vec<usize> = (0..nz).filter(|&z| zc[z] > 0).collect();
        order.sort_by_key(|&z| (Reverse(zc[z]), z));
        let mut left = self.shards;
        // Water-fill: raise the lowest zones one level at a time (O(zones x levels)).
        while left > 0 {
            let open: Vec<usize> = order.iter().copied().filter(|&z| m[z] < mc[z]).collect();
            if open.is_empty() {
                break;
            }
            let low = open.iter().map(|&z| m[z]).min().unwrap_or(0);
            let lowest: Vec<usize> = open.into_iter().filter(|&z| m[z] == low).collect();
            for z in lowest {
                if left == 0 {
                    break;
                }
                m[z] += 1;
                left -= 1;
            }
        }
        let mut m = self.fewest_heavy_zones(&mc, m);
        let s = self.shards;
        let side_cap = |k: usize, declared: bool| -> u64 {
            (0..nz)
                .filter(|&z| self.topo.partitions[k].in_side[z] == declared)
                .map(|z| u64::from(zc[z]))
                .sum()
        };
        let mut winners: Vec<Option<bool>> = Vec::new();
        for k in 0..self.topo.partitions.len() {
            let in_side = &self.topo.partitions[k].in_side;
            let declared: u32 = (0..nz).filter(|&z| in_side[z]).map(|z| m[z]).sum();
            if 2 * declared > s {
                winners.push(Some(true));
                continue;
            }
            if 2 * (s - declared) > s {
                winners.push(Some(false));
                continue;
            }
            // A tie: give one side one more master. Prefer the side that can hold a copy of
            // every shard, then the declared side.
            let mut sides = vec![true, false];
            sides.sort_by_key(|&d| (Reverse(side_cap(k, d) >= u64::from(s)), !d));
            let mut done = None;
            'sides: for win in sides {
                let mut from: Vec<usize> =
                    (0..nz).filter(|&z| in_side[z] != win && m[z] > 0).collect();
                from.sort_by_key(|&z| (Reverse(m[z]), z));
                let mut to: Vec<usize> = (0..nz)
                    .filter(|&z| in_side[z] == win && m[z] < mc[z])
                    .collect();
                to.sort_by_key(|&z| (m[z], z));
                for &a in &from {
                    for &b in &to {
                        let mut trial = m.clone();
                        trial[a] -= 1;
                        trial[b] += 1;
                        let zone_ok_before = (0..nz).filter(|&z| 2 * (s - m[z]) > s).count();
                        let zone_ok_after = (0..nz).filter(|&z| 2 * (s - trial[z]) > s).count();
                        let earlier_ok = winners.iter().enumerate().all(|(j, w)| match w {
                            Some(side) => {
                                let on: u32 = (0..nz)
                                    .filter(|&z| self.topo.partitions[j].in_side[z] == *side)
                                    .map(|z| trial[z])
                                    .sum();
                                2 * on > s
                            }
                            None => true,
                        });
                        let goal_kept = self.zone_goal_met(&trial) || !self.zone_goal_met(&m);
                        if zone_ok_after >= zone_ok_before && earlier_ok && goal_kept {
                            m = trial;
                            done = Some(win);
                            break 'sides;
                        }
                    }
                }
            }
            winners.push(done);
        }
        Targets {
            masters: m,
            winners,
        }
    }

    /// An even spread can leave several zones holding half of the masters or more (2 shards
    /// over 4 zones: two zones with one master each, and losing either stops failover). Such a
    /// zone's loss is not survivable whatever else holds, so when fewer of them are possible
    /// the masters are packed instead: `k` "heavy" zones (the roomiest) take what the others
    /// cannot hold while each other zone stays at most `floor((S-1)/2)`. The even spread is
    /// kept whenever it is already as good, so plans that survive every zone never change.
    fn fewest_heavy_zones(&self, zc: &[u32], even: Vec<u32>) -> Vec<u32> {
        let s = u64::from(self.shards);
        let heavy = |m: &[u32]| m.iter().filter(|&&x| 2 * u64::from(x) >= s).count();
        let even_heavy = heavy(&even);
        if even_heavy == 0 {
            return even;
        }
        let safe = (self.shards - 1) / 2;
        let mut roomiest: Vec<usize> = (0..zc.len()).filter(|&z| zc[z] > 0).collect();
        roomiest.sort_by_key(|&z| (Reverse(zc[z]), z));
        for k in 0..even_heavy.min(roomiest.len()) {
            let is_heavy = |z: usize| roomiest[..k].contains(&z);
            let room: u64 = (0..zc.len())
                .map(|z| u64::from(if is_heavy(z) { zc[z] } else { zc[z].min(safe) }))
                .sum();
            if room < s {
                continue;
            }
            // Safe zones first, water-filled up to `safe`; the heavy zones take the rest.
            let mut m = vec![0u32; zc.len()];
            let mut left = self.shards;
            let cap_of = |z: usize| if is_heavy(z) { zc[z] } else { zc[z].min(safe) };
            for pass_heavy in [false, true] {
                loop {
                    let open: Vec<usize> = roomiest
                        .iter()
                        .copied()
                        .filter(|&z| is_heavy(z) == pass_heavy && m[z] < cap_of(z))
                        .collect();
                    if left == 0 || open.is_empty() {
                        break;
                    }
                    let low = open.iter().map(|&z| m[z]).min().unwrap_or(0);
                    let lowest: Vec<usize> = open.into_iter().filter(|&z| m[z] == low).collect();
                    for z in lowest {
                        if left == 0 {
                            break;
                        }
                        m[z] += 1;
                        left -= 1;
                    }
                }
            }
            if left == 0 && heavy(&m) < even_heavy {
                return m;
            }
        }
        even
    }

    /// A fresh placement: for each shard, the master in the zone furthest below its master
    /// target, then replicas in zones that cover a partition winner side not yet covered, a new
    /// zone, the most free zone; within a zone the domain with most room; within a domain the
    /// host with fewest nodes. Enough tight domains are always taken to stay feasible.
    pub fn fresh(&self, targets: &Targets) -> Result<Vec<Copy>, PlanError> {
        let mut g = Greedy::new(self, targets, &vec![0; self.topo.hosts.len()]);
        let mut out = Vec::with_capacity((self.shards * self.copies) as usize);
        for shard in 0..self.shards {
            let remaining = self.shards - shard;
            let hosts = g.place_shard(
                &[],
                self.copies as usize,
                Some(remaining),
                remaining - 1,
                true,
            )?;
            for (i, h) in hosts.into_iter().enumerate() {
                out.push(Copy {
                    shard,
                    host: h,
                    master: i == 0,
                    name: None,
                });
            }
            g.next_shard(remaining);
        }
        self.role_pass(&mut out);
        self.balance_hosts(&mut out);
        Ok(out)
    }

    /// A placement that keeps as many nodes of `previous` as fit, then fills the gaps greedily.
    /// `None` if the gaps cannot be filled (the caller falls back to a fresh plan).
    pub fn incremental(&self, previous: &Placement, targets: &Targets) -> Option<Vec<Copy>> {
        let topo = self.topo;
        let mut used = vec![0u32; topo.hosts.len()];
        let mut kept: Vec<Copy> = Vec::new();
        let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); self.shards as usize];
        let mut prev: Vec<_> = previous.nodes.iter().collect();
        // Masters first, so a shard keeps its master (no failover) whenever it can.
        prev.sort_by(|a, b| (a.role, a.shard, &a.name).cmp(&(b.role, b.shard, &b.name)));
        for node in prev {
            let Some(h) = topo.host_index(&node.host) else {
                continue;
            };
            if node.shard >= self.shards || topo.zones[topo.hosts[h].zone].name != node.zone {
                continue;
            }
            let copies = &mut per_shard[node.shard as usize];
            let d = self.domain_of_host[h];
            if used[h] >= topo.hosts[h].capacity
                || copies.len() >= self.copies as usize
                || copies
                    .iter()
                    .any(|&c| self.domain_of_host[kept[c].host] == d || kept[c].host == h)
            {
                continue;
            }
            used[h] += 1;
            copies.push(kept.len());
            kept.push(Copy {
                shard: node.shard,
                host: h,
                master: node.role == Role::Master,
                name: Some(node.name.clone()),
            });
        }
        let mut g = Greedy::new(self, targets, &used);
        for c in &kept {
            if c.master {
                g.master_placed(topo.hosts[c.host].zone);
            }
        }
        let mut order: Vec<u32> = (0..self.shards).collect();
        order.sort_by_key(|&s| (per_shard[s as usize].len(), s));
        let total = order.len() as u32;
        for (done, shard) in order.into_iter().enumerate() {
            let later = total - done as u32 - 1;
            let have: Vec<usize> = per_shard[shard as usize]
                .iter()
                .map(|&c| kept[c].host)
                .collect();
            let missing = self.copies as usize - have.len();
            let has_master = per_shard[shard as usize].iter().any(|&c| kept[c].master);
            if missing > 0 {
                let hosts = g
                    .place_shard(&have, missing, None, later, !has_master)
                    .ok()?;
                for (i, h) in hosts.into_iter().enumerate() {
                    per_shard[shard as usize].push(kept.len());
                    kept.push(Copy {
                        shard,
                        host: h,
                        master: i == 0 && !has_master,
                        name: None,
                    });
                }
            } else if !has_master {
                // Every kept copy was a replica: promote the one in the zone most short of masters.
                let best = per_shard[shard as usize]
                    .iter()
                    .copied()
                    .max_by_key(|&c| (g.master_left(topo.hosts[kept[c].host].zone), Reverse(c)))?;
                kept[best].master = true;
                g.master_placed(topo.hosts[kept[best].host].zone);
            }
        }
        self.role_pass(&mut kept);
        self.balance_hosts(&mut kept);
        kept.sort_by_key(|c| c.shard);
        Some(kept)
    }

    /// Zone-level goal (1) state of a set of copies.
    fn zone_view(&self, copies: &[Copy]) -> ZoneView {
        let nz = self.topo.zones.len();
        let np = self.topo.partitions.len();
        let s = self.shards as usize;
        let mut zones_of: Vec<Vec<usize>> = vec![Vec::new(); s];
        let mut masters = vec![0u32; nz];
        for c in copies {
            let z = self.topo.hosts[c.host].zone;
            zones_of[c.shard as usize].push(z);
            if c.master {
                masters[z] += 1;
            }
        }
        // A zone loss keeps every shard iff no shard has all its copies in that zone.
        let mut zone_copy_ok = vec![true; nz];
        let mut cover = vec![(true, true); np];
        for zs in &zones_of {
            if let Some(&first) = zs.first() {
                if zs.iter().all(|&z| z == first) {
                    zone_copy_ok[first] = false;
                }
            } else {
                zone_copy_ok.iter_mut().for_each(|ok| *ok = false);
            }
            for (k, part) in self.topo.partitions.iter().enumerate() {
                if !zs.iter().any(|&z| part.in_side[z]) {
                    cover[k].0 = false;
                }
                if !zs.iter().any(|&z| !part.in_side[z]) {
                    cover[k].1 = false;
                }
            }
        }
        ZoneView {
            masters,
            zone_copy_ok,
            cover,
        }
    }

    /// Failures (zones lost, partitions) the masters-per-zone vector `m` cannot survive.
    fn failures(&self, view: &ZoneView, m: &[u32]) -> usize {
        let s = self.shards;
        let zones = (0..m.len())
            .filter(|&z| !(view.zone_copy_ok[z] && 2 * (s - m[z]) > s))
            .count();
        let parts = self
            .topo
            .partitions
            .iter()
            .enumerate()
            .filter(|(k, part)| {
                let declared: u32 = (0..m.len())
                    .filter(|&z| part.in_side[z])
                    .map(|z| m[z])
                    .sum();
                let ok = (2 * declared > s && view.cover[*k].0)
                    || (2 * (s - declared) > s && view.cover[*k].1);
                !ok
            })
            .count();
        zones + parts
    }

    /// Masters per zone `m` let any `survive.zones` zones go with fewer than half of them
    /// (always true without that goal). The copies side of the goal holds by spread = zone.
    fn zone_goal_met(&self, m: &[u32]) -> bool {
        let n = self.topo.survive.zones as usize;
        if n == 0 {
            return true;
        }
        let mut sorted = m.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let top: u64 = sorted.iter().take(n).map(|&x| u64::from(x)).sum();
        2 * top < u64::from(self.shards)
    }

    /// How far a placement is from the goals, smaller is better: a missed `survive.zones`
    /// goal first, then goal (1) failures, counted at zone level.
    pub fn shortfall(&self, copies: &[Copy]) -> (bool, usize) {
        let view = self.zone_view(copies);
        (
            !self.zone_goal_met(&view.masters),
            self.failures(&view, &view.masters),
        )
    }

    /// Swap master and replica inside shards while that lowers (failures, sum of squared
    /// masters per zone). Roles only change the per-zone master counts, so each candidate move
    /// "one master from zone a to zone b" is scored in O(zones x partitions).
    fn role_pass(&self, copies: &mut [Copy]) {
        let nz = self.topo.zones.len();
        if nz < 2 {
            return;
        }
        let view = self.zone_view(copies);
        let mut m = view.masters.clone();
        // A zone never takes more masters than the host goal lets it hold (see targets).
        let mc = self.zone_master_cap(&self.zone_copy_cap());
        let zone = |c: &Copy| self.topo.hosts[c.host].zone;
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); self.shards as usize];
        for (i, c) in copies.iter().enumerate() {
            by_shard[c.shard as usize].push(i);
        }
        // cand[a * nz + b]: shards whose master is in a and that have a replica in b.
        let mut cand: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); nz * nz];
        let entries = |copies: &[Copy], members: &[usize]| -> Vec<usize> {
            let Some(&mi) = members.iter().find(|&&i| copies[i].master) else {
                return Vec::new();
            };
            let a = zone(&copies[mi]);
            let mut keys: Vec<usize> = members
                .iter()
                .filter(|&&i| !copies[i].master && zone(&copies[i]) != a)
                .map(|&i| a * nz + zone(&copies[i]))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            keys
        };
        for (s, members) in by_shard.iter().enumerate() {
            for key in entries(copies, members) {
                cand[key].insert(s as u32);
            }
        }
        let score = |m: &[u32]| -> (bool, usize, u64) {
            (
                !self.zone_goal_met(m),
                self.failures(&view, m),
                m.iter().map(|&x| u64::from(x) * u64::from(x)).sum(),
            )
        };
        // Bound the pair scan on topologies with very many zones: only the most and least
        // loaded zones can improve the balance, and failing zones are among the most loaded.
        let limit = 16usize;
        let mut guard = 0u64;
        loop {
            guard += 1;
            if guard > 4 * u64::from(self.shards) + 16 {
                break;
            }
            let current = score(&m);
            let mut zs: Vec<usize> = (0..nz).collect();
            zs.sort_by_key(|&z| (Reverse(m[z]), z));
            let from: Vec<usize> = zs
                .iter()
                .copied()
                .filter(|&z| m[z] > 0)
                .take(limit)
                .collect();
            let to: Vec<usize> = zs.iter().rev().copied().take(limit).collect();
            let mut best: Option<((bool, usize, u64), usize, usize)> = None;
            for &a in &from {
                for &b in &to {
                    if a == b || cand[a * nz + b].is_empty() || m[b] >= mc[b] {
                        continue;
                    }
                    m[a] -= 1;
                    m[b] += 1;
                    let sc = score(&m);
                    m[a] += 1;
                    m[b] -= 1;
                    if sc < current && best.as_ref().is_none_or(|(bs, _, _)| sc < *bs) {
                        best = Some((sc, a, b));
                    }
                }
            }
            let Some((_, a, b)) = best else { break };
            let Some(&shard) = cand[a * nz + b].iter().next() else {
                break;
            };
            let members = by_shard[shard as usize].clone();
            for key in entries(copies, &members) {
                cand[key].remove(&shard);
            }
            let Some(&old) = members.iter().find(|&&i| copies[i].master) else {
                break;
            };
            let Some(&new) = members
                .iter()
                .find(|&&i| !copies[i].master && zone(&copies[i]) == b)
            else {
                break;
            };
            copies[old].master = false;
            copies[new].master = true;
            m[a] -= 1;
            m[b] += 1;
            for key in entries(copies, &members) {
                cand[key].insert(shard);
            }
        }
    }
}

struct ZoneView {
    masters: Vec<u32>,
    zone_copy_ok: Vec<bool>,
    /// Per partition: (declared side holds a copy of every shard, other side does).
    cover: Vec<(bool, bool)>,
}

/// Fenwick tree counting domains by remaining capacity (0..=S), for "how many domains have at
/// least v left" in O(log S).
struct Fenwick {
    tree: Vec<i64>,
}

impl Fenwick {
    fn new(n: usize) -> Self {
        Fenwick {
            tree: vec![0; n + 1],
        }
    }
    fn add(&mut self, value: u32, delta: i64) {
        let mut i = value as usize + 1;
        while i < self.tree.len() {
            self.tree[i] += delta;
            i += i & i.wrapping_neg();
        }
    }
    /// Count of entries with value <= v.
    fn prefix(&self, v: u32) -> i64 {
        let mut i = (v as usize + 1).min(self.tree.len() - 1);
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

/// A host in its domain's heap: fewest nodes first, then most room, then document order.
type HostKey = (Reverse<u32>, u32, Reverse<usize>);
/// A candidate zone's score for one pick, compared lexicographically (larger is better).
type PickKey = (i64, i64, i64, i64, u32, Reverse<usize>);

/// The greedy's mutable state: per-zone heaps of domains, per-domain heaps of hosts.
struct Greedy<'p, 'a> {
    p: &'p Problem<'a>,
    /// Remaining capacity per domain, clamped to S (only min(cap, S') ever matters).
    rem: Vec<u32>,
    host_rem: Vec<u32>,
    host_used: Vec<u32>,
    zone_heaps: Vec<BinaryHeap<(u32, Reverse<usize>)>>,
    host_heaps: Vec<BinaryHeap<HostKey>>,
    zone_free: Vec<i64>,
    master_left: Vec<i64>,
    winners: Vec<Option<bool>>,
    fenwick: Fenwick,
    domains_total: i64,
    /// sum_d min(rem_d, S') for the current S'.
    t: i64,
}

impl<'p, 'a> Greedy<'p, 'a> {
    fn new(p: &'p Problem<'a>, targets: &Targets, used: &[u32]) -> Self {
        let topo = p.topo;
        let s = p.shards;
        let host_rem: Vec<u32> = topo
            .hosts
            .iter()
            .enumerate()
            .map(|(h, host)| host.capacity.saturating_sub(used[h]))
            .collect();
        let nz = topo.zones.len();
        let mut zone_heaps = vec![BinaryHeap::new(); nz];
        let mut host_heaps = Vec::with_capacity(p.domains.len());
        let mut rem = Vec::with_capacity(p.domains.len());
        let mut zone_free = vec![0i64; nz];
        let mut fenwick = Fenwick::new(s as usize + 1);
        let mut t = 0i64;
        for (d, (zone, hosts)) in p.domains.iter().enumerate() {
            let mut heap = BinaryHeap::new();
            let mut sum = 0u64;
            for &h in hosts {
                if host_rem[h] > 0 {
                    heap.push((Reverse(used[h]), host_rem[h], Reverse(h)));
                    sum += u64::from(host_rem[h]);
                }
            }
            let r = sum.min(u64::from(s)) as u32;
            rem.push(r);
            fenwick.add(r, 1);
            t += i64::from(r);
            zone_free[*zone] += i64::from(r);
            if r > 0 {
                zone_heaps[*zone].push((r, Reverse(d)));
            }
            host_heaps.push(heap);
        }
        Greedy {
            p,
            rem,
            host_rem,
            host_used: used.to_vec(),
            zone_heaps,
            host_heaps,
            zone_free,
            master_left: targets.masters.iter().map(|&x| i64::from(x)).collect(),
            winners: targets.winners.clone(),
            fenwick,
            domains_total: p.domains.len() as i64,
            t,
        }
    }

    fn master_left(&self, zone: usize) -> i64 {
        self.master_left[zone]
    }

    fn master_placed(&mut self, zone: usize) {
        self.master_left[zone] -= 1;
    }

    fn count_ge(&self, v: u32) -> i64 {
        if v == 0 {
            return self.domains_total;
        }
        self.domains_total - self.fenwick.prefix(v - 1)
    }

    /// Choose `count` hosts for one shard that already has copies on `have`. With
    /// `remaining = Some(S')` the tight-domain rule keeps the rest feasible; the first pick is
    /// the master when `first_is_master`. `later` shards are still to be placed after this one.
    /// Returns hosts in pick order.
    fn place_shard(
        &mut self,
        have: &[usize],
        count: usize,
        remaining: Option<u32>,
        later: u32,
        first_is_master: bool,
    ) -> Result<Vec<usize>, PlanError> {
        let p = self.p;
        let topo = p.topo;
        let mut zones_used: Vec<usize> = have.iter().map(|&h| topo.hosts[h].zone).collect();
        let used_domains: Vec<usize> = have.iter().map(|&h| p.domain_of_host[h]).collect();
        // Domains this shard may not use again are set aside while it is placed.
        let mut aside: Vec<(usize, (u32, Reverse<usize>))> = Vec::new();
        let mut chosen: Vec<usize> = Vec::new();
        let mut tight_needed = match remaining {
            Some(sp) => {
                let slack = self.t - i64::from(sp) * i64::from(p.copies);
                (self.count_ge(sp) - slack).max(0)
            }
            None => 0,
        };
        let later = i64::from(later);
        let mut side_free: Vec<i64> = self
            .winners
            .iter()
            .enumerate()
            .map(|(k, w)| match w {
                Some(side) => (0..self.zone_free.len())
                    .filter(|&z| topo.partitions[k].in_side[z] == *side)
                    .map(|z| self.zone_free[z])
                    .sum(),
                None => 0,
            })
            .collect();
        for pick in 0..count {
            let picks_left = (count - pick) as i64;
            let must_tight = tight_needed >= picks_left;
            let mut best: Option<(PickKey, usize)> = None;
            for z in 0..self.zone_heaps.len() {
                while let Some(&top) = self.zone_heaps[z].peek() {
                    if used_domains.contains(&top.1 .0) {
                        self.zone_heaps[z].pop();
                        aside.push((z, top));
                    } else {
                        break;
                    }
                }
                let Some(&(r, _)) = self.zone_heaps[z].peek() else {
                    continue;
                };
                let tight = remaining.is_some_and(|sp| r >= sp);
                if must_tight && !tight {
                    continue;
                }
                let slack = self.zone_free[z] - self.master_left[z].max(0);
                let key = if pick == 0 && first_is_master {
                    (self.master_left[z], 0, 0, slack, r, Reverse(z))
                } else {
                    let covers = self
                        .winners
                        .iter()
                        .enumerate()
                        .filter(|(k, w)| match w {
                            Some(side) => {
                                let part = &topo.partitions[*k];
                                part.in_side[z] == *side
                                    && !zones_used.iter().any(|&u| part.in_side[u] == *side)
                            }
                            None => false,
                        })
                        .count() as i64;
                    let new_zone = i64::from(!zones_used.contains(&z));
                    // Room on a winning side is scarce when the shards still to come need all
                    // of it for their one copy there: a shard already covered then goes elsewhere.
                    let wasted = self
                        .winners
                        .iter()
                        .enumerate()
                        .filter(|(k, w)| match w {
                            Some(side) => {
                                let part = &topo.partitions[*k];
                                part.in_side[z] == *side
                                    && zones_used.iter().any(|&u| part.in_side[u] == *side)
                                    && side_free[*k] - 1 < later
                            }
                            None => false,
                        })
                        .count() as i64;
                    (covers, new_zone, -wasted, slack, r, Reverse(z))
                };
                if best.as_ref().is_none_or(|(bk, _)| key > *bk) {
                    best = Some((key, z));
                }
            }
            let Some((_, z)) = best else {
                for (z, e) in aside {
                    self.zone_heaps[z].push(e);
                }
                for &d in &chosen {
                    self.zone_heaps[p.domains[d].0].push((self.rem[d], Reverse(d)));
                }
                return Err(PlanError::Infeasible {
                    constraint: format!(
                        "spread={}: no free {} left for another copy of a shard",
                        p.spread.as_str(),
                        p.spread.as_str()
                    ),
                    fix: "add capacity in more failure domains".into(),
                });
            };
            let Some((r, Reverse(d))) = self.zone_heaps[z].pop() else {
                continue;
            };
            if remaining.is_some_and(|sp| r >= sp) {
                tight_needed -= 1;
            }
            chosen.push(d);
            zones_used.push(z);
            for (k, w) in self.winners.iter().enumerate() {
                if *w == Some(topo.partitions[k].in_side[z]) {
                    side_free[k] -= 1;
                }
            }
            if pick == 0 && first_is_master {
                self.master_left[z] -= 1;
            }
        }
        for (z, e) in aside {
            self.zone_heaps[z].push(e);
        }
        let mut hosts = Vec::with_capacity(chosen.len());
        for &d in &chosen {
            let zone = p.domains[d].0;
            let Some((Reverse(_), _, Reverse(h))) = self.host_heaps[d].pop() else {
                continue;
            };
            self.host_rem[h] -= 1;
            self.host_used[h] += 1;
            if self.host_rem[h] > 0 {
                self.host_heaps[d].push((Reverse(self.host_used[h]), self.host_rem[h], Reverse(h)));
            }
            hosts.push(h);
            let r = self.rem[d];
            if remaining.is_none_or(|sp| r <= sp) {
                self.t -= 1;
            }
            self.fenwick.add(r, -1);
            let nr = r.saturating_sub(1);
            self.fenwick.add(nr, 1);
            self.rem[d] = nr;
            self.zone_free[zone] -= 1;
            if nr > 0 {
                self.zone_heaps[zone].push((nr, Reverse(d)));
            }
        }
        Ok(hosts)
    }

    /// Move from S' shards left to S'-1: t = sum min(rem, S'-1) = t - #{rem >= S'}.
    fn next_shard(&mut self, remaining: u32) {
        self.t -= self.count_ge(remaining);
    }
}
