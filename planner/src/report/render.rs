//! Renderers of the what-if report and of a plan: markdown (shown alone, e.g. in a Terraform
//! attribute), plain text (a terminal) and Graphviz dot. Markdown and text render the same
//! rows (`Table`), so they always show the same failures.

use std::fmt::Write as _;

use super::{percent, FailureKind, FailureOutcome, Report};
use crate::placement::{Placement, Role, SLOT_COUNT};
use crate::Plan;

/// Rows shown for hosts in text and markdown: every failing host, up to a limit, since a
/// 3,000-host table helps nobody.
const HOST_ROWS: usize = 20;

/// One failure as both renderers show it.
struct Row<'a> {
    label: &'a str,
    survives: &'static str,
    masters_lost: u32,
    promoted: u32,
    shards_without_copy: usize,
    majority: &'static str,
    writable: String,
}

/// The rows to show, and what the host limit left out.
struct Table<'a> {
    rows: Vec<Row<'a>>,
    hosts: usize,
    failing_hosts: usize,
    failing_hosts_hidden: usize,
}

impl<'a> Table<'a> {
    fn of(report: &'a Report) -> Self {
        let hosts: Vec<&FailureOutcome> = report
            .failures
            .iter()
            .filter(|f| f.kind == FailureKind::Host)
            .collect();
        let failing: Vec<&FailureOutcome> = hosts.iter().copied().filter(|f| !f.survives).collect();
        let host_rows: Vec<&FailureOutcome> = if hosts.len() <= HOST_ROWS {
            hosts.clone()
        } else {
            failing.iter().copied().take(HOST_ROWS).collect()
        };
        let hidden = failing
            .len()
            .saturating_sub(host_rows.iter().filter(|f| !f.survives).count());
        let others = report
            .failures
            .iter()
            .filter(|f| f.kind != FailureKind::Host);
        Table {
            rows: host_rows.into_iter().chain(others).map(row).collect(),
            hosts: hosts.len(),
            failing_hosts: failing.len(),
            failing_hosts_hidden: hidden,
        }
    }

    /// Whether the host limit cut the host rows.
    fn cut(&self) -> bool {
        self.hosts > HOST_ROWS
    }
}

fn row(f: &FailureOutcome) -> Row<'_> {
    Row {
        label: &f.label,
        survives: yes(f.survives),
        masters_lost: f.masters_lost,
        promoted: f.replicas_promoted,
        shards_without_copy: f.shards_without_copy.len(),
        majority: yes(f.master_majority_survives),
        writable: percent(f.writable_share),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Markdown of a report, self-contained (it may be shown alone, e.g. in a Terraform attribute).
pub fn render_markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### What-if report\n\n**{}**\n", report.summary);
    let _ = writeln!(
        out,
        "{} shards, {} nodes, {} voting masters, {} of {SLOT_COUNT} slots served. A failure is survived when the surviving side keeps a strict majority of the masters (needed to promote replicas) and a copy of every shard.\n",
        report.shards, report.nodes, report.voting_masters, report.slots_served
    );
    let table = Table::of(report);
    let _ = writeln!(
        out,
        "| failure | survives | masters lost | replicas promoted | shards without a copy | master majority | writable slots |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in &table.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.survives,
            r.masters_lost,
            r.promoted,
            r.shards_without_copy,
            r.majority,
            r.writable
        );
    }
    if table.cut() {
        let _ = writeln!(
            out,
            "\n{} hosts analysed; {} survive{}.",
            table.hosts,
            table.hosts - table.failing_hosts,
            if table.failing_hosts_hidden > 0 {
                format!(", {} failing hosts not listed", table.failing_hosts_hidden)
            } else {
                String::new()
            }
        );
    }
    if !report.goals.is_empty() {
        let _ = writeln!(out, "\nSurvival goals (the worst combination decides):\n");
        for g in &report.goals {
            let _ = writeln!(out, "- {}", g.line(report.voting_masters));
        }
    }
    out
}

/// Plain text of a report, for a terminal.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", report.summary);
    let _ = writeln!(
        out,
        "{} shards, {} nodes, {} voting masters, {} of {SLOT_COUNT} slots served",
        report.shards, report.nodes, report.voting_masters, report.slots_served
    );
    let table = Table::of(report);
    for r in &table.rows {
        let _ = writeln!(
            out,
            "  {:<44} {:<3}  masters lost {:>3}, promoted {:>3}, shards without copy {:>3}, majority {:<3}, writable {}",
            r.label, r.survives, r.masters_lost, r.promoted, r.shards_without_copy, r.majority, r.writable
        );
    }
    if table.cut() {
        let _ = writeln!(
            out,
            "  ({} hosts analysed, {} not survived)",
            table.hosts, table.failing_hosts
        );
    }
    for g in &report.goals {
        let _ = writeln!(out, "  goal {}", g.line(report.voting_masters));
    }
    out
}

