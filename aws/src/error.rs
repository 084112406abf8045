//! Errors of the aws driver. Each names the setting ([`Field`]) or the EC2 call that failed,
//! and what to do about it. Fields are typed: the provider renders them as its own attribute
//! paths and names; this crate displays them with its own setting names.

use std::fmt;
use std::time::Duration;

/// A setting of the driver ([`crate::AwsDriverConfig`], shown as `aws.<field>`), of the
/// connection ([`crate::AwsSettings`]) or of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Region,
    Endpoint,
    AssumeRoleArn,
    ClusterName,
    ClusterId,
    /// The list, or one subnet of it.
    SubnetIds {
        index: Option<usize>,
    },
    InstanceType,
    Ami,
    AllowedCidrs {
        index: usize,
    },
    MonitoringCidrs {
        index: usize,
    },
    AllowedSecurityGroupIds {
        index: usize,
    },
    DataVolumeSize,
    MaxNodesPerHost,
    RedisPackage,
    Tag {
        key: String,
    },
    /// The tags as a whole (their count).
    Tags,
    /// `create`, `update` or `delete`.
    Timeout {
        phase: &'static str,
    },
    /// The nodes' extra redis.conf settings (they go into the instances' user data).
    RedisConfig,
    VpcId,
    /// An instance profile the user gives the nodes instead of the driver's own.
    InstanceProfile,
    /// The cluster password (the aws driver requires one).
    Password,
    /// The test-only address map (`ADDRESS_MAP_ENV`).
    AddressMap,
    /// The configuration endpoint's Route 53 hosted zone, name and TTL.
    EndpointZone,
    EndpointName,
    EndpointTtl,
    /// The user's own TLS certificate (`tls.cert_pem`), which every node presents.
    TlsCert,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Region => f.write_str("region"),
            Field::Endpoint => f.write_str("endpoint"),
            Field::AssumeRoleArn => f.write_str("assume_role.role_arn"),
            Field::ClusterName => f.write_str("aws.cluster_name"),
            Field::ClusterId => f.write_str("cluster_id"),
            Field::SubnetIds { index: None } => f.write_str("aws.subnet_ids"),
            Field::SubnetIds { index: Some(i) } => write!(f, "aws.subnet_ids[{i}]"),
            Field::InstanceType => f.write_str("aws.instance_type"),
            Field::Ami => f.write_str("aws.ami"),
            Field::AllowedCidrs { index } => write!(f, "aws.allowed_cidrs[{index}]"),
            Field::MonitoringCidrs { index } => write!(f, "aws.monitoring_cidrs[{index}]"),
            Field::AllowedSecurityGroupIds { index } => {
                write!(f, "aws.allowed_security_group_ids[{index}]")
            }
            Field::DataVolumeSize => f.write_str("aws.data_volume.size_gib"),
            Field::MaxNodesPerHost => f.write_str("aws.max_nodes_per_host"),
            Field::RedisPackage => f.write_str("aws.redis_package"),
            Field::Tag { key } => write!(f, "aws.tags.{key}"),
            Field::Tags => f.write_str("aws.tags"),
            Field::Timeout { phase } => write!(f, "timeouts.{phase}"),
            Field::RedisConfig => f.write_str("redis_config"),
            Field::VpcId => f.write_str("vpc_id"),
            Field::InstanceProfile => f.write_str("aws.instance_profile"),
            Field::Password => f.write_str("password"),
            Field::AddressMap => f.write_str(crate::settings::ADDRESS_MAP_ENV),
            Field::EndpointZone => f.write_str("configuration_endpoint.hosted_zone_id"),
            Field::EndpointName => f.write_str("configuration_endpoint.name"),
            Field::EndpointTtl => f.write_str("configuration_endpoint.ttl"),
            Field::TlsCert => f.write_str("tls.cert_pem"),
        }
    }
}

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// A setting is missing or malformed.
    #[error("{field}: {message}")]
    Config { field: Field, message: String },

    #[error("{}: subnet {subnet_id} not found in region {region}; check the id and the provider's region", Field::SubnetIds { index: Some(*index) })]
    SubnetNotFound {
        index: usize,
        subnet_id: String,
        region: String,
    },

    #[error("{}: the subnets are in several VPCs ({vpcs}); all subnets of a cluster must be in one VPC", Field::SubnetIds { index: None })]
    MixedVpcs { vpcs: String },

    #[error("{}: no subnet in zone {zone}, where the plan puts host {host}; add a subnet of {zone} to aws.subnet_ids or take the zone out of the placement", Field::SubnetIds { index: None })]
    NoSubnetInZone { zone: String, host: String },

    #[error("{}: {instance_type} is not offered in region {region} (or has no memory figure); choose an instance type listed by `aws ec2 describe-instance-types`", Field::InstanceType)]
    UnknownInstanceType {
        instance_type: String,
        region: String,
    },

    #[error(
        "{}: VPC {vpc_id} not found in region {region}; check the id and the provider's region",
        Field::VpcId
    )]
    VpcNotFound { vpc_id: String, region: String },

    /// An EC2 call failed.
    #[error("{operation}: {message}")]
    Api {
        operation: &'static str,
        code: Option<String>,
        message: String,
    },

    /// EC2 answered without a field it always sends.
    #[error("{operation}: the response has no {field}")]
    MissingField {
        operation: &'static str,
        field: &'static str,
    },

    #[error("{}: {what} did not happen within {after:?}; raise timeouts.{phase} or look at the instance in the EC2 console", Field::Timeout { phase })]
    Timeout {
        phase: &'static str,
        what: String,
        after: Duration,
    },

    #[error("the security group name {name} is taken in VPC {vpc_id} by a group that is not this cluster's (its tags differ); redisha never adopts it. Delete or rename that group, or give the cluster another name")]
    GroupNameTaken { name: String, vpc_id: String },

    #[error("{what} carries cluster id {owner}, not this cluster's {ours}; redisha never tags or touches another cluster's resources. Find which Terraform state owns cluster {owner}; if that is this one (an earlier apply was cut short while giving it an id), restore that cluster_id in this resource's state")]
    NotOurs {
        what: String,
        owner: String,
        ours: String,
    },

    /// The same failure as reported for another host (errors are not `Clone`).
    #[error("{0}")]
    Shared(String),

    /// A node command (SSM Run Command) ended without success on its instance.
    #[error("{0}")]
    RunCommand(Box<RunCommandFailure>),

    #[error("host {host}: instance {instance_id} is {state}; {hint}")]
    InstanceFailed {
        host: String,
        instance_id: String,
        state: String,
        hint: String,
    },
}

