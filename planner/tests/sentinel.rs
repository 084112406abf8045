//! Sentinel mode: where the sentinels go, and what the report says each failure does.

mod common;

use common::{partition, request, zone};
use redisha_planner::sentinel::{analyse_sentinels, place_sentinels};
use redisha_planner::{
    plan, FailureKind, Node, Placement, PlanError, Request, Role, Sentinel, SentinelSpec, Spread,
};

fn sentinel_request(replicas: u32, zones: Vec<redisha_planner::ZoneSpec>) -> Request {
    let mut req = request(1, replicas, Spread::Zone, zones);
    req.sentinel = Some(SentinelSpec::default());
    req
}

fn three_zones() -> Vec<redisha_planner::ZoneSpec> {
    vec![
        zone("a", &[("a1", 8192, 1), ("a2", 8192, 1)]),
        zone("b", &[("b1", 8192, 1), ("b2", 8192, 1)]),
        zone("c", &[("c1", 8192, 1), ("c2", 8192, 1)]),
    ]
}

fn two_zones() -> Vec<redisha_planner::ZoneSpec> {
    vec![
        zone("a", &[("a1", 8192, 1), ("a2", 8192, 1)]),
        zone("b", &[("b1", 8192, 1), ("b2", 8192, 1)]),
    ]
}

fn zones_of(sentinels: &[Sentinel]) -> Vec<&str> {
    let mut z: Vec<&str> = sentinels.iter().map(|s| s.zone.as_str()).collect();
    z.sort_unstable();
    z.dedup();
    z
}

fn failure<'a>(
    report: &'a redisha_planner::SentinelReport,
    label: &str,
) -> &'a redisha_planner::sentinel::SentinelFailure {
    report
        .failures
        .iter()
        .find(|f| f.label == label)
        .unwrap_or_else(|| panic!("no row {label:?} in {:#?}", report.failures))
}

#[test]
fn three_zones_spread_the_sentinels_and_survive_any_zone_whichever_node_is_primary() {
    let mut req = sentinel_request(2, three_zones());
    req.partitions = vec![partition("a-away", &["a"])];
    let p = plan(&req, None).expect("plan");
    let s = p.sentinel.as_ref().expect("sentinel plan");
    assert_eq!(s.sentinels.len(), 3);
    assert_eq!(zones_of(&s.sentinels), ["a", "b", "c"]);
    assert!(s.report.survives_any_zone, "{:#?}", s.report);
    assert!(s.report.survives_any_host, "{:#?}", s.report);
    assert!(p.report.survives_any_zone && p.report.summary.contains("Sentinel mode"));
    assert!(s.report.advice.is_empty(), "{:?}", s.report.advice);
    // Sentinels stay off the primary's host when the zone has another host.
    let primary = p
        .placement
        .nodes
        .iter()
        .find(|n| n.role == Role::Master)
        .unwrap();
    assert!(s.sentinels.iter().all(|x| x.host != primary.host));
    // The partition: the primary's zone alone is cut off; the other side fails over and the
    // old primary, without a replica on its side, refuses writes.
    let primary_zone = primary.zone.clone();
    let f = failure(&s.report, "partition a-away: a cut off");
    if primary_zone == "a" {
        assert!(f.failover && f.survives, "{f:#?}");
        assert_eq!(f.isolated_primary.as_deref(), Some("a"));
        assert!(!f.isolated_primary_accepts_writes);
    }
    assert!(f.survives, "{f:#?}");
}

