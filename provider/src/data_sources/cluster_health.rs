//! `data "redisha_cluster_health"`: the live state of a Redis Cluster, read from one or more
//! of its addresses. For monitoring and for checks in pipelines (`healthy`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use redisha_cluster::{Options, Password};

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::{Context, RawDataSource};
use crate::tfplugin::schema::{Attribute, Block, Schema};
use crate::tfplugin::types::Type;
use crate::tfplugin::value::Value;

pub struct ClusterHealthDataSource;

pub const TYPE_NAME: &str = "redisha_cluster_health";

fn node_type() -> Type {
    Type::object([
        ("id", Type::String),
        ("address", Type::String),
        ("alive", Type::Bool),
        ("role", Type::String),
        ("master_id", Type::String),
        ("link_status", Type::String),
        ("lag_bytes", Type::Number),
        ("slots", Type::Number),
        ("cluster_state", Type::String),
        ("error", Type::String),
    ])
}

pub fn schema() -> Schema {
    let block = Block::new("Live health of a Redis Cluster: per node role, link status, replication lag and slots, and the cluster state.")
        .attribute(Attribute::required("endpoints", Type::list(Type::String)).describe(
            "host:port of one or more nodes; the first that answers lists the others (e.g. `redisha_cluster.x.endpoints`).",
        ))
        .attribute(Attribute::optional("password", Type::String).sensitive().describe("The cluster password, if it has one."))
        .attribute(Attribute::computed("cluster_state", Type::String).describe("`ok` when every node answers and says ok, else `fail`."))
        .attribute(Attribute::computed("healthy", Type::Bool).describe("cluster_state is ok and all 16384 slots are served."))
        .attribute(Attribute::computed("slots_covered", Type::Number).describe("Slots served by a live master."))
        .attribute(Attribute::computed("nodes", Type::list(node_type())).describe(
            "Every node: `id`, `address`, `alive`, `role` (`master`/`replica`, empty when unknown), \
             `master_id` (replicas), `link_status` (`up`/`down`, replicas), `lag_bytes` (replication \
             offset behind the master, replicas), `slots` (count), `cluster_state`, `error` (why it could not be read).",
        ));
    Schema::new(0, block)
}

fn endpoints(config: &Value) -> Result<Vec<String>, Diagnostic> {
    let at = AttrPath::attr("endpoints");
    let list = config.get("endpoints").as_list().unwrap_or(&[]);
    let mut out = Vec::new();
    for (i, v) in list.iter().enumerate() {
        match v.as_str() {
            Some(s) if redisha_cluster::conn::split_address(s).is_some() => out.push(s.to_string()),
            _ => {
                return Err(Diagnostic::error(
                    "Invalid endpoint",
                    format!(
                        "endpoints[{i}]: write each endpoint as host:port, e.g. 127.0.1.1:7000"
                    ),
                )
                .at(at.index(i)))
            }
        }
    }
    if out.is_empty() {
        return Err(Diagnostic::error(
            "No endpoint",
            "endpoints: give at least one host:port of the cluster",
        )
        .at(at));
    }
    Ok(out)
}

fn opt_str(v: Option<String>) -> Value {
    v.map(Value::from).unwrap_or(Value::Null)
}

#[async_trait]
impl RawDataSource for ClusterHealthDataSource {
    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        schema()
    }

    async fn validate(&self, _ctx: &Context, config: &Value) -> Diagnostics {
        let known = config
            .get("endpoints")
            .as_list()
            .is_some_and(|l| l.iter().all(|v| !v.is_unknown()));
        match endpoints(config) {
            Err(d) if known => d.into(),
            _ => Diagnostics::new(),
        }
    }

    async fn read(&self, _ctx: &Context, config: &Value) -> Result<Value, Diagnostics> {
        let seeds = endpoints(config)?;
        let password = config.get("password").as_str().map(Password::new);
        let report =
            redisha_cluster::health::health(&seeds, password.as_ref(), &Options::default())
                .await
                .map_err(|e| {
                    Diagnostics::from(
                        Diagnostic::error("Cannot read the cluster's health", e.to_string())
                            .at(AttrPath::attr("endpoints")),
                    )
                })?;
        let nodes = report.nodes.iter().map(|n| {
            Value::object([
                ("id", Value::from(n.id.as_str())),
                ("address", Value::from(n.address.as_str())),
                ("alive", Value::from(n.alive)),
                ("role", opt_str(n.role.map(|r| r.as_str().to_string()))),
                ("master_id", opt_str(n.master_id.clone())),
                ("link_status", opt_str(n.link_status.clone())),
                (
                    "lag_bytes",
                    n.lag_bytes.map(Value::from).unwrap_or(Value::Null),
                ),
                ("slots", Value::from(n.slots)),
                ("cluster_state", opt_str(n.cluster_state.clone())),
                ("error", opt_str(n.error.clone())),
            ])
        });
        let computed = BTreeMap::from([
            (
                "cluster_state".to_string(),
                Value::from(report.cluster_state.as_str()),
            ),
            ("healthy".to_string(), Value::from(report.healthy())),
            (
                "slots_covered".to_string(),
                Value::from(report.slots_covered),
            ),
            ("nodes".to_string(), Value::list(nodes.collect::<Vec<_>>())),
        ]);
        Ok(schema().block.fill(config, computed))
    }
}
