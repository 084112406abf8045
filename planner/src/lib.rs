//! redisha-planner: places Redis Cluster shards over zones, racks and hosts so that no shard
//! and its replicas share a failure domain, assigns hash slots, reports what every failure
//! would do and turns a change of placement into safe migration steps. Pure: no I/O.
//!
//! API CONTRACT (other crates build against these names; keep them):
//! - `parse_request(text, InputFormat) -> Result<Request, PlanError>`
//! - `validate(&Request) -> Result<(), ValidationErrors>` (every problem at once, with paths)
//! - `plan(&Request, previous: Option<&Placement>) -> Result<Plan, PlanError>`
//! - `analyse(&Request, &Placement) -> Report`
//! - `migrate::steps(current: &Placement, target: &Placement) -> Result<Vec<Step>, MigrateError>`
//! - `migrate_room::steps_within(current, target, &migrate_room::host_room(&request))`: the same, within host capacity
//! - `sentinel::place_sentinels(&Request, &Placement, previous: &[Sentinel]) -> Result<SentinelPlan, PlanError>`, `sentinel::analyse_sentinels`: sentinel mode (`Request.sentinel`)
//! - `Report::{summary, failures, survives_any_host, survives_any_zone}`, `report::render_markdown`, `report::render_text`

pub mod error;
mod fasthash;
mod host_balance;
pub mod migrate;
pub mod migrate_room;
pub mod model;
pub mod parse;
pub mod placement;
pub mod plan;
pub mod report;
pub mod request;
pub mod sentinel;
pub mod slots;
mod solver;
mod survive;
pub mod validate;

pub use error::{FieldError, PathStep, PlanError, ValidationErrors};
pub use migrate::{check_invariant, MigrateError, Step};
pub use parse::{parse_request, InputFormat};
pub use placement::{Node, Placement, Role, SlotRange, SLOT_COUNT};
pub use plan::{plan, plan_with_sentinels, Plan};
pub use report::{
    analyse, FailureKind, FailureOutcome, GoalLevel, GoalOutcome, PartitionVerdict, Report,
};
pub use request::{
    ClusterSpec, HostSpec, PartitionSpec, Request, SentinelSpec, Spread, Survive, ZoneSpec,
};
pub use sentinel::{Sentinel, SentinelPlan, SentinelReport};
pub use validate::{validate, validate_placement};
