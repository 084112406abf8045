//! `redisha-drill`: one failure against a running cluster or sentinel-mode deployment, scored
//! against the what-if report. Exits 0 when prediction and observation agree, no acknowledged
//! write was lost and the deployment is back to its planned layout; 1 otherwise; 2 when the
//! drill could not run; 3 when the heal ran out of time (inconclusive: not a disagreement).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use redisha_drill::aws_target::{AwsConnection, AwsTarget};
use redisha_drill::drill_driver::aws_refusal;
use redisha_drill::sentinel::{self, SentinelTarget, SENTINEL_PASSWORD_ENV};
use redisha_drill::target::{read_any, AnyTarget};
use redisha_drill::{
    default_heal_timeout, default_window_for, node_timeout_ms, password_from_env, render_json,
    render_markdown, render_text, run, Action, DrillDriver, DrillOptions, DrillReport, Failure,
    Scope, Target, PASSWORD_ENV,
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
    Stop,
}

/// Runs one failure drill against a redisha_cluster (local or aws driver) or a
/// redisha_sentinel (local driver) and reports what happened next to what the planner's
/// what-if report predicted.
#[derive(Debug, Parser)]
#[command(name = "redisha-drill", version)]
struct Cli {
    /// Local driver: crash (SIGKILL), hang (SIGSTOP for the window, then SIGCONT) or partition
    /// (nftables cut for the window). aws driver: stop (StopInstances of the zone's or host's
    /// instances, StartInstances after the window).
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
    /// Default: 2 x cluster-node-timeout + 3 s; stop: 60 s more (EC2 shuts the OS down after
    /// StopInstances answers); sentinel mode: long enough for the failover and for a cut-off
    /// primary to refuse writes (min-replicas-max-lag).
    #[arg(long)]
    seconds: Option<f64>,
    /// How long to wait after the heal for cluster_state:ok on every node, in seconds; past it
    /// the drill is inconclusive (exit 3), not failed. Default 60; stop: 300 (the instances
    /// boot) + the nodes' rejoin delay (2 x cluster-node-timeout + 5 s) + 60.
    #[arg(long)]
    heal_timeout: Option<f64>,
    /// aws driver: the region (the provider's `region`). Default: AWS_REGION or the profile's.
    #[arg(long)]
    region: Option<String>,
    /// aws driver: an endpoint URL replacing EC2's (the provider's `endpoint`: a VPC
    /// interface endpoint, an emulator). Default: none (AWS_ENDPOINT_URL is honoured).
    #[arg(long)]
    endpoint: Option<String>,
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
        Ok(Outcome::Passed) => 0,
        Ok(Outcome::Failed) => 1,
        Ok(Outcome::Inconclusive) => 3,
        Err(e) => {
            eprintln!("redisha-drill: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

/// How a drill that ran ended.
enum Outcome {
    Passed,
    Failed,
    /// The heal ran out of time: nothing after the window was scored.
    Inconclusive,
}

impl Outcome {
    fn of(report: &DrillReport) -> Outcome {
        if report.passed() {
            Outcome::Passed
        } else if report.heal_timed_out {
            Outcome::Inconclusive
        } else {
            Outcome::Failed
        }
    }

    fn passed(passed: bool) -> Outcome {
        if passed {
            Outcome::Passed
        } else {
            Outcome::Failed
        }
    }
}

async fn drill(cli: Cli) -> anyhow::Result<Outcome> {
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
        What::Stop => Action::Stop,
    };
    if matches!(scope, Scope::DeclaredSide(_) | Scope::OtherSide(_)) && action != Action::Partition
    {
        anyhow::bail!("--partition goes with `partition`; crash, hang or stop a --zone or --host");
    }
    let target = read_any(
        &cli.target,
        cli.resource.as_deref(),
        password_from_env(&cli.password_env),
        password_from_env(&cli.sentinel_password_env),
    )?;
    let aws_only = cli.region.is_some() || cli.endpoint.is_some();
    match target {
        AnyTarget::Aws(target) => {
            if action != Action::Stop {
                anyhow::bail!("{}: {}", target.address, aws_refusal(action));
            }
            aws_drill(&cli, *target, scope).await
        }
        AnyTarget::Cluster(target) => {
            local_only(&target.address, action, aws_only)?;
            cluster_drill(&cli, target, action, scope).await
        }
        AnyTarget::Sentinel(target) => {
            local_only(&target.address, action, aws_only)?;
            sentinel_drill(&cli, target, action, scope)
                .await
                .map(Outcome::passed)
        }
    }
}

/// Refuses, before anything is touched, what only an aws target takes.
fn local_only(address: &str, action: Action, aws_only: bool) -> anyhow::Result<()> {
    if action == Action::Stop {
        anyhow::bail!(
            "{address} runs on the local driver: `stop` stops EC2 instances (aws driver); here `crash --zone` or `crash --host` kills the nodes' processes"
        );
    }
    if aws_only {
        anyhow::bail!(
            "{address} runs on the local driver: --region and --endpoint are for aws targets"
        );
    }
    Ok(())
}

/// `--heal-timeout`, else the default for `action`.
fn heal_timeout(cli: &Cli, action: Action, node_timeout_ms: u64) -> anyhow::Result<Duration> {
    positive_seconds(
        cli.heal_timeout,
        "--heal-timeout",
        default_heal_timeout(action, node_timeout_ms),
    )
}

/// The window `--seconds` asks for, else `default`.
fn window(cli: &Cli, default: Duration) -> anyhow::Result<Duration> {
    positive_seconds(cli.seconds, "--seconds", default)
}

/// `given` seconds as a duration, else `default`.
fn positive_seconds(
    given: Option<f64>,
    option: &str,
    default: Duration,
) -> anyhow::Result<Duration> {
    match given {
        Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        Some(_) => anyhow::bail!("{option} must be a positive number of seconds"),
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
) -> anyhow::Result<Outcome> {
    let timeout = node_timeout_ms(&target.node_config);
    let window = window(cli, default_window_for(action, timeout))?;
    let mut opts = options(cli);
    opts.heal_timeout = heal_timeout(cli, action, timeout)?;
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
    Ok(print_report(cli, &report))
}

/// The aws driver's drill: the zone's (or host's) instances stopped, started again after the
/// window; the record of what was stopped beside the state.
async fn aws_drill(cli: &Cli, target: AwsTarget, scope: Scope) -> anyhow::Result<Outcome> {
    let timeout = node_timeout_ms(&target.node_config);
    let window = window(cli, default_window_for(Action::Stop, timeout))?;
    let mut opts = options(cli);
    opts.heal_timeout = heal_timeout(cli, Action::Stop, timeout)?;
    let connection = AwsConnection {
        region: cli.region.clone(),
        endpoint: cli.endpoint.clone(),
    };
    let (driver, request, state) = target.locate(&connection, opts.operator.clone()).await?;
    let failure = Failure {
        action: Action::Stop,
        scope,
        window,
    };
    eprintln!("redisha-drill: {} on {}", failure.label(), target.address);
    let report = run(
        DrillDriver::Aws {
            driver: &driver,
            record_dir: &target.record_dir,
        },
        &request,
        &target.node_config,
        state,
        &failure,
        &opts,
    )
    .await?;
    Ok(print_report(cli, &report))
}

fn print_report(cli: &Cli, report: &DrillReport) -> Outcome {
    let out = match cli.format {
        Format::Text => render_text(report),
        Format::Markdown => render_markdown(report),
        Format::Json => render_json(report),
    };
    println!("{out}");
    Outcome::of(report)
}

async fn sentinel_drill(
    cli: &Cli,
    target: SentinelTarget,
    action: Action,
    scope: Scope,
) -> anyhow::Result<bool> {
    let window = window(cli, sentinel::sentinel_window(&target.settings))?;
    let mut opts = options(cli);
    opts.heal_timeout = positive_seconds(cli.heal_timeout, "--heal-timeout", opts.heal_timeout)?;
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
