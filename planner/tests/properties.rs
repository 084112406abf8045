//! Property tests over random topologies: every plan meets the hard constraints, and on small
//! instances an exhaustive search agrees on feasibility and on whether goal (1) — surviving
//! any one zone and either side of every declared partition — can be met.

mod common;

use proptest::prelude::*;
use redisha_planner::{
    analyse, plan, validate_placement, ClusterSpec, GoalLevel, HostSpec, PartitionSpec, Placement,
    PlanError, Request, Role, Spread, Survive, ZoneSpec,
};

fn arb_spread() -> impl Strategy<Value = Spread> {
    prop_oneof![Just(Spread::Host), Just(Spread::Rack), Just(Spread::Zone)]
}

/// A random request with min_zones..=max_zones zones of 1..=max_hosts_per_zone hosts.
fn arb_request(
    min_zones: usize,
    max_zones: usize,
    max_hosts_per_zone: usize,
    max_shards: u32,
    max_replicas: u32,
) -> impl Strategy<Value = Request> {
    let host = (
        prop_oneof![Just(2048u64), Just(4096), Just(8192), Just(16384)],
        1u32..=3,
        prop::option::of(0u8..2),
    );
    let zones = prop::collection::vec(
        prop::collection::vec(host, 1..=max_hosts_per_zone),
        min_zones..=max_zones,
    );
    (
        zones,
        1..=max_shards,
        0..=max_replicas,
        arb_spread(),
        prop::option::of(prop::collection::vec(any::<bool>(), max_zones)),
    )
        .prop_map(|(zones, shards, replicas, spread, side)| {
            let zones: Vec<ZoneSpec> = zones
                .into_iter()
                .enumerate()
                .map(|(z, hosts)| ZoneSpec {
                    name: format!("z{z}"),
                    hosts: hosts
                        .into_iter()
                        .enumerate()
                        .map(|(h, (memory_mb, max_nodes, rack))| HostSpec {
                            name: format!("z{z}h{h}"),
                            memory_mb,
                            max_nodes,
                            rack: rack.map(|r| format!("r{r}")),
                        })
                        .collect(),
                })
                .collect();
            let mut partitions = Vec::new();
            if let Some(side) = side {
                let names: Vec<String> = zones
                    .iter()
                    .enumerate()
                    .filter(|(z, _)| side[*z])
                    .map(|(_, zone)| zone.name.clone())
                    .collect();
                if !names.is_empty() && names.len() < zones.len() {
                    partitions.push(PartitionSpec {
                        name: "split".into(),
                        side: names,
                    });
                }
            }
            Request {
                cluster: ClusterSpec {
                    shards,
                    replicas,
                    node_memory_mb: 4096,
                    spread,
                    survive: Default::default(),
                },
                zones,
                partitions,
                sentinel: None,
            }
        })
}

/// Flat facts about the hosts of a request, for the oracle.
struct Hosts {
    zone: Vec<usize>,
    domain: Vec<usize>,
    cap: Vec<u32>,
    zones: usize,
    sides: Vec<Vec<bool>>,
}

fn hosts(req: &Request) -> Hosts {
    let mut h = Hosts {
        zone: vec![],
        domain: vec![],
        cap: vec![],
        zones: req.zones.len(),
        sides: vec![],
    };
    let mut racks: Vec<(usize, String)> = Vec::new();
    for (z, zone) in req.zones.iter().enumerate() {
        for host in &zone.hosts {
            let idx = h.zone.len();
            h.zone.push(z);
            h.cap.push(
                (host.memory_mb / req.cluster.node_memory_mb).min(u64::from(host.max_nodes)) as u32,
            );
            h.domain.push(match req.cluster.spread {
                Spread::Host => idx,
                Spread::Zone => z,
                Spread::Rack => match &host.rack {
                    // A host without a rack is a rack of its own.
                    None => 1000 + idx,
                    Some(r) => {
                        let key = (z, r.clone());
                        match racks.iter().position(|k| *k == key) {
                            Some(i) => i,
                            None => {
                                racks.push(key);
                                racks.len() - 1
                            }
                        }
                    }
                },
            });
        }
    }
    for p in &req.partitions {
        h.sides
            .push(req.zones.iter().map(|z| p.side.contains(&z.name)).collect());
    }
    h
}

