//! The `tfplugin6.Provider` gRPC service: decodes requests with the schema, dispatches to the
//! framework's registry and turns every failure, panics included, into diagnostics.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
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

    /// ValidateResourceConfig and ValidateDataResourceConfig: decode, then validate.
    async fn validate_config(
        &self,
        rpc: &'static str,
        found: Result<(&Type, Validates<'_>), Diagnostics>,
        config: Option<&pb::DynamicValue>,
    ) -> Vec<pb::Diagnostic> {
        let ((), diags) = guarded(&self.label, rpc, || (), async {
            let (ty, target) = match found {
                Ok(found) => found,
                Err(d) => return ((), d),
            };
            let config = match decode_dynamic(config, ty) {
                Ok(config) => config,
                Err(e) => return ((), codec_diag(rpc, "the configuration", &e).into()),
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

/// What a validate call checks a configuration with.
enum Validates<'a> {
    Resource(&'a dyn RawResource),
    DataSource(&'a dyn RawDataSource),
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

#[tonic::async_trait]
impl Provider for ProviderService {
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

    async fn validate_provider_config(
        &self,
        req: Request<pb::validate_provider_config::Request>,
    ) -> RpcResult<pb::validate_provider_config::Response> {
        const RPC: &str = "ValidateProviderConfig";
        let req = req.into_inner();
        let ((), diags) = guarded(&self.label, RPC, || (), async {
            match decode_dynamic(req.config.as_ref(), &self.schemas.provider_type) {
                Ok(config) => ((), self.registry.provider.validate(&config).await),
                Err(e) => ((), codec_diag(RPC, "the provider config", &e).into()),
            }
        })
        .await;
        Ok(Response::new(pb::validate_provider_config::Response {
            diagnostics: diagnostics_to_pb(&diags),
        }))
    }

    async fn validate_resource_config(
        &self,
        req: Request<pb::validate_resource_config::Request>,
    ) -> RpcResult<pb::validate_resource_config::Response> {
        let req = req.into_inner();
        let found = self.resource(&req.type_name);
        let found = found.map(|(ty, r)| (ty, Validates::Resource(r)));
        let diagnostics = self
            .validate_config("ValidateResourceConfig", found, req.config.as_ref())
            .await;
        Ok(Response::new(pb::validate_resource_config::Response {
            diagnostics,
        }))
    }

    async fn validate_data_resource_config(
        &self,
        req: Request<pb::validate_data_resource_config::Request>,
    ) -> RpcResult<pb::validate_data_resource_config::Response> {
        let req = req.into_inner();
        let found = self.data_source(&req.type_name);
        let found = found.map(|(ty, d)| (ty, Validates::DataSource(d)));
        let diagnostics = self
            .validate_config("ValidateDataResourceConfig", found, req.config.as_ref())
            .await;
        Ok(Response::new(pb::validate_data_resource_config::Response {
            diagnostics,
        }))
    }

    async fn upgrade_resource_state(
        &self,
        req: Request<pb::upgrade_resource_state::Request>,
    ) -> RpcResult<pb::upgrade_resource_state::Response> {
        const RPC: &str = "UpgradeResourceState";
        let req = req.into_inner();
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
                Ok(v) => match encode_dynamic(&v, ty) {
                    Ok(dv) => (Some(dv), Diagnostics::new()),
                    Err(e) => (None, codec_diag(RPC, "the upgraded state", &e).into()),
                },
                Err(d) => (None, d),
            }
        })
        .await;
        Ok(Response::new(pb::upgrade_resource_state::Response {
            upgraded_state: state,
            diagnostics: diagnostics_to_pb(&diags),
        }))
    }

    async fn configure_provider(
        &self,
        req: Request<pb::configure_provider::Request>,
    ) -> RpcResult<pb::configure_provider::Response> {
        const RPC: &str = "ConfigureProvider";
        let req = req.into_inner();
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
        Ok(Response::new(pb::configure_provider::Response {
            diagnostics: diagnostics_to_pb(&diags),
        }))
    }

    async fn read_resource(
        &self,
        req: Request<pb::read_resource::Request>,
    ) -> RpcResult<pb::read_resource::Response> {
        const RPC: &str = "ReadResource";
        let req = req.into_inner();
        // On failure, keep what Terraform sent: returning nothing would drop the object.
        let fallback_state = req.current_state.clone();
        let fallback_private = req.private.clone();
        let ((state, private), diags) = guarded(
            &self.label,
            RPC,
            || (fallback_state.clone(), fallback_private.clone()),
            async {
                let keep = (req.current_state.clone(), req.private.clone());
                let (ty, res) = match self.resource(&req.type_name) {
                    Ok(found) => found,
                    Err(d) => return (keep, d),
                };
                let current = match decode_dynamic(req.current_state.as_ref(), ty) {
                    Ok(v) => v,
                    Err(e) => return (keep, codec_diag(RPC, "the current state", &e).into()),
                };
                let out = res
                    .read(&self.context(), current, req.private.clone())
                    .await;
                match encode_dynamic(&out.new_state, ty) {
                    Ok(dv) => ((Some(dv), out.private), out.diagnostics),
                    Err(e) => {
                        let mut d = out.diagnostics;
                        d.push(codec_diag(RPC, "the new state", &e));
                        (keep, d)
                    }
                }
            },
        )
        .await;
        Ok(Response::new(pb::read_resource::Response {
            new_state: state,
            diagnostics: diagnostics_to_pb(&diags),
            private,
        }))
    }

    async fn plan_resource_change(
        &self,
        req: Request<pb::plan_resource_change::Request>,
    ) -> RpcResult<pb::plan_resource_change::Response> {
        const RPC: &str = "PlanResourceChange";
        let req = req.into_inner();
        let ((planned, replace, private), diags) =
            guarded(&self.label, RPC, || (None, Vec::new(), Vec::new()), async {
                let (ty, res) = match self.resource(&req.type_name) {
                    Ok(found) => found,
                    Err(d) => return ((None, Vec::new(), Vec::new()), d),
                };
                let decode = |v: Option<&pb::DynamicValue>, what: &str| {
                    decode_dynamic(v, ty).map_err(|e| codec_diag(RPC, what, &e))
                };
                let plan_req = match (
                    decode(req.prior_state.as_ref(), "the prior state"),
                    decode(req.proposed_new_state.as_ref(), "the proposed state"),
                    decode(req.config.as_ref(), "the configuration"),
                ) {
                    (Ok(prior_state), Ok(proposed_new_state), Ok(config)) => PlanRequest {
                        prior_state,
                        proposed_new_state,
                        config,
                        prior_private: req.prior_private.clone(),
                    },
                    (a, b, c) => {
                        let d = [a.err(), b.err(), c.err()].into_iter().flatten().collect();
                        return ((None, Vec::new(), Vec::new()), d);
                    }
                };
                let out = res.plan(&self.context(), plan_req).await;
                match encode_dynamic(&out.planned_state, ty) {
                    Ok(dv) => (
                        (
                            Some(dv),
                            out.requires_replace.iter().map(path_to_pb).collect(),
                            out.planned_private,
                        ),
                        out.diagnostics,
                    ),
                    Err(e) => {
                        let mut d = out.diagnostics;
                        d.push(codec_diag(RPC, "the planned state", &e));
                        ((None, Vec::new(), Vec::new()), d)
                    }
                }
            })
            .await;
        Ok(Response::new(pb::plan_resource_change::Response {
            planned_state: planned,
            requires_replace: replace,
            planned_private: private,
            diagnostics: diagnostics_to_pb(&diags),
            legacy_type_system: false,
        }))
    }

    async fn apply_resource_change(
        &self,
        req: Request<pb::apply_resource_change::Request>,
    ) -> RpcResult<pb::apply_resource_change::Response> {
        const RPC: &str = "ApplyResourceChange";
        let req = req.into_inner();
        // On failure return the prior state with the planned private state: Terraform must
        // never lose track of an object, nor the handles that find what it is made of (a
        // panic keeps them too; the resource rebuilds anything newer from its nodes).
        let prior = req.prior_state.clone();
        let planned_private = req.planned_private.clone();
        let fallback = || (prior.clone(), planned_private.clone());
        let ((state, private), diags) = guarded(&self.label, RPC, fallback, async {
            let keep = (req.prior_state.clone(), req.planned_private.clone());
            let (ty, res) = match self.resource(&req.type_name) {
                Ok(found) => found,
                Err(d) => return (keep, d),
            };
            let decode = |v: Option<&pb::DynamicValue>, what: &str| {
                decode_dynamic(v, ty).map_err(|e| codec_diag(RPC, what, &e))
            };
            let apply_req = match (
                decode(req.prior_state.as_ref(), "the prior state"),
                decode(req.planned_state.as_ref(), "the planned state"),
                decode(req.config.as_ref(), "the configuration"),
            ) {
                (Ok(prior_state), Ok(planned_state), Ok(config)) => ApplyRequest {
                    prior_state,
                    planned_state,
                    config,
                    planned_private: req.planned_private.clone(),
                },
                (a, b, c) => {
                    return (
                        keep,
                        [a.err(), b.err(), c.err()].into_iter().flatten().collect(),
                    )
                }
            };
            let out = res.apply(&self.context(), apply_req).await;
            match encode_dynamic(&out.new_state, ty) {
                Ok(dv) => ((Some(dv), out.private), out.diagnostics),
                Err(e) => {
                    let mut d = out.diagnostics;
                    d.push(codec_diag(RPC, "the new state", &e));
                    (keep, d)
                }
            }
        })
        .await;
        Ok(Response::new(pb::apply_resource_change::Response {
            new_state: state,
            private,
            diagnostics: diagnostics_to_pb(&diags),
            legacy_type_system: false,
        }))
    }

    async fn import_resource_state(
        &self,
        req: Request<pb::import_resource_state::Request>,
    ) -> RpcResult<pb::import_resource_state::Response> {
        const RPC: &str = "ImportResourceState";
        let req = req.into_inner();
        let (imported, diags) = guarded(&self.label, RPC, Vec::new, async {
            let (ty, res) = match self.resource(&req.type_name) {
                Ok(found) => found,
                Err(d) => return (Vec::new(), d),
            };
            match res.import(&self.context(), &req.id).await {
                Ok(items) => {
                    let mut out = Vec::new();
                    for item in items {
                        match encode_dynamic(&item.state, ty) {
                            Ok(dv) => out.push(pb::import_resource_state::ImportedResource {
                                type_name: req.type_name.clone(),
                                state: Some(dv),
                                private: item.private,
                            }),
                            Err(e) => {
                                return (
                                    Vec::new(),
                                    codec_diag(RPC, "the imported state", &e).into(),
                                )
                            }
                        }
                    }
                    (out, Diagnostics::new())
                }
                Err(d) => (Vec::new(), d),
            }
        })
        .await;
        Ok(Response::new(pb::import_resource_state::Response {
            imported_resources: imported,
            diagnostics: diagnostics_to_pb(&diags),
        }))
    }

    async fn read_data_source(
        &self,
        req: Request<pb::read_data_source::Request>,
    ) -> RpcResult<pb::read_data_source::Response> {
        const RPC: &str = "ReadDataSource";
        let req = req.into_inner();
        let (state, diags) = guarded(
            &self.label,
            RPC, || None, async {
            let (ty, ds) = match self.data_source(&req.type_name) {
                Ok(found) => found,
                Err(d) => return (None, d),
            };
            let config = match decode_dynamic(req.config.as_ref(), ty) {
                Ok(c) => c,
                Err(e) => return (None, codec_diag(RPC, "the configuration", &e).into()),
            };
            match ds.read(&self.context(), &config).await {
                Ok(state) => {
                    if !state.is_fully_known() {
                        return (
                            None,
                            Diagnostic::error(
                                format!("{RPC}: {} returned unknown values", req.type_name),
                                "A data source result must be fully known; this is a bug in the provider.",
                            )
                            .into(),
                        );
                    }
                    match encode_dynamic(&state, ty) {
                        Ok(dv) => (Some(dv), Diagnostics::new()),
                        Err(e) => (None, codec_diag(RPC, "the result", &e).into()),
                    }
                }
                Err(d) => (None, d),
            }
        })
        .await;
        Ok(Response::new(pb::read_data_source::Response {
            state,
            diagnostics: diagnostics_to_pb(&diags),
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
