//! Drills on a sentinel-mode deployment (`redisha_sentinel`): a zone or host crashed or hung,
//! or the primary's zone (or a declared partition side) cut off. The traffic is a
//! Sentinel-aware writer that follows failovers and, in a partition, a client pinned to the
//! cut-off primary; the report holds the write outage against `down-after-milliseconds`, the
//! writes acknowledged and lost, what the cut-off primary accepted and refused
//! (`min-replicas-to-write`), and the planner's sentinel report for this failure next to what
//! happened. [`SentinelTarget`] reads such a deployment from a Terraform state, for the
//! `redisha-drill` command.

mod client;
pub mod report;
mod run;
mod target;

pub use report::{
    render_json, render_markdown, render_text, IsolatedPrimary, SentinelDrillReport,
    SentinelVerdict,
};
pub use run::{run_sentinel, sentinel_window, SentinelDeployment};
pub use target::{SentinelTarget, SENTINEL_PASSWORD_ENV};
