//! From the traffic log to the report's numbers: gaps, counts, what was writable at the end of
//! the failure, and the prediction next to the observation.

use redisha_cluster::ClusterState;
use redisha_planner::FailureOutcome;

use crate::load::{Event, Op, ShardLoad};
use crate::report::{CutSide, ShardReport, Verdict};

/// The failure's timeline, in ms since the drill started, and what kind of window it was.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub failed_at: f64,
    pub healed_at: f64,
    /// Every node outside the failure reached `cluster_state:ok` within the window.
    pub survivors_ok: bool,
    /// A partition: masters on the cut side get their `CutSide` figures.
    pub partition: bool,
}

/// A shard counts as writable at the end of the window when a node outside the failure
/// accepted one of its writes in this last stretch of it.
const END_STRETCH_MS: f64 = 500.0;

pub(crate) fn longest_gap(times: &[f64], from: f64, to: f64) -> f64 {
    // The last success before the failure opens the first gap.
    let mut last = times
        .iter()
        .copied()
        .filter(|t| *t < from)
        .fold(from, f64::max);
    if !times.iter().any(|t| *t < from) {
        last = from;
    }
    let mut longest: f64 = 0.0;
    for &t in times.iter().filter(|t| **t >= from && **t <= to) {
        longest = longest.max(t - last);
        last = t;
    }
    longest.max(to - last)
}

/// The what-if numbers of the planner's outcome, with the shards it keeps writable.
pub fn predicted(state: &ClusterState, hit: &[String], p: &FailureOutcome) -> Verdict {
    let shards: std::collections::BTreeSet<u32> = state.nodes.iter().map(|n| n.shard).collect();
    let writable_shards = shards
        .into_iter()
        .filter(|s| p.master_majority_survives && !p.shards_without_copy.contains(s))
        .filter(|s| {
            state
                .nodes
                .iter()
                .any(|n| n.shard == *s && !hit.contains(&n.name))
        })
        .collect();
    Verdict {
        masters_lost: p.masters_lost,
        replicas_promoted: p.replicas_promoted,
        master_majority_survives: p.master_majority_survives,
        writable_slots: p.writable_slots,
        writable_shards,
    }
}

pub struct Scored {
    pub shards: Vec<ShardReport>,
    pub observed: Verdict,
}

/// Per shard figures and the observed verdict. `lost` holds, per shard, the (acknowledged,
/// unacknowledged) sequence numbers not found after the restore.
pub fn score(
    state: &ClusterState,
    loads: &[ShardLoad],
    events: &[Event],
    hit: &[String],
    prediction: &Verdict,
    window: Window,
    lost: &[(Vec<u64>, Vec<u64>)],
) -> Scored {
    let mut shards = Vec::new();
    let mut observed = Verdict {
        masters_lost: 0,
        replicas_promoted: 0,
        master_majority_survives: window.survivors_ok,
        writable_slots: 0,
        writable_shards: Vec::new(),
    };
    for (load, (acked_lost, unacked_lost)) in loads.iter().zip(lost) {
        let master = &load.nodes[load.master].name;
        let master_hit = hit.contains(master);
        if master_hit {
            observed.masters_lost += 1;
        }
        let mine = |op| {
            events
                .iter()
                .filter(move |e: &&Event| e.shard == load.shard && e.op == op)
        };
        let in_window = |e: &&Event| e.t_ms >= window.failed_at && e.t_ms <= window.healed_at;
        let ok_times = |op| -> Vec<f64> { mine(op).filter(|e| e.ok).map(|e| e.t_ms).collect() };
        let writes: Vec<&Event> = mine(Op::Write).collect();
        let end: Vec<&&Event> = writes
            .iter()
            .filter(|e| {
                e.ok && e.t_ms > window.healed_at - END_STRETCH_MS && e.t_ms <= window.healed_at
            })
            .collect();
        let serving = writes
            .iter()
            .rfind(|e| e.ok && e.t_ms <= window.healed_at)
            .map(|e| e.node.clone());
        let observed_writable = end.iter().any(|e| !hit.contains(&e.node));
        if observed_writable {
            observed.writable_shards.push(load.shard);
            let slots: u32 = state
                .nodes
                .iter()
                .filter(|n| n.shard == load.shard)
                .flat_map(|n| n.slots.iter().map(|r| r.len()))
                .sum();
            observed.writable_slots += slots;
            if master_hit
                && serving
                    .as_ref()
                    .is_some_and(|s| s != master && !hit.contains(s))
            {
                observed.replicas_promoted += 1;
            }
        }
        let cut_side = (window.partition && master_hit).then(|| {
            let after: Vec<&&Event> = writes
                .iter()
                .filter(|e| in_window(e) && &e.node == master)
                .collect();
            let accepted: Vec<&&&Event> = after.iter().filter(|e| e.ok).collect();
            CutSide {
                refused_after_ms: after
                    .iter()
                    .find(|e| !e.ok && !e.error.as_deref().unwrap_or("").contains("no reply"))
                    .map(|e| e.t_ms - window.failed_at),
                accepted_after_cut: accepted.len() as u64,
                acked_after_cut: accepted.iter().filter(|e| e.acked).count() as u64,
                lost_after_heal: accepted
                    .iter()
                    .filter(|e| acked_lost.contains(&e.seq) || unacked_lost.contains(&e.seq))
                    .count() as u64,
            }
        });
        shards.push(ShardReport {
            shard: load.shard,
            planned_master: master.clone(),
            master_hit,
            longest_write_gap_ms: longest_gap(
                &ok_times(Op::Write),
                window.failed_at,
                window.healed_at,
            ),
            writes_acked: writes.iter().filter(|e| e.ok && e.acked).count() as u64,
            writes_unacked: writes.iter().filter(|e| e.ok && !e.acked).count() as u64,
            writes_failed: writes.iter().filter(|e| !e.ok).count() as u64,
            acked_lost: acked_lost.len() as u64,
            unacked_lost: unacked_lost.len() as u64,
            longest_read_gap_ms: longest_gap(
                &ok_times(Op::Read),
                window.failed_at,
                window.healed_at,
            ),
            reads_failed: mine(Op::Read).filter(|e| !e.ok).count() as u64,
            serving_at_end: serving,
            predicted_writable: prediction.writable_shards.contains(&load.shard),
            observed_writable,
            cut_side,
        });
    }
    Scored { shards, observed }
}

/// Where prediction and observation differ, one line each.
pub fn disagreements(p: &Verdict, o: &Verdict) -> Vec<String> {
    let mut out = Vec::new();
    if p.replicas_promoted != o.replicas_promoted {
        out.push(format!(
            "replicas promoted: predicted {}, observed {}",
            p.replicas_promoted, o.replicas_promoted
        ));
    }
    if p.master_majority_survives != o.master_majority_survives {
        out.push(format!(
            "master majority on the side that carries on: predicted {}, observed {} (cluster_state:ok on its nodes)",
            p.master_majority_survives, o.master_majority_survives
        ));
    }
    if p.writable_shards != o.writable_shards || p.writable_slots != o.writable_slots {
        out.push(format!(
            "writable: predicted {} slots (shards {:?}), observed {} slots (shards {:?})",
            p.writable_slots, p.writable_shards, o.writable_slots, o.writable_shards
        ));
    }
    if p.masters_lost != o.masters_lost {
        out.push(format!(
            "masters lost: predicted {}, observed {}",
            p.masters_lost, o.masters_lost
        ));
    }
    out
}
