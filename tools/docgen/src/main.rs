//! `cargo run -p docgen` writes the provider's docs; `-- --check` only compares them with the
//! committed ones and exits 1 with a diff when they differ (CI runs it through scripts/test).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Writes docs/ from the provider's schema, templates/ and examples/")]
struct Args {
    /// Change nothing: exit 1 and print the differences when docs/ is not what would be written.
    #[arg(long)]
    check: bool,
    /// The repository root (default: the one this binary was built from).
    #[arg(long)]
    root: Option<PathBuf>,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let root = args
        .root
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let pages = docgen::pages::generate(&root).context("generating the docs")?;
    if args.check {
        let differences = docgen::check::compare(&root, &pages)?;
        if differences.is_empty() {
            println!("docgen: docs/ is up to date ({} pages)", pages.len());
            return Ok(ExitCode::SUCCESS);
        }
        for d in &differences {
            println!("{d}");
        }
        eprintln!(
            "docgen: {} page(s) of docs/ differ from the schema, templates/ and examples/: \
             run `cargo run -p docgen` and commit the result",
            differences.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    for d in docgen::check::write(&root, &pages)? {
        match d {
            docgen::check::Difference::Stale { path } => println!("removed {}", path.display()),
            docgen::check::Difference::Changed { path, .. }
            | docgen::check::Difference::Missing { path } => println!("wrote {}", path.display()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
