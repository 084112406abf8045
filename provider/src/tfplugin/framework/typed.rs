//! Resources and data sources with a typed model. The framework decodes config, plans and
//! state into the model (diagnostics on the attribute when a value does not fit), routes
//! apply to `create`, `update` or `delete`, computes "forces replacement" from the attributes
//! marked `requires_replace`, and decides in one place what Terraform keeps when a call fails:
//! the partial state a failed call reports, else the prior state; the private state a failed
//! call reports, else the one Terraform sent.

use async_trait::async_trait;

use crate::tfplugin::diagnostics::{Diagnostic, Diagnostics};
use crate::tfplugin::schema::Schema;
use crate::tfplugin::value::Value;

use super::model::Model;
use super::raw::{
    ApplyRequest, ApplyResponse, Imported, PlanRequest, PlanResponse, RawDataSource, RawResource,
    ReadResponse,
};
use super::Context;

/// A resource's private state: bytes only the provider reads, stored by Terraform beside the
/// state.
pub trait Private: Sized + Send + Sync + 'static {
    /// `None` when there is none or it cannot be read.
    fn decode(bytes: &[u8]) -> Option<Self>;
    fn encode(&self) -> Vec<u8>;
}

/// No private state.
impl Private for () {
    fn decode(_bytes: &[u8]) -> Option<Self> {
        None
    }
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// A data source: config in, config plus computed attributes out.
#[async_trait]
pub trait DataSource: Send + Sync + 'static {
    type Model: Model + Send + Sync + 'static;
    /// `example_thing`.
    fn type_name(&self) -> &'static str;
    /// Checks config at plan time. Values may be unknown: check what is known, skip the rest.
    async fn validate(&self, _ctx: &Context, _config: &Self::Model) -> Diagnostics {
        Diagnostics::new()
    }
    /// The config with every computed attribute filled in, all known. Only called with fully
    /// known config.
    async fn read(&self, ctx: &Context, config: Self::Model) -> Result<Self::Model, Diagnostics>;
}

/// What plan works from.
pub struct PlanArgs<M, P> {
    /// `None` when creating.
    pub prior: Option<M>,
    pub config: M,
    /// Config merged with prior state for unset computed attributes (Terraform's proposal),
    /// with every computed attribute the config leaves unset marked unknown.
    pub proposed: M,
    pub private: Option<P>,
    /// An attribute marked `requires_replace` changed: the object is created anew.
    pub replacing: bool,
}

impl<M, P> PlanArgs<M, P> {
    /// A new object is planned: there is none yet, or it is replaced.
    pub fn creating(&self) -> bool {
        self.prior.is_none() || self.replacing
    }
}

/// A plan: the planned state (unknown where only apply can tell) and warnings.
pub struct Planned<M> {
    pub state: M,
    pub diagnostics: Diagnostics,
}

/// What create and update work from.
pub struct ApplyArgs<M, P> {
    pub config: M,
    pub planned: M,
    pub private: Option<P>,
}

/// A successful call's result.
pub struct Applied<M, P> {
    /// Fully known.
    pub state: M,
    /// `None`: keep the private state Terraform sent.
    pub private: Option<P>,
}

/// A failed call: its diagnostics, and what exists despite the failure.
pub struct Failed<M, P> {
    pub diagnostics: Diagnostics,
    /// What exists now (a create that made part of the object); `None`: the prior state (for a
    /// failed create, no object).
    pub state: Option<M>,
    /// `None`: keep the private state Terraform sent.
    pub private: Option<P>,
}

impl<M, P> Failed<M, P> {
    pub fn with_state(mut self, state: Option<M>) -> Self {
        self.state = state;
        self
    }
    pub fn with_private(mut self, private: P) -> Self {
        self.private = Some(private);
        self
    }
}

impl<M, P> From<Diagnostics> for Failed<M, P> {
    fn from(diagnostics: Diagnostics) -> Self {
        Failed {
            diagnostics,
            state: None,
            private: None,
        }
    }
}

impl<M, P> From<Diagnostic> for Failed<M, P> {
    fn from(d: Diagnostic) -> Self {
        Diagnostics::from(d).into()
    }
}

pub type Outcome<M, P> = Result<Applied<M, P>, Failed<M, P>>;

