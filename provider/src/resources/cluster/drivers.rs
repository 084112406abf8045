//! Building the driver a `redisha_cluster` names, and the request it plans on. The cluster
//! logic on top is the same for every driver.

use redisha_cluster::{Driver, HostPlan, LocalDriver, NodePlan};
use redisha_planner::Request;

use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::framework::Context;

use super::args::{ClusterArgs, DriverArgs};

pub enum BuiltDriver {
    Local(LocalDriver),
}

impl BuiltDriver {
    pub fn driver(&self) -> &dyn Driver {
        match self {
            BuiltDriver::Local(d) => d,
        }
    }

    /// The address a node will have, when the driver knows it before anything exists.
    pub fn planned_address(&self, host: &HostPlan, node: &NodePlan) -> Option<String> {
        match self {
            BuiltDriver::Local(d) => {
                let ip = d.host_address(host).ok()?;
                let port = d.node_port(node.index_on_host).ok()?;
                Some(format!("{ip}:{port}"))
            }
        }
    }
}

/// The driver and the planner request for `args`.
pub async fn build(_ctx: &Context, args: &ClusterArgs) -> Result<(BuiltDriver, Request), Diagnostics> {
    match &args.driver {
        DriverArgs::Local(config) => Ok((BuiltDriver::Local(LocalDriver::new(config.clone())), args.request.clone())),
        DriverArgs::Aws(_) => Err(Diagnostic::error(
            "The aws driver is not available in this build",
            "Use the local driver.",
        )
        .into()),
    }
}
