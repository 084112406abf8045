//! What the user configures: the provider's AWS connection ([`AwsSettings`]) and the
//! `aws { }` driver block of `redisha_cluster` ([`AwsDriverConfig`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{AwsError, Field};

/// The port of a host's first node on EC2; node `i` of a host listens on `REDIS_BASE_PORT + i`
/// and its cluster bus on that plus [`CLUSTER_BUS_OFFSET`].
pub const REDIS_BASE_PORT: u16 = 6379;
/// Redis Cluster's bus port is the client port plus this.
pub const CLUSTER_BUS_OFFSET: u16 = 10000;
/// Each node's metrics exporter listens this far above the node's port.
pub const EXPORTER_PORT_OFFSET: u16 = redisha_cluster::local::DEFAULT_EXPORTER_PORT_OFFSET;
/// The environment variable the test harness sets to reach loopback stand-ins instead of the
/// (invented) private addresses of emulated instances. See [`AwsDriverConfig::address_override`].
/// Read only by builds with the feature `test-address-map` ([`AwsDriverConfig::with_test_hooks`]).
pub const ADDRESS_MAP_ENV: &str = "REDISHA_AWS_TEST_ADDRESS_MAP";

/// The provider's connection to EC2. Credentials come from the standard AWS chain
/// (environment, shared profile, SSO, container or instance role).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsSettings {
    pub region: String,
    /// An endpoint URL replacing EC2's public one: a VPC interface endpoint, or an emulator.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A role to assume (through STS) with the chain's credentials.
    #[serde(default)]
    pub assume_role: Option<AssumeRole>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssumeRole {
    pub role_arn: String,
    /// Defaults to `redisha`.
    #[serde(default)]
    pub session_name: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
}

