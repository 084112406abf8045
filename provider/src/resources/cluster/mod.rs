//! `resource "redisha_cluster"`: a Redis Cluster placed by the planner and run by a driver.
//!
//! Plan runs the planner (re-planning from the cluster as it is, so few nodes move) and shows
//! where every node will run. Apply creates (or resumes an interrupted create), finishes
//! half-moved slots, repairs proven failures, reconfigures (rolling) and executes the
//! planner's migration steps. Read reports the live cluster so drift shows up. The driver's
//! handles travel in the resource's private state, a cache only: every call first makes it
//! true from the driver and the live cluster (`locate`), so a killed provider loses nothing.

pub mod adopt;
pub mod args;
pub mod drivers;
pub mod locate;
pub mod nodes;
pub mod private;
pub mod schema;

use std::collections::BTreeMap;

use async_trait::async_trait;
use redisha_cluster::identity::{ClusterRecord, ClusterStatus};
use redisha_cluster::{ClusterState, NodeConfig, Options, Password};
use redisha_planner as planner;
use redisha_planner::{Placement, Request};
use tracing::{info, warn};

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::{
    ApplyRequest, ApplyResponse, Context, Imported, PlanRequest, PlanResponse, ReadResponse,
    RawResource,
};
use crate::tfplugin::schema::Schema;
use crate::tfplugin::value::Value;

use args::ClusterArgs;
use locate::Located;

pub const TYPE_NAME: &str = "redisha_cluster";

pub struct ClusterResource;

/// The node settings a state was applied with: its password and redis_config attributes.
fn node_config_of(state: &Value) -> NodeConfig {
    NodeConfig {
        password: state.get("password").as_str().map(Password::new),
        redis_config: state
            .get("redis_config")
            .as_map()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn planner_diags(e: planner::error::PlanError) -> Diagnostics {
    use planner::error::PlanError as E;
    match e {
        E::Invalid(v) => {
            v.0.iter()
                .map(|fe| {
                    let path = crate::data_sources::placement::hcl_path(&fe.path);
                    Diagnostic::error(format!("Invalid {path}"), format!("{path}: {}", fe.message))
                        .at(path)
                })
                .collect()
        }
        E::Infeasible { constraint, fix } => Diagnostic::error(
            "No placement meets the constraints",
            format!("{constraint}\nFix: {fix}"),
        )
        .into(),
        E::Parse(msg) => Diagnostic::error("Invalid placement request", msg).into(),
    }
}

fn cluster_error(summary: &str, e: impl std::fmt::Display) -> Diagnostic {
    Diagnostic::error(summary, e.to_string())
}

/// Plans the placement for `request`, re-planning from `prior` so that few nodes move.
pub(crate) fn place(
    request: &Request,
    prior: Option<&ClusterState>,
) -> Result<planner::Plan, Diagnostics> {
    let previous: Option<Placement> = prior
        .map(ClusterState::placement)
        .filter(|p| !p.nodes.is_empty());
    planner::plan(request, previous.as_ref()).map_err(planner_diags)
}

/// The attributes of a state: config as written plus what the cluster looks like.
fn state_value(config: &Value, computed: BTreeMap<String, Value>) -> Value {
    schema::schema().block.fill(config, computed)
}

fn computed_attrs(
    name: &str,
    cluster_id: Value,
    nodes: Value,
    endpoints: Value,
    report: Value,
) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("id".to_string(), Value::from(name)),
        ("cluster_id".to_string(), cluster_id),
        ("nodes".to_string(), nodes),
        ("endpoints".to_string(), endpoints),
        ("placement_report".to_string(), report),
    ])
}

/// The `cluster_id` attribute: null for a cluster that has none yet (an import not adopted).
fn id_value(state: &ClusterState) -> Value {
    if state.cluster_id.is_empty() {
        Value::Null
    } else {
        Value::from(state.cluster_id.as_str())
    }
}

