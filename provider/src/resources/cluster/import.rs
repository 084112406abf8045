//! ImportResourceState: a running cluster found from one node's address. The first plan and
//! apply with a configuration adopt it (`adopt`).

use redisha_cluster::{ClusterState, Options, Password};
use redisha_planner::Role;

use crate::tfplugin::diagnostics::{Diagnostic, Diagnostics};
use crate::tfplugin::framework::{Applied, Attr};
use crate::topology::TopologyModel;

use super::model::ClusterModel;
use super::{cluster_error, id_value, nodes, with_cluster};

pub(super) async fn import(
    id: &str,
) -> Result<Vec<Applied<ClusterModel, ClusterState>>, Diagnostics> {
    // The id is one node's address; the password, if any, comes from the environment so
    // that it never appears on a command line.
    let password = std::env::var("REDISHA_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(Password::new);
    if redisha_cluster::conn::split_address(id).is_none() {
        return Err(Diagnostic::error(
            "Invalid import id",
            format!("{id:?}: import a cluster by one node's address, host:port (e.g. 127.0.1.1:7000); set REDISHA_PASSWORD if it has a password"),
        )
        .into());
    }
    let state = redisha_cluster::health::import(id, password.as_ref(), &Options::default())
        .await
        .map_err(|e| Diagnostics::from(cluster_error("Cannot import the cluster", e)))?;
    let shards = state
        .nodes
        .iter()
        .filter(|n| n.role == Role::Master)
        .count();
    // Only what the cluster tells: the configuration fills in the rest at the first plan.
    let known = ClusterModel {
        password: password.as_ref().map(|p| p.expose().to_string()).into(),
        topology: TopologyModel {
            shards: Attr::Known(u32::try_from(shards).unwrap_or(u32::MAX)),
            ..TopologyModel::default()
        },
        ..ClusterModel::default()
    };
    let imported = with_cluster(
        &known,
        Attr::Known(id.to_string()),
        id_value(&state),
        nodes::recorded(&state),
        String::new().into(),
    );
    Ok(vec![Applied {
        state: imported,
        private: Some(state),
    }])
}
