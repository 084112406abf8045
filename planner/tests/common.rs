//! Shared helpers for the planner's integration tests.
#![allow(dead_code)]

use redisha_planner::{
    ClusterSpec, HostSpec, PartitionSpec, Placement, Request, Role, Spread, ZoneSpec, SLOT_COUNT,
};

pub fn zone(name: &str, hosts: &[(&str, u64, u32)]) -> ZoneSpec {
    ZoneSpec {
        name: name.into(),
        hosts: hosts
            .iter()
            .map(|(n, mem, max)| HostSpec {
                name: (*n).into(),
                memory_mb: *mem,
                max_nodes: *max,
                rack: None,
            })
            .collect(),
    }
}

pub fn request(shards: u32, replicas: u32, spread: Spread, zones: Vec<ZoneSpec>) -> Request {
    Request {
        cluster: ClusterSpec {
            shards,
            replicas,
            node_memory_mb: 4096,
            spread,
            survive: Default::default(),
        },
        zones,
        partitions: Vec::new(),
        sentinel: None,
    }
}

pub fn partition(name: &str, side: &[&str]) -> PartitionSpec {
    PartitionSpec {
        name: name.into(),
        side: side.iter().map(|s| (*s).to_string()).collect(),
    }
}

/// `n` zones `z0..`, each with `hosts` hosts of `cap` nodes.
pub fn uniform(n: usize, hosts: usize, cap: u32) -> Vec<ZoneSpec> {
    (0..n)
        .map(|z| ZoneSpec {
            name: format!("z{z}"),
            hosts: (0..hosts)
                .map(|h| HostSpec {
                    name: format!("z{z}h{h}"),
                    memory_mb: 4096 * u64::from(cap),
                    max_nodes: cap,
                    rack: None,
                })
                .collect(),
        })
        .collect()
}

/// Slots: every slot served exactly once, by masters only, shard sizes within one of each other.
pub fn assert_slots_balanced(p: &Placement) {
    let mut owner = vec![0u32; SLOT_COUNT as usize];
    let mut sizes = std::collections::BTreeMap::new();
    for n in &p.nodes {
        if n.role == Role::Replica {
            assert!(n.slots.is_empty(), "replica {} has slots", n.name);
        }
        for r in &n.slots {
            for s in r.start..=r.end {
                owner[usize::from(s)] += 1;
            }
            *sizes.entry(n.shard).or_insert(0u32) += r.len();
        }
    }
    assert!(
        owner.iter().all(|&c| c == 1),
        "every slot served exactly once"
    );
    let (min, max) = (
        sizes.values().min().copied().unwrap_or(0),
        sizes.values().max().copied().unwrap_or(0),
    );
    assert!(
        max - min <= 1,
        "slot counts differ by more than one: {min}..{max}"
    );
}
