//! The small framework a resource or data source plugs into. The gRPC layer (`server`)
//! decodes values with the schema, calls these traits, and encodes results and diagnostics;
//! implementations only see `Value`s and return `Diagnostics` with attribute paths.
//!
//! Adding one: implement `DataSource` or `Resource` in its own module, then add one line to
//! `registry::registry()`:
//!
//! ```ignore
//! Registry::new(RedishaProviderConfig)
//!     .data_source(PlacementDataSource)
//!     .resource(ClusterResource) // fn type_name() -> "redisha_cluster"
//! ```
//!
//! What the server does around the traits: decodes every DynamicValue with the schema's object
//! type (so `Value::get("zone")` on a block list is a `Value::List` of objects, never missing),
//! encodes results with exactly the schema's attributes, catches panics (error diagnostic naming
//! the RPC), keeps the prior state when apply or read fail to encode, and checks a data source's
//! result is fully known. `attrs::*` pull typed values out of config with diagnostics on the
//! attribute; `Block::fill` builds a data source's state from config plus computed values;
//! `Block::mark_computed_unknown` is the usual create/update plan. Provider settings live in
//! `ProviderState` (from `ProviderConfig::configure`), reached through `Context::provider()`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::schema::Schema;
use crate::value::Value;

/// What ConfigureProvider produced, shared by every resource and data source call after it.
/// AWS settings (`region`, `endpoint`, `assume_role`) go here when the provider block has them.
#[derive(Debug, Clone, Default)]
pub struct ProviderState {
    pub terraform_version: String,
    /// The `provider "redisha" {}` block, decoded with the provider schema.
    pub config: Value,
    /// The EC2 connection (`region`, `endpoint`, `assume_role`); `None` when no region is
    /// set anywhere (provider block, AWS_REGION, AWS_DEFAULT_REGION). Only the aws driver and
    /// the aws topology data source need it: see `provider_config::aws_settings`.
    pub aws: Option<redisha_aws::AwsSettings>,
}

/// Passed to every resource/data source call.
#[derive(Clone)]
pub struct Context {
    /// `None` before ConfigureProvider (validate calls run before it).
    pub provider: Option<Arc<ProviderState>>,
    /// Cancelled when Terraform sends StopProvider (Ctrl-C): long operations should return.
    pub stop: stop::StopSignal,
}

impl Context {
    /// The configured provider, or an error diagnostic when ConfigureProvider has not run.
    pub fn provider(&self) -> Result<Arc<ProviderState>, Diagnostic> {
        self.provider.clone().ok_or_else(|| {
            Diagnostic::error(
                "Provider not configured",
                "ConfigureProvider must run before this call; this is a bug in Terraform or the provider.",
            )
        })
    }
}

/// A tiny stop flag with async wait, so implementations need no extra dependency.
pub mod stop {
    use std::sync::Arc;
    use tokio::sync::watch;

    #[derive(Clone)]
    pub struct StopSignal(Arc<watch::Sender<bool>>);

    impl Default for StopSignal {
        fn default() -> Self {
            StopSignal(Arc::new(watch::channel(false).0))
        }
    }

