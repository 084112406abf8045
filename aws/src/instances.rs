//! EC2 instances of a cluster: launching one per host (idempotently), finding them by tag,
//! waiting for states, terminating them, and the memory of an instance type.

use std::time::Duration;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, InstanceStateName, InstanceType, ResourceType,
    TagSpecification, VolumeType,
};
use sha2::{Digest, Sha256};

use crate::error::{api, AwsError};
use crate::records::TaggedNode;
use crate::security_group::tag;
use crate::settings::AwsDriverConfig;
use crate::user_data::DATA_DEVICE;

pub const CLUSTER_TAG: &str = "redisha:cluster";
/// The cluster's unique id (see `AwsDriverConfig::cluster_id`).
pub const CLUSTER_ID_TAG: &str = "redisha:cluster-id";
pub const HOST_TAG: &str = "redisha:host";
pub const ZONE_TAG: &str = "redisha:zone";
pub const GENERATION_TAG: &str = "redisha:generation";
pub const MANAGED_BY_TAG: &str = "redisha:managed-by";
/// The package first boot installed the engine from (`AwsDriverConfig::redis_package`): with
/// the AMI (DescribeInstances' ImageId) it says which engine an instance runs, so an engine
/// roll knows which instances are left to replace.
pub const PACKAGE_TAG: &str = "redisha:redis-package";

/// The client token of a host's instance. Retrying RunInstances with it returns the instance
/// the first call created instead of launching a second one; the generation changes when the
/// host is replaced (its previous instance terminated), so the replacement gets a new token.
/// The cluster id is part of it: EC2 answers a token with the instance it launched for it, so a
/// token two clusters of one name could share would hand one cluster the other's instance.
/// Without an id (a cluster made before ids) the token is the one such clusters always had.
pub fn client_token(
    cluster: &str,
    cluster_id: Option<&str>,
    host: &str,
    generation: u32,
) -> String {
    let mut hash = Sha256::new();
    hash.update(cluster.as_bytes());
    hash.update([0]);
    if let Some(id) = cluster_id {
        // A separator no legacy token hashes: names and hosts never contain a NUL byte.
        hash.update(b"id\0");
        hash.update(id.as_bytes());
        hash.update([0]);
    }
    hash.update(host.as_bytes());
    hash.update([0]);
    hash.update(generation.to_be_bytes());
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    // EC2 accepts at most 64 ASCII characters.
    format!("redisha-{}", &hex[..56])
}

/// Which instances and security groups are one cluster's: those carrying its name tag and its
/// id tag (or, for a cluster made before ids, no id tag at all) in its VPC. A name alone is not
/// enough: two Terraform states (say staging and prod) may both name their cluster `cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope<'a> {
    pub cluster: &'a str,
    /// `None`: a cluster made before ids; only what carries no id tag is its.
    pub cluster_id: Option<&'a str>,
    /// The VPC of the configured subnets.
    pub vpc_id: &'a str,
}

impl Scope<'_> {
    /// Whether a resource with these tag values is the cluster's (the VPC aside).
    pub fn owns(&self, cluster_tag: Option<&str>, id_tag: Option<&str>) -> bool {
        cluster_tag == Some(self.cluster) && id_tag == self.cluster_id
    }

    /// The DescribeInstances/DescribeSecurityGroups filters for the scope: name tag, id tag
    /// (when there is one) and VPC. Resources carrying some id are left out of a scope without
    /// one by [`Scope::owns`] after the call (EC2 has no "tag absent" filter).
    pub(crate) fn filters(&self) -> Vec<Filter> {
        let mut filters = vec![
            Filter::builder()
                .name(format!("tag:{CLUSTER_TAG}"))
                .values(self.cluster)
                .build(),
            Filter::builder().name("vpc-id").values(self.vpc_id).build(),
        ];
        if let Some(id) = self.cluster_id {
            filters.push(
                Filter::builder()
                    .name(format!("tag:{CLUSTER_ID_TAG}"))
                    .values(id)
                    .build(),
            );
        }
        filters
    }
}