/// The cluster a plan or apply works on: a new one (or an interrupted create to resume) when
/// `creating`, else the existing one, made true from the driver and the live cluster. Both
/// passwords are tried: the configured one and the one the prior state was applied with.
async fn locate(
    ctx: &Context,
    args: &ClusterArgs,
    cached: Option<ClusterState>,
    prior_state: &Value,
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
        prior_state,
        node_config_of(prior_state).password,
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

impl ClusterResource {
    async fn do_plan(&self, ctx: &Context, req: PlanRequest) -> Result<PlanResponse, Diagnostics> {
        if req.proposed_new_state.is_null() {
            return Ok(PlanResponse {
                planned_state: Value::Null,
                requires_replace: Vec::new(),
                planned_private: req.prior_private,
                diagnostics: Diagnostics::new(),
            });
        }
        let cached = private::decode(&req.prior_private);
        let imported = cached.as_ref().is_some_and(|p| p.driver == adopt::IMPORTED);
        let mut requires_replace = Vec::new();
        if !req.prior_state.is_null() && !imported {
            for attr in ["name", "local", "aws"] {
                if req.prior_state.get(attr) != req.config.get(attr) {
                    requires_replace.push(AttrPath::attr(attr));
                }
            }
        }
        let replacing = !requires_replace.is_empty();
        let creating = req.prior_state.is_null() || replacing;

        let Some(args) = args::decode(&req.config)? else {
            // Something in the config is only known at apply: so is everything computed.
            let mut computed = BTreeMap::new();
            for a in ["nodes", "endpoints", "placement_report"] {
                computed.insert(a.to_string(), Value::Unknown);
            }
            let cluster_id = match req.prior_state.get("cluster_id") {
                Value::String(s) if !creating => Value::from(s.as_str()),
                _ => Value::Unknown,
            };
            computed.insert("cluster_id".to_string(), cluster_id);
            computed.insert("id".to_string(), req.config.get("name").clone());
            return Ok(PlanResponse {
                planned_state: state_value(&req.config, computed),
                requires_replace,
                planned_private: req.prior_private,
                diagnostics: Diagnostics::new(),
            });
        };
        let mut diagnostics = Diagnostics::new();
        let located = locate(ctx, &args, cached, &req.prior_state, creating, false).await?;
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
        let op = locate::operator(
            &driver,
            &args,
            args.node_config.password.clone(),
            node_config_of(&req.prior_state).password,
            locate::options(ctx, args.timeouts.create, args.allow_data_loss),
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
        if let Err(e) = op.preflight(&request, &planned.placement, &current).await {
            return Err(cluster_error("The cluster cannot be started here", e)
                .at(preflight_path(&args))
                .into());
        }

        let prior_nodes = if replacing {
            &Value::Null
        } else {
            req.prior_state.get("nodes")
        };
        let (nodes, endpoints) =
            nodes::planned(&request, &planned.placement, &current, prior_nodes, &driver);
        // While slots are half-moved, who serves them settles as the cluster gossips (and as
        // apply finishes them), so the slot layout is only known after apply: a value planned
        // now could differ from Terraform's second plan at apply time.
        let nodes = if slots_in_flight {
            Value::Unknown
        } else {
            nodes
        };
        let report = Value::from(planner::report::render_markdown(&planned.report));
        // A new cluster (or one of an older state) gets its id at apply.
        let planned_id = match id_value(&current) {
            Value::Null => Value::Unknown,
            known => known,
        };
        let planned_state = state_value(
            &req.config,
            computed_attrs(&args.name, planned_id, nodes, endpoints, report),
        );
        Ok(PlanResponse {
            planned_state,
            requires_replace,
            planned_private: if replacing {
                Vec::new()
            } else {
                req.prior_private
            },
            diagnostics,
        })
    }

    async fn do_apply(&self, ctx: &Context, req: ApplyRequest) -> ApplyResponse {
        let cached = private::decode(&req.planned_private);
        if req.planned_state.is_null() {
            return self
                .delete(ctx, &req.prior_state, cached, req.planned_private)
                .await;
        }
        let failed = |diagnostics: Diagnostics| ApplyResponse {
            new_state: req.prior_state.clone(),
            private: req.planned_private.clone(),
            diagnostics,
        };
        let args = match args::decode(&req.config) {
            Ok(Some(a)) => a,
            Ok(None) => {
                return failed(
                    Diagnostic::error(
                        "Configuration not fully known at apply",
                        "Terraform sends known configuration to apply; this is a bug.",
                    )
                    .into(),
                )
            }
            Err(d) => return failed(d),
        };
        let creating = req.prior_state.is_null();
        let located = locate(ctx, &args, cached, &req.prior_state, creating, true).await;
        let mut located = match located {
            Ok(l) => l,
            Err(d) => return failed(d),
        };
        for note in &located.notes {
            info!(cluster = %args.name, %note, "recovered");
        }
        let result = if creating {
            self.create(ctx, &args, &mut located).await
        } else {
            self.update(ctx, &args, &req.prior_state, &mut located)
                .await
        };
        let Located { driver, state, .. } = located;
        let private = private::encode(&state);
        match result {
            Ok(report) => {
                let op = locate::operator(
                    &driver,
                    &args,
                    args.node_config.password.clone(),
                    None,
                    locate::options(ctx, args.timeouts.update, args.allow_data_loss),
                );
                let observation = op.observe(&state).await;
                let (nodes, endpoints) = nodes::observed(&state, &observation);
                ApplyResponse {
                    new_state: state_value(
                        &req.config,
                        computed_attrs(
                            &args.name,
                            id_value(&state),
                            nodes,
                            endpoints,
                            Value::from(report),
                        ),
                    ),
                    private,
                    diagnostics: Diagnostics::new(),
                }
            }
            Err(diags) => {
                // Keep what exists in state (handles in private), so the next apply continues
                // and destroy finds every process; attributes stay as they were.
                // A create that failed part way still records what it started (Terraform
                // taints it; the replacement's destroy stops those processes first).
                let nothing_exists = state.nodes.is_empty() && state.hosts.is_empty();
                let new_state = match (req.prior_state.is_null(), nothing_exists) {
                    (true, true) => Value::Null,
                    (true, false) => state_value(
                        &req.config,
                        computed_attrs(
                            &args.name,
                            id_value(&state),
                            Value::List(Vec::new()),
                            Value::List(Vec::new()),
                            Value::from(""),
                        ),
                    ),
                    (false, _) => req.prior_state,
                };
                ApplyResponse {
                    new_state,
                    private,
                    diagnostics: diags,
                }
            }
        }
    }

    async fn create(
        &self,
        ctx: &Context,
        args: &ClusterArgs,
        located: &mut Located,
    ) -> Result<String, Diagnostics> {
        // The same placement as the plan (and as a create this one resumes): a fresh plan.
        let planned = place(&located.request, None)?;
        let op = locate::operator(
            &located.driver,
            args,
            args.node_config.password.clone(),
            None,
            locate::options(ctx, args.timeouts.create, args.allow_data_loss),
        );
        info!(cluster = %args.name, cluster_id = %located.state.cluster_id, nodes = planned.placement.nodes.len(), "creating cluster");
        op.create(&located.request, &planned.placement, &mut located.state)
            .await
            .map_err(|e| Diagnostics::from(cluster_error("Creating the cluster failed", e)))?;
        let record =
            ClusterRecord::new(&located.state.cluster_id, &args.name, ClusterStatus::Ready);
        located
            .driver
            .driver()
            .record_cluster(&record)
            .await
            .map_err(|e| Diagnostics::from(cluster_error("Recording the cluster failed", e)))?;
        Ok(planner::report::render_markdown(&planned.report))
    }

    async fn update(
        &self,
        ctx: &Context,
        args: &ClusterArgs,
        prior_state: &Value,
        located: &mut Located,
    ) -> Result<String, Diagnostics> {
        let old_config = node_config_of(prior_state);
        let Located {
            driver,
            request,
            state,
            ..
        } = located;
        // The operator starts from the settings the cluster runs with; reconfigure rolls the
        // new ones out. Both passwords are tried: a rotation may have been cut short.
        let mut op = redisha_cluster::Operator::with_options(
            driver.driver(),
            old_config,
            locate::options(ctx, args.timeouts.update, args.allow_data_loss),
        );
        op.also_accept([args.node_config.password.clone()]);

        // Hosts whose machine is gone (a terminated instance) leave the state here too, not
        // only at read, so `apply -refresh=false` also replaces them (see `do_read`).
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
        if op.config() != &args.node_config {
            op.reconfigure(state, args.node_config.clone())
                .await
                .map_err(|e| {
                    Diagnostics::from(cluster_error("Changing the node settings failed", e))
                })?;
        }
        let planned = place(request, Some(state))?;
        let steps =
            planner::migrate::steps(&state.placement(), &planned.placement).map_err(|e| {
                Diagnostics::from(cluster_error("No safe migration to the new placement", e))
            })?;
        if !steps.is_empty() {
            info!(cluster = %args.name, steps = steps.len(), "migrating");
        }
        op.update(request, &planned.placement, &steps, state)
            .await
            .map_err(|e| Diagnostics::from(cluster_error("Changing the cluster failed", e)))?;
        Ok(planner::report::render_markdown(&planned.report))
    }

    async fn delete(
        &self,
        ctx: &Context,
        prior_state: &Value,
        cached: Option<ClusterState>,
        private: Vec<u8>,
    ) -> ApplyResponse {
        let keep = |diagnostics: Diagnostics, private: Vec<u8>| ApplyResponse {
            new_state: prior_state.clone(),
            private,
            diagnostics,
        };
        if cached.as_ref().is_some_and(|s| s.driver == adopt::IMPORTED) {
            return keep(
                Diagnostic::error(
                    "The imported cluster was never adopted",
                    "redisha has not taken over these processes yet. Run terraform apply with a configuration that describes the cluster to adopt it (then destroy works), or terraform state rm to forget it and leave it running.",
                )
                .into(),
                private,
            );
        }
        if cached.is_none() && prior_state.get("cluster_id").as_str().is_none() {
            // Nothing was ever recorded (a create that made nothing): nothing to remove.
            return ApplyResponse {
                new_state: Value::Null,
                private: Vec::new(),
                diagnostics: Diagnostics::new(),
            };
        }
        let args = match args::decode(prior_state) {
            Ok(Some(a)) => a,
            _ => {
                return keep(
                    Diagnostic::error(
                        "Cannot read the cluster's settings from state",
                        "The saved attributes do not decode; remove the processes by hand and `terraform state rm` the resource.",
                    )
                    .into(),
                    private,
                )
            }
        };
        let prior_config = node_config_of(prior_state);
        let located = match locate::existing(
            ctx,
            &args,
            cached,
            prior_state,
            prior_config.password,
            None,
            true,
        )
        .await
        {
            Ok(l) => l,
            Err(diagnostics) => return keep(diagnostics, private),
        };
        let Located {
            driver, mut state, ..
        } = located;
        if let Some(result) = driver.destroy_all(&mut state).await {
            return match result {
                Ok(()) => ApplyResponse {
                    new_state: Value::Null,
                    private: Vec::new(),
                    diagnostics: Diagnostics::new(),
                },
                Err(diagnostics) => keep(diagnostics, private::encode(&state)),
            };
        }
        let op = locate::operator(
            &driver,
            &args,
            args.node_config.password.clone(),
            None,
            locate::options(ctx, args.timeouts.delete, args.allow_data_loss),
        );
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
            return keep(diagnostics, private::encode(&state));
        }
        ApplyResponse {
            new_state: Value::Null,
            private: Vec::new(),
            diagnostics,
        }
    }

    async fn do_read(&self, ctx: &Context, state_value: Value, private: Vec<u8>) -> ReadResponse {
        let unchanged =
            |state_value: Value, private: Vec<u8>, diagnostics: Diagnostics| ReadResponse {
                new_state: state_value,
                private,
                diagnostics,
            };
        let cached = private::decode(&private);
        if cached.is_none() && state_value.get("cluster_id").as_str().is_none() {
            return unchanged(state_value, private, Diagnostics::new());
        }
        let args = match args::decode(&state_value) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => return unchanged(state_value, private, Diagnostics::new()),
        };
        let config = node_config_of(&state_value);
        let located = match locate::existing(
            ctx,
            &args,
            cached,
            &state_value,
            config.password.clone(),
            None,
            false,
        )
        .await
        {
            Ok(l) => l,
            Err(d) => return unchanged(state_value, private, d),
        };
        let Located {
            driver, mut state, ..
        } = located;
        // A host whose machine vanished (terminated instance) leaves the private state, so
        // the next apply's `Operator::repair` provisions it again in the same zone (it
        // re-provisions every planned host missing from state) and restarts its nodes. Its
        // nodes stay in state and read as `down`: the drift the next plan shows.
        match driver.sync_hosts(&mut state).await {
            Ok(gone) => {
                for host in &gone {
                    info!(cluster = %args.name, host = %host, "drift: the host's machine is gone");
                }
            }
            Err(diagnostics) => return unchanged(state_value, private, diagnostics),
        }
        let op = locate::operator(
            &driver,
            &args,
            config.password,
            None,
            locate::options(ctx, args.timeouts.update, args.allow_data_loss),
        );
        let observation = op.observe(&state).await;
        for d in observation.drift() {
            info!(cluster = %args.name, drift = %d, "drift");
        }
        let (nodes, endpoints) = nodes::observed(&state, &observation);
        let mut new_state = state_value;
        new_state.set("nodes", nodes);
        new_state.set("endpoints", endpoints);
        if !state.cluster_id.is_empty() {
            new_state.set("cluster_id", Value::from(state.cluster_id.as_str()));
        }
        ReadResponse {
            new_state,
            private: private::encode(&state),
            diagnostics: Diagnostics::new(),
        }
    }
}

