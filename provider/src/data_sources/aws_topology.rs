//! `data "redisha_aws_topology"`: the availability zones and subnets of a VPC, to see which
//! zones a cluster can span and to feed `redisha_placement` for a dry run. Reads only.

use std::collections::BTreeMap;

use async_trait::async_trait;
use redisha_aws::{AwsError, Topology};

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::{Context, RawDataSource};
use crate::provider_config::aws_settings;
use crate::tfplugin::schema::{Attribute, Block, Schema};
use crate::tfplugin::types::Type;
use crate::tfplugin::value::Value;

pub struct AwsTopologyDataSource;

pub const TYPE_NAME: &str = "redisha_aws_topology";

fn zone_type() -> Type {
    Type::object([
        ("name", Type::String),
        ("id", Type::String),
        ("subnet_ids", Type::list(Type::String)),
    ])
}

fn subnet_type() -> Type {
    Type::object([
        ("id", Type::String),
        ("zone", Type::String),
        ("cidr", Type::String),
        ("available_ips", Type::Number),
    ])
}

pub fn schema() -> Schema {
    let block = Block::new(
        "The availability zones of the provider's region that hold subnets of a VPC, with those subnets. \
         Reads only (DescribeVpcs, DescribeAvailabilityZones, DescribeSubnets).",
    )
    .attribute(Attribute::required("vpc_id", Type::String).describe("The VPC whose subnets are listed, e.g. `vpc-0a1b2c3d4e5f60789`."))
    .attribute(Attribute::computed("id", Type::String).describe("The VPC id."))
    .attribute(Attribute::computed("zones", Type::list(zone_type())).describe(
        "Zones with at least one subnet of the VPC, sorted by name: `name` (e.g. `eu-west-1a`), `id` \
         (e.g. `euw1-az2`, the same physical zone in every account) and `subnet_ids` (sorted).",
    ))
    .attribute(Attribute::computed("subnets", Type::list(subnet_type())).describe(
        "Every subnet of the VPC, by zone then id: `id`, `zone` (name), `cidr`, `available_ips` (each instance takes one).",
    ))
    .attribute(Attribute::computed("zone_names", Type::list(Type::String)).describe("The names of `zones`, in the same order."));
    Schema::new(0, block)
}

fn vpc_id(config: &Value) -> Result<String, Diagnostic> {
    let at = AttrPath::attr("vpc_id");
    match config.get("vpc_id").as_str() {
        Some(id) if id.starts_with("vpc-") && id.len() > 4 => Ok(id.to_string()),
        Some(id) => Err(Diagnostic::error(
            "Invalid vpc_id",
            format!("vpc_id: {id:?} is not a VPC id; write it as vpc-0123abcd"),
        )
        .at(at)),
        None => Err(Diagnostic::error(
            "Missing vpc_id",
            "vpc_id: give the VPC whose subnets to list",
        )
        .at(at)),
    }
}

/// The computed attributes for a topology.
pub fn computed(topology: &Topology) -> BTreeMap<String, Value> {
    let zones = topology.zones.iter().map(|z| {
        Value::object([
            ("name", Value::from(z.name.as_str())),
            ("id", Value::from(z.id.as_str())),
            (
                "subnet_ids",
                Value::strings(z.subnets.iter().map(|s| s.id.as_str())),
            ),
        ])
    });
    let subnets = topology.zones.iter().flat_map(|z| {
        z.subnets.iter().map(move |s| {
            Value::object([
                ("id", Value::from(s.id.as_str())),
                ("zone", Value::from(z.name.as_str())),
                ("cidr", Value::from(s.cidr.as_str())),
                (
                    "available_ips",
                    Value::from(i64::from(s.available_ips.max(0)) as u64),
                ),
            ])
        })
    });
    BTreeMap::from([
        ("id".to_string(), Value::from(topology.vpc_id.as_str())),
        ("zones".to_string(), Value::list(zones.collect::<Vec<_>>())),
        (
            "subnets".to_string(),
            Value::list(subnets.collect::<Vec<_>>()),
        ),
        (
            "zone_names".to_string(),
            Value::strings(topology.zones.iter().map(|z| z.name.as_str())),
        ),
    ])
}

fn aws_error(e: AwsError) -> Diagnostic {
    let at = match &e {
        AwsError::VpcNotFound { .. } => AttrPath::attr("vpc_id"),
        AwsError::Config { field, .. } if field == "vpc_id" => AttrPath::attr("vpc_id"),
        _ => AttrPath::root(),
    };
    Diagnostic::error("Cannot read the VPC's zones and subnets", e.to_string()).at(at)
}

#[async_trait]
impl RawDataSource for AwsTopologyDataSource {
    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        schema()
    }

    async fn validate(&self, _ctx: &Context, config: &Value) -> Diagnostics {
        if config.get("vpc_id").is_unknown() {
            return Diagnostics::new();
        }
        match vpc_id(config) {
            Ok(_) => Diagnostics::new(),
            Err(d) => d.into(),
        }
    }

    async fn read(&self, ctx: &Context, config: &Value) -> Result<Value, Diagnostics> {
        let vpc = vpc_id(config)?;
        let settings = aws_settings(ctx, "data \"redisha_aws_topology\"")?;
        let client = redisha_aws::client(&settings).await.map_err(aws_error)?;
        let topology = redisha_aws::topology(&client, &vpc)
            .await
            .map_err(aws_error)?;
        Ok(schema().block.fill(config, computed(&topology)))
    }
}
