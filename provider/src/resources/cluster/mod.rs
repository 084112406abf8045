//! `resource "redisha_cluster"`: a Redis Cluster placed by the planner and run by a driver.
//!
//! Plan runs the planner (re-planning from the cluster as it is, so few nodes move) and shows
//! where every node will run. Apply creates (or resumes an interrupted create), finishes
//! half-moved slots, repairs proven failures, reconfigures (rolling) and executes the
//! planner's migration steps. Read reports the live cluster so drift shows up. The driver's
//! handles travel in the resource's private state, a cache only: every call first makes it
//! true from the driver and the live cluster (`locate`), so a killed provider loses nothing.
//!
//! One file per operation (`plan`, `create`, `update`, `delete`, `read`, `import`); what they
//! share is here. The schema is `model`; the placement arguments come from `crate::topology`.

pub mod adopt;
pub mod args;
mod create;
mod delete;
pub mod drivers;
mod import;
pub mod locate;
pub mod model;
mod monitoring;
pub mod nodes;
mod operator_rotation;
mod plan;
pub mod private;
mod read;
mod restore;
mod tls;
mod update;
pub mod users;

use std::time::Duration;

use async_trait::async_trait;
use redisha_cluster::{ClusterState, NodeConfig, Operator, Password};
use redisha_planner as planner;
use redisha_planner::{Placement, Request};

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::typed::{ApplyArgs, Outcome, PlanArgs};
use crate::tfplugin::framework::{Applied, Attr, Context, Failed, Planned, Resource};
use crate::topology;

use args::ClusterArgs;
use drivers::BuiltDriver;
use locate::Located;
use model::ClusterModel;

pub const TYPE_NAME: &str = "redisha_cluster";

pub struct ClusterResource;

/// A failed call of this resource.
type Failure = Failed<ClusterModel, ClusterState>;

use args::applied_node_config;

/// A failed operation's diagnostic, pointing at the argument the error names first: cluster
/// and driver errors start with the field at fault (`tls.cert_pem: …` when a supplied
/// certificate does not name an instance's address, `redis_config.<key>: …`, `password: …`),
/// and Terraform then shows that line of the configuration.
fn cluster_error(summary: &str, e: impl std::fmt::Display) -> Diagnostic {
    let text = e.to_string();
    let at = named_attribute(&text);
    let d = Diagnostic::error(summary, text);
    match at {
        Some(path) => d.at(path),
        None => d,
    }
}

/// The attribute of this resource an error's text starts with, if it names one.
fn named_attribute(text: &str) -> Option<AttrPath> {
    let (head, _) = text.split_once(": ")?;
    match head.split_once('.') {
        None if matches!(head, "password" | "tls" | "redis_config") => Some(AttrPath::attr(head)),
        Some(("tls", field)) if matches!(field, "ca_cert_pem" | "cert_pem" | "key_pem") => {
            Some(AttrPath::attr("tls").then(field))
        }
        Some(("redis_config", key)) if !key.is_empty() && !key.contains(' ') => {
            Some(AttrPath::attr("redis_config").key(key))
        }
        _ => None,
    }
}

/// The arguments of a config Terraform sends to apply, which is always fully known.
fn known_args(config: &ClusterModel) -> Result<ClusterArgs, Diagnostics> {
    ClusterArgs::from_model(config)?.ok_or_else(|| {
        Diagnostic::error(
            "Configuration not fully known at apply",
            "Terraform sends known configuration to apply; this is a bug.",
        )
        .into()
    })
}

/// Plans the placement for `request`, re-planning from `prior` so that few nodes move.
pub(crate) fn place(
    request: &Request,
    prior: Option<&ClusterState>,
) -> Result<planner::Plan, Diagnostics> {
    let previous: Option<Placement> = prior
        .map(ClusterState::placement)
        .filter(|p| !p.nodes.is_empty());
    planner::plan(request, previous.as_ref()).map_err(topology::plan_error_diags)
}

