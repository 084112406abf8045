//! `resource "redisha_sentinel"`: sentinel mode, one primary with replicas and placed
//! sentinels (see docs/ARCHITECTURE.md for why it is its own resource).
//!
//! Plan runs the planner's sentinel mode and shows its report; for an existing deployment it
//! plans the processes as they should be (the planned primary, every process up), so that a
//! failover or a dead process read from the live deployment shows as a change; the running
//! processes are the planner's previous placement, so a changed shape (replicas, hosts, zones,
//! sentinels) is planned in place and listed. Apply creates, or repairs proven-stopped
//! processes, rotates the data and sentinel passwords, changes the shape, and asks Sentinel to
//! put the planned primary back. The processes' handles travel in the private state.

pub mod args;
mod drivers;
mod locate;
pub mod model;

use async_trait::async_trait;
use redisha_cluster::identity::{ClusterRecord, ClusterStatus};
use redisha_cluster::sentinel::{
    Member, Reshape, SentinelObservation, SentinelOperator, SentinelState,
};
use redisha_cluster::{Operator, Password};
use redisha_planner as planner;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::resources::cluster::args::DriverArgs;
use crate::resources::cluster::drivers::aws_diags;
use crate::resources::cluster::locate as cluster_locate;
use crate::tfplugin::diagnostics::{Diagnostic, Diagnostics};
use crate::tfplugin::framework::typed::{ApplyArgs, Outcome, PlanArgs};
use crate::tfplugin::framework::{Applied, Attr, Context, Failed, Planned, Private, Resource};
use crate::topology;

use args::SentinelArgs;
use drivers::SentinelDriver;
use model::{ProcessValue, SentinelModel};

pub const TYPE_NAME: &str = "redisha_sentinel";

pub struct SentinelResource;

type Failure = Failed<SentinelModel, SentinelPrivate>;

/// The private state: the deployment's id and the driver's handles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelPrivate {
    pub cluster_id: String,
    pub state: SentinelState,
}

const PRIVATE_KEY: &str = "redisha_sentinel";

impl Private for SentinelPrivate {
    fn decode(bytes: &[u8]) -> Option<Self> {
        let json: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        serde_json::from_value(json.get(PRIVATE_KEY)?.clone()).ok()
    }
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ PRIVATE_KEY: self })).unwrap_or_default()
    }
}

fn known_args(config: &SentinelModel) -> Result<SentinelArgs, Diagnostics> {
    SentinelArgs::from_model(config)?.ok_or_else(|| {
        Diagnostic::error(
            "Configuration not fully known at apply",
            "Terraform sends known configuration to apply; this is a bug.",
        )
        .into()
    })
}

fn error(summary: &str, e: impl std::fmt::Display) -> Diagnostics {
    Diagnostic::error(summary, e.to_string()).into()
}

/// Neither private state nor a `cluster_id` attribute: nothing can be proven this resource's.
fn no_id() -> Diagnostics {
    Diagnostic::error(
        "Cannot find the sentinel deployment",
        "The resource has neither private state nor a cluster_id, so redisha cannot tell which processes are its own and touches none. Fix: `terraform state rm` the resource and stop its processes yourself, or restore the state file that has its cluster_id.",
    )
    .into()
}

/// The plan; for a running deployment, with its processes as the previous placement, so
/// that those that still fit stay where they are under their names.
fn place(
    request: &planner::Request,
    running: Option<&SentinelState>,
) -> Result<planner::Plan, Diagnostics> {
    let previous = running.map(SentinelState::placement);
    let sentinels = running
        .map(SentinelState::placed_sentinels)
        .unwrap_or_default();
    planner::plan_with_sentinels(request, previous.as_ref(), &sentinels)
        .map_err(topology::plan_error_diags)
}

