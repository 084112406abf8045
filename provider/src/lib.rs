//! terraform-provider-redisha: Terraform plugin protocol v6 over tonic, a small framework that
//! resources and data sources plug into (`framework`), and the redisha data sources.
//!
//! Layers, bottom up: `types`/`value`/`codec` (cty types, values with unknown and null, the
//! msgpack and JSON encodings), `diagnostics` and `schema`, `framework` (the `Resource` and
//! `DataSource` traits and the `Registry`), `server` (the tfplugin6.Provider service),
//! `plugin` (go-plugin handshake, AutoMTLS, controller, stdio, health) and `registry` (what
//! this provider serves).

pub mod attrs;
pub mod codec;
pub mod convert;
pub mod data_sources;
pub mod diagnostics;
pub mod framework;
pub mod logging;
pub mod plugin;
pub mod proto;
pub mod provider_config;
pub mod registry;
pub mod resources;
pub mod schema;
pub mod server;
pub mod tls;
pub mod types;
pub mod value;

pub use diagnostics::{AttrPath, Diagnostic, Diagnostics};
pub use framework::{Context, DataSource, ProviderState, Registry, Resource};
pub use schema::{Attribute, Block, NestedBlock, Schema};
pub use types::Type;
pub use value::{Number, Value};
