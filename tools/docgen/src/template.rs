//! Templates: a page's hand-written prose with placeholders where the generated parts go.
//! The placeholders borrow tfplugindocs' spelling so they read familiar:
//!
//! | placeholder | becomes |
//! |---|---|
//! | `{{ .Name }}` | the type name, `redisha_cluster` |
//! | `{{ .Description }}` | the schema's description, on one line |
//! | `{{ .SchemaMarkdown }}` | the argument and attribute reference ([`crate::schema_markdown`]) |
//! | `{{ .Example }}` | the page's example file as a `terraform` code block |
//! | `{{ .Import }}` | the page's `import.sh` as a `shell` code block |
//! | `{{ tffile "examples/..." }}` | any other file under the repository as a `terraform` code block |
//!
//! Anything else between `{{` and `}}` is an error naming the template and line, so a typo
//! cannot leave a placeholder in a published page.

use std::path::{Path, PathBuf};

use crate::DocgenError;

/// What the placeholders of one page stand for.
pub struct Inputs<'a> {
    /// The repository root; example paths are relative to it.
    pub root: &'a Path,
    pub name: &'a str,
    pub description: &'a str,
    pub schema_markdown: String,
    /// The page's example and import files (relative to `root`); a placeholder naming a file
    /// that does not exist is an error.
    pub example: PathBuf,
    pub import: PathBuf,
}

/// `text` (read from `template`, named in errors) with every placeholder replaced.
pub fn render(template: &Path, text: &str, inputs: &Inputs) -> Result<String, DocgenError> {
    let mut out = String::with_capacity(text.len() * 2);
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let line = text[..text.len() - rest.len() + start]
            .matches('\n')
            .count()
            + 1;
        let fail = |problem: String| DocgenError::Template {
            template: template.to_path_buf(),
            line,
            problem,
        };
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| fail("`{{` without a closing `}}`".into()))?;
        out.push_str(&expand(after[..end].trim(), inputs).map_err(|e| match e {
            Expansion::Unknown(p) => fail(format!(
                "unknown placeholder `{{{{ {p} }}}}`: use .Name, .Description, .SchemaMarkdown, \
                 .Example, .Import or tffile \"PATH\""
            )),
            Expansion::Io(e) => e,
        })?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

enum Expansion {
    Unknown(String),
    Io(DocgenError),
}

fn expand(placeholder: &str, inputs: &Inputs) -> Result<String, Expansion> {
    let code = |lang: &str, file: &Path| code_block(inputs.root, lang, file).map_err(Expansion::Io);
    match placeholder {
        ".Name" => Ok(inputs.name.to_string()),
        ".Description" => Ok(inputs
            .description
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")),
        ".SchemaMarkdown" => Ok(inputs.schema_markdown.trim_end().to_string()),
        ".Example" => code("terraform", &inputs.example),
        ".Import" => code("shell", &inputs.import),
        other => match other
            .strip_prefix("tffile")
            .map(str::trim)
            .and_then(|quoted| quoted.strip_prefix('"')?.strip_suffix('"'))
        {
            Some(file) if !file.is_empty() => code("terraform", Path::new(file)),
            _ => Err(Expansion::Unknown(other.to_string())),
        },
    }
}

/// The file as a fenced code block, without its trailing blank lines.
fn code_block(root: &Path, lang: &str, file: &Path) -> Result<String, DocgenError> {
    let body = std::fs::read_to_string(root.join(file)).map_err(DocgenError::io(file))?;
    Ok(format!("```{lang}\n{}\n```", body.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_inputs<T>(f: impl FnOnce(&Inputs) -> T) -> T {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("resource.tf"),
            "resource \"x\" \"y\" {}\n\n",
        )
        .expect("write");
        let inputs = Inputs {
            root: dir.path(),
            name: "redisha_x",
            description: "Does  x,\n   well.",
            schema_markdown: "## Schema\n".into(),
            example: "resource.tf".into(),
            import: "import.sh".into(),
        };
        f(&inputs)
    }

    #[test]
    fn placeholders_are_replaced() {
        let page = with_inputs(|i| {
            render(
                Path::new("t.md.tmpl"),
                "# {{ .Name }}\n{{.Description}}\n{{ .Example }}\n{{ tffile \"resource.tf\" }}\n{{ .SchemaMarkdown }}\n",
                i,
            )
        })
        .expect("renders");
        let block = "```terraform\nresource \"x\" \"y\" {}\n```";
        assert_eq!(
            page,
            format!("# redisha_x\nDoes x, well.\n{block}\n{block}\n## Schema\n")
        );
    }

    #[test]
    fn an_unknown_placeholder_names_the_template_line() {
        let err = with_inputs(|i| render(Path::new("t.md.tmpl"), "a\nb {{ .Exmaple }}\n", i))
            .expect_err("typo");
        let text = err.to_string();
        assert!(
            text.starts_with("t.md.tmpl:2: unknown placeholder `{{ .Exmaple }}`"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_example_file_is_named() {
        let err = with_inputs(|i| render(Path::new("t.md.tmpl"), "{{ .Import }}", i))
            .expect_err("no import.sh");
        assert!(err.to_string().starts_with("import.sh: "), "{err}");
    }
}
