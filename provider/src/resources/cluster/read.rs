//! ReadResource: the live cluster, so drift (a dead node, a promoted replica, a moved slot, a
//! vanished instance) shows in the next plan and apply repairs it.

use redisha_cluster::ClusterState;
use tracing::info;

use crate::tfplugin::framework::{Applied, Attr, Context};

use super::args::ClusterArgs;
use super::locate::{self, Located};
use super::model::ClusterModel;
use super::{applied_node_config, configured_operator, nodes, Failure};

pub(super) async fn read(
    ctx: &Context,
    old: ClusterModel,
    cached: Option<ClusterState>,
) -> Result<Option<Applied<ClusterModel, ClusterState>>, Failure> {
    let cluster_id = old.cluster_id.value().map(String::as_str);
    // Nothing to read (a state with no cluster yet): the state stays as it is.
    let Some(args) = ClusterArgs::from_model(&old)
        .ok()
        .flatten()
        .filter(|_| cached.is_some() || cluster_id.is_some())
    else {
        return Ok(Some(Applied {
            state: old,
            private: None,
        }));
    };
    let password = applied_node_config(&old).password;
    let located = locate::existing(ctx, &args, cached, cluster_id, password, None, false).await?;
    let Located {
        driver, mut state, ..
    } = located;
    // A host whose machine vanished (terminated instance) leaves the private state, so
    // the next apply's `Operator::repair` provisions it again in the same zone (it
    // re-provisions every planned host missing from state) and restarts its nodes. Its
    // nodes stay in state and read as `down`: the drift the next plan shows.
    for host in &driver.sync_hosts(&mut state).await? {
        info!(cluster = %args.name, host = %host, "drift: the host's machine is gone");
    }
    let op = configured_operator(ctx, &driver, &args, args.timeouts.update);
    let observation = op.observe(&state).await;
    for d in observation.drift() {
        info!(cluster = %args.name, drift = %d, "drift");
    }
    let (nodes, endpoints) = nodes::observed(&state, &observation);
    let tls_cert_expiry = super::tls::cert_expiry_value(
        &op,
        &state,
        args.tls.is_some(),
        args.tls_cert.as_ref(),
        false,
    );
    let cluster_id = match state.cluster_id.as_str() {
        "" => old.cluster_id.clone(),
        id => Attr::Known(id.to_string()),
    };
    Ok(Some(Applied {
        state: super::tls::with_endpoints(super::monitoring::with_derived(ClusterModel {
            nodes,
            endpoints,
            cluster_id,
            tls_cert_expiry,
            ..old
        })),
        private: Some(state),
    }))
}
