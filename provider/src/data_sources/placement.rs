//! `data "redisha_placement"`: the planner's input as HCL, its placement and what-if report as
//! computed attributes. A dry run: nothing is created. Invalid input is reported at plan time
//! by ValidateDataResourceConfig, on the attribute at fault.

use std::collections::BTreeMap;

use async_trait::async_trait;
use redisha_planner as planner;
use redisha_planner::{ClusterSpec, HostSpec, PartitionSpec, Placement, Request, Spread, ZoneSpec};

use crate::tfplugin::attrs::{self, Field};
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::{Context, RawDataSource};
use crate::tfplugin::schema::{Attribute, Block, NestedBlock, Schema};
use crate::tfplugin::types::Type;
use crate::tfplugin::value::Value;

pub struct PlacementDataSource;

pub const TYPE_NAME: &str = "redisha_placement";

fn node_type() -> Type {
    Type::object([
        ("name", Type::String),
        ("shard", Type::Number),
        ("role", Type::String),
        ("host", Type::String),
        ("zone", Type::String),
        ("slots", Type::list(Type::String)),
    ])
}

pub fn schema() -> Schema {
    let host = Block::new("A machine that can run redis-server nodes.")
        .attribute(
            Attribute::required("name", Type::String)
                .describe("Host name, unique in the whole topology."),
        )
        .attribute(
            Attribute::required("memory_mb", Type::Number)
                .describe("Memory available to Redis on this host, in MiB."),
        )
        .attribute(
            Attribute::optional("max_nodes", Type::Number)
                .describe("Most redis-server nodes this host may run. Default 1."),
        )
        .attribute(
            Attribute::optional("rack", Type::String)
                .describe("Rack (failure domain inside the zone). Needed for `spread = \"rack\"`."),
        );
    let zone = Block::new("An availability zone.")
        .attribute(Attribute::required("name", Type::String).describe("Zone name, unique."))
        .block(NestedBlock::list("host", host).min_items(1));
    let partition = Block::new(
        "One side of a network split to analyse; zones not named are on the other side.",
    )
    .attribute(
        Attribute::required("name", Type::String)
            .describe("Name of the scenario, used in the report."),
    )
    .attribute(
        Attribute::required("side", Type::list(Type::String))
            .describe("Zones on this side of the split."),
    );
    let block = Block::new(
        "Plans where every Redis Cluster node runs so that no shard and its replicas share a failure \
         domain, assigns hash slots and reports what each failure would do. A dry run: nothing is created.",
    )
    .attribute(Attribute::required("shards", Type::Number).describe("Number of shards (masters)."))
    .attribute(Attribute::required("replicas", Type::Number).describe("Replicas per shard."))
    .attribute(Attribute::required("node_memory_mb", Type::Number).describe("Memory each redis-server node needs, in MiB."))
    .attribute(
        Attribute::optional("spread", Type::String)
            .describe("Failure domain two copies of one shard never share: `host`, `rack` or `zone` (default)."),
    )
    .attribute(
        Attribute::computed("nodes", Type::list(node_type())).describe(
            "Every node: `name`, `shard` (0-based), `role` (`master` or `replica`), `host`, `zone` and \
             `slots`, the hash slot ranges a master serves as strings `\"start-end\"` (inclusive; \
             `\"5461-5461\"` for a single slot), empty for replicas.",
        ),
    )
    .attribute(Attribute::computed("report", Type::String).describe("The what-if report, markdown."))
    .attribute(Attribute::computed("summary", Type::String).describe("One-paragraph summary of the report."))
    .attribute(
        Attribute::computed("survives_any_zone_loss", Type::Bool)
            .describe("Whether the cluster keeps every slot served after losing any one zone."),
    )
    .attribute(Attribute::computed("warnings", Type::list(Type::String)).describe("Planner warnings."))
    .attribute(Attribute::computed("json", Type::String).describe("The planner's whole output as JSON: `nodes`, `report` and `warnings`, as the `redisha` CLI writes it."))
    .block(NestedBlock::list("zone", zone).min_items(1))
    .block(NestedBlock::list("partition", partition));
    Schema::new(0, block)
}

/// Builds the planner's request from the config. Returns `None` when any value is unknown
/// (validation then checks only what is known); per-field problems go into `diags`.
/// Collects known values and per-field diagnostics; remembers whether anything was unknown.
struct Collector<'d> {
    known: bool,
    diags: &'d mut Diagnostics,
}

