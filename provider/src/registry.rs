//! What this provider serves. One line per resource or data source.

use crate::data_sources::aws_topology::AwsTopologyDataSource;
use crate::data_sources::cluster_health::ClusterHealthDataSource;
use crate::data_sources::placement::PlacementDataSource;
use crate::framework::Registry;
use crate::provider_config::RedishaProviderConfig;
use crate::resources::cluster::ClusterResource;

pub fn registry() -> Registry {
    Registry::new(RedishaProviderConfig)
        .data_source(PlacementDataSource)
        .data_source(ClusterHealthDataSource)
        .data_source(AwsTopologyDataSource)
        .resource(ClusterResource)
}