/// The attribute a preflight failure most likely points at.
fn preflight_path(args: &ClusterArgs) -> AttrPath {
    match args.driver {
        args::DriverArgs::Local(_) => AttrPath::attr("local"),
        args::DriverArgs::Aws(_) => AttrPath::attr("aws"),
    }
}

#[async_trait]
impl RawResource for ClusterResource {
    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        schema::schema()
    }

    async fn validate(&self, _ctx: &Context, config: &Value) -> Diagnostics {
        match args::decode(config) {
            // The planner's own checks on what is known (the placement data source does the same).
            Ok(Some(a)) if !a.request.zones.is_empty() => match planner::validate(&a.request) {
                Err(e) => planner_diags(planner::error::PlanError::Invalid(e)),
                Ok(()) => Diagnostics::new(),
            },
            Ok(_) => Diagnostics::new(),
            Err(d) => d,
        }
    }

    async fn plan(&self, ctx: &Context, req: PlanRequest) -> PlanResponse {
        let prior_private = req.prior_private.clone();
        let prior_state = req.prior_state.clone();
        match self.do_plan(ctx, req).await {
            Ok(r) => r,
            Err(diagnostics) => PlanResponse {
                planned_state: prior_state,
                requires_replace: Vec::new(),
                planned_private: prior_private,
                diagnostics,
            },
        }
    }

    async fn apply(&self, ctx: &Context, req: ApplyRequest) -> ApplyResponse {
        self.do_apply(ctx, req).await
    }

    async fn read(&self, ctx: &Context, state: Value, private: Vec<u8>) -> ReadResponse {
        self.do_read(ctx, state, private).await
    }

    async fn import(&self, _ctx: &Context, id: &str) -> Result<Vec<Imported>, Diagnostics> {
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
        let (nodes, endpoints) = nodes::recorded(&state);
        let mut computed = computed_attrs(id, id_value(&state), nodes, endpoints, Value::from(""));
        computed.insert(
            "password".to_string(),
            password
                .as_ref()
                .map(|p| Value::from(p.expose()))
                .unwrap_or(Value::Null),
        );
        let shards = state
            .nodes
            .iter()
            .filter(|n| n.role == redisha_planner::Role::Master)
            .count();
        computed.insert("shards".to_string(), Value::from(shards as u64));
        Ok(vec![Imported {
            state: state_value(&Value::Null, computed),
            private: private::encode(&state),
        }])
    }
}
