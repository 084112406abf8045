//! Test harness: the shared moto_server guard, EC2 client and VPC fixture
//! (`redisha_aws::testing`), plus what only the driver's tests use: the fixture's subnets, a
//! driver config for it, host plans and the cluster's live instances.
#![allow(dead_code)]

use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use redisha_aws::AwsDriverConfig;
use redisha_cluster::{HostPlan, NodePlan};

pub use redisha_aws::testing::{Fixture, Moto};

/// The fixture's subnets, in creation order: us-east-1a (two), us-east-1b and us-east-1c.
pub const SUBNET_ZONES: [&str; 4] = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1a"];

/// A driver config over all of the fixture's subnets, with short polls and timeouts.
pub trait FixtureConfig {
    /// Without a cluster id: what a cluster made before ids looks like.
    fn config(&self, cluster: &str) -> AwsDriverConfig;

    /// With the cluster id the provider gives every cluster at create.
    fn config_with_id(&self, cluster: &str, cluster_id: &str) -> AwsDriverConfig {
        let mut config = self.config(cluster);
        config.cluster_id = Some(cluster_id.to_string());
        config
    }
}

impl FixtureConfig for Fixture {
    fn config(&self, cluster: &str) -> AwsDriverConfig {
        let mut config =
            AwsDriverConfig::new(cluster, self.subnet_ids(), "t3.small", self.ami.clone());
        config.poll_interval = Duration::from_millis(200);
        config.timeouts.create = Duration::from_secs(60);
        config.timeouts.delete = Duration::from_secs(60);
        config
    }
}

/// A host plan: `nodes` nodes named `<host>-n<i>`.
pub fn host(name: &str, zone: &str, zone_index: u32, host_index: u32, nodes: u16) -> HostPlan {
    HostPlan {
        name: name.into(),
        zone: zone.into(),
        zone_index,
        host_index,
        nodes: (0..nodes)
            .map(|i| NodePlan {
                name: format!("{name}-n{i}"),
                index_on_host: i,
                shard: 0,
                role: redisha_planner::Role::Master,
            })
            .collect(),
    }
}

/// The cluster's instances in one of `states` (instance-state-name values).
pub async fn instances_in(
    client: &aws_sdk_ec2::Client,
    cluster: &str,
    states: &[&str],
) -> Vec<aws_sdk_ec2::types::Instance> {
    let answer = client
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:redisha:cluster")
                .values(cluster)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(states.iter().map(|s| s.to_string()).collect()))
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    answer
        .reservations()
        .iter()
        .flat_map(|r| r.instances().iter().cloned())
        .collect()
}

/// The cluster's instances that are not terminated, as (host tag, zone, instance id).
pub async fn live_instances(
    client: &aws_sdk_ec2::Client,
    cluster: &str,
) -> Vec<(String, String, String)> {
    let live = ["pending", "running", "stopping", "stopped"];
    let mut out = Vec::new();
    for i in instances_in(client, cluster, &live).await {
        let host = i
            .tags()
            .iter()
            .find(|t| t.key() == Some("redisha:host"))
            .and_then(|t| t.value())
            .unwrap_or_default()
            .to_string();
        let zone = i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_string();
        out.push((host, zone, i.instance_id().unwrap_or_default().to_string()));
    }
    out.sort();
    out
}
