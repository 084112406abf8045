//! ApplyResourceChange for an existing cluster: half-moved slots finished, proven failures
//! repaired, node settings rolled out, then the planner's migration steps.

use redisha_cluster::ClusterState;
use redisha_planner as planner;
use tracing::info;

use crate::tfplugin::diagnostics::Diagnostics;
use crate::tfplugin::framework::typed::{ApplyArgs, Outcome};
use crate::tfplugin::framework::Context;

use super::args::ClusterArgs;
use super::locate::Located;
use super::model::ClusterModel;
use super::{applied_node_config, cluster_error, finish, known_args, locate, operator, place};

pub(super) async fn update(
    ctx: &Context,
    prior: ClusterModel,
    a: ApplyArgs<ClusterModel, ClusterState>,
) -> Outcome<ClusterModel, ClusterState> {
    let args = known_args(&a.config)?;
    let mut located = locate(ctx, &args, a.private, Some(&prior), false, true).await?;
    // A cluster made before the operator user existed gets it now (converge_acl), of the
    // configured generation (aws: made once the cluster first declares users or switches
    // `default` off).
    if located.driver.make_operator_password(&args).await? {
        located
            .driver
            .record_operator_generation(args.operator_password_generation)
            .await?;
    }
    // A rotation of that password under way is finished, or one started (converge_acl).
    located
        .driver
        .prepare_operator_rotation(args.operator_password_generation)
        .await?;
    for note in &located.notes {
        info!(cluster = %args.name, %note, "recovered");
    }
    let result = converge(ctx, &args, &prior, &mut located).await;
    finish(ctx, &args, &a.config, false, located, result).await
}

/// Brings the cluster to the configuration; the report of the new placement.
async fn converge(
    ctx: &Context,
    args: &ClusterArgs,
    prior: &ClusterModel,
    located: &mut Located,
) -> Result<String, Diagnostics> {
    let Located {
        driver,
        request,
        state,
        ..
    } = located;
    // The operator starts from the settings the cluster runs with; reconfigure rolls the
    // new ones out. Both passwords are tried: a rotation may have been cut short.
    let applied = applied_node_config(prior);
    let rules_changed = super::users::rules_changed(&applied.acl, &args.node_config.acl);
    // The users the prior state declared are redisha's even if the private state that
    // remembers them was lost.
    state.acl_users = Some(super::users::ours(state.acl_users.as_ref(), &applied.acl));
    let mut op = operator(
        ctx,
        driver,
        args,
        applied,
        args.node_config.password.clone(),
        args.timeouts.update,
    );

    // Hosts whose machine is gone (a terminated instance) leave the state here too, not
    // only at read, so `apply -refresh=false` also replaces them (see `read`).
    driver.sync_hosts(state).await?;
    // Half-moved slots first: nothing may fail over while a slot is open.
    let finished = op.finish_open_slots(state).await.map_err(|e| {
        Diagnostics::from(cluster_error(
            "Finishing an interrupted migration failed",
            e,
        ))
    })?;
    for action in &finished {
        info!(cluster = %args.name, %action, "open slots");
    }
    // Drift next: every node up, replicas attached, planned masters back in place, so the
    // migration starts from the plan in state.
    let repaired = op
        .repair(request, state)
        .await
        .map_err(|e| Diagnostics::from(cluster_error("Repairing the cluster failed", e)))?;
    for action in &repaired.actions {
        info!(cluster = %args.name, %action, "repair");
    }
    // A new server binary: nodes on another engine restart on it, one shard copy at a time.
    op.roll_engine(state)
        .await
        .map_err(|e| Diagnostics::from(cluster_error("Changing the engine failed", e)))?;
    // A new AMI or engine package (aws): instances replaced one at a time.
    let replaced = op
        .roll_hosts(request, state)
        .await
        .map_err(|e| Diagnostics::from(cluster_error("Replacing the instances failed", e)))?;
    if !replaced.is_empty() {
        info!(cluster = %args.name, hosts = ?replaced, "replaced onto the new image");
    }
    // ACL users (and the operator user on a cluster made before it existed) before the
    // password: with the operator user in place, a password rotation leaves replication alone.
    op.set_acl(args.node_config.acl.clone());
    op.converge_acl(state, rules_changed)
        .await
        .map_err(|e| Diagnostics::from(cluster_error("Changing the ACL users failed", e)))?;
    let mut wanted = args.node_config.clone();
    wanted.acl = op.config().acl.clone();
    if op.config() != &wanted {
        op.reconfigure(state, wanted).await.map_err(|e| {
            Diagnostics::from(cluster_error("Changing the node settings failed", e))
        })?;
    }
    // `preferred` <-> `required`: the driver writes the new mode; nodes still in the old one
    // restart, replicas first. On aws the security group follows, around the roll: the
    // plain-text ports are opened before it (preferred) and closed only after it (required),
    // so no client loses a port a node still serves. A roll cut short leaves them open; the
    // next apply, whose prior state still has the old mode, rolls on and then closes them.
    if let Some(mode) = args.tls {
        let switching = super::tls::applied_mode(prior) != Some(mode);
        if switching {
            driver.sync_plain_ports(false).await?;
            op.roll_tls_mode(state, mode)
                .await
                .map_err(|e| Diagnostics::from(cluster_error("Changing the TLS mode failed", e)))?;
            driver.sync_plain_ports(true).await?;
        }
    }
    // Node certificates close to expiry: reissued, their nodes restarted one by one.
    op.rotate_certs(state).await.map_err(|e| {
        Diagnostics::from(cluster_error("Reissuing the node certificates failed", e))
    })?;
    let planned = place(request, Some(state))?;
    // Steps ordered so that no host ever runs more nodes than it has room for (a removal
    // comes first where a host is full).
    let room: std::collections::HashMap<String, u32> = request
        .zones
        .iter()
        .flat_map(|z| z.hosts.iter().map(|h| (h.name.clone(), h.max_nodes)))
        .collect();
    let current = state.placement();
    let steps =
        planner::migrate_room::steps_within(&current, &planned.placement, &room).map_err(|e| {
            Diagnostics::from(cluster_error("No safe migration to the new placement", e))
        })?;
    if !steps.is_empty() {
        info!(cluster = %args.name, steps = steps.len(), "migrating");
    }
    op.update(request, &planned.placement, &steps, state)
        .await
        .map_err(|e| Diagnostics::from(cluster_error("Changing the cluster failed", e)))?;
    // A `metrics` block added or removed: nodes that kept running get or lose their exporter.
    driver.sync_exporters(state, &args.node_config).await?;
    // The configuration endpoint follows replaced instances (and a renamed or removed block).
    let prior_endpoint = ClusterArgs::from_model(prior)
        .ok()
        .flatten()
        .and_then(|p| p.endpoint);
    driver
        .publish_endpoint(args.endpoint.as_ref(), prior_endpoint.as_ref(), state)
        .await?;
    Ok(planner::report::render_markdown(&planned.report))
}
