//! Migration steps keep every shard a copy and the slot-serving masters up after every step,
//! and end exactly in the target placement. Checked by simulating the steps.

mod common;

use common::{request, uniform};
use proptest::prelude::*;
use redisha_planner::migrate::{check_invariant, simulate, steps};
use redisha_planner::migrate_room::{check_room, host_room, steps_within};
use redisha_planner::MigrateError;
use redisha_planner::{plan, Placement, Request, Role, Spread, Step};

fn replan(from: &Request, to: &Request) -> (Placement, Placement, Vec<Step>) {
    let current = plan(from, None).expect("current plan").placement;
    let target = plan(to, Some(&current)).expect("target plan").placement;
    let s = steps(&current, &target).expect("steps");
    if let Err(e) = check_invariant(&current, &target, &s) {
        panic!("invariant broken: {e}\nsteps: {s:#?}");
    }
    (current, target, s)
}

#[test]
fn no_change_means_no_steps() {
    let req = request(3, 1, Spread::Zone, uniform(3, 2, 2));
    let (_, _, s) = replan(&req, &req);
    assert!(s.is_empty(), "{s:?}");
}

#[test]
fn growing_shards_adds_empty_masters_then_moves_few_slots() {
    let from = request(3, 1, Spread::Zone, uniform(3, 2, 2));
    let to = request(4, 1, Spread::Zone, uniform(3, 2, 2));
    let (current, target, s) = replan(&from, &to);
    // Every node of the old plan stays under its name.
    for n in &current.nodes {
        assert!(
            target.node(&n.name).is_some(),
            "{} was renamed or moved",
            n.name
        );
    }
    let moved: u32 = s
        .iter()
        .filter_map(|st| match st {
            Step::MigrateSlots { slots, .. } => Some(slots.len()),
            _ => None,
        })
        .sum();
    assert_eq!(moved, 4096, "the new shard takes exactly its share");
    let first_migrate = s
        .iter()
        .position(|st| matches!(st, Step::MigrateSlots { .. }));
    let last_add = s.iter().rposition(|st| matches!(st, Step::AddNode { .. }));
    assert!(
        last_add < first_migrate,
        "nodes are added before slots move"
    );
}

#[test]
fn shrinking_shards_drains_then_removes() {
    let from = request(4, 1, Spread::Zone, uniform(3, 2, 2));
    let to = request(3, 1, Spread::Zone, uniform(3, 2, 2));
    let (_, target, s) = replan(&from, &to);
    assert_eq!(target.shard_count(), 3);
    let removed: Vec<_> = s
        .iter()
        .filter(|st| matches!(st, Step::RemoveNode { .. }))
        .collect();
    assert_eq!(removed.len(), 2);
    let last = s.last().expect("steps");
    assert!(matches!(last, Step::RemoveNode { .. }));
}

#[test]
fn losing_a_host_moves_its_nodes_with_failover_first() {
    let from = request(3, 1, Spread::Zone, uniform(3, 2, 2));
    let current = plan(&from, None).unwrap().placement;
    let master_host = current.master_of(0).unwrap().host.clone();
    let mut to = from.clone();
    for z in &mut to.zones {
        z.hosts.retain(|h| h.name != master_host);
    }
    let target = plan(&to, Some(&current)).unwrap().placement;
    assert!(target.nodes.iter().all(|n| n.host != master_host));
    let s = steps(&current, &target).unwrap();
    check_invariant(&current, &target, &s).unwrap();
    assert!(s.iter().any(|st| matches!(st, Step::Failover { .. })));
}

#[test]
fn more_replicas_then_fewer() {
    let one = request(3, 1, Spread::Zone, uniform(3, 2, 2));
    let two = request(3, 2, Spread::Zone, uniform(3, 2, 2));
    replan(&one, &two);
    replan(&two, &one);
}

#[test]
fn the_checker_catches_an_unsafe_order() {
    let req = request(3, 1, Spread::Zone, uniform(3, 2, 2));
    let current = plan(&req, None).unwrap().placement;
    let master = current.master_of(0).unwrap().name.clone();
    let bad = vec![Step::RemoveNode { node: master }];
    assert!(simulate(&current, &current, &bad).is_err());
    let replica = current
        .shard_nodes(0)
        .find(|n| n.role == Role::Replica)
        .unwrap()
        .name
        .clone();
    // Removing the only replica drops shard 0 below the copies both placements have.
    let err = simulate(&current, &current, &[Step::RemoveNode { node: replica }]).unwrap_err();
    assert!(err.message.contains("copies"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random re-plans (shards, replicas and zones change) always give safe steps.
    #[test]
    fn random_replans_are_safe(
        s1 in 1u32..8, s2 in 1u32..8, r1 in 0u32..3, r2 in 0u32..3,
        z1 in 2usize..5, z2 in 2usize..5, drop_host in any::<bool>(),
    ) {
        let from = request(s1, r1, Spread::Zone, uniform(z1, 3, 2));
        let mut to = request(s2, r2, Spread::Zone, uniform(z2, 3, 2));
        if drop_host {
            to.zones[0].hosts.remove(0);
        }
        let Ok(cur) = plan(&from, None) else { return Ok(()) };
        let Ok(tgt) = plan(&to, Some(&cur.placement)) else { return Ok(()) };
        let s = steps(&cur.placement, &tgt.placement).unwrap();
        let checked = check_invariant(&cur.placement, &tgt.placement, &s);
        prop_assert!(checked.is_ok(), "{:?}\n{:#?}", checked, s);
        // Within the hosts' room: either steps that fit at every step, or a plain refusal.
        let room = host_room(&to);
        match steps_within(&cur.placement, &tgt.placement, &room) {
            Ok(s) => {
                prop_assert!(check_invariant(&cur.placement, &tgt.placement, &s).is_ok());
                let fits = check_room(&cur.placement, &s, &room);
                prop_assert!(fits.is_ok(), "{:?}", fits);
            }
            Err(e) => prop_assert!(matches!(e, MigrateError::NoRoom { .. }), "{e}"),
        }
    }
}

#[test]
fn a_full_host_frees_its_old_node_before_the_new_one_starts() {
    // Every host runs one node before and after: 3 shards x 2 become 2 shards x 3, so hosts
    // of the dropped shard get a new node only once its old node has gone.
    let from = request(3, 1, Spread::Zone, uniform(3, 2, 1));
    let to = request(2, 2, Spread::Zone, uniform(3, 2, 1));
    let current = plan(&from, None).unwrap().placement;
    let target = plan(&to, Some(&current)).unwrap().placement;
    let room = host_room(&to);
    let plain = steps(&current, &target).unwrap();
    assert!(
        check_room(&current, &plain, &room).is_err(),
        "the plain order overfills a host"
    );
    let s = steps_within(&current, &target, &room).unwrap();
    check_invariant(&current, &target, &s).unwrap();
    check_room(&current, &s, &room).unwrap();
}
