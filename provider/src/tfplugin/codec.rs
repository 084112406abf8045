//! The wire encodings of values: msgpack `DynamicValue`s (with Terraform's unknown extension)
//! and the JSON that UpgradeResourceState receives as raw state. Both are type-directed: the
//! schema type says whether an array is a list, set or tuple, and how `dynamic` is wrapped.

use std::collections::BTreeMap;

use rmpv::Value as Mp;
use serde_json::Value as Json;

use crate::tfplugin::types::Type;
use crate::tfplugin::value::{Number, Value};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("msgpack: {0}")]
    Msgpack(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("at {path}: expected {expected}, found {found}")]
    Mismatch {
        path: String,
        expected: String,
        found: String,
    },
    #[error("at {path}: attribute {name:?} is not in the schema")]
    UnexpectedAttribute { path: String, name: String },
}

fn mismatch(path: &str, expected: &Type, found: impl std::fmt::Debug) -> CodecError {
    let mut found = format!("{found:?}");
    found.truncate(80);
    CodecError::Mismatch {
        path: if path.is_empty() {
            "(root)".into()
        } else {
            path.to_string()
        },
        expected: expected.to_json().to_string(),
        found,
    }
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Terraform's unknown value: msgpack extension type 0 with a one-byte payload.
fn unknown_ext() -> Mp {
    Mp::Ext(0, vec![0])
}

/// Decodes a msgpack DynamicValue. Empty input (an unset DynamicValue) is null.
pub fn decode_msgpack(bytes: &[u8], ty: &Type) -> Result<Value, CodecError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let mut rd = bytes;
    let mp = rmpv::decode::read_value(&mut rd).map_err(|e| CodecError::Msgpack(e.to_string()))?;
    if !rd.is_empty() {
        return Err(CodecError::Msgpack(format!(
            "{} bytes after the value",
            rd.len()
        )));
    }
    from_mp(&mp, ty, "")
}

pub fn encode_msgpack(value: &Value, ty: &Type) -> Result<Vec<u8>, CodecError> {
    let mp = to_mp(value, ty, "")?;
    let mut out = Vec::with_capacity(64);
    rmpv::encode::write_value(&mut out, &mp).map_err(|e| CodecError::Msgpack(e.to_string()))?;
    Ok(out)
}

