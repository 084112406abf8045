//! `AwsDriver`: the cluster crate's [`Driver`] on EC2. One instance per planned host, in a
//! subnet of the host's zone. Cloud-init starts the host's first nodes at first boot; on a
//! running instance nodes are started, stopped, reconfigured, added and removed with SSM Run
//! Command ([`crate::run_command`], the scripts in [`crate::node_commands`]). Run Command
//! saying "Success" is not taken alone as proof: a start returns once the node answers, a
//! stop once it no longer does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::InstanceStateName;
use redisha_cluster::identity::NodeRecord;
use redisha_cluster::{
    ClusterRecord, Driver, DriverError, HostHandle, HostPlan, NodeConfig, NodeHandle, NodePlan,
    OutdatedHost, ProcessKind, ProcessState,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::client::AwsClients;
use crate::dns_endpoint::{self, EndpointSpec};
use crate::error::{AwsError, Field};
use crate::instances::{self, ClusterInstance, LaunchSpec, Scope, CLUSTER_ID_TAG};
use crate::node_commands::{self, NodeAction, NodeSetup};
use crate::records::{self, TaggedNode};
use crate::run_command::{self, Target, Wait};
use crate::security_group::{self, tag};
use crate::settings::{AwsDriverConfig, AwsSettings, DEFAULT_REDIS_PACKAGE};
use crate::topology::{resolve_subnets, ResolvedSubnet};
use crate::user_data::{self, node_port, UserDataInput, MAX_USER_DATA};
use crate::{instance_profile, secrets, sentinel_procs};

/// `HostHandle::extra` keys.
pub const EXTRA_GENERATION: &str = "generation";
pub const EXTRA_SUBNET: &str = "subnet_id";
pub const EXTRA_PRIVATE_IP: &str = "private_ip";
pub const EXTRA_SECURITY_GROUP: &str = "security_group_id";

/// Launch errors after which another subnet of the same zone may succeed.
const TRY_NEXT_SUBNET: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientFreeAddressesInSubnet",
    "Unsupported",
];

/// What the driver learned once per process: the subnets and the security group.
#[derive(Debug, Clone)]
struct Prepared {
    subnets: Vec<ResolvedSubnet>,
    vpc_id: String,
    group_id: Option<String>,
    group_max_nodes: u16,
}

/// How a host found in state compares with EC2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HostStatus {
    /// Its instance is pending or running.
    Present { handle: HostHandle },
    /// Its instance is stopped; the next apply starts it.
    Stopped { handle: HostHandle },
    /// Its instance is terminated or gone: drift, replaced by the next apply in `zone`.
    Missing { name: String, zone: String },
}

/// The outcome of [`AwsDriver::ensure_hosts`]: what exists, and what failed and why.
#[derive(Debug)]
pub struct HostsReport {
    pub ready: Vec<HostHandle>,
    pub failed: Vec<(String, AwsError)>,
}

/// The outcome of [`AwsDriver::claim`]: what was tagged with the cluster's id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClaimReport {
    pub instances: Vec<String>,
    pub volumes: Vec<String>,
    pub security_group: Option<String>,
}

/// The outcome of [`AwsDriver::destroy`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DestroyReport {
    pub terminated: Vec<String>,
    pub security_group_deleted: bool,
    pub password_parameter_deleted: bool,
    /// The role and instance profile the driver made for the nodes.
    pub instance_profile_deleted: bool,
}

/// What carries the cluster's id in the VPC of the configured subnets, whatever its name
/// ([`AwsDriver::carriers_of_id`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdCarriers {
    pub vpc_id: String,
    /// Pending, running, stopping or stopped instances carrying the id.
    pub instances: Vec<String>,
    /// Their `redisha:cluster` tags (empty for an instance without one).
    pub names: BTreeSet<String>,
}

/// What an instance needs to read its password: the parameter's name and the profile that may.
#[derive(Debug, Clone, Default)]
struct NodeAccess {
    password_parameter: String,
    instance_profile: Option<String>,
}

/// How long RunInstances is retried while a new instance profile is not yet visible to EC2
/// (IAM is eventually consistent; a profile made seconds ago is often "invalid").
const PROFILE_PROPAGATION: Duration = Duration::from_secs(90);

pub struct AwsDriver {
    /// Derefs to the EC2 client; SSM and IAM for the password and the nodes' profile.
    client: AwsClients,
    /// The sha256 of the password last written to SSM (a rotation writes it once, not per node).
    stored_password: Mutex<Option<[u8; 32]>>,
    /// The nodes' instance profile, once made or checked.
    profile: Mutex<Option<String>>,
    config: AwsDriverConfig,
    prepared: Mutex<Option<Prepared>>,
    /// Host name → the instance state names for it: when duplicates exist, this one (which
    /// holds the node's data) is kept.
    known: Mutex<BTreeMap<String, String>>,
    /// Security group ids named in state: proof, when claiming a cluster made before ids, that
    /// the group of the old name is this cluster's and not another state's of the same name.
    known_groups: Mutex<BTreeSet<String>>,
    /// Sentinel mode ([`crate::sentinel_procs`]): the first boot starts no process.
    sentinel_mode: bool,
    /// TLS and ACL: what was loaded from SSM for the cluster ([`crate::security`]).
    security: crate::security::Security,
}

impl AwsDriver {
    /// A driver with a client built from `settings`.
    pub async fn new(settings: &AwsSettings, config: AwsDriverConfig) -> Result<Self, AwsError> {
        let client = crate::client::client(settings).await?;
        Self::with_client(client, config)
    }

    pub fn with_client(client: AwsClients, config: AwsDriverConfig) -> Result<Self, AwsError> {
        config.validate()?;
        Ok(AwsDriver {
            client,
            stored_password: Mutex::new(None),
            profile: Mutex::new(None),
            config,
            prepared: Mutex::new(None),
            known: Mutex::new(BTreeMap::new()),
            known_groups: Mutex::new(BTreeSet::new()),
            sentinel_mode: false,
            security: Default::default(),
        })
    }

    /// The driver of a sentinel-mode deployment: instances boot without starting a process,
    /// and Run Command starts each one in the operator's order ([`crate::sentinel_procs`]).
    pub fn for_sentinel_mode(mut self) -> Self {
        self.sentinel_mode = true;
        self
    }

    /// Whether this driver runs a sentinel-mode deployment ([`AwsDriver::for_sentinel_mode`]).
    pub(crate) fn is_sentinel_mode(&self) -> bool {
        self.sentinel_mode
    }

    pub(crate) fn clients(&self) -> &AwsClients {
        &self.client
    }

    /// The driver acting for cluster `cluster_id` (see [`AwsDriverConfig::cluster_id`]), once the
    /// provider knows the id: at create before anything is launched, and for an existing
    /// cluster. What it learned about the cluster's security group is forgotten (it was looked
    /// up without the id); the hosts it remembers from state are kept.
    pub fn with_cluster_id(mut self, cluster_id: &str, name: &str) -> Result<Self, AwsError> {
        if name != self.config.cluster_name {
            return Err(AwsError::config(
                Field::ClusterName,
                format!(
                    "the aws driver was built for cluster {:?}, not {name:?}; this is a bug in the provider, please report it",
                    self.config.cluster_name
                ),
            ));
        }
        let mut config = self.config.clone();
        config.cluster_id = Some(cluster_id.to_string());
        config.validate()?;
        self.config = config;
        self.prepared = Mutex::new(None);
        Ok(self)
    }

    /// The cluster's lookup scope: its name, its id (if it has one) and its VPC.
    fn scope<'a>(&'a self, prepared: &'a Prepared) -> Scope<'a> {
        Scope {
            cluster: &self.config.cluster_name,
            cluster_id: self.config.cluster_id.as_deref(),
            vpc_id: &prepared.vpc_id,
        }
    }

