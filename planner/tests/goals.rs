//! Goal (1) in the cases a user meets: what survives, and what the warnings tell them to change.

mod common;

use common::{partition, request, uniform};
use redisha_planner::{parse_request, plan, validate, InputFormat, PlanError, Role, Spread};

fn masters_per_zone(p: &redisha_planner::Plan) -> Vec<usize> {
    let mut zones: Vec<&str> = p.placement.nodes.iter().map(|n| n.zone.as_str()).collect();
    zones.sort_unstable();
    zones.dedup();
    zones
        .iter()
        .map(|z| p.placement.masters().filter(|n| n.zone == *z).count())
        .collect()
}

#[test]
fn three_zones_six_shards_survive_any_zone_with_masters_even() {
    let p = plan(&request(6, 1, Spread::Zone, uniform(3, 2, 2)), None).unwrap();
    assert!(
        p.report.survives_any_zone && p.report.survives_any_host,
        "{}",
        p.report.summary
    );
    assert_eq!(masters_per_zone(&p), vec![2, 2, 2]);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn four_shards_over_three_zones_warns_with_workable_shard_counts() {
    // 2+1+1 masters: losing the zone with 2 leaves 2 of 4, not a strict majority.
    let p = plan(&request(4, 1, Spread::Zone, uniform(3, 2, 2)), None).unwrap();
    assert!(!p.report.survives_any_zone);
    let w = p.warnings.join("\n");
    assert!(w.contains("use shards=3 or shards=5"), "{w}");
}

#[test]
fn two_zones_always_warn_and_name_a_third_zone() {
    let p = plan(&request(3, 1, Spread::Zone, uniform(2, 2, 2)), None).unwrap();
    assert!(!p.report.survives_any_zone);
    assert!(
        p.warnings.iter().any(|w| w.contains("add 1 zone(s)")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn spread_host_still_spreads_copies_over_zones() {
    let p = plan(&request(3, 1, Spread::Host, uniform(3, 2, 2)), None).unwrap();
    assert!(p.report.survives_any_zone, "{}", p.report.summary);
}

#[test]
fn a_tied_partition_gets_a_majority_side() {
    // 4 zones, 6 shards: an even spread would put 3 masters on each side of the split.
    let mut req = request(6, 1, Spread::Zone, uniform(4, 2, 2));
    req.partitions.push(partition("campus", &["z0", "z1"]));
    let p = plan(&req, None).unwrap();
    let verdict = &p.report.partitions[0];
    assert!(verdict.keeps_all_slots.is_some(), "{}", p.report.summary);
    assert!(p.report.survives_any_zone, "{}", p.report.summary);
    assert!(
        p.report.summary.contains("partition campus: side"),
        "{}",
        p.report.summary
    );
}

#[test]
fn no_replicas_loses_data_with_any_zone_and_says_so() {
    let p = plan(&request(3, 0, Spread::Zone, uniform(3, 2, 2)), None).unwrap();
    assert!(!p.report.survives_any_zone);
    assert!(
        p.warnings.iter().any(|w| w.contains("replicas >= 1")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn a_failover_keeps_names_and_the_report_follows_it() {
    let req = request(3, 1, Spread::Zone, uniform(3, 2, 2));
    let p = plan(&req, None).unwrap();
    // Observed live: shard 0 failed over to its replica.
    let mut live = p.placement.clone();
    let master = live.master_of(0).unwrap().name.clone();
    let slots = live.master_of(0).unwrap().slots.clone();
    for n in live.nodes.iter_mut().filter(|n| n.shard == 0) {
        if n.name == master {
            n.role = Role::Replica;
            n.slots.clear();
        } else {
            n.role = Role::Master;
            n.slots = slots.clone();
        }
    }
    redisha_planner::validate_placement(&req, &live).unwrap();
    let report = redisha_planner::analyse(&req, &live);
    // Two masters now share a zone; losing it leaves 1 of 3.
    assert!(!report.survives_any_zone, "{}", report.summary);
    // A re-plan from the live placement fails back with one step and no node moves.
    let again = plan(&req, Some(&live)).unwrap();
    let steps = redisha_planner::migrate::steps(&live, &again.placement).unwrap();
    assert!(again.report.survives_any_zone);
    assert!(
        steps.iter().all(|s| matches!(
            s,
            redisha_planner::Step::Failover { .. } | redisha_planner::Step::WaitSync { .. }
        )),
        "{steps:?}"
    );
    redisha_planner::check_invariant(&live, &again.placement, &steps).unwrap();
}

#[test]
fn validation_reports_every_problem_with_paths() {
    let text = r#"{"cluster": {"shards": 20000, "replicas": 1, "node_memory_mb": 0},
      "zones": [{"name": "a", "hosts": [{"name": "h 1", "memory_mb": 1, "max_nodes": 0, "rack": ""}]},
                {"name": "a", "hosts": [{"name": "h2", "memory_mb": 1}]}],
      "partitions": [{"name": "p", "side": ["a", "a"]}, {"name": "p", "side": []}]}"#;
    let req = parse_request(text, InputFormat::Json).unwrap();
    let errors = validate(&req).unwrap_err().to_string();
    for expected in [
        "cluster.shards: must be at most 16384",
        "cluster.node_memory_mb: must be greater than 0",
        "zones[0].hosts[0].name: \"h 1\" may only contain",
        "zones[0].hosts[0].max_nodes: must be at least 1",
        "zones[0].hosts[0].rack: must not be empty",
        "zones[1].name: duplicate zone name \"a\"",
        "partitions[0].side[1]: zone \"a\" is listed twice",
        "partitions[1].name: duplicate partition name \"p\"",
        "partitions[1].side: must name at least one zone",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in\n{errors}"
        );
    }
    assert!(matches!(plan(&req, None), Err(PlanError::Invalid(_))));
}

/// Failures of one kind the plan does not survive.
fn unsurvived(p: &redisha_planner::Plan, kind: redisha_planner::FailureKind) -> usize {
    p.report
        .failures
        .iter()
        .filter(|f| f.kind == kind && !f.survives)
        .count()
}

#[test]
fn two_shards_over_four_zones_lose_one_zone_not_two_and_say_why() {
    // Two masters in two zones: losing either leaves 1 of 2, no majority. Both masters in one
    // zone: only that zone's loss is fatal.
    let p = plan(&request(2, 1, Spread::Zone, uniform(4, 2, 2)), None).unwrap();
    assert_eq!(
        unsurvived(&p, redisha_planner::FailureKind::Zone),
        1,
        "{}",
        p.report.summary
    );
    assert!(
        p.warnings[0].starts_with("only 2 master(s)")
            && p.warnings[0].contains("use 3 or more shards"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn one_shard_warns_that_failover_is_impossible() {
    let p = plan(&request(1, 2, Spread::Zone, uniform(3, 1, 1)), None).unwrap();
    assert_eq!(
        unsurvived(&p, redisha_planner::FailureKind::Zone),
        1,
        "{}",
        p.report.summary
    );
    assert!(
        p.warnings[0].contains("never failed over automatically"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn four_shards_over_two_zones_keep_one_zone_survivable() {
    // 2+2 masters: either zone's loss leaves 2 of 4. 3+1: losing the zone with 1 leaves 3 of 4.
    let p = plan(&request(4, 1, Spread::Zone, uniform(2, 2, 2)), None).unwrap();
    assert_eq!(
        unsurvived(&p, redisha_planner::FailureKind::Zone),
        1,
        "{}",
        p.report.summary
    );
}

fn most_masters_on_one_host(p: &redisha_planner::Plan) -> usize {
    let mut hosts: Vec<&str> = p.placement.masters().map(|n| n.host.as_str()).collect();
    hosts.sort_unstable();
    hosts
        .chunk_by(|a, b| a == b)
        .map(|run| run.len())
        .max()
        .unwrap_or(0)
}

#[test]
fn masters_spread_over_hosts_as_evenly_as_over_zones() {
    // 6 shards, 3 zones of 2 hosts with room for 2 nodes each: 2 masters per zone, and a host
    // holding both would take a third of the masters with it.
    let p = plan(&request(6, 1, Spread::Zone, uniform(3, 2, 2)), None).unwrap();
    assert_eq!(masters_per_zone(&p), vec![2, 2, 2]);
    assert_eq!(most_masters_on_one_host(&p), 1, "{:#?}", p.placement.nodes);
}

#[test]
fn masters_spread_over_racks_first() {
    // One zone's hosts in two racks: its masters must not all sit in one rack.
    let mut zones = uniform(3, 4, 2);
    for zone in &mut zones {
        for (h, host) in zone.hosts.iter_mut().enumerate() {
            host.rack = Some(if h < 2 { "r0".into() } else { "r1".into() });
        }
    }
    let p = plan(&request(6, 2, Spread::Zone, zones), None).unwrap();
    for zone in ["z0", "z1", "z2"] {
        let racks: Vec<bool> = p
            .placement
            .masters()
            .filter(|n| n.zone == zone)
            .map(|n| n.host.ends_with("h0") || n.host.ends_with("h1"))
            .collect();
        assert_eq!(racks.len(), 2);
        assert_ne!(racks[0], racks[1], "{zone}: both masters in one rack");
    }
}

#[test]
fn a_survival_goal_says_what_it_needs() {
    let mut req = request(3, 1, Spread::Zone, uniform(3, 2, 2));
    req.cluster.survive.zones = 2;
    let err = validate(&req).unwrap_err().to_string();
    assert!(
        err.contains("cluster.survive.zones: surviving 2 zone(s) at once needs")
            && err.contains(
                "replicas >= 2, shards >= 5 and at least 5 zones with room for about 3 nodes each"
            ),
        "{err}"
    );
    let mut ok = request(10, 2, Spread::Zone, uniform(5, 4, 2));
    ok.cluster.survive.zones = 2;
    let p = plan(&ok, None).unwrap();
    assert!(p.report.goals.iter().all(|g| g.met), "{}", p.report.summary);
}
