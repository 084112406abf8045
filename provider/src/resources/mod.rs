//! Resources: each one a module implementing `framework::Resource`.

pub mod backup;
pub mod cluster;
pub mod sentinel;
