//! Framework types to and from protocol messages.

use crate::tfplugin::codec::{self, CodecError};
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics, PathStep, Severity};
use crate::tfplugin::proto::tfplugin6 as pb;
use crate::tfplugin::schema::{Attribute, Block, NestedBlock, Nesting, Schema};
use crate::tfplugin::types::Type;
use crate::tfplugin::value::Value;

pub fn path_to_pb(path: &AttrPath) -> pb::AttributePath {
    use pb::attribute_path::step::Selector;
    pb::AttributePath {
        steps: path
            .0
            .iter()
            .map(|s| pb::attribute_path::Step {
                selector: Some(match s {
                    PathStep::Attribute(a) => Selector::AttributeName(a.clone()),
                    PathStep::Key(k) => Selector::ElementKeyString(k.clone()),
                    PathStep::Index(i) => Selector::ElementKeyInt(*i),
                }),
            })
            .collect(),
    }
}

pub fn diagnostic_to_pb(d: &Diagnostic) -> pb::Diagnostic {
    pb::Diagnostic {
        severity: match d.severity {
            Severity::Error => pb::diagnostic::Severity::Error as i32,
            Severity::Warning => pb::diagnostic::Severity::Warning as i32,
        },
        summary: d.summary.clone(),
        detail: d.detail.clone(),
        attribute: d.path.as_ref().map(path_to_pb),
    }
}

pub fn diagnostics_to_pb(d: &Diagnostics) -> Vec<pb::Diagnostic> {
    d.iter().map(diagnostic_to_pb).collect()
}

fn attribute_to_pb(a: &Attribute) -> pb::schema::Attribute {
    pb::schema::Attribute {
        name: a.name.clone(),
        r#type: a.ty.to_json_bytes(),
        description: a.description.clone(),
        required: a.required,
        optional: a.optional,
        computed: a.computed,
        sensitive: a.sensitive,
        description_kind: pb::StringKind::Markdown as i32,
        deprecated: false,
    }
}

fn nested_to_pb(b: &NestedBlock) -> pb::schema::NestedBlock {
    use pb::schema::nested_block::NestingMode;
    pb::schema::NestedBlock {
        type_name: b.type_name.clone(),
        block: Some(block_to_pb(&b.block)),
        nesting: match b.nesting {
            Nesting::Single => NestingMode::Single,
            Nesting::List => NestingMode::List,
            Nesting::Set => NestingMode::Set,
            Nesting::Map => NestingMode::Map,
            Nesting::Group => NestingMode::Group,
        } as i32,
        min_items: b.min_items,
        max_items: b.max_items,
    }
}

fn block_to_pb(b: &Block) -> pb::schema::Block {
    pb::schema::Block {
        version: 0,
        attributes: b.attributes.iter().map(attribute_to_pb).collect(),
        block_types: b.blocks.iter().map(nested_to_pb).collect(),
        description: b.description.clone(),
        description_kind: pb::StringKind::Markdown as i32,
        deprecated: false,
    }
}

pub fn schema_to_pb(s: &Schema) -> pb::Schema {
    pb::Schema {
        version: s.version,
        block: Some(block_to_pb(&s.block)),
    }
}

/// Decodes a DynamicValue (msgpack, or JSON when only that is set); absent = null.
pub fn decode_dynamic(v: Option<&pb::DynamicValue>, ty: &Type) -> Result<Value, CodecError> {
    match v {
        None => Ok(Value::Null),
        Some(d) if !d.msgpack.is_empty() => codec::decode_msgpack(&d.msgpack, ty),
        Some(d) if !d.json.is_empty() => codec::decode_json(&d.json, ty),
        Some(_) => Ok(Value::Null),
    }
}

pub fn encode_dynamic(v: &Value, ty: &Type) -> Result<pb::DynamicValue, CodecError> {
    Ok(pb::DynamicValue {
        msgpack: codec::encode_msgpack(v, ty)?,
        json: Vec::new(),
    })
}

/// A codec failure as a diagnostic naming the RPC and the value.
pub fn codec_diag(rpc: &str, what: &str, e: &CodecError) -> Diagnostic {
    Diagnostic::error(
        format!("{rpc}: cannot decode or encode {what}"),
        format!("{e}. This is a bug in the provider or a Terraform version it does not support."),
    )
}
