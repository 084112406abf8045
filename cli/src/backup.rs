//! The `backup` command: arguments, the store they name, and one call of the cluster
//! crate's `take_backup` (which the provider's `redisha_backup` calls too).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use redisha_aws::s3_store::parse_s3_url;
use redisha_aws::{AwsSettings, S3Store};
use redisha_cluster::backup::{take_backup, BackupRequest, DirStore, Store};
use redisha_cluster::Password;

/// Take one backup of a running redisha cluster (password: REDISHA_PASSWORD or --password-file).
#[derive(Debug, clap::Parser)]
#[command(name = "redisha backup", bin_name = "redisha backup", version)]
pub struct Args {
    /// The cluster's id (`terraform output`, the `cluster_id` of redisha_cluster).
    #[arg(long)]
    pub cluster_id: String,
    /// host:port of a node of the cluster; repeat for more (the first that answers is used).
    #[arg(long = "endpoint", required = true)]
    pub endpoints: Vec<String>,
    /// A directory, or s3://bucket/prefix.
    #[arg(long)]
    pub destination: String,
    /// Backups of this cluster to keep there, this one included (older ones are removed).
    #[arg(long)]
    pub retain: Option<u32>,
    /// A file holding the password (its first line), instead of REDISHA_PASSWORD.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// The ACL user to log in as (default: `default`); needed with `default_user_enabled =
    /// false`: a user with `-@all +info +cluster|nodes +replconf +sync +psync`.
    #[arg(long)]
    pub user: Option<String>,
    /// AWS region for S3 (default: AWS_REGION).
    #[arg(long)]
    pub region: Option<String>,
    /// An S3 endpoint URL (an S3-compatible store, or an emulator).
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// Longest wait for a replica to catch up or a node to write its snapshot, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_seconds: u64,
}

fn password(args: &Args) -> Result<Option<Password>> {
    if let Some(path) = &args.password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the password file {}", path.display()))?;
        let first = text.lines().next().unwrap_or_default();
        if first.is_empty() {
            bail!("the password file {} is empty", path.display());
        }
        return Ok(Some(Password::new(first)));
    }
    Ok(std::env::var("REDISHA_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(Password::new))
}

async fn store(args: &Args) -> Result<Box<dyn Store>> {
    if args.destination.starts_with("s3://") {
        let (bucket, prefix) = parse_s3_url(&args.destination)
            .with_context(|| format!("--destination {:?} has no bucket", args.destination))?;
        let region = args
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .context("S3 needs a region: --region or AWS_REGION")?;
        let settings = AwsSettings {
            region,
            endpoint: args.s3_endpoint.clone(),
            assume_role: None,
        };
        let clients = redisha_aws::client(&settings).await?;
        return Ok(Box::new(S3Store::new(clients.s3, &bucket, &prefix)));
    }
    Ok(Box::new(DirStore::new(&args.destination)))
}

/// Takes the backup; the line to print.
pub async fn run(args: Args) -> Result<String> {
    if args.retain == Some(0) {
        bail!("--retain: keep at least 1 backup (the one this run takes)");
    }
    let store = store(&args).await?;
    let started = Instant::now();
    let request = BackupRequest {
        seeds: args.endpoints.clone(),
        user: args.user.clone(),
        password: password(&args)?,
        operator_password: None,
        cluster_id: args.cluster_id.clone(),
        store: store.as_ref(),
        retain: args.retain,
        scratch: std::env::temp_dir(),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(30),
        timeout: Duration::from_secs(args.timeout_seconds),
    };
    let manifest = take_backup(&request).await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(format!(
        "{}/{}/{}: {} shards, {} keys, {} bytes, {:.1} s",
        store.location().trim_end_matches('/'),
        manifest.cluster_id,
        manifest.backup_id,
        manifest.shards.len(),
        manifest.total_keys(),
        manifest.total_bytes(),
        seconds
    ))
}
