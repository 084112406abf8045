//! A zone's power going off and on, for the failure drills: the cluster's instances there
//! stopped (StopInstances: EC2 shuts their OS down, their volumes stay) and started again
//! (their nodes come back from their data as the instance boots). Only instances proven the
//! cluster's are touched: its name and id tags in its VPC, as destroy proves them
//! ([`AwsDriver::cluster_instances`]); an id named from elsewhere (a drill's record) is acted
//! on only when that lookup returns it too.

use aws_sdk_ec2::types::InstanceStateName;

use crate::driver::AwsDriver;
use crate::error::{AwsError, Field};
use crate::instances::{self, ClusterInstance};

impl AwsDriver {
    /// The cluster's running instances in `zone`.
    pub async fn running_in_zone(&self, zone: &str) -> Result<Vec<ClusterInstance>, AwsError> {
        Ok(self
            .cluster_instances()
            .await?
            .into_iter()
            .filter(|i| i.zone == zone && i.state == InstanceStateName::Running)
            .collect())
    }

    /// Stops `ids`, every one of them the cluster's and running; refuses (stopping nothing)
    /// when one is not.
    pub async fn stop_instances(&self, ids: &[String]) -> Result<(), AwsError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ours = self.cluster_instances().await?;
        for id in ids {
            match ours.iter().find(|i| &i.instance_id == id) {
                Some(i) if i.state == InstanceStateName::Running => {}
                Some(i) => {
                    return Err(AwsError::config(
                        Field::ClusterId,
                        format!(
                            "instance {id} (host {}) is {}, not running: nothing was stopped; start it (terraform apply) before a drill",
                            i.host,
                            i.state.as_str()
                        ),
                    ))
                }
                None => {
                    return Err(AwsError::config(
                        Field::ClusterId,
                        format!(
                            "instance {id} does not carry this cluster's name and id tags in its VPC: nothing was stopped"
                        ),
                    ))
                }
            }
        }
        instances::stop(self.client(), ids).await
    }

    /// Starts those of `ids` that are the cluster's and stopping or stopped (a stopping one
    /// is waited out first: EC2 starts only stopped instances), then waits until they run.
    /// Ids that are not the cluster's, already run or are gone are left alone. Returns the
    /// ids started.
    pub async fn start_instances(&self, ids: &[String]) -> Result<Vec<String>, AwsError> {
        let to_start: Vec<String> = self
            .cluster_instances()
            .await?
            .into_iter()
            .filter(|i| ids.contains(&i.instance_id) && i.is_stopped())
            .map(|i| i.instance_id)
            .collect();
        if to_start.is_empty() {
            return Ok(to_start);
        }
        let timeouts = self.config().timeouts;
        let poll = self.config().poll_interval;
        instances::wait_for_state(
            self.client(),
            &to_start,
            InstanceStateName::Stopped,
            "update",
            timeouts.update,
            poll,
        )
        .await?;
        instances::start(self.client(), &to_start).await?;
        instances::wait_for_state(
            self.client(),
            &to_start,
            InstanceStateName::Running,
            "update",
            timeouts.update,
            poll,
        )
        .await?;
        Ok(to_start)
    }
}
