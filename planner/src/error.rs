//! Errors the planner reports to users: every message names the field or constraint and, where
//! there is one, the fix.

use std::fmt;

use serde::Serialize;
use thiserror::Error;

/// One step of a path into the request document, e.g. `zones`, `[1]`, `hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PathStep {
    Field(String),
    Index(usize),
}

/// A problem with one field of the input, rendered as `zones[1].hosts[3].memory_mb: message`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct FieldError {
    pub path: Vec<PathStep>,
    pub message: String,
}

impl FieldError {
    pub fn new(path: Vec<PathStep>, message: impl Into<String>) -> Self {
        FieldError {
            path,
            message: message.into(),
        }
    }

    /// The path alone, in the document's own field names: `zones[1].hosts[3].memory_mb`.
    pub fn path_string(&self) -> String {
        render_path(&self.path)
    }
}

pub(crate) fn render_path(path: &[PathStep]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            PathStep::Field(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            PathStep::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path_string(), self.message)
        }
    }
}

/// Every problem found in one input, reported together so a user fixes them in one go.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Why no plan came out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// The document is well-formed but some fields are wrong (all of them listed).
    #[error("invalid request:\n{0}")]
    Invalid(ValidationErrors),
    /// No placement meets a hard constraint; `fix` says what change of the request would help.
    #[error("infeasible: {constraint}\nfix: {fix}")]
    Infeasible { constraint: String, fix: String },
    /// The text is not a request document (syntax, type or unknown field; names line or field).
    #[error("cannot parse request: {0}")]
    Parse(String),
}

impl From<ValidationErrors> for PlanError {
    fn from(e: ValidationErrors) -> Self {
        PlanError::Invalid(e)
    }
}

/// Small helper to build paths without noise at every call site.
#[derive(Debug, Clone, Default)]
pub(crate) struct Path(pub Vec<PathStep>);

impl Path {
    pub fn root() -> Self {
        Path(Vec::new())
    }
    pub fn field(&self, name: &str) -> Self {
        let mut p = self.0.clone();
        p.push(PathStep::Field(name.to_string()));
        Path(p)
    }
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.0.clone();
        p.push(PathStep::Index(i));
        Path(p)
    }
    pub fn error(&self, message: impl Into<String>) -> FieldError {
        FieldError::new(self.0.clone(), message)
    }
}