#[test]
fn two_zones_cannot_survive_a_zone_loss_and_the_fix_is_a_third_zone_with_a_sentinel() {
    let req = sentinel_request(1, two_zones());
    let p = plan(&req, None).expect("a plan with warnings, not a refusal");
    let s = p.sentinel.as_ref().expect("sentinel plan");
    assert!(!s.report.survives_any_zone);
    // Whichever zone holds two sentinels, losing it (with the primary there, after some
    // failover) leaves one: no failover.
    let no_quorum = s
        .report
        .failures
        .iter()
        .find(|f| f.kind == FailureKind::Zone && f.primary_lost && !f.failover)
        .expect("a zone loss without failover");
    assert_eq!(no_quorum.sentinels_left, 1);
    assert_eq!(no_quorum.sentinels_needed, 2);
    let advice = s.report.advice.join("\n");
    assert!(
        advice.contains("third zone holding just a sentinel"),
        "{advice}"
    );
    assert!(p
        .warnings
        .iter()
        .any(|w| w.starts_with("cannot survive zone")));

    // With that third zone (one small host) the sentinels take all three zones and the loss
    // of either data zone is failed over.
    let mut zones = two_zones();
    zones.push(zone("w", &[("w1", 256, 1)]));
    let witness = sentinel_request(1, zones);
    let p = plan(&witness, None).expect("plan");
    let s = p.sentinel.as_ref().unwrap();
    assert_eq!(zones_of(&s.sentinels), ["a", "b", "w"]);
    for z in ["zone a", "zone b"] {
        let f = failure(&s.report, z);
        assert!(f.quorum_ok(), "{f:#?}");
    }
    // ...but one replica leaves the promoted primary none, so min_replicas_to_write = 1 stops
    // writes after the failover: the report says so and names both ways out.
    assert!(!s.report.survives_any_zone);
    let advice = s.report.advice.join("\n");
    assert!(advice.contains("min_replicas_to_write"), "{advice}");

    // Accepting that trade (min_replicas_to_write = 0) makes every single zone loss survived.
    let mut relaxed = sentinel_request(1, {
        let mut z = two_zones();
        z.push(zone("w", &[("w1", 256, 1)]));
        z
    });
    relaxed.sentinel = Some(SentinelSpec {
        min_replicas_to_write: 0,
        ..SentinelSpec::default()
    });
    let p = plan(&relaxed, None).expect("plan");
    assert!(p.sentinel.unwrap().report.survives_any_zone);
}

#[test]
fn an_isolated_primary_with_a_replica_on_its_side_is_reported_as_taking_writes_that_are_lost() {
    let mut req = request(
        1,
        2,
        Spread::Host,
        vec![
            zone("a", &[("a1", 8192, 1), ("a2", 8192, 1)]),
            zone("b", &[("b1", 8192, 1)]),
            zone("c", &[("c1", 8192, 1), ("c2", 8192, 1)]),
        ],
    );
    req.sentinel = Some(SentinelSpec::default());
    req.partitions = vec![partition("a-away", &["a"])];
    let node = |name: &str, role: Role, host: &str, zone: &str| Node {
        name: name.into(),
        shard: 0,
        role,
        host: host.into(),
        zone: zone.into(),
        slots: Vec::new(),
    };
    let placement = Placement {
        nodes: vec![
            node("s0-0", Role::Master, "a1", "a"),
            node("s0-1", Role::Replica, "a2", "a"),
            node("s0-2", Role::Replica, "b1", "b"),
        ],
    };
    let sentinels: Vec<Sentinel> = [("b1", "b"), ("c1", "c"), ("c2", "c")]
        .iter()
        .enumerate()
        .map(|(i, (h, z))| Sentinel {
            name: format!("sentinel-{}", i + 1),
            host: (*h).into(),
            zone: (*z).into(),
        })
        .collect();
    let report = analyse_sentinels(&req, &placement, &sentinels);
    let f = failure(&report, "partition a-away: a cut off");
    assert!(f.failover);
    assert_eq!(f.isolated_primary.as_deref(), Some("a"));
    assert!(f.isolated_primary_accepts_writes, "{f:#?}");
    assert!(!f.survives, "two primaries taking writes is not survived");
    assert!(report
        .advice
        .iter()
        .any(|a| a.contains("raise min_replicas_to_write")));
}

#[test]
fn settings_are_checked_with_their_paths() {
    let mut req = sentinel_request(1, three_zones());
    req.cluster.shards = 3;
    req.sentinel = Some(SentinelSpec {
        count: 4,
        quorum: Some(9),
        memory_mb: 0,
        min_replicas_to_write: 2,
    });
    let err = plan(&req, None).expect_err("invalid");
    let text = err.to_string();
    for path in [
        "cluster.shards:",
        "sentinel.count:",
        "sentinel.quorum:",
        "sentinel.memory_mb:",
        "sentinel.min_replicas_to_write:",
    ] {
        assert!(text.contains(path), "{path} missing in:\n{text}");
    }
    req.cluster.shards = 1;
    req.cluster.survive.zones = 2;
    req.sentinel = Some(SentinelSpec::default());
    let text = plan(&req, None).expect_err("survive 2").to_string();
    assert!(text.contains("cluster.survive.zones:"), "{text}");
}

