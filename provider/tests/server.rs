//! The tfplugin6.Provider service, called as Terraform would (without the socket): schemas,
//! validation diagnostics with attribute paths, unknowns skipped, panics turned into errors.

use async_trait::async_trait;
use terraform_provider_redisha::codec::encode_msgpack;
use terraform_provider_redisha::framework::{
    ApplyRequest, ApplyResponse, PlanRequest, PlanResponse, ReadResponse,
};
use terraform_provider_redisha::framework::{
    EmptyProviderConfig, RawDataSource as DataSource, RawResource as Resource, Registry,
};
use terraform_provider_redisha::proto::tfplugin6 as pb;
use terraform_provider_redisha::proto::tfplugin6::provider_server::Provider;
use terraform_provider_redisha::server::ProviderService;
use terraform_provider_redisha::{registry, Context, Diagnostics, Schema, Type, Value};
use tonic::Request;

fn host(name: &str, memory: i64) -> Value {
    Value::object([
        ("name", Value::from(name)),
        ("memory_mb", Value::from(memory)),
        ("max_nodes", Value::from(2i64)),
        ("rack", Value::Null),
    ])
}

fn zone(name: &str, hosts: Vec<Value>) -> Value {
    Value::object([("name", Value::from(name)), ("host", Value::List(hosts))])
}

fn placement_config() -> Value {
    Value::object([
        ("shards", Value::from(3i64)),
        ("replicas", Value::from(1i64)),
        ("node_memory_mb", Value::from(1024i64)),
        ("spread", Value::Null),
        (
            "zone",
            Value::list([
                zone("a", vec![host("a1", 4096)]),
                zone("b", vec![host("b1", 4096)]),
                zone("c", vec![host("c1", 4096)]),
            ]),
        ),
        ("partition", Value::list([])),
    ])
}

fn placement_type() -> Type {
    terraform_provider_redisha::data_sources::placement::schema().value_type()
}

async fn validate(svc: &ProviderService, config: &Value) -> Vec<pb::Diagnostic> {
    let req = pb::validate_data_resource_config::Request {
        type_name: "redisha_placement".into(),
        config: Some(pb::DynamicValue {
            msgpack: encode_msgpack(config, &placement_type()).unwrap(),
            json: vec![],
        }),
    };
    svc.validate_data_resource_config(Request::new(req))
        .await
        .unwrap()
        .into_inner()
        .diagnostics
}

fn path_of(d: &pb::Diagnostic) -> String {
    use pb::attribute_path::step::Selector;
    let mut out = String::new();
    for s in &d
        .attribute
        .as_ref()
        .map(|a| a.steps.clone())
        .unwrap_or_default()
    {
        match &s.selector {
            Some(Selector::AttributeName(a)) if out.is_empty() => out.push_str(a),
            Some(Selector::AttributeName(a)) => out.push_str(&format!(".{a}")),
            Some(Selector::ElementKeyInt(i)) => out.push_str(&format!("[{i}]")),
            Some(Selector::ElementKeyString(k)) => out.push_str(&format!("[{k:?}]")),
            None => {}
        }
    }
    out
}

