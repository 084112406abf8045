//! `redisha`: plan a Redis Cluster placement, report what failures would do, and list the
//! migration steps between two placements. Errors go to stderr with a non-zero exit.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use redisha_planner::{
    analyse, migrate, parse_request, plan, report, validate_placement, InputFormat, Placement,
    PlanError, Request,
};

#[derive(Parser)]
#[command(
    name = "redisha",
    version,
    about = "Failure-domain aware Redis Cluster placement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Plan a placement for a topology and request (JSON or TOML).
    Plan {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// A previous placement (JSON, e.g. an earlier `plan --format json`) to move little from.
        #[arg(long)]
        previous: Option<PathBuf>,
    },
    /// The what-if report of a topology's plan, or of a given placement on that topology.
    Report {
        file: PathBuf,
        /// A placement (JSON) to analyse instead of planning one, e.g. one observed live.
        #[arg(long)]
        placement: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Migration steps from CURRENT to TARGET placement (JSON). TARGET may also be a request,
    /// which is then planned with CURRENT as the previous placement.
    Diff {
        current: PathBuf,
        target: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Any other command NAME runs the program `redisha-NAME` (next to this one, else on
    /// PATH), as git and cargo do: `redisha backup` is `redisha-backup` (crate `cli/`), which
    /// talks to live clusters, while this program only reads files.
    #[command(external_subcommand)]
    External(Vec<OsString>),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
    Markdown,
    Dot,
}

fn main() -> ExitCode {
    // Usage errors exit 1 like other bad input; 2 is kept for "the request cannot be met".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Command::External(args) = &cli.command {
        return external(args);
    }
    match run(cli) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            // 2: the request cannot be met (infeasible); 1: anything else.
            if e.downcast_ref::<PlanError>()
                .is_some_and(|p| matches!(p, PlanError::Infeasible { .. }))
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Runs `redisha-<NAME>` with the remaining arguments; its exit code is ours.
fn external(args: &[OsString]) -> ExitCode {
    let Some((name, rest)) = args.split_first() else {
        return ExitCode::from(1);
    };
    let program = format!("redisha-{}", name.to_string_lossy());
    // Next to this executable first (a cargo build puts them together), else PATH.
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(&program)))
        .filter(|p| p.is_file());
    let path = beside.unwrap_or_else(|| PathBuf::from(&program));
    match std::process::Command::new(&path).args(rest).status() {
        Ok(status) => ExitCode::from(
            status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(1),
        ),
        Err(e) => {
            eprintln!(
                "error: `redisha {}` needs the program {program} ({e}); it is built by the redisha-cli crate (cargo build -p redisha-cli)",
                name.to_string_lossy()
            );
            ExitCode::from(1)
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn load_request(path: &Path) -> Result<Request> {
    let text = read(path)?;
    let format = InputFormat::from_path(&path.to_string_lossy());
    parse_request(&text, format).with_context(|| format!("in {}", path.display()))
}

fn load_placement(path: &Path) -> Result<Placement> {
    let text = read(path)?;
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.path(), e.inner()))
        .with_context(|| {
            format!(
                "{} is not a placement (JSON with a `nodes` list)",
                path.display()
            )
        })
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

fn run(cli: Cli) -> Result<String> {
    match cli.command {
        Command::Plan {
            file,
            format,
            previous,
        } => {
            let req = load_request(&file)?;
            let previous = previous.as_deref().map(load_placement).transpose()?;
            let plan = plan(&req, previous.as_ref())?;
            Ok(match format {
                Format::Json => json(&plan)?,
                Format::Text => report::render_plan_text(&plan),
                Format::Markdown => report::render_plan_markdown(&plan),
                Format::Dot => report::render_dot(&plan.placement),
            })
        }
        Command::Report {
            file,
            placement,
            format,
        } => {
            let req = load_request(&file)?;
            let report = match placement {
                Some(path) => {
                    let placement = load_placement(&path)?;
                    validate_placement(&req, &placement)
                        .map_err(|e| anyhow::anyhow!("{e}"))
                        .with_context(|| format!("{} does not fit the topology", path.display()))?;
                    analyse(&req, &placement)
                }
                None => plan(&req, None)?.report,
            };
            Ok(match format {
                Format::Json => json(&report)?,
                Format::Text => report::render_text(&report),
                Format::Markdown => report::render_markdown(&report),
                Format::Dot => {
                    bail!("--format dot draws a placement: use `redisha plan --format dot`")
                }
            })
        }
        Command::Diff {
            current,
            target,
            format,
        } => {
            let cur = load_placement(&current)?;
            let target_text = read(&target)?;
            let is_request = serde_json::from_str::<serde_json::Value>(&target_text)
                .map(|v| v.get("cluster").is_some())
                .unwrap_or_else(|_| target.to_string_lossy().ends_with(".toml"));
            let tgt = if is_request {
                let req = load_request(&target)?;
                plan(&req, Some(&cur))?.placement
            } else {
                load_placement(&target)?
            };
            let steps = migrate::steps(&cur, &tgt)?;
            Ok(match format {
                Format::Json => json(&steps)?,
                Format::Text | Format::Markdown => {
                    let mut out = String::new();
                    for (i, s) in steps.iter().enumerate() {
                        out.push_str(&format!("{:>4}. {s}\n", i + 1));
                    }
                    if steps.is_empty() {
                        out.push_str("nothing to do: the placements are the same\n");
                    }
                    out
                }
                Format::Dot => {
                    bail!("--format dot draws a placement: use `redisha plan --format dot`")
                }
            })
        }
        // Handled by `main` before `run`.
        Command::External(_) => bail!("not a planner command"),
    }
}
