//! The cluster's security group: the Redis client ports, open to the group itself (the
//! cluster's instances) and to `aws.allowed_cidrs`, and the cluster bus ports, open to the group
//! alone. The bus has no authentication: whoever reaches it can forge gossip and take slots, and
//! only nodes ever need it (the provider and clients speak to the client ports).

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, ResourceType, Tag, TagSpecification, UserIdGroupPair,
};

use crate::error::{api, AwsError};
use crate::instances::{Scope, CLUSTER_ID_TAG, CLUSTER_TAG, MANAGED_BY_TAG};
use crate::settings::{CLUSTER_BUS_OFFSET, EXPORTER_PORT_OFFSET, REDIS_BASE_PORT};

/// The name of a cluster's group made before cluster ids existed; such a group keeps it after
/// being claimed (names cannot change).
pub fn legacy_group_name(cluster: &str) -> String {
    format!("redisha-{cluster}")
}

/// The name of a new group: group names are unique per VPC, so two clusters of one name in a
/// VPC (two Terraform states) need the id in it. Groups are found by their tags, not by it.
pub fn group_name(cluster: &str, cluster_id: Option<&str>) -> String {
    match cluster_id {
        Some(id) => format!("redisha-{cluster}-{id}"),
        None => legacy_group_name(cluster),
    }
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

/// Who besides the cluster itself may reach the client ports (`aws.allowed_cidrs`,
/// `aws.allowed_security_group_ids`). Never the bus ports: the bus has no authentication.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clients<'a> {
    pub cidrs: &'a [String],
    pub groups: &'a [String],
    /// Who may reach the metrics exporters (`aws.monitoring_cidrs`): those ports only.
    pub monitoring: &'a [String],
}

/// The rules a cluster needs: ports 6379..6379+max_nodes for the group itself and each
/// allowed client (CIDR or security group), and their bus ports (10000 above) for the group
/// itself only.
pub fn desired_rules(group_id: &str, allowed: Clients<'_>, max_nodes: u16) -> BTreeSet<Rule> {
    let first = i32::from(REDIS_BASE_PORT);
    let last = first + i32::from(max_nodes.max(1)) - 1;
    let bus = i32::from(CLUSTER_BUS_OFFSET);
    let group = Source::Group(group_id.to_string());
    let clients = std::iter::once(group.clone())
        .chain(allowed.groups.iter().cloned().map(Source::Group))
        .chain(allowed.cidrs.iter().cloned().map(Source::Cidr));
    let mut rules: BTreeSet<Rule> = clients
        .map(|source| Rule {
            from: first,
            to: last,
            source,
        })
        .collect();
    rules.insert(Rule {
        from: first + bus,
        to: last + bus,
        source: group,
    });
    let exporter = i32::from(EXPORTER_PORT_OFFSET);
    rules.extend(allowed.monitoring.iter().map(|cidr| Rule {
        from: first + exporter,
        to: last + exporter,
        source: Source::Cidr(cidr.clone()),
    }));
    rules
}

/// Finds the cluster's group: the one in the scope's VPC carrying its name tag and its id tag
/// (also a claimed group of a cluster made before ids, which keeps its old name). Without an id,
/// the group of the old name carrying the name tag and no id tag.
pub async fn find_group(
    client: &aws_sdk_ec2::Client,
    scope: &Scope<'_>,
) -> Result<Option<aws_sdk_ec2::types::SecurityGroup>, AwsError> {
    let mut filters = scope.filters();
    if scope.cluster_id.is_none() {
        filters.push(
            Filter::builder()
                .name("group-name")
                .values(legacy_group_name(scope.cluster))
                .build(),
        );
    }
    let answer = client
        .describe_security_groups()
        .set_filters(Some(filters))
        .send()
        .await
        .map_err(api("DescribeSecurityGroups"))?;
    Ok(answer
        .security_groups()
        .iter()
        .find(|g| scope.owns(group_tag(g, CLUSTER_TAG), group_tag(g, CLUSTER_ID_TAG)))
        .cloned())
}

/// A group made before cluster ids existed for cluster `cluster` in `vpc_id`: its old name, the
/// name tag, and no id tag (a group of that name carrying an id is some cluster's already).
pub async fn find_legacy_group(
    client: &aws_sdk_ec2::Client,
    cluster: &str,
    vpc_id: &str,
) -> Result<Option<aws_sdk_ec2::types::SecurityGroup>, AwsError> {
    find_group(
        client,
        &Scope {
            cluster,
            cluster_id: None,
            vpc_id,
        },
    )
    .await
}

