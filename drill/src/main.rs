//! `redisha-drill`: one failure against a running cluster, scored against the what-if report.
//! Exits 0 when prediction and observation agree, no acknowledged write was lost and the
//! cluster is back to its planned layout; 1 otherwise; 2 when the drill could not run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
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

/// Runs one failure drill against a redisha cluster (local driver) and reports what happened
/// next to what the planner's what-if report predicted.
#[derive(Debug, Parser)]
#[command(name = "redisha-drill", version)]
struct Cli {
    /// crash (SIGKILL), hang (SIGSTOP for the window, then SIGCONT) or partition (nftables cut
    /// for the window).
    what: What,
    /// The Terraform working directory (its terraform.tfstate) or a state file.
    #[arg(long, default_value = ".")]
    target: PathBuf,
    /// The redisha_cluster resource's name, when the state has several.
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
    /// Default: 2 x cluster-node-timeout + 3 s.
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
}

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
    let target = Target::read(
        &cli.target,
        cli.resource.as_deref(),
        password_from_env(&cli.password_env),
    )?;
    let window = match cli.seconds {
        Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
        Some(_) => anyhow::bail!("--seconds must be a positive number"),
        None => default_window(node_timeout_ms(&target.node_config)),
    };
    let opts = DrillOptions {
        wait: Duration::from_millis(cli.wait_ms),
        log_file: cli.log.clone(),
        ..DrillOptions::default()
    };
    // Ctrl-C ends the window at once; the drill still heals and restores.
    let cancel = opts.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("redisha-drill: interrupted; healing and restoring the cluster");
            cancel.cancel();
        }
    });
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
