//! `data "redisha_aws_topology"`: the availability zones and subnets of a VPC, to see which
//! zones a cluster can span and to feed `redisha_placement` for a dry run. Reads only.

use async_trait::async_trait;
use redisha_aws::{AwsError, Topology};

use crate::aws_errors;
use crate::model;
use crate::provider_config::aws_settings;
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::{Attr, Context, DataSource};

pub struct AwsTopologyDataSource;

pub const TYPE_NAME: &str = "redisha_aws_topology";

model! {
    /// One zone of `zones`.
    pub struct ZoneValue {
        pub name: Attr<String>,
        pub id: Attr<String>,
        pub subnet_ids: Attr<Vec<String>>,
    }
}

model! {
    /// One subnet of `subnets`.
    pub struct SubnetValue {
        pub id: Attr<String>,
        pub zone: Attr<String>,
        pub cidr: Attr<String>,
        pub available_ips: Attr<u64>,
    }
}

model! {
    pub struct AwsTopologyModel(
        "The availability zones of the provider's region that hold subnets of a VPC, with those subnets. \
         Reads only (DescribeVpcs, DescribeAvailabilityZones, DescribeSubnets)."
    ) {
        pub vpc_id: Attr<String> = required("The VPC whose subnets are listed, e.g. `vpc-0a1b2c3d4e5f60789`."),
        pub id: Attr<String> = computed("The VPC id."),
        pub zones: Attr<Vec<ZoneValue>> = computed(
            "Zones with at least one subnet of the VPC, sorted by name: `name` (e.g. `eu-west-1a`), `id` \
             (e.g. `euw1-az2`, the same physical zone in every account) and `subnet_ids` (sorted).",
        ),
        pub subnets: Attr<Vec<SubnetValue>> = computed(
            "Every subnet of the VPC, by zone then id: `id`, `zone` (name), `cidr`, `available_ips` (each instance takes one).",
        ),
        pub zone_names: Attr<Vec<String>> = computed("The names of `zones`, in the same order."),
    }
}

fn vpc_id(vpc_id: &Attr<String>) -> Result<String, Diagnostic> {
    let at = AttrPath::attr("vpc_id");
    match vpc_id.value() {
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

/// The config with the computed attributes of a topology.
pub fn with_topology(config: AwsTopologyModel, topology: &Topology) -> AwsTopologyModel {
    let zones = topology.zones.iter().map(|z| ZoneValue {
        name: z.name.clone().into(),
        id: z.id.clone().into(),
        subnet_ids: Attr::Known(z.subnets.iter().map(|s| s.id.clone()).collect()),
    });
    let subnets = topology.zones.iter().flat_map(|z| {
        z.subnets.iter().map(move |s| SubnetValue {
            id: s.id.clone().into(),
            zone: z.name.clone().into(),
            cidr: s.cidr.clone().into(),
            available_ips: Attr::Known(i64::from(s.available_ips.max(0)) as u64),
        })
    });
    AwsTopologyModel {
        id: topology.vpc_id.clone().into(),
        zones: Attr::Known(zones.collect()),
        subnets: Attr::Known(subnets.collect()),
        zone_names: Attr::Known(topology.zones.iter().map(|z| z.name.clone()).collect()),
        ..config
    }
}

fn aws_error(e: AwsError) -> Diagnostic {
    let vpc_id = AttrPath::attr("vpc_id");
    aws_errors::diagnostic("Cannot read the VPC's zones and subnets", &e, |p| {
        *p == vpc_id
    })
}

#[async_trait]
impl DataSource for AwsTopologyDataSource {
    type Model = AwsTopologyModel;

    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    async fn validate(&self, _ctx: &Context, config: &AwsTopologyModel) -> Diagnostics {
        if config.vpc_id.is_unknown() {
            return Diagnostics::new();
        }
        match vpc_id(&config.vpc_id) {
            Ok(_) => Diagnostics::new(),
            Err(d) => d.into(),
        }
    }

    async fn read(
        &self,
        ctx: &Context,
        config: AwsTopologyModel,
    ) -> Result<AwsTopologyModel, Diagnostics> {
        let vpc = vpc_id(&config.vpc_id)?;
        let settings = aws_settings(ctx, "data \"redisha_aws_topology\"")?;
        let client = redisha_aws::client(&settings).await.map_err(aws_error)?;
        let topology = redisha_aws::topology(&client, &vpc)
            .await
            .map_err(aws_error)?;
        Ok(with_topology(config, &topology))
    }
}