    /// The instances among `ids` (named in state) that carry the cluster's name and id tags,
    /// in any VPC: state plus the tags prove them the cluster's.
    async fn verified_instances(&self, ids: &[String]) -> Result<Vec<ClusterInstance>, AwsError> {
        let owns = |i: &ClusterInstance| {
            i.cluster.as_deref() == Some(self.config.cluster_name.as_str())
                && i.cluster_id.as_deref() == self.config.cluster_id.as_deref()
        };
        let mut out = Vec::new();
        for instance in instances::describe_ids(&self.client, ids).await? {
            if owns(&instance) {
                out.push(instance);
            } else {
                tracing::warn!(
                    instance_id = instance.instance_id,
                    cluster_tag = instance.cluster.as_deref().unwrap_or(""),
                    cluster_id_tag = instance.cluster_id.as_deref().unwrap_or(""),
                    "an instance named in state does not carry this cluster's tags; leaving it alone"
                );
            }
        }
        Ok(out)
    }

    pub(crate) fn security(&self) -> &crate::security::Security {
        &self.security
    }

    /// Whether the node at `address` answers (over TLS when the nodes speak it).
    async fn node_answers(&self, address: &str) -> bool {
        crate::probe::answers_with(address, self.client_tls_loaded().as_ref()).await
    }

    pub fn config(&self) -> &AwsDriverConfig {
        &self.config
    }

    pub fn client(&self) -> &aws_sdk_ec2::Client {
        &self.client
    }

    /// Tells the driver which instances state names (e.g. after loading Terraform state), so
    /// that of duplicates for a host the one holding its data is kept.
    pub async fn remember_hosts(&self, hosts: &[HostHandle]) {
        let mut known = self.known.lock().await;
        let mut groups = self.known_groups.lock().await;
        for host in hosts {
            if let Some(id) = &host.instance_id {
                known.insert(host.name.clone(), id.clone());
            }
            if let Some(group) = host.extra.get(EXTRA_SECURITY_GROUP) {
                groups.insert(group.clone());
            }
        }
    }

    /// A host's memory in MiB (from DescribeInstanceTypes), for the planner's capacity.
    pub async fn host_memory_mib(&self) -> Result<u64, AwsError> {
        instances::instance_memory_mib(&self.client, &self.config.instance_type).await
    }

    /// The zones of the configured subnets, in the order first listed.
    pub async fn zones(&self) -> Result<Vec<String>, AwsError> {
        let prepared = self.prepare(&[], false).await?;
        let mut zones: Vec<String> = Vec::new();
        for s in prepared.subnets {
            if !zones.contains(&s.zone) {
                zones.push(s.zone);
            }
        }
        Ok(zones)
    }

    /// Resolves the subnets (once), checks every host's zone has one, and with
    /// `with_group` makes sure the security group exists with ports for `hosts`.
    async fn prepare(&self, hosts: &[HostPlan], with_group: bool) -> Result<Prepared, AwsError> {
        let mut guard = self.prepared.lock().await;
        let mut prepared = match guard.take() {
            Some(p) => p,
            None => {
                let subnets = resolve_subnets(&self.client, &self.config.subnet_ids).await?;
                let vpc_id = subnets.first().map(|s| s.vpc_id.clone()).ok_or_else(|| {
                    AwsError::config(Field::SubnetIds { index: None }, "is empty")
                })?;
                Prepared {
                    subnets,
                    vpc_id,
                    group_id: None,
                    group_max_nodes: 0,
                }
            }
        };
        let result = self.check_and_group(&mut prepared, hosts, with_group).await;
        *guard = Some(prepared.clone());
        result.map(|()| prepared)
    }

    async fn check_and_group(
        &self,
        prepared: &mut Prepared,
        hosts: &[HostPlan],
        with_group: bool,
    ) -> Result<(), AwsError> {
        for host in hosts {
            if !prepared.subnets.iter().any(|s| s.zone == host.zone) {
                return Err(AwsError::NoSubnetInZone {
                    zone: host.zone.clone(),
                    host: host.name.clone(),
                });
            }
        }
        let needed = hosts
            .iter()
            .flat_map(|h| h.nodes.iter().map(|n| n.index_on_host.saturating_add(1)))
            .chain(std::iter::once(self.config.max_nodes_per_host))
            .max()
            .unwrap_or(1);
        if with_group && (prepared.group_id.is_none() || needed > prepared.group_max_nodes) {
            let max_nodes = needed.max(prepared.group_max_nodes);
            let user_tags: Vec<(String, String)> = self
                .config
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let scope = self.scope(prepared);
            let group_id = security_group::ensure_group(
                &self.client,
                &scope,
                security_group::Clients {
                    cidrs: &self.config.allowed_cidrs,
                    groups: &self.config.allowed_security_group_ids,
                    monitoring: &self.config.monitoring_cidrs,
                },
                max_nodes,
                self.plain_ports(),
                &user_tags,
            )
            .await?;
            prepared.group_id = Some(group_id);
            prepared.group_max_nodes = max_nodes;
        }
        Ok(())
    }

    /// Reconciles the security group's rules now, even if this driver did earlier (the
    /// plain-text port rules change within an apply: [`AwsDriver::sync_plain_ports`]).
    pub(crate) async fn sync_group(&self) -> Result<(), AwsError> {
        if let Some(p) = self.prepared.lock().await.as_mut() {
            p.group_id = None;
        }
        self.prepare(&[], true).await.map(|_| ())
    }

    /// Makes the host's instance exist and run: reuses a live one found by tag, starts a
    /// stopped one, terminates duplicates, and launches a replacement (next generation) for a
    /// terminated or missing one, in a subnet of the planned zone.
    pub async fn ensure_host(
        &self,
        host: &HostPlan,
        config: &NodeConfig,
    ) -> Result<HostHandle, AwsError> {
        let prepared = self.prepare(std::slice::from_ref(host), true).await?;
        let group_id = prepared.group_id.clone().unwrap_or_default();
        let timeouts = self.config.timeouts;
        let poll = self.config.poll_interval;

        // Only this cluster's instances (its id, its VPC): another cluster's instance with the
        // same name and host tags is never kept, started or terminated here.
        let scope = self.scope(&prepared);
        let mut known = instances::find_instances(&self.client, &scope, Some(&host.name)).await?;
        // The instance state names comes first, then the oldest generation and launch.
        if let Some(id) = self.known.lock().await.get(&host.name) {
            known.sort_by_key(|i| &i.instance_id != id);
        }
        let mut keep: Option<ClusterInstance> = None;
        let mut extra_ids = Vec::new();
        for instance in known.iter().filter(|i| i.is_live() || i.is_stopped()) {
            if instance.zone != host.zone {
                tracing::warn!(
                    host = host.name,
                    instance_id = instance.instance_id,
                    zone = instance.zone,
                    planned_zone = host.zone,
                    "instance is in another zone than planned; replacing it"
                );
                extra_ids.push(instance.instance_id.clone());
            } else if keep.is_none() {
                keep = Some(instance.clone());
            } else {
                tracing::warn!(
                    host = host.name,
                    instance_id = instance.instance_id,
                    "duplicate instance for host; terminating it"
                );
                extra_ids.push(instance.instance_id.clone());
            }
        }
        instances::terminate(&self.client, &extra_ids).await?;

        let instance = match keep {
            Some(instance) => {
                if instance.is_stopped() {
                    // A stopping instance cannot be started yet.
                    instances::wait_for_state(
                        &self.client,
                        std::slice::from_ref(&instance.instance_id),
                        InstanceStateName::Stopped,
                        "create",
                        timeouts.create,
                        poll,
                    )
                    .await?;
                    instances::start(&self.client, std::slice::from_ref(&instance.instance_id))
                        .await?;
                }
                tracing::debug!(
                    host = host.name,
                    instance_id = instance.instance_id,
                    "instance exists"
                );
                instance
            }
            None => {
                let generation = known.iter().map(|i| i.generation + 1).max().unwrap_or(0);
                self.launch_host(host, config, &prepared, &group_id, generation)
                    .await?
            }
        };
        let running = instances::wait_for_state(
            &self.client,
            std::slice::from_ref(&instance.instance_id),
            InstanceStateName::Running,
            "create",
            timeouts.create,
            poll,
        )
        .await?;
        let instance = running
            .into_iter()
            .find(|i| i.instance_id == instance.instance_id)
            .unwrap_or(instance);
        let handle = self.handle_of(&instance, &group_id);
        self.remember_hosts(std::slice::from_ref(&handle)).await;
        Ok(handle)
    }

