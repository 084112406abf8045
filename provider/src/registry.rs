//! What this provider serves. One line per resource or data source.

use crate::data_sources::cluster_health::ClusterHealthDataSource;
use crate::data_sources::placement::PlacementDataSource;
use crate::framework::{EmptyProviderConfig, Registry};
use crate::resources::cluster::ClusterResource;

pub fn registry() -> Registry {
    Registry::new(EmptyProviderConfig)
        .data_source(PlacementDataSource)
        .data_source(ClusterHealthDataSource)
        .resource(ClusterResource)
}
