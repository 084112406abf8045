//! Sentinel mode's records on EC2, so that a provider that lost Terraform's private state
//! finds every process again from the deployment's id alone, as cluster mode does
//! ([`crate::records`]): one `redisha:node:<index>` tag per process on its host's instance,
//! `<name>/0/<role>` (sentinels by their index, `SENTINEL_INDEX_BASE` and up; the planned
//! primary as `master`).
//!
//! - A new instance carries the records of the processes it is launched for (RunInstances'
//!   own tags), so it never exists without them.
//! - Every start writes its process's record first when the instance does not carry it yet
//!   (a process added to a running instance), so a provider killed right after the start
//!   still finds it.
//! - A removed process's record goes after the process: until then a resumed apply finds it
//!   and removes it again, rather than leaving a process nobody knows of.
//! - A host whose instance is terminated, missing or stopped is lost
//!   ([`redisha_cluster::Driver::lost_hosts`]): provisioned again, its processes restarted.

use std::path::PathBuf;

use redisha_cluster::identity::{NodeRecord, RECORD_FORMAT};
use redisha_cluster::sentinel::SENTINEL_INDEX_BASE;
use redisha_cluster::{DriverError, HostHandle, NodeHandle, NodePlan};

use crate::driver::{AwsDriver, HostStatus};
use crate::error::AwsError;
use crate::records::TaggedNode;

/// Where a sentinel's config is on its instance (`<prefix><port>.conf`).
pub(crate) const SENTINEL_CONF_PREFIX: &str = "/etc/redisha/sentinel-";

/// The config file of a process listening on `port` on its instance: what a handle's
/// `config_file` says, and so which unit stop and remove reach.
pub(crate) fn config_file(port: u16, sentinel: bool) -> PathBuf {
    if sentinel {
        PathBuf::from(format!("{SENTINEL_CONF_PREFIX}{port}.conf"))
    } else {
        PathBuf::from(format!("/etc/redisha/node-{port}.conf"))
    }
}

impl AwsDriver {
    /// The handle's `config_file` of a process found by its record: sentinels by their index
    /// (sentinel mode only: cluster-mode nodes have no config file in their handles).
    pub(crate) fn discovered_config_file(&self, host: &str, index_on_host: u16) -> Option<PathBuf> {
        self.is_sentinel_mode().then(|| {
            config_file(
                self.port_on(host, index_on_host),
                index_on_host >= SENTINEL_INDEX_BASE,
            )
        })
    }

    /// Writes the record of a process about to start on `host` (a no-op when its instance
    /// carries it already).
    pub(crate) async fn record_process(
        &self,
        host: &HostHandle,
        node: &NodePlan,
        handle: &NodeHandle,
    ) -> Result<(), AwsError> {
        let record = NodeRecord {
            format: RECORD_FORMAT,
            cluster_id: self.acting_id("record processes under")?.to_string(),
            cluster_name: self.config().cluster_name.clone(),
            name: node.name.clone(),
            shard: node.shard,
            role: node.role,
            zone: host.zone.clone(),
            host: host.name.clone(),
            address: handle.ip.clone(),
            index_on_host: node.index_on_host,
        };
        self.record_node_tag(handle, &record).await
    }

    /// Deletes a removed process's record from its host's running instance (a terminated
    /// one took it along). Only the tag naming this process at its index goes.
    pub(crate) async fn forget_process(&self, node: &NodeHandle) -> Result<(), AwsError> {
        let Some(instance) = self.running_instance(&node.host).await? else {
            return Ok(());
        };
        let records: Vec<&TaggedNode> = instance
            .nodes
            .iter()
            .filter(|t| t.index_on_host == node.index_on_host && t.name == node.name)
            .collect();
        for record in records {
            self.clients()
                .delete_tags()
                .resources(&instance.instance_id)
                .tags(record.tag())
                .send()
                .await
                .map_err(crate::error::api("DeleteTags"))?;
            tracing::info!(
                process = node.name,
                instance_id = instance.instance_id,
                "record removed"
            );
        }
        Ok(())
    }

    /// [`redisha_cluster::Driver::lost_hosts`]: hosts whose instance is terminated, missing
    /// or stopped (by the cluster's id in its VPC).
    pub(crate) async fn lost_host_names(
        &self,
        hosts: &[HostHandle],
    ) -> Result<Vec<String>, DriverError> {
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        let mut lost = Vec::new();
        for status in self.read_hosts(hosts).await? {
            match status {
                HostStatus::Present { .. } => {}
                HostStatus::Missing { name, zone } => {
                    tracing::info!(host = %name, zone = %zone, "instance terminated or missing");
                    lost.push(name);
                }
                HostStatus::Stopped { handle } => {
                    tracing::info!(host = %handle.name, "instance stopped");
                    lost.push(handle.name);
                }
            }
        }
        Ok(lost)
    }
}