    async fn launch_host(
        &self,
        host: &HostPlan,
        config: &NodeConfig,
        prepared: &Prepared,
        group_id: &str,
        first_generation: u32,
    ) -> Result<ClusterInstance, AwsError> {
        let access = self.node_access(config).await?;
        let ports: Vec<u16> = host
            .nodes
            .iter()
            .filter(|_| !self.sentinel_mode)
            .map(|n| self.port_on(&host.name, n.index_on_host))
            .collect();
        self.store_node_secrets(config).await?;
        // A supplied certificate reaches a new instance's nodes only once it is checked
        // against every instance's address (`start_node`); the first boot waits for it.
        self.forget_supplied_node_certs(&host.name, &ports).await?;
        let security = self.security_setup(&host.name, config)?;
        let document = user_data::render(&UserDataInput {
            security: &security,
            cluster: &self.config.cluster_name,
            password_parameter: &access.password_parameter,
            host,
            config,
            data_volume: self.config.data_volume.is_some(),
            redis_package: &self.config.redis_package,
            ports: &ports,
            fixed_ip: self.fixed_ip(&host.name),
        });
        if document.len() > MAX_USER_DATA {
            return Err(AwsError::config(
                Field::RedisConfig,
                format!(
                    "the instance's user data would be {} bytes, over EC2's {MAX_USER_DATA}; shorten redis_config",
                    document.len()
                ),
            ));
        }
        let encoded = user_data::encode(&document);
        let profile_deadline = tokio::time::Instant::now() + PROFILE_PROPAGATION;
        let zone_subnets: Vec<&ResolvedSubnet> = prepared
            .subnets
            .iter()
            .filter(|s| s.zone == host.zone)
            .collect();
        // Spread a zone's hosts over its subnets; on a capacity error try the next one.
        let start = host.host_index as usize % zone_subnets.len().max(1);
        let nodes: Vec<TaggedNode> = host.nodes.iter().map(TaggedNode::of).collect();
        let mut generation = first_generation;
        let mut last_error = None;
        for offset in 0..zone_subnets.len() {
            let subnet = zone_subnets[(start + offset) % zone_subnets.len()];
            // A token of a terminated instance still answers with that instance (EC2 keeps
            // tokens longer than it shows terminated instances): move on to the next generation.
            for _ in 0..3 {
                let spec = LaunchSpec {
                    config: &self.config,
                    host: &host.name,
                    zone: &host.zone,
                    subnet_id: &subnet.id,
                    security_group_id: group_id,
                    generation,
                    user_data: &encoded,
                    nodes: &nodes,
                    instance_profile: access.instance_profile.as_deref(),
                };
                match instances::launch(&self.client, &spec).await {
                    Ok(instance) if instance.is_gone() => generation += 1,
                    Ok(instance) => {
                        // The certificates name the node's address, known now (the node
                        // setup waits for them). A supplied one is stored by `start_node`,
                        // once every instance runs and it is checked against them all.
                        let address = self.instance_address(&instance);
                        if let Some(address) = address.filter(|_| !self.supplied_tls()) {
                            for port in &ports {
                                self.ensure_node_cert(&host.name, *port, &address).await?;
                            }
                        }
                        return Ok(instance);
                    }
                    Err(e)
                        if is_profile_not_yet_visible(&e)
                            && tokio::time::Instant::now() < profile_deadline =>
                    {
                        tracing::info!(
                            host = host.name,
                            "instance profile not visible to EC2 yet; retrying"
                        );
                        tokio::time::sleep(self.config.poll_interval.min(Duration::from_secs(5)))
                            .await;
                    }
                    Err(e) if e.code().is_some_and(|c| TRY_NEXT_SUBNET.contains(&c)) => {
                        tracing::warn!(host = host.name, subnet_id = subnet.id, error = %e, "launch failed; trying another subnet of the zone");
                        last_error = Some(e);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(last_error.unwrap_or(AwsError::InstanceFailed {
            host: host.name.clone(),
            instance_id: "(none)".into(),
            state: "terminated".into(),
            hint: "every launch returned a terminated instance; retry the apply".into(),
        }))
    }

    pub(crate) fn handle_of(&self, instance: &ClusterInstance, group_id: &str) -> HostHandle {
        let private_ip = instance.private_ip.clone().unwrap_or_default();
        let address = match self.config.address_override.get(&instance.host) {
            Some(over) => over.ip.to_string(),
            None => private_ip.clone(),
        };
        let mut extra = BTreeMap::new();
        extra.insert(EXTRA_GENERATION.into(), instance.generation.to_string());
        if let Some(subnet) = &instance.subnet_id {
            extra.insert(EXTRA_SUBNET.into(), subnet.clone());
        }
        extra.insert(EXTRA_PRIVATE_IP.into(), private_ip);
        if !group_id.is_empty() {
            extra.insert(EXTRA_SECURITY_GROUP.into(), group_id.to_string());
        }
        HostHandle {
            name: instance.host.clone(),
            zone: instance.zone.clone(),
            address,
            instance_id: Some(instance.instance_id.clone()),
            extra,
        }
    }

    /// Ensures every host, continuing past failures so that the report names all that
    /// exists; the next call picks up from there (found by tag, no duplicates).
    pub async fn ensure_hosts(&self, hosts: &[HostPlan], config: &NodeConfig) -> HostsReport {
        let mut report = HostsReport {
            ready: Vec::new(),
            failed: Vec::new(),
        };
        if let Err(e) = self.prepare(&[], true).await {
            report.failed = hosts
                .iter()
                .map(|h| (h.name.clone(), clone_err(&e)))
                .collect();
            return report;
        }
        for host in hosts {
            match self.ensure_host(host, config).await {
                Ok(handle) => report.ready.push(handle),
                Err(e) => {
                    tracing::error!(host = host.name, error = %e, "host not ready");
                    report.failed.push((host.name.clone(), e));
                }
            }
        }
        report
    }

    /// Compares hosts from state with EC2 (by tag): a terminated or missing instance is drift.
    /// Hosts in EC2 that state does not name are listed by [`AwsDriver::unknown_hosts`].
    pub async fn read_hosts(&self, hosts: &[HostHandle]) -> Result<Vec<HostStatus>, AwsError> {
        self.remember_hosts(hosts).await;
        let prepared = self.prepare(&[], false).await?;
        let found = instances::find_instances(&self.client, &self.scope(&prepared), None).await?;
        let mut out = Vec::with_capacity(hosts.len());
        for host in hosts {
            let mine: Vec<&ClusterInstance> =
                found.iter().filter(|i| i.host == host.name).collect();
            let group = host
                .extra
                .get(EXTRA_SECURITY_GROUP)
                .cloned()
                .unwrap_or_default();
            let in_state =
                |i: &&&ClusterInstance| Some(&i.instance_id) == host.instance_id.as_ref();
            let live = mine
                .iter()
                .filter(|i| i.is_live() && i.zone == host.zone)
                .find(in_state)
                .or_else(|| mine.iter().find(|i| i.is_live() && i.zone == host.zone));
            if let Some(live) = live {
                out.push(HostStatus::Present {
                    handle: self.handle_of(live, &group),
                });
            } else if let Some(stopped) = mine.iter().find(|i| i.is_stopped()) {
                out.push(HostStatus::Stopped {
                    handle: self.handle_of(stopped, &group),
                });
            } else {
                tracing::info!(
                    host = host.name,
                    zone = host.zone,
                    "host's instance is terminated or missing (drift)"
                );
                out.push(HostStatus::Missing {
                    name: host.name.clone(),
                    zone: host.zone.clone(),
                });
            }
        }
        Ok(out)
    }

    /// Live instances of the cluster whose host is not in `known`: left by an apply that
    /// failed before state was written. Pass them to [`AwsDriver::remove_host_by_name`] or
    /// adopt them by planning their host names.
    pub async fn unknown_hosts(&self, known: &[String]) -> Result<Vec<ClusterInstance>, AwsError> {
        let prepared = self.prepare(&[], false).await?;
        let found = instances::find_instances(&self.client, &self.scope(&prepared), None).await?;
        Ok(found
            .into_iter()
            .filter(|i| !i.is_gone() && !known.contains(&i.host))
            .collect())
    }

    /// Terminates every instance of the host (found by the cluster's tags in its VPC) and waits
    /// until they are gone.
    pub async fn remove_host_by_name(&self, host: &str) -> Result<Vec<String>, AwsError> {
        self.remove_instances_of(host, &[]).await
    }

    /// Terminates the host's instances found in the cluster's scope plus those of `named` (from
    /// state) that carry the cluster's tags, and waits until they are gone.
    async fn remove_instances_of(
        &self,
        host: &str,
        named: &[String],
    ) -> Result<Vec<String>, AwsError> {
        let prepared = self.prepare(&[], false).await?;
        let mut found =
            instances::find_instances(&self.client, &self.scope(&prepared), Some(host)).await?;
        found.extend(self.verified_instances(named).await?);
        let ids = not_terminated(&found);
        instances::terminate(&self.client, &ids).await?;
        instances::wait_for_state(
            &self.client,
            &ids,
            InstanceStateName::Terminated,
            "delete",
            self.config.timeouts.delete,
            self.config.poll_interval,
        )
        .await?;
        Ok(ids)
    }

    /// Terminates all the cluster's instances (those carrying its id in its VPC, plus those
    /// named in state that carry its id), waits for them, and deletes its security group (the
    /// one carrying its id in its VPC). Nothing else is touched: another cluster of the same
    /// name, in another VPC or another Terraform state, carries another id.
    pub async fn destroy(&self) -> Result<DestroyReport, AwsError> {
        let cluster = self.config.cluster_name.as_str();
        let prepared = self.prepare(&[], false).await?;
        let scope = self.scope(&prepared);
        let mut found = instances::find_instances(&self.client, &scope, None).await?;
        let named: Vec<String> = self.known.lock().await.values().cloned().collect();
        found.extend(self.verified_instances(&named).await?);
        let ids = not_terminated(&found);
        instances::terminate(&self.client, &ids).await?;
        instances::wait_for_state(
            &self.client,
            &ids,
            InstanceStateName::Terminated,
            "delete",
            self.config.timeouts.delete,
            self.config.poll_interval,
        )
        .await?;
        let deleted = security_group::delete_group(
            &self.client,
            &scope,
            self.config.timeouts.delete,
            self.config.poll_interval,
        )
        .await?;
        *self.prepared.lock().await = None;
        // The parameter and the role are named from the id: a cluster without one has none.
        let (password_parameter_deleted, instance_profile_deleted) =
            match self.config.cluster_id.as_deref() {
                Some(id) => {
                    // A sentinel-mode deployment's sentinel password goes with it.
                    let password = secrets::delete_sentinel_password(&self.client.ssm, cluster, id)
                        .await?
                        | secrets::delete_password(&self.client.ssm, cluster, id).await?;
                    // The rest: operator password, TLS authority and certificates, ACL lines.
                    secrets::delete_all(&self.client.ssm, cluster, id).await?;
                    (
                        password,
                        instance_profile::delete(&self.client.iam, id).await?,
                    )
                }
                None => (false, false),
            };
        *self.stored_password.lock().await = None;
        self.forget_security().await;
        *self.profile.lock().await = None;
        tracing::info!(
            cluster,
            instances = ids.len(),
            security_group_deleted = deleted,
            password_parameter_deleted,
            instance_profile_deleted,
            "destroyed"
        );
        Ok(DestroyReport {
            terminated: ids,
            security_group_deleted: deleted,
            password_parameter_deleted,
            instance_profile_deleted,
        })
    }

    /// Gives a cluster made before cluster ids its id (`record.cluster_id`, which the driver
    /// must already act for): tags with it the instances state names (see
    /// [`AwsDriver::remember_hosts`]) that carry the cluster's name and no id, their volumes,
    /// and the cluster's security group of the old name in its VPC. Afterwards every lookup by
    /// id finds them. Nothing carrying another id is tagged: such an instance in state is an
    /// error and nothing is tagged. The group is claimed only when state names it or the
    /// cluster's instances run in it: another Terraform state's cluster of the same name in the
    /// same VPC may own a group of that name, and a create (nothing in state) claims nothing.
    /// Everything is tagged in one call, so a claim does not stop half-way.
    pub async fn claim(&self, record: &ClusterRecord) -> Result<ClaimReport, AwsError> {
        let cluster = self.config.cluster_name.as_str();
        let Some(id) = self.config.cluster_id.as_deref() else {
            return Err(AwsError::config(
                Field::ClusterId,
                "the aws driver has no cluster id to record; this is a bug in the provider, please report it",
            ));
        };
        if record.cluster_id != id || record.name != cluster {
            return Err(AwsError::config(
                Field::ClusterId,
                format!(
                    "the aws driver acts for cluster {cluster:?} (id {id}), not {:?} (id {}); this is a bug in the provider, please report it",
                    record.name, record.cluster_id
                ),
            ));
        }
        let prepared = self.prepare(&[], false).await?;
        let named: Vec<String> = self.known.lock().await.values().cloned().collect();
        let mut report = ClaimReport::default();
        let mut proven_groups = self.known_groups.lock().await.clone();
        let mut volumes = Vec::new();
        for instance in instances::describe_ids(&self.client, &named).await? {
            if instance.cluster.as_deref() != Some(cluster) {
                tracing::warn!(
                    instance_id = instance.instance_id,
                    cluster_tag = instance.cluster.as_deref().unwrap_or(""),
                    "an instance named in state does not carry this cluster's name; not claiming it"
                );
                continue;
            }
            match instance.cluster_id.as_deref() {
                Some(owner) if owner == id => {}
                Some(owner) => {
                    return Err(AwsError::NotOurs {
                        what: format!("instance {} (host {})", instance.instance_id, instance.host),
                        owner: owner.to_string(),
                        ours: id.to_string(),
                    })
                }
                // Gone instances are never found again; nothing to tag.
                None if instance.is_gone() => continue,
                None => {
                    report.instances.push(instance.instance_id.clone());
                    volumes.extend(instance.volume_ids.iter().cloned());
                }
            }
            proven_groups.extend(instance.security_groups.iter().cloned());
        }
        report.volumes = self.untagged_volumes(&volumes).await?;
        let legacy =
            security_group::find_legacy_group(&self.client, cluster, &prepared.vpc_id).await?;
        if let Some(group_id) = legacy.as_ref().and_then(|g| g.group_id()) {
            if proven_groups.contains(group_id) {
                report.security_group = Some(group_id.to_string());
            } else {
                tracing::info!(
                    group_id,
                    "a security group of this cluster's old name is neither in state nor used by its instances; leaving it alone"
                );
            }
        }
        let resources: Vec<String> = report
            .instances
            .iter()
            .chain(&report.volumes)
            .chain(&report.security_group)
            .cloned()
            .collect();
        if !resources.is_empty() {
            self.client
                .create_tags()
                .set_resources(Some(resources))
                .tags(tag(CLUSTER_ID_TAG, id))
                .send()
                .await
                .map_err(crate::error::api("CreateTags"))?;
        }
        // The group was looked up before it carried the id.
        *self.prepared.lock().await = None;
        Ok(report)
    }

    /// Of `ids`, the volumes that carry no cluster id (those carrying one are left alone).
    async fn untagged_volumes(&self, ids: &[String]) -> Result<Vec<String>, AwsError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let volumes: Vec<aws_sdk_ec2::types::Volume> = self
            .client
            .describe_volumes()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("volume-id")
                    .set_values(Some(ids.to_vec()))
                    .build(),
            )
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(crate::error::api("DescribeVolumes"))?;
        Ok(volumes
            .iter()
            .filter(|v| !v.tags().iter().any(|t| t.key() == Some(CLUSTER_ID_TAG)))
            .filter_map(|v| v.volume_id().map(str::to_string))
            .collect())
    }

    /// Writes the password to its SSM parameter unless this driver wrote that same password
    /// already. Without a password or a cluster id there is nothing to write.
    pub async fn store_password(&self, config: &NodeConfig) -> Result<Option<String>, AwsError> {
        use sha2::Digest as _;
        let (Some(password), Some(id)) = (&config.password, self.config.cluster_id.as_deref())
        else {
            return Ok(None);
        };
        let cluster = self.config.cluster_name.as_str();
        let digest: [u8; 32] = sha2::Sha256::digest(password.expose().as_bytes()).into();
        // Held across the write: concurrent callers (one per node) write once.
        let mut stored = self.stored_password.lock().await;
        if *stored != Some(digest) {
            secrets::put_password(&self.client.ssm, cluster, id, password.expose()).await?;
            *stored = Some(digest);
        }
        Ok(Some(secrets::parameter_name(cluster, id)))
    }

    /// The parameter an instance reads its password from, and the profile that lets it: the
    /// user's (`instance_profile`) or the cluster's own, made here on first use.
    async fn node_access(&self, config: &NodeConfig) -> Result<NodeAccess, AwsError> {
        let password_parameter = self.store_password(config).await?.unwrap_or_default();
        let instance_profile = match (&self.config.instance_profile, &self.config.cluster_id) {
            (Some(given), _) => Some(given.clone()),
            (None, Some(id)) => {
                let mut made = self.profile.lock().await;
                if made.is_none() {
                    *made = Some(
                        instance_profile::ensure(&self.client.iam, &self.config.cluster_name, id)
                            .await?,
                    );
                }
                made.clone()
            }
            (None, None) => None,
        };
        Ok(NodeAccess {
            password_parameter,
            instance_profile,
        })
    }

    /// Checks the configuration endpoint's zone against the subnets' VPC (at plan).
    pub async fn check_endpoint(&self, spec: &EndpointSpec) -> Result<(), AwsError> {
        let vpc_id = self.prepare(&[], false).await?.vpc_id;
        dns_endpoint::check_zone(&self.client.route53, spec, &vpc_id).await
    }

    /// Points the configuration endpoint at the private addresses of `hosts` (the cluster's
    /// instances as state has them after an apply).
    pub async fn publish_endpoint(
        &self,
        spec: &EndpointSpec,
        hosts: &[HostHandle],
    ) -> Result<(), AwsError> {
        let cluster_id = self.acting_id("publish the configuration endpoint for")?;
        // The instances' private addresses, which clients in the VPC reach (the test-only
        // address map changes only where this process reaches the nodes).
        let addresses: Vec<String> = hosts
            .iter()
            .map(|h| {
                h.extra
                    .get(EXTRA_PRIVATE_IP)
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or(&h.address)
                    .clone()
            })
            .filter(|a| !a.is_empty())
            .collect();
        dns_endpoint::publish(&self.client.route53, spec, cluster_id, &addresses).await
    }

    /// Deletes the configuration endpoint's records when they are this cluster's.
    pub async fn withdraw_endpoint(&self, spec: &EndpointSpec) -> Result<bool, AwsError> {
        let cluster_id = self.acting_id("withdraw the configuration endpoint of")?;
        dns_endpoint::withdraw(&self.client.route53, spec, cluster_id).await
    }

    /// The id the driver acts for; records are written and read only under it.
    pub(crate) fn acting_id(&self, what: &str) -> Result<&str, AwsError> {
        self.config.cluster_id.as_deref().ok_or_else(|| {
            AwsError::config(
                Field::ClusterId,
                format!("the aws driver has no cluster id to {what}; this is a bug in the provider, please report it"),
            )
        })
    }

    /// The cluster's instances in any state: its name and id tags, in its VPC (the proof
    /// destroy relies on). A cluster without an id has no such proof: refused.
    pub async fn cluster_instances(&self) -> Result<Vec<ClusterInstance>, AwsError> {
        self.acting_id("find instances by")?;
        let prepared = self.prepare(&[], false).await?;
        instances::find_instances(&self.client, &self.scope(&prepared), None).await
    }

    /// The instances (not terminated) carrying the cluster's id in its VPC, whatever their
    /// name tag, and those names: an imported cluster is adopted only when its id is found
    /// there under the configured name.
    pub async fn carriers_of_id(&self) -> Result<IdCarriers, AwsError> {
        let cluster_id = self.acting_id("look up")?.to_string();
        let prepared = self.prepare(&[], false).await?;
        let found = instances::find_by_id(&self.client, &cluster_id, &prepared.vpc_id).await?;
        let live: Vec<&ClusterInstance> = found
            .iter()
            .filter(|i| i.is_live() || i.is_stopped())
            .collect();
        Ok(IdCarriers {
            vpc_id: prepared.vpc_id.clone(),
            instances: live.iter().map(|i| i.instance_id.clone()).collect(),
            names: live
                .iter()
                .map(|i| i.cluster.clone().unwrap_or_default())
                .collect(),
        })
    }

    /// Every node recorded on the cluster's instances (its id, its VPC), with the handle that
    /// reaches it. Of two instances for one host (a replacement being launched), the one state
    /// names wins, then a running one. An instance that carries no node records (launched by
    /// an older redisha) is an error: its nodes cannot be told apart.
    pub async fn discover_nodes(&self) -> Result<Vec<(NodeHandle, NodeRecord)>, AwsError> {
        let cluster_id = self.acting_id("discover nodes by")?.to_string();
        let prepared = self.prepare(&[], false).await?;
        let mut found = instances::find_instances(&self.client, &self.scope(&prepared), None)
            .await?
            .into_iter()
            .filter(|i| i.is_live() || i.is_stopped())
            .collect::<Vec<_>>();
        let known = self.known.lock().await.clone();
        found.sort_by_key(|i| {
            (
                known.get(&i.host) != Some(&i.instance_id),
                !i.is_live(),
                i.generation,
            )
        });
        let untagged: Vec<&str> = found
            .iter()
            .filter(|i| i.nodes.is_empty())
            .map(|i| i.instance_id.as_str())
            .collect();
        if !untagged.is_empty() {
            return Err(AwsError::config(
                Field::ClusterId,
                format!(
                    "instances {} of cluster {:?} (id {cluster_id}) carry no node records (they were launched by an older redisha), so their nodes cannot be found without Terraform's private state. Fix: apply once with the resource's private state in place (it records them), or copy the resource's `private` value back from terraform.tfstate.backup",
                    untagged.join(", "),
                    self.config.cluster_name
                ),
            ));
        }
        let mut hosts_seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut chosen = Vec::new();
        for instance in &found {
            if !hosts_seen.insert(instance.host.clone()) {
                continue;
            }
            chosen.push(instance);
            let host = self.handle_of(instance, prepared.group_id.as_deref().unwrap_or(""));
            for node in &instance.nodes {
                let (ip, port) = self.node_address(&host, node.index_on_host);
                let handle = NodeHandle {
                    name: node.name.clone(),
                    host: host.name.clone(),
                    ip: ip.clone(),
                    port,
                    index_on_host: node.index_on_host,
                    pid: None,
                    data_dir: None,
                    config_file: self.discovered_config_file(&host.name, node.index_on_host),
                };
                let record = NodeRecord {
                    format: redisha_cluster::identity::RECORD_FORMAT,
                    cluster_id: cluster_id.clone(),
                    cluster_name: self.config.cluster_name.clone(),
                    name: node.name.clone(),
                    shard: node.shard,
                    role: node.role,
                    zone: instance.zone.clone(),
                    host: host.name.clone(),
                    address: ip,
                    index_on_host: node.index_on_host,
                };
                out.push((handle, record));
            }
        }
        if self.sentinel_mode {
            // The durable copies on the group: the processes of an instance that is gone.
            out.extend(self.durable_only_processes(&chosen).await?);
        }
        Ok(out)
    }

    /// Writes a node's record on its host's instance (the one state names, else the cluster's
    /// live instance for the host).
    pub async fn record_node_tag(
        &self,
        node: &NodeHandle,
        record: &NodeRecord,
    ) -> Result<(), AwsError> {
        let id = self.acting_id("record nodes under")?;
        if record.cluster_id != id {
            return Err(AwsError::NotOurs {
                what: format!("node {}", record.name),
                owner: record.cluster_id.clone(),
                ours: id.to_string(),
            });
        }
        let prepared = self.prepare(&[], false).await?;
        let candidates =
            instances::find_instances(&self.client, &self.scope(&prepared), Some(&node.host))
                .await?;
        let named = self.known.lock().await.get(&node.host).cloned();
        let instance = candidates
            .iter()
            .filter(|i| i.is_live() || i.is_stopped())
            .min_by_key(|i| (Some(&i.instance_id) != named.as_ref(), !i.is_live()))
            .ok_or_else(|| AwsError::config(
                Field::ClusterId,
                format!("node {}: no instance of host {} carries this cluster's id in its VPC, so its record has nowhere to go", node.name, node.host),
            ))?;
        if instance.nodes.contains(&TaggedNode::of_record(record)) {
            return Ok(());
        }
        self.client
            .create_tags()
            .resources(&instance.instance_id)
            .tags(TaggedNode::of_record(record).tag())
            .send()
            .await
            .map_err(crate::error::api("CreateTags"))?;
        Ok(())
    }

    /// Writes the cluster record on the cluster's security group, making the group first: at
    /// create the record must exist before any instance does.
    pub async fn record_cluster_tags(&self, record: &ClusterRecord) -> Result<(), AwsError> {
        let prepared = self.prepare(&[], true).await?;
        let group_id = prepared.group_id.ok_or(AwsError::MissingField {
            operation: "CreateSecurityGroup",
            field: "GroupId",
        })?;
        self.client
            .create_tags()
            .resources(group_id)
            .set_tags(Some(records::cluster_record_tags(record)))
            .send()
            .await
            .map_err(crate::error::api("CreateTags"))?;
        Ok(())
    }

    /// The cluster records in the VPC of the configured subnets: one per cluster group that
    /// carries an id, whatever its name.
    pub async fn cluster_records(&self) -> Result<Vec<ClusterRecord>, AwsError> {
        let prepared = self.prepare(&[], false).await?;
        let groups: Vec<aws_sdk_ec2::types::SecurityGroup> = self
            .client
            .describe_security_groups()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("vpc-id")
                    .values(&prepared.vpc_id)
                    .build(),
            )
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag-key")
                    .values(CLUSTER_ID_TAG)
                    .build(),
            )
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(crate::error::api("DescribeSecurityGroups"))?;
        Ok(groups
            .iter()
            .filter_map(records::cluster_record_of)
            .collect())
    }