/// A tag's value on a group.
pub fn group_tag<'a>(group: &'a aws_sdk_ec2::types::SecurityGroup, key: &str) -> Option<&'a str> {
    group
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// Creates the group if needed and makes its ingress rules exactly the desired ones.
/// Returns the group id.
pub async fn ensure_group(
    client: &aws_sdk_ec2::Client,
    scope: &Scope<'_>,
    allowed: Clients<'_>,
    max_nodes: u16,
    user_tags: &[(String, String)],
) -> Result<String, AwsError> {
    let cluster = scope.cluster;
    let vpc_id = scope.vpc_id;
    let name = group_name(cluster, scope.cluster_id);
    let group = match find_group(client, scope).await? {
        Some(group) => group,
        None => {
            let mut tags = TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(tag(CLUSTER_TAG, cluster))
                .tags(tag(MANAGED_BY_TAG, "redisha"))
                .tags(tag("Name", &name));
            if let Some(id) = scope.cluster_id {
                tags = tags.tags(tag(CLUSTER_ID_TAG, id));
            }
            for (k, v) in user_tags {
                tags = tags.tags(tag(k, v));
            }
            let created = client
                .create_security_group()
                .group_name(&name)
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
            find_group(client, scope)
                .await?
                .ok_or_else(|| AwsError::GroupNameTaken {
                    name: name.clone(),
                    vpc_id: vpc_id.to_string(),
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
    let desired = desired_rules(&group_id, allowed, max_nodes);
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

/// Deletes the cluster's group (found in `scope` only), waiting while terminating instances
/// still use it.
pub async fn delete_group(
    client: &aws_sdk_ec2::Client,
    scope: &Scope<'_>,
    timeout: Duration,
    poll: Duration,
) -> Result<bool, AwsError> {
    let cluster = scope.cluster;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Some(group) = find_group(client, scope).await? else {
            return Ok(false);
        };
        let Some(group_id) = group.group_id() else {
            return Err(AwsError::MissingField {
                operation: "DescribeSecurityGroups",
                field: "GroupId",
            });
        };
        // Clusters made before ids shared one group per name and VPC: while another cluster's
        // instances run in it, the group is theirs too and stays. Checked here, not left to
        // EC2's DependencyViolation, which would only end in a timeout (and emulators do not
        // all enforce it).
        let others = live_users_outside(client, group_id, scope).await?;
        if !others.is_empty() {
            tracing::warn!(
                group_id,
                instances = ?others,
                "the security group is still used by instances of another cluster; leaving it"
            );
            return Ok(false);
        }
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
                    Some("DependencyViolation") => {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(AwsError::Timeout {
                                phase: "delete",
                                what: format!("security group {group_id} to be free of instances"),
                                after: timeout,
                            });
                        }
                        tracing::debug!(group_id, "security group still in use; waiting");
                        tokio::time::sleep(poll).await;
                    }
                    _ => return Err(err),
                }
            }
        }
    }
}

/// Instances not shut down that run in `group_id` and are not the scope's.
async fn live_users_outside(
    client: &aws_sdk_ec2::Client,
    group_id: &str,
    scope: &Scope<'_>,
) -> Result<Vec<String>, AwsError> {
    let reservations: Vec<aws_sdk_ec2::types::Reservation> = client
        .describe_instances()
        .filters(
            Filter::builder()
                .name("instance.group-id")
                .values(group_id)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        )
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .map_err(api("DescribeInstances"))?;
    let tag_of = |i: &aws_sdk_ec2::types::Instance, key: &str| {
        i.tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    Ok(reservations
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            !scope.owns(
                tag_of(i, CLUSTER_TAG).as_deref(),
                tag_of(i, CLUSTER_ID_TAG).as_deref(),
            )
        })
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect())
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
    fn new_group_names_carry_the_id_and_legacy_ones_keep_theirs() {
        assert_eq!(
            group_name("cache", Some("0123456789abcdef")),
            "redisha-cache-0123456789abcdef"
        );
        assert_eq!(group_name("cache", None), "redisha-cache");
        assert_eq!(legacy_group_name("cache"), "redisha-cache");
    }

    #[test]
    fn client_ports_go_to_group_cidrs_and_groups_bus_ports_to_the_group_alone() {
        let cidrs = ["10.1.0.0/16".to_string(), "10.2.0.0/16".to_string()];
        let groups = ["sg-app".to_string()];
        let monitoring = ["10.9.0.0/24".to_string()];
        let allowed = Clients {
            cidrs: &cidrs,
            groups: &groups,
            monitoring: &monitoring,
        };
        let rules = desired_rules("sg-1", allowed, 3);
        let rule = |from, to, source: Source| Rule { from, to, source };
        let expected: BTreeSet<Rule> = [
            rule(6379, 6381, Source::Group("sg-1".into())),
            rule(6379, 6381, Source::Group("sg-app".into())),
            rule(6379, 6381, Source::Cidr("10.1.0.0/16".into())),
            rule(6379, 6381, Source::Cidr("10.2.0.0/16".into())),
            rule(16379, 16381, Source::Group("sg-1".into())),
            // The exporters, for monitoring only.
            rule(26379, 26381, Source::Cidr("10.9.0.0/24".into())),
        ]
        .into_iter()
        .collect();
        assert_eq!(rules, expected);
    }
}
