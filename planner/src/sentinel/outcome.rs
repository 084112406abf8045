//! What each failure does to a sentinel-mode deployment: every host lost, every zone lost, and
//! every declared partition (both sides keep running, cut off from each other).

use serde::{Deserialize, Serialize};

use crate::model::Topology;
use crate::placement::{Placement, Role};
use crate::report::FailureKind;
use crate::request::SentinelSpec;

use super::Sentinel;

/// The outcome of one failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelFailure {
    pub kind: FailureKind,
    /// Host, zone or partition name.
    pub name: String,
    /// `host a1`, `zone z1`, `partition p: z1 cut off`.
    pub label: String,
    /// Sentinels that can still talk to each other on the side that matters: for a lost host
    /// or zone, the rest; for a partition, the side away from the primary.
    pub sentinels_left: u32,
    /// Sentinels a failover needs: max(quorum, majority).
    pub sentinels_needed: u32,
    /// The primary is lost (host or zone) or cut off from the other side (partition).
    pub primary_lost: bool,
    /// Sentinel promotes a replica.
    pub failover: bool,
    /// After the failure some primary accepts writes (min-replicas-to-write met).
    pub writable: bool,
    /// Partitions only: where the old primary keeps running cut off after a failover elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolated_primary: Option<String>,
    /// That isolated primary still accepts writes (it has enough replicas on its side): they are
    /// discarded when the partition heals and Sentinel turns it into a replica.
    #[serde(default)]
    pub isolated_primary_accepts_writes: bool,
    /// Writes go on, and no acknowledged write is thrown away later.
    pub survives: bool,
    /// One sentence: why it survives or not.
    pub why: String,
    /// The host of the primary this row assumes: the planned one, or the one (after earlier
    /// failovers) for which this failure goes worst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_host: Option<String>,
}

impl SentinelFailure {
    /// How bad the outcome is, worst 0: the sentinels cannot act, then writes stop, then
    /// survived. In a partition both sides keep running, so only survival ranks there.
    fn rank(&self) -> u8 {
        match (self.survives, self.kind) {
            (true, _) => 2,
            (false, FailureKind::PartitionSide) => 1,
            (false, _) => u8::from(self.quorum_ok()),
        }
    }

