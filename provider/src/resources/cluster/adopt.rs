//! Adopting an imported cluster. `terraform import redisha_cluster.x HOST:PORT` records what runs
//! (discovered from that one node); the first plan with a configuration matches every planned
//! node to the running node at its planned address, with the same role and slots, and apply
//! takes them over. Nothing is restarted, replaced or moved to adopt: a mismatch is an error
//! that names the node and what differs, because guessing here could cost data.

use redisha_cluster::state::host_plans;
use redisha_cluster::{ClusterNode, ClusterState, HostHandle};
use redisha_planner::{Placement, Request, Role};

use crate::tfplugin::diagnostics::Diagnostic;

use super::drivers::BuiltDriver;

pub const IMPORTED: &str = "imported";

fn mismatch(detail: String) -> Diagnostic {
    Diagnostic::error(
        "The imported cluster does not match the configuration",
        format!(
            "{detail}\nFix: describe the cluster as it was created (the same zones and hosts, shards, \
             replicas and local.base_port / loopback_octet), or create a new cluster instead of importing."
        ),
    )
}

/// The state of `imported` under the planned names, with the driver's handles.
pub fn adopt(
    imported: &ClusterState,
    request: &Request,
    placement: &Placement,
    driver: &BuiltDriver,
) -> Result<ClusterState, Diagnostic> {
    let BuiltDriver::Local(local) = driver else {
        return Err(Diagnostic::error(
            "Import works with the local driver only",
            "An imported cluster can be adopted by a configuration with a `local { }` block.",
        ));
    };
    let plans = host_plans(
        request,
        placement,
        &ClusterState::new(super::drivers::LOCAL),
    )
    .map_err(|e| mismatch(e.to_string()))?;
    let mut state = ClusterState::new(super::drivers::LOCAL);
    let mut matched = Vec::new();
    for h in &plans {
        let ip = local.host_address(h).map_err(|e| mismatch(e.to_string()))?;
        state.hosts.push(HostHandle {
            name: h.name.clone(),
            zone: h.zone.clone(),
            address: ip.clone(),
            instance_id: None,
            extra: Default::default(),
        });
        for np in &h.nodes {
            let port = local
                .node_port(np.index_on_host)
                .map_err(|e| mismatch(e.to_string()))?;
            let address = format!("{ip}:{port}");
            let planned = placement
                .node(&np.name)
                .ok_or_else(|| mismatch(format!("node {} is not in the placement", np.name)))?;
            let running = imported
                .nodes
                .iter()
                .find(|n| n.address() == address)
                .ok_or_else(|| {
                    mismatch(format!(
                        "planned node {} ({} in {}) at {address}: no node of the imported cluster runs there",
                        planned.name,
                        planned.role.as_str(),
                        planned.zone
                    ))
                })?;
            if running.role != planned.role {
                return Err(mismatch(format!(
                    "node at {address} is a {} but the plan makes it a {}",
                    running.role.as_str(),
                    planned.role.as_str()
                )));
            }
            if planned.role == Role::Master && running.slots != planned.slots {
                return Err(mismatch(format!(
                    "master at {address} serves slots {:?} but the plan gives it {:?}",
                    running.slots, planned.slots
                )));
            }
            matched.push(address.clone());
            let host = state
                .hosts
                .last()
                .ok_or_else(|| mismatch(format!("host {} was not recorded", h.name)))?;
            let (handle, cluster_id) = local
                .existing_handle(host, np)
                .map_err(|e| mismatch(e.to_string()))?;
            // A cluster made by redisha keeps its id: its nodes carry it.
            if let Some(id) = cluster_id {
                if state.cluster_id.is_empty() {
                    state.cluster_id = id;
                } else if state.cluster_id != id {
                    return Err(mismatch(format!(
                        "node at {address} belongs to cluster {id}, other nodes to {}",
                        state.cluster_id
                    )));
                }
            }
            state.nodes.push(ClusterNode::planned(
                planned,
                running.node_id.clone(),
                handle,
            ));
        }
    }
    if let Some(extra) = imported
        .nodes
        .iter()
        .find(|n| !matched.contains(&n.address()))
    {
        return Err(mismatch(format!(
            "the running node at {} ({}) has no place in the plan",
            extra.address(),
            extra.role.as_str()
        )));
    }
    Ok(state)
}
