//! Sentinel mode's records on EC2, so that a provider that lost Terraform's private state
//! finds every process again from the deployment's id alone, as cluster mode does
//! ([`crate::records`]). Each process has two records:
//!
//! - one `redisha:node:<index>` tag on its host's instance, `<name>/0/<role>` (sentinels by
//!   their index, `SENTINEL_INDEX_BASE` and up; the planned primary as `master`), which goes
//!   with the instance;
//! - its durable copy, one `redisha:process:<host>:<index>` tag on the deployment's security
//!   group, `<name>/<role>/<zone>/<address>` ([`ProcessRecord`]). The group lives from before
//!   the first instance until destroy and is found by the deployment's id, so a terminated
//!   instance's processes are still known: the rebuild takes them into state on a host the
//!   driver then proves lost, and the apply repairs it rather than seeing a shape change.
//!
//! Write discipline, the same for both:
//!
//! - A new instance carries the records of the processes it is launched for (RunInstances'
//!   own tags), so it never exists without them.
//! - Every start writes its process's records first (the durable copy first, then the
//!   instance's tag when it does not carry it yet), so a provider killed right after the
//!   start still finds it, even once its instance is gone.
//! - A removed process's records go after the process (the instance's tag, then the durable
//!   copy): until then a resumed apply finds it and removes it again, rather than leaving a
//!   process nobody knows of.
//! - A host whose instance is terminated, missing or stopped is lost
//!   ([`redisha_cluster::Driver::lost_hosts`]): provisioned again, its processes restarted.
//! - A deployment made before the durable copy has only the instances' tags: the first
//!   discovery copies them onto the group ([`missing_copies`]), and says so in the log.
//!
//! EC2 allows 50 tags a resource, keys of 128 characters and values of 256:
//! [`check_record_room`] refuses at plan a deployment whose records could not all fit.

use std::path::PathBuf;

use aws_sdk_ec2::types::{SecurityGroup, Tag};
use redisha_cluster::identity::{NodeRecord, RECORD_FORMAT};
use redisha_cluster::sentinel::SENTINEL_INDEX_BASE;
use redisha_cluster::{DriverError, HostHandle, NodeHandle, NodePlan};
use redisha_planner::Role;

use crate::driver::{AwsDriver, HostStatus};
use crate::error::{AwsError, Field};
use crate::instances::ClusterInstance;
use crate::records::TaggedNode;
use crate::security_group::tag;

/// Prefix of a process's durable record on the deployment's security group; `<host>:<index>`
/// follows.
pub const PROCESS_TAG_PREFIX: &str = "redisha:process:";
/// EC2's limits on the tags of one resource.
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;
/// Tags redisha itself puts on a deployment's group besides the process records: name,
/// managed-by, `Name`, id, and the create record's status, owner and lease.
pub const GROUP_TAGS_RESERVED: usize = 7;
/// The longest address a record holds (IPv6, textual).
const LONGEST_ADDRESS: usize = 39;

/// A process's durable record: what the rebuild needs when its instance is gone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessRecord {
    pub host: String,
    pub index_on_host: u16,
    pub name: String,
    /// The planned role when it started (`master`: the planned primary).
    pub role: Role,
    pub zone: String,
    /// The address it was started at; empty when not known yet.
    pub address: String,
}

impl ProcessRecord {
    pub fn key(&self) -> String {
        format!("{PROCESS_TAG_PREFIX}{}:{}", self.host, self.index_on_host)
    }

    pub fn value(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.name,
            self.role.as_str(),
            self.zone,
            self.address
        )
    }

    pub fn tag(&self) -> Tag {
        tag(&self.key(), &self.value())
    }

    /// The record a group tag holds; `None` for other tags and values this version cannot
    /// read.
    pub fn parse(key: &str, value: &str) -> Option<Self> {
        let (host, index) = key.strip_prefix(PROCESS_TAG_PREFIX)?.rsplit_once(':')?;
        let index_on_host = index.parse().ok()?;
        let (rest, address) = value.rsplit_once('/')?;
        let (rest, zone) = rest.rsplit_once('/')?;
        let (name, role) = rest.rsplit_once('/')?;
        let role = match role {
            "master" => Role::Master,
            "replica" => Role::Replica,
            _ => return None,
        };
        (!host.is_empty() && !name.is_empty() && !zone.is_empty()).then(|| ProcessRecord {
            host: host.to_string(),
            index_on_host,
            name: name.to_string(),
            role,
            zone: zone.to_string(),
            address: address.to_string(),
        })
    }

    /// The record of a process an instance's tag names, reached at `address`.
    pub fn of_instance(instance: &ClusterInstance, node: &TaggedNode, address: &str) -> Self {
        ProcessRecord {
            host: instance.host.clone(),
            index_on_host: node.index_on_host,
            name: node.name.clone(),
            role: node.role,
            zone: instance.zone.clone(),
            address: address.to_string(),
        }
    }

    /// Whether `other` is the same process at the same place (the address aside).
    fn same_process(&self, other: &ProcessRecord) -> bool {
        self.host == other.host
            && self.index_on_host == other.index_on_host
            && self.name == other.name
    }
}

