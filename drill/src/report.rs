//! The drill's report: per shard what the traffic saw, the planner's prediction next to the
//! observation, and the restore. Rendered as text, markdown or JSON.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::failure::Failure;

/// The what-if report's numbers for this failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub masters_lost: u32,
    pub replicas_promoted: u32,
    pub master_majority_survives: bool,
    pub writable_slots: u32,
    /// Shards still writable from the side that carries on.
    pub writable_shards: Vec<u32>,
}

/// Writes a master accepted while its side was cut off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CutSide {
    /// The first refusal (e.g. CLUSTERDOWN) by the planned master after the cut, in ms from
    /// the cut; `None`: it never refused within the window.
    pub refused_after_ms: Option<f64>,
    pub accepted_after_cut: u64,
    pub acked_after_cut: u64,
    /// Of the accepted ones, not found after the restore.
    pub lost_after_heal: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    pub shard: u32,
    pub planned_master: String,
    /// The failure hit this shard's planned master.
    pub master_hit: bool,
    /// Longest time without an accepted write, from the failure to the end of its window.
    pub longest_write_gap_ms: f64,
    pub writes_acked: u64,
    /// Accepted by a master, but WAIT timed out before every replica had it.
    pub writes_unacked: u64,
    pub writes_failed: u64,
    pub acked_lost: u64,
    pub unacked_lost: u64,
    pub longest_read_gap_ms: f64,
    pub reads_failed: u64,
    /// The node that accepted the shard's last write in the window.
    pub serving_at_end: Option<String>,
    pub predicted_writable: bool,
    pub observed_writable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_side: Option<CutSide>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restore {
    pub took_ms: f64,
    pub actions: Vec<String>,
    /// Every node up in its planned role with its planned slots, the cluster converged.
    pub planned_layout: bool,
    pub drift: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub cluster: String,
    pub failure: Failure,
    pub label: String,
    pub node_timeout_ms: u64,
    pub wait_ms: u64,
    pub hit_nodes: Vec<String>,
    pub predicted: Verdict,
    pub observed: Verdict,
    pub disagreements: Vec<String>,
    /// From the failure until every node outside it said `cluster_state:ok` for good (within
    /// the window); `None`: not within the window.
    pub survivors_ok_after_ms: Option<f64>,
    /// From the heal until every node said `cluster_state:ok`.
    pub all_ok_after_heal_ms: Option<f64>,
    /// When the failure took hold and when it was healed, in ms since the Unix epoch: lines
    /// the drill's timeline up with other clients' and logs' (the drill's own figures are
    /// measured on a monotonic clock from its start).
    #[serde(default)]
    pub failed_at_unix_ms: f64,
    #[serde(default)]
    pub healed_at_unix_ms: f64,
    pub shards: Vec<ShardReport>,
    pub restore: Restore,
    /// Where every request was logged (JSON lines), if written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

impl DrillReport {
    pub fn acked_lost(&self) -> u64 {
        self.shards.iter().map(|s| s.acked_lost).sum()
    }

    /// The drill passed: prediction and observation agree, no acknowledged write was lost and
    /// the cluster is back to its planned layout.
    pub fn passed(&self) -> bool {
        self.disagreements.is_empty() && self.acked_lost() == 0 && self.restore.planned_layout
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("not reached".into(), |v| format!("{v:.0} ms"))
}

fn verdict_line(v: &Verdict) -> String {
    format!(
        "masters lost {}, replicas promoted {}, master majority {}, writable slots {} (shards {:?})",
        v.masters_lost,
        v.replicas_promoted,
        if v.master_majority_survives { "kept" } else { "lost" },
        v.writable_slots,
        v.writable_shards
    )
}

pub fn render_text(r: &DrillReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "drill: {} on cluster {}", r.label, r.cluster);
    let _ = writeln!(
        o,
        "cluster-node-timeout {} ms, WAIT timeout {} ms, hit nodes: {}",
        r.node_timeout_ms,
        r.wait_ms,
        r.hit_nodes.join(", ")
    );
    let _ = writeln!(o, "predicted: {}", verdict_line(&r.predicted));
    let _ = writeln!(o, "observed:  {}", verdict_line(&r.observed));
    let _ = writeln!(
        o,
        "cluster_state ok on the survivors after {}; everywhere after heal {}",
        ms(r.survivors_ok_after_ms),
        ms(r.all_ok_after_heal_ms)
    );
    for s in &r.shards {
        let _ = writeln!(
            o,
            "shard {} (master {}{}): longest write gap {:.0} ms; writes acked {}, unacked {}, failed {}; acked lost {}, unacked lost {}; longest read gap {:.0} ms; writable predicted {} observed {}",
            s.shard,
            s.planned_master,
            if s.master_hit { ", hit" } else { "" },
            s.longest_write_gap_ms,
            s.writes_acked,
            s.writes_unacked,
            s.writes_failed,
            s.acked_lost,
            s.unacked_lost,
            s.longest_read_gap_ms,
            s.predicted_writable,
            s.observed_writable
        );
        if let Some(c) = &s.cut_side {
            let _ = writeln!(
                o,
                "  cut off: refused writes after {}; accepted {} after the cut ({} acknowledged), {} of them lost after heal",
                ms(c.refused_after_ms),
                c.accepted_after_cut,
                c.acked_after_cut,
                c.lost_after_heal
            );
        }
    }
    restore_and_verdict(&mut o, &r.restore, &r.disagreements, r.passed());
    o
}

/// The end of a text report: the restore, its actions and drift, the disagreements, the result.
pub(crate) fn restore_and_verdict(
    o: &mut String,
    restore: &Restore,
    disagreements: &[String],
    passed: bool,
) {
    let _ = writeln!(
        o,
        "restore: {:.0} ms, planned layout {}{}",
        restore.took_ms,
        if restore.planned_layout { "yes" } else { "NO" },
        restore
            .error
            .as_ref()
            .map(|e| format!(" (error: {e})"))
            .unwrap_or_default()
    );
    for a in &restore.actions {
        let _ = writeln!(o, "  {a}");
    }
    for d in &restore.drift {
        let _ = writeln!(o, "  drift: {d}");
    }
    for d in disagreements {
        let _ = writeln!(o, "DISAGREES: {d}");
    }
    let _ = writeln!(o, "result: {}", if passed { "pass" } else { "FAIL" });
}

pub fn render_markdown(r: &DrillReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Drill: {} on `{}`\n", r.label, r.cluster);
    let _ = writeln!(
        o,
        "cluster-node-timeout {} ms, WAIT timeout {} ms; hit: {}\n",
        r.node_timeout_ms,
        r.wait_ms,
        r.hit_nodes.join(", ")
    );
    let _ = writeln!(o, "| | predicted | observed |\n|---|---|---|");
    let (p, b) = (&r.predicted, &r.observed);
    let _ = writeln!(
        o,
        "| masters lost | {} | {} |",
        p.masters_lost, b.masters_lost
    );
    let _ = writeln!(
        o,
        "| replicas promoted | {} | {} |",
        p.replicas_promoted, b.replicas_promoted
    );
    let _ = writeln!(
        o,
        "| master majority | {} | {} |",
        p.master_majority_survives, b.master_majority_survives
    );
    let _ = writeln!(
        o,
        "| writable slots | {} | {} |\n",
        p.writable_slots, b.writable_slots
    );
    let _ = writeln!(
        o,
        "| shard | master | hit | longest write gap | acked | unacked | failed | acked lost | unacked lost | read gap | writable (pred/obs) | cut side: refused after / accepted / lost |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for s in &r.shards {
        let cut = s.cut_side.as_ref().map_or("".into(), |c| {
            format!(
                "{} / {} / {}",
                ms(c.refused_after_ms),
                c.accepted_after_cut,
                c.lost_after_heal
            )
        });
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.0} ms | {} | {} | {} | {} | {} | {:.0} ms | {}/{} | {cut} |",
            s.shard,
            s.planned_master,
            if s.master_hit { "yes" } else { "" },
            s.longest_write_gap_ms,
            s.writes_acked,
            s.writes_unacked,
            s.writes_failed,
            s.acked_lost,
            s.unacked_lost,
            s.longest_read_gap_ms,
            s.predicted_writable,
            s.observed_writable
        );
    }
    let _ = writeln!(
        o,
        "\ncluster_state ok on the survivors after {}; everywhere after heal {}. Restore: {:.0} ms, planned layout: {}.",
        ms(r.survivors_ok_after_ms),
        ms(r.all_ok_after_heal_ms),
        r.restore.took_ms,
        if r.restore.planned_layout { "yes" } else { "no" }
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

pub fn render_json(r: &DrillReport) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
