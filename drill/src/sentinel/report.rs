//! The report of a sentinel-mode drill: the writes Sentinel-aware traffic saw, what a client
//! left beside a cut-off primary saw, the planner's row for this failure next to what
//! happened, and the restore. Rendered as text, markdown or JSON.

use std::fmt::Write as _;

use redisha_planner::sentinel::SentinelFailure;
use serde::{Deserialize, Serialize};

use crate::failure::Failure;
use crate::report::{restore_and_verdict, Restore};

/// The numbers prediction and observation are compared on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentinelVerdict {
    /// Sentinel promoted a replica.
    pub failover: bool,
    /// Some primary accepted writes at the end of the window.
    pub writable: bool,
    /// The old primary, cut off, still accepted writes at the end of the window (partitions).
    pub isolated_primary_accepts_writes: bool,
}

/// What the old primary did while it was cut off, as a client on its side saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolatedPrimary {
    pub node: String,
    /// Writes it accepted after the cut (none of them can reach a replica: WAIT times out).
    pub accepted: u64,
    /// Of those, WAIT reported every replica (only writes already in flight as the cut landed).
    pub acked: u64,
    /// Of those, not found after the heal and the restore.
    pub lost_after_heal: u64,
    /// Its acknowledged writes (before the cut too) not found after the restore: must be 0.
    pub acked_lost: u64,
    /// Writes it refused (`NOREPLICAS`: `min-replicas-to-write`).
    pub refused: u64,
    /// Its first refusal, in ms after the cut; `None`: it never refused within the window.
    pub refused_after_ms: Option<f64>,
    /// Its last accepted write, in ms after the cut.
    pub last_accepted_after_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentinelDrillReport {
    pub master_name: String,
    pub failure: Failure,
    pub label: String,
    pub down_after_ms: u64,
    pub min_replicas_to_write: u32,
    pub min_replicas_max_lag: u32,
    pub wait_ms: u64,
    pub hit: Vec<String>,
    /// The planner's row for this failure, the deployment as placed.
    pub prediction: SentinelFailure,
    pub predicted: SentinelVerdict,
    pub observed: SentinelVerdict,
    pub disagreements: Vec<String>,
    /// From the failure until a majority of the sentinels named another primary.
    pub failover_after_ms: Option<f64>,
    /// The longest time without a write that was accepted *and is still there* after the
    /// restore: the outage an application sees (a cut-off primary's accepted writes are lost).
    pub write_outage_ms: f64,
    /// The longest time without an accepted write, kept or not.
    pub longest_accepted_gap_ms: f64,
    pub writes_acked: u64,
    pub writes_unacked: u64,
    pub writes_failed: u64,
    pub acked_lost: u64,
    pub unacked_lost: u64,
    /// The node that took the Sentinel-following writer's last write in the window.
    pub primary_at_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolated: Option<IsolatedPrimary>,
    pub failed_at_unix_ms: f64,
    pub healed_at_unix_ms: f64,
    pub restore: Restore,
}

impl SentinelDrillReport {
    /// Prediction and observation agree, no acknowledged write was lost (the isolated side's
    /// included) and the deployment is back to its planned layout.
    pub fn passed(&self) -> bool {
        self.disagreements.is_empty() && self.acked_lost_total() == 0 && self.restore.planned_layout
    }

