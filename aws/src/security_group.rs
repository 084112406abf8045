//! The cluster's security group: the Redis client ports and the cluster bus ports, open only
//! to the group itself (the cluster's instances) and to `aws.allowed_cidrs`.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, ResourceType, Tag, TagSpecification, UserIdGroupPair,
};

use crate::error::{api, AwsError};
use crate::instances::{CLUSTER_TAG, MANAGED_BY_TAG};
use crate::settings::{CLUSTER_BUS_OFFSET, REDIS_BASE_PORT};

/// The group's name for a cluster; one group per cluster and VPC.
pub fn group_name(cluster: &str) -> String {
    format!("redisha-{cluster}")
}

/// Who may reach a port range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Group(String),
    Cidr(String),
}

/// One ingress rule: TCP ports `from..=to` from `source`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub from: i32,
    pub to: i32,
    pub source: Source,
}

/// The rules a cluster needs: ports 6379..6379+max_nodes and the bus ports 10000 above, for
/// the group itself and each allowed CIDR.
pub fn desired_rules(group_id: &str, allowed_cidrs: &[String], max_nodes: u16) -> BTreeSet<Rule> {
    let first = i32::from(REDIS_BASE_PORT);
    let last = first + i32::from(max_nodes.max(1)) - 1;
    let bus = i32::from(CLUSTER_BUS_OFFSET);
    let mut sources = vec![Source::Group(group_id.to_string())];
    sources.extend(allowed_cidrs.iter().cloned().map(Source::Cidr));
    let mut rules = BTreeSet::new();
    for source in sources {
        for (from, to) in [(first, last), (first + bus, last + bus)] {
            rules.insert(Rule {
                from,
                to,
                source: source.clone(),
            });
        }
    }
    rules
}

/// Finds the cluster's group in `vpc_id`.
pub async fn find_group(
    client: &aws_sdk_ec2::Client,
    cluster: &str,
    vpc_id: Option<&str>,
) -> Result<Option<aws_sdk_ec2::types::SecurityGroup>, AwsError> {
    let mut request = client
        .describe_security_groups()
        .filters(
            Filter::builder()
                .name("group-name")
                .values(group_name(cluster))
                .build(),
        )
        .filters(
            Filter::builder()
                .name(format!("tag:{CLUSTER_TAG}"))
                .values(cluster)
                .build(),
        );
    if let Some(vpc_id) = vpc_id {
        request = request.filters(Filter::builder().name("vpc-id").values(vpc_id).build());
    }
    let answer = request
        .send()
        .await
        .map_err(api("DescribeSecurityGroups"))?;
    Ok(answer.security_groups().first().cloned())
}

/// Creates the group if needed and makes its ingress rules exactly the desired ones.
/// Returns the group id.
pub async fn ensure_group(
    client: &aws_sdk_ec2::Client,
    cluster: &str,
    vpc_id: &str,
    allowed_cidrs: &[String],
    max_nodes: u16,
    user_tags: &[(String, String)],
) -> Result<String, AwsError> {
    let group = match find_group(client, cluster, Some(vpc_id)).await? {
        Some(group) => group,
        None => {
            let mut tags = TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(tag(CLUSTER_TAG, cluster))
                .tags(tag(MANAGED_BY_TAG, "redisha"))
                .tags(tag("Name", &group_name(cluster)));
            for (k, v) in user_tags {
                tags = tags.tags(tag(k, v));
            }
            let created = client
                .create_security_group()
                .group_name(group_name(cluster))
                .description(format!(
                    "redisha cluster {cluster}: Redis and cluster bus ports"
                ))
                .vpc_id(vpc_id)
                .tag_specifications(tags.build())
                .send()
                .await;
            match created {
                Ok(out) => {
                    let id = out.group_id().ok_or(AwsError::MissingField {
                        operation: "CreateSecurityGroup",
                        field: "GroupId",
                    })?;
                    tracing::info!(cluster, group_id = id, vpc_id, "created security group");
                }
                // Another apply created it in between: use that one.
                Err(e)
                    if e.as_service_error().map(|s| {
                        aws_sdk_ec2::error::ProvideErrorMetadata::code(s)
                            == Some("InvalidGroup.Duplicate")
                    }) == Some(true) => {}
                Err(e) => return Err(api("CreateSecurityGroup")(e)),
            }
            find_group(client, cluster, Some(vpc_id))
                .await?
                .ok_or(AwsError::MissingField {
                    operation: "DescribeSecurityGroups",
                    field: "the group just created",
                })?
        }
    };
    let group_id = group
        .group_id()
        .ok_or(AwsError::MissingField {
            operation: "DescribeSecurityGroups",
            field: "GroupId",
        })?
        .to_string();

    let existing = existing_rules(group.ip_permissions());
    let desired = desired_rules(&group_id, allowed_cidrs, max_nodes);
    let stale: Vec<&Rule> = existing.difference(&desired).collect();
    let missing: Vec<&Rule> = desired.difference(&existing).collect();
    if !stale.is_empty() {
        client
            .revoke_security_group_ingress()
            .group_id(&group_id)
            .set_ip_permissions(Some(stale.iter().map(|r| permission(r)).collect()))
            .send()
            .await
            .map_err(api("RevokeSecurityGroupIngress"))?;
        tracing::info!(group_id, count = stale.len(), "revoked stale ingress rules");
    }
    if !missing.is_empty() {
        client
            .authorize_security_group_ingress()
            .group_id(&group_id)
            .set_ip_permissions(Some(missing.iter().map(|r| permission(r)).collect()))
            .send()
            .await
            .map_err(api("AuthorizeSecurityGroupIngress"))?;
        tracing::info!(group_id, count = missing.len(), "authorized ingress rules");
    }
    Ok(group_id)
}