/// Goal (1) failures of one placement: per shard (hosts, master host).
fn goal1_failures(h: &Hosts, shards: &[(Vec<usize>, usize)]) -> usize {
    let s = shards.len();
    let mut fails = 0;
    for z in 0..h.zones {
        let masters_out = shards.iter().filter(|(_, m)| h.zone[*m] != z).count();
        let copies_ok = shards
            .iter()
            .all(|(c, _)| c.iter().any(|&x| h.zone[x] != z));
        if !(copies_ok && 2 * masters_out > s) {
            fails += 1;
        }
    }
    for side in &h.sides {
        let ok = [true, false].iter().any(|&keep| {
            let masters = shards
                .iter()
                .filter(|(_, m)| side[h.zone[*m]] == keep)
                .count();
            let cover = shards
                .iter()
                .all(|(c, _)| c.iter().any(|&x| side[h.zone[x]] == keep));
            2 * masters > s && cover
        });
        if !ok {
            fails += 1;
        }
    }
    fails
}

/// Exhaustive search: `None` if infeasible, else the fewest goal (1) failures of any placement.
fn oracle(req: &Request) -> Option<usize> {
    exhaustive(req, &goal1_failures)
}

/// Combinations of `k` out of `0..n`.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    fn rec(n: usize, k: usize, start: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            rec(n, k, i + 1, cur, out);
            cur.pop();
        }
    }
    rec(n, k, 0, &mut cur, &mut out);
    out
}

/// Combinations of `count` units (zones, or hosts with `by_host`) whose loss leaves a shard
/// without a copy or the masters without a strict majority, by plain enumeration.
fn failing_combinations(
    h: &Hosts,
    shards: &[(Vec<usize>, usize)],
    count: usize,
    by_host: bool,
) -> usize {
    let unit = |x: usize| if by_host { x } else { h.zone[x] };
    let units = if by_host { h.cap.len() } else { h.zones };
    let s = shards.len();
    subsets(units, count.min(units))
        .into_iter()
        .filter(|lost| {
            let masters_left = shards
                .iter()
                .filter(|(_, m)| !lost.contains(&unit(*m)))
                .count();
            let copies = shards
                .iter()
                .all(|(c, _)| c.iter().any(|&x| !lost.contains(&unit(x))));
            !(copies && 2 * masters_left > s)
        })
        .count()
}

/// Violations of the request's survival goal by one placement (0: met).
fn goal_violations(req: &Request) -> impl Fn(&Hosts, &[(Vec<usize>, usize)]) -> usize + '_ {
    move |h, shards| {
        let mut v = 0;
        if req.cluster.survive.zones > 0 {
            v += failing_combinations(h, shards, req.cluster.survive.zones as usize, false);
        }
        if req.cluster.survive.hosts > 0 {
            v += failing_combinations(h, shards, req.cluster.survive.hosts as usize, true);
        }
        v
    }
}

/// How bad one placement (per shard: hosts, master host) is; 0 is best.
type Score<'a> = dyn Fn(&Hosts, &[(Vec<usize>, usize)]) -> usize + 'a;

/// Exhaustive search: `None` if infeasible, else the lowest `score` of any placement.
fn exhaustive(req: &Request, score: &Score) -> Option<usize> {
    let h = hosts(req);
    let c = (req.cluster.replicas + 1) as usize;
    let s = req.cluster.shards as usize;
    let usable: Vec<usize> = (0..h.cap.len()).filter(|&x| h.cap[x] > 0).collect();
    // Every way to place one shard: C hosts in distinct domains, and which one is master.
    let mut options: Vec<(Vec<usize>, usize)> = Vec::new();
    fn combos(
        from: &[usize],
        k: usize,
        start: usize,
        cur: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..from.len() {
            cur.push(from[i]);
            combos(from, k, i + 1, cur, out);
            cur.pop();
        }
    }
    let mut sets = Vec::new();
    combos(&usable, c, 0, &mut Vec::new(), &mut sets);
    for set in sets {
        let mut doms: Vec<usize> = set.iter().map(|&x| h.domain[x]).collect();
        doms.sort_unstable();
        doms.dedup();
        if doms.len() < c {
            continue;
        }
        for &m in &set {
            options.push((set.clone(), m));
        }
    }
    // Shards are interchangeable: enumerate multisets of options (non-decreasing indices).
    let mut best: Option<usize> = None;
    let mut used = vec![0u32; h.cap.len()];
    let mut chosen: Vec<(Vec<usize>, usize)> = Vec::new();
    #[allow(clippy::too_many_arguments)]
    fn go(
        h: &Hosts,
        score: &Score<'_>,
        options: &[(Vec<usize>, usize)],
        s: usize,
        start: usize,
        used: &mut Vec<u32>,
        chosen: &mut Vec<(Vec<usize>, usize)>,
        best: &mut Option<usize>,
    ) {
        if *best == Some(0) {
            return;
        }
        if chosen.len() == s {
            let f = score(h, chosen);
            if best.is_none_or(|b| f < b) {
                *best = Some(f);
            }
            return;
        }
        for i in start..options.len() {
            let (set, _) = &options[i];
            if set.iter().any(|&x| used[x] >= h.cap[x]) {
                continue;
            }
            set.iter().for_each(|&x| used[x] += 1);
            chosen.push(options[i].clone());
            go(h, score, options, s, i, used, chosen, best);
            chosen.pop();
            set.iter().for_each(|&x| used[x] -= 1);
        }
    }
    go(&h, score, &options, s, 0, &mut used, &mut chosen, &mut best);
    best
}

