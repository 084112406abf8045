//! Entry point: Terraform starts this binary with the magic cookie; a person running it by
//! hand gets an explanation and exit code 1; `--debug` serves standalone for TF_REATTACH_PROVIDERS.

use terraform_provider_redisha::tfplugin::plugin;
use terraform_provider_redisha::{logging, registry};

fn main() -> std::process::ExitCode {
    let debug = std::env::args()
        .skip(1)
        .any(|a| a == "--debug" || a == "-debug");
    if !debug
        && std::env::var(plugin::MAGIC_COOKIE_KEY).as_deref() != Ok(plugin::MAGIC_COOKIE_VALUE)
    {
        eprintln!("{}", plugin::not_a_plugin_message(&registry::IDENTITY));
        return std::process::ExitCode::from(1);
    }
    logging::init();
    // A panic outside an RPC (RPC panics become diagnostics) is logged as a JSON line too.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "terraform-provider-redisha panicked");
    }));
    match run(debug) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "provider failed");
            eprintln!("terraform-provider-redisha: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run(debug: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if debug {
            plugin::serve_debug(registry::registry()).await?;
        } else {
            plugin::serve_plugin(registry::registry()).await?;
        }
        Ok(())
    })
}
