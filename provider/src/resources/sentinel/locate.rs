//! Finding the deployment a plan, apply, read or destroy works on, as
//! `resources::cluster::locate` does for clusters. The private state is a cache: a provider
//! killed mid-apply drops it (for a create, Terraform records no resource at all). The truth is
//! what the driver finds carrying the deployment's id: its record in `data_dir` for a create
//! that never finished, and every process's record after that.

use redisha_cluster::identity::{new_cluster_id, ClusterRecord, ClusterStatus};
use redisha_cluster::sentinel::SentinelOperator;
use redisha_cluster::{Driver, LocalDriver};
use tracing::info;

use crate::resources::cluster::locate::resumable_create_in;
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};

use super::args::SentinelArgs;
use super::drivers::SentinelDriver;
use super::{error, SentinelPrivate};
use crate::resources::cluster::args::DriverArgs;

fn data_dir_path() -> AttrPath {
    AttrPath::attr("local").then("data_dir")
}

/// The id a create works under: that of an interrupted create of this deployment (its record
/// in `data_dir` says `creating` and its provider is gone), else a new one. A finished
/// deployment of the same name in the same `data_dir` is refused, never adopted. Also says
/// whether a create is resumed.
///
/// On aws a create is not resumed yet: instances of a killed create carry its id, and destroy
/// of the new one does not reach them (see the resource's docs).
pub async fn id_for_create(args: &SentinelArgs) -> Result<(String, bool), Diagnostics> {
    if let DriverArgs::Local(local) = &args.driver {
        let unbound = LocalDriver::new(local.clone());
        if let Some(r) =
            resumable_create_in(&unbound, &args.name, "data_dir", data_dir_path()).await?
        {
            info!(name = %args.name, cluster_id = %r.cluster_id, "resuming an interrupted create");
            return Ok((r.cluster_id, true));
        }
    }
    let id = new_cluster_id().map_err(|e| error("Cannot make a cluster id", e))?;
    Ok((id, false))
}

/// Writes the deployment's record (`status`, this process as owner) before anything starts or
/// after a create finished.
pub async fn record(
    driver: &dyn Driver,
    cluster_id: &str,
    name: &str,
    status: ClusterStatus,
) -> Result<(), Diagnostics> {
    let record = ClusterRecord::new(cluster_id, name, status);
    driver.record_cluster(&record).await.map_err(|e| {
        Diagnostics::from(
            Diagnostic::error("Cannot record the sentinel deployment", e.to_string())
                .at(data_dir_path()),
        )
    })
}

/// The id of an existing deployment: from the private state, else from the `cluster_id`
/// attribute Terraform kept.
pub fn existing_id(
    private: Option<&SentinelPrivate>,
    attribute: Option<&String>,
) -> Option<String> {
    private
        .map(|p| p.cluster_id.clone())
        .filter(|id| !id.is_empty())
        .or_else(|| attribute.filter(|id| !id.is_empty()).cloned())
}

/// `private` (or an empty state when Terraform dropped it) made true from the driver. On aws
/// it is used as it is: sentinel-mode instances carry no per-process records yet (see
/// [`aws_needs_private`]).
pub async fn recovered(
    op: &SentinelOperator<'_>,
    driver: &SentinelDriver,
    private: Option<SentinelPrivate>,
    cluster_id: &str,
) -> Result<SentinelPrivate, Diagnostics> {
    if let SentinelDriver::Aws(_) = driver {
        return Ok(private.unwrap_or_else(|| SentinelPrivate {
            cluster_id: cluster_id.to_string(),
            state: Default::default(),
        }));
    }
    let mut private = private.unwrap_or_default();
    private.cluster_id = cluster_id.to_string();
    op.recover(&mut private.state)
        .await
        .map_err(|e| error("Cannot read the sentinel deployment", e))?;
    Ok(private)
}

/// An update on aws without private state: refused, since its processes cannot be found yet.
pub fn aws_needs_private(
    driver: &SentinelDriver,
    private: Option<&SentinelPrivate>,
) -> Result<(), Diagnostics> {
    match (driver, private) {
        (SentinelDriver::Aws(_), None) => Err(error(
            "No record of the deployment's processes",
            "The private state is missing, and on aws a sentinel deployment's processes are not found without it yet. Fix: restore the resource's `private` value from terraform.tfstate.backup, or replace the resource (`terraform apply -replace=...`).",
        )),
        _ => Ok(()),
    }
}
