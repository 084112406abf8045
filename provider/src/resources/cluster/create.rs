//! ApplyResourceChange for a new cluster: nodes started, the cluster formed, its record
//! marked ready. An interrupted create of the same cluster is resumed.

use redisha_cluster::backup::restore::create_restored;
use redisha_cluster::identity::{ClusterRecord, ClusterStatus};
use redisha_cluster::ClusterState;
use redisha_planner as planner;
use tracing::info;

use crate::tfplugin::diagnostics::Diagnostics;
use crate::tfplugin::framework::typed::{ApplyArgs, Outcome};
use crate::tfplugin::framework::Context;

use super::args::ClusterArgs;
use super::locate::Located;
use super::model::ClusterModel;
use super::{cluster_error, configured_operator, finish, known_args, locate, place};

pub(super) async fn create(
    ctx: &Context,
    a: ApplyArgs<ClusterModel, ClusterState>,
) -> Outcome<ClusterModel, ClusterState> {
    let args = known_args(&a.config)?;
    let mut located = locate(ctx, &args, a.private, None, true, true).await?;
    for note in &located.notes {
        info!(cluster = %args.name, %note, "recovered");
    }
    // The nodes start with the declared users: redisha's from now on.
    located.state.acl_users = Some(
        args.node_config
            .acl
            .users
            .iter()
            .map(|u| u.name.clone())
            .collect(),
    );
    let result = form(ctx, &args, &mut located).await;
    finish(ctx, &args, &a.config, true, located, result).await
}

/// Forms the cluster; the report of its placement.
async fn form(
    ctx: &Context,
    args: &ClusterArgs,
    located: &mut Located,
) -> Result<String, Diagnostics> {
    // The same placement as the plan (and as a create this one resumes): a fresh plan.
    let planned = place(&located.request, None)?;
    let op = configured_operator(ctx, &located.driver, args, args.timeouts.create);
    info!(cluster = %args.name, cluster_id = %located.state.cluster_id, nodes = planned.placement.nodes.len(), "creating cluster");
    // The create's record names this process as its owner; its lease is renewed while the
    // create runs, so an apply elsewhere does not take over a create that is still working.
    let holding = ClusterRecord::new(
        &located.state.cluster_id,
        &args.name,
        ClusterStatus::Creating,
    );
    // A backup to restore is checked whole before any node starts.
    let restoring = super::restore::staged(ctx, args, &located.driver).await?;
    let cancel = op.options().cancel.clone();
    let create = async {
        match &restoring {
            None => op
                .create(&located.request, &planned.placement, &mut located.state)
                .await
                .map_err(|e| cluster_error("Creating the cluster failed", e)),
            Some((staged, loader)) => {
                let route = create_restored(
                    &op,
                    &located.request,
                    &planned.placement,
                    &mut located.state,
                    staged,
                    loader,
                )
                .await
                .map_err(|e| cluster_error("Restoring the cluster failed", e))?;
                info!(cluster = %args.name, backup = %staged.location, ?route, "restored");
                Ok(())
            }
        }
    };
    let created = tokio::select! {
        created = create => created,
        never = redisha_cluster::lease::hold_create(located.driver.driver(), &holding, &cancel) => match never {},
    };
    created.map_err(Diagnostics::from)?;
    located
        .driver
        .publish_endpoint(args.endpoint.as_ref(), None, &located.state)
        .await?;
    let record = ClusterRecord::new(&located.state.cluster_id, &args.name, ClusterStatus::Ready);
    located
        .driver
        .driver()
        .record_cluster(&record)
        .await
        .map_err(|e| Diagnostics::from(cluster_error("Recording the cluster failed", e)))?;
    Ok(planner::report::render_markdown(&planned.report))
}
