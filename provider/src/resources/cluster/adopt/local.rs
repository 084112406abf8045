//! Adoption by a `local { }` configuration: each planned node must run at the address the
//! local driver gives it (loopback octet, zone and host index, base port + index on host).

use redisha_cluster::state::host_plans;
use redisha_cluster::{ClusterNode, ClusterState, HostHandle};

use crate::tfplugin::diagnostics::{Diagnostic, Diagnostics};
use crate::tfplugin::framework::Context;

use super::super::args::ClusterArgs;
use super::super::drivers::{self, BuiltDriver, LOCAL};
use super::super::place;
use super::{mismatch, none_left_over, running_as_planned};

const FIX: &str = "describe the cluster as it was created (the same zones and hosts, shards, \
    replicas and local.base_port / loopback_octet)";

pub(super) async fn adopt(
    ctx: &Context,
    args: &ClusterArgs,
    imported: &ClusterState,
) -> Result<ClusterState, Diagnostics> {
    let (driver, request) = drivers::build(ctx, args, None).await?;
    let BuiltDriver::Local(local) = &driver else {
        return Err(Diagnostic::error(
            "The local driver was not built for a local configuration",
            "This is a bug in the provider; please report it.",
        )
        .into());
    };
    let placement = place(&request, None)?.placement;
    let fail = |detail: String| Diagnostics::from(mismatch(detail, FIX));
    let plans = host_plans(&request, &placement, &ClusterState::new(LOCAL))
        .map_err(|e| fail(e.to_string()))?;
    let mut state = ClusterState::new(LOCAL);
    let mut matched = Vec::new();
    for h in &plans {
        let ip = local.host_address(h).map_err(|e| fail(e.to_string()))?;
        let host = HostHandle {
            name: h.name.clone(),
            zone: h.zone.clone(),
            address: ip.clone(),
            instance_id: None,
            extra: Default::default(),
        };
        for np in &h.nodes {
            let port = local
                .node_port(np.index_on_host)
                .map_err(|e| fail(e.to_string()))?;
            let address = format!("{ip}:{port}");
            let planned = placement
                .node(&np.name)
                .ok_or_else(|| fail(format!("node {} is not in the placement", np.name)))?;
            let running = running_as_planned(imported, planned, &address, FIX)?;
            matched.push(address.clone());
            let (handle, cluster_id) = local
                .existing_handle(&host, np)
                .map_err(|e| fail(e.to_string()))?;
            // A cluster made by redisha keeps its id: its nodes carry it.
            if let Some(id) = cluster_id {
                if state.cluster_id.is_empty() {
                    state.cluster_id = id;
                } else if state.cluster_id != id {
                    return Err(fail(format!(
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
        state.hosts.push(host);
    }
    none_left_over(imported, &matched, FIX)?;
    // An id given with the import (the aws form) must be the one the nodes carry.
    if !imported.cluster_id.is_empty() && imported.cluster_id != state.cluster_id {
        let carried = match state.cluster_id.as_str() {
            "" => "no cluster id".to_string(),
            id => format!("cluster id {id}"),
        };
        return Err(Diagnostic::error(
            format!("The nodes do not carry cluster id {}", imported.cluster_id),
            format!(
                "The import named cluster id {}, but the local nodes carry {carried}. Fix: `terraform state rm` the resource and import a local cluster by one node's address alone (HOST:PORT). Nothing was changed.",
                imported.cluster_id
            ),
        )
        .into());
    }
    Ok(state)
}
