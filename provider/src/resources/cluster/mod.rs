//! `resource "redisha_cluster"`: a Redis Cluster placed by the planner and run by a driver.
//!
//! Plan runs the planner (re-planning from the placement in state, so few nodes move) and shows
//! where every node will run. Apply creates, repairs drift, reconfigures (rolling) and
//! executes the planner's migration steps. Read reports the live cluster so drift shows up.
//! The driver's handles (pids, data dirs, instance ids) travel in the resource's private
//! state, never in attributes.

pub mod adopt;
pub mod args;
pub mod drivers;
pub mod nodes;
pub mod schema;

use std::collections::BTreeMap;

use async_trait::async_trait;
use redisha_cluster::{ClusterState, NodeConfig, Operator, Options, Password};
use redisha_planner as planner;
use redisha_planner::{Placement, Request};
use tracing::{info, warn};

use crate::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::framework::{
    ApplyRequest, ApplyResponse, Context, Imported, PlanRequest, PlanResponse, ReadResponse,
    Resource,
};
use crate::schema::Schema;
use crate::value::Value;

use args::ClusterArgs;
use drivers::BuiltDriver;

pub const TYPE_NAME: &str = "redisha_cluster";

pub struct ClusterResource;

/// The private state: everything the driver made, so a later provider process finds it.
fn decode_private(bytes: &[u8]) -> Result<Option<ClusterState>, Diagnostic> {
    if bytes.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some).map_err(|e| {
        Diagnostic::error(
            "Cannot read the cluster's private state",
            format!("The state saved by a previous apply does not decode ({e}). If the cluster still runs, adopt it with terraform import."),
        )
    })
}

fn encode_private(state: &ClusterState) -> Vec<u8> {
    // A ClusterState is plain data: encoding cannot fail; an empty vec would only lose handles.
    serde_json::to_vec(state).unwrap_or_default()
}

