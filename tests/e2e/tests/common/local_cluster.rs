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
/// `<data_dir>/<cluster id>/<node>/` (and `<data_dir>/<node>/`, the layout before cluster ids),
/// and of the metrics exporters recorded there.
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
    // A pidfile's pid counts only while it runs what that file is for.
    let running = |dir: &PathBuf, pidfile: &str, names: &[&str]| -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(dir.join(pidfile))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        names.iter().any(|n| cmdline.contains(n)).then_some(pid)
    };
    dirs.iter()
        .flat_map(|dir| {
            [
                running(dir, "redis.pid", &["redis-server", "valkey-server"]),
                running(dir, "exporter.pid", &["redis-exporter", "redis_exporter"]),
            ]
        })
        .flatten()
        .collect()
}

/// A running redis-server found through /proc.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RedisProcess {
    pub pid: u32,
    /// The `ip:port` it listens on, from its process title (the local driver's
    /// proc-title-template puts the listen address there).
    pub address: Option<String>,
}

/// Every redis-server process whose command line names `dir`, whatever pidfiles say: a node
/// that the provider started but never recorded (it was killed first) has to show up too.
pub fn redis_processes(dir: &Path) -> Vec<RedisProcess> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<RedisProcess> = entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            if !cmdline.contains("redis-server") || !cmdline.contains(&needle) {
                return None;
            }
            // A zombie keeps its cmdline for a moment but serves nothing.
            if process_state(pid) == Some('Z') {
                return None;
            }
            let address = cmdline
                .split_whitespace()
                .find(|t| t.parse::<std::net::SocketAddr>().is_ok())
                .map(str::to_string);
            Some(RedisProcess { pid, address })
        })
        .collect();
    found.sort();
    found
}

/// The state letter of /proc/<pid>/stat (`R`, `S`, `Z`...), None when the process is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the state follows the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// SIGKILLs one process by pid (kill(1): the tests have no libc binding). Returns whether
/// the signal was delivered.
pub fn sigkill(pid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Ends, by pid, every redis-server whose command line names `dir` (a directory only this
/// test uses); test guards call it when dropped so a failed test leaves nothing running.
pub fn kill_redis_under(dir: &Path) -> usize {
    redis_processes(dir)
        .into_iter()
        .filter(|p| sigkill(p.pid))
        .count()
}
