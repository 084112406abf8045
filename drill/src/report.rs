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
    /// How long the drill waited for that.
    #[serde(default)]
    pub heal_timeout_ms: u64,
    /// Not every node said `cluster_state:ok` within `heal_timeout_ms` (an EC2 instance still
    /// booting, say): what came after the window (the restore, the read-back) is what an
    /// unfinished heal left, so the drill is inconclusive rather than failed.
    #[serde(default)]
    pub heal_timed_out: bool,
    /// Shards whose writes could not be read back after a heal that ran out of time (no
    /// master to read from): their lost counts are unknown, not 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unverified_shards: Vec<u32>,
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
        !self.heal_timed_out
            && self.disagreements.is_empty()
            && self.acked_lost() == 0
            && self.restore.planned_layout
    }

    /// The word for the result: pass, FAIL, or INCONCLUSIVE when the heal ran out of time.
    pub fn result(&self) -> &'static str {
        if self.passed() {
            "pass"
        } else if self.heal_timed_out {
            "INCONCLUSIVE"
        } else {
            "FAIL"
        }
    }

    /// Why the result is inconclusive, in words: the heal's bound and what to do.
    fn heal_note(&self) -> Option<String> {
        self.heal_timed_out.then(|| {
            let unread = if self.unverified_shards.is_empty() {
                String::new()
            } else {
                format!(
                    "; the writes of shards {:?} could not be read back (no master yet), so their losses are unknown",
                    self.unverified_shards
                )
            };
            format!(
                "the heal ran out of time: not every node said cluster_state:ok within {:.0} s of it{unread}. That is not a disagreement with the plan: give the heal more time (--heal-timeout; EC2 instances take minutes to boot) and run the drill again",
                self.heal_timeout_ms as f64 / 1000.0
            )
        })
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
            "shard {} (master {}{}): longest write gap {:.0} ms; writes acked {}, unacked {}, failed {}; {}; longest read gap {:.0} ms; writable predicted {} observed {}",
            s.shard,
            s.planned_master,
            if s.master_hit { ", hit" } else { "" },
            s.longest_write_gap_ms,
            s.writes_acked,
            s.writes_unacked,
            s.writes_failed,
            if r.unverified_shards.contains(&s.shard) {
                "not read back (lost unknown)".to_string()
            } else {
                format!("acked lost {}, unacked lost {}", s.acked_lost, s.unacked_lost)
            },
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
    if let Some(note) = r.heal_note() {
        let _ = writeln!(o, "heal: {note}");
    }
    restore_and_verdict(&mut o, &r.restore, &r.disagreements, r.result());
    o
}

/// The end of a text report: the restore, its actions and drift, the disagreements, the result.
pub(crate) fn restore_and_verdict(
    o: &mut String,
    restore: &Restore,
    disagreements: &[String],
    result: &str,
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
    let _ = writeln!(o, "result: {result}");
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
    if let Some(note) = r.heal_note() {
        let _ = writeln!(o, "\n**Heal:** {note}.");
    }
    let _ = writeln!(o, "\n**Result: {}**", r.result().to_lowercase());
    o
}

pub fn render_json(r: &DrillReport) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::{Action, Scope};

    fn report(heal_timed_out: bool, unverified: Vec<u32>) -> DrillReport {
        let verdict = Verdict {
            masters_lost: 1,
            replicas_promoted: 1,
            master_majority_survives: true,
            writable_slots: 16384,
            writable_shards: vec![0],
        };
        DrillReport {
            cluster: "shop".into(),
            failure: Failure {
                action: Action::Stop,
                scope: Scope::Zone("z1".into()),
                window: std::time::Duration::from_secs(5),
            },
            label: "stop zone z1".into(),
            node_timeout_ms: 1000,
            wait_ms: 50,
            hit_nodes: vec!["s0-0".into()],
            predicted: verdict.clone(),
            observed: verdict,
            disagreements: Vec::new(),
            survivors_ok_after_ms: Some(2000.0),
            all_ok_after_heal_ms: (!heal_timed_out).then_some(7000.0),
            heal_timeout_ms: 367_000,
            heal_timed_out,
            unverified_shards: unverified,
            failed_at_unix_ms: 0.0,
            healed_at_unix_ms: 0.0,
            shards: vec![ShardReport {
                shard: 0,
                planned_master: "s0-0".into(),
                master_hit: true,
                longest_write_gap_ms: 2000.0,
                writes_acked: 10,
                writes_unacked: 0,
                writes_failed: 3,
                acked_lost: 0,
                unacked_lost: 0,
                longest_read_gap_ms: 2000.0,
                reads_failed: 0,
                serving_at_end: Some("s0-1".into()),
                predicted_writable: true,
                observed_writable: true,
                cut_side: None,
            }],
            restore: Restore {
                took_ms: 100.0,
                actions: Vec::new(),
                planned_layout: !heal_timed_out,
                drift: Vec::new(),
                error: None,
            },
            log: None,
        }
    }

    #[test]
    fn a_heal_that_ran_out_of_time_is_inconclusive_not_a_disagreement() {
        assert_eq!(report(false, Vec::new()).result(), "pass");
        let r = report(true, vec![0]);
        assert!(!r.passed());
        assert_eq!(r.result(), "INCONCLUSIVE");
        let text = render_text(&r);
        assert!(text.contains("the heal ran out of time"), "{text}");
        assert!(text.contains("within 367 s"), "{text}");
        assert!(text.contains("--heal-timeout"), "{text}");
        assert!(text.contains("not read back"), "{text}");
        assert!(!text.contains("DISAGREES"), "{text}");
        assert!(text.contains("result: INCONCLUSIVE"), "{text}");
        let markdown = render_markdown(&r);
        assert!(markdown.contains("**Result: inconclusive**"), "{markdown}");
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&r)).expect("the JSON report");
        assert_eq!(json["heal_timed_out"], true);
        assert_eq!(json["unverified_shards"], serde_json::json!([0]));
    }
}