fn op_options(timeout: std::time::Duration) -> Options {
    Options {
        timeout,
        ..Options::default()
    }
}

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
fn place(request: &Request, prior: Option<&ClusterState>) -> Result<planner::Plan, Diagnostics> {
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
    nodes: Value,
    endpoints: Value,
    report: Value,
) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("id".to_string(), Value::from(name)),
        ("nodes".to_string(), nodes),
        ("endpoints".to_string(), endpoints),
        ("placement_report".to_string(), report),
    ])
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
        let prior = decode_private(&req.prior_private)?;
        let imported = prior.as_ref().is_some_and(|p| p.driver == adopt::IMPORTED);
        let mut requires_replace = Vec::new();
        if !req.prior_state.is_null() && !imported {
            for attr in ["name", "local", "aws"] {
                if req.prior_state.get(attr) != req.config.get(attr) {
                    requires_replace.push(AttrPath::attr(attr));
                }
            }
        }
        let replacing = !requires_replace.is_empty();
        let prior = if replacing { None } else { prior };

        let Some(args) = args::decode(&req.config)? else {
            // Something in the config is only known at apply: so is everything computed.
            let mut computed = BTreeMap::new();
            for a in ["nodes", "endpoints", "placement_report"] {
                computed.insert(a.to_string(), Value::Unknown);
            }
            let id = req.config.get("name").clone();
            computed.insert("id".to_string(), id);
            return Ok(PlanResponse {
                planned_state: state_value(&req.config, computed),
                requires_replace,
                planned_private: req.prior_private,
                diagnostics: Diagnostics::new(),
            });
        };
        let (driver, request) = drivers::build(ctx, &args, prior.as_ref()).await?;
        let prior = match prior {
            Some(p) if imported => {
                let fresh = place(&request, None)?;
                Some(adopt::adopt(&p, &request, &fresh.placement, &driver)?)
            }
            other => other,
        };
        let planned = place(&request, prior.as_ref())?;
        let mut diagnostics = Diagnostics::new();
        for w in &planned.warnings {
            diagnostics.push(Diagnostic::warning("Placement warning", w.clone()));
        }

        // What apply needs (binary, free ports, writable data dir), checked before anything starts.
        let empty = ClusterState::new(driver.driver().kind());
        let current = prior.as_ref().unwrap_or(&empty);
        let op = Operator::with_options(
            driver.driver(),
            args.node_config.clone(),
            op_options(args.timeouts.create),
        );
        if let Err(e) = op.preflight(&request, &planned.placement, current).await {
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
            nodes::planned(&request, &planned.placement, current, prior_nodes, &driver);
        let report = Value::from(planner::report::render_markdown(&planned.report));
        let planned_state = state_value(
            &req.config,
            computed_attrs(&args.name, nodes, endpoints, report),
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
        let prior = match decode_private(&req.planned_private) {
            Ok(p) => p,
            Err(d) => {
                return ApplyResponse {
                    new_state: req.prior_state,
                    private: req.planned_private,
                    diagnostics: d.into(),
                }
            }
        };
        if req.planned_state.is_null() {
            return self
                .delete(ctx, &req.prior_state, prior, req.planned_private)
                .await;
        }
        let args = match args::decode(&req.config) {
            Ok(Some(a)) => a,
            Ok(None) => {
                return ApplyResponse {
                    new_state: req.prior_state,
                    private: req.planned_private,
                    diagnostics: Diagnostic::error(
                        "Configuration not fully known at apply",
                        "Terraform sends known configuration to apply; this is a bug.",
                    )
                    .into(),
                }
            }
            Err(d) => {
                return ApplyResponse {
                    new_state: req.prior_state,
                    private: req.planned_private,
                    diagnostics: d,
                }
            }
        };
        let (driver, request) = match drivers::build(ctx, &args, prior.as_ref()).await {
            Ok(b) => b,
            Err(d) => {
                return ApplyResponse {
                    new_state: req.prior_state,
                    private: req.planned_private,
                    diagnostics: d,
                }
            }
        };
        let prior = match prior {
            Some(p) if p.driver == adopt::IMPORTED => {
                let adopted = place(&request, None).and_then(|fresh| {
                    adopt::adopt(&p, &request, &fresh.placement, &driver).map_err(Diagnostics::from)
                });
                match adopted {
                    Ok(a) => Some(a),
                    Err(diagnostics) => {
                        return ApplyResponse {
                            new_state: req.prior_state,
                            private: req.planned_private,
                            diagnostics,
                        }
                    }
                }
            }
            other => other,
        };
        let creating = prior.is_none() || req.prior_state.is_null();
        let mut state = prior.unwrap_or_else(|| ClusterState::new(driver.driver().kind()));
        let result = if creating {
            self.create(&args, &driver, &request, &mut state).await
        } else {
            self.update(&args, &driver, &request, &req.prior_state, &mut state)
                .await
        };
        let private = encode_private(&state);
        match result {
            Ok(report) => {
                let op = Operator::with_options(
                    driver.driver(),
                    args.node_config.clone(),
                    op_options(args.timeouts.update),
                );
                let observation = op.observe(&state).await;
                let (nodes, endpoints) = nodes::observed(&state, &observation);
                ApplyResponse {
                    new_state: state_value(
                        &req.config,
                        computed_attrs(&args.name, nodes, endpoints, Value::from(report)),
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
        args: &ClusterArgs,
        driver: &BuiltDriver,
        request: &Request,
        state: &mut ClusterState,
    ) -> Result<String, Diagnostics> {
        let planned = place(request, None)?;
        let op = Operator::with_options(
            driver.driver(),
            args.node_config.clone(),
            op_options(args.timeouts.create),
        );
        info!(cluster = %args.name, nodes = planned.placement.nodes.len(), "creating cluster");
        op.create(request, &planned.placement, state)
            .await
            .map_err(|e| Diagnostics::from(cluster_error("Creating the cluster failed", e)))?;
        Ok(planner::report::render_markdown(&planned.report))
    }

    async fn update(
        &self,
        args: &ClusterArgs,
        driver: &BuiltDriver,
        request: &Request,
        prior_state: &Value,
        state: &mut ClusterState,
    ) -> Result<String, Diagnostics> {
        let old_config = node_config_of(prior_state);
        let timeout = args.timeouts.update;
        let mut op = Operator::with_options(driver.driver(), old_config, op_options(timeout));

        // Hosts whose machine is gone (a terminated instance) leave the state here too, not
        // only at read, so `apply -refresh=false` also replaces them (see `do_read`).
        driver.sync_hosts(state).await?;
        // Drift first: every node up, replicas attached, planned masters back in place, so the
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
        prior: Option<ClusterState>,
        private: Vec<u8>,
    ) -> ApplyResponse {
        let Some(mut state) = prior else {
            return ApplyResponse {
                new_state: Value::Null,
                private: Vec::new(),
                diagnostics: Diagnostics::new(),
            };
        };
        if state.driver == adopt::IMPORTED {
            return ApplyResponse {
                new_state: prior_state.clone(),
                private,
                diagnostics: Diagnostic::error(
                    "The imported cluster was never adopted",
                    "redisha has not taken over these processes yet. Run terraform apply with a configuration that describes the cluster to adopt it (then destroy works), or terraform state rm to forget it and leave it running.",
                )
                .into(),
            };
        }
        let args = match args::decode(prior_state) {
            Ok(Some(a)) => a,
            _ => {
                return ApplyResponse {
                    new_state: prior_state.clone(),
                    private,
                    diagnostics: Diagnostic::error(
                        "Cannot read the cluster's settings from state",
                        "The saved attributes do not decode; remove the processes by hand and `terraform state rm` the resource.",
                    )
                    .into(),
                }
            }
        };
        let driver = match drivers::build(ctx, &args, Some(&state)).await {
            Ok((d, _)) => d,
            Err(diagnostics) => {
                return ApplyResponse {
                    new_state: prior_state.clone(),
                    private,
                    diagnostics,
                }
            }
        };
        if let Some(result) = driver.destroy_all(&mut state).await {
            return match result {
                Ok(()) => ApplyResponse {
                    new_state: Value::Null,
                    private: Vec::new(),
                    diagnostics: Diagnostics::new(),
                },
                Err(diagnostics) => ApplyResponse {
                    new_state: prior_state.clone(),
                    private: encode_private(&state),
                    diagnostics,
                },
            };
        }
        let op = Operator::with_options(
            driver.driver(),
            args.node_config.clone(),
            op_options(args.timeouts.delete),
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
            return ApplyResponse {
                new_state: prior_state.clone(),
                private: encode_private(&state),
                diagnostics,
            };
        }
        ApplyResponse {
            new_state: Value::Null,
            private: Vec::new(),
            diagnostics,
        }
    }

    async fn do_read(&self, ctx: &Context, state_value: Value, private: Vec<u8>) -> ReadResponse {
        let mut state = match decode_private(&private) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return ReadResponse {
                    new_state: state_value,
                    private,
                    diagnostics: Diagnostics::new(),
                }
            }
            Err(d) => {
                return ReadResponse {
                    new_state: state_value,
                    private,
                    diagnostics: d.into(),
                }
            }
        };
        let args = match args::decode(&state_value) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                return ReadResponse {
                    new_state: state_value,
                    private,
                    diagnostics: Diagnostics::new(),
                }
            }
        };
        let driver = match drivers::build(ctx, &args, Some(&state)).await {
            Ok((d, _)) => d,
            Err(diagnostics) => {
                return ReadResponse {
                    new_state: state_value,
                    private,
                    diagnostics,
                }
            }
        };
        // A host whose machine vanished (terminated instance) leaves the private state, so
        // the next apply's `Operator::repair` provisions it again in the same zone (it
        // re-provisions every planned host missing from state) and restarts its nodes. Its
        // nodes stay in state and read as `down`: the drift the next plan shows.
        let private = match driver.sync_hosts(&mut state).await {
            Ok(gone) if !gone.is_empty() => {
                for host in &gone {
                    info!(cluster = %args.name, host = %host, "drift: the host's machine is gone");
                }
                encode_private(&state)
            }
            Ok(_) => private,
            Err(diagnostics) => {
                return ReadResponse {
                    new_state: state_value,
                    private,
                    diagnostics,
                }
            }
        };
        let op = Operator::with_options(
            driver.driver(),
            node_config_of(&state_value),
            op_options(args.timeouts.update),
        );
        let observation = op.observe(&state).await;
        for d in observation.drift() {
            info!(cluster = %args.name, drift = %d, "drift");
        }
        let (nodes, endpoints) = nodes::observed(&state, &observation);
        let mut new_state = state_value;
        new_state.set("nodes", nodes);
        new_state.set("endpoints", endpoints);
        ReadResponse {
            new_state,
            private,
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
impl Resource for ClusterResource {
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
        let mut computed = computed_attrs(id, nodes, endpoints, Value::from(""));
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
            private: encode_private(&state),
        }])
    }
}
