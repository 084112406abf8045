//! The protocol-shaped traits the gRPC layer calls: values in, values out, with the private
//! state as bytes. Typed resources (`typed`) are adapted to them; implement these directly
//! only for something the typed layer cannot express.

use async_trait::async_trait;

use crate::tfplugin::diagnostics::{Diagnostic, Diagnostics};
use crate::tfplugin::schema::Schema;
use crate::tfplugin::value::Value;

use super::Context;

#[async_trait]
pub trait RawDataSource: Send + Sync + 'static {
    /// `example_thing`.
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
    pub requires_replace: Vec<crate::tfplugin::diagnostics::AttrPath>,
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
pub trait RawResource: Send + Sync + 'static {
    /// `example_thing`.
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
