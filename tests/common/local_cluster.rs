//! Helpers for tests that run `redisha_cluster` with the local driver.

use std::path::{Path, PathBuf};

use super::TfDir;

/// Ends every redis-server this test's data dir holds (by its pidfile's pid, after checking the
/// process is ours) even when the test fails halfway; terraform destroy is tried first.
pub struct Cleanup<'a> {
    pub tf: &'a TfDir,
    pub data_dir: PathBuf,
    pub destroy_args: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.data_dir.exists() {
            return;
        }
        let args: Vec<&str> = self.destroy_args.iter().map(String::as_str).collect();
        let _ = self.tf.run(&args);
        for pid in our_pids(&self.data_dir) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

/// Pids of running redis-servers whose pidfile is in a node directory under `data_dir`:
/// `<data_dir>/<cluster id>/<node>/` (and `<data_dir>/<node>/`, the layout before cluster ids).
pub fn our_pids(data_dir: &Path) -> Vec<u32> {
    let subdirs = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut dirs = Vec::new();
    for top in subdirs(data_dir) {
        dirs.extend(subdirs(&top));
        dirs.push(top);
    }
    dirs.iter()
        .filter_map(|dir| {
            let pid: u32 = std::fs::read_to_string(dir.join("redis.pid"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains("redis-server")
                .then_some(pid)
        })
        .collect()
}
