//! Typed helpers that pull attributes out of a config or state object. Each returns whether
//! the value is known, null or unknown, and a diagnostic on the attribute when its value does
//! not fit (say a negative `shards`), so validate can check what is known and skip the rest.

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic};
use crate::tfplugin::value::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Field<T> {
    Known(T),
    Null,
    /// Not known until apply: validate skips it; read never sees it.
    Unknown,
}

impl<T> Field<T> {
    pub fn known(self) -> Option<T> {
        match self {
            Field::Known(v) => Some(v),
            _ => None,
        }
    }
    pub fn is_unknown(&self) -> bool {
        matches!(self, Field::Unknown)
    }
    /// The value, or `default` when null; `None` when unknown.
    pub fn or_default_when_null(self, default: T) -> Option<T> {
        match self {
            Field::Known(v) => Some(v),
            Field::Null => Some(default),
            Field::Unknown => None,
        }
    }
}

fn field<'v, T>(
    obj: &'v Value,
    name: &str,
    at: &AttrPath,
    convert: impl FnOnce(&'v Value) -> Result<T, String>,
) -> Result<Field<T>, Diagnostic> {
    if obj.is_unknown() {
        return Ok(Field::Unknown);
    }
    match obj.get(name) {
        Value::Unknown => Ok(Field::Unknown),
        Value::Null => Ok(Field::Null),
        v => convert(v)
            .map(Field::Known)
            .map_err(|msg| Diagnostic::error(format!("Invalid {name}"), msg).at(at.then(name))),
    }
}

pub fn string(obj: &Value, name: &str, at: &AttrPath) -> Result<Field<String>, Diagnostic> {
    field(obj, name, at, |v| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{name} must be a string"))
    })
}

pub fn bool(obj: &Value, name: &str, at: &AttrPath) -> Result<Field<bool>, Diagnostic> {
    field(obj, name, at, |v| {
        v.as_bool()
            .ok_or_else(|| format!("{name} must be true or false"))
    })
}

pub fn u64(obj: &Value, name: &str, at: &AttrPath) -> Result<Field<u64>, Diagnostic> {
    field(obj, name, at, |v| {
        v.as_number()
            .and_then(|n| n.as_u64())
            .ok_or_else(|| format!("{name} must be a whole number, 0 or more; got {}", show(v)))
    })
}

pub fn u32(obj: &Value, name: &str, at: &AttrPath) -> Result<Field<u32>, Diagnostic> {
    field(obj, name, at, |v| {
        v.as_number()
            .and_then(|n| n.as_u64())
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                format!(
                    "{name} must be a whole number from 0 to {}; got {}",
                    u32::MAX,
                    show(v)
                )
            })
    })
}

/// A list (or set) attribute or nested block list; elements may themselves be unknown.
pub fn list<'v>(
    obj: &'v Value,
    name: &str,
    at: &AttrPath,
) -> Result<Field<&'v [Value]>, Diagnostic> {
    field(obj, name, at, |v| {
        v.as_list().ok_or_else(|| format!("{name} must be a list"))
    })
}

fn show(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}
