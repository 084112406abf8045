//! terraform-provider-redisha: the redisha resource and data sources, served through the
//! generic plugin framework in `tfplugin` (which knows nothing of redisha).
//!
//! Redisha's side: `registry` (what this provider serves), `provider_config` (the provider
//! block: the EC2 connection), `data_sources/*`, `resources/cluster/*`, `topology` (the
//! placement arguments shared by the cluster resource and the placement data source) and
//! `logging` (hclog lines for Terraform's log). Only this side knows HCL names.

// The cluster resource's apply nests deep futures (locate, recover, operator calls); clippy
// computes their layout and needs more than the default 128 levels.
#![recursion_limit = "256"]

pub mod aws_errors;
pub mod backups;
pub mod data_sources;
pub mod logging;
pub mod provider_config;
pub mod registry;
pub mod resources;
pub mod tfplugin;
pub mod topology;

// The framework's modules under their old paths, for callers outside the crate.
pub use tfplugin::{codec, diagnostics, framework, plugin, proto, schema, server, types, value};

pub use tfplugin::framework::{Context, DataSource, Model, ProviderState, Registry, Resource};
pub use tfplugin::{AttrPath, Diagnostic, Diagnostics};
pub use tfplugin::{Attribute, Block, NestedBlock, Schema};
pub use tfplugin::{Number, Type, Value};