/// Every process record on a group.
pub fn records_of_group(group: &SecurityGroup) -> Vec<ProcessRecord> {
    let mut out: Vec<ProcessRecord> = group
        .tags()
        .iter()
        .filter_map(|t| ProcessRecord::parse(t.key()?, t.value()?))
        .collect();
    out.sort();
    out
}

/// The upgrade path: records the instances carry that the group has no durable copy of (a
/// deployment made before the copies, or a kill between the two writes of a start).
pub fn missing_copies(
    on_instances: &[ProcessRecord],
    on_group: &[ProcessRecord],
) -> Vec<ProcessRecord> {
    on_instances
        .iter()
        .filter(|r| !on_group.iter().any(|g| g.same_process(r)))
        .cloned()
        .collect()
}

/// Refuses a deployment whose process records could not all be on its group: EC2 keeps 50
/// tags a resource, of which [`GROUP_TAGS_RESERVED`] are redisha's own and `user_tags` the
/// user's. `processes` is every (name, host, zone) that may run at once during the apply (the
/// running ones and the planned ones: a shape change starts the new before it removes the
/// old).
pub fn check_record_room<'a>(
    user_tags: usize,
    processes: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Result<(), AwsError> {
    let mut names = std::collections::BTreeSet::new();
    for (name, host, zone) in processes {
        let key = PROCESS_TAG_PREFIX.len() + host.len() + ":65535".len();
        if key > MAX_TAG_KEY {
            return Err(AwsError::config(
                Field::ClusterName,
                format!("host name {host:?} is too long for the record of process {name} on the deployment's security group (EC2 tag keys hold {MAX_TAG_KEY} characters)"),
            ));
        }
        let value = name.len() + "/replica/".len() + zone.len() + 1 + LONGEST_ADDRESS;
        if value > MAX_TAG_VALUE {
            return Err(AwsError::config(
                Field::ClusterName,
                format!("process name {name:?} in zone {zone:?} is too long for its record on the deployment's security group (EC2 tag values hold {MAX_TAG_VALUE} characters)"),
            ));
        }
        names.insert(name);
    }
    let room = MAX_TAGS.saturating_sub(GROUP_TAGS_RESERVED + user_tags);
    if names.len() > room {
        return Err(AwsError::config(
            Field::Tags,
            format!(
                "the deployment's security group holds one record per process, and this apply may run {} processes at once (data nodes and sentinels, the running and the planned ones) while EC2 allows {MAX_TAGS} tags a resource: {GROUP_TAGS_RESERVED} are redisha's own and {user_tags} come from `tags`, which leaves room for {room}. Remove tags, or change the shape in smaller steps",
                names.len()
            ),
        ));
    }
    Ok(())
}

/// Where a sentinel's config is on its instance (`<prefix><port>.conf`).
pub(crate) const SENTINEL_CONF_PREFIX: &str = "/etc/redisha/sentinel-";

/// The config file of a process listening on `port` on its instance: what a handle's
/// `config_file` says, and so which unit stop and remove reach.
pub(crate) fn config_file(port: u16, sentinel: bool) -> PathBuf {
    if sentinel {
        PathBuf::from(format!("{SENTINEL_CONF_PREFIX}{port}.conf"))
    } else {
        PathBuf::from(format!("/etc/redisha/node-{port}.conf"))
    }
}

impl AwsDriver {
    /// The handle's `config_file` of a process found by its record: sentinels by their index
    /// (sentinel mode only: cluster-mode nodes have no config file in their handles).
    pub(crate) fn discovered_config_file(&self, host: &str, index_on_host: u16) -> Option<PathBuf> {
        self.is_sentinel_mode().then(|| {
            config_file(
                self.port_on(host, index_on_host),
                index_on_host >= SENTINEL_INDEX_BASE,
            )
        })
    }

