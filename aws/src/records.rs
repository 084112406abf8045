//! The cluster's records on EC2, as tags, so that a provider that lost Terraform's private
//! state (killed mid-apply) finds everything again from the cluster id alone:
//!
//! - node records: one tag per node on its host's instance, `redisha:node:<index_on_host>` =
//!   `<name>/<shard>/<role>`. Set in RunInstances' own tag specification, so an instance never
//!   exists without them; rewritten (CreateTags) when a node's planned role changes.
//! - the cluster record: tags on the cluster's security group, which exists from the first
//!   moment of a create until destroy: `redisha:status` (`creating`/`ready`), and while
//!   creating `redisha:owner` (`<machine>/<pid>`) and `redisha:lease-until` (unix seconds).

use aws_sdk_ec2::types::{SecurityGroup, Tag};
use redisha_cluster::identity::{ClusterRecord, ClusterStatus, NodeRecord, RECORD_FORMAT};
use redisha_cluster::NodePlan;
use redisha_planner::Role;

use crate::instances::{CLUSTER_ID_TAG, CLUSTER_TAG};
use crate::security_group::{group_tag, tag};

/// Prefix of a node record's tag key; the node's index on its host follows.
pub const NODE_TAG_PREFIX: &str = "redisha:node:";
pub const STATUS_TAG: &str = "redisha:status";
pub const OWNER_TAG: &str = "redisha:owner";
pub const LEASE_TAG: &str = "redisha:lease-until";

/// A node as its instance's tag describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedNode {
    pub index_on_host: u16,
    pub name: String,
    pub shard: u32,
    pub role: Role,
}

impl TaggedNode {
    pub fn of(plan: &NodePlan) -> Self {
        TaggedNode {
            index_on_host: plan.index_on_host,
            name: plan.name.clone(),
            shard: plan.shard,
            role: plan.role,
        }
    }

    pub fn of_record(record: &NodeRecord) -> Self {
        TaggedNode {
            index_on_host: record.index_on_host,
            name: record.name.clone(),
            shard: record.shard,
            role: record.role,
        }
    }

    pub fn tag(&self) -> Tag {
        tag(
            &format!("{NODE_TAG_PREFIX}{}", self.index_on_host),
            &format!("{}/{}/{}", self.name, self.shard, self.role.as_str()),
        )
    }

    /// The node a tag describes; `None` for other tags and for values this version cannot read
    /// (they are logged by the caller's count of nodes found).
    pub fn parse(key: &str, value: &str) -> Option<Self> {
        let index_on_host = key.strip_prefix(NODE_TAG_PREFIX)?.parse().ok()?;
        let mut parts = value.split('/');
        let name = parts.next().filter(|n| !n.is_empty())?.to_string();
        let shard = parts.next()?.parse().ok()?;
        let role = match parts.next()? {
            "master" => Role::Master,
            "replica" => Role::Replica,
            _ => return None,
        };
        parts.next().is_none().then_some(TaggedNode {
            index_on_host,
            name,
            shard,
            role,
        })
    }
}

/// The tags that hold a cluster record (status, and owner and lease while creating).
pub fn cluster_record_tags(record: &ClusterRecord) -> Vec<Tag> {
    let status = match record.status {
        ClusterStatus::Creating => "creating",
        ClusterStatus::Ready => "ready",
    };
    let mut tags = vec![tag(STATUS_TAG, status)];
    let owner = match (&record.owner_machine, record.owner_pid) {
        (Some(machine), Some(pid)) => format!("{machine}/{pid}"),
        _ => String::new(),
    };
    tags.push(tag(OWNER_TAG, &owner));
    let lease = record
        .lease_until
        .map(|t| t.to_string())
        .unwrap_or_default();
    tags.push(tag(LEASE_TAG, &lease));
    tags
}

