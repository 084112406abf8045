//! The cluster's security group: the Redis client ports, open to the group itself (the
//! cluster's instances) and to `aws.allowed_cidrs`, and the cluster bus ports, open to the group
//! alone. The bus has no authentication: whoever reaches it can forge gossip and take slots, and
//! only nodes ever need it (the provider and clients speak to the client ports).
//!
//! With `tls.mode = "preferred"` the nodes also accept plain text on their port +
//! [`PLAINTEXT_PORT_OFFSET`]: those ports are client ports too, open to the same sources. In
//! `required` mode they are closed, but only once no node listens on them any more
//! ([`PlainPorts::Keep`] until then): a switch to `required` is a rolling restart, and a
//! plain-text client keeps reaching the nodes not yet restarted while it runs.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, ResourceType, Tag, TagSpecification, UserIdGroupPair,
};

use crate::error::{api, AwsError};
use crate::instances::{Scope, CLUSTER_ID_TAG, CLUSTER_TAG, MANAGED_BY_TAG};
use crate::settings::{CLUSTER_BUS_OFFSET, EXPORTER_PORT_OFFSET, REDIS_BASE_PORT};
use redisha_cluster::tls::PLAINTEXT_PORT_OFFSET;

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

/// What to do with the rules of the plain-text client ports (TLS `preferred` mode: each
/// node's port + [`PLAINTEXT_PORT_OFFSET`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlainPorts {
    /// `preferred`: open to the same sources as the client ports.
    Open,
    /// Left as they are, neither added nor revoked: `required` while nodes may still listen
    /// on them (a switch from `preferred` not yet rolled out), plain-text clusters, and
    /// drivers that do not know the mode (the drill's).
    #[default]
    Keep,
    /// `required` once every node runs it: revoked.
    Closed,
}

