//! redisha-drill: runs one failure (crash, hang, partition on the local driver; a zone's EC2
//! instances stopped on the aws driver) against a running redisha cluster, drives traffic
//! through it, and scores what happened against the planner's what-if report. The planner
//! stays pure: the drill lives here, where the driver and the operator are reachable.
//!
//! - [`Target`]: the cluster named by a Terraform working directory or state file (on the aws
//!   driver an [`aws_target::AwsTarget`]; [`target::read_any`] reads either, or a sentinel)
//! - [`timing`]: the window and the heal's bound by failure kind (EC2 takes minutes)
//! - [`Failure`] (`Action` + `Scope` + window), [`run`], [`DrillReport`] and its renderings
//! - [`DrillDriver`]: local (crash, hang, partition) or aws (stop: StopInstances of a zone's
//!   instances, [`ec2_stop`])
//! - [`sentinel`]: the same failures against a sentinel-mode deployment (`redisha_sentinel`)

pub mod aws_target;
pub mod drill_driver;
pub mod ec2_stop;
pub mod error;
pub mod failure;
pub mod inject;
pub mod load;
pub mod nft;
pub mod procs;
pub mod report;
mod route;
pub mod run;
pub mod score;
pub mod sentinel;
mod state_acl;
pub mod target;
pub mod timing;
pub mod watch;

pub use drill_driver::DrillDriver;
pub use error::{DrillError, Result};
pub use failure::{Action, Failure, Scope};
pub use report::{render_json, render_markdown, render_text, DrillReport};
pub use run::{default_window, node_timeout_ms, run, DrillOptions};
pub use target::{password_from_env, Target, PASSWORD_ENV};
pub use timing::{default_heal_timeout, default_window_for};