/// On aws, every process that may run during the apply (the running ones and the planned
/// ones) has a durable record on the deployment's security group: refused at plan when they
/// could not all fit beside the group's other tags.
fn check_record_room(
    args: &SentinelArgs,
    plan: &planner::Plan,
    running: Option<&SentinelState>,
) -> Result<(), Diagnostics> {
    let DriverArgs::Aws(aws) = &args.driver else {
        return Ok(());
    };
    let planned = plan
        .placement
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.host.as_str(), n.zone.as_str()))
        .chain(plan.sentinel.iter().flat_map(|s| {
            s.sentinels
                .iter()
                .map(|p| (p.name.as_str(), p.host.as_str(), p.zone.as_str()))
        }));
    let current = running.into_iter().flat_map(|s| {
        s.data.iter().chain(&s.sentinels).map(|m| {
            (
                m.handle.name.as_str(),
                m.handle.host.as_str(),
                m.zone.as_str(),
            )
        })
    });
    redisha_aws::sentinel_records::check_record_room(aws.tags.len(), planned.chain(current))
        .map_err(aws_diags)
}

/// What apply changes in the shape of a running deployment to reach `plan`.
fn reshape_of(plan: &planner::Plan, state: &SentinelState) -> Reshape {
    let sentinels = plan
        .sentinel
        .as_ref()
        .map(|s| s.sentinels.as_slice())
        .unwrap_or_default();
    Reshape::between(state, &plan.placement, sentinels)
}

fn report_of(plan: &planner::Plan) -> String {
    plan.sentinel
        .as_ref()
        .map(planner::sentinel::render::render_markdown)
        .unwrap_or_default()
}

fn operator<'a>(
    ctx: &Context,
    driver: &'a SentinelDriver,
    args: &SentinelArgs,
    timeout: std::time::Duration,
    cluster_id: &str,
) -> SentinelOperator<'a> {
    let options = cluster_locate::options(ctx, timeout, false);
    SentinelOperator::new(
        Operator::with_options(driver.driver(), args.node_config.clone(), options),
        args.settings.clone(),
        cluster_id,
    )
    .with_sentinel_password(args.sentinel_password.clone())
}

/// The password the sentinels of `model` use: `sentinel_password`, else `password`.
fn sentinel_password_of(model: &SentinelModel) -> Option<Password> {
    model
        .sentinel_password
        .value()
        .or(model.password.value())
        .map(Password::new)
}

/// Every process as `nodes` shows it: live (from an observation) or as planned (`None`).
fn processes(state: &SentinelState, seen: Option<&SentinelObservation>) -> Vec<ProcessValue> {
    let mut out = Vec::new();
    for m in &state.data {
        let (role, status) = match seen {
            None => (
                if m.planned_primary {
                    "primary"
                } else {
                    "replica"
                },
                "up",
            ),
            Some(o) => match o.data.iter().find(|d| d.name == m.handle.name) {
                Some(d) if d.up => (
                    if o.primary.as_deref() == Some(d.address.as_str()) {
                        "primary"
                    } else {
                        "replica"
                    },
                    "up",
                ),
                _ => ("replica", "down"),
            },
        };
        out.push(process(m, "data", role, status));
    }
    for m in &state.sentinels {
        let up = seen.is_none_or(|o| o.sentinels.iter().any(|s| s.name == m.handle.name && s.up));
        out.push(process(
            m,
            "sentinel",
            "sentinel",
            if up { "up" } else { "down" },
        ));
    }
    out
}

fn process(m: &Member, kind: &str, role: &str, status: &str) -> ProcessValue {
    ProcessValue {
        name: m.handle.name.clone().into(),
        kind: kind.to_string().into(),
        address: m.address().into(),
        role: role.to_string().into(),
        status: status.to_string().into(),
        zone: m.zone.clone().into(),
        host: m.handle.host.clone().into(),
    }
}

/// The end of a successful create or update: the deployment as it runs now.
async fn applied(
    op: &SentinelOperator<'_>,
    config: &SentinelModel,
    args: &SentinelArgs,
    private: SentinelPrivate,
    plan: &planner::Plan,
) -> Outcome<SentinelModel, SentinelPrivate> {
    let seen = op.observe(&private.state).await;
    Ok(Applied {
        state: with_deployment(config, args, &private, Some(&seen), report_of(plan)),
        private: Some(private),
    })
}

