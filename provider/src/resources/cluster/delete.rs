//! ApplyResourceChange for a destroy: every process stopped by pid, data removed, hosts
//! removed (or, for aws, every instance carrying the cluster id terminated).

use redisha_cluster::ClusterState;
use tracing::warn;

use crate::tfplugin::diagnostics::{Diagnostic, Diagnostics};
use crate::tfplugin::framework::Context;

use super::args::ClusterArgs;
use super::locate::{self, Located};
use super::model::ClusterModel;
use super::{adopt, applied_node_config, cluster_error, configured_operator, Failure};

pub(super) async fn delete(
    ctx: &Context,
    prior: ClusterModel,
    cached: Option<ClusterState>,
) -> Result<(), Failure> {
    if cached.as_ref().is_some_and(|s| s.driver == adopt::IMPORTED) {
        return Err(Diagnostic::error(
            "The imported cluster was never adopted",
            "redisha has not taken over these processes yet. Run terraform apply with a configuration that describes the cluster to adopt it (then destroy works), or terraform state rm to forget it and leave it running.",
        )
        .into());
    }
    let cluster_id = prior.cluster_id.value().map(String::as_str);
    if cached.is_none() && cluster_id.is_none() {
        // Nothing was ever recorded (a create that made nothing): nothing to remove.
        return Ok(());
    }
    let Ok(Some(args)) = ClusterArgs::from_model(&prior) else {
        return Err(Diagnostic::error(
            "Cannot read the cluster's settings from state",
            "The saved attributes do not decode; remove the processes by hand and `terraform state rm` the resource.",
        )
        .into());
    };
    let password = applied_node_config(&prior).password;
    let password_again = password.clone();
    let located = locate::existing(ctx, &args, cached, cluster_id, password, None, true).await?;
    let Located {
        driver, mut state, ..
    } = located;
    let operator_password = driver.driver().operator_password();
    if let Err(d) =
        super::restore::final_backup(ctx, &args, &state, password_again, operator_password).await
    {
        return Err(Failure::from(d).with_private(state));
    }
    if let Err(d) = driver.withdraw_endpoint(args.endpoint.as_ref()).await {
        return Err(Failure::from(d).with_private(state));
    }
    if let Some(result) = driver.destroy_all(&mut state).await {
        return result.map_err(|d| Failure::from(d).with_private(state));
    }
    let op = configured_operator(ctx, &driver, &args, args.timeouts.delete);
    let mut diagnostics = Diagnostics::new();
    if let Err(e) = op.destroy(&mut state).await {
        diagnostics.push(cluster_error("Destroying the cluster failed", e));
    }
    if !diagnostics.has_errors() {
        for host in std::mem::take(&mut state.hosts) {
            if let Err(e) = driver.driver().remove_host(&host).await {
                warn!(host = %host.name, error = %e, "removing host failed");
                diagnostics.push(cluster_error("Removing a host failed", e));
                state.hosts.push(host);
            }
        }
    }
    if diagnostics.has_errors() {
        return Err(Failure::from(diagnostics).with_private(state));
    }
    Ok(())
}