/// The `cluster_id` attribute: null for a cluster that has none yet (an import not adopted).
fn id_value(state: &ClusterState) -> Attr<String> {
    if state.cluster_id.is_empty() {
        Attr::Null
    } else {
        Attr::Known(state.cluster_id.clone())
    }
}

/// An operator running nodes with `config` (and also trying `other_password`: a rotation
/// cut short leaves nodes that accept only one of the two), with the call's timeout, the
/// data-loss opt-in and Ctrl-C.
fn operator<'a>(
    ctx: &Context,
    driver: &'a BuiltDriver,
    args: &ClusterArgs,
    config: NodeConfig,
    other_password: Option<Password>,
    timeout: Duration,
) -> Operator<'a> {
    let options = locate::options(ctx, timeout, args.allow_data_loss);
    let mut op = Operator::with_options(driver.driver(), config, options);
    op.also_accept([other_password]);
    op
}

/// An operator running nodes with the configured settings, with the call's timeout.
fn configured_operator<'a>(
    ctx: &Context,
    driver: &'a BuiltDriver,
    args: &ClusterArgs,
    timeout: Duration,
) -> Operator<'a> {
    operator(ctx, driver, args, args.node_config.clone(), None, timeout)
}

/// The cluster a plan or apply works on: a new one (or an interrupted create to resume) when
/// `creating`, else the existing one, made true from the driver and the live cluster. Both
/// passwords are tried: the configured one and the one the prior state was applied with.
async fn locate(
    ctx: &Context,
    args: &ClusterArgs,
    cached: Option<ClusterState>,
    prior: Option<&ClusterModel>,
    creating: bool,
    write: bool,
) -> Result<Located, Diagnostics> {
    if creating {
        return locate::for_create(ctx, args, write).await;
    }
    locate::existing(
        ctx,
        args,
        cached,
        prior.and_then(|p| p.cluster_id.value().map(String::as_str)),
        prior.and_then(|p| applied_node_config(p).password),
        args.node_config.password.clone(),
        write,
    )
    .await
}

/// What recovery and open slots tell the reviewer of a plan.
fn note_warnings(summary: &str, notes: &[String]) -> Diagnostics {
    if notes.is_empty() {
        return Diagnostics::new();
    }
    Diagnostic::warning(summary, notes.join("\n")).into()
}

/// `config` with what the cluster looks like: the state of a plan, an apply or an import.
fn with_cluster(
    config: &ClusterModel,
    name: Attr<String>,
    cluster_id: Attr<String>,
    (nodes, endpoints): nodes::NodesAndEndpoints,
    report: Attr<String>,
) -> ClusterModel {
    tls::with_endpoints(monitoring::with_derived(ClusterModel {
        id: name,
        cluster_id,
        nodes,
        endpoints,
        placement_report: report,
        ..config.clone()
    }))
}

/// The end of a create or update: the state read back from the cluster, or, when `result`
/// failed, what the framework keeps. A failed update keeps the prior attributes; a create
/// that failed part way records what it started (Terraform taints it; the replacement's
/// destroy stops those processes first). Both keep the handles in the private state, so the
/// next apply continues and destroy finds every process.
async fn finish(
    ctx: &Context,
    args: &ClusterArgs,
    config: &ClusterModel,
    creating: bool,
    located: Located,
    result: Result<String, Diagnostics>,
) -> Outcome<ClusterModel, ClusterState> {
    let Located { driver, state, .. } = located;
    let report = match result {
        Ok(report) => report,
        Err(diagnostics) => {
            let nothing_exists = state.nodes.is_empty() && state.hosts.is_empty();
            let partial = (creating && !nothing_exists).then(|| {
                let none = (Attr::Known(Vec::new()), Attr::Known(Vec::new()));
                let name = Attr::Known(args.name.clone());
                with_cluster(config, name, id_value(&state), none, String::new().into())
            });
            return Err(Failure::from(diagnostics)
                .with_state(partial)
                .with_private(state));
        }
    };
    let op = configured_operator(ctx, &driver, args, args.timeouts.update);
    let observation = op.observe(&state).await;
    let name = Attr::Known(args.name.clone());
    let nodes = nodes::observed(&state, &observation);
    let mut new_state = with_cluster(config, name, id_value(&state), nodes, report.into());
    new_state.tls_ca_cert_pem = tls::ca_cert_value(&driver, args.tls.is_some());
    new_state.tls_cert_expiry = tls::cert_expiry_value(
        &op,
        &state,
        args.tls.is_some(),
        args.tls_cert.as_ref(),
        false,
    );
    Ok(Applied {
        state: new_state,
        private: Some(state),
    })
}

