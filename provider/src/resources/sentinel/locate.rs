//! Finding the deployment a plan, apply, read or destroy works on, as
//! `resources::cluster::locate` does for clusters. The private state is a cache: a provider
//! killed mid-apply drops it (for a create, Terraform records no resource at all). The truth is
//! what the driver finds carrying the deployment's id: its record (local: in `data_dir`; aws:
//! on its security group in the subnets' VPC) for a create that never finished, and every
//! process's record after that (local: in its directory; aws: its instance's tags).

use redisha_cluster::identity::{new_cluster_id, ClusterRecord, ClusterStatus};
use redisha_cluster::sentinel::SentinelOperator;
use redisha_cluster::Driver;
use tracing::info;

use crate::resources::cluster::locate::resumable_create_in;
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::Context;

use super::args::SentinelArgs;
use super::drivers;
use super::{error, SentinelPrivate};
use crate::resources::cluster::args::DriverArgs;

/// Where the driver keeps its deployments' records, in words, and the attribute that
/// chooses it.
fn record_place(args: &SentinelArgs) -> (&'static str, AttrPath) {
    match args.driver {
        DriverArgs::Local(_) => ("data_dir", AttrPath::attr("local").then("data_dir")),
        DriverArgs::Aws(_) => (
            "VPC (of aws.subnet_ids)",
            AttrPath::attr("aws").then("subnet_ids"),
        ),
    }
}

/// The id a create works under: that of an interrupted create of this deployment (its record
/// says `creating` and its provider is gone), else a new one. A finished deployment of the
/// same name in the same place (`data_dir`, or the subnets' VPC) is refused, never adopted.
/// Also says whether a create is resumed. On aws the record is the deployment's security
/// group, made before any instance: every instance of a killed create carries its id.
pub async fn id_for_create(
    ctx: &Context,
    args: &SentinelArgs,
) -> Result<(String, bool), Diagnostics> {
    let (unbound, _) = drivers::build(ctx, args, None, None).await?;
    let (place, at) = record_place(args);
    if let Some(r) = resumable_create_in(unbound.driver(), &args.name, place, at).await? {
        info!(name = %args.name, cluster_id = %r.cluster_id, "resuming an interrupted create");
        return Ok((r.cluster_id, true));
    }
    let id = new_cluster_id().map_err(|e| error("Cannot make a cluster id", e))?;
    Ok((id, false))
}

/// Writes the deployment's record (`status`, this process as owner) before anything starts or
/// after a create finished.
pub async fn record(
    driver: &dyn Driver,
    args: &SentinelArgs,
    cluster_id: &str,
    status: ClusterStatus,
) -> Result<(), Diagnostics> {
    let record = ClusterRecord::new(cluster_id, &args.name, status);
    driver.record_cluster(&record).await.map_err(|e| {
        Diagnostics::from(
            Diagnostic::error("Cannot record the sentinel deployment", e.to_string())
                .at(record_place(args).1),
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

/// `private` (or an empty state when Terraform dropped it) made true from the driver: every
/// process carrying the deployment's id joins it, those proven gone leave it.
pub async fn recovered(
    op: &SentinelOperator<'_>,
    private: Option<SentinelPrivate>,
    cluster_id: &str,
) -> Result<SentinelPrivate, Diagnostics> {
    let mut private = private.unwrap_or_default();
    private.cluster_id = cluster_id.to_string();
    op.recover(&mut private.state)
        .await
        .map_err(|e| error("Cannot read the sentinel deployment", e))?;
    Ok(private)
}
