//! A resource written against the typed framework, as docs/ARCHITECTURE.md shows it: one
//! `model!` and the five operations, no `Value` handled by hand. The framework plans
//! replacement from `requires_replace`, routes apply to create/update/delete, and keeps what a
//! failed create reports.

use async_trait::async_trait;
use terraform_provider_redisha::codec::{decode_msgpack, encode_msgpack};
use terraform_provider_redisha::framework::{
    Applied, ApplyArgs, Attr, Context, EmptyProviderConfig, Failed, Outcome, Registry, Resource,
};
use terraform_provider_redisha::model;
use terraform_provider_redisha::proto::tfplugin6 as pb;
use terraform_provider_redisha::proto::tfplugin6::provider_server::Provider;
use terraform_provider_redisha::server::ProviderService;
use terraform_provider_redisha::{Diagnostic, Model, Type, Value};
use tonic::Request;

model! {
    pub struct NoteModel("A note kept in state.") {
        pub title: Attr<String> = required("The title. Changing it replaces the note.")
            .requires_replace(),
        pub body: Attr<String> = optional("The text.").sensitive(),
        pub id: Attr<String> = computed("Made at create."),
    }
}

pub struct NoteResource;

#[async_trait]
impl Resource for NoteResource {
    type Model = NoteModel;
    type Private = ();

    fn type_name(&self) -> &'static str {
        "example_note"
    }

    async fn create(&self, _ctx: &Context, a: ApplyArgs<NoteModel, ()>) -> Outcome<NoteModel, ()> {
        let title = a.planned.title.value().cloned().unwrap_or_default();
        let made = NoteModel {
            id: format!("note-{title}").into(),
            ..a.planned
        };
        if title == "half" {
            // Made, but not finished: the framework records it and reports the error.
            let failed = Failed::from(Diagnostic::error("Create failed part way", "half made"));
            return Err(failed.with_state(Some(made)));
        }
        Ok(Applied {
            state: made,
            private: None,
        })
    }

    async fn update(
        &self,
        _ctx: &Context,
        prior: NoteModel,
        a: ApplyArgs<NoteModel, ()>,
    ) -> Outcome<NoteModel, ()> {
        Ok(Applied {
            state: NoteModel {
                id: prior.id,
                ..a.planned
            },
            private: None,
        })
    }

    async fn delete(
        &self,
        _ctx: &Context,
        _prior: NoteModel,
        _private: Option<()>,
    ) -> Result<(), Failed<NoteModel, ()>> {
        Ok(())
    }

    async fn read(
        &self,
        _ctx: &Context,
        state: NoteModel,
        _private: Option<()>,
    ) -> Result<Option<Applied<NoteModel, ()>>, Failed<NoteModel, ()>> {
        Ok(Some(Applied {
            state,
            private: None,
        }))
    }
}

fn ty() -> Type {
    NoteModel::block().object_type()
}

fn dv(v: &Value) -> Option<pb::DynamicValue> {
    Some(pb::DynamicValue {
        msgpack: encode_msgpack(v, &ty()).unwrap(),
        json: vec![],
    })
}

fn note(title: &str, body: &str, id: Option<&str>) -> Value {
    Value::object([
        ("title", Value::from(title)),
        ("body", Value::from(body)),
        ("id", Value::from(id)),
    ])
}

fn service() -> ProviderService {
    ProviderService::new(Registry::new(EmptyProviderConfig).resource(NoteResource))
}

async fn plan(
    svc: &ProviderService,
    prior: &Value,
    config: &Value,
) -> pb::plan_resource_change::Response {
    // Terraform's proposal: the config, with computed attributes carried from the prior state.
    let mut proposed = config.clone();
    if !prior.is_null() {
        proposed.set("id", prior.get("id").clone());
    }
    svc.plan_resource_change(Request::new(pb::plan_resource_change::Request {
        type_name: "example_note".into(),
        prior_state: dv(prior),
        proposed_new_state: dv(&proposed),
        config: dv(config),
        prior_private: vec![],
        provider_meta: None,
        client_capabilities: None,
    }))
    .await
    .unwrap()
    .into_inner()
}

async fn apply(
    svc: &ProviderService,
    prior: &Value,
    planned: Option<pb::DynamicValue>,
    config: &Value,
) -> pb::apply_resource_change::Response {
    svc.apply_resource_change(Request::new(pb::apply_resource_change::Request {
        type_name: "example_note".into(),
        prior_state: dv(prior),
        planned_state: planned,
        config: dv(config),
        planned_private: b"kept".to_vec(),
        provider_meta: None,
    }))
    .await
    .unwrap()
    .into_inner()
}

fn decoded(v: Option<pb::DynamicValue>) -> Value {
    decode_msgpack(&v.unwrap().msgpack, &ty()).unwrap()
}

#[tokio::test]
async fn the_schema_comes_from_the_model() {
    let block = NoteModel::block();
    let names: Vec<&str> = block.attributes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["title", "body", "id"]);
    assert!(block.attributes[0].required && block.attributes[0].requires_replace);
    assert!(block.attributes[1].optional && block.attributes[1].sensitive);
    assert!(block.attributes[2].computed);
}

#[tokio::test]
async fn create_plans_the_id_unknown_and_apply_fills_it() {
    let svc = service();
    let config = note("a", "text", None);
    let planned = plan(&svc, &Value::Null, &config).await;
    assert!(planned.diagnostics.is_empty(), "{:?}", planned.diagnostics);
    assert!(
        planned.requires_replace.is_empty(),
        "a create replaces nothing"
    );
    let state = decoded(planned.planned_state.clone());
    assert_eq!(state.get("id"), &Value::Unknown);

    let applied = apply(&svc, &Value::Null, planned.planned_state, &config).await;
    assert!(applied.diagnostics.is_empty(), "{:?}", applied.diagnostics);
    assert_eq!(
        decoded(applied.new_state),
        note("a", "text", Some("note-a"))
    );
}

#[tokio::test]
async fn only_a_requires_replace_attribute_forces_replacement() {
    let svc = service();
    let prior = note("a", "text", Some("note-a"));
    let body_changed = plan(&svc, &prior, &note("a", "other", None)).await;
    assert!(body_changed.requires_replace.is_empty());
    assert_eq!(
        decoded(body_changed.planned_state).get("id"),
        &Value::Unknown,
        "computed values are known after apply"
    );
    let title_changed = plan(&svc, &prior, &note("b", "text", None)).await;
    let paths: Vec<_> = title_changed
        .requires_replace
        .iter()
        .map(|p| format!("{:?}", p.steps))
        .collect();
    assert_eq!(paths.len(), 1);
    assert!(paths[0].contains("\"title\""), "{paths:?}");
}

#[tokio::test]
async fn a_failed_create_records_what_it_made_and_delete_returns_null() {
    let svc = service();
    let config = note("half", "text", None);
    let planned = plan(&svc, &Value::Null, &config).await;
    let applied = apply(&svc, &Value::Null, planned.planned_state, &config).await;
    assert_eq!(applied.diagnostics.len(), 1);
    assert_eq!(applied.diagnostics[0].summary, "Create failed part way");
    assert_eq!(
        decoded(applied.new_state),
        note("half", "text", Some("note-half"))
    );
    assert_eq!(
        applied.private, b"kept",
        "the private state Terraform sent is kept"
    );

    let prior = note("a", "text", Some("note-a"));
    let deleted = apply(&svc, &prior, dv(&Value::Null), &Value::Null).await;
    assert!(deleted.diagnostics.is_empty());
    assert_eq!(decoded(deleted.new_state), Value::Null);
}
