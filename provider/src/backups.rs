//! Backup places as written in HCL (`destination`, `restore_from`, `final_backup`,
//! `backup_destination`): a directory (relative ones from Terraform's working directory) or
//! `s3://bucket/prefix`, opened as a [`Store`]. S3 uses the provider block's AWS connection.

use std::path::PathBuf;
use std::time::Duration;

use redisha_aws::s3_store::parse_s3_url;
use redisha_aws::S3Store;
use redisha_cluster::backup::{DirStore, Store};

use crate::provider_config::aws_settings;
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::Context;

/// Opens `text` (the value of attribute `at`) as a store rooted there.
pub async fn open(ctx: &Context, text: &str, at: &AttrPath) -> Result<Box<dyn Store>, Diagnostics> {
    if text.starts_with("s3://") {
        let Some((bucket, prefix)) = parse_s3_url(text) else {
            return Err(Diagnostic::error(
                "Invalid S3 location",
                format!("{at}: {text:?} has no bucket; write s3://bucket/prefix"),
            )
            .at(at.clone())
            .into());
        };
        let settings = aws_settings(ctx, "a backup in S3").map_err(|d| d.at(at.clone()))?;
        let clients = redisha_aws::client(&settings).await.map_err(|e| {
            Diagnostics::from(Diagnostic::error("Cannot reach S3", e.to_string()).at(at.clone()))
        })?;
        return Ok(Box::new(S3Store::new(clients.s3, &bucket, &prefix)));
    }
    if text.trim().is_empty() {
        return Err(Diagnostic::error(
            "Empty backup location",
            format!("{at}: give a directory or s3://bucket/prefix"),
        )
        .at(at.clone())
        .into());
    }
    Ok(Box::new(DirStore::new(local_dir(text))))
}

/// A directory as written: relative ones are taken from Terraform's working directory.
pub fn local_dir(text: &str) -> PathBuf {
    let dir = PathBuf::from(text);
    if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or(dir)
    }
}

/// Where snapshots wait before they are stored or restored: the system's temporary directory.
pub fn scratch() -> PathBuf {
    std::env::temp_dir()
}

/// The bounds of a backup's waits.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
