//! `redisha-drill`: one failure against a running cluster or sentinel-mode deployment, scored
//! against the what-if report. Exits 0 when prediction and observation agree, no acknowledged
//! write was lost and the deployment is back to its planned layout; 1 otherwise; 2 when the
//! drill could not run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use redisha_drill::sentinel::{self, SentinelTarget, SENTINEL_PASSWORD_ENV};
use redisha_drill::target::{read_any, AnyTarget};
use redisha_drill::{
    default_window, node_timeout_ms, password_from_env, render_json, render_markdown, render_text,
    run, Action, DrillOptions, Failure, Scope, Target, PASSWORD_ENV,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum What {
    Crash,
    Hang,
    Partition,
}

/// Runs one failure drill against a redisha_cluster or redisha_sentinel (local driver) and
/// reports what happened next to what the planner's what-if report predicted.
#[derive(Debug, Parser)]
#[command(name = "redisha-drill", version)]
struct Cli {
    /// crash (SIGKILL), hang (SIGSTOP for the window, then SIGCONT) or partition (nftables cut
    /// for the window).
    what: What,
    /// The Terraform working directory (its terraform.tfstate) or a state file.
    #[arg(long, default_value = ".")]
    target: PathBuf,
    /// The redisha_cluster or redisha_sentinel resource's name (or address, e.g.
    /// redisha_sentinel.orders), when the state has several.
    #[arg(long)]
    resource: Option<String>,
    /// Fail one host.
    #[arg(long, conflicts_with_all = ["zone", "partition"])]
    host: Option<String>,
    /// Fail (or cut off) one zone.
    #[arg(long, conflicts_with = "partition")]
    zone: Option<String>,
    /// Cut off the declared side of this declared partition.
    #[arg(long)]
    partition: Option<String>,
    /// With --partition: cut off the other side instead.
    #[arg(long, requires = "partition")]
    other_side: bool,
    /// How long the failure lasts (a crash: how long the drill watches before it restores).
    /// Default: 2 x cluster-node-timeout + 3 s; sentinel mode: long enough for the failover
    /// and for a cut-off primary to refuse writes (min-replicas-max-lag).
    #[arg(long)]
    seconds: Option<f64>,
    /// WAIT timeout of every write, in ms.
    #[arg(long, default_value_t = 50)]
    wait_ms: u64,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write every request of the traffic here (JSON lines).
    #[arg(long)]
    log: Option<PathBuf>,
    /// The environment variable holding the cluster password (never pass it as an argument).
    #[arg(long, default_value = PASSWORD_ENV)]
    password_env: String,
    /// Sentinel mode: the environment variable holding `sentinel_password`, when the
    /// deployment gives the sentinels their own.
    #[arg(long, default_value = SENTINEL_PASSWORD_ENV)]
    sentinel_password_env: String,
}

/// The environment variables naming the user the drill's traffic logs in as, and its password
/// (default: the `default` user with the cluster password). A cluster with
/// `default_user_enabled = false` needs one, as its clients do.
const USER_ENV: &str = "REDISHA_USER";
const USER_PASSWORD_ENV: &str = "REDISHA_USER_PASSWORD";

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "redisha_drill=info,redisha_cluster=warn".into()),
        )
        .try_init();
    let cli = Cli::parse();
    let code = match tokio::runtime::Runtime::new()
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(drill(cli)))
    {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("redisha-drill: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

async fn drill(cli: Cli) -> anyhow::Result<bool> {
    let scope = match (&cli.host, &cli.zone, &cli.partition) {
        (Some(h), None, None) => Scope::Host(h.clone()),
        (None, Some(z), None) => Scope::Zone(z.clone()),
        (None, None, Some(p)) if cli.other_side => Scope::OtherSide(p.clone()),
        (None, None, Some(p)) => Scope::DeclaredSide(p.clone()),
        _ => anyhow::bail!("name what fails: --host, --zone or --partition"),
    };
    let action = match cli.what {
        What::Crash => Action::Crash,
        What::Hang => Action::Hang,
        What::Partition => Action::Partition,
    };
    if matches!(scope, Scope::DeclaredSide(_) | Scope::OtherSide(_)) && action != Action::Partition
    {
        anyhow::bail!("--partition goes with `partition`; crash or hang a --zone or --host");
    }
    let target = read_any(
        &cli.target,
        cli.resource.as_deref(),
        password_from_env(&cli.password_env),
        password_from_env(&cli.sentinel_password_env),
    )?;
    match target {
        AnyTarget::Cluster(target) => cluster_drill(&cli, target, action, scope).await,
        AnyTarget::Sentinel(target) => sentinel_drill(&cli, target, action, scope).await,
    }
}

/// The window `--seconds` asks for, else `default`.
fn window(cli: &Cli, default: Duration) -> anyhow::Result<Duration> {
    match cli.seconds {
        Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        Some(_) => anyhow::bail!("--seconds must be a positive number"),
        None => Ok(default),
    }
}

/// The drill's options, with Ctrl-C ending the window at once (the drill still heals and
/// restores).
fn options(cli: &Cli) -> DrillOptions {
    let opts = DrillOptions {
        wait: Duration::from_millis(cli.wait_ms),
        log_file: cli.log.clone(),
        client: std::env::var(USER_ENV)
            .ok()
            .filter(|u| !u.is_empty())
            .map(|user| redisha_cluster::conn::Credential {
                user: Some(user),
                password: password_from_env(USER_PASSWORD_ENV),
            }),
        ..DrillOptions::default()
    };
    let cancel = opts.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("redisha-drill: interrupted; healing and restoring the deployment");
            cancel.cancel();
        }
    });
    opts
}

async fn cluster_drill(
    cli: &Cli,
    target: Target,
    action: Action,
    scope: Scope,
) -> anyhow::Result<bool> {
    let window = window(cli, default_window(node_timeout_ms(&target.node_config)))?;
    let opts = options(cli);
    let (driver, state) = target.locate(opts.operator.clone()).await?;
    let failure = Failure {
        action,
        scope,
        window,
    };
    eprintln!("redisha-drill: {} on {}", failure.label(), target.address);
    let report = run(
        &driver,
        &target.request,
        &target.node_config,
        state,
        &failure,
        &opts,
    )
    .await?;
    let out = match cli.format {
        Format::Text => render_text(&report),
        Format::Markdown => render_markdown(&report),
        Format::Json => render_json(&report),
    };
    println!("{out}");
    Ok(report.passed())
}

async fn sentinel_drill(
    cli: &Cli,
    target: SentinelTarget,
    action: Action,
    scope: Scope,
) -> anyhow::Result<bool> {
    let window = window(cli, sentinel::sentinel_window(&target.settings))?;
    let opts = options(cli);
    let (driver, state) = target.locate().await?;
    let (placement, sentinels) = target.placement();
    let failure = Failure {
        action,
        scope,
        window,
    };
    eprintln!("redisha-drill: {} on {}", failure.label(), target.address);
    let deployment = target.deployment(&driver, &placement, &sentinels);
    let report = sentinel::run_sentinel(&deployment, state, &failure, &opts).await?;
    let out = match cli.format {
        Format::Text => sentinel::render_text(&report),
        Format::Markdown => sentinel::render_markdown(&report),
        Format::Json => sentinel::render_json(&report),
    };
    println!("{out}");
    Ok(report.passed())
}
