//! PlanResourceChange for a create or update: where every node will run, checked before
//! anything starts (a destroy's plan is the framework's).

use redisha_planner as planner;

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::typed::PlanArgs;
use crate::tfplugin::framework::{Attr, Context, Planned};

use super::args::{ClusterArgs, DriverArgs};
use super::locate::Located;
use super::model::ClusterModel;
use super::{
    applied_node_config, cluster_error, id_value, locate, nodes, note_warnings, operator, place,
    with_cluster,
};
use redisha_cluster::ClusterState;

pub(super) async fn plan(
    ctx: &Context,
    a: PlanArgs<ClusterModel, ClusterState>,
) -> Result<Planned<ClusterModel>, Diagnostics> {
    let creating = a.creating();
    let Some(args) = ClusterArgs::from_model(&a.config)? else {
        // Something in the config is only known at apply: so is everything computed.
        let cluster_id = match a.prior.as_ref().map(|p| &p.cluster_id) {
            Some(Attr::Known(id)) if !creating => Attr::Known(id.clone()),
            _ => Attr::Unknown,
        };
        let unknown = (Attr::Unknown, Attr::Unknown);
        let mut state = with_cluster(
            &a.config,
            a.config.name.clone(),
            cluster_id,
            unknown,
            Attr::Unknown,
        );
        if !a.config.tls.is_null() {
            state.tls_ca_cert_pem = Attr::Unknown;
            state.tls_cert_expiry = Attr::Unknown;
        }
        return Ok(Planned {
            state,
            diagnostics: Diagnostics::new(),
        });
    };
    let mut diagnostics = Diagnostics::new();
    let prior = a.prior.as_ref();
    let located = locate(ctx, &args, a.private, prior, creating, false).await?;
    diagnostics.extend(note_warnings(
        if creating {
            "Resuming an interrupted create"
        } else {
            "The state was rebuilt from the running cluster"
        },
        &located.notes,
    ));
    let Located {
        driver,
        request,
        state: current,
        ..
    } = located;
    let planned = place(&request, (!creating).then_some(&current))?;
    for w in &planned.warnings {
        diagnostics.push(Diagnostic::warning("Placement warning", w.clone()));
    }

    // What apply needs (binary, free ports, writable data dir), checked before anything starts.
    let op = operator(
        ctx,
        &driver,
        &args,
        args.node_config.clone(),
        prior.and_then(|p| applied_node_config(p).password),
        args.timeouts.create,
    );
    // Slots a killed apply left half-moved: apply finishes them before anything else.
    let mut slots_in_flight = false;
    if !creating {
        let open: Vec<String> = op
            .open_slots(&current)
            .await
            .map_err(|e| Diagnostics::from(cluster_error("Cannot read the open slots", e)))?
            .iter()
            .map(ToString::to_string)
            .collect();
        slots_in_flight = !open.is_empty();
        diagnostics.extend(note_warnings(
            "Apply resumes an interrupted migration",
            &open,
        ));
    }
    let mut replacing = std::collections::BTreeSet::new();
    if !creating {
        diagnostics.extend(engine_change(&op, &current).await?);
        diagnostics.extend(super::tls::plan_change(
            prior.and_then(super::tls::applied_mode),
            args.tls,
            matches!(args.driver, super::args::DriverArgs::Aws(_)),
        )?);
        diagnostics.extend(super::tls::plan_certs(
            &op,
            &current,
            args.tls_cert.is_some(),
        ));
        if let Some(p) = prior {
            diagnostics.extend(
                super::users::foreign_warning(&op, &current, &applied_node_config(p).acl).await,
            );
        }
        let (said, hosts) = host_change(&op, &current).await?;
        diagnostics.extend(said);
        replacing = hosts;
    }
    if creating {
        // A damaged or mismatched backup is refused here, before anything starts.
        if let Some((staged, _)) = super::restore::staged(ctx, &args, &driver).await? {
            diagnostics.push(Diagnostic::warning(
                "Restoring from a backup",
                format!(
                    "{}: {} keys in {} shards from {} (backup {}), checked",
                    staged.location,
                    staged.manifest.total_keys(),
                    staged.manifest.shards.len(),
                    staged.manifest.engine,
                    staged.manifest.backup_id
                ),
            ));
        }
    }
    // A wrong hosted zone fails here, before any instance is launched.
    driver.check_endpoint(args.endpoint.as_ref()).await?;
    if let Err(e) = op.preflight(&request, &planned.placement, &current).await {
        return Err(cluster_error("The cluster cannot be started here", e)
            .at(preflight_path(&args))
            .into());
    }

    let prior_nodes = match prior {
        Some(p) if !a.replacing => p.nodes.value().map_or(&[][..], Vec::as_slice),
        _ => &[],
    };
    let (nodes, endpoints) = nodes::on_new_machines(
        &replacing,
        nodes::planned(&request, &planned.placement, &current, prior_nodes, &driver),
    );
    // A supplied certificate must name every node it will serve.
    diagnostics.extend(super::tls::check_supplied(
        args.tls_cert.as_ref(),
        prior.filter(|_| !creating),
        &nodes,
        matches!(args.driver, DriverArgs::Aws(_)),
    )?);
    // While slots are half-moved, who serves them settles as the cluster gossips (and as
    // apply finishes them), so the slot layout is only known after apply: a value planned
    // now could differ from Terraform's second plan at apply time.
    let nodes = if slots_in_flight {
        Attr::Unknown
    } else {
        nodes
    };
    let report = planner::report::render_markdown(&planned.report);
    // A new cluster (or one of an older state) gets its id at apply.
    let planned_id = match id_value(&current) {
        Attr::Null => Attr::Unknown,
        known => known,
    };
    let mut state = with_cluster(
        &a.config,
        Attr::Known(args.name.clone()),
        planned_id,
        (nodes, endpoints),
        report.into(),
    );
    state.tls_ca_cert_pem = super::tls::ca_cert_value(&driver, args.tls.is_some());
    state.tls_cert_expiry = super::tls::cert_expiry_value(
        &op,
        &current,
        args.tls.is_some(),
        args.tls_cert.as_ref(),
        creating || !op.certs_due(&current).is_empty(),
    );
    Ok(Planned { state, diagnostics })
}

