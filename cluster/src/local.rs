//! The `local` driver: every host is a loopback address 127.O.Z.H and every node a daemonized
//! redis-server process with its own directory and mode-0600 config file. Processes outlive
//! the provider process; they are found again through the pid in the handle and ended by pid
//! only after checking that the pid still is our redis-server.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::driver::{
    quote_conf, Driver, DriverError, HostHandle, HostPlan, NodeConfig, NodeHandle, NodePlan,
    ProcessKind, ProcessState,
};
use crate::identity::{is_cluster_id, ClusterRecord, NodeRecord};

mod exporter;
mod operator_secret;
mod tls_files;
pub use exporter::{
    exporter_pid, exporter_port, is_our_exporter, LocalExporter, DEFAULT_EXPORTER_PORT_OFFSET,
    EXPORTER_PASSWORD_FILE, EXPORTER_PID_FILE,
};
pub use tls_files::{node_cert_info, NodeTlsPaths, TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};

/// The node record in every node directory (see `identity`).
pub const NODE_RECORD_FILE: &str = "redisha-node.json";
/// The cluster record in `<data_dir>/<cluster id>/`.
pub const CLUSTER_RECORD_FILE: &str = "redisha-cluster.json";

/// The `local { }` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalConfig {
    /// Root directory of every node's directory.
    pub data_dir: PathBuf,
    /// Port of the first node on a host; the n-th node gets `base_port + n`.
    #[serde(default = "default_base_port")]
    pub base_port: u16,
    /// The second octet of host addresses 127.O.Z.H.
    #[serde(default)]
    pub loopback_octet: u8,
    /// The redis-server binary: a path, or a name looked up on PATH.
    #[serde(default = "default_redis_server")]
    pub redis_server: String,
    /// A Prometheus exporter beside every node (`metrics { }`); none when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<LocalExporter>,
}

fn default_base_port() -> u16 {
    7000
}

fn default_redis_server() -> String {
    "redis-server".into()
}

impl LocalConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        LocalConfig {
            data_dir: data_dir.into(),
            base_port: default_base_port(),
            loopback_octet: 0,
            redis_server: default_redis_server(),
            exporter: None,
        }
    }
}

/// Runs nodes as local redis-server processes.
///
/// Every node binds its outgoing connections (cluster bus, replication) to its host's address
/// (`bind-source-addr`, on engines that have it: not Redis 6.2), as a real host's traffic leaves from its own address; without it the
/// kernel picks 127.0.0.1 for every loopback connection and no packet filter could tell the
/// hosts apart (the drill's partitions need that).
///
/// Layout: `<data_dir>/<cluster id>/<node name>/` holds a node's config, data, log, pidfile
/// and its `NodeRecord`, so two clusters sharing a `data_dir` (even with the same node names)
/// never share a directory or a process. Nodes of a cluster made before cluster ids existed
/// live in `<data_dir>/<node name>/`; they are claimed by writing the record there.
#[derive(Debug, Clone)]
pub struct LocalDriver {
    config: LocalConfig,
    /// The cluster this driver acts for: (id, name). `None` only for checks that start
    /// nothing (plan before an id exists) and for clusters of older states.
    cluster: Option<(String, String)>,
    /// What `redis_server` says of itself (`--version`), asked once: config rendering needs it
    /// for every node.
    engine: Arc<OnceLock<Result<crate::engine::Engine, String>>>,
    /// TLS on every node (`tls { }`): the mode, and once loaded (`load_authority`) the
    /// cluster's authority that issues their certificates.
    tls_mode: Option<crate::tls::TlsMode>,
    /// The user's certificate, when the nodes present it instead of certificates from the
    /// cluster's own authority. Shared: it is three PEM texts, and drivers are cloned.
    supplied_cert: Option<Arc<crate::tls_supplied::SuppliedCert>>,
    tls: Option<Arc<crate::tls::TlsConfig>>,
    /// Whether `redis_server` was built with TLS, probed once when TLS is on.
    server_tls: Arc<OnceLock<Result<bool, String>>>,
    /// The operator user's passwords, once loaded (`load_operator_password`). Shared by
    /// clones: the end of a rotation changes them for every copy.
    operator: Arc<std::sync::Mutex<OperatorKeys>>,
}

/// The operator user's passwords as the cluster directory keeps them.
#[derive(Debug, Default)]
struct OperatorKeys {
    current: Option<crate::secret::Password>,
    /// While it rotates (`prepare_operator_rotation`): the new password, and the generation
    /// the apply asks for.
    rotation: Option<(crate::secret::Password, Option<u64>)>,
    /// During a rotation: every node accepts the new password
    /// ([`Driver::operator_new_password_accepted`]). Until then a node's config file keeps the
    /// old one as `masterauth` and its exporter's login ([`NodeConfig::for_next_start`]).
    new_accepted: bool,
}

const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

impl LocalDriver {
    pub fn new(config: LocalConfig) -> Self {
        LocalDriver {
            config,
            cluster: None,
            engine: Arc::default(),
            tls_mode: None,
            supplied_cert: None,
            tls: None,
            server_tls: Arc::default(),
            operator: Arc::default(),
        }
    }

    /// `config` as a node starting now must get it: mid-rotation, the old operator password
    /// until every node accepts the new one.
    fn for_next_start(&self, config: &NodeConfig) -> NodeConfig {
        config.for_next_start(self.operator_keys().new_accepted)
    }

    fn operator_keys(&self) -> std::sync::MutexGuard<'_, OperatorKeys> {
        // Every change to the keys is one assignment: a panic elsewhere leaves them whole.
        self.operator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the operator user's password from the cluster directory, or, with `create`, makes
    /// it there when there is none yet (a create, or the first apply of a cluster made before
    /// the operator user existed). `None` without a cluster id or a password to load.
    pub fn load_operator_password(
        &mut self,
        create: bool,
    ) -> Result<Option<crate::secret::Password>, DriverError> {
        let Some((id, _)) = &self.cluster else {
            return Ok(None);
        };
        let dir = self.config.data_dir.join(id);
        let password = match operator_secret::read(&dir) {
            Some(p) => p,
            None if create => {
                self.check_data_dir()?;
                private_dir(&dir)?;
                operator_secret::write_new(&dir, id)?
            }
            None => return Ok(None),
        };
        self.operator_keys().current = Some(password.clone());
        Ok(Some(password))
    }

