//! The drill's errors: each names what was wrong and what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("target {path:?}: {reason}")]
    Target { path: PathBuf, reason: String },
    #[error("failure: {0}")]
    Failure(String),
    #[error("process {pid} of node {node}: {reason}; the drill signals only pids proven to run that node's config file")]
    Process {
        node: String,
        pid: u32,
        reason: String,
    },
    #[error("partition: {0}")]
    Partition(String),
    #[error("cluster: {0}")]
    Cluster(#[from] redisha_cluster::ClusterError),
    #[error("driver: {0}")]
    Driver(#[from] redisha_cluster::DriverError),
    #[error("aws: {0}")]
    Aws(#[from] redisha_aws::AwsError),
    #[error("planner: {0}")]
    Planner(#[from] redisha_planner::PlanError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, DrillError>;

impl DrillError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DrillError {
        let context = context.into();
        move |source| DrillError::Io { context, source }
    }
}
