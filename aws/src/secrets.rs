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
    put_parameter(
        ssm,
        Owner {
            cluster,
            cluster_id,
        },
        &name,
        password,
        Kind::Secret,
        "the node password",
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
    put_parameter(
        ssm,
        Owner {
            cluster,
            cluster_id,
        },
        &name,
        password,
        Kind::Secret,
        "the sentinels' password",
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

/// The cluster a parameter belongs to (its tags).
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub cluster: &'a str,
    pub cluster_id: &'a str,
}

/// Whether a parameter's value is a secret (a SecureString, encrypted with the account's SSM
/// key) or a plain record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Secret,
    Plain,
}

/// Writes (or overwrites) the parameter `name` of the cluster `owner`, tagged with its name
/// and id. `what` is its description's end. Values over the standard tier's 4 KB (many ACL
/// users) go to the advanced tier (intelligent tiering decides).
pub async fn put_parameter(
    ssm: &aws_sdk_ssm::Client,
    owner: Owner<'_>,
    name: &str,
    value: &str,
    kind: Kind,
    what: &str,
) -> Result<(), AwsError> {
    let Owner {
        cluster,
        cluster_id,
    } = owner;
    let mut put = ssm
        .put_parameter()
        .name(name)
        .description(format!("redisha cluster {cluster} ({cluster_id}): {what}"))
        .r#type(match kind {
            Kind::Secret => ParameterType::SecureString,
            Kind::Plain => ParameterType::String,
        })
        .value(value)
        .overwrite(true);
    if value.len() > 4096 {
        put = put.tier(aws_sdk_ssm::types::ParameterTier::IntelligentTiering);
    }
    put.send().await.map_err(api("ssm:PutParameter"))?;
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

/// The value of parameter `name` (decrypted), `None` when there is none.
pub async fn get_parameter(
    ssm: &aws_sdk_ssm::Client,
    name: &str,
) -> Result<Option<String>, AwsError> {
    match ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
    {
        Ok(found) => Ok(found
            .parameter()
            .and_then(|p| p.value())
            .map(str::to_string)),
        Err(e) => {
            let err = api("ssm:GetParameter")(e);
            if err.code() == Some("ParameterNotFound") {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

/// Every parameter under `path` (at any depth), as (name, decrypted value).
pub async fn parameters_under(
    ssm: &aws_sdk_ssm::Client,
    path: &str,
) -> Result<Vec<(String, String)>, AwsError> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = ssm
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .with_decryption(true)
            .set_next_token(next.take())
            .send()
            .await
            .map_err(api("ssm:GetParametersByPath"))?;
        for p in page.parameters() {
            if let (Some(name), Some(value)) = (p.name(), p.value()) {
                out.push((name.to_string(), value.to_string()));
            }
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

/// Deletes every parameter of the cluster (everything under [`parameter_prefix`]: the
/// password, the operator user's password, the TLS authority and the nodes' certificates);
/// returns their names. Destroy may run twice: nothing left is fine.
pub async fn delete_all(
    ssm: &aws_sdk_ssm::Client,
    cluster: &str,
    cluster_id: &str,
) -> Result<Vec<String>, AwsError> {
    let names: Vec<String> = parameters_under(ssm, &parameter_prefix(cluster, cluster_id))
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    // DeleteParameters takes at most 10 names.
    for chunk in names.chunks(10) {
        ssm.delete_parameters()
            .set_names(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(api("ssm:DeleteParameters"))?;
    }
    Ok(names)
}

/// Deletes the cluster's password parameter; a missing one is fine (destroy may run twice).
pub async fn delete_password(
    ssm: &aws_sdk_ssm::Client,
    cluster: &str,
    cluster_id: &str,
) -> Result<bool, AwsError> {
    delete_secret(ssm, &parameter_name(cluster, cluster_id)).await
}

pub(crate) async fn delete_secret(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<bool, AwsError> {
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