    /// Records, for a new cluster, that its operator password is of `generation` (the
    /// configured `operator_password_generation`), unless a generation is recorded already.
    pub fn record_operator_generation(&self, generation: u64) -> Result<(), DriverError> {
        let Some((id, _)) = &self.cluster else {
            return Ok(());
        };
        let dir = self.config.data_dir.join(id);
        if dir.join(operator_secret::GENERATION_FILE).exists() {
            return Ok(());
        }
        operator_secret::write_generation(&dir, id, generation)
    }

    /// Finds a rotation of the operator user's password under way, or starts one when
    /// `generation` (the configured `operator_password_generation`; `None`: not set) is not
    /// the kept password's. A rotation under way is finished whatever `generation` says: the
    /// nodes may already use its new password. Call after `load_operator_password`.
    pub fn prepare_operator_rotation(
        &mut self,
        generation: Option<u64>,
    ) -> Result<(), DriverError> {
        let current = self.operator_keys().current.clone();
        let (Some((id, _)), Some(current)) = (&self.cluster, current) else {
            return Ok(());
        };
        let dir = self.config.data_dir.join(id);
        let next = match operator_secret::read_next(&dir) {
            // Cut short after the new password replaced the current one: only its last
            // steps are left.
            Some(next) if next == current => {
                operator_secret::keep_next(&dir, id, &next, generation)?;
                return Ok(());
            }
            Some(next) => next,
            None => match generation {
                Some(g) if g != operator_secret::generation(&dir) => {
                    operator_secret::start_rotation(&dir, id)?
                }
                _ => return Ok(()),
            },
        };
        self.operator_keys().rotation = Some((next, generation));
        Ok(())
    }

    /// The driver with the nodes presenting the user's certificate rather than certificates
    /// from the cluster's own authority (`None`: the authority issues them).
    pub fn with_supplied_cert(mut self, cert: Option<crate::tls_supplied::SuppliedCert>) -> Self {
        self.supplied_cert = cert.map(Arc::new);
        self.tls = None;
        self
    }

    /// The driver with TLS in `mode` on every node it starts or writes the config of (`None`:
    /// plain text). Nodes start only once the authority is loaded (`load_authority`).
    pub fn with_tls(mut self, mode: Option<crate::tls::TlsMode>) -> Self {
        self.tls_mode = mode;
        self.tls = None;
        self
    }

    pub fn tls(&self) -> Option<&crate::tls::TlsConfig> {
        self.tls.as_deref()
    }

    /// Loads the cluster's certificate authority from the cluster directory, or, with
    /// `create`, makes it there when there is none yet. Without TLS, or without one to load,
    /// `None`.
    pub fn load_authority(
        &mut self,
        create: bool,
    ) -> Result<Option<crate::tls::CertAuthority>, DriverError> {
        let (Some(mode), Some((id, _))) = (self.tls_mode, &self.cluster) else {
            return Ok(None);
        };
        if let Some(cert) = &self.supplied_cert {
            // Nothing to make or keep: the user's certificate is in the configuration.
            self.tls = Some(Arc::new(crate::tls::TlsConfig {
                mode,
                source: crate::tls::CertSource::Supplied(cert.as_ref().clone()),
            }));
            return Ok(None);
        }
        let dir = self.config.data_dir.join(id);
        let authority = match tls_files::read_authority(&dir, id)? {
            Some(a) => a,
            None if create => {
                self.check_data_dir()?;
                private_dir(&dir)?;
                tls_files::write_authority(&dir, id)?
            }
            None => return Ok(None),
        };
        self.tls = Some(Arc::new(crate::tls::TlsConfig {
            mode,
            source: crate::tls::CertSource::Generated(authority.clone()),
        }));
        Ok(Some(authority))
    }

    /// The loaded TLS settings; an error when TLS is on but no authority was loaded (nodes
    /// would start with certificates nobody can verify).
    fn tls_for_start(&self) -> Result<Option<&crate::tls::TlsConfig>, DriverError> {
        match (&self.tls_mode, &self.tls) {
            (None, _) => Ok(None),
            (Some(_), Some(t)) => Ok(Some(t.as_ref())),
            (Some(_), None) => Err(DriverError::Other(
                "tls: the cluster's certificate authority was not loaded before starting a node"
                    .into(),
            )),
        }
    }

    /// Refuses TLS on a server built without it (the wheels' engines), naming the binary.
    fn check_server_tls(&self) -> Result<(), DriverError> {
        if self.tls_mode.is_none() {
            return Ok(());
        }
        let binary = self.resolve_redis_server()?;
        let has = self
            .server_tls
            .get_or_init(|| crate::tls::server_has_tls(&binary))
            .clone()
            .map_err(DriverError::Other)?;
        if has {
            Ok(())
        } else {
            Err(DriverError::TlsUnsupported {
                binary: binary.display().to_string(),
            })
        }
    }

