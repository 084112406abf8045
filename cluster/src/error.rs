//! Errors of the cluster operations. None of them carries the password: redis errors are
//! passed through as redis returns them (redis never echoes a password back).

use std::time::Duration;

use crate::driver::DriverError;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("node {node} ({address}): {action}: {source}")]
    Redis {
        node: String,
        address: String,
        action: String,
        #[source]
        source: Box<redis::RedisError>,
    },
    #[error("node {node} ({address}): unexpected reply to {action}: {detail}")]
    Protocol {
        node: String,
        address: String,
        action: String,
        detail: String,
    },
    #[error("the cluster did not converge within {timeout:?}; still waiting for: {}", waiting_for.join("; "))]
    NotConverged {
        timeout: Duration,
        waiting_for: Vec<String>,
    },
    #[error("plan: {0}")]
    Plan(String),
    #[error("stopped on request at {at}; the cluster is consistent there and the next apply resumes")]
    Cancelled { at: &'static str },
    #[error("no node answered at {0}")]
    Unreachable(String),
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
