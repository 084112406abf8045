//! The `tfplugin6.Provider` gRPC service: decodes requests with the schema, dispatches to the
//! framework's registry and turns every failure, panics included, into diagnostics.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use futures::FutureExt;
use tonic::{Request, Response, Status};

use crate::tfplugin::convert::{
    codec_diag, decode_dynamic, diagnostics_to_pb, encode_dynamic, path_to_pb, schema_to_pb,
};
use crate::tfplugin::diagnostics::{Diagnostic, Diagnostics};
use crate::tfplugin::framework::{
    stop::StopSignal, ApplyRequest, Context, PlanRequest, ProviderState, RawDataSource,
    RawResource, Registry,
};
use crate::tfplugin::proto::tfplugin6 as pb;
use crate::tfplugin::proto::tfplugin6::provider_server::Provider;
use crate::tfplugin::types::Type;
use crate::tfplugin::value::Value;

/// Schemas and their value types, computed once at start-up.
struct Schemas {
    provider: pb::Schema,
    provider_type: Type,
    resources: HashMap<String, (pb::Schema, Type)>,
    data_sources: HashMap<String, (pb::Schema, Type)>,
}

pub struct ProviderService {
    registry: Arc<Registry>,
    /// "the NAME provider", for internal-error messages.
    label: String,
    schemas: Arc<Schemas>,
    configured: Arc<RwLock<Option<Arc<ProviderState>>>>,
    stop: StopSignal,
}

impl ProviderService {
    pub fn new(registry: Registry) -> Self {
        let provider_schema = registry.provider.schema();
        let schemas = Schemas {
            provider: schema_to_pb(&provider_schema),
            provider_type: provider_schema.value_type(),
            resources: registry
                .resources
                .iter()
                .map(|(n, r)| {
                    let s = r.schema();
                    (n.to_string(), (schema_to_pb(&s), s.value_type()))
                })
                .collect(),
            data_sources: registry
                .data_sources
                .iter()
                .map(|(n, d)| {
                    let s = d.schema();
                    (n.to_string(), (schema_to_pb(&s), s.value_type()))
                })
                .collect(),
        };
        ProviderService {
            label: registry.identity.label(),
            registry: Arc::new(registry),
            schemas: Arc::new(schemas),
            configured: Arc::new(RwLock::new(None)),
            stop: StopSignal::default(),
        }
    }

    fn context(&self) -> Context {
        let provider = match self.configured.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Context {
            provider,
            stop: self.stop.clone(),
        }
    }

    /// A resource type's value type and implementation.
    fn resource(&self, name: &str) -> Result<(&Type, &dyn RawResource), Diagnostics> {
        match (
            self.schemas.resources.get(name),
            self.registry.resources.get(name),
        ) {
            (Some((_, ty)), Some(r)) => Ok((ty, r.as_ref())),
            _ => Err(unknown_type("resource", name)),
        }
    }

    /// A data source type's value type and implementation.
    fn data_source(&self, name: &str) -> Result<(&Type, &dyn RawDataSource), Diagnostics> {
        match (
            self.schemas.data_sources.get(name),
            self.registry.data_sources.get(name),
        ) {
            (Some((_, ty)), Some(d)) => Ok((ty, d.as_ref())),
            _ => Err(unknown_type("data source", name)),
        }
    }

    /// A resource type's value type and implementation, and the request's values decoded with
    /// that type.
    fn resource_values<const N: usize>(
        &self,
        name: &str,
        rpc: &'static str,
        values: [(Option<&pb::DynamicValue>, &str); N],
    ) -> Result<(&Type, &dyn RawResource, [Value; N]), Diagnostics> {
        let (ty, res) = self.resource(name)?;
        Ok((ty, res, decode_all(rpc, ty, values)?))
    }

    /// For a plan or an apply: the resource and the prior state, the proposed or planned state
    /// (`next`) and the configuration, decoded.
    fn change_values(
        &self,
        name: &str,
        rpc: &'static str,
        prior: Option<&pb::DynamicValue>,
        next: (Option<&pb::DynamicValue>, &str),
        config: Option<&pb::DynamicValue>,
    ) -> Result<(&Type, &dyn RawResource, [Value; 3]), Diagnostics> {
        let values = [
            (prior, "the prior state"),
            next,
            (config, "the configuration"),
        ];
        self.resource_values(name, rpc, values)
    }

