//! A packet-level partition with nftables: a table of the drill's own drops every packet
//! between the cut hosts' addresses and the rest of the cluster's, in both directions. The
//! nodes send from their host address (the local driver sets `bind-source-addr`), so the rules
//! name the cluster's addresses only: other clusters, and the drill's own clients (which
//! connect from 127.0.0.1 and so reach both sides), are untouched.
//!
//! The table's name is recorded in `<data_dir>/<cluster_id>/redisha-drill-nft.json` before it is
//! installed; the guard deletes it when dropped (end of drill, error, Ctrl-C), and the next drill
//! deletes any table a killed drill left recorded.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{DrillError, Result};

const RECORD_FILE: &str = "redisha-drill-nft.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    tables: Vec<String>,
}

/// An installed cut; dropping it removes it.
pub struct Cut {
    table: String,
    record: PathBuf,
}

/// The table name of one drill: per cluster and per drill process, so two drills never share it.
fn table_name(cluster_id: &str) -> String {
    format!("redisha_drill_{cluster_id}_{}", std::process::id())
}

fn nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            DrillError::Partition(format!(
                "cannot run nft ({e}); install nftables (scripts/setup does) and run as root (CAP_NET_ADMIN)"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(DrillError::io("writing to nft"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(DrillError::io("waiting for nft"))?;
    if !out.status.success() {
        return Err(DrillError::Partition(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn read_record(path: &Path) -> Record {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_record(path: &Path, record: &Record) -> Result<()> {
    let text = serde_json::to_vec_pretty(record)
        .map_err(|e| DrillError::Partition(format!("cannot encode the record: {e}")))?;
    std::fs::write(path, text).map_err(DrillError::io(format!("writing {}", path.display())))
}

/// Deletes every table a previous drill of this cluster recorded and did not remove (it was
/// killed); returns their names.
pub fn remove_leftovers(cluster_dir: &Path) -> Result<Vec<String>> {
    let path = cluster_dir.join(RECORD_FILE);
    let record = read_record(&path);
    let mut removed = Vec::new();
    for table in &record.tables {
        // Only tables named as ours: the record file could have been edited by hand.
        if !table.starts_with("redisha_drill_") {
            continue;
        }
        if nft(&format!("delete table inet {table}\n")).is_ok() {
            removed.push(table.clone());
        }
    }
    if path.exists() {
        std::fs::remove_file(&path)
            .map_err(DrillError::io(format!("removing {}", path.display())))?;
    }
    Ok(removed)
}

/// Cuts `side` (addresses) from `rest`: the record first, then the table.
pub fn install(
    cluster_dir: &Path,
    cluster_id: &str,
    side: &[String],
    rest: &[String],
) -> Result<Cut> {
    if side.is_empty() || rest.is_empty() {
        return Err(DrillError::Partition(
            "both sides of a partition need at least one host address".into(),
        ));
    }
    for a in side.iter().chain(rest) {
        if a.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(DrillError::Partition(format!(
                "{a:?} is not an IPv4 address"
            )));
        }
    }
    let table = table_name(cluster_id);
    let record = cluster_dir.join(RECORD_FILE);
    let mut rec = read_record(&record);
    rec.tables.push(table.clone());
    write_record(&record, &rec)?;
    let cut = Cut { table, record };
    let (a, b) = (side.join(", "), rest.join(", "));
    let t = &cut.table;
    nft(&format!(
        "table inet {t} {{\n\
         \tchain out {{\n\
         \t\ttype filter hook output priority 0; policy accept;\n\
         \t\tip saddr {{ {a} }} ip daddr {{ {b} }} drop\n\
         \t\tip saddr {{ {b} }} ip daddr {{ {a} }} drop\n\
         \t}}\n\
         }}\n"
    ))?;
    Ok(cut)
}

impl Cut {
    /// Removes the rules and the record.
    pub fn heal(self) -> Result<()> {
        let r = self.remove();
        std::mem::forget(self);
        r
    }

    fn remove(&self) -> Result<()> {
        nft(&format!("delete table inet {}\n", self.table))?;
        let mut rec = read_record(&self.record);
        rec.tables.retain(|t| t != &self.table);
        if rec.tables.is_empty() {
            let _ = std::fs::remove_file(&self.record);
            Ok(())
        } else {
            write_record(&self.record, &rec)
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            tracing::error!(table = %self.table, error = %e, "could not remove the partition; the next drill removes it");
        }
    }
}
