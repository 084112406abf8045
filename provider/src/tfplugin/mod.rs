//! A small Terraform plugin framework (plugin protocol v6 over tonic). It knows Terraform,
//! go-plugin and msgpack, and nothing of the provider built on it (it never names it),
//! and what ConfigureProvider produces is opaque to it (`framework::ProviderData`).
//!
//! Layers, bottom up: `types`/`value`/`codec` (cty types, values with unknown and null, the
//! msgpack and JSON encodings), `diagnostics` and `schema`, `framework` (typed models,
//! the `Resource` and `DataSource` traits, the `Registry`), `convert` and `server` (the
//! tfplugin6.Provider service), `plugin` and `tls` (go-plugin handshake, AutoMTLS,
//! controller, stdio, health).

pub mod codec;
pub mod convert;
pub mod diagnostics;
pub mod framework;
pub mod plugin;
pub mod proto;
pub mod schema;
pub mod server;
pub mod tls;
pub mod types;
pub mod value;

pub use diagnostics::{AttrPath, Diagnostic, Diagnostics};
pub use schema::{Attribute, Block, NestedBlock, Schema};
pub use types::Type;
pub use value::{Number, Value};