/// What [`AwsError::RunCommand`] reports (boxed: the error type stays small).
#[derive(Debug, thiserror::Error)]
#[error("instance {instance_id} (host {host}): {action} of node {node} failed: run command {command_id} ended {status}; its stderr ends with: {stderr_tail}. Look at the command in the SSM console (Run Command history) and at `journalctl -u redisha-node@*` on the instance")]
pub struct RunCommandFailure {
    pub instance_id: String,
    pub host: String,
    pub node: String,
    pub action: &'static str,
    pub command_id: String,
    pub status: String,
    pub stderr_tail: String,
}

impl AwsError {
    pub(crate) fn config(field: Field, message: impl Into<String>) -> Self {
        AwsError::Config {
            field,
            message: message.into(),
        }
    }

    /// The setting at fault, if the error is about one.
    pub fn field(&self) -> Option<Field> {
        match self {
            AwsError::Config { field, .. } => Some(field.clone()),
            AwsError::SubnetNotFound { index, .. } => Some(Field::SubnetIds {
                index: Some(*index),
            }),
            AwsError::MixedVpcs { .. } | AwsError::NoSubnetInZone { .. } => {
                Some(Field::SubnetIds { index: None })
            }
            AwsError::UnknownInstanceType { .. } => Some(Field::InstanceType),
            AwsError::VpcNotFound { .. } => Some(Field::VpcId),
            AwsError::Timeout { phase, .. } => Some(Field::Timeout { phase }),
            _ => None,
        }
    }

    /// What is wrong, without the setting's name (for callers that name it their way).
    pub fn message(&self) -> String {
        let text = self.to_string();
        match self.field() {
            Some(field) => match text.strip_prefix(&format!("{field}: ")) {
                Some(rest) => rest.to_string(),
                None => text,
            },
            None => text,
        }
    }

    /// The EC2 error code (e.g. `InvalidSubnetID.NotFound`), for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// Turns an SDK error into [`AwsError::Api`], keeping EC2's code and message (or, for
/// transport errors, the whole error chain: "dispatch failure: connection refused").
pub(crate) fn api<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    move |err| {
        let code = err.code().map(str::to_string);
        let message = match (err.code(), err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            _ => DisplayErrorContext(&err).to_string(),
        };
        AwsError::Api {
            operation,
            code,
            message,
        }
    }
}

impl From<AwsError> for redisha_cluster::DriverError {
    fn from(err: AwsError) -> Self {
        redisha_cluster::DriverError::Other(err.to_string())
    }
}
