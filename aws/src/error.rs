//! Errors of the aws driver. Each names the setting (`aws.…`, `region`, `timeouts.…`) or the
//! EC2 call that failed, and what to do about it.

use std::time::Duration;

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// A setting is missing or malformed.
    #[error("{field}: {message}")]
    Config { field: String, message: String },

    #[error("aws.subnet_ids[{index}]: subnet {subnet_id} not found in region {region}; check the id and the provider's region")]
    SubnetNotFound {
        index: usize,
        subnet_id: String,
        region: String,
    },

    #[error("aws.subnet_ids: the subnets are in several VPCs ({vpcs}); all subnets of a cluster must be in one VPC")]
    MixedVpcs { vpcs: String },

    #[error("aws.subnet_ids: no subnet in zone {zone}, where the plan puts host {host}; add a subnet of {zone} to aws.subnet_ids or take the zone out of the placement")]
    NoSubnetInZone { zone: String, host: String },

    #[error("aws.instance_type: {instance_type} is not offered in region {region} (or has no memory figure); choose an instance type listed by `aws ec2 describe-instance-types`")]
    UnknownInstanceType {
        instance_type: String,
        region: String,
    },

    #[error(
        "vpc_id: VPC {vpc_id} not found in region {region}; check the id and the provider's region"
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

    #[error("timeouts.{phase}: {what} did not happen within {after:?}; raise timeouts.{phase} or look at the instance in the EC2 console")]
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

    #[error("host {host}: instance {instance_id} is {state}; {hint}")]
    InstanceFailed {
        host: String,
        instance_id: String,
        state: String,
        hint: String,
    },
}

impl AwsError {
    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        AwsError::Config {
            field: field.into(),
            message: message.into(),
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
