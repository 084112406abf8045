//! Where backups live. A store holds files by key (`<cluster id>/<backup id>/manifest.json`);
//! this crate has the directory store, the aws crate an S3 one. Every store writes a file
//! whole or not at all, so a reader never sees half a file under its final name.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

/// Why a store call failed, with the location it was about.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {problem}")]
pub struct StoreError {
    pub location: String,
    pub problem: String,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// The store's location, for messages and backup ids (`/var/backups/redis`,
    /// `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// Copies the local file `from` to `key`.
    async fn put_file(&self, key: &str, from: &Path) -> Result<(), StoreError>;

    async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError>;

    /// The object at `key`; `None` when there is none.
    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Copies `key` to the local file `to`; `false` when there is no such object.
    async fn get_file(&self, key: &str, to: &Path) -> Result<bool, StoreError>;

    /// A local path where `key` can be read in place, for stores that have one.
    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }

    /// Every key that starts with `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Removes every key that starts with `prefix` (which ends with `/`).
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError>;
}

/// Keys are relative paths of plain names: no `..`, no empty part, nothing absolute.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(format!("{key:?} is not a plain relative name"));
    }
    Ok(())
}

/// Backups in a directory: `<root>/<cluster id>/<backup id>/...`, directories mode 0700 and
/// files 0600 (a snapshot holds every value of the cluster).
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key).map_err(|problem| self.error(problem))?;
        Ok(self.root.join(key))
    }

    fn error(&self, problem: impl Into<String>) -> StoreError {
        StoreError {
            location: self.root.display().to_string(),
            problem: problem.into(),
        }
    }

    fn io(&self, what: &str, path: &Path, e: std::io::Error) -> StoreError {
        self.error(format!("cannot {what} {}: {e}", path.display()))
    }

    fn parent_dir(&self, path: &Path) -> Result<(), StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| self.io("create", parent, e))?;
        }
        Ok(())
    }

    /// Writes through a temporary name and renames, so that the final name is whole.
    fn write_with(
        &self,
        key: &str,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let path = self.path(key)?;
        self.parent_dir(&path)?;
        let tmp = path.with_extension("partial");
        crate::local::write_private_file(&path, &tmp, fill).map_err(|e| self.io("write", &path, e))
    }
}

#[async_trait]
impl Store for DirStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn put_file(&self, key: &str, from: &Path) -> Result<(), StoreError> {
        let mut input = std::fs::File::open(from).map_err(|e| self.io("read", from, e))?;
        self.write_with(key, |out| std::io::copy(&mut input, out).map(|_| ()))
    }

    async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.write_with(key, |out| out.write_all(&data))
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(key)?;
        match std::fs::read(&path) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("read", &path, e)),
        }
    }

    async fn get_file(&self, key: &str, to: &Path) -> Result<bool, StoreError> {
        let path = self.path(key)?;
        match std::fs::copy(&path, to) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io("copy", &path, e)),
        }
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("list", &dir, e)),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel.to_string_lossy().into_owned();
                if key.starts_with(prefix) {
                    out.push(key);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        let dir = self.path(prefix.trim_end_matches('/'))?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("remove", &dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_round_trip_and_prefixes_list_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        store
            .put_bytes("c1/b1/manifest.json", b"{}".to_vec())
            .await
            .unwrap();
        store.put_bytes("c1/b2/x.rdb", b"x".to_vec()).await.unwrap();
        store.put_bytes("c2/b1/y.rdb", b"y".to_vec()).await.unwrap();
        assert_eq!(
            store.list("c1/").await.unwrap(),
            ["c1/b1/manifest.json", "c1/b2/x.rdb"]
        );
        assert_eq!(
            store.get_bytes("c1/b1/manifest.json").await.unwrap(),
            Some(b"{}".to_vec())
        );
        assert_eq!(store.get_bytes("c1/none").await.unwrap(), None);
        store.delete_prefix("c1/b1/").await.unwrap();
        assert_eq!(store.list("c1/").await.unwrap(), ["c1/b2/x.rdb"]);
        assert!(store.put_bytes("../escape", Vec::new()).await.is_err());
    }
}
