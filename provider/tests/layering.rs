//! The plugin framework (`src/tfplugin/`) knows nothing of the provider built on it: no file
//! of it names the provider or its crates, so it could serve any provider.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read the framework's directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read a framework source");
            out.push((path.display().to_string(), text));
        }
    }
}

#[test]
fn the_framework_never_names_the_provider() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tfplugin");
    let mut files = Vec::new();
    sources(&dir, &mut files);
    assert!(files.len() > 5, "the framework's sources are found");
    for (path, text) in files {
        assert!(
            !text.to_lowercase().contains("redisha"),
            "{path} names the provider or its crates"
        );
    }
}
