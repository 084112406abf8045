//! The zones and subnets of a VPC (`data "redisha_aws_topology"`), and the zones of the
//! subnets a cluster is configured with.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;
use serde::{Deserialize, Serialize};

use crate::error::{api, AwsError, Field};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub vpc_id: String,
    /// Zones with at least one subnet of the VPC, by name.
    pub zones: Vec<Zone>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// The zone name, e.g. `us-east-1a` (differs between accounts for the same place).
    pub name: String,
    /// The zone id, e.g. `use1-az4` (the same place in every account).
    pub id: String,
    /// Subnets of the VPC in this zone, by id.
    pub subnets: Vec<Subnet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub id: String,
    pub cidr: String,
    pub available_ips: i32,
}

/// Lists the zones of the client's region that hold subnets of `vpc_id`, with the subnets.
pub async fn topology(client: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<Topology, AwsError> {
    let region = region_of(client);
    if !vpc_id.starts_with("vpc-") {
        return Err(AwsError::config(
            Field::VpcId,
            format!("{vpc_id:?} is not a VPC id; write it as vpc-0123abcd"),
        ));
    }
    let vpcs = client
        .describe_vpcs()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .map_err(api("DescribeVpcs"))?;
    if vpcs.vpcs().is_empty() {
        return Err(AwsError::VpcNotFound {
            vpc_id: vpc_id.to_string(),
            region,
        });
    }

    let zones = client
        .describe_availability_zones()
        .send()
        .await
        .map_err(api("DescribeAvailabilityZones"))?;
    let mut by_name: BTreeMap<String, Zone> = BTreeMap::new();
    for zone in zones.availability_zones() {
        let (Some(name), Some(id)) = (zone.zone_name(), zone.zone_id()) else {
            continue;
        };
        by_name.insert(
            name.to_string(),
            Zone {
                name: name.to_string(),
                id: id.to_string(),
                subnets: Vec::new(),
            },
        );
    }

    let subnets: Vec<aws_sdk_ec2::types::Subnet> = client
        .describe_subnets()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .map_err(api("DescribeSubnets"))?;
    for subnet in subnets {
        let (Some(id), Some(zone)) = (subnet.subnet_id(), subnet.availability_zone()) else {
            continue;
        };
        let entry = by_name.entry(zone.to_string()).or_insert_with(|| Zone {
            name: zone.to_string(),
            id: subnet
                .availability_zone_id()
                .unwrap_or_default()
                .to_string(),
            subnets: Vec::new(),
        });
        entry.subnets.push(Subnet {
            id: id.to_string(),
            cidr: subnet.cidr_block().unwrap_or_default().to_string(),
            available_ips: subnet.available_ip_address_count().unwrap_or(0),
        });
    }
    let zones = by_name
        .into_values()
        .filter(|z| !z.subnets.is_empty())
        .map(|mut z| {
            z.subnets.sort_by(|a, b| a.id.cmp(&b.id));
            z
        })
        .collect();
    Ok(Topology {
        vpc_id: vpc_id.to_string(),
        zones,
    })
}

/// A configured subnet with what EC2 says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSubnet {
    pub id: String,
    pub zone: String,
    pub vpc_id: String,
    pub available_ips: i32,
}

/// The subnets of `aws.subnet_ids` with their zones, in the configured order. All must exist
/// and be in one VPC.
pub async fn resolve_subnets(
    client: &aws_sdk_ec2::Client,
    subnet_ids: &[String],
) -> Result<Vec<ResolvedSubnet>, AwsError> {
    // Ask with a filter, not with SubnetIds: an unknown id then is missing from the answer
    // (and we can name its index) instead of failing the whole call.
    let found: Vec<aws_sdk_ec2::types::Subnet> = client
        .describe_subnets()
        .filters(
            Filter::builder()
                .name("subnet-id")
                .set_values(Some(subnet_ids.to_vec()))
                .build(),
        )
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .map_err(api("DescribeSubnets"))?;
    let mut resolved = Vec::with_capacity(subnet_ids.len());
    for (index, id) in subnet_ids.iter().enumerate() {
        let subnet = found.iter().find(|s| s.subnet_id() == Some(id.as_str()));
        let Some(subnet) = subnet else {
            return Err(AwsError::SubnetNotFound {
                index,
                subnet_id: id.clone(),
                region: region_of(client),
            });
        };
        let zone = subnet.availability_zone().ok_or(AwsError::MissingField {
            operation: "DescribeSubnets",
            field: "AvailabilityZone",
        })?;
        let vpc_id = subnet.vpc_id().ok_or(AwsError::MissingField {
            operation: "DescribeSubnets",
            field: "VpcId",
        })?;
        resolved.push(ResolvedSubnet {
            id: id.clone(),
            zone: zone.to_string(),
            vpc_id: vpc_id.to_string(),
            available_ips: subnet.available_ip_address_count().unwrap_or(0),
        });
    }
    let mut vpcs: Vec<&str> = resolved.iter().map(|s| s.vpc_id.as_str()).collect();
    vpcs.sort();
    vpcs.dedup();
    if vpcs.len() > 1 {
        return Err(AwsError::MixedVpcs {
            vpcs: vpcs.join(", "),
        });
    }
    Ok(resolved)
}

pub(crate) fn region_of(client: &aws_sdk_ec2::Client) -> String {
    client
        .config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "(no region)".to_string())
}