/// What the driver knows about one of its instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInstance {
    pub instance_id: String,
    /// The `redisha:cluster` tag.
    pub cluster: Option<String>,
    /// The `redisha:cluster-id` tag (none on instances of clusters made before ids).
    pub cluster_id: Option<String>,
    pub vpc_id: Option<String>,
    /// The `redisha:host` tag.
    pub host: String,
    /// The zone the instance runs in.
    pub zone: String,
    pub subnet_id: Option<String>,
    pub state: InstanceStateName,
    pub private_ip: Option<String>,
    /// The `redisha:generation` tag.
    pub generation: u32,
    pub launch_time_secs: i64,
    pub security_groups: Vec<String>,
    /// The EBS volumes attached to it (root and data).
    pub volume_ids: Vec<String>,
    /// The node records in its tags (see `records`).
    pub nodes: Vec<TaggedNode>,
    /// The AMI it was launched from.
    pub image_id: Option<String>,
    /// The `redisha:redis-package` tag (none on instances launched before it existed, which
    /// all installed the default package).
    pub redis_package: Option<String>,
}

impl ClusterInstance {
    /// Pending or running: the host exists.
    pub fn is_live(&self) -> bool {
        matches!(
            self.state,
            InstanceStateName::Pending | InstanceStateName::Running
        )
    }

    /// Stopping or stopped: the host exists but must be started.
    pub fn is_stopped(&self) -> bool {
        matches!(
            self.state,
            InstanceStateName::Stopping | InstanceStateName::Stopped
        )
    }

    /// Shutting down or terminated: gone.
    pub fn is_gone(&self) -> bool {
        matches!(
            self.state,
            InstanceStateName::ShuttingDown | InstanceStateName::Terminated
        )
    }
}

/// The cluster's instances in `scope`, in any state (terminated ones stay visible for about an
/// hour), optionally only those of one host.
pub async fn find_instances(
    client: &aws_sdk_ec2::Client,
    scope: &Scope<'_>,
    host: Option<&str>,
) -> Result<Vec<ClusterInstance>, AwsError> {
    let mut filters = scope.filters();
    if let Some(host) = host {
        filters.push(
            Filter::builder()
                .name(format!("tag:{HOST_TAG}"))
                .values(host)
                .build(),
        );
    }
    let mut found: Vec<ClusterInstance> = describe(client, filters)
        .await?
        .into_iter()
        .filter(|i| scope.owns(i.cluster.as_deref(), i.cluster_id.as_deref()))
        .collect();
    found.sort_by(|a, b| {
        (
            a.host.as_str(),
            a.generation,
            a.launch_time_secs,
            a.instance_id.as_str(),
        )
            .cmp(&(
                b.host.as_str(),
                b.generation,
                b.launch_time_secs,
                b.instance_id.as_str(),
            ))
    });
    Ok(found)
}

/// The instances among `ids` that still show up, whatever their tags (the caller checks them).
pub async fn describe_ids(
    client: &aws_sdk_ec2::Client,
    ids: &[String],
) -> Result<Vec<ClusterInstance>, AwsError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // A filter, not InstanceIds: an id EC2 no longer knows is then just absent from the answer.
    describe(
        client,
        vec![Filter::builder()
            .name("instance-id")
            .set_values(Some(ids.to_vec()))
            .build()],
    )
    .await
}

/// Every instance carrying cluster id `cluster_id` in `vpc_id`, in any state and whatever its
/// name tag. Adopting an imported cluster asks this before trusting the name in the
/// configuration: "no such id here" and "the id is here under another name" need different fixes.
pub async fn find_by_id(
    client: &aws_sdk_ec2::Client,
    cluster_id: &str,
    vpc_id: &str,
) -> Result<Vec<ClusterInstance>, AwsError> {
    describe(
        client,
        vec![
            Filter::builder()
                .name(format!("tag:{CLUSTER_ID_TAG}"))
                .values(cluster_id)
                .build(),
            Filter::builder().name("vpc-id").values(vpc_id).build(),
        ],
    )
    .await
}

