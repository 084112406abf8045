//! redisha-aws: the `aws` driver (EC2 instances across availability zones, with
//! aws-sdk-ec2) and the `redisha_aws_topology` lookup.
//!
//! - [`AwsSettings`] and [`client()`]: the provider's connection to EC2.
//! - [`AwsDriverConfig`]: the `aws { }` block of `redisha_cluster`.
//! - [`AwsDriver`]: implements [`redisha_cluster::Driver`], plus `ensure_hosts`,
//!   `read_hosts` (drift), `destroy`, `claim` (a cluster made before ids) and
//!   `host_memory_mib`; it acts only on what carries the cluster's id in its VPC.
//! - [`power`]: a zone's instances stopped and started again (the failure drills).
//! - [`candidates`]: the planner request (the subnets' zones, candidate instances per zone).
//! - [`topology()`]: zones and subnets of a VPC.
//! - `testing` (feature `testing`, for tests only): moto_server, an EC2 client for it and a
//!   VPC fixture.

pub mod candidates;
pub mod client;
pub mod dns_endpoint;
pub mod driver;
pub mod error;
pub mod instance_profile;
pub mod instances;
pub mod node_commands;
pub mod node_secrets;
pub mod power;
mod probe;
pub mod records;
pub mod run_command;
pub mod s3_store;
pub mod secrets;
pub mod security;
pub mod security_group;
pub mod sentinel_procs;
pub mod sentinel_records;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls_material;
pub mod topology;
pub mod user_data;

pub use client::{client, AwsClients};
pub use driver::{AwsDriver, ClaimReport, DestroyReport, HostStatus, HostsReport, IdCarriers};
pub use error::AwsError;
pub use s3_store::S3Store;
pub use settings::{
    AddressOverride, AssumeRole, AwsDriverConfig, AwsSettings, DataVolume, Timeouts,
    ADDRESS_MAP_ENV,
};
pub use topology::{topology, Subnet, Topology, Zone};