    /// Writes the records of a process about to start on `host`: its durable copy on the
    /// deployment's group, then its instance's tag (each a no-op when it is there already).
    pub(crate) async fn record_process(
        &self,
        host: &HostHandle,
        node: &NodePlan,
        handle: &NodeHandle,
    ) -> Result<(), AwsError> {
        let record = NodeRecord {
            format: RECORD_FORMAT,
            cluster_id: self.acting_id("record processes under")?.to_string(),
            cluster_name: self.config().cluster_name.clone(),
            name: node.name.clone(),
            shard: node.shard,
            role: node.role,
            zone: host.zone.clone(),
            host: host.name.clone(),
            address: handle.ip.clone(),
            index_on_host: node.index_on_host,
        };
        self.write_copy(&ProcessRecord {
            host: host.name.clone(),
            index_on_host: node.index_on_host,
            name: node.name.clone(),
            role: node.role,
            zone: host.zone.clone(),
            address: handle.ip.clone(),
        })
        .await?;
        self.record_node_tag(handle, &record).await
    }

    /// Writes a process's durable copy on the deployment's group (which exists before any
    /// instance does).
    async fn write_copy(&self, record: &ProcessRecord) -> Result<(), AwsError> {
        let group = self.deployment_group().await?.ok_or_else(|| {
            AwsError::config(
                Field::ClusterId,
                format!(
                    "process {}: the deployment has no security group carrying its id in its VPC, so its record has nowhere to go",
                    record.name
                ),
            )
        })?;
        let on_group = records_of_group(&group);
        if on_group.contains(record) {
            return Ok(());
        }
        if let Some(other) = on_group
            .iter()
            .find(|r| r.key() == record.key() && r.name != record.name)
        {
            tracing::warn!(
                process = record.name,
                replaces = other.name,
                key = record.key(),
                "a record of another process at this place is overwritten"
            );
        }
        let group_id = group.group_id().ok_or(AwsError::MissingField {
            operation: "DescribeSecurityGroups",
            field: "GroupId",
        })?;
        self.clients()
            .create_tags()
            .resources(group_id)
            .tags(record.tag())
            .send()
            .await
            .map_err(crate::error::api("CreateTags"))?;
        Ok(())
    }

    /// Deletes a removed process's records: the tag naming it at its index on its host's
    /// running instance, then its durable copy, unless an instance of the host that still
    /// exists (a stopped one) carries it yet.
    pub(crate) async fn forget_process(&self, node: &NodeHandle) -> Result<(), AwsError> {
        let names_it =
            |t: &TaggedNode| t.index_on_host == node.index_on_host && t.name == node.name;
        if let Some(instance) = self.running_instance(&node.host).await? {
            for record in instance.nodes.iter().filter(|t| names_it(t)) {
                self.untag(&instance.instance_id, record.tag()).await?;
                tracing::info!(
                    process = node.name,
                    instance_id = instance.instance_id,
                    "record removed"
                );
            }
        }
        let carried = self
            .existing_instances(&node.host)
            .await?
            .iter()
            .any(|i| i.nodes.iter().any(names_it));
        if carried {
            return Ok(());
        }
        let Some(group) = self.deployment_group().await? else {
            return Ok(());
        };
        let Some(group_id) = group.group_id() else {
            return Ok(());
        };
        for record in records_of_group(&group).iter().filter(|r| {
            r.host == node.host && r.index_on_host == node.index_on_host && r.name == node.name
        }) {
            self.untag(group_id, record.tag()).await?;
            tracing::info!(process = node.name, group_id, "durable record removed");
        }
        Ok(())
    }

    /// Deletes one tag (key and value) from an EC2 resource.
    async fn untag(&self, resource: &str, tag: Tag) -> Result<(), AwsError> {
        self.clients()
            .delete_tags()
            .resources(resource)
            .tags(tag)
            .send()
            .await
            .map_err(crate::error::api("DeleteTags"))?;
        Ok(())
    }