    impl StopSignal {
        pub fn stop(&self) {
            self.0.send_replace(true);
        }
        pub fn is_stopped(&self) -> bool {
            *self.0.borrow()
        }
        /// Resolves once StopProvider has been received.
        pub async fn stopped(&self) {
            let mut rx = self.0.subscribe();
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

#[async_trait]
pub trait DataSource: Send + Sync + 'static {
    /// `redisha_placement`.
    fn type_name(&self) -> &'static str;
    fn schema(&self) -> Schema;
    /// Checks config at plan time. Values may be unknown: check what is known, skip the rest.
    async fn validate(&self, _ctx: &Context, _config: &Value) -> Diagnostics {
        Diagnostics::new()
    }
    /// Returns the full state object (config plus every computed attribute, all known).
    /// Only called with fully known config.
    async fn read(&self, ctx: &Context, config: &Value) -> Result<Value, Diagnostics>;
}

pub struct PlanRequest {
    /// Null when creating.
    pub prior_state: Value,
    /// Config merged with prior state for unset computed attributes (Terraform's proposal).
    /// Null when destroying.
    pub proposed_new_state: Value,
    pub config: Value,
    pub prior_private: Vec<u8>,
}

pub struct PlanResponse {
    /// Unknown for every computed value only learnt at apply.
    pub planned_state: Value,
    /// Attribute paths whose change forces replacement.
    pub requires_replace: Vec<crate::diagnostics::AttrPath>,
    pub planned_private: Vec<u8>,
    pub diagnostics: Diagnostics,
}

pub struct ApplyRequest {
    pub prior_state: Value,
    /// Null when destroying.
    pub planned_state: Value,
    pub config: Value,
    pub planned_private: Vec<u8>,
}

pub struct ApplyResponse {
    /// Fully known; null after a delete. On error: the partial or prior state, never nothing.
    pub new_state: Value,
    pub private: Vec<u8>,
    pub diagnostics: Diagnostics,
}

pub struct ReadResponse {
    /// Null when the object is gone (the next plan creates it).
    pub new_state: Value,
    pub private: Vec<u8>,
    pub diagnostics: Diagnostics,
}

pub struct Imported {
    pub state: Value,
    pub private: Vec<u8>,
}

#[async_trait]
pub trait Resource: Send + Sync + 'static {
    /// `redisha_cluster`.
    fn type_name(&self) -> &'static str;
    fn schema(&self) -> Schema;
    async fn validate(&self, _ctx: &Context, _config: &Value) -> Diagnostics {
        Diagnostics::new()
    }
    /// Brings state written by an older schema version up to the current one. The default
    /// keeps it as decoded with the current schema (unknown attributes dropped).
    async fn upgrade(
        &self,
        _ctx: &Context,
        _version: i64,
        state: Value,
    ) -> Result<Value, Diagnostics> {
        Ok(state)
    }
    async fn plan(&self, ctx: &Context, req: PlanRequest) -> PlanResponse;
    async fn apply(&self, ctx: &Context, req: ApplyRequest) -> ApplyResponse;
    async fn read(&self, ctx: &Context, state: Value, private: Vec<u8>) -> ReadResponse;
    async fn import(&self, _ctx: &Context, _id: &str) -> Result<Vec<Imported>, Diagnostics> {
        Err(Diagnostic::error(
            format!("{} does not support import", self.type_name()),
            "Create it with terraform apply instead.",
        )
        .into())
    }
}

/// The provider block's schema and what ConfigureProvider does with it.
#[async_trait]
pub trait ProviderConfig: Send + Sync + 'static {
    fn schema(&self) -> Schema;
    async fn validate(&self, _config: &Value) -> Diagnostics {
        Diagnostics::new()
    }
    async fn configure(
        &self,
        terraform_version: &str,
        config: Value,
    ) -> Result<ProviderState, Diagnostics> {
        Ok(ProviderState {
            terraform_version: terraform_version.to_string(),
            config,
            aws: None,
        })
    }
}

/// The provider block has no settings yet.
pub struct EmptyProviderConfig;

#[async_trait]
impl ProviderConfig for EmptyProviderConfig {
    fn schema(&self) -> Schema {
        Schema::default()
    }
}

/// Everything the provider serves, by type name.
pub struct Registry {
    pub provider: Box<dyn ProviderConfig>,
    pub resources: BTreeMap<&'static str, Arc<dyn Resource>>,
    pub data_sources: BTreeMap<&'static str, Arc<dyn DataSource>>,
}

impl Registry {
    pub fn new(provider: impl ProviderConfig) -> Self {
        Registry {
            provider: Box::new(provider),
            resources: BTreeMap::new(),
            data_sources: BTreeMap::new(),
        }
    }
    pub fn resource(mut self, r: impl Resource) -> Self {
        self.resources.insert(r.type_name(), Arc::new(r));
        self
    }
    pub fn data_source(mut self, d: impl DataSource) -> Self {
        self.data_sources.insert(d.type_name(), Arc::new(d));
        self
    }
}
