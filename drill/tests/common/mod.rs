//! Shared by the drill tests: an independent client to hold the drill's figures against, and
//! the zones the test deployments are placed on.
#![allow(dead_code)]

pub mod probe;

use redisha_planner::{HostSpec, ZoneSpec};

/// Zones `zone-1`..`zone-<zones>`, each with `hosts` hosts of 1 GB named by `host_name(z, h)`,
/// each taking at most `max_nodes` nodes.
pub fn zones(
    zones: u32,
    hosts: u32,
    max_nodes: u32,
    host_name: impl Fn(u32, u32) -> String,
) -> Vec<ZoneSpec> {
    (1..=zones)
        .map(|z| ZoneSpec {
            name: format!("zone-{z}"),
            hosts: (1..=hosts)
                .map(|h| HostSpec {
                    name: host_name(z, h),
                    memory_mb: 1024,
                    max_nodes,
                    rack: None,
                })
                .collect(),
        })
        .collect()
}