/// `config` with what the deployment looks like (live when `seen`, else as planned).
fn with_deployment(
    config: &SentinelModel,
    args: &SentinelArgs,
    private: &SentinelPrivate,
    seen: Option<&SentinelObservation>,
    report: String,
) -> SentinelModel {
    let planned_primary = private.state.planned_primary().map(Member::address);
    let primary = match seen {
        Some(o) => o.primary.clone().unwrap_or_default(),
        None => planned_primary.unwrap_or_default(),
    };
    SentinelModel {
        id: Attr::Known(args.name.clone()),
        cluster_id: Attr::Known(private.cluster_id.clone()),
        primary: Attr::Known(primary),
        master_name: Attr::Known(args.settings.master_name.clone()),
        sentinel_addresses: Attr::Known(
            private
                .state
                .sentinels
                .iter()
                .map(Member::address)
                .collect(),
        ),
        nodes: Attr::Known(processes(&private.state, seen)),
        placement_report: Attr::Known(report),
        ..config.clone()
    }
}

/// The planned state of a deployment whose shape changes: the processes it keeps, and the
/// new ones with their addresses known after apply.
fn reshaped(planned: &mut SentinelModel, state: &SentinelState, change: &Reshape) {
    let primary_name = change
        .new_planned_primary
        .clone()
        .or_else(|| state.planned_primary().map(|m| m.handle.name.clone()));
    let role = |name: &str| {
        if Some(name) == primary_name.as_deref() {
            "primary"
        } else {
            "replica"
        }
    };
    let mut nodes = Vec::new();
    for m in &state.data {
        if !change.remove_data.contains(&m.handle.name) {
            nodes.push(process(m, "data", role(&m.handle.name), "up"));
        }
    }
    for n in &change.add_data {
        nodes.push(new_process(
            &n.name,
            "data",
            role(&n.name),
            &n.zone,
            &n.host,
        ));
    }
    for m in &state.sentinels {
        if !change.remove_sentinels.contains(&m.handle.name) {
            nodes.push(process(m, "sentinel", "sentinel", "up"));
        }
    }
    for s in &change.add_sentinels {
        nodes.push(new_process(
            &s.name, "sentinel", "sentinel", &s.zone, &s.host,
        ));
    }
    planned.nodes = Attr::Known(nodes);
    if !(change.add_sentinels.is_empty() && change.remove_sentinels.is_empty()) {
        planned.sentinel_addresses = Attr::Unknown;
    }
    let kept_primary = state
        .data
        .iter()
        .find(|m| Some(&m.handle.name) == primary_name.as_ref());
    planned.primary = match kept_primary {
        Some(m) => Attr::Known(m.address()),
        None => Attr::Unknown,
    };
}

fn new_process(name: &str, kind: &str, role: &str, zone: &str, host: &str) -> ProcessValue {
    ProcessValue {
        name: name.to_string().into(),
        kind: kind.to_string().into(),
        address: Attr::Unknown,
        role: role.to_string().into(),
        status: "up".to_string().into(),
        zone: zone.to_string().into(),
        host: host.to_string().into(),
    }
}

#[async_trait]
impl Resource for SentinelResource {
    type Model = SentinelModel;
    type Private = SentinelPrivate;

    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    async fn validate(&self, _ctx: &Context, config: &SentinelModel) -> Diagnostics {
        match SentinelArgs::from_model(config) {
            // On aws the zones come from the subnets: the planner checks them at plan.
            Ok(Some(a)) if !a.request.zones.is_empty() => topology::validate(&a.request),
            Ok(_) => Diagnostics::new(),
            Err(d) => d,
        }
    }