/// Markdown of a whole plan: summary, warnings, nodes per zone, then the report.
pub fn render_plan_markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Redis Cluster placement\n\n**{}**\n",
        plan.report.summary
    );
    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "Warnings:\n");
        for w in &plan.warnings {
            let _ = writeln!(out, "- {w}");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "| zone | hosts used | nodes | masters |\n|---|---|---|---|"
    );
    for (zone, hosts, nodes, masters) in zone_table(&plan.placement) {
        let _ = writeln!(out, "| {zone} | {hosts} | {nodes} | {masters} |");
    }
    let _ = writeln!(out);
    match &plan.sentinel {
        // Redis Cluster's table (master majorities, slots) does not apply to sentinel mode.
        Some(sentinel) => out.push_str(&crate::sentinel::render::render_markdown(sentinel)),
        None => out.push_str(&render_markdown(&plan.report)),
    }
    out
}

/// Plain text of a whole plan: every node, then warnings and the report.
pub fn render_plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    for n in &plan.placement.nodes {
        let slots: Vec<String> = n.slots.iter().map(|r| r.to_string()).collect();
        let _ = writeln!(
            out,
            "{:<12} shard {:<5} {:<7} {:<16} {:<16} {}",
            n.name,
            n.shard,
            n.role.as_str(),
            n.host,
            n.zone,
            slots.join(",")
        );
    }
    let _ = writeln!(out);
    match &plan.sentinel {
        Some(sentinel) => {
            // The fixes are in the sentinel report itself; its warnings would repeat them.
            let _ = writeln!(out);
            out.push_str(&crate::sentinel::render::render_text(sentinel));
        }
        None => {
            for w in &plan.warnings {
                let _ = writeln!(out, "warning: {w}");
            }
            out.push_str(&render_text(&plan.report));
        }
    }
    out
}

fn zone_table(placement: &Placement) -> Vec<(String, usize, usize, usize)> {
    let mut zones: Vec<(String, std::collections::BTreeSet<&str>, usize, usize)> = Vec::new();
    for n in &placement.nodes {
        let i = match zones.iter().position(|z| z.0 == n.zone) {
            Some(i) => i,
            None => {
                zones.push((n.zone.clone(), Default::default(), 0, 0));
                zones.len() - 1
            }
        };
        zones[i].1.insert(&n.host);
        zones[i].2 += 1;
        zones[i].3 += usize::from(n.role == Role::Master);
    }
    zones.sort_by(|a, b| a.0.cmp(&b.0));
    zones
        .into_iter()
        .map(|(z, h, n, m)| (z, h.len(), n, m))
        .collect()
}

/// Graphviz dot: zones as clusters, masters filled red, replicas blue, replica -> master edges.
pub fn render_dot(placement: &Placement) -> String {
    let mut out = String::from(
        "digraph redisha {\n  rankdir=LR;\n  node [shape=box, style=filled, fontname=\"Helvetica\"];\n",
    );
    let mut zones: Vec<&str> = placement.nodes.iter().map(|n| n.zone.as_str()).collect();
    zones.sort_unstable();
    zones.dedup();
    for (i, zone) in zones.iter().enumerate() {
        let _ = writeln!(out, "  subgraph cluster_{i} {{\n    label={zone:?};");
        for n in placement.nodes.iter().filter(|n| n.zone == *zone) {
            let (fill, font) = match n.role {
                Role::Master => ("#d9534f", "white"),
                Role::Replica => ("#5bc0de", "black"),
            };
            let _ = writeln!(
                out,
                "    {:?} [label=\"{}\\nshard {} {}\\n{}\", fillcolor=\"{fill}\", fontcolor=\"{font}\"];",
                n.name,
                n.name,
                n.shard,
                n.role.as_str(),
                n.host
            );
        }
        let _ = writeln!(out, "  }}");
    }
    for n in placement.nodes.iter().filter(|n| n.role == Role::Replica) {
        if let Some(m) = placement.master_of(n.shard) {
            let _ = writeln!(out, "  {:?} -> {:?} [style=dashed];", n.name, m.name);
        }
    }
    out.push_str("}\n");
    out
}