    /// The ports a node at `port` listens on besides it and its bus port: the plain-text port
    /// of `preferred` TLS.
    fn extra_ports(&self, port: u16) -> Vec<u16> {
        match self.tls_mode {
            Some(crate::tls::TlsMode::Preferred) => port
                .checked_add(crate::tls::PLAINTEXT_PORT_OFFSET)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The driver of cluster `id` (named `name`): its nodes live under `<data_dir>/<id>/`.
    pub fn with_cluster(mut self, id: &str, name: &str) -> Result<Self, DriverError> {
        if !is_cluster_id(id) {
            return Err(DriverError::Other(format!(
                "cluster id {id:?} is not 16 hex digits; it names a directory"
            )));
        }
        self.cluster = Some((id.to_string(), name.to_string()));
        // Another cluster's keys are never this one's (clones share them).
        self.operator = Arc::default();
        Ok(self)
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster.as_ref().map(|(id, _)| id.as_str())
    }

    pub fn config(&self) -> &LocalConfig {
        &self.config
    }

    /// 127.O.Z.H for the host's zone and host indexes (both 1-based in the address).
    pub fn host_address(&self, host: &HostPlan) -> Result<String, DriverError> {
        let z = host.zone_index + 1;
        let h = host.host_index + 1;
        if z > 255 || h > 254 {
            return Err(DriverError::Topology(format!(
                "host {:?}: the local driver addresses at most 255 zones of 254 hosts (zone {z}, host {h})",
                host.name
            )));
        }
        Ok(format!("127.{}.{z}.{h}", self.config.loopback_octet))
    }

    /// Client port of the node at `index` on its host; the bus port is 10000 above it.
    pub fn node_port(&self, index: u16) -> Result<u16, DriverError> {
        match self.config.base_port.checked_add(index) {
            Some(p) if p >= 1024 && u32::from(p) + 10000 <= 65535 => Ok(p),
            _ => Err(DriverError::Topology(format!(
                "base_port: {} + node index {index} leaves no room for the cluster bus port (+10000 must stay <= 65535); choose a base_port between 1024 and {}",
                self.config.base_port,
                55535u32.saturating_sub(u32::from(index))
            ))),
        }
    }

    fn node_dir(&self, name: &str) -> Result<PathBuf, DriverError> {
        check_dir_name(name)?;
        let legacy = self.config.data_dir.join(name);
        match &self.cluster {
            // A node of an older state keeps its directory once claimed (its record names us).
            Some((id, _))
                if read_json::<NodeRecord>(&legacy.join(NODE_RECORD_FILE))
                    .is_some_and(|r| &r.cluster_id == id) =>
            {
                Ok(legacy)
            }
            Some((id, _)) => Ok(self.config.data_dir.join(id).join(name)),
            None => Ok(legacy),
        }
    }

    /// Refuses to act on a node directory whose record names another cluster.
    fn check_owner(&self, node: &NodeHandle) -> Result<(), DriverError> {
        let (Some((id, _)), Some(dir)) = (&self.cluster, &node.data_dir) else {
            return Ok(());
        };
        match read_json::<NodeRecord>(&dir.join(NODE_RECORD_FILE)) {
            Some(r) if &r.cluster_id != id => Err(DriverError::NotOurs {
                what: format!("node {} ({})", node.name, dir.display()),
                owner: r.cluster_id,
            }),
            _ => Ok(()),
        }
    }

    /// Every directory that may be a node directory: `<data_dir>/*/` and `<data_dir>/*/*/`.
    fn candidate_node_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for top in subdirs(&self.config.data_dir) {
            out.extend(subdirs(&top));
            out.push(top);
        }
        out
    }
}

/// Creates `dir` (and its parents) readable by us only: node directories hold the password.
fn private_dir(dir: &Path) -> Result<(), DriverError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| DriverError::DataDirUnwritable {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })
}

