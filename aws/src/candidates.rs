//! The planner request of a cluster on the aws driver. The configuration names no zones or
//! hosts: the zones are those of the subnets, and each zone gets candidate instances
//! `<zone>-1`, `<zone>-2`, ... with the instance type's memory; the planner decides which
//! candidates get nodes, and only those become instances. The provider plans with it, and the
//! drill rebuilds the same request from a Terraform state, so a drill's restore re-plans
//! exactly as `terraform apply` would.

use redisha_planner::{HostSpec, PlanError, Request, ZoneSpec};

use crate::driver::AwsDriver;
use crate::error::AwsError;

/// `base` (the configuration's shape: shards, replicas, memory, spread, partitions) with the
/// subnets' zones and enough candidate instances per zone for the planner to place every node.
/// `max_nodes_per_instance`: the configured cap, else as many as the instance's memory holds.
/// `known_hosts`: hosts the cluster has now (nodes and instances); they stay candidates,
/// whatever the count, so the planner re-plans from the placement in state and the cluster
/// code finds their zone.
pub async fn planner_request(
    driver: &AwsDriver,
    base: &Request,
    max_nodes_per_instance: Option<u32>,
    known_hosts: &[String],
) -> Result<Request, AwsError> {
    let zones = driver.zones().await?;
    let memory = driver.host_memory_mib().await?;
    let cluster = &base.cluster;
    let max_nodes = nodes_per_instance(max_nodes_per_instance, memory, cluster.node_memory_mb);
    let total = u64::from(cluster.shards) * (1 + u64::from(cluster.replicas));
    let zone_count = u64::try_from(zones.len()).unwrap_or(1).max(1);
    let first_guess = div_ceil(div_ceil(total, zone_count), u64::from(max_nodes)).max(1);

    let floor: Vec<u64> = zones
        .iter()
        .map(|zone| {
            known_hosts
                .iter()
                .filter_map(|h| candidate_index(zone, h))
                .max()
                .unwrap_or(0)
        })
        .collect();

    // If the planner finds the first guess too tight (spread or partition constraints can need
    // more hosts than memory alone), double it, up to one instance per node.
    let mut per_host_zone = first_guess;
    loop {
        let counts: Vec<u64> = floor.iter().map(|f| per_host_zone.max(*f)).collect();
        let request = with_candidates(base, &zones, &counts, memory, max_nodes);
        match redisha_planner::plan(&request, None) {
            Err(PlanError::Infeasible { .. }) if per_host_zone < total.max(1) => {
                per_host_zone = (per_host_zone * 2).min(total.max(1));
            }
            // Feasible, or an error the planner reports the same way on the final request.
            _ => return Ok(request),
        }
    }
}

/// How many nodes one instance may run: `max_nodes_per_instance`, else as many as its memory
/// holds (at least one).
pub fn nodes_per_instance(
    max_nodes_per_instance: Option<u32>,
    memory_mib: u64,
    node_memory_mb: u64,
) -> u32 {
    match max_nodes_per_instance {
        Some(max) => max.max(1),
        None => {
            let fit = memory_mib / node_memory_mb.max(1);
            u32::try_from(fit).unwrap_or(u32::MAX).clamp(1, 1000)
        }
    }
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

/// The candidate index of a host named `<zone>-<n>`.
fn candidate_index(zone: &str, host: &str) -> Option<u64> {
    host.strip_prefix(zone)?.strip_prefix('-')?.parse().ok()
}

fn with_candidates(
    base: &Request,
    zones: &[String],
    per_zone: &[u64],
    memory_mb: u64,
    max_nodes: u32,
) -> Request {
    let mut request = base.clone();
    request.zones = zones
        .iter()
        .zip(per_zone)
        .map(|(zone, count)| ZoneSpec {
            name: zone.clone(),
            hosts: (1..=*count)
                .map(|n| HostSpec {
                    name: format!("{zone}-{n}"),
                    memory_mb,
                    max_nodes,
                    rack: None,
                })
                .collect(),
        })
        .collect();
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_numbered_per_zone() {
        assert_eq!(candidate_index("us-east-1a", "us-east-1a-3"), Some(3));
        assert_eq!(candidate_index("us-east-1a", "us-east-1ab-3"), None);
        let base = Request {
            cluster: redisha_planner::ClusterSpec {
                shards: 3,
                replicas: 1,
                node_memory_mb: 256,
                spread: Default::default(),
                survive: Default::default(),
            },
            zones: Vec::new(),
            partitions: Vec::new(),
            sentinel: None,
        };
        let r = with_candidates(&base, &["a".into(), "b".into()], &[2, 1], 2048, 8);
        let names: Vec<_> = r
            .zones
            .iter()
            .flat_map(|z| z.hosts.iter().map(|h| h.name.clone()))
            .collect();
        assert_eq!(names, ["a-1", "a-2", "b-1"]);
    }

    #[test]
    fn memory_decides_nodes_per_instance_unless_capped() {
        assert_eq!(nodes_per_instance(None, 2048, 256), 8);
        assert_eq!(nodes_per_instance(None, 1024, 4096), 1);
        assert_eq!(nodes_per_instance(Some(2), 2048, 256), 2);
    }
}
