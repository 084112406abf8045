//! The cluster password in SSM Parameter Store, as a SecureString, so that it never travels in
//! user data (readable by anyone allowed `ec2:DescribeInstanceAttribute`). The instances read
//! it at boot with their instance profile ([`crate::instance_profile`]); a rotation overwrites
//! it, so a node started later comes up with the new password.

use aws_sdk_ssm::types::{ParameterType, Tag};

use crate::error::{api, AwsError};
use crate::instances::{CLUSTER_ID_TAG, CLUSTER_TAG};

/// The parameter's name: under the cluster's name and id, so that two clusters of one name
/// (two VPCs, two states) never share it, and an instance policy can name it exactly.
pub fn parameter_name(cluster: &str, cluster_id: &str) -> String {
    format!("{}/password", parameter_prefix(cluster, cluster_id))
}

/// Every parameter of the cluster is under this path.
pub fn parameter_prefix(cluster: &str, cluster_id: &str) -> String {
    format!("/redisha/{cluster}/{cluster_id}")
}

/// Writes (or overwrites) the password. The name holds the cluster id, so the parameter is
/// this cluster's; its tags say so too, for people and policies.
pub async fn put_password(
    ssm: &aws_sdk_ssm::Client,
    cluster: &str,
    cluster_id: &str,
    password: &str,
) -> Result<(), AwsError> {
    let name = parameter_name(cluster, cluster_id);
    put_secret(
        ssm,
        cluster,
        cluster_id,
        &name,
        "the node password",
        password,
    )
    .await
}

/// Sentinel mode: the sentinels' own password, beside the node password (the sentinels read
/// both when their config is first written; see [`crate::sentinel_procs`]).
pub fn sentinel_parameter_name(cluster: &str, cluster_id: &str) -> String {
    format!(
        "{}/sentinel-password",
        parameter_prefix(cluster, cluster_id)
    )
}

/// Writes (or overwrites) the sentinels' password.
pub async fn put_sentinel_password(
    ssm: &aws_sdk_ssm::Client,
    cluster: &str,
    cluster_id: &str,
    password: &str,
) -> Result<(), AwsError> {
    let name = sentinel_parameter_name(cluster, cluster_id);
    put_secret(
        ssm,
        cluster,
        cluster_id,
        &name,
        "the sentinels' password",
        password,
    )
    .await
}

/// Deletes the sentinels' password parameter; a missing one is fine (a cluster in cluster
/// mode has none).
pub async fn delete_sentinel_password(
    ssm: &aws_sdk_ssm::Client,
    cluster: &str,
    cluster_id: &str,
) -> Result<bool, AwsError> {
    delete_secret(ssm, &sentinel_parameter_name(cluster, cluster_id)).await
}

/// A SecureString of the cluster, tagged with its name and id.
async fn put_secret(
    ssm: &aws_sdk_ssm::Client,
    cluster: &str,
    cluster_id: &str,
    name: &str,
    what: &str,
    value: &str,
) -> Result<(), AwsError> {
    ssm.put_parameter()
        .name(name)
        .description(format!("redisha cluster {cluster} ({cluster_id}): {what}"))
        .r#type(ParameterType::SecureString)
        .value(value)
        .overwrite(true)
        .send()
        .await
        .map_err(api("ssm:PutParameter"))?;
    // PutParameter takes tags only when it creates; tagging again is idempotent.
    ssm.add_tags_to_resource()
        .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
        .resource_id(name)
        .tags(ssm_tag(CLUSTER_TAG, cluster)?)
        .tags(ssm_tag(CLUSTER_ID_TAG, cluster_id)?)
        .send()
        .await
        .map_err(api("ssm:AddTagsToResource"))?;
    tracing::debug!(parameter = name, "{what} stored in SSM Parameter Store");
    Ok(())
}

/// Deletes the cluster's password parameter; a missing one is fine (destroy may run twice).
pub async fn delete_password(
    ssm: &aws_sdk_ssm::Client,
    cluster: &str,
    cluster_id: &str,
) -> Result<bool, AwsError> {
    delete_secret(ssm, &parameter_name(cluster, cluster_id)).await
}

async fn delete_secret(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<bool, AwsError> {
    match ssm.delete_parameter().name(name).send().await {
        Ok(_) => Ok(true),
        Err(e) => {
            let err = api("ssm:DeleteParameter")(e);
            if err.code() == Some("ParameterNotFound") {
                Ok(false)
            } else {
                Err(err)
            }
        }
    }
}

fn ssm_tag(key: &str, value: &str) -> Result<Tag, AwsError> {
    Tag::builder()
        .key(key)
        .value(value)
        .build()
        .map_err(|e| AwsError::Shared(format!("ssm tag {key}: {e}")))
}