async fn describe(
    client: &aws_sdk_ec2::Client,
    filters: Vec<Filter>,
) -> Result<Vec<ClusterInstance>, AwsError> {
    let reservations: Vec<aws_sdk_ec2::types::Reservation> = client
        .describe_instances()
        .set_filters(Some(filters))
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .map_err(api("DescribeInstances"))?;
    Ok(reservations
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(to_cluster_instance)
        .collect())
}

fn to_cluster_instance(instance: &aws_sdk_ec2::types::Instance) -> Option<ClusterInstance> {
    let tag_value = |key: &str| {
        instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    let instance_id = instance.instance_id()?.to_string();
    let Some(host) = tag_value(HOST_TAG) else {
        tracing::warn!(
            instance_id,
            "instance has the cluster tag but no {HOST_TAG} tag; ignoring it"
        );
        return None;
    };
    Some(ClusterInstance {
        instance_id,
        cluster: tag_value(CLUSTER_TAG),
        cluster_id: tag_value(CLUSTER_ID_TAG),
        vpc_id: instance.vpc_id().map(str::to_string),
        host,
        zone: instance
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string)
            .or_else(|| tag_value(ZONE_TAG))
            .unwrap_or_default(),
        subnet_id: instance.subnet_id().map(str::to_string),
        state: instance
            .state()
            .and_then(|s| s.name())
            .cloned()
            .unwrap_or(InstanceStateName::Pending),
        private_ip: instance.private_ip_address().map(str::to_string),
        generation: tag_value(GENERATION_TAG)
            .and_then(|g| g.parse().ok())
            .unwrap_or(0),
        launch_time_secs: instance.launch_time().map(|t| t.secs()).unwrap_or(0),
        security_groups: instance
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
        volume_ids: instance
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.volume_id()).map(str::to_string))
            .collect(),
        nodes: instance
            .tags()
            .iter()
            .filter_map(|t| TaggedNode::parse(t.key()?, t.value()?))
            .collect(),
        image_id: instance.image_id().map(str::to_string),
        redis_package: tag_value(PACKAGE_TAG),
    })
}

/// What one RunInstances call needs.
pub struct LaunchSpec<'a> {
    pub config: &'a AwsDriverConfig,
    pub host: &'a str,
    pub zone: &'a str,
    pub subnet_id: &'a str,
    pub security_group_id: &'a str,
    pub generation: u32,
    /// Base64 cloud-init document.
    pub user_data: &'a str,
    /// The nodes the host runs: their records are tagged on the instance from its launch.
    pub nodes: &'a [TaggedNode],
    /// The nodes' instance profile (it reads the password parameter).
    pub instance_profile: Option<&'a str>,
}

