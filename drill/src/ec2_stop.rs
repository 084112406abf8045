//! The aws driver's failure: the cluster's EC2 instances of one zone (or one host) stopped
//! with StopInstances, as when a zone loses power, and started again after the window. Only
//! instances the driver proves the cluster's (its name and id tags in its VPC) are stopped or
//! started, never by name alone.
//!
//! What was stopped is recorded in `<record_dir>/redisha-drill-stopped-<cluster_id>.json`
//! before StopInstances is sent; it is cleared once they run again, and the next drill of the
//! cluster starts whatever a killed drill left recorded.

use std::path::{Path, PathBuf};

use redisha_aws::AwsDriver;
use redisha_cluster::ClusterState;
use serde::{Deserialize, Serialize};

use crate::error::{DrillError, Result};
use crate::failure::Scope;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    cluster_id: String,
    instances: Vec<String>,
}

/// Instances a drill stopped; [`StoppedInstances::start_again`] starts them. There is no Drop
/// guard (starting is asynchronous): the drill starts them on every path after the stop, and
/// the record covers a drill killed in between.
#[must_use = "stopped instances must be started again"]
pub struct StoppedInstances<'a> {
    driver: &'a AwsDriver,
    ids: Vec<String>,
    record: PathBuf,
}

fn record_path(record_dir: &Path, cluster_id: &str) -> PathBuf {
    record_dir.join(format!("redisha-drill-stopped-{cluster_id}.json"))
}

fn read_record(path: &Path) -> Option<Record> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Starts what an interrupted drill of this cluster recorded as stopped and did not start
/// again (only instances still proven the cluster's); returns their ids.
pub async fn start_leftovers(
    driver: &AwsDriver,
    record_dir: &Path,
    cluster_id: &str,
) -> Result<Vec<String>> {
    let path = record_path(record_dir, cluster_id);
    let Some(record) = read_record(&path) else {
        return Ok(Vec::new());
    };
    // A record of another cluster (a file copied by hand) names nothing of this one's.
    let started = if record.cluster_id == cluster_id {
        driver.start_instances(&record.instances).await?
    } else {
        Vec::new()
    };
    std::fs::remove_file(&path).map_err(DrillError::io(format!("removing {}", path.display())))?;
    Ok(started)
}

/// The cluster's running instances the failure stops: those of the zone, or the host's, and
/// every host running a hit node must have one (a drill on a degraded cluster measures the
/// wrong thing).
pub async fn instances_to_stop(
    driver: &AwsDriver,
    state: &ClusterState,
    scope: &Scope,
    hit: &[String],
) -> Result<Vec<String>> {
    let zone = match scope {
        Scope::Zone(z) => z.clone(),
        Scope::Host(h) => state
            .nodes
            .iter()
            .find(|n| &n.host == h)
            .map(|n| n.zone.clone())
            .ok_or_else(|| DrillError::Failure(format!("host {h} runs no node")))?,
        _ => {
            return Err(DrillError::Failure(
                "stop takes a --zone or a --host: instances stop, partitions are cut".into(),
            ))
        }
    };
    let running = driver.running_in_zone(&zone).await?;
    let mut ids = Vec::new();
    for node in state.nodes.iter().filter(|n| hit.contains(&n.name)) {
        let instance = running
            .iter()
            .find(|i| i.host == node.host)
            .ok_or_else(|| {
                DrillError::Failure(format!(
                    "host {} (node {}) has no running instance of this cluster in {zone}: run `terraform apply` before a drill",
                    node.host, node.name
                ))
            })?;
        if !ids.contains(&instance.instance_id) {
            ids.push(instance.instance_id.clone());
        }
    }
    Ok(ids)
}

/// Records `ids`, then stops them.
pub async fn stop<'a>(
    driver: &'a AwsDriver,
    record_dir: &Path,
    cluster_id: &str,
    ids: Vec<String>,
) -> Result<StoppedInstances<'a>> {
    let record = record_path(record_dir, cluster_id);
    let text = serde_json::to_vec_pretty(&Record {
        cluster_id: cluster_id.to_string(),
        instances: ids.clone(),
    })
    .map_err(|e| DrillError::Failure(format!("cannot encode the record: {e}")))?;
    std::fs::write(&record, text)
        .map_err(DrillError::io(format!("writing {}", record.display())))?;
    let stopped = StoppedInstances {
        driver,
        ids,
        record,
    };
    if let Err(e) = driver.stop_instances(&stopped.ids).await {
        // Nothing may have stopped, or some did (EC2 took part of the call): start what did.
        let _ = stopped.start_again().await;
        return Err(e.into());
    }
    Ok(stopped)
}

impl StoppedInstances<'_> {
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Starts the instances and waits until they run; the record goes once they do. Their
    /// nodes come back as the instances boot (systemd starts them after their rejoin delay).
    pub async fn start_again(self) -> Result<Vec<String>> {
        let started = self.driver.start_instances(&self.ids).await?;
        std::fs::remove_file(&self.record).map_err(DrillError::io(format!(
            "removing {}",
            self.record.display()
        )))?;
        Ok(started)
    }
}
