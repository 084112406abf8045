//! The sentinel plan as text (a terminal) and markdown (docs, reviews): where the sentinels
//! are, then one row per failure. Both show the same rows.

use std::fmt::Write as _;

use super::{SentinelFailure, SentinelPlan};
use crate::report::FailureKind;

/// Hosts shown at most: every failing host first; a long list of survived hosts helps nobody.
const HOST_ROWS: usize = 20;

fn rows(plan: &SentinelPlan) -> Vec<&SentinelFailure> {
    let f = &plan.report.failures;
    let mut hosts: Vec<&SentinelFailure> =
        f.iter().filter(|x| x.kind == FailureKind::Host).collect();
    hosts.sort_by_key(|x| x.survives);
    hosts.truncate(HOST_ROWS);
    f.iter()
        .filter(|x| x.kind != FailureKind::Host)
        .chain(hosts)
        .collect()
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn isolated(f: &SentinelFailure) -> String {
    match (&f.isolated_primary, f.isolated_primary_accepts_writes) {
        (Some(side), true) => format!("on {side}, ACCEPTS writes"),
        (Some(side), false) => format!("on {side}, refuses writes"),
        (None, _) => "-".to_string(),
    }
}

pub fn render_text(plan: &SentinelPlan) -> String {
    let r = &plan.report;
    let mut out = String::new();
    let _ = writeln!(out, "{}", r.summary);
    let _ = writeln!(
        out,
        "sentinels: {} (quorum {}, majority {}); primary min-replicas-to-write {}",
        r.sentinels, r.quorum, r.majority, r.min_replicas_to_write
    );
    for s in &plan.sentinels {
        let _ = writeln!(out, "  {:<12} {:<16} {}", s.name, s.host, s.zone);
    }
    let _ = writeln!(out);
    for f in rows(plan) {
        let _ = writeln!(
            out,
            "{:<40} {:<9} primary on {:<10} sentinels {}/{} failover {:<3} writable {:<3} isolated primary {}\n    {}",
            f.label,
            if f.survives { "survives" } else { "FAILS" },
            f.primary_host.as_deref().unwrap_or("-"),
            f.sentinels_left,
            f.sentinels_needed,
            yes(f.failover),
            yes(f.writable),
            isolated(f),
            f.why
        );
    }
    for a in &r.advice {
        let _ = writeln!(out, "fix: {a}");
    }
    out
}

/// `sentinel-10` after `sentinel-9`: the name without its trailing number, then the number.
fn natural_key(name: &str) -> (&str, u64) {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    (stem, name[stem.len()..].parse().unwrap_or(0))
}

pub fn render_markdown(plan: &SentinelPlan) -> String {
    let r = &plan.report;
    let mut out = String::new();
    let _ = writeln!(out, "**{}**\n", r.summary);
    let _ = writeln!(
        out,
        "{} sentinels, quorum {}, majority {}; the primary's `min-replicas-to-write` is {}.\n",
        r.sentinels, r.quorum, r.majority, r.min_replicas_to_write
    );
    let _ = writeln!(out, "| sentinel | host | zone |\n|---|---|---|");
    // By name, in number order: the plan lists sentinels in the order they were placed, which
    // differs between the apply that grew a deployment and a later plan of the same shape, and
    // the report must then read the same (Terraform would show a change).
    let mut sentinels: Vec<_> = plan.sentinels.iter().collect();
    sentinels.sort_by_key(|s| natural_key(&s.name));
    for s in sentinels {
        let _ = writeln!(out, "| {} | {} | {} |", s.name, s.host, s.zone);
    }
    let _ = writeln!(
        out,
        "\n| failure | primary on | survives | sentinels left / needed | failover | writable | isolated old primary | why |\n|---|---|---|---|---|---|---|---|"
    );
    for f in rows(plan) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}/{} | {} | {} | {} | {} |",
            f.label,
            f.primary_host.as_deref().unwrap_or("-"),
            yes(f.survives),
            f.sentinels_left,
            f.sentinels_needed,
            yes(f.failover),
            yes(f.writable),
            isolated(f),
            f.why
        );
    }
    if !r.advice.is_empty() {
        let _ = writeln!(out, "\nFixes:\n");
        for a in &r.advice {
            let _ = writeln!(out, "- {a}");
        }
    }
    out
}