/// A managed resource. The framework calls `plan` for a create or update (a destroy's plan is
/// null), then `create`, `update` or `delete`; `read` refreshes; `import` adopts an object.
#[async_trait]
pub trait Resource: Send + Sync + 'static {
    type Model: Model + Send + Sync + 'static;
    type Private: Private;
    /// `example_thing`.
    fn type_name(&self) -> &'static str;
    /// The schema version state is written with.
    fn schema_version(&self) -> i64 {
        0
    }
    /// Checks config at plan time. Values may be unknown: check what is known, skip the rest.
    async fn validate(&self, _ctx: &Context, _config: &Self::Model) -> Diagnostics {
        Diagnostics::new()
    }
    /// Whether a change of a `requires_replace` attribute replaces the object now (say, not
    /// while an imported object waits to be adopted).
    fn replaces(&self, _private: Option<&Self::Private>) -> bool {
        true
    }
    /// The planned state of a create or update. The default plans the proposal: computed
    /// attributes the config leaves unset are known after apply.
    async fn plan(
        &self,
        _ctx: &Context,
        args: PlanArgs<Self::Model, Self::Private>,
    ) -> Result<Planned<Self::Model>, Diagnostics> {
        Ok(Planned {
            state: args.proposed,
            diagnostics: Diagnostics::new(),
        })
    }
    async fn create(
        &self,
        ctx: &Context,
        args: ApplyArgs<Self::Model, Self::Private>,
    ) -> Outcome<Self::Model, Self::Private>;
    async fn update(
        &self,
        ctx: &Context,
        prior: Self::Model,
        args: ApplyArgs<Self::Model, Self::Private>,
    ) -> Outcome<Self::Model, Self::Private>;
    async fn delete(
        &self,
        ctx: &Context,
        prior: Self::Model,
        private: Option<Self::Private>,
    ) -> Result<(), Failed<Self::Model, Self::Private>>;
    /// The object as it is now; `Ok(None)` when it is gone (the next plan creates it).
    async fn read(
        &self,
        ctx: &Context,
        state: Self::Model,
        private: Option<Self::Private>,
    ) -> Result<Option<Applied<Self::Model, Self::Private>>, Failed<Self::Model, Self::Private>>;
    async fn import(
        &self,
        _ctx: &Context,
        _id: &str,
    ) -> Result<Vec<Applied<Self::Model, Self::Private>>, Diagnostics> {
        Err(Diagnostic::error(
            format!("{} does not support import", self.type_name()),
            "Create it with terraform apply instead.",
        )
        .into())
    }
}

/// `None` for a null value (no object), else the decoded model.
fn optional<M: Model>(v: &Value) -> Result<Option<M>, Diagnostics> {
    if v.is_null() {
        return Ok(None);
    }
    M::from_value(v).map(Some)
}

/// A typed resource as the server calls it.
pub(crate) struct TypedResource<R>(pub R);

/// A typed data source as the server calls it.
pub(crate) struct TypedDataSource<D>(pub D);

#[async_trait]
impl<D: DataSource> RawDataSource for TypedDataSource<D> {
    fn type_name(&self) -> &'static str {
        self.0.type_name()
    }
    fn schema(&self) -> Schema {
        Schema::new(0, D::Model::block())
    }
    async fn validate(&self, ctx: &Context, config: &Value) -> Diagnostics {
        // Values that do not fit are reported and skipped like unknown ones.
        let (model, mut diags) = D::Model::from_value_lenient(config);
        diags.extend(self.0.validate(ctx, &model).await);
        diags
    }
    async fn read(&self, ctx: &Context, config: &Value) -> Result<Value, Diagnostics> {
        let model = D::Model::from_value(config)?;
        Ok(self.0.read(ctx, model).await?.to_value())
    }
}

/// The response of a failed apply or read: what the failure reports, else what Terraform sent.
fn kept<M: Model, P: Private>(f: Failed<M, P>, state: Value, private: Vec<u8>) -> ApplyResponse {
    ApplyResponse {
        new_state: f.state.map_or(state, |s| s.to_value()),
        private: f.private.map_or(private, |p| p.encode()),
        diagnostics: f.diagnostics,
    }
}

fn applied<M: Model, P: Private>(a: Applied<M, P>, private: Vec<u8>) -> ApplyResponse {
    ApplyResponse {
        new_state: a.state.to_value(),
        private: a.private.map_or(private, |p| p.encode()),
        diagnostics: Diagnostics::new(),
    }
}

impl<R: Resource> TypedResource<R> {
    async fn do_plan(
        &self,
        ctx: &Context,
        req: &PlanRequest,
    ) -> Result<
        (
            Planned<R::Model>,
            Vec<crate::tfplugin::diagnostics::AttrPath>,
        ),
        Diagnostics,
    > {
        let block = R::Model::block();
        let prior = optional::<R::Model>(&req.prior_state)?;
        let config = R::Model::from_value(&req.config)?;
        let proposed = R::Model::from_value(
            &block.mark_computed_unknown(&req.config, &req.proposed_new_state),
        )?;
        let private = R::Private::decode(&req.prior_private);
        let requires_replace = if prior.is_some() && self.0.replaces(private.as_ref()) {
            block.replace_paths(&req.prior_state, &req.proposed_new_state)
        } else {
            Vec::new()
        };
        let args = PlanArgs {
            prior,
            config,
            proposed,
            private,
            replacing: !requires_replace.is_empty(),
        };
        Ok((self.0.plan(ctx, args).await?, requires_replace))
    }
}