#[async_trait]
impl Resource for ClusterResource {
    type Model = ClusterModel;
    type Private = ClusterState;

    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    async fn validate(&self, _ctx: &Context, config: &ClusterModel) -> Diagnostics {
        match ClusterArgs::from_model(config) {
            // The planner's own checks on what is known (the placement data source does the same).
            Ok(Some(a)) if !a.request.zones.is_empty() => topology::validate(&a.request),
            Ok(_) => Diagnostics::new(),
            Err(d) => d,
        }
    }

    /// An imported cluster waits for its configuration to adopt it: a first configuration
    /// that differs from the import's placeholders does not replace it.
    fn replaces(&self, private: Option<&ClusterState>) -> bool {
        private.is_none_or(|p| p.driver != adopt::IMPORTED)
    }

    async fn plan(
        &self,
        ctx: &Context,
        args: PlanArgs<ClusterModel, ClusterState>,
    ) -> Result<Planned<ClusterModel>, Diagnostics> {
        plan::plan(ctx, args).await
    }

    async fn create(
        &self,
        ctx: &Context,
        args: ApplyArgs<ClusterModel, ClusterState>,
    ) -> Outcome<ClusterModel, ClusterState> {
        create::create(ctx, args).await
    }

    async fn update(
        &self,
        ctx: &Context,
        prior: ClusterModel,
        args: ApplyArgs<ClusterModel, ClusterState>,
    ) -> Outcome<ClusterModel, ClusterState> {
        update::update(ctx, prior, args).await
    }

    async fn delete(
        &self,
        ctx: &Context,
        prior: ClusterModel,
        private: Option<ClusterState>,
    ) -> Result<(), Failure> {
        delete::delete(ctx, prior, private).await
    }

    async fn read(
        &self,
        ctx: &Context,
        state: ClusterModel,
        private: Option<ClusterState>,
    ) -> Result<Option<Applied<ClusterModel, ClusterState>>, Failure> {
        read::read(ctx, state, private).await
    }

    async fn import(
        &self,
        _ctx: &Context,
        id: &str,
    ) -> Result<Vec<Applied<ClusterModel, ClusterState>>, Diagnostics> {
        import::import(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_error_points_at_the_argument_it_names() {
        let at = |text: &str| cluster_error("Creating the cluster failed", text).path;
        assert_eq!(
            at("tls.cert_pem: the certificate does not name 10.0.3.7 (instance of host us-east-1c-1); reissue it"),
            Some(AttrPath::attr("tls").then("cert_pem"))
        );
        assert_eq!(
            at("redis_config.maxmemory-policy: refused by redis-server"),
            Some(AttrPath::attr("redis_config").key("maxmemory-policy"))
        );
        assert_eq!(
            at("password: must be non-empty"),
            Some(AttrPath::attr("password"))
        );
        // Not an argument of this resource, or no field named: the diagnostic stays general.
        assert_eq!(at("node s0-m: redis-server did not start: exit 1"), None);
        assert_eq!(at("tls.unknown: x"), None);
        assert_eq!(at("redis_config.a b: x"), None);
        assert_eq!(at("timed out"), None);
    }
}
