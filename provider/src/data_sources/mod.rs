pub mod placement;
pub mod cluster_health;