impl AwsSettings {
    pub fn validate(&self) -> Result<(), AwsError> {
        if self.region.trim().is_empty() {
            return Err(AwsError::config(
                Field::Region,
                "is empty; set the provider's region (e.g. \"us-east-1\")",
            ));
        }
        if !self
            .region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(AwsError::config(
                Field::Region,
                format!(
                    "{:?} is not a region name; use one like \"eu-west-1\"",
                    self.region
                ),
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(AwsError::config(
                    Field::Endpoint,
                    format!("{endpoint:?} is not a URL; write it as https://host[:port]"),
                ));
            }
        }
        if let Some(role) = &self.assume_role {
            if !role.role_arn.starts_with("arn:") {
                return Err(AwsError::config(
                    Field::AssumeRoleArn,
                    format!(
                        "{:?} is not an ARN; write it as arn:aws:iam::ACCOUNT:role/NAME",
                        role.role_arn
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The EBS volume that holds Redis data on each instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataVolume {
    /// gp3 size in GiB.
    pub size_gib: i32,
    /// Encrypted with the account's default EBS key (or `kms_key_id`).
    #[serde(default = "yes")]
    pub encrypted: bool,
    #[serde(default)]
    pub kms_key_id: Option<String>,
}

fn yes() -> bool {
    true
}

/// How long create, update and delete may wait for EC2 and Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub create: Duration,
    pub update: Duration,
    pub delete: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            create: Duration::from_secs(20 * 60),
            update: Duration::from_secs(20 * 60),
            delete: Duration::from_secs(15 * 60),
        }
    }
}

/// Where the driver reaches a host's nodes instead of the instance's private address.
///
/// Node `i` of the host is reached at `ip:base_port + i`. Meant for tests against an EC2
/// emulator, whose instances have invented private addresses that nothing listens on: each
/// host maps to a loopback stand-in running real redis-server processes. In production leave
/// it empty; the driver then uses the instance's private IP and port 6379 + i.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressOverride {
    pub ip: IpAddr,
    pub base_port: u16,
}

/// The `aws { }` driver block of `redisha_cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsDriverConfig {
    /// The cluster's name: tags, the security group's name and client tokens derive from it.
    pub cluster_name: String,
    /// The cluster's unique id (`redisha_cluster::identity::new_cluster_id`), made at create.
    /// With it, everything the driver makes carries it (tag `redisha:cluster-id`) and every
    /// lookup matches it: a name is not unique across VPCs or Terraform states, the id is.
    /// Without it (a plan before create, a cluster made before ids) the driver finds only what
    /// carries the name and no id; the provider then only reads.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Subnets to launch into; their zones are the cluster's zones. Several may share a zone.
    pub subnet_ids: Vec<String>,
    pub instance_type: String,
    pub ami: String,
    #[serde(default)]
    pub key_name: Option<String>,
    /// CIDRs besides the cluster itself that may reach the Redis ports.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    /// CIDRs that may reach the nodes' metrics exporters (node port + [`EXPORTER_PORT_OFFSET`]).
    #[serde(default)]
    pub monitoring_cidrs: Vec<String>,
    /// Security groups (of the cluster's VPC) whose members may reach the Redis ports, such as
    /// the application's. Never the cluster bus ports.
    #[serde(default)]
    pub allowed_security_group_ids: Vec<String>,
    /// An existing instance profile (name) for the nodes, instead of the role and profile the
    /// driver makes per cluster. Its role must allow `ssm:GetParameter` on the cluster's
    /// password parameter and carry AmazonSSMManagedInstanceCore (docs/resources/cluster.md).
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// An existing placement group (strategy `spread`) to launch into.
    #[serde(default)]
    pub placement_group: Option<String>,
    #[serde(default)]
    pub data_volume: Option<DataVolume>,
    /// Extra tags on instances, volumes and the security group.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The most nodes one instance runs; the security group opens 6379..6379+max and the bus
    /// ports 16379... Raised automatically to the largest host of a plan.
    #[serde(default = "one")]
    pub max_nodes_per_host: u16,
    /// The redis-server package to install (Debian/Ubuntu `redis-server`, Amazon Linux `redis6`
    /// or `redis7`); the user data uses whichever package manager the AMI has.
    #[serde(default = "default_redis_package")]
    pub redis_package: String,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Test only: host name → loopback stand-in. See [`AddressOverride`] and
    /// [`AwsDriverConfig::with_test_hooks`].
    #[serde(default)]
    pub address_override: BTreeMap<String, AddressOverride>,
    /// How often to poll EC2 and Redis while waiting.
    #[serde(default = "default_poll")]
    pub poll_interval: Duration,
}

fn one() -> u16 {
    1
}

/// The engine package first boot installs when `redis_package` is not set (Debian's).
pub const DEFAULT_REDIS_PACKAGE: &str = "redis-server";

fn default_redis_package() -> String {
    DEFAULT_REDIS_PACKAGE.into()
}

fn default_poll() -> Duration {
    Duration::from_secs(5)
}

impl AwsDriverConfig {
    /// A config with the required fields and defaults for the rest.
    pub fn new(
        cluster_name: impl Into<String>,
        subnet_ids: Vec<String>,
        instance_type: impl Into<String>,
        ami: impl Into<String>,
    ) -> Self {
        AwsDriverConfig {
            cluster_name: cluster_name.into(),
            cluster_id: None,
            subnet_ids,
            instance_type: instance_type.into(),
            ami: ami.into(),
            key_name: None,
            allowed_cidrs: Vec::new(),
            monitoring_cidrs: Vec::new(),
            allowed_security_group_ids: Vec::new(),
            placement_group: None,
            instance_profile: None,
            data_volume: None,
            tags: BTreeMap::new(),
            max_nodes_per_host: 1,
            redis_package: default_redis_package(),
            timeouts: Timeouts::default(),
            address_override: BTreeMap::new(),
            poll_interval: default_poll(),
        }
    }

    /// Test builds (feature `test-address-map`): adds the overrides in [`ADDRESS_MAP_ENV`], if
    /// set: `host-a=127.0.1.1:7000,host-b=127.0.1.2` (the port defaults to 6379). Other
    /// builds do not have the hook: the config is returned as it is.
    pub fn with_test_hooks(self) -> Result<Self, AwsError> {
        #[cfg(feature = "test-address-map")]
        {
            let mut config = self;
            if let Ok(text) = std::env::var(ADDRESS_MAP_ENV) {
                config.address_override.extend(parse_address_map(&text)?);
            }
            Ok(config)
        }
        #[cfg(not(feature = "test-address-map"))]
        Ok(self)
    }

    pub fn validate(&self) -> Result<(), AwsError> {
        if self.cluster_name.is_empty()
            || self.cluster_name.len() > 64
            || !self
                .cluster_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(AwsError::config(
                Field::ClusterName,
                "must be 1-64 letters, digits, '-' or '_' (it names the security group and tags)",
            ));
        }
        if let Some(id) = &self.cluster_id {
            if !redisha_cluster::identity::is_cluster_id(id) {
                return Err(AwsError::config(
                    Field::ClusterId,
                    format!("{id:?} is not a cluster id (16 lowercase hex digits, made by redisha at create); restore the resource's cluster_id from its state"),
                ));
            }
        }
        if self.subnet_ids.is_empty() {
            return Err(AwsError::config(
                Field::SubnetIds { index: None },
                "is empty; list at least one subnet per zone the cluster uses",
            ));
        }
        for (i, id) in self.subnet_ids.iter().enumerate() {
            if !id.starts_with("subnet-") {
                return Err(AwsError::config(
                    Field::SubnetIds { index: Some(i) },
                    format!("{id:?} is not a subnet id; write it as subnet-0123abcd"),
                ));
            }
            if self.subnet_ids[..i].contains(id) {
                return Err(AwsError::config(
                    Field::SubnetIds { index: Some(i) },
                    format!("{id} is listed twice; remove the duplicate"),
                ));
            }
        }
        if self.instance_type.trim().is_empty() {
            return Err(AwsError::config(
                Field::InstanceType,
                "is empty; set an instance type such as \"r7g.large\"",
            ));
        }
        if !self.ami.starts_with("ami-") {
            return Err(AwsError::config(
                Field::Ami,
                format!("{:?} is not an AMI id; write it as ami-0123abcd", self.ami),
            ));
        }
        type FieldAt = fn(usize) -> Field;
        let lists: [(&Vec<String>, FieldAt); 2] = [
            (&self.allowed_cidrs, |index| Field::AllowedCidrs { index }),
            (&self.monitoring_cidrs, |index| Field::MonitoringCidrs {
                index,
            }),
        ];
        for (list, field) in lists {
            for (i, cidr) in list.iter().enumerate() {
                if !is_cidr(cidr) {
                    return Err(AwsError::config(
                        field(i),
                        format!("{cidr:?} is not an IPv4 or IPv6 CIDR such as 10.0.0.0/16"),
                    ));
                }
            }
        }
        for (i, id) in self.allowed_security_group_ids.iter().enumerate() {
            if !id.starts_with("sg-") || id.len() < 4 {
                return Err(AwsError::config(
                    Field::AllowedSecurityGroupIds { index: i },
                    format!("{id:?} is not a security group id; write it as sg-0123abcd"),
                ));
            }
        }
        if let Some(profile) = &self.instance_profile {
            if profile.is_empty()
                || profile.len() > 128
                || !profile
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
            {
                return Err(AwsError::config(
                    Field::InstanceProfile,
                    format!("{profile:?} is not an instance profile name (1-128 letters, digits and +=,.@_-); give its name, not its ARN"),
                ));
            }
        }
        if let Some(volume) = &self.data_volume {
            if !(1..=16384).contains(&volume.size_gib) {
                return Err(AwsError::config(
                    Field::DataVolumeSize,
                    format!("{} GiB is outside gp3's 1-16384 GiB", volume.size_gib),
                ));
            }
        }
        if self.max_nodes_per_host == 0 || self.max_nodes_per_host > 1000 {
            return Err(AwsError::config(
                Field::MaxNodesPerHost,
                "must be between 1 and 1000",
            ));
        }
        if self.redis_package.is_empty()
            || !self
                .redis_package
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
        {
            return Err(AwsError::config(
                Field::RedisPackage,
                "must be a package name such as redis-server",
            ));
        }
        for (key, value) in &self.tags {
            if key.is_empty() || key.len() > 128 || value.len() > 256 {
                return Err(AwsError::config(
                    Field::Tag { key: key.clone() },
                    "tag keys are 1-128 and values 0-256 characters",
                ));
            }
            if key.starts_with("aws:") || key.starts_with("redisha:") || key == "Name" {
                return Err(AwsError::config(
                    Field::Tag { key: key.clone() },
                    "keys starting with aws: or redisha:, and Name, are set by redisha; choose another key",
                ));
            }
        }
        for (name, label) in [
            (&self.timeouts.create, "create"),
            (&self.timeouts.update, "update"),
            (&self.timeouts.delete, "delete"),
        ] {
            if name.is_zero() {
                return Err(AwsError::config(
                    Field::Timeout { phase: label },
                    "must be longer than zero",
                ));
            }
        }
        Ok(())
    }
}

fn is_cidr(text: &str) -> bool {
    let Some((ip, bits)) = text.split_once('/') else {
        return false;
    };
    let (Ok(ip), Ok(bits)) = (ip.parse::<IpAddr>(), bits.parse::<u8>()) else {
        return false;
    };
    match ip {
        IpAddr::V4(_) => bits <= 32,
        IpAddr::V6(_) => bits <= 128,
    }
}

/// Parses `host=ip[:port],host=ip[:port]` (see [`ADDRESS_MAP_ENV`]).
#[cfg(any(test, feature = "test-address-map"))]
pub fn parse_address_map(text: &str) -> Result<BTreeMap<String, AddressOverride>, AwsError> {
    let mut map = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || {
            AwsError::config(
                Field::AddressMap,
                format!("{entry:?} is not host=ip or host=ip:port (e.g. redis-a-0=127.0.1.1:6379)"),
            )
        };
        let (host, target) = entry.split_once('=').ok_or_else(bad)?;
        let over = if let Ok(sock) = target.parse::<std::net::SocketAddr>() {
            AddressOverride {
                ip: sock.ip(),
                base_port: sock.port(),
            }
        } else {
            AddressOverride {
                ip: target.parse().map_err(|_| bad())?,
                base_port: REDIS_BASE_PORT,
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        map.insert(host.to_string(), over);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AwsDriverConfig {
        AwsDriverConfig::new(
            "shop",
            vec!["subnet-1".into(), "subnet-2".into()],
            "r7g.large",
            "ami-123",
        )
    }

    #[test]
    fn a_valid_config_passes() {
        assert!(config().validate().is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let mut c = config();
        c.subnet_ids.push("sub-9".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("aws.subnet_ids[2]: "), "{err}");

        let mut c = config();
        c.allowed_cidrs = vec!["10.0.0.0/8".into(), "10.0.0.0".into()];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("aws.allowed_cidrs[1]: "), "{err}");

        let mut c = config();
        c.tags.insert("redisha:cluster".into(), "x".into());
        assert!(c.validate().is_err());

        let mut c = config();
        c.subnet_ids.push("subnet-1".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");

        let mut c = config();
        c.cluster_id = Some("../../etc".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("cluster_id: "), "{err}");
        c.cluster_id = Some("0123456789abcdef".into());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn settings_reject_bad_region_endpoint_and_role() {
        let mut s = AwsSettings {
            region: "us-east-1".into(),
            ..Default::default()
        };
        assert!(s.validate().is_ok());
        s.endpoint = Some("localhost:5000".into());
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("endpoint: "));
        s.endpoint = None;
        s.region = "US East".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("region: "));
        s.region = "us-east-1".into();
        s.assume_role = Some(AssumeRole {
            role_arn: "admin".into(),
            ..Default::default()
        });
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("assume_role.role_arn: "));
    }

    #[test]
    fn address_map_parses_ip_and_port() {
        let map = parse_address_map("a=127.0.1.1:7000, b=127.0.1.2").unwrap();
        assert_eq!(map["a"].base_port, 7000);
        assert_eq!(map["b"].base_port, REDIS_BASE_PORT);
        assert_eq!(map["b"].ip.to_string(), "127.0.1.2");
        assert!(parse_address_map("a").is_err());
        assert!(parse_address_map("a=not-an-ip").is_err());
    }
}
