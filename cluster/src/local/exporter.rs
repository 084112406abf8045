//! The local driver's Prometheus exporters: one `prometheus-redis-exporter` process per node,
//! listening on the node's own address at `port + port_offset`.
//!
//! Like the nodes, exporters are found and ended by pid only: the pid is kept in
//! `exporter.pid` in the node's directory and counts only while /proc shows an exporter whose
//! arguments name that directory's password file. The password reaches the exporter through
//! that mode-0600 file (`-redis.password-file`), never through its arguments, which any user
//! can read. With the operator user the exporter logs in as `redisha-exporter`, which may
//! read `INFO` and little else (`acl::EXPORTER_RULES`), so it works with `default` off. The exporter is not our child: a shell starts it in its own session and exits, so
//! it outlives the provider like the daemonized redis-server and leaves no zombie behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::info;

use super::{log_tail, signal, LocalDriver};
use crate::driver::{DriverError, NodeConfig, NodeHandle};

/// The exporter's pidfile in the node's directory.
pub const EXPORTER_PID_FILE: &str = "exporter.pid";
/// The exporter's password file (JSON: redis URI to password) in the node's directory.
pub const EXPORTER_PASSWORD_FILE: &str = "exporter-password.json";
const EXPORTER_LOG_FILE: &str = "exporter.log";
/// The exporter's port is the node's client port plus this, unless configured otherwise:
/// above the cluster bus ports (+10000), so both keep clear of each other.
pub const DEFAULT_EXPORTER_PORT_OFFSET: u16 = 20000;

const EXPORTER_START_TIMEOUT: Duration = Duration::from_secs(15);
const EXPORTER_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `metrics { }` for the local driver: which exporter binary runs beside every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalExporter {
    /// A path, or a name looked up on PATH.
    #[serde(default = "default_exporter_binary")]
    pub binary: String,
    #[serde(default = "default_port_offset")]
    pub port_offset: u16,
}

impl Default for LocalExporter {
    fn default() -> Self {
        LocalExporter {
            binary: default_exporter_binary(),
            port_offset: DEFAULT_EXPORTER_PORT_OFFSET,
        }
    }
}

fn default_exporter_binary() -> String {
    "prometheus-redis-exporter".into()
}

fn default_port_offset() -> u16 {
    DEFAULT_EXPORTER_PORT_OFFSET
}

/// The exporter port of a node listening on `node_port`, if it fits below 65536.
pub fn exporter_port(node_port: u16, offset: u16) -> Option<u16> {
    node_port.checked_add(offset)
}

/// Whether `pid` is a redis exporter started for the node directory `dir` (its arguments name
/// the password file there).
pub fn is_our_exporter(pid: u32, dir: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
    (cmdline.contains("redis-exporter") || cmdline.contains("redis_exporter"))
        && cmdline.contains(&*dir.join(EXPORTER_PASSWORD_FILE).to_string_lossy())
}

/// The exporter's pid in `dir`, if it runs.
pub fn exporter_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(EXPORTER_PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|pid| is_our_exporter(*pid, dir))
}

impl LocalDriver {
    /// The node's exporter address `ip:port`, when exporters are configured.
    pub fn exporter_address(&self, node: &NodeHandle) -> Option<String> {
        let e = self.config.exporter.as_ref()?;
        exporter_port(node.port, e.port_offset).map(|p| format!("{}:{p}", node.ip))
    }

    /// The exporter binary, resolved on PATH.
    pub(super) fn resolve_exporter(&self) -> Result<Option<PathBuf>, DriverError> {
        let Some(e) = &self.config.exporter else {
            return Ok(None);
        };
        super::find_executable(&e.binary)
            .map(Some)
            .ok_or_else(|| DriverError::ExporterNotFound {
                path: e.binary.clone(),
            })
    }

    /// Checks that the exporter port of a node at `port` fits and is free on `ip`.
    pub(super) fn exporter_port_free(&self, ip: &str, port: u16) -> Result<(), DriverError> {
        let Some(e) = &self.config.exporter else {
            return Ok(());
        };
        let Some(p) = exporter_port(port, e.port_offset) else {
            return Err(DriverError::Topology(format!(
                "metrics.port_offset: node port {port} + {} is above 65535; choose a smaller port_offset",
                e.port_offset
            )));
        };
        super::ports_free(ip, [u32::from(p)])
    }