    pub fn acked_lost_total(&self) -> u64 {
        self.acked_lost + self.isolated.as_ref().map_or(0, |i| i.acked_lost)
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("not reached".into(), |v| format!("{v:.0} ms"))
}

fn verdict(v: &SentinelVerdict) -> String {
    format!(
        "failover {}, writable {}, cut-off primary accepts writes {}",
        v.failover, v.writable, v.isolated_primary_accepts_writes
    )
}

pub fn render_text(r: &SentinelDrillReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "drill: {} on {} (sentinel mode)", r.label, r.master_name);
    let _ = writeln!(
        o,
        "down-after-milliseconds {}, min-replicas-to-write {} (max lag {} s), WAIT timeout {} ms; hit: {}",
        r.down_after_ms,
        r.min_replicas_to_write,
        r.min_replicas_max_lag,
        r.wait_ms,
        r.hit.join(", ")
    );
    let _ = writeln!(o, "planner: {} ({})", r.prediction.label, r.prediction.why);
    let _ = writeln!(o, "predicted: {}", verdict(&r.predicted));
    let _ = writeln!(o, "observed:  {}", verdict(&r.observed));
    let _ = writeln!(
        o,
        "failover announced after {}; write outage {:.0} ms (accepted-write gap {:.0} ms); writes acked {}, unacked {}, failed {}; acked lost {}, unacked lost {}; primary at the end {}",
        ms(r.failover_after_ms),
        r.write_outage_ms,
        r.longest_accepted_gap_ms,
        r.writes_acked,
        r.writes_unacked,
        r.writes_failed,
        r.acked_lost,
        r.unacked_lost,
        r.primary_at_end.as_deref().unwrap_or("none")
    );
    if let Some(i) = &r.isolated {
        let _ = writeln!(
            o,
            "cut-off primary {}: accepted {} after the cut ({} acknowledged), {} of them lost after heal; refused {} (first after {}); last accepted after {}",
            i.node,
            i.accepted,
            i.acked,
            i.lost_after_heal,
            i.refused,
            ms(i.refused_after_ms),
            ms(i.last_accepted_after_ms)
        );
    }
    restore_and_verdict(
        &mut o,
        &r.restore,
        &r.disagreements,
        if r.passed() { "pass" } else { "FAIL" },
    );
    o
}

pub fn render_markdown(r: &SentinelDrillReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## Drill: {} on `{}` (sentinel mode)\n",
        r.label, r.master_name
    );
    let _ = writeln!(
        o,
        "down-after-milliseconds {}, min-replicas-to-write {} (max lag {} s); hit: {}\n\nPlanner: {}\n",
        r.down_after_ms,
        r.min_replicas_to_write,
        r.min_replicas_max_lag,
        r.hit.join(", "),
        r.prediction.why
    );
    let _ = writeln!(o, "| | predicted | observed |\n|---|---|---|");
    let (p, b) = (&r.predicted, &r.observed);
    let _ = writeln!(o, "| failover | {} | {} |", p.failover, b.failover);
    let _ = writeln!(o, "| writable | {} | {} |", p.writable, b.writable);
    let _ = writeln!(
        o,
        "| cut-off primary accepts writes | {} | {} |\n",
        p.isolated_primary_accepts_writes, b.isolated_primary_accepts_writes
    );
    let _ = writeln!(
        o,
        "Failover announced after {}; write outage {:.0} ms; acked {} / unacked {} / failed {}; acked lost {}, unacked lost {}.",
        ms(r.failover_after_ms),
        r.write_outage_ms,
        r.writes_acked,
        r.writes_unacked,
        r.writes_failed,
        r.acked_lost,
        r.unacked_lost
    );
    if let Some(i) = &r.isolated {
        let _ = writeln!(
            o,
            "\nCut-off primary `{}`: accepted {} ({} acknowledged, {} lost after heal), refused {} (first after {}).",
            i.node,
            i.accepted,
            i.acked,
            i.lost_after_heal,
            i.refused,
            ms(i.refused_after_ms)
        );
    }
    let _ = writeln!(
        o,
        "\nRestore: {:.0} ms, planned layout: {}.",
        r.restore.took_ms,
        if r.restore.planned_layout {
            "yes"
        } else {
            "no"
        }
    );
    for d in &r.disagreements {
        let _ = writeln!(o, "\n**Disagrees:** {d}");
    }
    let _ = writeln!(
        o,
        "\n**Result: {}**",
        if r.passed() { "pass" } else { "fail" }
    );
    o
}

pub fn render_json(r: &SentinelDrillReport) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