    /// The processes only the group's durable copies name (`chosen`: the instance
    /// [`AwsDriver::discover_nodes`] took for each host): those of a host whose instance is
    /// gone, and those cut off between the two writes of a start or a removal. Copies the
    /// instances' records the group lacks onto it first (the upgrade path; a failure to write
    /// them is logged, not fatal: the discovery itself reads only).
    pub(crate) async fn durable_only_processes(
        &self,
        chosen: &[&ClusterInstance],
    ) -> Result<Vec<(NodeHandle, NodeRecord)>, AwsError> {
        let cluster_id = self.acting_id("discover processes by")?.to_string();
        let Some(group) = self.deployment_group().await? else {
            return Ok(Vec::new());
        };
        let group_id = group.group_id().unwrap_or_default().to_string();
        let on_group = records_of_group(&group);
        let on_instances: Vec<ProcessRecord> = chosen
            .iter()
            .flat_map(|i| {
                let host = self.handle_of(i, &group_id);
                i.nodes.iter().map(move |n| {
                    let (ip, _) = self.node_address(&host, n.index_on_host);
                    ProcessRecord::of_instance(i, n, &ip)
                })
            })
            .collect();
        let missing = missing_copies(&on_instances, &on_group);
        if !missing.is_empty() {
            let written = self
                .clients()
                .create_tags()
                .resources(&group_id)
                .set_tags(Some(missing.iter().map(ProcessRecord::tag).collect()))
                .send()
                .await;
            match written {
                Ok(_) => tracing::info!(
                    cluster_id,
                    group_id,
                    processes = ?missing.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
                    "upgrade: copied process records from the instances' tags onto the deployment's security group, so they survive the loss of their instance"
                ),
                Err(e) => tracing::warn!(
                    cluster_id,
                    group_id,
                    error = %crate::error::api("CreateTags")(e),
                    "could not copy process records onto the deployment's security group; the next discovery tries again"
                ),
            }
        }
        let mut out = Vec::new();
        for r in &on_group {
            let instance = chosen.iter().find(|i| i.host == r.host);
            if instance.is_some_and(|i| {
                i.nodes
                    .iter()
                    .any(|n| n.index_on_host == r.index_on_host && n.name == r.name)
            }) || on_instances.iter().any(|o| o.name == r.name)
            {
                continue;
            }
            let host = match instance {
                Some(i) => self.handle_of(i, &group_id),
                None => HostHandle {
                    name: r.host.clone(),
                    zone: r.zone.clone(),
                    address: r.address.clone(),
                    instance_id: None,
                    extra: Default::default(),
                },
            };
            let (ip, port) = self.node_address(&host, r.index_on_host);
            tracing::info!(
                process = r.name,
                host = r.host,
                instance = instance.map(|i| i.instance_id.as_str()).unwrap_or("gone"),
                "process known from its durable record on the deployment's security group"
            );
            let handle = NodeHandle {
                name: r.name.clone(),
                host: r.host.clone(),
                ip: ip.clone(),
                port,
                index_on_host: r.index_on_host,
                pid: None,
                data_dir: None,
                config_file: self.discovered_config_file(&r.host, r.index_on_host),
            };
            let record = NodeRecord {
                format: RECORD_FORMAT,
                cluster_id: cluster_id.clone(),
                cluster_name: self.config().cluster_name.clone(),
                name: r.name.clone(),
                shard: 0,
                role: r.role,
                zone: r.zone.clone(),
                host: r.host.clone(),
                address: ip,
                index_on_host: r.index_on_host,
            };
            out.push((handle, record));
        }
        Ok(out)
    }

