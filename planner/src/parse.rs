//! Reading a request document from JSON or TOML. Errors name the field path and, where the
//! parser knows it, the line.

use crate::error::PlanError;
use crate::request::Request;

/// The syntax of a request document; both have the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Json,
    Toml,
}

impl InputFormat {
    /// Guess from a file name: `.toml` is TOML, anything else JSON.
    pub fn from_path(path: &str) -> InputFormat {
        if path.to_ascii_lowercase().ends_with(".toml") {
            InputFormat::Toml
        } else {
            InputFormat::Json
        }
    }
}

/// Parse a request. Only the syntax and types are checked here; call [`crate::validate`] for
/// the rest (or [`crate::plan`], which validates).
pub fn parse_request(text: &str, format: InputFormat) -> Result<Request, PlanError> {
    match format {
        InputFormat::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let req: Request = serde_path_to_error::deserialize(&mut de)
                .map_err(|e| PlanError::Parse(describe(e.path().to_string(), e.inner())))?;
            de.end()
                .map_err(|e| PlanError::Parse(format!("trailing characters: {e}")))?;
            Ok(req)
        }
        InputFormat::Toml => {
            let de = toml::Deserializer::new(text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| PlanError::Parse(describe(e.path().to_string(), e.inner())))
        }
    }
}

fn describe(path: String, inner: &dyn std::fmt::Display) -> String {
    // serde_path_to_error renders the document root as "."; a root-level error has no field.
    let inner = inner.to_string();
    let inner = inner.trim_end();
    if path == "." || path.is_empty() {
        inner.to_string()
    } else {
        format!("{path}: {inner}")
    }
}
