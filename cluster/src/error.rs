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
    #[error(
        "stopped on request at {at}; the cluster is consistent there and the next apply resumes"
    )]
    Cancelled { at: &'static str },
    #[error("{}", unverified_message(.0))]
    Unverified(Vec<Unverified>),
    #[error(
        "{what} would lose data: {why}. redisha refuses; set allow_data_loss = true to accept it"
    )]
    WouldLoseData { what: String, why: String },
    #[error("no node answered at {0}")]
    Unreachable(String),
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// A node that does not answer redisha while nothing proves it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    pub node: String,
    pub address: String,
    pub cause: String,
}

fn unverified_message(nodes: &[Unverified]) -> String {
    let list: Vec<String> = nodes
        .iter()
        .map(|u| format!("node {} ({}): {}", u.node, u.address, u.cause))
        .collect();
    format!(
        "{}. redisha acts only on nodes it can verify: the cluster does not flag {} failed and its process is not known to be gone, so nothing was failed over, stopped or restarted. Fix the cause (a password that differs from the configured one, a busy script, a node still loading its data, the network between this machine and the node) and apply again",
        list.join("; "),
        if nodes.len() == 1 { "it" } else { "them" }
    )
}