impl Collector<'_> {
    /// The known value; `None` for null (and records unknowns and errors).
    fn take<T>(&mut self, r: Result<Field<T>, Diagnostic>) -> Option<T> {
        self.field(r).flatten()
    }
    /// `Some(Some(v))` known, `Some(None)` null, `None` unknown or invalid.
    fn field<T>(&mut self, r: Result<Field<T>, Diagnostic>) -> Option<Option<T>> {
        match r {
            Ok(Field::Known(v)) => Some(Some(v)),
            Ok(Field::Null) => Some(None),
            Ok(Field::Unknown) => {
                self.known = false;
                None
            }
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }
    /// The elements of a list; empty when null, unknown or invalid.
    fn list<'v>(&mut self, r: Result<Field<&'v [Value]>, Diagnostic>) -> &'v [Value] {
        self.take(r).unwrap_or(&[])
    }
}

/// Builds the planner's request from the config. Returns `None` when any value is unknown
/// (validation then checks only what is known) or invalid; per-field problems go into `diags`.
pub fn request_from_config(config: &Value, diags: &mut Diagnostics) -> Option<Request> {
    let root = AttrPath::root();
    let mut c = Collector { known: true, diags };

    let shards = c.take(attrs::u32(config, "shards", &root));
    let replicas = c.take(attrs::u32(config, "replicas", &root));
    let node_memory_mb = c.take(attrs::u64(config, "node_memory_mb", &root));
    let spread = match c.field(attrs::string(config, "spread", &root)) {
        Some(Some(s)) => match s.parse::<Spread>() {
            Ok(sp) => Some(sp),
            Err(msg) => {
                c.diags
                    .push(Diagnostic::error("Invalid spread", msg).at(root.then("spread")));
                None
            }
        },
        Some(None) => Some(Spread::default()),
        None => None,
    };

    let mut zones = Vec::new();
    for (zi, zv) in c
        .list(attrs::list(config, "zone", &root))
        .iter()
        .enumerate()
    {
        let zp = root.then("zone").index(zi);
        if zv.is_unknown() {
            c.known = false;
            continue;
        }
        let name = c.take(attrs::string(zv, "name", &zp));
        let mut hosts = Vec::new();
        for (hi, hv) in c.list(attrs::list(zv, "host", &zp)).iter().enumerate() {
            let hp = zp.then("host").index(hi);
            if hv.is_unknown() {
                c.known = false;
                continue;
            }
            let hname = c.take(attrs::string(hv, "name", &hp));
            let memory_mb = c.take(attrs::u64(hv, "memory_mb", &hp));
            let max_nodes = c.field(attrs::u32(hv, "max_nodes", &hp));
            let rack = c.field(attrs::string(hv, "rack", &hp));
            if let (Some(name), Some(memory_mb), Some(max_nodes), Some(rack)) =
                (hname, memory_mb, max_nodes, rack)
            {
                hosts.push(HostSpec {
                    name,
                    memory_mb,
                    max_nodes: max_nodes.unwrap_or(1),
                    rack,
                });
            }
        }
        if let Some(name) = name {
            zones.push(ZoneSpec { name, hosts });
        }
    }

    let mut partitions = Vec::new();
    for (pi, pv) in c
        .list(attrs::list(config, "partition", &root))
        .iter()
        .enumerate()
    {
        let pp = root.then("partition").index(pi);
        if pv.is_unknown() {
            c.known = false;
            continue;
        }
        let name = c.take(attrs::string(pv, "name", &pp));
        let mut side = Vec::new();
        for (si, z) in c.list(attrs::list(pv, "side", &pp)).iter().enumerate() {
            match z {
                Value::String(s) => side.push(s.clone()),
                Value::Unknown => c.known = false,
                _ => c.diags.push(
                    Diagnostic::error("Invalid side", "side must list zone names")
                        .at(pp.then("side").index(si)),
                ),
            }
        }
        if let Some(name) = name {
            partitions.push(PartitionSpec { name, side });
        }
    }

    if !c.known || c.diags.has_errors() {
        return None;
    }
    Some(Request {
        cluster: ClusterSpec {
            shards: shards?,
            replicas: replicas?,
            node_memory_mb: node_memory_mb?,
            spread: spread?,
        },
        zones,
        partitions,
    })
}