    /// ValidateResourceConfig and ValidateDataResourceConfig: decode, then validate.
    async fn validate_config(
        &self,
        kind: Kind,
        type_name: &str,
        config: Option<&pb::DynamicValue>,
    ) -> Vec<pb::Diagnostic> {
        let (rpc, found) = match kind {
            Kind::Resource => (
                "ValidateResourceConfig",
                self.resource(type_name)
                    .map(|(ty, r)| (ty, Validates::Resource(r))),
            ),
            Kind::DataSource => (
                "ValidateDataResourceConfig",
                self.data_source(type_name)
                    .map(|(ty, d)| (ty, Validates::DataSource(d))),
            ),
        };
        let ((), diags) = guarded(&self.label, rpc, || (), async {
            let (ty, target) = match found {
                Ok(found) => found,
                Err(d) => return ((), d),
            };
            let [config] = match decode_all(rpc, ty, [(config, "the configuration")]) {
                Ok(decoded) => decoded,
                Err(d) => return ((), d),
            };
            let ctx = self.context();
            let diags = match target {
                Validates::Resource(r) => r.validate(&ctx, &config).await,
                Validates::DataSource(d) => d.validate(&ctx, &config).await,
            };
            ((), diags)
        })
        .await;
        diagnostics_to_pb(&diags)
    }
}

/// Which registry a validate call looks the type up in.
enum Kind {
    Resource,
    DataSource,
}