fn check_dir_name(name: &str) -> Result<(), DriverError> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(DriverError::Topology(format!(
            "node name {name:?} cannot be a directory name; use letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

/// A recorded host address, accepted only as a loopback address (all the local driver uses).
fn loopback(address: &str) -> Result<String, DriverError> {
    match address.parse::<std::net::Ipv4Addr>() {
        Ok(ip) if ip.is_loopback() => Ok(address.to_string()),
        _ => Err(DriverError::Other(format!(
            "a node record names host address {address:?}, not a loopback address"
        ))),
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// `wanted` as an executable file: a path, or a name looked up on PATH.
fn find_executable(wanted: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if wanted.contains('/') {
        vec![PathBuf::from(wanted)]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(wanted)).collect())
            .unwrap_or_default()
    };
    candidates.into_iter().find(|p| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// The last three lines of a log file, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

impl LocalDriver {
    /// The redis-server binary, resolved on PATH.
    pub fn resolve_redis_server(&self) -> Result<PathBuf, DriverError> {
        find_executable(&self.config.redis_server).ok_or_else(|| DriverError::RedisServerNotFound {
            path: self.config.redis_server.clone(),
        })
    }

    fn check_data_dir(&self) -> Result<(), DriverError> {
        let root = &self.config.data_dir;
        let unwritable = |e: std::io::Error| DriverError::DataDirUnwritable {
            path: root.clone(),
            reason: e.to_string(),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(unwritable)?;
        let probe = root.join(".redisha-write-check");
        std::fs::write(&probe, b"ok").map_err(unwritable)?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }

    /// The node's redis.conf. `zone` is its planned zone, which engines that know
    /// `availability-zone` announce to clients.
    fn render_config(
        &self,
        handle: &NodeHandle,
        dir: &Path,
        zone: &str,
        shared: &NodeConfig,
    ) -> String {
        let dir_s = quote_conf(&dir.to_string_lossy());
        let zone_line = if !zone.is_empty()
            && self
                .server_engine()
                .is_ok_and(|e| e.has_availability_zone())
        {
            format!("availability-zone {}\n", quote_conf(zone))
        } else {
            String::new()
        };
        let ports = match &self.tls {
            Some(tls) => {
                tls.redis_conf_lines(handle.port, &tls_files::NodeTlsPaths::in_dir(dir).files())
            }
            None => format!("port {}\n", handle.port),
        };
        format!(
            "# Written by redisha. Holds the cluster password: keep it mode 0600.\n\
             {ports}\
             bind {ip}\n\
             daemonize yes\n\
             pidfile {pid}\n\
             logfile {log}\n\
             dir {dir_s}\n\
             cluster-enabled yes\n\
             cluster-config-file nodes.conf\n\
             cluster-announce-ip {ip}\n\
             {source}\
             proc-title-template \"{{title}} {{listen-addr}} {{server-mode}} {{config-file}}\"\n\
             {zone_line}\
             {shared}",
            ip = handle.ip,
            pid = quote_conf(&dir.join("redis.pid").to_string_lossy()),
            log = quote_conf(&dir.join("redis.log").to_string_lossy()),
            shared = shared.render_shared_lines(),
            // Protected mode (no password) only admits connections from 127.0.0.1 itself, and
            // with bind-source-addr the nodes connect from their own 127.O.Z.H: it would refuse
            // their replication. It adds nothing here: every node binds a loopback address.
            source = if self.has_bind_source_addr() {
                format!("bind-source-addr {}\nprotected-mode no\n", handle.ip)
            } else {
                String::new()
            },
        )
    }

    /// A sentinel-mode data node: the cluster node's settings without cluster mode, plus the
    /// write guard (`min-replicas-to-write`) and, for a replica, its primary.
    fn render_standalone(
        &self,
        handle: &NodeHandle,
        dir: &Path,
        shared: &NodeConfig,
        kind: &ProcessKind,
    ) -> String {
        let mut text = self.render_config(handle, dir, "", shared);
        // Drop the cluster-mode lines: everything else is the same node.
        text = text
            .lines()
            .filter(|l| !l.starts_with("cluster-"))
            .map(|l| format!("{l}\n"))
            .collect();
        if let ProcessKind::Standalone {
            replica_of,
            min_replicas_to_write,
            min_replicas_max_lag,
        } = kind
        {
            text.push_str(&format!(
                "replica-announce-ip {ip}\nmin-replicas-to-write {min_replicas_to_write}\nmin-replicas-max-lag {min_replicas_max_lag}\n",
                ip = handle.ip
            ));
            if let Some((ip, port)) = replica_of {
                text.push_str(&format!("replicaof {ip} {port}\n"));
            }
        }
        text
    }

    /// A sentinel: where it listens and what it watches, with the data nodes' password as
    /// `auth-pass` and its own password (the file is 0600).
    fn render_sentinel(
        &self,
        handle: &NodeHandle,
        dir: &Path,
        shared: &NodeConfig,
        kind: &ProcessKind,
    ) -> String {
        let ProcessKind::Sentinel {
            master_name,
            primary,
            quorum,
            down_after_ms,
            failover_timeout_ms,
            myid,
            password,
        } = kind
        else {
            return String::new();
        };
        let mut text = format!(
            "# Written by redisha; Sentinel rewrites it as it learns. Holds the password: mode 0600.\n\
             port {port}\n\
             bind {ip}\n\
             daemonize yes\n\
             pidfile {pid}\n\
             logfile {log}\n\
             dir {dir_s}\n\
             protected-mode no\n\
             proc-title-template \"{{title}} {{listen-addr}} {{server-mode}} {{config-file}}\"\n\
             sentinel myid {myid}\n\
             sentinel announce-ip {ip}\n\
             sentinel monitor {master_name} {pip} {pport} {quorum}\n\
             sentinel down-after-milliseconds {master_name} {down_after_ms}\n\
             sentinel failover-timeout {master_name} {failover_timeout_ms}\n\
             sentinel parallel-syncs {master_name} 1\n",
            port = handle.port,
            ip = handle.ip,
            pid = quote_conf(&dir.join("redis.pid").to_string_lossy()),
            log = quote_conf(&dir.join("redis.log").to_string_lossy()),
            dir_s = quote_conf(&dir.to_string_lossy()),
            pip = primary.0,
            pport = primary.1,
        );
        // As for data nodes: a sentinel's links leave from its host's address, as on a real
        // host, so a drill's partition of that address cuts them too.
        if self.has_bind_source_addr() {
            text.push_str(&format!("bind-source-addr {}\n", handle.ip));
        }
        if let Some(p) = &shared.password {
            text.push_str(&format!(
                "sentinel auth-pass {master_name} {}\n",
                quote_conf(p.expose())
            ));
        }
        // Its own password, as the default user's (ACL, so a rotation can hold two at once;
        // Sentinel's first config rewrite replaces it by its SHA-256), and the one it sends
        // to its peers.
        if let Some(p) = password {
            text.push_str(&format!(
                "user default on {} ~* &* +@all\nsentinel sentinel-pass {}\n",
                quote_conf(&format!(">{}", p.expose())),
                quote_conf(p.expose())
            ));
        }
        text
    }

    /// Whether the configured server knows `bind-source-addr` (Redis 7.0 and later, Valkey):
    /// Redis 6.2 refuses to start with it, and then runs without (its loopback traffic leaves
    /// from 127.0.0.1, so a drill cannot cut one host off; the drill says so).
    fn has_bind_source_addr(&self) -> bool {
        self.server_engine()
            .is_ok_and(|e| e.name == "valkey" || e.rdb_version().is_some_and(|rdb| rdb >= 10))
    }

    /// The configured server's engine, from its `--version` (run once per driver).
    fn server_engine(&self) -> Result<crate::engine::Engine, DriverError> {
        self.engine
            .get_or_init(|| {
                let binary = self.resolve_redis_server().map_err(|e| e.to_string())?;
                let out = std::process::Command::new(&binary)
                    .arg("--version")
                    .output()
                    .map_err(|e| format!("cannot run {} --version: {e}", binary.display()))?;
                let line = String::from_utf8_lossy(&out.stdout);
                crate::engine::Engine::from_version_line(&line).ok_or_else(|| {
                    format!(
                        "{} --version printed {:?}: not a Redis or Valkey server",
                        binary.display(),
                        line.trim()
                    )
                })
            })
            .clone()
            .map_err(DriverError::Other)
    }

    fn write_config_file(&self, path: &Path, text: &str, node: &str) -> Result<(), DriverError> {
        let io = |context: &str| {
            let context = context.to_string();
            move |source| DriverError::Io {
                node: node.to_string(),
                context: format!("{context} {}", path.display()),
                source,
            }
        };
        // The password is never readable by others, not even briefly.
        write_private_file(path, &path.with_extension("conf.tmp"), |f| {
            f.write_all(text.as_bytes())
        })
        .map_err(io("cannot write"))
    }

    fn write_record<T: Serialize>(
        &self,
        path: &Path,
        record: &T,
        node: &str,
    ) -> Result<(), DriverError> {
        let text = serde_json::to_string_pretty(record)
            .map_err(|e| DriverError::Other(format!("cannot encode a record: {e}")))?;
        self.write_config_file(path, &text, node)
    }

    fn handle_for(&self, host: &HostHandle, node: &NodePlan) -> Result<NodeHandle, DriverError> {
        let dir = self.node_dir(&node.name)?;
        Ok(NodeHandle {
            name: node.name.clone(),
            host: host.name.clone(),
            ip: host.address.clone(),
            port: self.node_port(node.index_on_host)?,
            index_on_host: node.index_on_host,
            pid: None,
            config_file: Some(dir.join("redis.conf")),
            data_dir: Some(dir),
        })
    }

    /// The handle of the node that runs at `host`'s address with `node`'s port (an adopted
    /// cluster), with its pid if its redis-server runs with that directory's config file, and
    /// the cluster id its record carries. A node made by redisha is found by its record
    /// (whatever cluster id it carries: adoption keeps it); otherwise the layout of clusters
    /// without ids is assumed.
    pub fn existing_handle(
        &self,
        host: &HostHandle,
        node: &NodePlan,
    ) -> Result<(NodeHandle, Option<String>), DriverError> {
        let port = self.node_port(node.index_on_host)?;
        for dir in self.candidate_node_dirs() {
            let Some(record) = read_json::<NodeRecord>(&dir.join(NODE_RECORD_FILE)) else {
                continue;
            };
            if record.address != host.address || record.index_on_host != node.index_on_host {
                continue;
            }
            let mut handle = NodeHandle {
                name: node.name.clone(),
                host: host.name.clone(),
                ip: host.address.clone(),
                port,
                index_on_host: node.index_on_host,
                pid: None,
                config_file: Some(dir.join("redis.conf")),
                data_dir: Some(dir),
            };
            handle.pid = self.running_pid(&handle);
            if handle.pid.is_some() {
                return Ok((handle, Some(record.cluster_id)));
            }
        }
        let mut handle = self.handle_for(host, node)?;
        handle.pid = self.running_pid(&handle);
        Ok((handle, None))
    }

    /// The pid of the node's redis-server if it runs: from the handle or the pidfile, and only
    /// if /proc says that pid runs with our config file.
    fn running_pid(&self, handle: &NodeHandle) -> Option<u32> {
        let config = handle.config_file.as_ref()?;
        let from_file = handle
            .data_dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("redis.pid")).ok())
            .and_then(|s| s.trim().parse::<u32>().ok());
        [handle.pid, from_file]
            .into_iter()
            .flatten()
            .find(|pid| is_our_redis(*pid, config))
    }

    /// The redisha node recorded in this `data_dir` at `ip:port`, described for an error.
    fn owner_of(&self, ip: &str, port: u16) -> Option<String> {
        self.candidate_node_dirs().into_iter().find_map(|dir| {
            let r = read_json::<NodeRecord>(&dir.join(NODE_RECORD_FILE))?;
            (r.address == ip && self.node_port(r.index_on_host).ok() == Some(port)).then(|| {
                format!(
                    "node {} of cluster {:?} (cluster_id {}) in this data_dir",
                    r.name, r.cluster_name, r.cluster_id
                )
            })
        })
    }

    fn port_free(ip: &str, port: u16) -> Result<(), DriverError> {
        ports_free(ip, [u32::from(port), u32::from(port) + 10000])
    }

    fn extra_ports_free(&self, ip: &str, port: u16) -> Result<(), DriverError> {
        ports_free(ip, self.extra_ports(port).into_iter().map(u32::from))
    }

    fn log_tail(dir: &Path) -> String {
        log_tail(&dir.join("redis.log"))
    }
}

impl LocalDriver {
    /// Emergency cleanup (test guards, a provider that lost its state): SIGKILLs every
    /// redis-server whose pidfile lies in a node directory under `data_dir`, after checking
    /// that the pid runs that directory's config file, and every exporter the same way.
    /// Never kills by name.
    pub fn kill_all_blocking(&self) -> usize {
        let mut killed = 0;
        for dir in self.candidate_node_dirs() {
            if exporter::kill_exporter_blocking(&dir) {
                killed += 1;
            }
            let pid = std::fs::read_to_string(dir.join("redis.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if let Some(pid) = pid {
                if is_our_redis(pid, &dir.join("redis.conf")) && signal(pid, libc::SIGKILL) {
                    killed += 1;
                }
            }
        }
        killed
    }
}

/// Whether every one of `ports` on `ip` can be bound now (nothing listens there).
pub(crate) fn ports_free(
    ip: &str,
    ports: impl IntoIterator<Item = u32>,
) -> Result<(), DriverError> {
    for p in ports {
        let addr = format!("{ip}:{p}");
        if std::net::TcpListener::bind(&addr).is_err() {
            return Err(DriverError::PortInUse {
                address: addr,
                owner: None,
            });
        }
    }
    Ok(())
}

/// Writes `path` through `tmp`: a new file with mode 0600 from the start, filled, synced and
/// renamed over `path`, so that nobody else can read it and `path` is never half written.
pub(crate) fn write_private_file(
    path: &Path,
    tmp: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    fill(&mut file)?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

/// Whether `pid` is a redis-server started with `config` (its process title carries the
/// config path: we set proc-title-template to include it).
pub fn is_our_redis(pid: u32, config: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
    // Valkey's process title names valkey-server.
    (cmdline.contains("redis-server") || cmdline.contains("valkey-server"))
        && cmdline.contains(&*config.to_string_lossy())
}

fn signal(pid: u32, sig: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) has no memory effects; the pid was checked to be our redis-server.
    unsafe { libc::kill(pid, sig) == 0 }
}

impl LocalDriver {
    /// Starts the process of `handle` with config `text` (written 0600; the password is only
    /// in it) and waits until it listens. A process already running is returned as it is.
    async fn launch(
        &self,
        host: &HostHandle,
        node: &NodePlan,
        mut handle: NodeHandle,
        text: String,
        args: &[&str],
    ) -> Result<NodeHandle, DriverError> {
        let dir = handle.data_dir.clone().unwrap_or_default();
        let conf_path = handle.config_file.clone().unwrap_or_default();
        if let Some(pid) = self.running_pid(&handle) {
            handle.pid = Some(pid);
            return Ok(handle);
        }
        let binary = self.resolve_redis_server()?;
        self.check_data_dir()?;
        private_dir(&dir)?;
        // A node killed a moment ago may still be releasing its ports.
        let port_deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = Self::port_free(&handle.ip, handle.port)
            .and_then(|()| self.extra_ports_free(&handle.ip, handle.port))
        {
            if Instant::now() > port_deadline {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The record goes first: a provider killed right after the process started still
        // finds the node (and only its own cluster's driver ever touches it).
        if let Some((id, name)) = &self.cluster {
            let record = NodeRecord {
                format: crate::identity::RECORD_FORMAT,
                cluster_id: id.clone(),
                cluster_name: name.clone(),
                name: node.name.clone(),
                shard: node.shard,
                role: node.role,
                zone: host.zone.clone(),
                host: host.name.clone(),
                address: host.address.clone(),
                index_on_host: node.index_on_host,
            };
            self.write_record(&dir.join(NODE_RECORD_FILE), &record, &node.name)?;
        }
        // A sentinel keeps what it learned (its peers, the current primary) in its own config
        // file: a restart reuses it. Everything else gets its file rewritten.
        if !(args.contains(&"--sentinel") && conf_path.exists()) {
            self.write_config_file(&conf_path, &text, &node.name)?;
        }
        let _ = std::fs::remove_file(dir.join("redis.pid"));
        info!(node = %node.name, address = %handle.address(), "starting redis-server");
        // The config path is the only argument: the password lives in the 0600 file.
        let status = tokio::process::Command::new(&binary)
            .arg(&conf_path)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| DriverError::StartFailed {
                node: node.name.clone(),
                reason: format!("cannot run {}: {e}", binary.display()),
            })?;
        if !status.success() {
            return Err(DriverError::StartFailed {
                node: node.name.clone(),
                reason: format!(
                    "redis-server exited with {status}; log: {}",
                    Self::log_tail(&dir)
                ),
            });
        }
        // daemonize: the parent exits at once; the pidfile appears once the child listens.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(pid) = self.running_pid(&handle) {
                let addr = handle.address();
                if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                    handle.pid = Some(pid);
                    return Ok(handle);
                }
            }
            if Instant::now() > deadline {
                let tail = Self::log_tail(&dir);
                if tail.contains("Address already in use") {
                    return Err(DriverError::PortInUse {
                        address: handle.address(),
                        owner: self.owner_of(&handle.ip, handle.port),
                    });
                }
                return Err(DriverError::StartFailed {
                    node: node.name.clone(),
                    reason: format!("not listening after {START_TIMEOUT:?}; log: {tail}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[async_trait]
impl Driver for LocalDriver {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn preflight(
        &self,
        hosts: &[HostPlan],
        existing: &[NodeHandle],
        config: &NodeConfig,
    ) -> Result<(), DriverError> {
        config.validate()?;
        self.resolve_redis_server()?;
        self.resolve_exporter()?;
        self.check_server_tls()?;
        self.check_data_dir()?;
        for host in hosts {
            let ip = self.host_address(host)?;
            for node in &host.nodes {
                self.node_dir(&node.name)?;
                let port = self.node_port(node.index_on_host)?;
                if existing.iter().any(|e| e.name == node.name) {
                    continue;
                }
                Self::port_free(&ip, port)
                    .and_then(|()| self.extra_ports_free(&ip, port))
                    .and_then(|()| self.exporter_port_free(&ip, port))
                    .map_err(|e| match e {
                        DriverError::PortInUse { address, .. } => DriverError::PortInUse {
                            address,
                            owner: self.owner_of(&ip, port),
                        },
                        other => other,
                    })?;
            }
        }
        Ok(())
    }

    async fn provision_host(
        &self,
        host: &HostPlan,
        config: &NodeConfig,
    ) -> Result<HostHandle, DriverError> {
        config.validate()?;
        self.check_data_dir()?;
        Ok(HostHandle {
            name: host.name.clone(),
            zone: host.zone.clone(),
            address: self.host_address(host)?,
            instance_id: None,
            extra: Default::default(),
        })
    }

    async fn start_node(
        &self,
        host: &HostHandle,
        node: &NodePlan,
        config: &NodeConfig,
    ) -> Result<NodeHandle, DriverError> {
        config.validate()?;
        let handle = self.handle_for(host, node)?;
        let dir = handle.data_dir.clone().unwrap_or_default();
        if let Some(tls) = self.tls_for_start()? {
            self.check_server_tls()?;
            self.check_data_dir()?;
            private_dir(&dir)?;
            // A node already running keeps the certificate it loaded (launch returns it as
            // it is); only a node about to start may get a new one.
            let starting = self.running_pid(&handle).is_none();
            self.write_tls_files(&handle, &dir, tls, starting)?;
        }
        let config = &self.for_next_start(config);
        let text = self.render_config(&handle, &dir, &host.zone, config);
        let handle = self.launch(host, node, handle, text, &[]).await?;
        // Every cluster node has its exporter (also one found running: it may have lost it).
        self.ensure_exporter(&handle, config, false).await?;
        Ok(handle)
    }

    async fn write_process_config(
        &self,
        node: &NodeHandle,
        kind: &ProcessKind,
        config: &NodeConfig,
    ) -> Result<(), DriverError> {
        self.check_owner(node)?;
        config.validate()?;
        let (Some(dir), Some(path)) = (&node.data_dir, &node.config_file) else {
            return Ok(());
        };
        match kind {
            ProcessKind::Standalone { .. } => {
                let text = self.render_standalone(node, dir, config, kind);
                self.write_config_file(path, &text, &node.name)
            }
            // Sentinel wrote the file itself (SENTINEL SET), possibly readable by others.
            ProcessKind::Sentinel { .. } => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                    |e| DriverError::Io {
                        node: node.name.clone(),
                        context: format!("cannot make {} private", path.display()),
                        source: e,
                    },
                )
            }
        }
    }

    async fn start_process(
        &self,
        host: &HostHandle,
        node: &NodePlan,
        kind: &ProcessKind,
        config: &NodeConfig,
    ) -> Result<NodeHandle, DriverError> {
        config.validate()?;
        let handle = self.handle_for(host, node)?;
        let dir = handle.data_dir.clone().unwrap_or_default();
        match kind {
            ProcessKind::Standalone { .. } => {
                let text = self.render_standalone(&handle, &dir, config, kind);
                self.launch(host, node, handle, text, &[]).await
            }
            ProcessKind::Sentinel { .. } => {
                let text = self.render_sentinel(&handle, &dir, config, kind);
                // Same binary, sentinel mode (what Debian's redis-sentinel link runs).
                self.launch(host, node, handle, text, &["--sentinel"]).await
            }
        }
    }
    async fn stop_node(&self, node: &NodeHandle) -> Result<(), DriverError> {
        self.check_owner(node)?;
        // The exporter goes with its node; start_node starts both again.
        self.stop_exporter(node).await?;
        let Some(pid) = self.running_pid(node) else {
            return Ok(());
        };
        let config = node.config_file.clone().unwrap_or_default();
        info!(node = %node.name, pid, "stopping redis-server");
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while is_our_redis(pid, &config) {
            if Instant::now() > deadline {
                signal(pid, libc::SIGKILL);
                tokio::time::sleep(Duration::from_millis(100)).await;
                if is_our_redis(pid, &config) {
                    return Err(DriverError::Other(format!(
                        "node {}: pid {pid} did not exit after SIGTERM and SIGKILL",
                        node.name
                    )));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn operator_password(&self) -> Option<crate::secret::Password> {
        let keys = self.operator_keys();
        match &keys.rotation {
            Some((next, _)) => Some(next.clone()),
            None => keys.current.clone(),
        }
    }

    fn operator_password_retiring(&self) -> Option<crate::secret::Password> {
        let keys = self.operator_keys();
        keys.rotation.as_ref().and(keys.current.clone())
    }

    fn operator_new_password_accepted(&self) {
        let mut keys = self.operator_keys();
        keys.new_accepted = keys.rotation.is_some();
    }

    async fn keep_new_operator_password(&self) -> Result<(), DriverError> {
        let Some((id, _)) = &self.cluster else {
            return Ok(());
        };
        let mut keys = self.operator_keys();
        let Some((next, generation)) = keys.rotation.take() else {
            return Ok(());
        };
        let kept =
            operator_secret::keep_next(&self.config.data_dir.join(id), id, &next, generation);
        match kept {
            Ok(()) => {
                keys.current = Some(next);
                keys.new_accepted = false;
            }
            // Still under way: the next apply finishes it.
            Err(_) => keys.rotation = Some((next, generation)),
        }
        kept
    }

    fn client_tls(&self) -> Option<crate::tls::ClientTls> {
        self.tls.as_ref().map(|t| t.client())
    }

    fn cert_info(&self, node: &NodeHandle) -> Option<crate::tls::NodeCertInfo> {
        self.tls_mode?;
        node_cert_info(node.data_dir.as_ref()?)
    }

    fn cert_due(&self, node: &NodeHandle) -> bool {
        let (Some(tls), Some(info)) = (&self.tls, self.cert_info(node)) else {
            return false;
        };
        !info.still_fits(&node.ip, &tls.source)
    }

    async fn inspect_node(&self, node: &NodeHandle) -> Result<ProcessState, DriverError> {
        Ok(match self.running_pid(node) {
            Some(pid) => ProcessState::Running { pid: Some(pid) },
            None => ProcessState::Stopped,
        })
    }

    async fn set_aside_data(&self, node: &NodeHandle) -> Result<(), DriverError> {
        self.check_owner(node)?;
        if self.running_pid(node).is_some() {
            return Err(DriverError::Other(format!(
                "node {}: still running; its data is set aside only once it is stopped",
                node.name
            )));
        }
        let Some(dir) = &node.data_dir else {
            return Ok(());
        };
        let stamp = crate::identity::unix_now();
        for name in ["dump.rdb", "appendonly.aof", "appendonlydir"] {
            let from = dir.join(name);
            if from.exists() {
                let to = dir.join(format!("{name}.set-aside-{stamp}"));
                std::fs::rename(&from, &to).map_err(|e| DriverError::Io {
                    node: node.name.clone(),
                    context: format!("cannot set {} aside", from.display()),
                    source: e,
                })?;
                tracing::info!(node = %node.name, from = %from.display(), to = %to.display(), "data set aside; the node resynchronises from its master");
            }
        }
        Ok(())
    }

    async fn engine(&self) -> Result<Option<crate::engine::Engine>, DriverError> {
        self.server_engine().map(Some)
    }

    fn seeds_snapshots(&self) -> bool {
        true
    }

    async fn seed_snapshot(&self, node: &NodePlan, rdb: &Path) -> Result<(), DriverError> {
        if self.cluster.is_none() {
            return Err(DriverError::Other(format!(
                "node {}: a snapshot is placed only for a cluster with an id",
                node.name
            )));
        }
        let dir = self.node_dir(&node.name)?;
        let pid = std::fs::read_to_string(dir.join("redis.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if pid.is_some_and(|pid| is_our_redis(pid, &dir.join("redis.conf"))) {
            return Ok(());
        }
        private_dir(&dir)?;
        let io = |context: String| {
            let node = node.name.clone();
            move |source| DriverError::Io {
                node,
                context,
                source,
            }
        };
        // Copied under another name and renamed: a node never starts from half a file.
        let tmp = dir.join("dump.rdb.restoring");
        std::fs::copy(rdb, &tmp).map_err(io(format!("cannot copy {}", rdb.display())))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("cannot restrict {}", tmp.display())))?;
        std::fs::rename(&tmp, dir.join("dump.rdb"))
            .map_err(io(format!("cannot rename {}", tmp.display())))?;
        info!(node = %node.name, from = %rdb.display(), "snapshot placed for the first start");
        Ok(())
    }

    fn writes_config_files(&self) -> bool {
        // Whole files, mode 0600 (CONFIG REWRITE would leave them 0644).
        true
    }

    async fn write_node_config(
        &self,
        node: &NodeHandle,
        config: &NodeConfig,
    ) -> Result<(), DriverError> {
        config.validate()?;
        let (Some(dir), Some(conf)) = (&node.data_dir, &node.config_file) else {
            return Err(DriverError::Other(format!(
                "node {}: the handle has no data_dir/config_file; it was not started by the local driver",
                node.name
            )));
        };
        let zone = read_json::<NodeRecord>(&dir.join(NODE_RECORD_FILE))
            .map(|r| r.zone)
            .unwrap_or_default();
        if let Some(tls) = self.tls_for_start()? {
            self.write_tls_files(node, dir, tls, false)?;
        }
        let config = &self.for_next_start(config);
        self.write_config_file(
            conf,
            &self.render_config(node, dir, &zone, config),
            &node.name,
        )?;
        // A new password reaches a running exporter only through a restart.
        if self.running_pid(node).is_some() {
            self.ensure_exporter(node, config, true).await?;
        }
        Ok(())
    }

    async fn wipe_node(&self, node: &NodeHandle) -> Result<(), DriverError> {
        self.check_owner(node)?;
        // The exporter of a node that died on its own still runs: it goes too.
        self.stop_node(node).await?;
        let Some(dir) = &node.data_dir else {
            return Ok(());
        };
        // Only ever delete a directory under our data_dir.
        if !dir.starts_with(&self.config.data_dir) || dir == &self.config.data_dir {
            return Err(DriverError::Other(format!(
                "node {}: refusing to remove {} (not under data_dir)",
                node.name,
                dir.display()
            )));
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DriverError::Io {
                node: node.name.clone(),
                context: format!("cannot remove {}", dir.display()),
                source,
            }),
        }
    }

    async fn remove_host(&self, _host: &HostHandle) -> Result<(), DriverError> {
        // Loopback hosts need no teardown; drop the data root once it is empty.
        let _ = std::fs::remove_dir(&self.config.data_dir);
        Ok(())
    }

    async fn discover(
        &self,
        cluster_id: &str,
    ) -> Result<Option<Vec<(NodeHandle, NodeRecord)>>, DriverError> {
        let mut found = Vec::new();
        for dir in self.candidate_node_dirs() {
            let Some(record) = read_json::<NodeRecord>(&dir.join(NODE_RECORD_FILE)) else {
                continue;
            };
            if record.cluster_id != cluster_id || check_dir_name(&record.name).is_err() {
                continue;
            }
            let address = match loopback(&record.address) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "skipping a node record");
                    continue;
                }
            };
            let host = HostHandle {
                name: record.host.clone(),
                zone: record.zone.clone(),
                address,
                instance_id: None,
                extra: Default::default(),
            };
            let mut handle = NodeHandle {
                name: record.name.clone(),
                host: record.host.clone(),
                ip: host.address.clone(),
                port: self.node_port(record.index_on_host)?,
                index_on_host: record.index_on_host,
                pid: None,
                config_file: Some(dir.join("redis.conf")),
                data_dir: Some(dir),
            };
            handle.pid = self.running_pid(&handle);
            found.push((handle, record));
        }
        Ok(Some(found))
    }

    async fn record_node(&self, node: &NodeHandle, record: &NodeRecord) -> Result<(), DriverError> {
        let Some(dir) = &node.data_dir else {
            return Ok(());
        };
        if !dir.starts_with(&self.config.data_dir) {
            return Err(DriverError::Other(format!(
                "node {}: refusing to write outside data_dir ({})",
                node.name,
                dir.display()
            )));
        }
        self.write_record(&dir.join(NODE_RECORD_FILE), record, &node.name)
    }

    async fn record_cluster(&self, record: &ClusterRecord) -> Result<(), DriverError> {
        if !is_cluster_id(&record.cluster_id) {
            return Err(DriverError::Other(format!(
                "cluster id {:?} is not 16 hex digits",
                record.cluster_id
            )));
        }
        self.check_data_dir()?;
        let dir = self.config.data_dir.join(&record.cluster_id);
        private_dir(&dir)?;
        self.write_record(&dir.join(CLUSTER_RECORD_FILE), record, &record.name)
    }

    async fn find_clusters(&self) -> Result<Vec<ClusterRecord>, DriverError> {
        Ok(subdirs(&self.config.data_dir)
            .iter()
            .filter_map(|d| read_json::<ClusterRecord>(&d.join(CLUSTER_RECORD_FILE)))
            .filter(|r| is_cluster_id(&r.cluster_id))
            .collect())
    }

    async fn forget_cluster(&self, cluster_id: &str) -> Result<(), DriverError> {
        if !is_cluster_id(cluster_id) {
            return Ok(());
        }
        let dir = self.config.data_dir.join(cluster_id);
        // A node directory made by a provider killed before it wrote anything is empty.
        for sub in subdirs(&dir) {
            let _ = std::fs::remove_dir(sub);
        }
        // Only once no node directory is left in it: the record is what finds them.
        if subdirs(&dir).is_empty() {
            tls_files::remove_authority(&dir);
            operator_secret::remove(&dir);
            let _ = std::fs::remove_file(dir.join(CLUSTER_RECORD_FILE));
            let _ = std::fs::remove_dir(&dir);
        }
        let _ = std::fs::remove_dir(&self.config.data_dir);
        Ok(())
    }
}
