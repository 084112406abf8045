//! The placement arguments shared by `data "redisha_placement"` and `resource
//! "redisha_cluster"`: their schema (`TopologyModel`, flattened into both), the planner
//! request they make, the HCL paths of the planner's field paths and the diagnostics of
//! planner errors, so both report a problem the same way.

use redisha_planner as planner;
use redisha_planner::{ClusterSpec, HostSpec, PartitionSpec, Request, Spread, ZoneSpec};

use crate::model;
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::model::AllKnown;
use crate::tfplugin::framework::Attr;
use crate::tfplugin::schema::Block;

model! {
    pub struct HostModel("A machine that can run redis-server nodes.") {
        pub name: Attr<String> = required("Host name, unique in the whole topology."),
        pub memory_mb: Attr<u64> = required("Memory available to Redis on this host, in MiB."),
        pub max_nodes: Attr<u32> = optional("Most redis-server nodes this host may run. Default 1."),
        pub rack: Attr<String> = optional(
            "Rack (failure domain inside the zone). Needed for `spread = \"rack\"`.",
        ),
    }
}

model! {
    pub struct ZoneModel("An availability zone.") {
        pub name: Attr<String> = required("Zone name, unique."),
        pub host: Attr<Vec<HostModel>> = list_block().min_items(1),
    }
}

model! {
    pub struct PartitionModel(
        "One side of a network split to analyse; zones not named are on the other side."
    ) {
        pub name: Attr<String> = required("Name of the scenario, used in the report."),
        pub side: Attr<Vec<String>> = required("Zones on this side of the split."),
    }
}

model! {
    pub struct SurviveModel(
        "A survival goal: the placement must keep a copy of every shard and a master majority through any \
         `zones` simultaneous zone losses and any `hosts` simultaneous host losses, or planning fails."
    ) {
        pub zones: Attr<u32> = optional("Zone losses to survive at once. Default 0 (losing one zone is survived whenever the topology allows). \
             Needs `spread = \"zone\"`, replicas >= zones and at least 2 x zones + 1 zones with room."),
        pub hosts: Attr<u32> = optional("Host losses to survive at once. Default 0."),
    }
}

model! {
    /// The planner's input as HCL.
    pub struct TopologyModel {
        pub shards: Attr<u32> = required("Number of shards (masters)."),
        pub replicas: Attr<u32> = required("Replicas per shard."),
        pub node_memory_mb: Attr<u64> = required("Memory each redis-server node needs, in MiB."),
        pub spread: Attr<String> = optional(
            "Failure domain two copies of one shard never share: `host`, `rack` or `zone` (default).",
        ),
        pub zone: Attr<Vec<ZoneModel>> = list_block().min_items(1),
        pub partition: Attr<Vec<PartitionModel>> = list_block(),
        pub survive: Attr<SurviveModel> = single_block(),
    }
}

/// For a schema whose zones may come from elsewhere (the aws driver's subnets): no block of
/// the topology is required.
pub fn blocks_optional(mut block: Block) -> Block {
    for b in &mut block.blocks {
        b.min_items = 0;
    }
    block
}

/// The planner's request. `Ok(None)` when a value is unknown (validation then checks only
/// what is known); `Err` for a `spread` that is not a failure domain.
pub fn request(t: &TopologyModel) -> Result<Option<Request>, Diagnostics> {
    let mut k = AllKnown::default();
    let shards = k.take(&t.shards);
    let replicas = k.take(&t.replicas);
    let node_memory_mb = k.take(&t.node_memory_mb);
    let spread = match k.take(&t.spread) {
        Some(s) => Some(s.parse::<Spread>().map_err(|msg| {
            Diagnostics::from(Diagnostic::error("Invalid spread", msg).at(AttrPath::attr("spread")))
        })?),
        None if t.spread.is_null() => Some(Spread::default()),
        None => None,
    };

    let mut zones = Vec::new();
    for z in k.take(&t.zone).unwrap_or_default() {
        let mut hosts = Vec::new();
        for h in k.take(&z.host).unwrap_or_default() {
            let (name, memory_mb) = (k.take(&h.name), k.take(&h.memory_mb));
            let (max_nodes, rack) = (k.take(&h.max_nodes), k.take(&h.rack));
            if let (Some(name), Some(memory_mb)) = (name, memory_mb) {
                hosts.push(HostSpec {
                    name,
                    memory_mb,
                    max_nodes: max_nodes.unwrap_or(1),
                    rack,
                });
            }
        }
        if let Some(name) = k.take(&z.name) {
            zones.push(ZoneSpec { name, hosts });
        }
    }

    let mut partitions = Vec::new();
    for p in k.take(&t.partition).unwrap_or_default() {
        let side = k.take(&p.side).unwrap_or_default();
        if let Some(name) = k.take(&p.name) {
            partitions.push(PartitionSpec { name, side });
        }
    }

    let survive = match k.take(&t.survive) {
        Some(g) => planner::Survive {
            zones: k.take(&g.zones).unwrap_or(0),
            hosts: k.take(&g.hosts).unwrap_or(0),
        },
        None => planner::Survive::default(),
    };

    if !k.all_known() {
        return Ok(None);
    }
    let (Some(shards), Some(replicas), Some(node_memory_mb), Some(spread)) =
        (shards, replicas, node_memory_mb, spread)
    else {
        return Ok(None);
    };
    Ok(Some(Request {
        cluster: ClusterSpec {
            shards,
            replicas,
            node_memory_mb,
            spread,
            survive,
        },
        zones,
        partitions,
        sentinel: None,
    }))
}

/// Maps a planner field path (`zones[1].hosts[3].memory_mb`, `cluster.shards`,
/// `partitions[0].side[1]`) onto the HCL attribute path (`zone[1].host[3].memory_mb`,
/// `shards`, `partition[0].side[1]`).
pub fn hcl_path(planner_path: &[planner::error::PathStep]) -> AttrPath {
    use planner::error::PathStep as P;
    let mut out = AttrPath::root();
    // Inside `survive`, `zones` and `hosts` are counts with the planner's names, not blocks.
    let mut in_goal = false;
    for (i, step) in planner_path.iter().enumerate() {
        match step {
            P::Field(f) if i == 0 && f == "cluster" => {}
            P::Field(f) if in_goal => out = out.then(f),
            P::Field(f) => {
                in_goal = f == "survive";
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

/// The planner's validation errors, each on its attribute.
pub fn validation_diags(errors: &planner::error::ValidationErrors) -> Diagnostics {
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

/// Any planner error as diagnostics.
pub fn plan_error_diags(e: planner::error::PlanError) -> Diagnostics {
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

/// The planner's own checks on a request (the same for the data source and the resource).
pub fn validate(request: &Request) -> Diagnostics {
    match planner::validate(request) {
        Ok(()) => Diagnostics::new(),
        Err(e) => validation_diags(&e),
    }
}

/// Slot ranges as Terraform shows them: `"start-end"`, inclusive.
pub fn slot_strings(slots: &[planner::SlotRange]) -> Vec<String> {
    slots
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect()
}
