//! What a survival goal (`cluster.survive`) needs, checked before planning, and the verdict on
//! a finished plan. The counting behind the needs: N lost zones (or hosts) must leave a copy of
//! every shard, so every shard needs N+1 copies (replicas >= N); and they must leave a strict
//! majority of the S masters, so any N zones hold fewer than S/2 masters. The N fullest of Z
//! zones hold at least N*S/Z of them, hence Z >= 2N+1 zones with room, and S >= 2N+1 shards.

use crate::error::{FieldError, Path, PlanError};
use crate::report::{GoalLevel, Report};
use crate::request::{Request, Spread};

/// Every unmet need of the goal, as field errors under `cluster.survive`.
pub(crate) fn check(req: &Request, errors: &mut Vec<FieldError>) {
    let c = &req.cluster;
    if c.node_memory_mb == 0 {
        return; // reported on its own; room cannot be counted
    }
    let fits = |memory_mb: u64, max_nodes: u32| memory_mb / c.node_memory_mb >= 1 && max_nodes >= 1;
    let path = Path::root().field("cluster").field("survive");
    if req.sentinel.is_some() {
        // Sentinel mode has one shard: the goal is checked on the sentinel report instead,
        // which counts single failures.
        for (level, n) in [("zones", c.survive.zones), ("hosts", c.survive.hosts)] {
            if n > 1 {
                errors.push(path.field(level).error(format!(
                    "sentinel mode is planned for single failures: survive.{level} must be 0 or 1, got {n}"
                )));
            }
        }
        return;
    }
    if c.survive.zones > 0 {
        let n = c.survive.zones;
        let zones_with_room = req
            .zones
            .iter()
            .filter(|z| z.hosts.iter().any(|h| fits(h.memory_mb, h.max_nodes)))
            .count() as u64;
        let need_zones = 2 * u64::from(n) + 1;
        // Room per zone once shards and replicas are raised to what the goal needs.
        let goal_nodes = u64::from(c.shards.max(2 * n + 1)) * u64::from(c.replicas.max(n) + 1);
        let per_zone = goal_nodes.div_ceil(need_zones.max(zones_with_room));
        if c.replicas < n
            || c.shards < 2 * n + 1
            || zones_with_room < need_zones
            || c.spread != Spread::Zone
        {
            errors.push(path.field("zones").error(format!(
                "surviving {n} zone(s) at once needs spread = \"zone\", replicas >= {n}, shards >= {} and at least {need_zones} zones with room for about {per_zone} nodes each (any {n} zones must keep fewer than half of the masters); here spread = \"{}\", replicas = {}, shards = {}, {zones_with_room} zone(s) with room",
                2 * n + 1,
                c.spread.as_str(),
                c.replicas,
                c.shards
            )));
        }
    }
    if c.survive.hosts > 0 {
        let m = c.survive.hosts;
        let hosts_with_room = req
            .zones
            .iter()
            .flat_map(|z| &z.hosts)
            .filter(|h| fits(h.memory_mb, h.max_nodes))
            .count() as u64;
        let need_hosts = 2 * u64::from(m) + 1;
        if c.replicas < m || c.shards < 2 * m + 1 || hosts_with_room < need_hosts {
            errors.push(path.field("hosts").error(format!(
                "surviving {m} host(s) at once needs replicas >= {m}, shards >= {} and at least {need_hosts} hosts with room for a node (any {m} hosts must keep fewer than half of the masters); here replicas = {}, shards = {}, {hosts_with_room} host(s) with room",
                2 * m + 1,
                c.replicas,
                c.shards
            )));
        }
    }
}

/// A plan whose report says a goal is not met is refused: the user asked for it.
pub(crate) fn verdict(req: &Request, report: &Report) -> Result<(), PlanError> {
    let Some(g) = report.goals.iter().find(|g| !g.met) else {
        return Ok(());
    };
    let s = req.cluster.shards;
    let fix = match g.level {
        GoalLevel::Zones => format!(
            "add zones or room in the emptier zones so that any {n} zones hold fewer than {half} of the {s} masters, or lower survive.zones",
            n = g.count,
            half = s.div_ceil(2)
        ),
        GoalLevel::Hosts => format!(
            "add hosts or room so that any {n} hosts hold fewer than {half} of the {s} masters, or lower survive.hosts",
            n = g.count,
            half = s.div_ceil(2)
        ),
    };
    Err(PlanError::Infeasible {
        constraint: format!(
            "cluster.survive.{}={}: no placement found that survives every combination; the worst, losing {}, leaves {}",
            g.level.as_str(),
            g.count,
            g.worst.label,
            crate::report::why(&g.worst, report.voting_masters)
        ),
        fix,
    })
}
