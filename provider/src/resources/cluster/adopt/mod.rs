//! Adopting an imported cluster. `terraform import` records what runs (discovered from one
//! node, plus the cluster id for the aws form); the first plan with a configuration matches
//! every planned node to a running node with the same role and slots, and apply takes them
//! over. Nothing is restarted, replaced, moved or terminated to adopt: a mismatch is an error
//! that names the node and what differs, because guessing here could cost data.
//!
//! Where a planned node runs is the driver's business: the local driver computes its address
//! (`local`); the aws driver finds the instances carrying the cluster id and the node records
//! on them (`aws`).

mod aws;
mod local;

use redisha_cluster::{ClusterNode, ClusterState, Password};
use redisha_planner::{Node, Role};

use crate::tfplugin::diagnostics::{Diagnostic, Diagnostics};
use crate::tfplugin::framework::Context;

use super::args::{ClusterArgs, DriverArgs};

/// `ClusterState::driver` of a cluster imported and not adopted yet.
pub const IMPORTED: &str = "imported";

/// The state of `imported` under the planned names, with the configured driver's handles.
/// `passwords` are those the nodes may accept: the import's and the configuration's.
pub async fn adopt(
    ctx: &Context,
    args: &ClusterArgs,
    imported: &ClusterState,
    passwords: [Option<Password>; 2],
) -> Result<ClusterState, Diagnostics> {
    let mut adopted = match args.driver {
        DriverArgs::Local(_) => local::adopt(ctx, args, imported).await?,
        DriverArgs::Aws(_) => aws::adopt(ctx, args, imported, passwords).await?,
    };
    adopted.name = args.name.clone();
    Ok(adopted)
}

fn mismatch(detail: String, fix: &str) -> Diagnostic {
    Diagnostic::error(
        "The imported cluster does not match the configuration",
        format!(
            "{detail}\nFix: {fix}, or create a new cluster instead of importing. Nothing was changed."
        ),
    )
}

/// The running node at `address` when it is what the plan makes of `planned` (same role, and
/// for a master the same slots).
fn running_as_planned<'a>(
    imported: &'a ClusterState,
    planned: &Node,
    address: &str,
    fix: &str,
) -> Result<&'a ClusterNode, Diagnostic> {
    let running = imported
        .nodes
        .iter()
        .find(|n| n.address() == address)
        .ok_or_else(|| {
            mismatch(
                format!(
                    "planned node {} ({} in {}) at {address}: no node of the imported cluster runs there",
                    planned.name,
                    planned.role.as_str(),
                    planned.zone
                ),
                fix,
            )
        })?;
    if running.role != planned.role {
        return Err(mismatch(
            format!(
                "node {} at {address} is a {} but the plan makes it a {}",
                planned.name,
                running.role.as_str(),
                planned.role.as_str()
            ),
            fix,
        ));
    }
    if planned.role == Role::Master && running.slots != planned.slots {
        return Err(mismatch(
            format!(
                "master {} at {address} serves slots {:?} but the plan gives it {:?}",
                planned.name, running.slots, planned.slots
            ),
            fix,
        ));
    }
    Ok(running)
}

/// Refuses a running node that no planned node took (`matched`: their addresses).
fn none_left_over(
    imported: &ClusterState,
    matched: &[String],
    fix: &str,
) -> Result<(), Diagnostic> {
    match imported
        .nodes
        .iter()
        .find(|n| !matched.contains(&n.address()))
    {
        Some(extra) => Err(mismatch(
            format!(
                "the running node at {} ({}) has no place in the plan",
                extra.address(),
                extra.role.as_str()
            ),
            fix,
        )),
        None => Ok(()),
    }
}