#[async_trait]
impl<R: Resource> RawResource for TypedResource<R> {
    fn type_name(&self) -> &'static str {
        self.0.type_name()
    }
    fn schema(&self) -> Schema {
        Schema::new(self.0.schema_version(), R::Model::block())
    }
    async fn validate(&self, ctx: &Context, config: &Value) -> Diagnostics {
        // Values that do not fit are reported and skipped like unknown ones.
        let (model, mut diags) = R::Model::from_value_lenient(config);
        diags.extend(self.0.validate(ctx, &model).await);
        diags
    }

    async fn plan(&self, ctx: &Context, req: PlanRequest) -> PlanResponse {
        // A destroy: nothing to plan.
        if req.proposed_new_state.is_null() {
            return PlanResponse {
                planned_state: Value::Null,
                requires_replace: Vec::new(),
                planned_private: req.prior_private,
                diagnostics: Diagnostics::new(),
            };
        }
        match self.do_plan(ctx, &req).await {
            Ok((planned, requires_replace)) => PlanResponse {
                planned_state: planned.state.to_value(),
                // A replacement starts with no private state.
                planned_private: if requires_replace.is_empty() {
                    req.prior_private
                } else {
                    Vec::new()
                },
                requires_replace,
                diagnostics: planned.diagnostics,
            },
            Err(diagnostics) => PlanResponse {
                planned_state: req.prior_state,
                requires_replace: Vec::new(),
                planned_private: req.prior_private,
                diagnostics,
            },
        }
    }

    async fn apply(&self, ctx: &Context, req: ApplyRequest) -> ApplyResponse {
        let decoded = (
            optional::<R::Model>(&req.prior_state),
            optional::<R::Model>(&req.planned_state),
            R::Model::from_value(&req.config),
        );
        let (prior, planned, config) = match decoded {
            (Ok(prior), Ok(planned), Ok(config)) => (prior, planned, config),
            (a, b, c) => {
                let mut diagnostics = Diagnostics::new();
                for d in [a.err(), b.err(), c.err()].into_iter().flatten() {
                    diagnostics.extend(d);
                }
                return ApplyResponse {
                    new_state: req.prior_state,
                    private: req.planned_private,
                    diagnostics,
                };
            }
        };
        let private = R::Private::decode(&req.planned_private);
        let outcome = match (prior, planned) {
            (None, None) => Ok(None),
            (Some(prior), None) => self.0.delete(ctx, prior, private).await.map(|()| None),
            (None, Some(planned)) => {
                let args = ApplyArgs {
                    config,
                    planned,
                    private,
                };
                self.0.create(ctx, args).await.map(Some)
            }
            (Some(prior), Some(planned)) => {
                let args = ApplyArgs {
                    config,
                    planned,
                    private,
                };
                self.0.update(ctx, prior, args).await.map(Some)
            }
        };
        match outcome {
            Ok(Some(a)) => applied(a, req.planned_private),
            // Deleted: no object, no private state.
            Ok(None) => ApplyResponse {
                new_state: Value::Null,
                private: Vec::new(),
                diagnostics: Diagnostics::new(),
            },
            Err(f) => kept(f, req.prior_state, req.planned_private),
        }
    }

    async fn read(&self, ctx: &Context, state: Value, private: Vec<u8>) -> ReadResponse {
        let model = match R::Model::from_value(&state) {
            Ok(m) => m,
            Err(diagnostics) => {
                return ReadResponse {
                    new_state: state,
                    private,
                    diagnostics,
                }
            }
        };
        let decoded = R::Private::decode(&private);
        let out = match self.0.read(ctx, model, decoded).await {
            Ok(Some(a)) => applied(a, private),
            Ok(None) => ApplyResponse {
                new_state: Value::Null,
                private: Vec::new(),
                diagnostics: Diagnostics::new(),
            },
            Err(f) => kept(f, state, private),
        };
        ReadResponse {
            new_state: out.new_state,
            private: out.private,
            diagnostics: out.diagnostics,
        }
    }

    async fn import(&self, ctx: &Context, id: &str) -> Result<Vec<Imported>, Diagnostics> {
        let items = self.0.import(ctx, id).await?;
        Ok(items
            .into_iter()
            .map(|a| Imported {
                state: a.state.to_value(),
                private: a.private.map(|p| p.encode()).unwrap_or_default(),
            })
            .collect())
    }
}