/// Maps a planner field path (`zones[1].hosts[3].memory_mb`, `cluster.shards`,
/// `partitions[0].side[1]`) onto the HCL attribute path (`zone[1].host[3].memory_mb`,
/// `shards`, `partition[0].side[1]`).
pub fn hcl_path(planner_path: &[planner::error::PathStep]) -> AttrPath {
    use planner::error::PathStep as P;
    let mut out = AttrPath::root();
    for (i, step) in planner_path.iter().enumerate() {
        match step {
            P::Field(f) if i == 0 && f == "cluster" => {}
            P::Field(f) => {
                out = out.then(match f.as_str() {
                    "zones" => "zone",
                    "hosts" => "host",
                    "partitions" => "partition",
                    other => other,
                })
            }
            P::Index(n) => out = out.index(*n),
        }
    }
    out
}

fn validation_diags(errors: &planner::error::ValidationErrors) -> Diagnostics {
    errors
        .0
        .iter()
        .map(|e| {
            let path = hcl_path(&e.path);
            let summary = if path.is_root() {
                "Invalid placement request".to_string()
            } else {
                format!("Invalid {path}")
            };
            Diagnostic::error(summary, format!("{path}: {}", e.message)).at(path)
        })
        .collect()
}

fn slots_value(node: &planner::Node) -> Value {
    Value::strings(node.slots.iter().map(|r| format!("{}-{}", r.start, r.end)))
}

fn nodes_value(p: &Placement) -> Value {
    Value::list(p.nodes.iter().map(|n| {
        Value::object([
            ("name", Value::from(n.name.as_str())),
            ("shard", Value::from(n.shard)),
            ("role", Value::from(n.role.as_str())),
            ("host", Value::from(n.host.as_str())),
            ("zone", Value::from(n.zone.as_str())),
            ("slots", slots_value(n)),
        ])
    }))
}

/// Runs the planner: the computed attributes, or diagnostics.
fn compute(req: &Request) -> Result<BTreeMap<String, Value>, Diagnostics> {
    if let Err(e) = planner::validate(req) {
        return Err(validation_diags(&e));
    }
    let planned = planner::plan(req, None).map_err(plan_error_diags)?;
    let placement = &planned.placement;
    let report = &planned.report;
    let json = serde_json::to_string_pretty(&planned).map_err(|e| {
        Diagnostics::from(Diagnostic::error(
            "Cannot encode the placement as JSON",
            e.to_string(),
        ))
    })?;
    let mut out = BTreeMap::new();
    out.insert("nodes".to_string(), nodes_value(placement));
    out.insert(
        "report".to_string(),
        Value::from(planner::report::render_markdown(report)),
    );
    out.insert("summary".to_string(), Value::from(report.summary.clone()));
    out.insert(
        "survives_any_zone_loss".to_string(),
        Value::from(report.survives_any_zone),
    );
    out.insert(
        "warnings".to_string(),
        Value::strings(planned.warnings.iter().cloned()),
    );
    out.insert("json".to_string(), Value::from(json));
    Ok(out)
}

fn plan_error_diags(e: planner::error::PlanError) -> Diagnostics {
    use planner::error::PlanError as E;
    match e {
        E::Invalid(v) => validation_diags(&v),
        E::Infeasible { constraint, fix } => Diagnostic::error(
            "No placement meets the constraints",
            format!("{constraint}\nFix: {fix}"),
        )
        .into(),
        E::Parse(msg) => Diagnostic::error("Invalid placement request", msg).into(),
    }
}

#[async_trait]
impl RawDataSource for PlacementDataSource {
    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        schema()
    }

    async fn validate(&self, _ctx: &Context, config: &Value) -> Diagnostics {
        let mut diags = Diagnostics::new();
        if let Some(req) = request_from_config(config, &mut diags) {
            if let Err(e) = planner::validate(&req) {
                diags.extend(validation_diags(&e));
            }
        }
        diags
    }

    async fn read(&self, _ctx: &Context, config: &Value) -> Result<Value, Diagnostics> {
        let mut diags = Diagnostics::new();
        let Some(req) = request_from_config(config, &mut diags) else {
            if diags.is_empty() {
                diags.push(Diagnostic::error(
                    "redisha_placement: configuration not fully known",
                    "Terraform reads data sources only with known configuration; this is a bug.",
                ));
            }
            return Err(diags);
        };
        // The planner is CPU-bound (1,000 shards take a while): keep it off the gRPC threads.
        let computed = tokio::task::spawn_blocking(move || compute(&req))
            .await
            .map_err(|e| {
                Diagnostics::from(Diagnostic::error(
                    "Internal error in the placement planner",
                    e.to_string(),
                ))
            })??;
        Ok(schema().block.fill(config, computed))
    }
}