    /// Starts the node's exporter unless it runs; with `restart`, a running one is replaced
    /// (it reads its password file only at start). Returns once it accepts connections.
    pub(super) async fn ensure_exporter(
        &self,
        node: &NodeHandle,
        config: &NodeConfig,
        restart: bool,
    ) -> Result<(), DriverError> {
        let (Some(binary), Some(listen), Some(dir)) = (
            self.resolve_exporter()?,
            self.exporter_address(node),
            node.data_dir.as_ref(),
        ) else {
            return Ok(());
        };
        if exporter_pid(dir).is_some() {
            if !restart {
                return Ok(());
            }
            self.stop_exporter(node).await?;
        }
        let password_file = dir.join(EXPORTER_PASSWORD_FILE);
        let scheme = if self.tls().is_some() {
            "rediss"
        } else {
            "redis"
        };
        let uri = format!("{scheme}://{}", node.address());
        let (user, password) = config.acl.exporter_login(config.password.as_ref());
        let password = password.as_ref().map_or("", |p| p.expose());
        // Exporter versions look the password up by the address as given, or (newer ones,
        // with a user) by the address with the user in it: both keys.
        let mut passwords = serde_json::Map::new();
        passwords.insert(uri.clone(), password.into());
        if let Some(u) = user {
            passwords.insert(
                format!("{scheme}://{u}@{}", node.address()),
                password.into(),
            );
        }
        let passwords = serde_json::Value::Object(passwords);
        self.write_config_file(&password_file, &passwords.to_string(), &node.name)?;
        let io = |context: &str| {
            let context = context.to_string();
            move |source| DriverError::Io {
                node: node.name.clone(),
                context,
                source,
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(EXPORTER_LOG_FILE))
            .map_err(io("cannot open exporter.log"))?;
        info!(node = %node.name, address = %listen, "starting the metrics exporter");
        // `sh` starts the exporter in the background and prints its pid: the exporter is then
        // the child of init, not ours, and runs in its own session (setsid below).
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#""$0" "$@" </dev/null >&2 & echo $!"#)
            .arg(&binary)
            .arg(format!("-redis.addr={uri}"))
            .arg(format!("-web.listen-address={listen}"))
            .arg(format!("-redis.password-file={}", password_file.display()))
            // The user's name only; its password is in the file.
            .args(user.map(|u| format!("-redis.user={u}")))
            .arg("-redis-only-metrics")
            .args(self.tls().map(|_| {
                format!(
                    "-tls-ca-cert-file={}",
                    dir.join(super::TLS_CA_FILE).display()
                )
            }))
            .stdin(std::process::Stdio::null())
            .stderr(log.try_clone().map_err(io("cannot open exporter.log"))?);
        // The exporter's output goes to the log (stdout too, moved to stderr): sh's stdout
        // carries only the pid and closes when sh exits, which `output()` waits for.
        // SAFETY: setsid is async-signal-safe and touches no memory of this process.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .map_err(|e| DriverError::Other(format!("node {}: {e}", node.name)))?
            .map_err(io("cannot run /bin/sh to start the exporter"))?;
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| DriverError::ExporterStartFailed {
                node: node.name.clone(),
                reason: "the shell that starts it printed no pid".into(),
            })?;
        self.write_config_file(&dir.join(EXPORTER_PID_FILE), &pid.to_string(), &node.name)?;
        let deadline = Instant::now() + EXPORTER_START_TIMEOUT;
        loop {
            if !is_our_exporter(pid, dir) {
                return Err(DriverError::ExporterStartFailed {
                    node: node.name.clone(),
                    reason: format!("it exited; log: {}", log_tail(&dir.join(EXPORTER_LOG_FILE))),
                });
            }
            if tokio::net::TcpStream::connect(&listen).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DriverError::ExporterStartFailed {
                    node: node.name.clone(),
                    reason: format!("not listening on {listen} after {EXPORTER_START_TIMEOUT:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Brings a node's exporter in line with the configuration: started beside a running node
    /// when `metrics` is set, ended when it is not (a `metrics` block added or removed later).
    pub async fn sync_exporter(
        &self,
        node: &NodeHandle,
        config: &NodeConfig,
    ) -> Result<(), DriverError> {
        if self.config.exporter.is_none() {
            return self.stop_exporter(node).await;
        }
        if self.running_pid(node).is_none() {
            return Ok(());
        }
        // The operator user's password is this driver's, not the configuration's (as the
        // operator fills it in): without it an exporter started here would log in as
        // `default`, refused when `default_user_enabled = false`.
        let mut config = config.clone();
        if config.acl.operator_password.is_none() {
            config.acl.operator_password = crate::driver::Driver::operator_password(self);
        }
        self.ensure_exporter(node, &config, false).await
    }

    /// Ends the node's exporter (by its pid, checked), if it runs.
    pub(super) async fn stop_exporter(&self, node: &NodeHandle) -> Result<(), DriverError> {
        let Some(dir) = &node.data_dir else {
            return Ok(());
        };
        let Some(pid) = exporter_pid(dir) else {
            return Ok(());
        };
        info!(node = %node.name, pid, "stopping the metrics exporter");
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + EXPORTER_STOP_TIMEOUT;
        while is_our_exporter(pid, dir) {
            if Instant::now() > deadline {
                signal(pid, libc::SIGKILL);
                tokio::time::sleep(Duration::from_millis(100)).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if is_our_exporter(pid, dir) {
            return Err(DriverError::Other(format!(
                "node {}: exporter pid {pid} did not exit after SIGTERM and SIGKILL",
                node.name
            )));
        }
        let _ = std::fs::remove_file(dir.join(EXPORTER_PID_FILE));
        Ok(())
    }
}

/// SIGKILLs the exporter of node directory `dir` if it runs (emergency cleanup).
pub(super) fn kill_exporter_blocking(dir: &Path) -> bool {
    exporter_pid(dir).is_some_and(|pid| signal(pid, libc::SIGKILL))
}