    /// The hosts among `hosts` whose live instance was launched from another AMI or installed
    /// another engine package than the configuration says now (DescribeInstances' ImageId and
    /// the `redisha:redis-package` tag): what an engine roll replaces. A host without a live
    /// instance is left out (repair launches it from the current AMI).
    pub async fn image_drift(&self, hosts: &[HostHandle]) -> Result<Vec<OutdatedHost>, AwsError> {
        let prepared = self.prepare(&[], false).await?;
        let found = instances::find_instances(&self.client, &self.scope(&prepared), None).await?;
        let target = engine_words(&self.config.ami, &self.config.redis_package);
        let mut out = Vec::new();
        for host in hosts {
            let live = found
                .iter()
                .filter(|i| i.host == host.name && i.is_live())
                .min_by_key(|i| {
                    (
                        Some(&i.instance_id) != host.instance_id.as_ref(),
                        i.generation,
                    )
                });
            let Some(instance) = live else {
                continue;
            };
            let Some(image) = instance.image_id.as_deref() else {
                tracing::warn!(
                    host = host.name,
                    instance_id = instance.instance_id,
                    "EC2 names no AMI for the instance; leaving it as it is"
                );
                continue;
            };
            // Instances launched before the tag existed all installed the default package.
            let package = instance
                .redis_package
                .as_deref()
                .unwrap_or(DEFAULT_REDIS_PACKAGE);
            if image != self.config.ami || package != self.config.redis_package {
                out.push(OutdatedHost {
                    host: host.name.clone(),
                    running: engine_words(image, package),
                    target: target.clone(),
                });
            }
        }
        Ok(out)
    }