    /// [`redisha_cluster::Driver::lost_hosts`]: hosts whose instance is terminated, missing
    /// or stopped (by the cluster's id in its VPC).
    pub(crate) async fn lost_host_names(
        &self,
        hosts: &[HostHandle],
    ) -> Result<Vec<String>, DriverError> {
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        let mut lost = Vec::new();
        for status in self.read_hosts(hosts).await? {
            match status {
                HostStatus::Present { .. } => {}
                HostStatus::Missing { name, zone } => {
                    tracing::info!(host = %name, zone = %zone, "instance terminated or missing");
                    lost.push(name);
                }
                HostStatus::Stopped { handle } => {
                    tracing::info!(host = %handle.name, "instance stopped");
                    lost.push(handle.name);
                }
            }
        }
        Ok(lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(host: &str, index: u16, name: &str, role: Role) -> ProcessRecord {
        ProcessRecord {
            host: host.into(),
            index_on_host: index,
            name: name.into(),
            role,
            zone: "us-east-1a".into(),
            address: "10.0.1.5".into(),
        }
    }

    #[test]
    fn durable_records_round_trip_through_group_tags() {
        let r = record(
            "us-east-1a-1",
            SENTINEL_INDEX_BASE,
            "orders-s1",
            Role::Replica,
        );
        let t = r.tag();
        assert_eq!(t.key(), Some("redisha:process:us-east-1a-1:100"));
        assert_eq!(t.value(), Some("orders-s1/replica/us-east-1a/10.0.1.5"));
        assert_eq!(
            ProcessRecord::parse(
                "redisha:process:us-east-1a-1:100",
                "orders-s1/replica/us-east-1a/10.0.1.5"
            ),
            Some(r)
        );
        // An IPv6 address and a record written before its address was known.
        let mut v6 = record("h:1", 0, "d0", Role::Master);
        v6.address = "fd00::5".into();
        assert_eq!(
            ProcessRecord::parse(&v6.key(), &v6.value()),
            Some(v6.clone())
        );
        v6.address.clear();
        assert_eq!(ProcessRecord::parse(&v6.key(), &v6.value()), Some(v6));
        let group = SecurityGroup::builder()
            .group_id("sg-1")
            .tags(tag("redisha:cluster", "orders"))
            .tags(record("b-1", 0, "d1", Role::Replica).tag())
            .tags(record("a-1", 0, "d0", Role::Master).tag())
            .build();
        assert_eq!(
            records_of_group(&group),
            vec![
                record("a-1", 0, "d0", Role::Master),
                record("b-1", 0, "d1", Role::Replica)
            ]
        );
    }

    #[test]
    fn foreign_or_damaged_group_tags_are_not_records() {
        for (k, v) in [
            ("redisha:node:0", "d0/master/us-east-1a/10.0.1.5"),
            ("redisha:process:a-1", "d0/master/us-east-1a/10.0.1.5"),
            ("redisha:process:a-1:x", "d0/master/us-east-1a/10.0.1.5"),
            ("redisha:process::0", "d0/master/us-east-1a/10.0.1.5"),
            ("redisha:process:a-1:0", "d0/leader/us-east-1a/10.0.1.5"),
            ("redisha:process:a-1:0", "/master/us-east-1a/10.0.1.5"),
            ("redisha:process:a-1:0", "d0/master//10.0.1.5"),
            ("redisha:process:a-1:0", "d0/master/us-east-1a"),
        ] {
            assert_eq!(ProcessRecord::parse(k, v), None, "{k}={v}");
        }
    }

    #[test]
    fn the_upgrade_copies_only_what_the_group_lacks() {
        let on_instances = vec![
            record("a-1", 0, "d0", Role::Master),
            record("a-1", SENTINEL_INDEX_BASE, "s0", Role::Replica),
            record("b-1", 0, "d1", Role::Replica),
        ];
        // A deployment made before the durable copies: every record is copied.
        assert_eq!(missing_copies(&on_instances, &[]), on_instances);
        // Partly copied (a discovery cut off, or a start between its two writes): the rest.
        let mut moved = record("b-1", 0, "d1", Role::Replica);
        moved.address = "10.0.2.9".into();
        assert_eq!(
            missing_copies(
                &on_instances,
                &[record("a-1", 0, "d0", Role::Master), moved]
            ),
            vec![record("a-1", SENTINEL_INDEX_BASE, "s0", Role::Replica)]
        );
        // A copy of a process no instance carries (its instance is gone) stays as it is.
        assert!(missing_copies(&on_instances[..1], &on_instances).is_empty());
    }

    #[test]
    fn a_deployment_whose_records_cannot_fit_on_its_group_is_refused() {
        let names: Vec<String> = (0..43).map(|i| format!("p{i}")).collect();
        let procs = |n: usize| {
            names[..n]
                .iter()
                .map(|p| (p.as_str(), "us-east-1a-1", "us-east-1a"))
        };
        assert!(check_record_room(0, procs(43)).is_ok());
        let e = check_record_room(1, procs(43)).expect_err("44 + 7 tags");
        assert_eq!(e.field(), Some(Field::Tags));
        assert!(e.to_string().contains("room for 42"), "{e}");
        // The same process named twice (running and planned) counts once.
        assert!(check_record_room(40, procs(3).chain(procs(3))).is_ok());
        let long = "h".repeat(120);
        assert!(check_record_room(0, [("p", long.as_str(), "z")]).is_err());
    }
}
