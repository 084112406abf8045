//! docgen: the provider's documentation in the Terraform registry layout (`docs/index.md`,
//! `docs/resources/<name>.md`, `docs/data-sources/<name>.md`), generated so that the argument
//! reference is always what Terraform itself is told.
//!
//! Each page comes from three sources: the schema the provider serves
//! (`terraform_provider_redisha::registry::schemas()`), the examples under `examples/` (valid
//! HCL, checked by `terraform fmt`), and a template under `templates/` holding the hand-written
//! prose, with placeholders where the generated parts go (see [`template`]). A resource or data
//! source without a template gets a default page.
//!
//! `docgen` writes the pages; `docgen --check` compares them with what is committed
//! ([`check`]) and fails with a diff, which is how CI notices a schema change without its docs.

pub mod check;
pub mod diff;
pub mod pages;
pub mod schema_markdown;
pub mod template;

use std::path::PathBuf;

/// Why the docs could not be generated; every case names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum DocgenError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {problem}", template.display())]
    Template {
        template: PathBuf,
        line: usize,
        problem: String,
    },
}

impl DocgenError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DocgenError {
        let path = path.into();
        move |source| DocgenError::Io { path, source }
    }
}