    async fn plan(
        &self,
        ctx: &Context,
        args: PlanArgs<SentinelModel, SentinelPrivate>,
    ) -> Result<Planned<SentinelModel>, Diagnostics> {
        let Some(a) = SentinelArgs::from_model(&args.config)? else {
            return Ok(Planned {
                state: args.proposed,
                diagnostics: Diagnostics::new(),
            });
        };
        // Without private state (a provider killed mid-apply drops it) the driver still
        // finds the processes by the deployment's id.
        let recovered = match (&args.private, &args.prior, args.creating()) {
            (None, Some(prior), false) => match locate::existing_id(None, prior.cluster_id.value())
            {
                Some(id) => {
                    let (driver, _) = drivers::build(ctx, &a, Some(&id), None).await?;
                    let op = operator(ctx, &driver, &a, a.timeouts.update, &id);
                    Some(locate::recovered(&op, None, &id).await?)
                }
                None => None,
            },
            _ => None,
        };
        let running = match (&args.private, args.creating()) {
            (Some(private), false) => Some(private),
            _ => recovered.as_ref(),
        };
        let (_, request) = drivers::build(ctx, &a, None, running.map(|p| &p.state)).await?;
        let plan = place(&request, running.map(|p| &p.state))?;
        check_record_room(&a, &plan, running.map(|p| &p.state))?;
        let mut diagnostics = Diagnostics::new();
        for w in &plan.warnings {
            diagnostics.push(Diagnostic::warning("Sentinel placement", w.clone()));
        }
        let report = report_of(&plan);
        let state = match running {
            Some(private) => {
                let mut state = with_deployment(&args.config, &a, private, None, report);
                let change = reshape_of(&plan, &private.state);
                if !change.is_empty() {
                    diagnostics.push(Diagnostic::warning(
                        "The deployment changes shape in place",
                        change.describe().join("\n"),
                    ));
                    reshaped(&mut state, &private.state, &change);
                }
                state
            }
            _ => SentinelModel {
                id: Attr::Known(a.name.clone()),
                master_name: Attr::Known(a.settings.master_name.clone()),
                placement_report: Attr::Known(report),
                ..args.proposed
            },
        };
        Ok(Planned { state, diagnostics })
    }

    async fn create(
        &self,
        ctx: &Context,
        a: ApplyArgs<SentinelModel, SentinelPrivate>,
    ) -> Outcome<SentinelModel, SentinelPrivate> {
        let args = known_args(&a.config)?;
        let (cluster_id, resuming) = match a.private {
            Some(p) if !p.cluster_id.is_empty() => (p.cluster_id, false),
            _ => locate::id_for_create(ctx, &args).await?,
        };
        let (driver, request) = drivers::build(ctx, &args, Some(&cluster_id), None).await?;
        let plan = place(&request, None)?;
        let sentinel = plan
            .sentinel
            .clone()
            .ok_or_else(|| error("No sentinel plan", "the planner placed no sentinels"))?;
        // The record comes before any process: a create killed from here on is found and
        // resumed by the next apply (Terraform records nothing for it).
        locate::record(driver.driver(), &args, &cluster_id, ClusterStatus::Creating).await?;
        let op = operator(ctx, &driver, &args, args.timeouts.create, &cluster_id);
        let mut private = if resuming {
            locate::recovered(&op, None, &cluster_id).await?
        } else {
            SentinelPrivate {
                cluster_id: cluster_id.clone(),
                state: SentinelState::default(),
            }
        };
        info!(name = %args.name, %cluster_id, resuming, "creating sentinel deployment");
        let holding = ClusterRecord::new(&cluster_id, &args.name, ClusterStatus::Creating);
        let cancel = op.operator().options().cancel.clone();
        let created = tokio::select! {
            created = op.create(
                &request,
                &plan.placement,
                &sentinel.sentinels,
                &mut private.state,
            ) => created,
            never = redisha_cluster::lease::hold_create(driver.driver(), &holding, &cancel) => match never {},
        };
        if let Err(e) = created {
            return Err(
                Failure::from(error("Creating the sentinel deployment failed", e))
                    .with_private(private),
            );
        }
        locate::record(driver.driver(), &args, &cluster_id, ClusterStatus::Ready).await?;
        applied(&op, &a.config, &args, private, &plan).await
    }