/// The attribute a preflight failure most likely points at.
fn preflight_path(args: &ClusterArgs) -> AttrPath {
    match args.driver {
        DriverArgs::Local(_) => AttrPath::attr("local"),
        DriverArgs::Aws(_) => AttrPath::attr("aws"),
    }
}

/// What an engine roll would do: a warning naming each node's current and target engine, or
/// an error at `local.redis_server` when the roll cannot work. A node that does not answer now
/// says nothing here: apply repairs it before the roll, and the roll checks again.
async fn engine_change(
    op: &redisha_cluster::Operator<'_>,
    current: &redisha_cluster::ClusterState,
) -> Result<Diagnostics, Diagnostics> {
    let change = match op.engine_change(current).await {
        Ok(Some(change)) => change,
        Ok(None) => return Ok(Diagnostics::new()),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the nodes' engines at plan");
            return Ok(Diagnostics::new());
        }
    };
    let pending = change.pending();
    if pending.is_empty() {
        return Ok(Diagnostics::new());
    }
    let path = crate::tfplugin::diagnostics::AttrPath::attr("local").then("redis_server");
    if let Some(why) = &change.refusal {
        return Err(Diagnostic::error(
            format!("The cluster cannot be rolled onto {}", change.target),
            format!("{why}. Nothing was changed."),
        )
        .at(path)
        .into());
    }
    let lines: Vec<String> = change
        .nodes
        .iter()
        .filter(|(n, _)| pending.contains(n))
        .map(|(n, running)| format!("{n}: {running} -> {}", change.target))
        .collect();
    Ok(Diagnostic::warning(
        format!("Apply rolls {} node(s) onto {}", lines.len(), change.target),
        format!(
            "replicas first, then each shard's master after a coordinated failover to an upgraded replica; planned roles are restored at the end:\n{}",
            lines.join("\n")
        ),
    )
    .at(path)
    .into())
}

/// What a host roll would do (aws: instances on another AMI or package than `aws` says now):
/// a warning naming each instance's current and target image, with the hosts it replaces, or
/// an error at `aws.ami` when replacing them one at a time would take a shard down.
async fn host_change(
    op: &redisha_cluster::Operator<'_>,
    current: &redisha_cluster::ClusterState,
) -> Result<(Diagnostics, std::collections::BTreeSet<String>), Diagnostics> {
    let change = op
        .host_change(current)
        .await
        .map_err(|e| Diagnostics::from(cluster_error("Cannot read what the hosts run", e)))?;
    let hosts = change.hosts.iter().map(|h| h.host.clone()).collect();
    if change.hosts.is_empty() {
        return Ok((Diagnostics::new(), hosts));
    }
    let path = AttrPath::attr("aws").then("ami");
    if let Some(why) = &change.refusal {
        return Err(Diagnostic::error(
            "The instances cannot be replaced",
            format!("{why}. Nothing was changed."),
        )
        .at(path)
        .into());
    }
    let lines: Vec<String> = change
        .hosts
        .iter()
        .map(|h| format!("{}: {} -> {}", h.host, h.running, h.target))
        .collect();
    let said = Diagnostic::warning(
        format!("Apply replaces {} instance(s), one at a time", lines.len()),
        format!(
            "instances holding only replicas first; each master on an instance first fails over to a replica on another instance, then the instance is terminated and launched again with the same nodes, which resynchronise before the next; planned roles are restored:\n{}",
            lines.join("\n")
        ),
    )
    .at(path);
    Ok((said.into(), hosts))
}
