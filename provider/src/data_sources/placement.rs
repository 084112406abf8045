//! `data "redisha_placement"`: the planner's input as HCL, its placement and what-if report as
//! computed attributes. A dry run: nothing is created. Invalid input is reported at plan time
//! by ValidateDataResourceConfig, on the attribute at fault.

use async_trait::async_trait;
use redisha_planner as planner;
use redisha_planner::Request;

use crate::model;
use crate::tfplugin::diagnostics::{Diagnostic, Diagnostics};
use crate::tfplugin::framework::{Attr, Context, DataSource, Model};
use crate::tfplugin::schema::Schema;
use crate::topology::{self, TopologyModel};

pub struct PlacementDataSource;

pub const TYPE_NAME: &str = "redisha_placement";

model! {
    /// One node of `nodes`.
    pub struct PlacedNode {
        pub name: Attr<String>,
        pub shard: Attr<u32>,
        pub role: Attr<String>,
        pub host: Attr<String>,
        pub zone: Attr<String>,
        pub slots: Attr<Vec<String>>,
    }
}

model! {
    pub struct PlacementModel(
        "Plans where every Redis Cluster node runs so that no shard and its replicas share a failure \
         domain, assigns hash slots and reports what each failure would do. A dry run: nothing is created."
    ) {
        pub topology: TopologyModel = flatten(),
        pub nodes: Attr<Vec<PlacedNode>> = computed(
            "Every node: `name`, `shard` (0-based), `role` (`master` or `replica`), `host`, `zone` and \
             `slots`, the hash slot ranges a master serves as strings `\"start-end\"` (inclusive; \
             `\"5461-5461\"` for a single slot), empty for replicas.",
        ),
        pub report: Attr<String> = computed("The what-if report, markdown."),
        pub summary: Attr<String> = computed("One-paragraph summary of the report."),
        pub survives_any_zone_loss: Attr<bool> = computed(
            "Whether the cluster keeps every slot served after losing any one zone.",
        ),
        pub warnings: Attr<Vec<String>> = computed("Planner warnings."),
        pub json: Attr<String> = computed(
            "The planner's whole output as JSON: `nodes`, `report` and `warnings`, as the `redisha` CLI writes it.",
        ),
    }
}

/// The data source's schema.
pub fn schema() -> Schema {
    Schema::new(0, PlacementModel::block())
}

/// Runs the planner: the config with its computed attributes, or diagnostics.
fn compute(config: PlacementModel, req: &Request) -> Result<PlacementModel, Diagnostics> {
    let v = topology::validate(req);
    if v.has_errors() {
        return Err(v);
    }
    let planned = planner::plan(req, None).map_err(topology::plan_error_diags)?;
    let report = &planned.report;
    let json = serde_json::to_string_pretty(&planned).map_err(|e| {
        Diagnostics::from(Diagnostic::error(
            "Cannot encode the placement as JSON",
            e.to_string(),
        ))
    })?;
    let nodes = planned.placement.nodes.iter().map(|n| PlacedNode {
        name: n.name.clone().into(),
        shard: n.shard.into(),
        role: n.role.as_str().to_string().into(),
        host: n.host.clone().into(),
        zone: n.zone.clone().into(),
        slots: topology::slot_strings(&n.slots).into(),
    });
    Ok(PlacementModel {
        nodes: Attr::Known(nodes.collect()),
        report: planner::report::render_markdown(report).into(),
        summary: report.summary.clone().into(),
        survives_any_zone_loss: report.survives_any_zone.into(),
        warnings: planned.warnings.clone().into(),
        json: json.into(),
        ..config
    })
}

#[async_trait]
impl DataSource for PlacementDataSource {
    type Model = PlacementModel;

    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    async fn validate(&self, _ctx: &Context, config: &PlacementModel) -> Diagnostics {
        match topology::request(&config.topology) {
            Ok(Some(req)) => topology::validate(&req),
            Ok(None) => Diagnostics::new(),
            Err(d) => d,
        }
    }

    async fn read(
        &self,
        _ctx: &Context,
        config: PlacementModel,
    ) -> Result<PlacementModel, Diagnostics> {
        let Some(req) = topology::request(&config.topology)? else {
            return Err(Diagnostic::error(
                "redisha_placement: configuration not fully known",
                "Terraform reads data sources only with known configuration; this is a bug.",
            )
            .into());
        };
        // The planner is CPU-bound (1,000 shards take a while): keep it off the gRPC threads.
        tokio::task::spawn_blocking(move || compute(config, &req))
            .await
            .map_err(|e| {
                Diagnostics::from(Diagnostic::error(
                    "Internal error in the placement planner",
                    e.to_string(),
                ))
            })?
    }
}