/// Launches the host's instance (or, on a retry with the same token, returns it).
pub async fn launch(
    client: &aws_sdk_ec2::Client,
    spec: &LaunchSpec<'_>,
) -> Result<ClusterInstance, AwsError> {
    let config = spec.config;
    let cluster = config.cluster_name.as_str();
    let cluster_id = config.cluster_id.as_deref();
    let token = client_token(cluster, cluster_id, spec.host, spec.generation);
    let generation = spec.generation.to_string();
    let name = format!("redisha-{cluster}-{}", spec.host);
    let tags_for = |resource: ResourceType, nodes: &[TaggedNode]| {
        let mut t = TagSpecification::builder()
            .resource_type(resource)
            .tags(tag(CLUSTER_TAG, cluster))
            .tags(tag(HOST_TAG, spec.host))
            .tags(tag(ZONE_TAG, spec.zone))
            .tags(tag(GENERATION_TAG, &generation))
            .tags(tag(MANAGED_BY_TAG, "redisha"))
            .tags(tag(PACKAGE_TAG, &config.redis_package))
            .tags(tag("Name", &name));
        if let Some(id) = cluster_id {
            t = t.tags(tag(CLUSTER_ID_TAG, id));
        }
        for (k, v) in &config.tags {
            t = t.tags(tag(k, v));
        }
        for node in nodes {
            t = t.tags(node.tag());
        }
        t.build()
    };
    let mut request = client
        .run_instances()
        .image_id(&config.ami)
        .instance_type(InstanceType::from(config.instance_type.as_str()))
        .min_count(1)
        .max_count(1)
        .subnet_id(spec.subnet_id)
        .security_group_ids(spec.security_group_id)
        .client_token(&token)
        .user_data(spec.user_data)
        .tag_specifications(tags_for(ResourceType::Instance, spec.nodes))
        .tag_specifications(tags_for(ResourceType::Volume, &[]))
        // IMDSv2 only: the user data script uses tokens, and v1 is a credential-theft path.
        .metadata_options(
            aws_sdk_ec2::types::InstanceMetadataOptionsRequest::builder()
                .http_tokens(aws_sdk_ec2::types::HttpTokensState::Required)
                .build(),
        );
    if let Some(key) = &config.key_name {
        request = request.key_name(key);
    }
    if let Some(profile) = spec.instance_profile {
        request = request.iam_instance_profile(
            aws_sdk_ec2::types::IamInstanceProfileSpecification::builder()
                .name(profile)
                .build(),
        );
    }
    if let Some(group) = &config.placement_group {
        request = request.placement(
            aws_sdk_ec2::types::Placement::builder()
                .group_name(group)
                .build(),
        );
    }
    if let Some(volume) = &config.data_volume {
        let mut ebs = EbsBlockDevice::builder()
            .volume_size(volume.size_gib)
            .volume_type(VolumeType::Gp3)
            .encrypted(volume.encrypted)
            .delete_on_termination(true);
        if let Some(key) = &volume.kms_key_id {
            ebs = ebs.kms_key_id(key);
        }
        request = request.block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(DATA_DEVICE)
                .ebs(ebs.build())
                .build(),
        );
    }
    let answer = request.send().await.map_err(api("RunInstances"))?;
    let instance = answer.instances().first().ok_or(AwsError::MissingField {
        operation: "RunInstances",
        field: "Instances",
    })?;
    let launched = to_cluster_instance(instance).ok_or(AwsError::MissingField {
        operation: "RunInstances",
        field: "InstanceId or tags",
    })?;
    tracing::info!(
        cluster,
        host = spec.host,
        zone = spec.zone,
        subnet_id = spec.subnet_id,
        instance_id = launched.instance_id,
        generation = spec.generation,
        "launched instance"
    );
    Ok(launched)
}

