//! Comparing the generated pages with the files under `docs/`, and writing them there.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::pages::{Page, GENERATED_DIRS};
use crate::{diff, DocgenError};

/// How a committed page differs from the generated one.
#[derive(Debug, PartialEq, Eq)]
pub enum Difference {
    /// The committed page has other text; `diff` is a unified diff from it to the generated one.
    Changed { path: PathBuf, diff: String },
    /// No page is committed where one is generated.
    Missing { path: PathBuf },
    /// A committed page in a generated folder that no resource or data source makes.
    Stale { path: PathBuf },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Changed { diff, .. } => write!(f, "{diff}"),
            Difference::Missing { path } => {
                write!(f, "{}: missing (would be written)", path.display())
            }
            Difference::Stale { path } => write!(
                f,
                "{}: no resource or data source has this page (would be removed)",
                path.display()
            ),
        }
    }
}

/// Every difference between `pages` and what is under `root`; empty when the docs are current.
pub fn compare(root: &Path, pages: &[Page]) -> Result<Vec<Difference>, DocgenError> {
    let mut out = Vec::new();
    for page in pages {
        let name = page.path.display().to_string();
        match std::fs::read_to_string(root.join(&page.path)) {
            Ok(committed) => {
                let diff = diff::unified(
                    &format!("{name} (committed)"),
                    &committed,
                    &format!("{name} (generated)"),
                    &page.text,
                );
                // Equal lines but other line ends (a missing final newline) still differ.
                if !diff.is_empty() || committed != page.text {
                    out.push(Difference::Changed {
                        path: page.path.clone(),
                        diff: if diff.is_empty() {
                            format!("{name}: differs in line ends only\n")
                        } else {
                            diff
                        },
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(Difference::Missing {
                path: page.path.clone(),
            }),
            Err(e) => return Err(DocgenError::io(&page.path)(e)),
        }
    }
    for path in stale(root, pages)? {
        out.push(Difference::Stale { path });
    }
    Ok(out)
}

/// Writes every page that differs and removes stale ones; returns what it changed.
pub fn write(root: &Path, pages: &[Page]) -> Result<Vec<Difference>, DocgenError> {
    let differences = compare(root, pages)?;
    for page in pages
        .iter()
        .filter(|p| differences.iter().any(|d| d.rewrites(&p.path)))
    {
        let file = root.join(&page.path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(DocgenError::io(dir))?;
        }
        std::fs::write(&file, &page.text).map_err(DocgenError::io(&page.path))?;
    }
    for d in &differences {
        if let Difference::Stale { path } = d {
            std::fs::remove_file(root.join(path)).map_err(DocgenError::io(path))?;
        }
    }
    Ok(differences)
}

impl Difference {
    /// Whether fixing this difference means writing the generated page at `path`.
    fn rewrites(&self, path: &Path) -> bool {
        match self {
            Difference::Changed { path: p, .. } | Difference::Missing { path: p } => p == path,
            Difference::Stale { .. } => false,
        }
    }
}

/// Markdown files in the generated folders that no page is generated for.
fn stale(root: &Path, pages: &[Page]) -> Result<Vec<PathBuf>, DocgenError> {
    let mut out = Vec::new();
    for dir in GENERATED_DIRS {
        let entries = match std::fs::read_dir(root.join(dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(DocgenError::io(dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(DocgenError::io(dir))?;
            let path = Path::new(dir).join(entry.file_name());
            let is_md = path.extension().is_some_and(|e| e == "md");
            if is_md && !pages.iter().any(|p| p.path == path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(path: &str, text: &str) -> Page {
        Page {
            path: path.into(),
            text: text.into(),
        }
    }

    #[test]
    fn reports_changed_missing_and_stale_pages_and_write_fixes_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("docs/resources")).expect("mkdir");
        std::fs::write(root.join("docs/index.md"), "old\n").expect("write");
        std::fs::write(root.join("docs/resources/gone.md"), "x\n").expect("write");
        let pages = [
            page("docs/index.md", "new\n"),
            page("docs/data-sources/d.md", "d\n"),
        ];
        let found = compare(root, &pages).expect("compare");
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            matches!(&found[0], Difference::Changed { diff, .. } if diff.contains("-old\n+new\n"))
        );
        assert_eq!(
            found[1],
            Difference::Missing {
                path: "docs/data-sources/d.md".into()
            }
        );
        assert_eq!(
            found[2],
            Difference::Stale {
                path: "docs/resources/gone.md".into()
            }
        );

        write(root, &pages).expect("write");
        assert_eq!(compare(root, &pages).expect("compare"), vec![]);
        assert!(!root.join("docs/resources/gone.md").exists());
    }

    #[test]
    fn a_missing_final_newline_is_a_difference() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("docs")).expect("mkdir");
        std::fs::write(dir.path().join("docs/index.md"), "same").expect("write");
        let found = compare(dir.path(), &[page("docs/index.md", "same\n")]).expect("compare");
        assert_eq!(found.len(), 1, "{found:?}");
    }
}