/// Deletes the cluster's group, waiting while terminating instances still use it.
pub async fn delete_group(
    client: &aws_sdk_ec2::Client,
    cluster: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<bool, AwsError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Some(group) = find_group(client, cluster, None).await? else {
            return Ok(false);
        };
        let Some(group_id) = group.group_id() else {
            return Err(AwsError::MissingField {
                operation: "DescribeSecurityGroups",
                field: "GroupId",
            });
        };
        match client
            .delete_security_group()
            .group_id(group_id)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(cluster, group_id, "deleted security group");
                return Ok(true);
            }
            Err(e) => {
                let err = api("DeleteSecurityGroup")(e);
                match err.code() {
                    Some("InvalidGroup.NotFound") => return Ok(false),
                    Some("DependencyViolation") if tokio::time::Instant::now() < deadline => {
                        tracing::debug!(group_id, "security group still in use; waiting");
                        tokio::time::sleep(poll).await;
                    }
                    Some("DependencyViolation") => {
                        return Err(AwsError::Timeout {
                            phase: "delete",
                            what: format!("security group {group_id} to be free of instances"),
                            after: timeout,
                        })
                    }
                    _ => return Err(err),
                }
            }
        }
    }
}

fn existing_rules(permissions: &[IpPermission]) -> BTreeSet<Rule> {
    let mut rules = BTreeSet::new();
    for p in permissions {
        if p.ip_protocol() != Some("tcp") {
            continue;
        }
        let (Some(from), Some(to)) = (p.from_port(), p.to_port()) else {
            continue;
        };
        let mut add = |source| {
            rules.insert(Rule { from, to, source });
        };
        for pair in p.user_id_group_pairs() {
            if let Some(id) = pair.group_id() {
                add(Source::Group(id.to_string()));
            }
        }
        for range in p.ip_ranges() {
            if let Some(cidr) = range.cidr_ip() {
                add(Source::Cidr(cidr.to_string()));
            }
        }
        for range in p.ipv6_ranges() {
            if let Some(cidr) = range.cidr_ipv6() {
                add(Source::Cidr(cidr.to_string()));
            }
        }
    }
    rules
}

fn permission(rule: &Rule) -> IpPermission {
    let builder = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(rule.from)
        .to_port(rule.to);
    match &rule.source {
        Source::Group(id) => {
            builder.user_id_group_pairs(UserIdGroupPair::builder().group_id(id).build())
        }
        Source::Cidr(cidr) if cidr.contains(':') => {
            builder.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(cidr).build())
        }
        Source::Cidr(cidr) => builder.ip_ranges(IpRange::builder().cidr_ip(cidr).build()),
    }
    .build()
}

pub(crate) fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_node_and_bus_ranges_for_group_and_cidrs() {
        let rules = desired_rules("sg-1", &["10.1.0.0/16".into()], 3);
        assert_eq!(rules.len(), 4);
        assert!(rules.contains(&Rule {
            from: 6379,
            to: 6381,
            source: Source::Group("sg-1".into())
        }));
        assert!(rules.contains(&Rule {
            from: 16379,
            to: 16381,
            source: Source::Cidr("10.1.0.0/16".into())
        }));
    }
}
