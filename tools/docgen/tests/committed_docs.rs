//! The committed docs are what docgen writes: a schema, template or example changed without
//! regenerating them fails here (and in `docgen --check`, which scripts/test runs).

use std::path::Path;

#[test]
fn committed_docs_match_the_schema_templates_and_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let pages = docgen::pages::generate(&root).expect("docs generate");
    let differences = docgen::check::compare(&root, &pages).expect("docs compare");
    let report: Vec<String> = differences.iter().map(ToString::to_string).collect();
    assert!(
        differences.is_empty(),
        "docs/ is out of date: run `cargo run -p docgen` and commit the result.\n{}",
        report.join("\n")
    );
}