    /// The failure leaves the sentinels able to act: the primary was not lost, or a replica was
    /// promoted. Placement prefers this even where min-replicas-to-write stops writes after.
    pub fn quorum_ok(&self) -> bool {
        !self.primary_lost || self.failover
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelReport {
    /// The line a reviewer reads first.
    pub summary: String,
    pub sentinels: u32,
    pub quorum: u32,
    pub majority: u32,
    pub min_replicas_to_write: u32,
    pub failures: Vec<SentinelFailure>,
    pub survives_any_host: bool,
    pub survives_any_zone: bool,
    /// What would make the failures that are not survived survivable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advice: Vec<String>,
}

/// Who is where, as host indices.
struct Layout {
    primary: Option<usize>,
    replicas: Vec<usize>,
    sentinels: Vec<usize>,
}

impl Layout {
    /// The same nodes with each replica in turn as the primary (the planned primary a replica).
    fn with_other_primaries(&self) -> Vec<Layout> {
        let Some(primary) = self.primary else {
            return Vec::new();
        };
        (0..self.replicas.len())
            .map(|i| {
                let mut replicas = self.replicas.clone();
                let promoted = std::mem::replace(&mut replicas[i], primary);
                Layout {
                    primary: Some(promoted),
                    replicas,
                    sentinels: self.sentinels.clone(),
                }
            })
            .collect()
    }

    fn of(topo: &Topology, placement: &Placement, sentinels: &[Sentinel]) -> Layout {
        let host = |name: &str| topo.host_index(name);
        Layout {
            primary: placement
                .nodes
                .iter()
                .find(|n| n.role == Role::Master)
                .and_then(|n| host(&n.host)),
            replicas: placement
                .nodes
                .iter()
                .filter(|n| n.role == Role::Replica)
                .filter_map(|n| host(&n.host))
                .collect(),
            sentinels: sentinels.iter().filter_map(|s| host(&s.host)).collect(),
        }
    }
}

/// What one group of hosts (those `alive`) can do, counted once per failure.
struct Side {
    sentinels: u32,
    replicas: u32,
    primary: bool,
}

impl Side {
    fn count(layout: &Layout, alive: &dyn Fn(usize) -> bool) -> Side {
        Side {
            sentinels: layout.sentinels.iter().filter(|&&h| alive(h)).count() as u32,
            replicas: layout.replicas.iter().filter(|&&h| alive(h)).count() as u32,
            primary: layout.primary.is_some_and(alive),
        }
    }
}

pub(crate) fn analyse(
    topo: &Topology,
    spec: &SentinelSpec,
    placement: &Placement,
    sentinels: &[Sentinel],
) -> SentinelReport {
    let planned = Layout::of(topo, placement, sentinels);
    // Failovers move the primary, and the sentinels stay where they are: a failure counts as
    // survived only if it is survived whichever data node is the primary when it happens. The
    // planned primary is tried first, so a row shows it unless another primary does worse
    // (`SentinelFailure::rank`).
    let mut failures = failures_of(topo, spec, &planned);
    for other in planned.with_other_primaries() {
        for (kept, candidate) in failures.iter_mut().zip(failures_of(topo, spec, &other)) {
            if candidate.rank() < kept.rank() {
                *kept = candidate;
            }
        }
    }
    let all = |kind: FailureKind| {
        failures
            .iter()
            .filter(|f| f.kind == kind)
            .all(|f| f.survives)
    };
    let survives_any_host = all(FailureKind::Host);
    let survives_any_zone = all(FailureKind::Zone);
    let advice = advise(topo, spec, &planned, &failures);
    let summary = summarise(spec, &failures, survives_any_host, survives_any_zone);
    SentinelReport {
        summary,
        sentinels: planned.sentinels.len() as u32,
        quorum: spec.quorum(),
        majority: spec.majority(),
        min_replicas_to_write: spec.min_replicas_to_write,
        failures,
        survives_any_host,
        survives_any_zone,
        advice,
    }
}

/// Every failure with the placement's own primary (no worst case over other primaries).
pub(crate) fn failures_as_placed(
    topo: &Topology,
    spec: &SentinelSpec,
    placement: &Placement,
    sentinels: &[Sentinel],
) -> Vec<SentinelFailure> {
    failures_of(topo, spec, &Layout::of(topo, placement, sentinels))
}

/// Every host, zone and declared partition failure, for one primary position.
fn failures_of(topo: &Topology, spec: &SentinelSpec, layout: &Layout) -> Vec<SentinelFailure> {
    let mut failures = Vec::new();
    let primary_name = layout.primary.map(|h| topo.hosts[h].name.clone());
    for (h, host) in topo.hosts.iter().enumerate() {
        let rest = Side::count(layout, &|x| x != h);
        failures.push(loss(
            spec,
            FailureKind::Host,
            &host.name,
            format!("host {}", host.name),
            &rest,
        ));
    }
    for (z, zone) in topo.zones.iter().enumerate() {
        let rest = Side::count(layout, &|x| topo.hosts[x].zone != z);
        failures.push(loss(
            spec,
            FailureKind::Zone,
            &zone.name,
            format!("zone {}", zone.name),
            &rest,
        ));
    }
    for part in &topo.partitions {
        let on_declared = |h: usize| part.in_side[topo.hosts[h].zone];
        let declared = Side::count(layout, &on_declared);
        let other = Side::count(layout, &|h| !on_declared(h));
        let labels = (
            part.side_label(&topo.zones, true),
            part.side_label(&topo.zones, false),
        );
        failures.push(split(
            spec,
            &part.name,
            format!("partition {}: {} cut off", part.name, labels.0),
            (&declared, &labels.0),
            (&other, &labels.1),
        ));
    }
    for f in &mut failures {
        f.primary_host = primary_name.clone();
    }
    failures
}

/// A host or zone is gone; `rest` is everything else, still connected.
fn loss(
    spec: &SentinelSpec,
    kind: FailureKind,
    name: &str,
    label: String,
    rest: &Side,
) -> SentinelFailure {
    let needed = spec.needed();
    let mrw = spec.min_replicas_to_write;
    let (failover, writable, why) = if rest.primary {
        let writable = rest.replicas >= mrw;
        let why = if writable {
            "the primary is untouched and keeps enough replicas to accept writes".to_string()
        } else {
            format!(
                "the primary keeps {} replica(s), fewer than min_replicas_to_write = {mrw}, so it refuses writes until a replica is back",
                rest.replicas
            )
        };
        (false, writable, why)
    } else if rest.sentinels < needed {
        (
            false,
            false,
            format!(
                "the primary is lost and {} of {} sentinels are left, fewer than the {needed} a failover needs: no failover",
                rest.sentinels, spec.count
            ),
        )
    } else if rest.replicas == 0 {
        (
            false,
            false,
            "the primary is lost with every replica: nothing to promote".to_string(),
        )
    } else {
        let left = rest.replicas - 1;
        let writable = left >= mrw;
        let why = if writable {
            format!(
                "{} of {} sentinels promote a replica, which keeps {left} replica(s) and accepts writes",
                rest.sentinels, spec.count
            )
        } else {
            format!(
                "{} of {} sentinels promote a replica, but it keeps {left} replica(s), fewer than min_replicas_to_write = {mrw}, so it refuses writes until a replica is back",
                rest.sentinels, spec.count
            )
        };
        (true, writable, why)
    };
    SentinelFailure {
        kind,
        name: name.to_string(),
        label,
        sentinels_left: rest.sentinels,
        sentinels_needed: needed,
        primary_lost: !rest.primary,
        failover,
        writable,
        isolated_primary: None,
        isolated_primary_accepts_writes: false,
        survives: writable,
        why,
        primary_host: None,
    }
}

/// Both sides run on, cut off from each other.
fn split(
    spec: &SentinelSpec,
    name: &str,
    label: String,
    a: (&Side, &String),
    b: (&Side, &String),
) -> SentinelFailure {
    let needed = spec.needed();
    let mrw = spec.min_replicas_to_write;
    // The side with the primary, and the other one (a primary on neither: a placement without
    // one; treat the declared side as the primary's, which then has nothing to run).
    let (home, away) = if b.0.primary { (b, a) } else { (a, b) };
    let old_accepts = home.0.primary && home.0.replicas >= mrw;
    let failover = away.0.sentinels >= needed && away.0.replicas >= 1;
    let new_writable = failover && away.0.replicas > mrw;
    let (writable, survives, isolated, why) = if failover {
        let why = match (new_writable, old_accepts) {
            (true, false) => format!(
                "{} promotes a replica ({} of {} sentinels there) and takes the writes; the old primary on {} refuses writes once its replicas are out of reach (min_replicas_to_write = {mrw})",
                away.1, away.0.sentinels, spec.count, home.1
            ),
            (_, true) => format!(
                "{} promotes a replica, but the old primary on {} keeps {} replica(s) there and goes on accepting writes, which are discarded when the partition heals: raise min_replicas_to_write above {}",
                away.1, home.1, home.0.replicas, home.0.replicas
            ),
            (false, false) => format!(
                "{} promotes a replica, but it keeps {} replica(s), fewer than min_replicas_to_write = {mrw}, and the old primary on {} refuses writes too",
                away.1,
                away.0.replicas - 1,
                home.1
            ),
        };
        (
            new_writable || old_accepts,
            new_writable && !old_accepts,
            Some(home.1.clone()),
            why,
        )
    } else {
        let why = if old_accepts {
            format!(
                "{} keeps the primary with {} replica(s) and the writes; {} cannot fail over ({} of {} sentinels, {} replica(s))",
                home.1, home.0.replicas, away.1, away.0.sentinels, spec.count, away.0.replicas
            )
        } else {
            format!(
                "{} keeps the primary but only {} replica(s), fewer than min_replicas_to_write = {mrw}, and {} cannot fail over ({} of {} sentinels, needs {needed}; {} replica(s)): no side takes writes",
                home.1, home.0.replicas, away.1, away.0.sentinels, spec.count, away.0.replicas
            )
        };
        (old_accepts, old_accepts, None, why)
    };
    SentinelFailure {
        kind: FailureKind::PartitionSide,
        name: name.to_string(),
        label,
        sentinels_left: away.0.sentinels,
        sentinels_needed: needed,
        primary_lost: true,
        failover,
        writable,
        isolated_primary: isolated,
        isolated_primary_accepts_writes: failover && old_accepts,
        survives,
        why,
        primary_host: None,
    }
}

fn summarise(
    spec: &SentinelSpec,
    failures: &[SentinelFailure],
    any_host: bool,
    any_zone: bool,
) -> String {
    let yes = |b: bool| if b { "yes" } else { "NO" };
    let partitions: Vec<&SentinelFailure> = failures
        .iter()
        .filter(|f| f.kind == FailureKind::PartitionSide)
        .collect();
    let mut s = format!(
        "Sentinel mode, {} sentinels (quorum {}, failover needs {}): survives any one host: {}; any one zone: {}",
        spec.count,
        spec.quorum(),
        spec.needed(),
        yes(any_host),
        yes(any_zone)
    );
    if !partitions.is_empty() {
        let ok = partitions.iter().filter(|f| f.survives).count();
        s.push_str(&format!(
            "; declared partitions: {ok} of {} keep exactly one writable primary",
            partitions.len()
        ));
    }
    s
}

/// A fix for each kind of shortfall, most useful first.
fn advise(
    topo: &Topology,
    spec: &SentinelSpec,
    layout: &Layout,
    failures: &[SentinelFailure],
) -> Vec<String> {
    let mut advice = Vec::new();
    let zone_losses: Vec<&SentinelFailure> = failures
        .iter()
        .filter(|f| f.kind == FailureKind::Zone)
        .collect();
    let zones_with_sentinels = {
        let mut zs: Vec<usize> = layout
            .sentinels
            .iter()
            .map(|&h| topo.hosts[h].zone)
            .collect();
        zs.sort_unstable();
        zs.dedup();
        zs.len()
    };
    if let Some(f) = zone_losses.iter().find(|f| !f.quorum_ok()) {
        if zones_with_sentinels < 3 {
            advice.push(format!(
                "with sentinels in {zones_with_sentinels} zone(s), losing {} leaves {} of {} sentinels, fewer than the {} a failover needs; no spread over {zones_with_sentinels} zone(s) can avoid it, since one of them always holds at least half. Add a third zone holding just a sentinel: one small host (memory_mb >= {}) is enough",
                f.label, f.sentinels_left, spec.count, spec.needed(), spec.memory_mb
            ));
        } else {
            advice.push(format!(
                "losing {} leaves {} of {} sentinels, fewer than the {} a failover needs: give the other zones room for a sentinel (memory_mb >= {} left over on a host)",
                f.label, f.sentinels_left, spec.count, spec.needed(), spec.memory_mb
            ));
        }
    }
    if let Some(f) = zone_losses
        .iter()
        .find(|f| f.quorum_ok() && !f.writable && layout.primary.is_some())
    {
        let copies = 1 + layout.replicas.len() as u32;
        advice.push(format!(
            "after losing {}, the primary is left with fewer replicas than min_replicas_to_write = {} and refuses writes until one is back. Keep min_replicas_to_write + 1 replicas outside any one zone: replicas = {} with copies in {} zones (now {copies} copies), or set min_replicas_to_write = 0 and accept that a primary cut off from the rest may take writes that are later discarded",
            f.label,
            spec.min_replicas_to_write,
            spec.min_replicas_to_write + 1,
            spec.min_replicas_to_write + 2
        ));
    }
    if failures
        .iter()
        .any(|f| f.kind == FailureKind::PartitionSide && f.isolated_primary_accepts_writes)
    {
        advice.push(format!(
            "in a declared partition the old primary keeps enough replicas on its side to accept writes that the other side's failover discards; raise min_replicas_to_write (now {}) so that it needs replicas on both sides",
            spec.min_replicas_to_write
        ));
    }
    advice
}
