//! Signals to the cluster's own redis-server processes, never by name: a pid is signalled only
//! when the local driver's record for the node lies under `<data_dir>/<cluster_id>/<node>/`
//! and /proc says that pid runs that directory's config file (checked again right before each
//! signal, so a pid reused by another process is never hit).

use std::path::PathBuf;

use redisha_cluster::local::is_our_redis;
use redisha_cluster::{Driver, LocalDriver};

use crate::error::{DrillError, Result};

/// A node's process, proven to be ours when it was found.
#[derive(Debug, Clone)]
pub struct NodeProcess {
    pub node: String,
    pub pid: u32,
    config: PathBuf,
}

/// The processes of `nodes` (names) of the driver's cluster. Every named node must run: a
/// drill on a cluster that is already degraded would measure the wrong thing.
pub async fn find(driver: &LocalDriver, nodes: &[String]) -> Result<Vec<NodeProcess>> {
    let id = driver
        .cluster_id()
        .ok_or_else(|| DrillError::Failure("the driver names no cluster id".into()))?;
    let root = driver.config().data_dir.join(id);
    let found = driver.discover(id).await?.unwrap_or_default();
    let mut out = Vec::new();
    for name in nodes {
        let (handle, _) = found
            .iter()
            .find(|(h, r)| &h.name == name && r.cluster_id == id)
            .ok_or_else(|| {
                DrillError::Failure(format!("node {name} has no record of cluster {id}"))
            })?;
        let (Some(pid), Some(config)) = (handle.pid, handle.config_file.clone()) else {
            return Err(DrillError::Failure(format!(
                "node {name} is not running: heal the cluster (terraform apply) before a drill"
            )));
        };
        if !config.starts_with(&root) {
            return Err(DrillError::Process {
                node: name.clone(),
                pid,
                reason: format!("its config file is not under {}", root.display()),
            });
        }
        out.push(NodeProcess {
            node: name.clone(),
            pid,
            config,
        });
    }
    Ok(out)
}

impl NodeProcess {
    /// Sends `sig` after checking once more that the pid runs this node's config file.
    pub fn signal(&self, sig: i32) -> Result<()> {
        if !is_our_redis(self.pid, &self.config) {
            return Err(DrillError::Process {
                node: self.node.clone(),
                pid: self.pid,
                reason: "it no longer runs the node's config file".into(),
            });
        }
        let pid = i32::try_from(self.pid).map_err(|_| DrillError::Process {
            node: self.node.clone(),
            pid: self.pid,
            reason: "not a valid pid".into(),
        })?;
        // SAFETY: kill(2) has no memory effects; the pid was just checked to be our node.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(DrillError::Process {
                node: self.node.clone(),
                pid: self.pid,
                reason: std::io::Error::last_os_error().to_string(),
            });
        }
        Ok(())
    }

    /// SIGCONT, if the pid is still our node (a stopped process that was killed meanwhile
    /// needs nothing).
    pub fn resume(&self) {
        if is_our_redis(self.pid, &self.config) {
            let _ = self.signal(libc::SIGCONT);
        }
    }
}

/// Resumes every stopped process when dropped: a drill that fails or is interrupted while
/// nodes hang never leaves them stopped.
pub struct Stopped(pub Vec<NodeProcess>);

impl Drop for Stopped {
    fn drop(&mut self) {
        for p in &self.0 {
            p.resume();
        }
    }
}