#[tokio::test]
async fn schema_lists_the_placement_data_source_with_terraform_types() {
    let svc = ProviderService::new(registry::registry());
    let resp = svc
        .get_provider_schema(Request::new(pb::get_provider_schema::Request {}))
        .await
        .unwrap()
        .into_inner();
    assert!(
        resp.provider.is_some(),
        "Terraform requires the provider schema"
    );
    let block = resp.data_source_schemas["redisha_placement"]
        .block
        .clone()
        .unwrap();
    let nodes = block.attributes.iter().find(|a| a.name == "nodes").unwrap();
    assert!(nodes.computed && !nodes.optional);
    assert_eq!(
        String::from_utf8(nodes.r#type.clone()).unwrap(),
        r#"["list",["object",{"host":"string","name":"string","role":"string","shard":"number","slots":["list","string"],"zone":"string"}]]"#
    );
    let zone = block
        .block_types
        .iter()
        .find(|b| b.type_name == "zone")
        .unwrap();
    assert_eq!(
        zone.nesting,
        pb::schema::nested_block::NestingMode::List as i32
    );
    assert_eq!(zone.min_items, 1);
}

#[tokio::test]
async fn valid_config_has_no_diagnostics() {
    let svc = ProviderService::new(registry::registry());
    assert!(validate(&svc, &placement_config()).await.is_empty());
}

#[tokio::test]
async fn planner_paths_become_hcl_attribute_paths() {
    let svc = ProviderService::new(registry::registry());
    let mut config = placement_config();
    config.set(
        "zone",
        Value::list([
            zone("a", vec![host("a1", 4096)]),
            zone("b", vec![host("b1", 4096), host("b2", 0)]),
            zone("c", vec![host("c1", 4096)]),
        ]),
    );
    let diags = validate(&svc, &config).await;
    assert!(!diags.is_empty());
    assert!(
        diags
            .iter()
            .any(|d| path_of(d) == "zone[1].host[1].memory_mb"),
        "{diags:?}"
    );
    assert!(diags
        .iter()
        .all(|d| d.severity == pb::diagnostic::Severity::Error as i32));
}

#[tokio::test]
async fn out_of_range_numbers_name_the_attribute() {
    let svc = ProviderService::new(registry::registry());
    let mut config = placement_config();
    config.set("shards", Value::from(-1i64));
    config.set("spread", Value::from("region"));
    let diags = validate(&svc, &config).await;
    let paths: Vec<String> = diags.iter().map(path_of).collect();
    assert!(paths.contains(&"shards".to_string()), "{paths:?}");
    assert!(paths.contains(&"spread".to_string()), "{paths:?}");
}

#[tokio::test]
async fn unknown_values_are_skipped_at_validate_time() {
    let svc = ProviderService::new(registry::registry());
    let mut config = placement_config();
    config.set("shards", Value::Unknown);
    config.set(
        "zone",
        Value::list([
            zone("a", vec![host("a1", 4096)]),
            zone(
                "b",
                vec![Value::object([
                    ("name", Value::from("b1")),
                    ("memory_mb", Value::Unknown),
                    ("max_nodes", Value::Null),
                    ("rack", Value::Unknown),
                ])],
            ),
        ]),
    );
    assert!(validate(&svc, &config).await.is_empty());
    // A known bad value next to unknown ones is still reported.
    config.set("replicas", Value::from(-3i64));
    let diags = validate(&svc, &config).await;
    assert_eq!(diags.iter().map(path_of).collect::<Vec<_>>(), ["replicas"]);
}

#[tokio::test]
async fn read_returns_nodes_with_slot_ranges_and_report() {
    let svc = ProviderService::new(registry::registry());
    let config = placement_config();
    let resp = svc
        .read_data_source(Request::new(pb::read_data_source::Request {
            type_name: "redisha_placement".into(),
            config: Some(pb::DynamicValue {
                msgpack: encode_msgpack(&config, &placement_type()).unwrap(),
                json: vec![],
            }),
            provider_meta: None,
            client_capabilities: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.diagnostics.is_empty(), "{:?}", resp.diagnostics);
    let state = terraform_provider_redisha::codec::decode_msgpack(
        &resp.state.unwrap().msgpack,
        &placement_type(),
    )
    .unwrap();
    let nodes = state.get("nodes").as_list().unwrap();
    assert_eq!(nodes.len(), 6);
    let slots: Vec<&str> = nodes
        .iter()
        .filter(|n| n.get("role").as_str() == Some("master"))
        .flat_map(|n| {
            n.get("slots")
                .as_list()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
        })
        .collect();
    assert!(
        slots.iter().all(|s| s.split_once('-').is_some()),
        "{slots:?}"
    );
    assert_eq!(state.get("survives_any_zone_loss"), &Value::from(true));
    assert!(state.get("report").as_str().unwrap().contains("zone"));
    // non-computed attributes are the config, unchanged
    assert_eq!(state.get("shards"), config.get("shards"));
    assert!(state.get("spread").is_null());
}

struct Panics;

#[async_trait]
impl DataSource for Panics {
    fn type_name(&self) -> &'static str {
        "redisha_panics"
    }
    fn schema(&self) -> Schema {
        Schema::default()
    }
    async fn validate(&self, _ctx: &Context, _config: &Value) -> Diagnostics {
        panic!("validate exploded")
    }
    async fn read(&self, _ctx: &Context, _config: &Value) -> Result<Value, Diagnostics> {
        let v: Vec<u8> = Vec::new();
        let _ = v[usize::from(v.is_empty())];
        unreachable!()
    }
}

#[tokio::test]
async fn a_panic_becomes_an_error_diagnostic_naming_the_rpc() {
    let svc = ProviderService::new(Registry::new(EmptyProviderConfig).raw_data_source(Panics));
    let resp = svc
        .read_data_source(Request::new(pb::read_data_source::Request {
            type_name: "redisha_panics".into(),
            config: None,
            provider_meta: None,
            client_capabilities: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.diagnostics.len(), 1);
    assert!(resp.diagnostics[0].summary.contains("ReadDataSource"));
    assert!(resp.diagnostics[0].detail.contains("index out of bounds"));

    let resp = svc
        .validate_data_resource_config(Request::new(pb::validate_data_resource_config::Request {
            type_name: "redisha_panics".into(),
            config: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.diagnostics[0]
        .summary
        .contains("ValidateDataResourceConfig"));
    assert!(resp.diagnostics[0].detail.contains("validate exploded"));
}

struct PanicsInApply;

#[async_trait]
impl Resource for PanicsInApply {
    fn type_name(&self) -> &'static str {
        "redisha_apply_panics"
    }
    fn schema(&self) -> Schema {
        Schema::default()
    }
    async fn plan(&self, _ctx: &Context, _req: PlanRequest) -> PlanResponse {
        unreachable!("not called")
    }
    async fn apply(&self, _ctx: &Context, _req: ApplyRequest) -> ApplyResponse {
        panic!("apply exploded")
    }
    async fn read(&self, _ctx: &Context, _state: Value, _private: Vec<u8>) -> ReadResponse {
        unreachable!("not called")
    }
}

#[tokio::test]
async fn a_panic_in_apply_keeps_the_prior_state_and_the_private_state() {
    let svc = ProviderService::new(Registry::new(EmptyProviderConfig).raw_resource(PanicsInApply));
    let prior = pb::DynamicValue {
        msgpack: encode_msgpack(
            &Value::Map(Default::default()),
            &Type::object(Vec::<(&str, Type)>::new()),
        )
        .unwrap(),
        json: Vec::new(),
    };
    let resp = svc
        .apply_resource_change(Request::new(pb::apply_resource_change::Request {
            type_name: "redisha_apply_panics".into(),
            prior_state: Some(prior.clone()),
            planned_state: Some(prior.clone()),
            config: Some(prior.clone()),
            planned_private: b"the handles of every node".to_vec(),
            provider_meta: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.diagnostics[0].detail.contains("apply exploded"));
    assert_eq!(resp.new_state, Some(prior), "the prior state is kept");
    assert_eq!(
        resp.private,
        b"the handles of every node".to_vec(),
        "the private state is kept: it finds the nodes"
    );
}

#[tokio::test]
async fn unknown_type_names_are_diagnostics() {
    let svc = ProviderService::new(registry::registry());
    let resp = svc
        .validate_resource_config(Request::new(pb::validate_resource_config::Request {
            type_name: "redisha_nope".into(),
            config: None,
            client_capabilities: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.diagnostics.len(), 1);
    assert!(resp.diagnostics[0].summary.contains("redisha_nope"));
}

/// A resource plugged in through the framework: create plans `id` unknown, apply fills it,
/// delete returns null; values go through msgpack both ways.
struct Echo;

fn echo_schema() -> Schema {
    use terraform_provider_redisha::{Attribute, Block};
    Schema::new(
        1,
        Block::new("test resource")
            .attribute(Attribute::required("name", Type::String))
            .attribute(Attribute::optional("password", Type::String).sensitive())
            .attribute(Attribute::computed("id", Type::String)),
    )
}

#[async_trait]
impl Resource for Echo {
    fn type_name(&self) -> &'static str {
        "redisha_echo"
    }
    fn schema(&self) -> Schema {
        echo_schema()
    }
    async fn plan(
        &self,
        _ctx: &Context,
        req: terraform_provider_redisha::framework::PlanRequest,
    ) -> terraform_provider_redisha::framework::PlanResponse {
        let planned = if req.proposed_new_state.is_null() {
            Value::Null
        } else {
            echo_schema()
                .block
                .mark_computed_unknown(&req.config, &req.proposed_new_state)
        };
        terraform_provider_redisha::framework::PlanResponse {
            planned_state: planned,
            requires_replace: vec![terraform_provider_redisha::AttrPath::attr("name")],
            planned_private: req.prior_private,
            diagnostics: Diagnostics::new(),
        }
    }
    async fn apply(
        &self,
        ctx: &Context,
        req: terraform_provider_redisha::framework::ApplyRequest,
    ) -> terraform_provider_redisha::framework::ApplyResponse {
        let configured = ctx.provider().is_ok();
        let mut state = req.planned_state;
        if !state.is_null() {
            state.set("id", Value::from(format!("id-{configured}")));
        }
        terraform_provider_redisha::framework::ApplyResponse {
            new_state: state,
            private: b"p1".to_vec(),
            diagnostics: Diagnostics::new(),
        }
    }
    async fn read(
        &self,
        _ctx: &Context,
        state: Value,
        private: Vec<u8>,
    ) -> terraform_provider_redisha::framework::ReadResponse {
        terraform_provider_redisha::framework::ReadResponse {
            new_state: state,
            private,
            diagnostics: Diagnostics::new(),
        }
    }
}

fn dv(v: &Value) -> Option<pb::DynamicValue> {
    Some(pb::DynamicValue {
        msgpack: encode_msgpack(v, &echo_schema().value_type()).unwrap(),
        json: vec![],
    })
}

#[tokio::test]
async fn a_resource_plugs_in_create_and_delete_round_trip() {
    use terraform_provider_redisha::codec::decode_msgpack;
    let svc = ProviderService::new(Registry::new(EmptyProviderConfig).raw_resource(Echo));
    let ty = echo_schema().value_type();
    svc.configure_provider(Request::new(pb::configure_provider::Request {
        terraform_version: "1.11.4".into(),
        config: Some(pb::DynamicValue {
            msgpack: vec![0x80],
            json: vec![],
        }),
        client_capabilities: None,
    }))
    .await
    .unwrap();
    let config = Value::object([
        ("name", Value::from("a")),
        ("password", Value::from("s3cret")),
        ("id", Value::Null),
    ]);
    let plan = svc
        .plan_resource_change(Request::new(pb::plan_resource_change::Request {
            type_name: "redisha_echo".into(),
            prior_state: dv(&Value::Null),
            proposed_new_state: dv(&config),
            config: dv(&config),
            prior_private: vec![],
            provider_meta: None,
            client_capabilities: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(plan.diagnostics.is_empty(), "{:?}", plan.diagnostics);
    assert_eq!(plan.requires_replace.len(), 1);
    let planned = decode_msgpack(&plan.planned_state.clone().unwrap().msgpack, &ty).unwrap();
    assert_eq!(planned.get("id"), &Value::Unknown);
    assert_eq!(planned.get("name"), &Value::from("a"));

    let applied = svc
        .apply_resource_change(Request::new(pb::apply_resource_change::Request {
            type_name: "redisha_echo".into(),
            prior_state: dv(&Value::Null),
            planned_state: plan.planned_state,
            config: dv(&config),
            planned_private: vec![],
            provider_meta: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let state = decode_msgpack(&applied.new_state.unwrap().msgpack, &ty).unwrap();
    assert_eq!(state.get("id"), &Value::from("id-true"));
    assert_eq!(applied.private, b"p1");

    // UpgradeResourceState from stored JSON, then delete (planned null) returns null.
    let upgraded = svc
        .upgrade_resource_state(Request::new(pb::upgrade_resource_state::Request {
            type_name: "redisha_echo".into(),
            version: 1,
            raw_state: Some(pb::RawState {
                json: br#"{"name":"a","password":"s3cret","id":"id-true"}"#.to_vec(),
                flatmap: Default::default(),
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        decode_msgpack(&upgraded.upgraded_state.unwrap().msgpack, &ty).unwrap(),
        state
    );
    let deleted = svc
        .apply_resource_change(Request::new(pb::apply_resource_change::Request {
            type_name: "redisha_echo".into(),
            prior_state: dv(&state),
            planned_state: dv(&Value::Null),
            config: dv(&Value::Null),
            planned_private: vec![],
            provider_meta: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.new_state.unwrap().msgpack, vec![0xc0]);
}
