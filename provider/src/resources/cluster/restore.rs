//! `restore_from` and `final_backup` of `redisha_cluster`. A backup to restore from is
//! checked whole at plan (manifest, every file's size and SHA-256, the snapshot format against
//! the engine the nodes will run) and again at apply before any node starts, so a damaged or
//! mismatched backup starts nothing. `final_backup` is taken before destroy removes anything.

use std::path::PathBuf;

use redisha_cluster::backup::restore::{self, Staged};
use redisha_cluster::engine::Engine;
use redisha_cluster::{ClusterState, Driver, LocalConfig, LocalDriver};

use crate::backups;
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::Context;

use super::args::ClusterArgs;
use super::drivers::BuiltDriver;

fn at() -> AttrPath {
    AttrPath::attr("restore_from")
}

/// The redis-server that opens snapshots when keys are loaded (the local driver's own; for
/// other drivers the one on this machine's PATH), and the engine it runs.
fn loader(driver: &BuiltDriver) -> Result<(PathBuf, LocalDriver), Diagnostics> {
    let local = match driver {
        BuiltDriver::Local(d) => d.clone(),
        BuiltDriver::Aws(_) => LocalDriver::new(LocalConfig::new(backups::scratch())),
    };
    let binary = local.resolve_redis_server().map_err(|e| {
        Diagnostics::from(
            Diagnostic::error(
                "No redis-server to read the backup with",
                format!(
                    "restore_from: keys are loaded through a redis-server on this machine: {e}"
                ),
            )
            .at(at()),
        )
    })?;
    Ok((binary, local))
}

/// The engine the restored nodes run: the driver's, else the loader's (which writes the
/// DUMP payloads the nodes must accept).
async fn target_engine(driver: &BuiltDriver, loader: &LocalDriver) -> Option<Engine> {
    match driver.driver().engine().await {
        Ok(Some(e)) => Some(e),
        _ => loader.engine().await.ok().flatten(),
    }
}

/// The backup of `restore_from`, staged on this machine and checked; the binary that loads
/// keys from it when the shards differ. `None` when there is nothing to restore.
pub(super) async fn staged(
    ctx: &Context,
    args: &ClusterArgs,
    driver: &BuiltDriver,
) -> Result<Option<(Staged, PathBuf)>, Diagnostics> {
    let Some(from) = &args.restore_from else {
        return Ok(None);
    };
    let store = backups::open(ctx, from, &at()).await?;
    let (binary, local) = loader(driver)?;
    let engine = target_engine(driver, &local).await;
    let staged = restore::stage(
        store.as_ref(),
        "",
        from,
        engine.as_ref(),
        &backups::scratch(),
    )
    .await
    .map_err(|e| {
        Diagnostics::from(
            Diagnostic::error("The backup cannot be restored", e.to_string()).at(at()),
        )
    })?;
    Ok(Some((staged, binary)))
}

/// `final_backup`: a backup of the cluster before destroy; an error stops the destroy.
pub(super) async fn final_backup(
    ctx: &Context,
    args: &ClusterArgs,
    state: &ClusterState,
    password: Option<redisha_cluster::Password>,
    operator_password: Option<redisha_cluster::Password>,
) -> Result<(), Diagnostics> {
    let Some(destination) = &args.final_backup else {
        return Ok(());
    };
    if state.nodes.is_empty() {
        return Ok(());
    }
    let at = AttrPath::attr("final_backup");
    let (location, manifest) = crate::resources::backup::backup_to(
        ctx,
        destination,
        &at,
        &state.cluster_id,
        state.nodes.iter().map(|n| n.address()).collect(),
        crate::resources::backup::BackupLogin {
            user: None,
            password,
            operator_password,
        },
        None,
    )
    .await
    .map_err(|d| {
        let mut out = d;
        out.push(Diagnostic::error(
            "Nothing was destroyed",
            "final_backup failed, so the cluster was left as it is. Fix the cause and destroy again, or remove final_backup (apply) to destroy without a backup.",
        ));
        out
    })?;
    tracing::info!(cluster = %args.name, %location, keys = manifest.total_keys(), "final backup taken");
    Ok(())
}
