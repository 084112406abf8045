//! The framework a resource or data source plugs into. The gRPC layer (`server`) decodes
//! values with the schema and calls the registry's raw traits (`raw`); typed resources and
//! data sources (`typed`) sit on top of them and never see a `Value`: their model (`model`)
//! is decoded from and encoded to `Value` here, once.
//!
//! Adding one: write its model with `model!`, implement `typed::Resource` or
//! `typed::DataSource` in its own module, then add one line to the provider's registry:
//!
//! ```ignore
//! Registry::new(MyProviderConfig)
//!     .named("example", "registry.terraform.io/example/example")
//!     .data_source(PlacementDataSource)
//!     .resource(ClusterResource)
//! ```
//!
//! What the framework does around the traits: decodes every DynamicValue with the schema's
//! object type, decodes models (range problems become diagnostics on the attribute), encodes
//! results with exactly the schema's attributes, plans replacement from the attributes marked
//! `requires_replace`, keeps the prior state (or the partial state a failed create reports)
//! when apply fails, catches panics (error diagnostic naming the RPC) and checks a data
//! source's result is fully known. What ConfigureProvider produced reaches every call as
//! opaque data (`Context::provider_data`); the provider downcasts it to its own type.

pub mod model;
pub mod raw;
pub mod typed;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::tfplugin::diagnostics::{Diagnostic, Diagnostics};
use crate::tfplugin::schema::Schema;
use crate::tfplugin::value::Value;

pub use model::{Attr, AttrType, Field, Model, Spec};
pub use raw::{
    ApplyRequest, ApplyResponse, Imported, PlanRequest, PlanResponse, RawDataSource, RawResource,
    ReadResponse,
};
pub use typed::{
    Applied, ApplyArgs, DataSource, Failed, Outcome, PlanArgs, Planned, Private, Resource,
};

/// What ConfigureProvider produced, opaque to the framework.
pub type ProviderData = Arc<dyn Any + Send + Sync>;

/// What ConfigureProvider produced, shared by every resource and data source call after it.
#[derive(Clone)]
pub struct ProviderState {
    pub terraform_version: String,
    /// The provider block, decoded with the provider schema.
    pub config: Value,
    /// The provider's own settings (see `ProviderConfig::configure`).
    pub data: ProviderData,
}

impl Default for ProviderState {
    fn default() -> Self {
        ProviderState {
            terraform_version: String::new(),
            config: Value::Null,
            data: Arc::new(()),
        }
    }
}

impl std::fmt::Debug for ProviderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderState")
            .field("terraform_version", &self.terraform_version)
            .finish_non_exhaustive()
    }
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

    /// The provider's own settings, as `ProviderConfig::configure` made them.
    pub fn provider_data<T: Any + Send + Sync>(&self) -> Result<Arc<T>, Diagnostic> {
        self.provider()?.data.clone().downcast::<T>().map_err(|_| {
            Diagnostic::error(
                "Provider data of an unexpected type",
                "ConfigureProvider stored other data than this call expects; this is a bug in the provider.",
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

/// The provider block's schema and what ConfigureProvider does with it.
#[async_trait]
pub trait ProviderConfig: Send + Sync + 'static {
    fn schema(&self) -> Schema;
    async fn validate(&self, _config: &Value) -> Diagnostics {
        Diagnostics::new()
    }
    /// The provider's settings, handed to every later call as `Context::provider_data`.
    async fn configure(
        &self,
        _terraform_version: &str,
        _config: &Value,
    ) -> Result<ProviderData, Diagnostics> {
        Ok(Arc::new(()))
    }
}

/// The provider block has no settings.
pub struct EmptyProviderConfig;

#[async_trait]
impl ProviderConfig for EmptyProviderConfig {
    fn schema(&self) -> Schema {
        Schema::default()
    }
}

/// Who the provider is, for messages, the plugin socket and TF_REATTACH_PROVIDERS.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// Short name, as in `provider "NAME" {}`; empty when not named.
    pub name: &'static str,
    /// Source address, `registry.terraform.io/NAMESPACE/NAME`.
    pub address: &'static str,
}

impl Identity {
    /// "the NAME provider", or "the provider".
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            "the provider".into()
        } else {
            format!("the {} provider", self.name)
        }
    }
}

/// Everything the provider serves, by type name.
pub struct Registry {
    pub identity: Identity,
    pub provider: Box<dyn ProviderConfig>,
    pub resources: BTreeMap<&'static str, Arc<dyn RawResource>>,
    pub data_sources: BTreeMap<&'static str, Arc<dyn RawDataSource>>,
}

impl Registry {
    pub fn new(provider: impl ProviderConfig) -> Self {
        Registry {
            identity: Identity {
                name: "",
                address: "",
            },
            provider: Box::new(provider),
            resources: BTreeMap::new(),
            data_sources: BTreeMap::new(),
        }
    }
    pub fn named(mut self, name: &'static str, address: &'static str) -> Self {
        self.identity = Identity { name, address };
        self
    }
    /// A resource with a typed model (the usual way).
    pub fn resource<R: Resource>(self, r: R) -> Self {
        self.raw_resource(typed::TypedResource(r))
    }
    /// A data source with a typed model (the usual way).
    pub fn data_source<D: DataSource>(self, d: D) -> Self {
        self.raw_data_source(typed::TypedDataSource(d))
    }
    /// A resource that handles the protocol's values itself.
    pub fn raw_resource(mut self, r: impl RawResource) -> Self {
        self.resources.insert(r.type_name(), Arc::new(r));
        self
    }
    /// A data source that handles the protocol's values itself.
    pub fn raw_data_source(mut self, d: impl RawDataSource) -> Self {
        self.data_sources.insert(d.type_name(), Arc::new(d));
        self
    }
}