#[test]
fn a_survival_goal_the_sentinels_cannot_meet_is_refused_with_the_fix() {
    let mut req = sentinel_request(1, two_zones());
    req.cluster.survive.zones = 1;
    match plan(&req, None) {
        Err(PlanError::Infeasible { constraint, fix }) => {
            assert!(constraint.contains("cluster.survive.zones"), "{constraint}");
            assert!(fix.contains("third zone"), "{fix}");
        }
        other => panic!("expected infeasible, got {other:?}"),
    }
    let mut ok = sentinel_request(2, three_zones());
    ok.cluster.survive.zones = 1;
    plan(&ok, None).expect("three zones with two replicas meet the goal");
}

#[test]
fn hosts_full_of_data_nodes_leave_no_room_and_the_error_says_what_to_add() {
    // Every host exactly fits its one data node.
    let req = sentinel_request(
        1,
        vec![zone("a", &[("a1", 4096, 1)]), zone("b", &[("b1", 4096, 1)])],
    );
    match plan(&req, None) {
        Err(PlanError::Infeasible { constraint, fix }) => {
            assert!(constraint.contains("sentinel.count = 3"), "{constraint}");
            assert!(fix.contains("memory_mb >= 64"), "{fix}");
        }
        other => panic!("expected infeasible, got {other:?}"),
    }
}

#[test]
fn replanning_keeps_sentinels_and_their_names_where_their_hosts_remain() {
    let req = sentinel_request(2, three_zones());
    let first = plan(&req, None).unwrap();
    let placement = first.placement.clone();
    let before = first.sentinel.unwrap().sentinels;
    let again = place_sentinels(&req, &placement, &before).unwrap();
    assert_eq!(again.sentinels, before, "nothing changed, nothing moves");

    // One sentinel's host is gone from the topology: that one is replaced under a new name, in
    // the same zone (the zone still has a host with room), and the others keep theirs.
    let gone = before[0].host.clone();
    let mut zones = three_zones();
    for z in &mut zones {
        z.hosts.retain(|h| h.name != gone);
    }
    let mut smaller = req.clone();
    smaller.zones = zones;
    let moved = place_sentinels(&smaller, &placement, &before).unwrap();
    assert!(moved.sentinels.iter().all(|s| s.host != gone));
    for kept in &before[1..] {
        assert!(moved.sentinels.contains(kept), "{kept:?} moved: {moved:?}");
    }
    let fresh: Vec<&Sentinel> = moved
        .sentinels
        .iter()
        .filter(|s| !before.iter().any(|b| b.name == s.name))
        .collect();
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].zone, before[0].zone);
    assert!(moved.report.survives_any_zone);
}

#[test]
fn five_sentinels_over_five_zones_take_one_zone_each() {
    let zones: Vec<_> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|z| {
            zone(
                z,
                &[(&format!("{z}1"), 8192, 1), (&format!("{z}2"), 8192, 1)],
            )
        })
        .collect();
    let mut req = sentinel_request(2, zones);
    req.sentinel = Some(SentinelSpec {
        count: 5,
        ..SentinelSpec::default()
    });
    let p = plan(&req, None).unwrap();
    let s = p.sentinel.unwrap();
    assert_eq!(zones_of(&s.sentinels).len(), 5);
    assert_eq!(s.report.majority, 3);
    assert!(s.report.survives_any_zone);
}

#[test]
fn the_report_lists_sentinels_by_name_in_whatever_order_they_were_placed() {
    let zones: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|z| {
            zone(
                z,
                &[(&format!("{z}1"), 8192, 1), (&format!("{z}2"), 8192, 1)],
            )
        })
        .collect();
    let mut req = sentinel_request(3, zones);
    req.sentinel = Some(SentinelSpec {
        count: 5,
        ..SentinelSpec::default()
    });
    let placed = plan(&req, None).unwrap().sentinel.unwrap();
    // As an apply that grew 3 sentinels to 5 holds them: grouped by zone.
    let mut grown = placed.clone();
    grown
        .sentinels
        .sort_by(|x, y| x.zone.cmp(&y.zone).then(y.name.cmp(&x.name)));
    assert_ne!(
        grown.sentinels, placed.sentinels,
        "the test needs another order"
    );
    let text = redisha_planner::sentinel::render::render_markdown(&placed);
    assert_eq!(
        redisha_planner::sentinel::render::render_markdown(&grown),
        text
    );
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| sentinel-"))
        .map(|l| l.split('|').nth(1).unwrap_or("").trim())
        .collect();
    assert_eq!(
        rows,
        [
            "sentinel-1",
            "sentinel-2",
            "sentinel-3",
            "sentinel-4",
            "sentinel-5"
        ]
    );
}