/// Waits until every instance in `ids` has reached `target` (running or terminated).
/// A running wait fails early when an instance is terminated instead.
pub async fn wait_for_state(
    client: &aws_sdk_ec2::Client,
    ids: &[String],
    target: InstanceStateName,
    phase: &'static str,
    timeout: Duration,
    poll: Duration,
) -> Result<Vec<ClusterInstance>, AwsError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let seen = describe_ids(client, ids).await?;
        if target == InstanceStateName::Running {
            if let Some(gone) = seen.iter().find(|i| i.is_gone()) {
                return Err(AwsError::InstanceFailed {
                    host: gone.host.clone(),
                    instance_id: gone.instance_id.clone(),
                    state: gone.state.as_str().to_string(),
                    hint: "it stopped existing while starting (capacity, a bad AMI or a volume/KMS problem); the next apply launches a replacement".into(),
                });
            }
        }
        // An instance that no longer shows up has been terminated long ago.
        let done = ids
            .iter()
            .all(|id| match seen.iter().find(|i| &i.instance_id == id) {
                Some(i) => i.state == target,
                None => target == InstanceStateName::Terminated,
            });
        if done {
            return Ok(seen);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AwsError::Timeout {
                phase,
                what: format!("instances {} to be {}", ids.join(", "), target.as_str()),
                after: timeout,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Asks EC2 to terminate instances (their data volumes go with them).
pub async fn terminate(client: &aws_sdk_ec2::Client, ids: &[String]) -> Result<(), AwsError> {
    if ids.is_empty() {
        return Ok(());
    }
    match client
        .terminate_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
    {
        Ok(_) => {
            tracing::info!(instance_ids = ?ids, "terminating instances");
            Ok(())
        }
        Err(e) => {
            let err = api("TerminateInstances")(e);
            if err.code() == Some("InvalidInstanceID.NotFound") {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

/// Stops running instances (EC2 shuts their OS down; their volumes stay).
pub async fn stop(client: &aws_sdk_ec2::Client, ids: &[String]) -> Result<(), AwsError> {
    client
        .stop_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(api("StopInstances"))?;
    tracing::info!(instance_ids = ?ids, "stopping instances");
    Ok(())
}

/// Starts stopped instances.
pub async fn start(client: &aws_sdk_ec2::Client, ids: &[String]) -> Result<(), AwsError> {
    client
        .start_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(api("StartInstances"))?;
    tracing::info!(instance_ids = ?ids, "starting stopped instances");
    Ok(())
}

/// The memory of an instance type in MiB: a host's capacity for the planner.
pub async fn instance_memory_mib(
    client: &aws_sdk_ec2::Client,
    instance_type: &str,
) -> Result<u64, AwsError> {
    let answer = client
        .describe_instance_types()
        .instance_types(InstanceType::from(instance_type))
        .send()
        .await;
    let unknown = || AwsError::UnknownInstanceType {
        instance_type: instance_type.to_string(),
        region: crate::topology::region_of(client),
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            let err = api("DescribeInstanceTypes")(e);
            return match err.code() {
                Some(code) if code.starts_with("InvalidInstanceType") => Err(unknown()),
                _ => Err(err),
            };
        }
    };
    answer
        .instance_types()
        .iter()
        .find(|t| t.instance_type().map(|t| t.as_str()) == Some(instance_type))
        .and_then(|t| t.memory_info())
        .and_then(|m| m.size_in_mib())
        .and_then(|m| u64::try_from(m).ok())
        .ok_or_else(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_are_stable_short_and_change_with_generation() {
        let a = client_token("shop", None, "h-a-0", 0);
        assert_eq!(a, client_token("shop", None, "h-a-0", 0));
        assert!(a.len() <= 64 && a.is_ascii());
        assert_ne!(a, client_token("shop", None, "h-a-0", 1));
        assert_ne!(a, client_token("shop", None, "h-a-1", 0));
        assert_ne!(a, client_token("sho", None, "ph-a-0", 0));
    }

    #[test]
    fn client_tokens_of_two_clusters_of_one_name_differ() {
        let staging = client_token("cache", Some("00000000000000aa"), "h-a-0", 0);
        let prod = client_token("cache", Some("00000000000000bb"), "h-a-0", 0);
        assert_ne!(staging, prod);
        assert_ne!(staging, client_token("cache", None, "h-a-0", 0));
        assert!(staging.len() <= 64 && staging.is_ascii());
    }

    #[test]
    fn a_scope_owns_only_its_id_or_for_legacy_clusters_no_id() {
        let with_id = Scope {
            cluster: "cache",
            cluster_id: Some("00000000000000aa"),
            vpc_id: "vpc-1",
        };
        assert!(with_id.owns(Some("cache"), Some("00000000000000aa")));
        assert!(!with_id.owns(Some("cache"), Some("00000000000000bb")));
        assert!(!with_id.owns(Some("cache"), None));
        assert!(!with_id.owns(Some("shop"), Some("00000000000000aa")));
        let legacy = Scope {
            cluster_id: None,
            ..with_id
        };
        assert!(legacy.owns(Some("cache"), None));
        assert!(!legacy.owns(Some("cache"), Some("00000000000000aa")));
    }
}