    /// With stand-ins configured (the test-only address map), never fall back to an
    /// instance's private address.
    pub(crate) fn check_stand_in(&self, host: &HostHandle) -> Result<(), DriverError> {
        if !self.config.address_override.is_empty()
            && !self.config.address_override.contains_key(&host.name)
        {
            return Err(DriverError::Other(format!(
                "address_override ({}): no entry for host {}; add one or unset the map",
                crate::settings::ADDRESS_MAP_ENV,
                host.name
            )));
        }
        Ok(())
    }

    /// The address `instance`'s nodes bind to and announce: its private address, or the
    /// test-only address map's stand-in for its host.
    pub(crate) fn instance_address(&self, instance: &ClusterInstance) -> Option<String> {
        self.fixed_ip(&instance.host)
            .map(|ip| ip.to_string())
            .or_else(|| instance.private_ip.clone())
    }

    /// (host, address) of every instance of the cluster that runs, starts or is stopped (it
    /// runs its nodes again when started), in its VPC; those without an address yet are left
    /// out.
    pub(crate) async fn instance_addresses(&self) -> Result<Vec<(String, String)>, AwsError> {
        let prepared = self.prepare(&[], false).await?;
        let found = instances::find_instances(&self.client, &self.scope(&prepared), None).await?;
        let mut out: Vec<(String, String)> = found
            .iter()
            .filter(|i| i.is_live() || i.is_stopped())
            .filter_map(|i| Some((i.host.clone(), self.instance_address(i)?)))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Where the cluster code reaches node `index_on_host` of `host`.
    pub fn node_address(&self, host: &HostHandle, index_on_host: u16) -> (String, u16) {
        match self.config.address_override.get(&host.name) {
            Some(over) => (
                over.ip.to_string(),
                over.base_port.saturating_add(index_on_host),
            ),
            None => (host.address.clone(), node_port(index_on_host)),
        }
    }

    /// The port node `index_on_host` of `host` listens on, on its instance.
    pub(crate) fn port_on(&self, host: &str, index_on_host: u16) -> u16 {
        match self.config.address_override.get(host) {
            Some(over) => over.base_port.saturating_add(index_on_host),
            None => node_port(index_on_host),
        }
    }

    /// The address a host's nodes bind to and announce, when the test-only address map fixes
    /// it (a loopback stand-in); otherwise they announce the instance's private address.
    pub(crate) fn fixed_ip(&self, host: &str) -> Option<std::net::IpAddr> {
        self.config.address_override.get(host).map(|over| over.ip)
    }

    /// The running instance of `host` a process of `node` is started on; none is an error
    /// the next apply mends (it provisions the host first).
    pub(crate) async fn instance_to_start_on(
        &self,
        host: &str,
        node: &str,
    ) -> Result<ClusterInstance, DriverError> {
        self.running_instance(host)
            .await?
            .ok_or_else(|| DriverError::StartFailed {
                node: node.to_string(),
                reason: format!(
                    "host {host} has no running instance of this cluster; the next apply provisions it"
                ),
            })
    }

    /// The host's running instance (of the cluster's id, in its VPC; the one state names
    /// first), if there is one.
    pub(crate) async fn running_instance(
        &self,
        host: &str,
    ) -> Result<Option<ClusterInstance>, AwsError> {
        let prepared = self.prepare(&[], false).await?;
        let found =
            instances::find_instances(&self.client, &self.scope(&prepared), Some(host)).await?;
        let named = self.known.lock().await.get(host).cloned();
        Ok(found
            .into_iter()
            .filter(|i| matches!(i.state, InstanceStateName::Running))
            .min_by_key(|i| (Some(&i.instance_id) != named.as_ref(), i.generation)))
    }

    /// The host's instances of the cluster (its id, its VPC) that exist, running or stopped.
    pub(crate) async fn existing_instances(
        &self,
        host: &str,
    ) -> Result<Vec<ClusterInstance>, AwsError> {
        let prepared = self.prepare(&[], false).await?;
        Ok(
            instances::find_instances(&self.client, &self.scope(&prepared), Some(host))
                .await?
                .into_iter()
                .filter(|i| i.is_live() || i.is_stopped())
                .collect(),
        )
    }

    /// The deployment's security group (by its id in its VPC), with its tags.
    pub(crate) async fn deployment_group(
        &self,
    ) -> Result<Option<aws_sdk_ec2::types::SecurityGroup>, AwsError> {
        let prepared = self.prepare(&[], false).await?;
        security_group::find_group(&self.client, &self.scope(&prepared)).await
    }

    /// Runs a node command on `instance` (see [`run_command::run`]).
    pub(crate) async fn run_on(
        &self,
        instance: &ClusterInstance,
        node: &str,
        action: NodeAction,
        script: &str,
        phase: &'static str,
        timeout: Duration,
    ) -> Result<(), AwsError> {
        let target = Target {
            cluster: &self.config.cluster_name,
            instance_id: &instance.instance_id,
            host: &instance.host,
            node,
        };
        let wait = Wait {
            phase,
            timeout,
            poll: self.config.poll_interval,
        };
        tracing::info!(
            node,
            host = instance.host,
            instance_id = instance.instance_id,
            %action,
            "run command"
        );
        let script = node_commands::addressed(script, &instance.instance_id);
        run_command::run(&self.client.ssm, target, action, &script, wait).await
    }

    /// Waits until the node at `address` answers (`up`) or no longer does, for what Run
    /// Command reported: moto, and an agent that lost its output, say "Success" regardless.
    pub(crate) async fn wait_for_node(
        &self,
        node: &str,
        host: &str,
        address: &str,
        up: bool,
        phase: &'static str,
        timeout: Duration,
    ) -> Result<(), AwsError> {
        let started = tokio::time::Instant::now();
        let mut next_progress = started + Duration::from_secs(30);
        while self.node_answers(address).await != up {
            let now = tokio::time::Instant::now();
            if now >= started + timeout {
                return Err(AwsError::Timeout {
                    phase,
                    what: format!(
                        "node {node} on {address} (host {host}) {}; check the instance's cloud-init log (/var/log/cloud-init-output.log), `journalctl -u redisha-node@*`, and that the security group admits the provider",
                        if up { "answering" } else { "stopping" }
                    ),
                    after: timeout,
                });
            }
            if now >= next_progress {
                next_progress = now + Duration::from_secs(30);
                tracing::info!(node, host, address, up, "waiting for the node");
            }
            tokio::time::sleep(self.config.poll_interval.min(Duration::from_secs(2))).await;
        }
        Ok(())
    }
}

/// How a plan names what an instance runs.
fn engine_words(ami: &str, package: &str) -> String {
    format!("{ami} with {package}")
}

/// The ids of `found` not yet terminated, each once.
fn not_terminated(found: &[ClusterInstance]) -> Vec<String> {
    let mut ids: Vec<String> = found
        .iter()
        .filter(|i| !matches!(i.state, InstanceStateName::Terminated))
        .map(|i| i.instance_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// RunInstances refuses a profile IAM made seconds ago until EC2 sees it.
fn is_profile_not_yet_visible(e: &AwsError) -> bool {
    e.code() == Some("InvalidParameterValue") && e.to_string().contains("iamInstanceProfile")
}

fn clone_err(e: &AwsError) -> AwsError {
    AwsError::Shared(e.to_string())
}

#[async_trait]
impl Driver for AwsDriver {
    fn kind(&self) -> &'static str {
        "aws"
    }

    async fn preflight(
        &self,
        hosts: &[HostPlan],
        _existing: &[NodeHandle],
        config: &NodeConfig,
    ) -> Result<(), DriverError> {
        config.validate()?;
        if config.password.is_none() {
            return Err(AwsError::config(
                Field::Password,
                "the aws driver requires a password: its nodes listen on the VPC's network, and the cluster bus and client ports must not be open without one. Set `password` (e.g. from a random_password resource)",
            )
            .into());
        }
        // Checks only: subnets exist, in one VPC, cover every planned zone; the instance type
        // exists. The security group is made on the first provision.
        self.prepare(hosts, false).await?;
        self.host_memory_mib().await?;
        Ok(())
    }

    async fn provision_host(
        &self,
        host: &HostPlan,
        config: &NodeConfig,
    ) -> Result<HostHandle, DriverError> {
        Ok(self.ensure_host(host, config).await?)
    }

    async fn start_node(
        &self,
        host: &HostHandle,
        node: &NodePlan,
        config: &NodeConfig,
    ) -> Result<NodeHandle, DriverError> {
        self.check_stand_in(host)?;
        let (ip, port) = self.node_address(host, node.index_on_host);
        let address = format_address(&ip, port);
        let handle = NodeHandle {
            name: node.name.clone(),
            host: host.name.clone(),
            ip,
            port,
            index_on_host: node.index_on_host,
            pid: None,
            data_dir: None,
            config_file: None,
        };
        // A running node is left running (first boot started it, or an earlier apply).
        if self.node_answers(&address).await {
            tracing::info!(node = node.name, host = host.name, address, "node answers");
            return Ok(handle);
        }
        let instance = self.instance_to_start_on(&host.name, &node.name).await?;
        let parameter = self.store_password(config).await?.unwrap_or_default();
        let ports = [self.port_on(&host.name, node.index_on_host)];
        self.store_node_secrets(config).await?;
        self.ensure_node_cert(&host.name, port, &handle.ip).await?;
        let security = self.security_setup(&host.name, config)?;
        let script = node_commands::start(
            &self.config.cluster_name,
            &node.name,
            &NodeSetup {
                security: &security,
                ports: &ports,
                rejoin_delay_secs: user_data::rejoin_delay_secs(config),
                password_parameter: &parameter,
                fixed_ip: self.fixed_ip(&host.name),
                zone: &host.zone,
            },
            config,
        );
        let timeout = self.config.timeouts.create;
        self.run_on(
            &instance,
            &node.name,
            NodeAction::Start,
            &script,
            "create",
            timeout,
        )
        .await?;
        self.wait_for_node(&node.name, &host.name, &address, true, "create", timeout)
            .await?;
        tracing::info!(node = node.name, host = host.name, address, "node answers");
        Ok(handle)
    }

    /// Stops the node's unit with Run Command (which also ends a hung node), then waits until
    /// it no longer answers. A host without a running instance runs nothing to stop.
    async fn stop_node(&self, node: &NodeHandle) -> Result<(), DriverError> {
        let Some(instance) = self.running_instance(&node.host).await? else {
            tracing::info!(
                node = node.name,
                host = node.host,
                "no running instance: nothing to stop"
            );
            return Ok(());
        };
        let script = if sentinel_procs::is_sentinel(node) {
            self.sentinel_script(node, false)
        } else {
            node_commands::stop(&self.config.cluster_name, &node.name, node.port)
        };
        let timeout = self.config.timeouts.update;
        self.run_on(
            &instance,
            &node.name,
            NodeAction::Stop,
            &script,
            "update",
            timeout,
        )
        .await?;
        let address = format_address(&node.ip, node.port);
        self.wait_for_node(&node.name, &node.host, &address, false, "update", timeout)
            .await?;
        tracing::info!(node = node.name, address, "node stopped");
        Ok(())
    }

    async fn start_process(
        &self,
        host: &HostHandle,
        node: &NodePlan,
        kind: &ProcessKind,
        config: &NodeConfig,
    ) -> Result<NodeHandle, DriverError> {
        self.start_sentinel_mode_process(host, node, kind, config)
            .await
    }

    async fn write_process_config(
        &self,
        node: &NodeHandle,
        kind: &ProcessKind,
        config: &NodeConfig,
    ) -> Result<(), DriverError> {
        self.write_sentinel_mode_config(node, kind, config).await
    }

    fn operator_password(&self) -> Option<redisha_cluster::Password> {
        self.operator_password_now()
    }

    fn operator_password_retiring(&self) -> Option<redisha_cluster::Password> {
        self.operator_password_retiring_now()
    }

    fn operator_new_password_accepted(&self) {
        self.note_operator_new_accepted();
    }

    async fn keep_new_operator_password(&self) -> Result<(), DriverError> {
        Ok(self.keep_new_operator_password_in_ssm().await?)
    }

    fn client_tls(&self) -> Option<redisha_cluster::tls::ClientTls> {
        self.client_tls_loaded()
    }

    fn cert_info(&self, node: &NodeHandle) -> Option<redisha_cluster::tls::NodeCertInfo> {
        self.cert_info_of(node)
    }

    fn cert_due(&self, node: &NodeHandle) -> bool {
        self.cert_due_of(node)
    }

    async fn inspect_node(&self, _node: &NodeHandle) -> Result<ProcessState, DriverError> {
        // Processes on an instance are not visible from here; the cluster code asks redis.
        Ok(ProcessState::Unknown)
    }

    /// Stores the password in SSM (once per rotation) and writes the shared settings on the
    /// node's instance for its next start; the cluster code applies them to the running node
    /// (CONFIG SET, and CONFIG REWRITE after a rotation), and replacement instances get them
    /// in their user data.
    async fn write_node_config(
        &self,
        node: &NodeHandle,
        config: &NodeConfig,
    ) -> Result<(), DriverError> {
        self.store_password(config).await?;
        self.store_node_secrets(config).await?;
        let Some(instance) = self.running_instance(&node.host).await? else {
            return Ok(());
        };
        let mut script = node_commands::reconfigure(&self.config.cluster_name, &node.name, config);
        // A cluster that declared its first user since the node was set up: the node's
        // instance reads the ACL parameters from now on, its exporter logs in as its user.
        if !sentinel_procs::is_sentinel(node) {
            script.push_str(&self.acl_adopt_script(node.port, config)?);
        }
        // A rotation of the operator user's password, once every node accepts the new one:
        // the node's exporter restarts, reading the new exporter password from SSM, before
        // the old one is removed from the nodes.
        if config.acl.operator_password_retiring.is_some()
            && !sentinel_procs::is_sentinel(node)
            && self.operator_new_accepted_now()
        {
            script.push_str(&node_commands::restart_exporter(node.port));
        }
        let timeout = self.config.timeouts.update;
        self.run_on(
            &instance,
            &node.name,
            NodeAction::Reconfigure,
            &script,
            "update",
            timeout,
        )
        .await?;
        Ok(())
    }

    /// Removes the node from its instance (unit disabled, config and data deleted), so that a
    /// reboot does not bring it back; a terminated instance took everything with it.
    async fn wipe_node(&self, node: &NodeHandle) -> Result<(), DriverError> {
        let Some(instance) = self.running_instance(&node.host).await? else {
            tracing::debug!(
                node = node.name,
                "wipe_node: no running instance; its data went with it"
            );
            if self.sentinel_mode {
                self.forget_process(node).await?;
            }
            return Ok(());
        };
        let script = if sentinel_procs::is_sentinel(node) {
            self.sentinel_script(node, true)
        } else {
            node_commands::remove(&self.config.cluster_name, &node.name, node.port)
        };
        let timeout = self.config.timeouts.update;
        self.run_on(
            &instance,
            &node.name,
            NodeAction::Remove,
            &script,
            "update",
            timeout,
        )
        .await?;
        if self.sentinel_mode {
            self.forget_process(node).await?;
        }
        Ok(())
    }

    async fn remove_host(&self, host: &HostHandle) -> Result<(), DriverError> {
        let named: Vec<String> = host.instance_id.iter().cloned().collect();
        self.remove_instances_of(&host.name, &named).await?;
        Ok(())
    }

    /// Claims the cluster's resources for its id (see [`AwsDriver::claim`]), then writes the
    /// record on its security group. At create nothing is in state yet, so nothing is claimed;
    /// what the create launches carries the id already.
    async fn record_cluster(&self, record: &ClusterRecord) -> Result<(), DriverError> {
        let report = self.claim(record).await?;
        self.record_cluster_tags(record).await?;
        if !report.instances.is_empty() || report.security_group.is_some() {
            tracing::info!(
                cluster = record.name,
                cluster_id = record.cluster_id,
                instances = ?report.instances,
                volumes = report.volumes.len(),
                security_group = report.security_group.as_deref().unwrap_or(""),
                "claimed the resources of a cluster made before cluster ids"
            );
        }
        Ok(())
    }

    async fn discover(
        &self,
        cluster_id: &str,
    ) -> Result<Option<Vec<(NodeHandle, NodeRecord)>>, DriverError> {
        if self.config.cluster_id.as_deref() != Some(cluster_id) {
            return Err(DriverError::NotOurs {
                what: format!("cluster {}", self.config.cluster_name),
                owner: cluster_id.to_string(),
            });
        }
        Ok(Some(self.discover_nodes().await?))
    }

    async fn record_node(&self, node: &NodeHandle, record: &NodeRecord) -> Result<(), DriverError> {
        Ok(self.record_node_tag(node, record).await?)
    }

    async fn find_clusters(&self) -> Result<Vec<ClusterRecord>, DriverError> {
        Ok(self.cluster_records().await?)
    }

    async fn outdated_hosts(&self, hosts: &[HostHandle]) -> Result<Vec<OutdatedHost>, DriverError> {
        Ok(self.image_drift(hosts).await?)
    }

    async fn lost_hosts(&self, hosts: &[HostHandle]) -> Result<Vec<String>, DriverError> {
        self.lost_host_names(hosts).await
    }
}

pub(crate) fn format_address(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}