/// The rules a cluster needs: ports 6379..6379+max_nodes for the group itself and each
/// allowed client (CIDR or security group), and their bus ports (10000 above) for the group
/// itself only. With `plain` (TLS `preferred`), the plain-text ports (1000 above the client
/// ports) for the same sources as the client ports.
pub fn desired_rules(
    group_id: &str,
    allowed: Clients<'_>,
    max_nodes: u16,
    plain: bool,
) -> BTreeSet<Rule> {
    let first = i32::from(REDIS_BASE_PORT);
    let last = first + i32::from(max_nodes.max(1)) - 1;
    let bus = i32::from(CLUSTER_BUS_OFFSET);
    let group = Source::Group(group_id.to_string());
    let clients: Vec<Source> = std::iter::once(group.clone())
        .chain(allowed.groups.iter().cloned().map(Source::Group))
        .chain(allowed.cidrs.iter().cloned().map(Source::Cidr))
        .collect();
    let mut rules: BTreeSet<Rule> = clients
        .iter()
        .map(|source| Rule {
            from: first,
            to: last,
            source: source.clone(),
        })
        .collect();
    if plain {
        let offset = i32::from(PLAINTEXT_PORT_OFFSET);
        rules.extend(clients.iter().map(|source| Rule {
            from: first + offset,
            to: last + offset,
            source: source.clone(),
        }));
    }
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

/// The changes that make `existing` rules the desired ones: (stale, missing). With
/// [`PlainPorts::Keep`] the plain-text port rules are neither revoked nor added.
pub fn rule_changes(
    existing: &BTreeSet<Rule>,
    group_id: &str,
    allowed: Clients<'_>,
    max_nodes: u16,
    plain: PlainPorts,
) -> (Vec<Rule>, Vec<Rule>) {
    let without = desired_rules(group_id, allowed, max_nodes, false);
    let with = desired_rules(group_id, allowed, max_nodes, true);
    let desired = if plain == PlainPorts::Open {
        &with
    } else {
        &without
    };
    let is_plain = |r: &&Rule| with.contains(*r) && !without.contains(*r);
    let keep = plain == PlainPorts::Keep;
    let stale = existing
        .difference(desired)
        .filter(|r| !(keep && is_plain(r)))
        .cloned()
        .collect();
    let missing = desired.difference(existing).cloned().collect();
    (stale, missing)
}

/// Creates the group if needed and makes its ingress rules the desired ones (the plain-text
/// ports' as `plain` says). Returns the group id.
pub async fn ensure_group(
    client: &aws_sdk_ec2::Client,
    scope: &Scope<'_>,
    allowed: Clients<'_>,
    max_nodes: u16,
    plain: PlainPorts,
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
    let (stale, missing) = rule_changes(&existing, &group_id, allowed, max_nodes, plain);
    if !stale.is_empty() {
        client
            .revoke_security_group_ingress()
            .group_id(&group_id)
            .set_ip_permissions(Some(stale.iter().map(permission).collect()))
            .send()
            .await
            .map_err(api("RevokeSecurityGroupIngress"))?;
        tracing::info!(group_id, count = stale.len(), "revoked stale ingress rules");
    }
    if !missing.is_empty() {
        client
            .authorize_security_group_ingress()
            .group_id(&group_id)
            .set_ip_permissions(Some(missing.iter().map(permission).collect()))
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

/// The group's TCP ingress rules as [`Rule`]s.
pub fn existing_rules(permissions: &[IpPermission]) -> BTreeSet<Rule> {
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
        let rules = desired_rules("sg-1", allowed, 3, false);
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

    fn allowed<'a>(cidrs: &'a [String], groups: &'a [String]) -> Clients<'a> {
        Clients {
            cidrs,
            groups,
            monitoring: &[],
        }
    }

    #[test]
    fn preferred_opens_the_plain_text_ports_to_exactly_the_client_ports_sources() {
        let cidrs = ["10.1.0.0/16".to_string()];
        let groups = ["sg-app".to_string()];
        let plain = desired_rules("sg-1", allowed(&cidrs, &groups), 3, true);
        let tls_only = desired_rules("sg-1", allowed(&cidrs, &groups), 3, false);
        let added: BTreeSet<Rule> = plain.difference(&tls_only).cloned().collect();
        let rule = |source: Source| Rule {
            from: 7379,
            to: 7381,
            source,
        };
        let expected: BTreeSet<Rule> = [
            rule(Source::Group("sg-1".into())),
            rule(Source::Group("sg-app".into())),
            rule(Source::Cidr("10.1.0.0/16".into())),
        ]
        .into_iter()
        .collect();
        assert_eq!(added, expected);
        // Nothing else differs: the bus stays the group's alone, in both modes.
        assert!(tls_only.is_subset(&plain));
        let bus: Vec<&Rule> = plain.iter().filter(|r| r.from == 16379).collect();
        assert_eq!(bus.len(), 1);
        assert_eq!(bus[0].source, Source::Group("sg-1".into()));
    }

    #[test]
    fn a_switch_to_required_keeps_the_plain_ports_until_closed_and_then_revokes_them() {
        let cidrs = ["10.1.0.0/16".to_string()];
        let was_preferred = desired_rules("sg-1", allowed(&cidrs, &[]), 2, true);
        let plain_rules: Vec<Rule> = was_preferred
            .iter()
            .filter(|r| r.from == 7379)
            .cloned()
            .collect();
        assert_eq!(plain_rules.len(), 2);

        // While the nodes roll: nothing revoked, nothing added.
        let (stale, missing) = rule_changes(
            &was_preferred,
            "sg-1",
            allowed(&cidrs, &[]),
            2,
            PlainPorts::Keep,
        );
        assert!(stale.is_empty(), "{stale:?}");
        assert!(missing.is_empty(), "{missing:?}");

        // Once every node runs `required`: exactly the plain-text port rules go.
        let (stale, missing) = rule_changes(
            &was_preferred,
            "sg-1",
            allowed(&cidrs, &[]),
            2,
            PlainPorts::Closed,
        );
        assert_eq!(stale, plain_rules);
        assert!(missing.is_empty());

        // Back to `preferred`: they are added again, and Keep adds none to a group without them.
        let tls_only = desired_rules("sg-1", allowed(&cidrs, &[]), 2, false);
        let (stale, missing) =
            rule_changes(&tls_only, "sg-1", allowed(&cidrs, &[]), 2, PlainPorts::Open);
        assert!(stale.is_empty());
        assert_eq!(missing, plain_rules);
        let (stale, missing) =
            rule_changes(&tls_only, "sg-1", allowed(&cidrs, &[]), 2, PlainPorts::Keep);
        assert!(stale.is_empty() && missing.is_empty());
    }

    #[test]
    fn keep_still_revokes_a_stale_rule_that_is_no_plain_text_port() {
        let cidrs = ["10.1.0.0/16".to_string()];
        let mut existing = desired_rules("sg-1", allowed(&cidrs, &[]), 2, true);
        let stray = Rule {
            from: 6379,
            to: 6380,
            source: Source::Cidr("0.0.0.0/0".into()),
        };
        existing.insert(stray.clone());
        let (stale, _) = rule_changes(&existing, "sg-1", allowed(&cidrs, &[]), 2, PlainPorts::Keep);
        assert_eq!(stale, vec![stray]);
    }
}