fn from_mp(mp: &Mp, ty: &Type, path: &str) -> Result<Value, CodecError> {
    // Any extension is an unknown (type 0 plain, type 12 refined with a payload we ignore).
    if let Mp::Ext(..) = mp {
        return Ok(Value::Unknown);
    }
    if let Mp::Nil = mp {
        return Ok(Value::Null);
    }
    match ty {
        Type::String => match mp {
            Mp::String(s) => Ok(Value::String(s.as_str().unwrap_or_default().to_string())),
            Mp::Binary(b) => Ok(Value::String(String::from_utf8_lossy(b).into_owned())),
            other => Err(mismatch(path, ty, other)),
        },
        Type::Number => match mp {
            Mp::Integer(i) => Ok(Value::Number(match (i.as_i64(), i.as_u64()) {
                (Some(i), _) => Number::Int(i),
                (None, Some(u)) => Number::Decimal(u.to_string()),
                _ => return Err(mismatch(path, ty, i)),
            })),
            Mp::F64(f) => Ok(Value::Number(Number::Float(*f))),
            Mp::F32(f) => Ok(Value::Number(Number::Float(f64::from(*f)))),
            Mp::String(s) => {
                let s = s.as_str().unwrap_or_default();
                Ok(Value::Number(match s.parse::<i64>() {
                    Ok(i) => Number::Int(i),
                    Err(_) => Number::Decimal(s.to_string()),
                }))
            }
            other => Err(mismatch(path, ty, other)),
        },
        Type::Bool => match mp {
            Mp::Boolean(b) => Ok(Value::Bool(*b)),
            other => Err(mismatch(path, ty, other)),
        },
        Type::List(elem) | Type::Set(elem) => match mp {
            Mp::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| from_mp(v, elem, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()
                .map(Value::List),
            other => Err(mismatch(path, ty, other)),
        },
        Type::Tuple(elems) => match mp {
            Mp::Array(items) if items.len() == elems.len() => items
                .iter()
                .zip(elems)
                .enumerate()
                .map(|(i, (v, t))| from_mp(v, t, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()
                .map(Value::List),
            other => Err(mismatch(path, ty, other)),
        },
        Type::Map(elem) => match mp {
            Mp::Map(entries) => {
                let mut out = BTreeMap::new();
                for (k, v) in entries {
                    let key = map_key(k, path, ty)?;
                    let val = from_mp(v, elem, &format!("{path}[{key:?}]"))?;
                    out.insert(key, val);
                }
                Ok(Value::Map(out))
            }
            other => Err(mismatch(path, ty, other)),
        },
        Type::Object(attrs) => match mp {
            Mp::Map(entries) => {
                let mut out: BTreeMap<String, Value> =
                    attrs.keys().map(|k| (k.clone(), Value::Null)).collect();
                for (k, v) in entries {
                    let key = map_key(k, path, ty)?;
                    let Some(attr_ty) = attrs.get(&key) else {
                        return Err(CodecError::UnexpectedAttribute {
                            path: path.to_string(),
                            name: key,
                        });
                    };
                    let val = from_mp(v, attr_ty, &child(path, &key))?;
                    out.insert(key, val);
                }
                Ok(Value::Map(out))
            }
            other => Err(mismatch(path, ty, other)),
        },
        Type::Dynamic => match mp {
            // [type as JSON bytes, value]
            Mp::Array(pair) if pair.len() == 2 => {
                let ty_bytes: &[u8] = match &pair[0] {
                    Mp::Binary(b) => b,
                    Mp::String(s) => s.as_bytes(),
                    other => return Err(mismatch(path, ty, other)),
                };
                let json: Json = serde_json::from_slice(ty_bytes)?;
                let inner = Type::from_json(&json).ok_or_else(|| mismatch(path, ty, &json))?;
                from_mp(&pair[1], &inner, path)
            }
            other => Err(mismatch(path, ty, other)),
        },
    }
}

fn map_key(k: &Mp, path: &str, ty: &Type) -> Result<String, CodecError> {
    match k {
        Mp::String(s) => Ok(s.as_str().unwrap_or_default().to_string()),
        other => Err(mismatch(path, ty, other)),
    }
}

fn to_mp(value: &Value, ty: &Type, path: &str) -> Result<Mp, CodecError> {
    match (value, ty) {
        (Value::Unknown, _) => Ok(unknown_ext()),
        (Value::Null, _) => Ok(Mp::Nil),
        (Value::String(s), Type::String) => Ok(Mp::from(s.as_str())),
        (Value::Number(n), Type::Number) => Ok(match n {
            Number::Int(i) => Mp::from(*i),
            Number::Float(f) => Mp::F64(*f),
            Number::Decimal(s) => Mp::from(s.as_str()),
        }),
        (Value::Bool(b), Type::Bool) => Ok(Mp::Boolean(*b)),
        (Value::List(items), Type::List(elem) | Type::Set(elem)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| to_mp(v, elem, &format!("{path}[{i}]")))
            .collect::<Result<_, _>>()
            .map(Mp::Array),
        (Value::List(items), Type::Tuple(elems)) if items.len() == elems.len() => items
            .iter()
            .zip(elems)
            .enumerate()
            .map(|(i, (v, t))| to_mp(v, t, &format!("{path}[{i}]")))
            .collect::<Result<_, _>>()
            .map(Mp::Array),
        (Value::Map(m), Type::Map(elem)) => m
            .iter()
            .map(|(k, v)| {
                Ok((
                    Mp::from(k.as_str()),
                    to_mp(v, elem, &format!("{path}[{k:?}]"))?,
                ))
            })
            .collect::<Result<_, CodecError>>()
            .map(Mp::Map),
        (Value::Map(m), Type::Object(attrs)) => {
            if let Some(extra) = m.keys().find(|k| !attrs.contains_key(*k)) {
                return Err(CodecError::UnexpectedAttribute {
                    path: path.to_string(),
                    name: extra.clone(),
                });
            }
            // Exactly one key per attribute: missing ones are written as null.
            attrs
                .iter()
                .map(|(k, t)| {
                    let v = m.get(k).unwrap_or(&Value::Null);
                    Ok((Mp::from(k.as_str()), to_mp(v, t, &child(path, k))?))
                })
                .collect::<Result<_, CodecError>>()
                .map(Mp::Map)
        }
        (v, Type::Dynamic) => {
            let inner = infer_type(v);
            Ok(Mp::Array(vec![
                Mp::Binary(inner.to_json_bytes()),
                to_mp(v, &inner, path)?,
            ]))
        }
        (v, t) => Err(mismatch(path, t, v)),
    }
}

/// The type a `dynamic` attribute's value is sent as: tuples and objects, as HCL literals are.
fn infer_type(v: &Value) -> Type {
    match v {
        Value::Unknown | Value::Null => Type::Dynamic,
        Value::Bool(_) => Type::Bool,
        Value::Number(_) => Type::Number,
        Value::String(_) => Type::String,
        Value::List(items) => Type::Tuple(items.iter().map(infer_type).collect()),
        Value::Map(m) => Type::Object(m.iter().map(|(k, v)| (k.clone(), infer_type(v))).collect()),
    }
}

/// Decodes the JSON raw state Terraform stored (UpgradeResourceState). Attributes the schema no
/// longer has are dropped: the upgraded state must match the current schema exactly.
pub fn decode_json(bytes: &[u8], ty: &Type) -> Result<Value, CodecError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let json: Json = serde_json::from_slice(bytes)?;
    from_json(&json, ty, "")
}

fn from_json(json: &Json, ty: &Type, path: &str) -> Result<Value, CodecError> {
    if json.is_null() {
        return Ok(Value::Null);
    }
    match (ty, json) {
        (Type::String, Json::String(s)) => Ok(Value::String(s.clone())),
        (Type::Number, Json::Number(n)) => Ok(Value::Number(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Number::Int(i),
            (None, Some(f)) if n.is_f64() => Number::Float(f),
            _ => Number::Decimal(n.to_string()),
        })),
        (Type::Number, Json::String(s)) => Ok(Value::Number(Number::Decimal(s.clone()))),
        (Type::Bool, Json::Bool(b)) => Ok(Value::Bool(*b)),
        (Type::List(elem) | Type::Set(elem), Json::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| from_json(v, elem, &format!("{path}[{i}]")))
            .collect::<Result<_, _>>()
            .map(Value::List),
        (Type::Tuple(elems), Json::Array(items)) if elems.len() == items.len() => items
            .iter()
            .zip(elems)
            .enumerate()
            .map(|(i, (v, t))| from_json(v, t, &format!("{path}[{i}]")))
            .collect::<Result<_, _>>()
            .map(Value::List),
        (Type::Map(elem), Json::Object(m)) => m
            .iter()
            .map(|(k, v)| Ok((k.clone(), from_json(v, elem, &format!("{path}[{k:?}]"))?)))
            .collect::<Result<_, CodecError>>()
            .map(Value::Map),
        (Type::Object(attrs), Json::Object(m)) => attrs
            .iter()
            .map(|(k, t)| {
                let v = match m.get(k) {
                    Some(v) => from_json(v, t, &child(path, k))?,
                    None => Value::Null,
                };
                Ok((k.clone(), v))
            })
            .collect::<Result<_, CodecError>>()
            .map(Value::Map),
        // Terraform stores dynamic values as {"value": ..., "type": ...}.
        (Type::Dynamic, Json::Object(m)) => {
            let inner = m
                .get("type")
                .and_then(Type::from_json)
                .ok_or_else(|| mismatch(path, ty, json))?;
            from_json(m.get("value").unwrap_or(&Json::Null), &inner, path)
        }
        (t, j) => Err(mismatch(path, t, j)),
    }
}
