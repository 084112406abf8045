//! `redisha backup` (this program, `redisha-backup`): one backup of a running cluster, for cron
//! jobs and systemd timers. The password comes from `REDISHA_PASSWORD` or a file, never from
//! the command line (other users can read process arguments). Exit 0 with the backup's
//! location on stdout, 1 with the reason on stderr.

mod backup;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = backup::Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REDISHA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(backup::run(args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
