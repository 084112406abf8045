//! What this provider serves. One line per resource or data source.

use crate::data_sources::aws_topology::AwsTopologyDataSource;
use crate::data_sources::cluster_health::ClusterHealthDataSource;
use crate::data_sources::placement::PlacementDataSource;
use std::collections::BTreeMap;

use crate::provider_config::RedishaProviderConfig;
use crate::resources::backup::BackupResource;
use crate::resources::cluster::ClusterResource;
use crate::resources::sentinel::SentinelResource;
use crate::tfplugin::framework::{Identity, Registry};
use crate::tfplugin::schema::Schema;

/// The provider's name and source address.
pub const IDENTITY: Identity = Identity {
    name: "redisha",
    address: "registry.terraform.io/redisha/redisha",
};

pub fn registry() -> Registry {
    Registry::new(RedishaProviderConfig)
        .named(IDENTITY.name, IDENTITY.address)
        .data_source(PlacementDataSource)
        .data_source(ClusterHealthDataSource)
        .data_source(AwsTopologyDataSource)
        .resource(ClusterResource)
        .resource(SentinelResource)
        .resource(BackupResource)
}

/// Every schema this provider serves, keyed by type name: the input of the docs generator,
/// which must document exactly what Terraform is told.
pub struct Schemas {
    pub provider: Schema,
    pub resources: BTreeMap<String, Schema>,
    pub data_sources: BTreeMap<String, Schema>,
}

pub fn schemas() -> Schemas {
    let r = registry();
    Schemas {
        provider: r.provider.schema(),
        resources: r
            .resources
            .iter()
            .map(|(name, res)| (name.to_string(), res.schema()))
            .collect(),
        data_sources: r
            .data_sources
            .iter()
            .map(|(name, ds)| (name.to_string(), ds.schema()))
            .collect(),
    }
}
