//! The aws crate's errors in this provider's words: its typed [`Field`]s become the attribute
//! paths and names of the HCL (`aws.max_nodes_per_instance` for the driver's
//! `max_nodes_per_host`, `name` for its cluster name), so the aws crate knows no HCL names.

use redisha_aws::error::Field;
use redisha_aws::AwsError;

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic};

/// Where a field is in the provider block's or a resource's schema, and the name the
/// diagnostic text gives it; `None` for what the schema does not have (the test address map).
pub fn hcl(field: &Field) -> Option<AttrPath> {
    let aws = || AttrPath::attr("aws");
    Some(match field {
        Field::Region => AttrPath::attr("region"),
        Field::Endpoint => AttrPath::attr("endpoint"),
        Field::AssumeRoleArn => AttrPath::attr("assume_role").then("role_arn"),
        Field::ClusterName => AttrPath::attr("name"),
        Field::ClusterId => AttrPath::attr("cluster_id"),
        Field::SubnetIds { index: None } => aws().then("subnet_ids"),
        Field::SubnetIds { index: Some(i) } => aws().then("subnet_ids").index(*i),
        Field::InstanceType => aws().then("instance_type"),
        Field::Ami => aws().then("ami"),
        Field::AllowedCidrs { index } => aws().then("allowed_cidrs").index(*index),
        Field::MonitoringCidrs { index } => aws().then("monitoring_cidrs").index(*index),
        Field::AllowedSecurityGroupIds { index } => {
            aws().then("allowed_security_group_ids").index(*index)
        }
        Field::DataVolumeSize => aws().then("data_volume").then("size_gb"),
        Field::MaxNodesPerHost => aws().then("max_nodes_per_instance"),
        Field::RedisPackage => aws().then("redis_package"),
        Field::Tag { key } => aws().then("tags").key(key),
        Field::Tags => aws().then("tags"),
        Field::Timeout { phase } => AttrPath::attr("timeouts").then(phase),
        Field::RedisConfig => AttrPath::attr("redis_config"),
        Field::VpcId => AttrPath::attr("vpc_id"),
        Field::InstanceProfile => aws().then("instance_profile"),
        Field::Password => AttrPath::attr("password"),
        Field::AddressMap => return None,
        Field::EndpointZone => AttrPath::attr("configuration_endpoint").then("hosted_zone_id"),
        Field::EndpointName => AttrPath::attr("configuration_endpoint").then("name"),
        Field::EndpointTtl => AttrPath::attr("configuration_endpoint").then("ttl"),
        Field::TlsCert => AttrPath::attr("tls").then("cert_pem"),
    })
}

/// The error's text with the field named as in the HCL: `aws.subnet_ids[2]: subnet … not found`.
pub fn detail(e: &AwsError) -> String {
    match e.field().as_ref().and_then(hcl) {
        Some(path) => format!("{path}: {}", e.message()),
        None => e.to_string(),
    }
}

/// A diagnostic with `summary`, the error's text, and the attribute at fault when `at_fault`
/// says this schema has it.
pub fn diagnostic(summary: &str, e: &AwsError, at_fault: impl Fn(&AttrPath) -> bool) -> Diagnostic {
    let d = Diagnostic::error(summary, detail(e));
    match e.field().as_ref().and_then(hcl) {
        Some(path) if at_fault(&path) => d.at(path),
        _ => d,
    }
}
