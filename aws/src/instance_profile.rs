//! The nodes' instance profile: what lets an instance read its cluster's password parameter
//! (and be reached by SSM Run Command). The driver makes an IAM role and profile per cluster
//! (named from the cluster id, tagged with it) unless the user gives a profile of their own
//! (`aws.instance_profile`); destroy deletes only a role and profile carrying the cluster's id.

use aws_sdk_iam::types::Tag;

use crate::error::{api, AwsError};
use crate::instances::{CLUSTER_ID_TAG, CLUSTER_TAG};
use crate::secrets::parameter_prefix;

/// The inline policy's name on the role.
pub const POLICY_NAME: &str = "redisha-node";
/// AWS's managed policy that lets the SSM agent take Run Command documents.
pub const SSM_CORE_POLICY: &str = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore";

/// The role's and the profile's name: one per cluster id (IAM names are account-wide, so the
/// cluster name, which repeats across VPCs, is not enough).
pub fn role_name(cluster_id: &str) -> String {
    format!("redisha-node-{cluster_id}")
}

const TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// Reading what the cluster's nodes need, nothing else: the password, the sentinels' password
/// (sentinel mode, [`crate::sentinel_procs`]) and what is under `<prefix>/node/` (ACL lines, the authority's certificate, node certificates; see
/// [`crate::node_secrets`]). Not the TLS authority's key nor the operator user's own
/// parameter, which the provider alone reads: a node that is broken into cannot issue
/// certificates.
pub fn node_policy(cluster: &str, cluster_id: &str) -> String {
    let prefix = parameter_prefix(cluster, cluster_id);
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":["ssm:GetParameter","ssm:GetParameters"],"Resource":["arn:aws:ssm:*:*:parameter{prefix}/password","arn:aws:ssm:*:*:parameter{prefix}/sentinel-password","arn:aws:ssm:*:*:parameter{prefix}/node/*"]}}]}}"#
    )
}

/// Makes the cluster's role and instance profile if they do not exist yet (idempotent), and
/// returns the profile's name. A role of that name carrying another cluster id is an error.
pub async fn ensure(
    iam: &aws_sdk_iam::Client,
    cluster: &str,
    cluster_id: &str,
) -> Result<String, AwsError> {
    let name = role_name(cluster_id);
    let tags = [tag(CLUSTER_TAG, cluster)?, tag(CLUSTER_ID_TAG, cluster_id)?];
    match iam.get_role().role_name(&name).send().await {
        Ok(found) => {
            let owner = found
                .role()
                .and_then(|r| {
                    r.tags()
                        .iter()
                        .find(|t| t.key() == CLUSTER_ID_TAG)
                        .map(|t| t.value().to_string())
                })
                .unwrap_or_default();
            if owner != cluster_id {
                return Err(AwsError::NotOurs {
                    what: format!("IAM role {name}"),
                    owner,
                    ours: cluster_id.to_string(),
                });
            }
        }
        Err(e) => {
            let err = api("iam:GetRole")(e);
            if err.code() != Some("NoSuchEntity") {
                return Err(err);
            }
            iam.create_role()
                .role_name(&name)
                .path("/redisha/")
                .description(format!(
                    "redisha cluster {cluster} ({cluster_id}): its nodes"
                ))
                .assume_role_policy_document(TRUST_POLICY)
                .set_tags(Some(tags.to_vec()))
                .send()
                .await
                .map_err(api("iam:CreateRole"))?;
        }
    }
    iam.put_role_policy()
        .role_name(&name)
        .policy_name(POLICY_NAME)
        .policy_document(node_policy(cluster, cluster_id))
        .send()
        .await
        .map_err(api("iam:PutRolePolicy"))?;
    iam.attach_role_policy()
        .role_name(&name)
        .policy_arn(SSM_CORE_POLICY)
        .send()
        .await
        .map_err(api("iam:AttachRolePolicy"))?;
    let has_role = match iam
        .get_instance_profile()
        .instance_profile_name(&name)
        .send()
        .await
    {
        Ok(found) => found
            .instance_profile()
            .is_some_and(|p| p.roles().iter().any(|r| r.role_name() == name)),
        Err(e) => {
            let err = api("iam:GetInstanceProfile")(e);
            if err.code() != Some("NoSuchEntity") {
                return Err(err);
            }
            iam.create_instance_profile()
                .instance_profile_name(&name)
                .path("/redisha/")
                .set_tags(Some(tags.to_vec()))
                .send()
                .await
                .map_err(api("iam:CreateInstanceProfile"))?;
            false
        }
    };
    if !has_role {
        iam.add_role_to_instance_profile()
            .instance_profile_name(&name)
            .role_name(&name)
            .send()
            .await
            .map_err(api("iam:AddRoleToInstanceProfile"))?;
    }
    Ok(name)
}

/// Deletes the cluster's role and profile, if they exist and carry its id. Returns whether
/// the role was deleted.
pub async fn delete(iam: &aws_sdk_iam::Client, cluster_id: &str) -> Result<bool, AwsError> {
    let name = role_name(cluster_id);
    let role = match iam.get_role().role_name(&name).send().await {
        Ok(found) => found.role().cloned(),
        Err(e) => {
            let err = api("iam:GetRole")(e);
            if err.code() == Some("NoSuchEntity") {
                None
            } else {
                return Err(err);
            }
        }
    };
    let ours = role.as_ref().is_some_and(|r| {
        r.tags()
            .iter()
            .any(|t| t.key() == CLUSTER_ID_TAG && t.value() == cluster_id)
    });
    if role.is_some() && !ours {
        tracing::warn!(
            role = name,
            "IAM role does not carry this cluster's id; left alone"
        );
        return Ok(false);
    }
    ignore_missing(
        iam.remove_role_from_instance_profile()
            .instance_profile_name(&name)
            .role_name(&name)
            .send()
            .await
            .map_err(api("iam:RemoveRoleFromInstanceProfile")),
    )?;
    ignore_missing(
        iam.delete_instance_profile()
            .instance_profile_name(&name)
            .send()
            .await
            .map_err(api("iam:DeleteInstanceProfile")),
    )?;
    if role.is_none() {
        return Ok(false);
    }
    ignore_missing(
        iam.delete_role_policy()
            .role_name(&name)
            .policy_name(POLICY_NAME)
            .send()
            .await
            .map_err(api("iam:DeleteRolePolicy")),
    )?;
    ignore_missing(
        iam.detach_role_policy()
            .role_name(&name)
            .policy_arn(SSM_CORE_POLICY)
            .send()
            .await
            .map_err(api("iam:DetachRolePolicy")),
    )?;
    iam.delete_role()
        .role_name(&name)
        .send()
        .await
        .map_err(api("iam:DeleteRole"))?;
    Ok(true)
}

fn ignore_missing<T>(result: Result<T, AwsError>) -> Result<(), AwsError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("NoSuchEntity") => Ok(()),
        Err(e) => Err(e),
    }
}

fn tag(key: &str, value: &str) -> Result<Tag, AwsError> {
    Tag::builder()
        .key(key)
        .value(value)
        .build()
        .map_err(|e| AwsError::Shared(format!("iam tag {key}: {e}")))
}