    async fn update(
        &self,
        ctx: &Context,
        prior: SentinelModel,
        a: ApplyArgs<SentinelModel, SentinelPrivate>,
    ) -> Outcome<SentinelModel, SentinelPrivate> {
        let args = known_args(&a.config)?;
        let Some(cluster_id) = locate::existing_id(a.private.as_ref(), prior.cluster_id.value())
        else {
            return Err(no_id().into());
        };
        let (driver, _) = drivers::build(
            ctx,
            &args,
            Some(&cluster_id),
            a.private.as_ref().map(|p| &p.state),
        )
        .await?;
        let mut private = {
            let op = operator(ctx, &driver, &args, args.timeouts.update, &cluster_id);
            locate::recovered(&op, a.private, &cluster_id).await?
        };
        // The request again, from what runs (on aws, the hosts found stay candidates).
        let (driver, request) =
            drivers::build(ctx, &args, Some(&cluster_id), Some(&private.state)).await?;
        let plan = place(&request, Some(&private.state))?;
        let change = reshape_of(&plan, &private.state);
        let old_password = prior.password.value().map(Password::new);
        let mut op = operator(ctx, &driver, &args, args.timeouts.update, &cluster_id);
        // Both passwords work to connect: a rotation cut short leaves either.
        let rotating = old_password != args.node_config.password;
        let old_sentinel_password = sentinel_password_of(&prior);
        let rotating_sentinels = old_sentinel_password.as_ref() != op.sentinel_password();
        op.also_accept_on_sentinels([old_sentinel_password]);
        let result = async {
            // Lost machines and stopped processes first: a rotation needs every process to
            // answer, and a sentinel restarts from its own file with the passwords it had.
            let replaced = op.replace_lost_hosts(&request, &mut private.state).await?;
            let repaired = op.repair_replaced(&mut private.state, &replaced).await?;
            for action in &repaired.actions {
                info!(name = %args.name, %action, "repaired");
            }
            if rotating {
                op.rotate_password(&private.state, old_password.clone())
                    .await?;
            }
            // Sentinels made before they had a password get theirs too.
            if rotating_sentinels
                || !op
                    .sentinels_without_password(&private.state)
                    .await
                    .is_empty()
            {
                op.rotate_sentinel_password(&private.state).await?;
            }
            op.reshape(&request, &change, &mut private.state).await?;
            op.apply_sentinel_settings(&private.state).await?;
            if op.restore_primary(&private.state).await? {
                info!(name = %args.name, "the planned primary is back");
            }
            op.settle(&private.state).await?;
            Ok::<_, redisha_cluster::ClusterError>(())
        }
        .await;
        if let Err(e) = result {
            return Err(
                Failure::from(error("Updating the sentinel deployment failed", e))
                    .with_private(private),
            );
        }
        applied(&op, &a.config, &args, private, &plan).await
    }

    async fn delete(
        &self,
        ctx: &Context,
        prior: SentinelModel,
        private: Option<SentinelPrivate>,
    ) -> Result<(), Failure> {
        let args = known_args(&prior)?;
        // Without an id there is nothing this resource can prove its own.
        let Some(cluster_id) = locate::existing_id(private.as_ref(), prior.cluster_id.value())
        else {
            return Ok(());
        };
        let (driver, _) = drivers::build(
            ctx,
            &args,
            Some(&cluster_id),
            private.as_ref().map(|p| &p.state),
        )
        .await?;
        let mut private = {
            let op = operator(ctx, &driver, &args, args.timeouts.delete, &cluster_id);
            locate::recovered(&op, private, &cluster_id).await?
        };
        if let Some(done) = driver.destroy_all(&private.state).await {
            return done.map_err(|d| Failure::from(d).with_private(private));
        }
        let op = operator(ctx, &driver, &args, args.timeouts.delete, &cluster_id);
        if let Err(e) = op.destroy(&mut private.state).await {
            return Err(
                Failure::from(error("Destroying the sentinel deployment failed", e))
                    .with_private(private),
            );
        }
        Ok(())
    }

    async fn read(
        &self,
        ctx: &Context,
        state: SentinelModel,
        private: Option<SentinelPrivate>,
    ) -> Result<Option<Applied<SentinelModel, SentinelPrivate>>, Failure> {
        let Ok(Some(args)) = SentinelArgs::from_model(&state) else {
            return Ok(Some(Applied { state, private }));
        };
        let Some(cluster_id) = locate::existing_id(private.as_ref(), state.cluster_id.value())
        else {
            return Ok(Some(Applied { state, private }));
        };
        let (driver, _) = drivers::build(
            ctx,
            &args,
            Some(&cluster_id),
            private.as_ref().map(|p| &p.state),
        )
        .await?;
        let op = operator(ctx, &driver, &args, args.timeouts.update, &cluster_id);
        let private = locate::recovered(&op, private, &cluster_id).await?;
        let seen = op.observe(&private.state).await;
        let report = state.placement_report.value().cloned().unwrap_or_default();
        Ok(Some(Applied {
            state: with_deployment(&state, &args, &private, Some(&seen), report),
            private: Some(private),
        }))
    }
}
