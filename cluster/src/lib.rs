//! redisha-cluster: the driver boundary (hosts and redis-server nodes), the `local` driver,
//! and the code that forms, observes, repairs, migrates and reconfigures a Redis Cluster
//! with the `redis` crate.
//!
//! API used by the provider:
//! - [`Driver`] (trait), [`HostHandle`], [`NodeHandle`], [`NodeConfig`], [`Password`]
//! - [`LocalDriver`] / [`LocalConfig`]
//! - [`Operator`]: `preflight`, `create`, `recover` (state rebuilt from the driver's records
//!   and the live cluster), `open_slots`/`finish_open_slots`, `observe`, `repair`, `update`,
//!   `reconfigure`, `destroy`, all working on a serde-serialisable [`ClusterState`]
//! - [`identity`]: cluster ids and the records drivers keep on nodes
//! - [`import`], [`health`] and [`status`] (no driver needed)

pub mod acl;
pub mod acl_apply;
pub mod backup;
pub mod conn;
pub mod driver;
pub mod engine;
pub mod engine_roll;
pub mod error;
pub mod form;
pub mod host_roll;
pub mod identity;
pub mod lease;
pub mod local;
pub mod ops;
pub mod persistence;
pub mod secret;
pub mod sentinel;
pub mod state;
pub mod tls;
pub mod tls_roll;
pub mod tls_supplied;

pub use driver::{
    Driver, DriverError, HostHandle, HostPlan, NodeConfig, NodeHandle, NodePlan, OutdatedHost,
    ProcessKind, ProcessState,
};
pub use error::{ClusterError, Unverified};
pub use identity::{ClusterRecord, ClusterStatus, NodeRecord};
pub use local::{LocalConfig, LocalDriver, LocalExporter};
pub use ops::{Cancel, Operator, Options};
pub use secret::Password;
pub use state::{ClusterNode, ClusterState};
pub mod health;
pub mod migrate_exec;
pub mod observe;
pub mod open_slots;
pub mod recover;
pub mod repair;
pub mod rolling;
pub mod status;

pub use health::{health, import, HealthReport, NodeHealth, NodeStats};
pub use observe::{NodeObservation, NodeView, Observation};
pub use repair::RepairReport;
pub use status::{status, PlannedNode, Problem, ProblemKind, StatusReport};