fn goal1_met(report: &redisha_planner::Report) -> bool {
    report.survives_any_zone
        && report
            .partitions
            .iter()
            .all(|p| p.keeps_all_slots.is_some())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Every returned placement meets the hard constraints; plans are deterministic.
    #[test]
    fn plans_meet_hard_constraints(req in arb_request(1, 5, 6, 12, 2)) {
        match plan(&req, None) {
            Ok(p) => {
                prop_assert!(validate_placement(&req, &p.placement).is_ok(), "{:?}", validate_placement(&req, &p.placement));
                let copies = req.cluster.replicas + 1;
                for shard in 0..req.cluster.shards {
                    let nodes: Vec<_> = p.placement.shard_nodes(shard).collect();
                    prop_assert_eq!(nodes.len() as u32, copies);
                    prop_assert_eq!(nodes.iter().filter(|n| n.role == Role::Master).count(), 1);
                }
                common::assert_slots_balanced(&p.placement);
                let again = plan(&req, None).unwrap();
                prop_assert_eq!(serde_json::to_string(&p).unwrap(), serde_json::to_string(&again).unwrap());
                prop_assert_eq!(p.report.clone(), analyse(&req, &p.placement));
                // A warning accompanies every failure of goal (1) the plan cannot survive.
                prop_assert_eq!(goal1_met(&p.report), !p.warnings.iter().any(|w| !w.contains("host(s)")));
            }
            Err(PlanError::Infeasible { constraint, fix }) => {
                prop_assert!(!constraint.is_empty() && !fix.is_empty());
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    /// A re-plan from a previous placement (other shard and replica counts on the same
    /// topology) meets the hard constraints too, keeps names unique, and is feasible whenever a
    /// fresh plan is.
    #[test]
    fn replans_meet_hard_constraints(
        req in arb_request(1, 5, 6, 12, 2), shards in 1u32..12, replicas in 0u32..3,
    ) {
        let mut before = req.clone();
        before.cluster.shards = shards;
        before.cluster.replicas = replicas;
        let Ok(previous) = plan(&before, None) else { return Ok(()) };
        match (plan(&req, None), plan(&req, Some(&previous.placement))) {
            (Ok(_), Ok(p)) => {
                prop_assert!(validate_placement(&req, &p.placement).is_ok(), "{:?}", validate_placement(&req, &p.placement));
                common::assert_slots_balanced(&p.placement);
                for shard in 0..req.cluster.shards {
                    prop_assert_eq!(p.placement.shard_nodes(shard).count() as u32, req.cluster.replicas + 1);
                }
                // A node that stays on its host for its shard keeps its name.
                for n in &p.placement.nodes {
                    if let Some(old) = previous.placement.node(&n.name) {
                        prop_assert_eq!((&old.host, old.shard), (&n.host, n.shard));
                    }
                }
            }
            (Err(_), Err(_)) => {}
            (fresh, again) => prop_assert!(false, "fresh {:?} vs re-plan {:?}", fresh.map(|_| ()), again.map(|_| ())),
        }
    }

    /// On small instances the planner agrees with exhaustive search on feasibility and on
    /// whether goal (1) can be met.
    #[test]
    fn small_instances_agree_with_exhaustive_search(req in arb_request(1, 4, 3, 4, 2)
        .prop_filter("small", |r| {
            let hosts: usize = r.zones.iter().map(|z| z.hosts.len()).sum();
            hosts <= 8 && r.cluster.shards * (r.cluster.replicas + 1) <= 6
        }))
    {
        agrees_with_oracle(&req)?;
    }

    /// The same with 3 or 4 zones, where goal (1) is most often within reach (and partitions
    /// between several zones make it hardest).
    #[test]
    fn small_multi_zone_instances_agree_with_exhaustive_search(req in arb_request(3, 4, 2, 4, 2)
        .prop_filter("small", |r| {
            let hosts: usize = r.zones.iter().map(|z| z.hosts.len()).sum();
            hosts <= 8 && r.cluster.shards * (r.cluster.replicas + 1) <= 6
        }))
    {
        agrees_with_oracle(&req)?;
    }
}

/// A placement in the oracle's terms: per shard (host indices, master host index).
fn as_shards(req: &Request, placement: &Placement) -> Vec<(Vec<usize>, usize)> {
    let names: Vec<&str> = req
        .zones
        .iter()
        .flat_map(|z| z.hosts.iter().map(|h| h.name.as_str()))
        .collect();
    let index = |host: &str| names.iter().position(|n| *n == host).unwrap_or(usize::MAX);
    (0..placement.shard_count())
        .map(|shard| {
            let nodes: Vec<_> = placement.shard_nodes(shard).collect();
            let master = nodes
                .iter()
                .find(|n| n.role == Role::Master)
                .map_or(usize::MAX, |n| index(&n.host));
            (nodes.iter().map(|n| index(&n.host)).collect(), master)
        })
        .collect()
}

fn arb_goal(max: u32) -> impl Strategy<Value = Survive> {
    (0..=max, 0..=max)
        .prop_filter("some goal", |(z, h)| z + h > 0)
        .prop_map(|(zones, hosts)| Survive { zones, hosts })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The report's verdict on a survival goal (worst combination only) agrees with trying
    /// every combination, on any placement, whether or not it was planned for the goal.
    #[test]
    fn goal_verdicts_agree_with_every_combination(
        req in arb_request(1, 5, 3, 8, 2), goal in arb_goal(3),
    ) {
        let Ok(p) = plan(&req, None) else { return Ok(()) };
        let mut with_goal = req.clone();
        with_goal.cluster.survive = goal;
        let report = analyse(&with_goal, &p.placement);
        let h = hosts(&req);
        let shards = as_shards(&req, &p.placement);
        for g in &report.goals {
            let by_host = g.level == GoalLevel::Hosts;
            let failing = failing_combinations(&h, &shards, g.count as usize, by_host);
            prop_assert_eq!(g.met, failing == 0, "{} ({} failing)", g.line(report.voting_masters), failing);
        }
        prop_assert_eq!(report.goals.len(), usize::from(goal.zones > 0) + usize::from(goal.hosts > 0));
    }

    /// A plan for a survival goal meets it on every combination (plans that cannot are
    /// refused), and on small instances the planner meets the goal exactly when exhaustive
    /// search finds some placement that does.
    #[test]
    fn survival_goals_agree_with_exhaustive_search(
        req in arb_request(3, 4, 2, 4, 2).prop_filter("small", |r| {
            let hosts: usize = r.zones.iter().map(|z| z.hosts.len()).sum();
            hosts <= 8 && r.cluster.shards * (r.cluster.replicas + 1) <= 8
        }),
        goal in arb_goal(1),
    ) {
        let mut req = req;
        req.cluster.survive = goal;
        if goal.zones > 0 {
            req.cluster.spread = Spread::Zone;
        }
        let truth = exhaustive(&req, &goal_violations(&req));
        match plan(&req, None) {
            Ok(p) => {
                let shards = as_shards(&req, &p.placement);
                prop_assert_eq!(goal_violations(&req)(&hosts(&req), &shards), 0, "{}", p.report.summary);
                prop_assert!(p.report.goals.iter().all(|g| g.met));
            }
            Err(e) => prop_assert!(truth != Some(0), "search meets {:?} but the planner says: {}", goal, e),
        }
    }
}

fn agrees_with_oracle(req: &Request) -> Result<(), TestCaseError> {
    let truth = oracle(req);
    match plan(req, None) {
        Ok(p) => {
            prop_assert!(truth.is_some(), "planner placed an infeasible request");
            prop_assert_eq!(
                goal1_met(&p.report),
                truth == Some(0),
                "goal (1): planner {} vs exhaustive {:?}; report: {}",
                goal1_met(&p.report),
                truth,
                p.report.summary
            );
            // Under 3 masters nothing is fully survivable, but the fewest failures still are the
            // planner's job: it must match the search's count.
            if req.cluster.shards < 3 {
                let planned = goal1_failures(&hosts(req), &as_shards(req, &p.placement));
                prop_assert_eq!(Some(planned), truth, "{}", p.report.summary);
            }
        }
        Err(PlanError::Infeasible { .. }) => {
            prop_assert!(truth.is_none(), "feasible per search: {:?}", truth)
        }
        Err(e) => prop_assert!(false, "unexpected error {e}"),
    }
    Ok(())
}
