//! Sentinel mode: one shard (a primary and its replicas) plus Redis Sentinel processes that
//! watch it and fail over. The data nodes are placed by the ordinary solver (one shard, copies
//! spread); this module places the sentinels and reports what every failure would do.
//!
//! The model of Sentinel used here (Redis Sentinel documentation, "Quorum" and "Replicas
//! election and priority"):
//! - a failover needs `quorum` sentinels to agree the primary is down, and a strict majority
//!   of all sentinels to elect the leader that runs it; so a side of a failure can fail over
//!   only with `max(quorum, majority)` sentinels and a replica;
//! - a primary with `min-replicas-to-write` refuses writes while fewer replicas are
//!   connected, so a primary cut off from its replicas stops taking writes that the other
//!   side's failover would later throw away (the Jepsen finding on Sentinel).

mod outcome;
mod place;
pub mod render;

pub use outcome::{SentinelFailure, SentinelReport};

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, Path, PlanError};
use crate::model::Topology;
use crate::placement::Placement;
use crate::request::{Request, SentinelSpec};

/// The most sentinels allowed: more adds gossip and election time, not safety.
pub const MAX_SENTINELS: u32 = 5;

/// One sentinel process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sentinel {
    /// Stable for the life of the process, like a node name.
    pub name: String,
    pub host: String,
    pub zone: String,
}

/// The sentinels of a plan and the report of what failures do to the deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentinelPlan {
    pub sentinels: Vec<Sentinel>,
    /// The quorum in effect ([`SentinelSpec::quorum`]).
    pub quorum: u32,
    pub report: SentinelReport,
}

/// Problems of the sentinel settings, as field errors under `sentinel`.
pub(crate) fn check(req: &Request, errors: &mut Vec<FieldError>) {
    let Some(spec) = &req.sentinel else {
        return;
    };
    let path = Path::root().field("sentinel");
    if req.cluster.shards != 1 {
        errors.push(Path::root().field("cluster").field("shards").error(format!(
            "sentinel mode runs one shard (a primary and its replicas); got shards = {}. Set shards = 1, or drop `sentinel` to run Redis Cluster",
            req.cluster.shards
        )));
    }
    if !(spec.count == 3 || spec.count == MAX_SENTINELS) {
        errors.push(path.field("count").error(format!(
            "must be 3 or {MAX_SENTINELS} (an odd count that a majority of can sit outside any one zone); got {}",
            spec.count
        )));
    }
    if let Some(q) = spec.quorum {
        if q == 0 || q > spec.count {
            errors.push(path.field("quorum").error(format!(
                "must be between 1 and count ({}); got {q}",
                spec.count
            )));
        }
    }
    if spec.memory_mb == 0 {
        errors.push(path.field("memory_mb").error("must be greater than 0"));
    }
    if spec.min_replicas_to_write > req.cluster.replicas {
        errors.push(path.field("min_replicas_to_write").error(format!(
            "is {} but the primary has only {} replica(s), so it would never accept a write; lower it or raise cluster.replicas",
            spec.min_replicas_to_write, req.cluster.replicas
        )));
    }
}

/// Place the sentinels for a data placement. `previous` sentinels stay where they are (under
/// their names) when their hosts still have room and keeping them survives as many failures
/// as a fresh choice.
pub fn place_sentinels(
    req: &Request,
    placement: &Placement,
    previous: &[Sentinel],
) -> Result<SentinelPlan, PlanError> {
    let spec = req.sentinel.unwrap_or_default();
    let topo = Topology::build(req);
    place_with(&topo, req, &spec, placement, previous)
}

pub(crate) fn place_with(
    topo: &Topology,
    req: &Request,
    spec: &SentinelSpec,
    placement: &Placement,
    previous: &[Sentinel],
) -> Result<SentinelPlan, PlanError> {
    let sentinels = place::choose(topo, req, spec, placement, previous)?;
    let report = outcome::analyse(topo, spec, placement, &sentinels);
    Ok(SentinelPlan {
        sentinels,
        quorum: spec.quorum(),
        report,
    })
}

/// The report of a given deployment (e.g. observed live, after failovers).
pub fn analyse_sentinels(
    req: &Request,
    placement: &Placement,
    sentinels: &[Sentinel],
) -> SentinelReport {
    let spec = req.sentinel.unwrap_or_default();
    outcome::analyse(&Topology::build(req), &spec, placement, sentinels)
}

/// Every failure's outcome for the deployment exactly as placed: the placement's primary as
/// the primary, not the worst primary a failover could leave (what a drill on a deployment in
/// its planned layout sees, where [`analyse_sentinels`] answers for any primary).
pub fn failures_as_placed(
    req: &Request,
    placement: &Placement,
    sentinels: &[Sentinel],
) -> Vec<SentinelFailure> {
    let spec = req.sentinel.unwrap_or_default();
    outcome::failures_as_placed(&Topology::build(req), &spec, placement, sentinels)
}

/// A survival goal (`cluster.survive`) in sentinel mode is checked on the sentinel report: a
/// plan that does not meet it is refused, with the report's fix.
pub(crate) fn verdict(req: &Request, report: &SentinelReport) -> Result<(), PlanError> {
    let goal = req.cluster.survive;
    let failing = |kind: crate::report::FailureKind| {
        report
            .failures
            .iter()
            .find(|f| f.kind == kind && !f.survives)
    };
    let miss = if goal.zones > 0 {
        failing(crate::report::FailureKind::Zone).map(|f| ("zones", f))
    } else {
        None
    }
    .or(if goal.hosts > 0 {
        failing(crate::report::FailureKind::Host).map(|f| ("hosts", f))
    } else {
        None
    });
    match miss {
        None => Ok(()),
        Some((level, f)) => {
            Err(PlanError::Infeasible {
                constraint: format!(
                    "cluster.survive.{level} = 1 in sentinel mode: losing {} is not survived: {}",
                    f.label, f.why
                ),
                fix: report.advice.first().cloned().unwrap_or_else(|| {
                    "add zones or hosts with room, or drop the goal".to_string()
                }),
            })
        }
    }
}