/// What a validate call checks a configuration with.
enum Validates<'a> {
    Resource(&'a dyn RawResource),
    DataSource(&'a dyn RawDataSource),
}

/// Decodes the values one RPC carries, each named for its diagnostic; every value that does
/// not decode is reported, not only the first.
fn decode_all<const N: usize>(
    rpc: &'static str,
    ty: &Type,
    values: [(Option<&pb::DynamicValue>, &str); N],
) -> Result<[Value; N], Diagnostics> {
    let mut diags = Diagnostics::new();
    let mut decoded = Vec::with_capacity(N);
    for (value, what) in values {
        match decode_dynamic(value, ty) {
            Ok(v) => decoded.push(v),
            Err(e) => diags.push(codec_diag(rpc, what, &e)),
        }
    }
    <[Value; N]>::try_from(decoded).map_err(|_| diags)
}

/// A read's or an apply's answer: the new state encoded, with its private state; when the state
/// does not encode (a provider bug), what `keep` gives (Terraform must not lose the object).
fn new_state(
    rpc: &'static str,
    ty: &Type,
    state: &Value,
    private: Vec<u8>,
    mut diags: Diagnostics,
    keep: impl FnOnce() -> (Option<pb::DynamicValue>, Vec<u8>),
) -> ((Option<pb::DynamicValue>, Vec<u8>), Diagnostics) {
    match encode_into(rpc, "the new state", ty, state, &mut diags) {
        Some(dv) => ((Some(dv), private), diags),
        None => (keep(), diags),
    }
}

/// Encodes a call's result. A value that does not fit the schema (a provider bug) adds its
/// codec error to the call's diagnostics and yields nothing.
fn encode_into(
    rpc: &'static str,
    what: &str,
    ty: &Type,
    value: &Value,
    diags: &mut Diagnostics,
) -> Option<pb::DynamicValue> {
    encode_dynamic(value, ty)
        .map_err(|e| diags.push(codec_diag(rpc, what, &e)))
        .ok()
}

fn unknown_type(kind: &str, name: &str) -> Diagnostics {
    Diagnostic::error(
        format!("Unknown {kind} type {name:?}"),
        "This provider does not have it; check the spelling or the provider version.",
    )
    .into()
}

/// Runs one RPC's body; a panic becomes an error diagnostic naming the RPC, so Terraform shows
/// a message instead of a lost plugin.
async fn guarded<T>(
    provider: &str,
    rpc: &'static str,
    fallback: impl FnOnce() -> T,
    body: impl Future<Output = (T, Diagnostics)>,
) -> (T, Diagnostics) {
    tracing::debug!(rpc, "rpc start");
    let started = std::time::Instant::now();
    match AssertUnwindSafe(body).catch_unwind().await {
        Ok(out) => {
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            tracing::debug!(rpc, elapsed_ms, errors = out.1.has_errors(), "rpc done");
            out
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(rpc, panic = %msg, "provider bug: panic in rpc");
            (
                fallback(),
                Diagnostic::error(
                    format!("Internal error in {provider} during {rpc}"),
                    format!("{msg}\n\nThis is a bug; please report it with the configuration that triggers it."),
                )
                .into(),
            )
        }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

/// The RPCs' bodies: the trait methods below only unwrap the request and wrap the response.
impl ProviderService {
    async fn on_validate_provider_config(
        &self,
        req: pb::validate_provider_config::Request,
    ) -> pb::validate_provider_config::Response {
        const RPC: &str = "ValidateProviderConfig";
        let ((), diags) = guarded(&self.label, RPC, || (), async {
            match decode_dynamic(req.config.as_ref(), &self.schemas.provider_type) {
                Ok(config) => ((), self.registry.provider.validate(&config).await),
                Err(e) => ((), codec_diag(RPC, "the provider config", &e).into()),
            }
        })
        .await;
        pb::validate_provider_config::Response {
            diagnostics: diagnostics_to_pb(&diags),
        }
    }

    async fn on_upgrade_resource_state(
        &self,
        req: pb::upgrade_resource_state::Request,
    ) -> pb::upgrade_resource_state::Response {
        const RPC: &str = "UpgradeResourceState";
        let (state, diags) = guarded(&self.label, RPC, || None, async {
            let (ty, res) = match self.resource(&req.type_name) {
                Ok(found) => found,
                Err(d) => return (None, d),
            };
            let raw = req.raw_state.map(|r| r.json).unwrap_or_default();
            let decoded = match crate::tfplugin::codec::decode_json(&raw, ty) {
                Ok(v) => v,
                Err(e) => return (None, codec_diag(RPC, "the stored state", &e).into()),
            };
            match res.upgrade(&self.context(), req.version, decoded).await {
                Ok(v) => {
                    let mut diags = Diagnostics::new();
                    (
                        encode_into(RPC, "the upgraded state", ty, &v, &mut diags),
                        diags,
                    )
                }
                Err(d) => (None, d),
            }
        })
        .await;
        pb::upgrade_resource_state::Response {
            upgraded_state: state,
            diagnostics: diagnostics_to_pb(&diags),
        }
    }

    async fn on_configure_provider(
        &self,
        req: pb::configure_provider::Request,
    ) -> pb::configure_provider::Response {
        const RPC: &str = "ConfigureProvider";
        let ((), diags) = guarded(&self.label, RPC, || (), async {
            let config = match decode_dynamic(req.config.as_ref(), &self.schemas.provider_type) {
                Ok(c) => c,
                Err(e) => return ((), codec_diag(RPC, "the provider config", &e).into()),
            };
            match self
                .registry
                .provider
                .configure(&req.terraform_version, &config)
                .await
            {
                Ok(data) => {
                    let state = ProviderState {
                        terraform_version: req.terraform_version.clone(),
                        config,
                        data,
                    };
                    let mut slot = match self.configured.write() {
                        Ok(g) => g,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    *slot = Some(Arc::new(state));
                    ((), Diagnostics::new())
                }
                Err(d) => ((), d),
            }
        })
        .await;
        pb::configure_provider::Response {
            diagnostics: diagnostics_to_pb(&diags),
        }
    }

    async fn on_read_resource(
        &self,
        req: pb::read_resource::Request,
    ) -> pb::read_resource::Response {
        const RPC: &str = "ReadResource";
        // On failure, keep what Terraform sent: returning nothing would drop the object.
        let keep = || (req.current_state.clone(), req.private.clone());
        let ((state, private), diags) = guarded(&self.label, RPC, keep, async {
            let found = self.resource_values(
                &req.type_name,
                RPC,
                [(req.current_state.as_ref(), "the current state")],
            );
            let (ty, res, [current]) = match found {
                Ok(found) => found,
                Err(d) => return (keep(), d),
            };
            let out = res
                .read(&self.context(), current, req.private.clone())
                .await;
            new_state(RPC, ty, &out.new_state, out.private, out.diagnostics, keep)
        })
        .await;
        pb::read_resource::Response {
            new_state: state,
            diagnostics: diagnostics_to_pb(&diags),
            private,
        }
    }

    async fn on_plan_resource_change(
        &self,
        req: pb::plan_resource_change::Request,
    ) -> pb::plan_resource_change::Response {
        const RPC: &str = "PlanResourceChange";
        let nothing = || (None, Vec::new(), Vec::new());
        let ((planned, replace, private), diags) = guarded(&self.label, RPC, nothing, async {
            let next = (req.proposed_new_state.as_ref(), "the proposed state");
            let (prior, config) = (req.prior_state.as_ref(), req.config.as_ref());
            let found = self.change_values(&req.type_name, RPC, prior, next, config);
            let (ty, res, [prior_state, proposed_new_state, config]) = match found {
                Ok(found) => found,
                Err(d) => return (nothing(), d),
            };
            let plan_req = PlanRequest {
                prior_state,
                proposed_new_state,
                config,
                prior_private: req.prior_private.clone(),
            };
            let mut out = res.plan(&self.context(), plan_req).await;
            let planned = &out.planned_state;
            match encode_into(RPC, "the planned state", ty, planned, &mut out.diagnostics) {
                Some(dv) => {
                    let replace = out.requires_replace.iter().map(path_to_pb).collect();
                    ((Some(dv), replace, out.planned_private), out.diagnostics)
                }
                None => (nothing(), out.diagnostics),
            }
        })
        .await;
        pb::plan_resource_change::Response {
            planned_state: planned,
            requires_replace: replace,
            planned_private: private,
            diagnostics: diagnostics_to_pb(&diags),
            legacy_type_system: false,
        }
    }

    async fn on_apply_resource_change(
        &self,
        req: pb::apply_resource_change::Request,
    ) -> pb::apply_resource_change::Response {
        const RPC: &str = "ApplyResourceChange";
        // On failure return the prior state with the planned private state: Terraform must
        // never lose track of an object, nor the handles that find what it is made of (a
        // panic keeps them too; the resource rebuilds anything newer from its nodes).
        let keep = || (req.prior_state.clone(), req.planned_private.clone());
        let ((state, private), diags) = guarded(&self.label, RPC, keep, async {
            let next = (req.planned_state.as_ref(), "the planned state");
            let (prior, config) = (req.prior_state.as_ref(), req.config.as_ref());
            let found = self.change_values(&req.type_name, RPC, prior, next, config);
            let (ty, res, [prior_state, planned_state, config]) = match found {
                Ok(found) => found,
                Err(d) => return (keep(), d),
            };
            let apply_req = ApplyRequest {
                prior_state,
                planned_state,
                config,
                planned_private: req.planned_private.clone(),
            };
            let out = res.apply(&self.context(), apply_req).await;
            new_state(RPC, ty, &out.new_state, out.private, out.diagnostics, keep)
        })
        .await;
        pb::apply_resource_change::Response {
            new_state: state,
            private,
            diagnostics: diagnostics_to_pb(&diags),
            legacy_type_system: false,
        }
    }

    async fn on_import_resource_state(
        &self,
        req: pb::import_resource_state::Request,
    ) -> pb::import_resource_state::Response {
        const RPC: &str = "ImportResourceState";
        let (imported, diags) = guarded(&self.label, RPC, Vec::new, async {
            let (ty, res) = match self.resource(&req.type_name) {
                Ok(found) => found,
                Err(d) => return (Vec::new(), d),
            };
            let items = match res.import(&self.context(), &req.id).await {
                Ok(items) => items,
                Err(d) => return (Vec::new(), d),
            };
            let mut diags = Diagnostics::new();
            let mut out = Vec::new();
            for item in items {
                let Some(dv) = encode_into(RPC, "the imported state", ty, &item.state, &mut diags)
                else {
                    return (Vec::new(), diags);
                };
                out.push(pb::import_resource_state::ImportedResource {
                    type_name: req.type_name.clone(),
                    state: Some(dv),
                    private: item.private,
                });
            }
            (out, diags)
        })
        .await;
        pb::import_resource_state::Response {
            imported_resources: imported,
            diagnostics: diagnostics_to_pb(&diags),
        }
    }

    async fn on_read_data_source(
        &self,
        req: pb::read_data_source::Request,
    ) -> pb::read_data_source::Response {
        const RPC: &str = "ReadDataSource";
        let (state, diags) =
            guarded(&self.label, RPC, || None, async {
                let found = self.data_source(&req.type_name).and_then(|(ty, ds)| {
                    let [config] =
                        decode_all(RPC, ty, [(req.config.as_ref(), "the configuration")])?;
                    Ok((ty, ds, config))
                });
                let (ty, ds, config) = match found {
                    Ok(found) => found,
                    Err(d) => return (None, d),
                };
                match ds.read(&self.context(), &config).await {
                Ok(state) if !state.is_fully_known() => (
                    None,
                    Diagnostic::error(
                        format!("{RPC}: {} returned unknown values", req.type_name),
                        "A data source result must be fully known; this is a bug in the provider.",
                    )
                    .into(),
                ),
                Ok(state) => {
                    let mut diags = Diagnostics::new();
                    (encode_into(RPC, "the result", ty, &state, &mut diags), diags)
                }
                Err(d) => (None, d),
            }
            })
            .await;
        pb::read_data_source::Response {
            state,
            diagnostics: diagnostics_to_pb(&diags),
        }
    }
}

/// Trait methods that hand an RPC to its `on_*` body. They are written out in the form
/// `#[tonic::async_trait]` gives every method of the trait (a boxed future borrowing `self`),
/// because that attribute does not see into macros.
macro_rules! forward_rpcs {
    // One trait method: `$body` computes the response from `$req` (the unwrapped request).
    (@one $rpc:ident, |$this:ident, $req:ident| $body:expr) => {
        fn $rpc<'life0, 'async_trait>(
            &'life0 self,
            req: Request<pb::$rpc::Request>,
        ) -> Pin<Box<dyn Future<Output = RpcResult<pb::$rpc::Response>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let ($this, $req) = (self, req.into_inner());
                Ok(Response::new($body))
            })
        }
    };
    // The validate RPCs: a type name and a configuration, checked by `validate_config`.
    (validate { $($rpc:ident: $kind:expr;)* } bodies { $($other:ident => $body:ident;)* }) => {
        $(forward_rpcs!(@one $rpc, |this, req| pb::$rpc::Response {
            diagnostics: this.validate_config($kind, &req.type_name, req.config.as_ref()).await,
        });)*
        $(forward_rpcs!(@one $other, |this, req| this.$body(req).await);)*
    };
}

#[tonic::async_trait]
impl Provider for ProviderService {
    // The RPCs with a body of their own in `impl ProviderService` (`on_*`): the trait method
    // only unwraps the request and wraps the response.
    forward_rpcs! {
        validate {
            validate_resource_config: Kind::Resource;
            validate_data_resource_config: Kind::DataSource;
        }
        bodies {
        read_resource => on_read_resource;
        validate_provider_config => on_validate_provider_config;
        upgrade_resource_state => on_upgrade_resource_state;
        configure_provider => on_configure_provider;
        plan_resource_change => on_plan_resource_change;
        apply_resource_change => on_apply_resource_change;
        import_resource_state => on_import_resource_state;
        read_data_source => on_read_data_source;
        }
    }

    async fn get_provider_schema(
        &self,
        _req: Request<pb::get_provider_schema::Request>,
    ) -> RpcResult<pb::get_provider_schema::Response> {
        tracing::debug!(rpc = "GetProviderSchema", "rpc start");
        let s = &self.schemas;
        Ok(Response::new(pb::get_provider_schema::Response {
            provider: Some(s.provider.clone()),
            resource_schemas: s
                .resources
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect(),
            data_source_schemas: s
                .data_sources
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect(),
            diagnostics: Vec::new(),
            provider_meta: None,
            server_capabilities: Some(pb::ServerCapabilities {
                plan_destroy: false,
                get_provider_schema_optional: false,
                move_resource_state: false,
            }),
        }))
    }

    async fn stop_provider(
        &self,
        _req: Request<pb::stop_provider::Request>,
    ) -> RpcResult<pb::stop_provider::Response> {
        tracing::info!("StopProvider received: cancelling running operations");
        self.stop.stop();
        Ok(Response::new(pb::stop_provider::Response {
            error: String::new(),
        }))
    }
}