/// The cluster record a group's tags hold. A group of this version always has a status; one
/// without (made before records) belongs to a cluster whose create is not known to be
/// interrupted: it reads as `ready`, which a create of the same name refuses to adopt.
pub fn cluster_record_of(group: &SecurityGroup) -> Option<ClusterRecord> {
    let cluster_id = group_tag(group, CLUSTER_ID_TAG)?.to_string();
    let name = group_tag(group, CLUSTER_TAG)?.to_string();
    let status = match group_tag(group, STATUS_TAG) {
        Some("creating") => ClusterStatus::Creating,
        _ => ClusterStatus::Ready,
    };
    let (owner_machine, owner_pid) =
        match group_tag(group, OWNER_TAG).and_then(|o| o.split_once('/')) {
            Some((machine, pid)) => (Some(machine.to_string()), pid.parse().ok()),
            None => (None, None),
        };
    Some(ClusterRecord {
        format: RECORD_FORMAT,
        cluster_id,
        name,
        status,
        owner_pid,
        // A creating record without a machine cannot have its pid checked here: a far-future
        // machine name makes only the (absent) lease count, so it is never taken over.
        owner_machine: owner_machine
            .or_else(|| (status == ClusterStatus::Creating).then(|| "unknown-machine".to_string())),
        lease_until: group_tag(group, LEASE_TAG).and_then(|t| t.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_tags_round_trip() {
        let node = TaggedNode {
            index_on_host: 3,
            name: "s12-r1".into(),
            shard: 12,
            role: Role::Replica,
        };
        let t = node.tag();
        assert_eq!(t.key(), Some("redisha:node:3"));
        assert_eq!(t.value(), Some("s12-r1/12/replica"));
        assert_eq!(
            TaggedNode::parse("redisha:node:3", "s12-r1/12/replica"),
            Some(node)
        );
    }

    #[test]
    fn foreign_or_damaged_tags_are_not_nodes() {
        for (k, v) in [
            ("redisha:host", "s0-m/0/master"),
            ("redisha:node:x", "s0-m/0/master"),
            ("redisha:node:0", "s0-m/zero/master"),
            ("redisha:node:0", "s0-m/0/leader"),
            ("redisha:node:0", "/0/master"),
            ("redisha:node:0", "s0-m/0/master/extra"),
        ] {
            assert_eq!(TaggedNode::parse(k, v), None, "{k}={v}");
        }
    }

    fn group(tags: &[(&str, &str)]) -> SecurityGroup {
        let mut g = SecurityGroup::builder().group_id("sg-1");
        for (k, v) in tags {
            g = g.tags(tag(k, v));
        }
        g.build()
    }

    #[test]
    fn cluster_records_round_trip_through_group_tags() {
        let creating = ClusterRecord::new("0123456789abcdef", "cache", ClusterStatus::Creating);
        let mut tags: Vec<(String, String)> = vec![
            (CLUSTER_TAG.into(), "cache".into()),
            (CLUSTER_ID_TAG.into(), "0123456789abcdef".into()),
        ];
        for t in cluster_record_tags(&creating) {
            tags.push((t.key().unwrap().into(), t.value().unwrap().into()));
        }
        let refs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(cluster_record_of(&group(&refs)), Some(creating));
    }

    #[test]
    fn a_group_without_a_record_is_a_ready_cluster() {
        let g = group(&[(CLUSTER_TAG, "cache"), (CLUSTER_ID_TAG, "0123456789abcdef")]);
        let r = cluster_record_of(&g).expect("record");
        assert_eq!(r.status, ClusterStatus::Ready);
        assert!(!r.is_abandoned_create());
        // No id: a legacy group, not a record at all.
        assert_eq!(cluster_record_of(&group(&[(CLUSTER_TAG, "cache")])), None);
    }

    #[test]
    fn a_creating_group_without_an_owner_is_never_taken_over() {
        let g = group(&[
            (CLUSTER_TAG, "cache"),
            (CLUSTER_ID_TAG, "0123456789abcdef"),
            (STATUS_TAG, "creating"),
        ]);
        let r = cluster_record_of(&g).expect("record");
        assert!(!r.is_abandoned_create());
    }
}
