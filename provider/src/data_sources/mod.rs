pub mod aws_topology;
pub mod cluster_health;
pub mod placement;
