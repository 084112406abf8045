//! The driver boundary: what the cluster logic needs from a place that runs redis-server
//! nodes. The `local` driver (this crate) runs processes on loopback addresses; the `aws`
//! driver runs EC2 instances. Handles are serde-serialisable: the provider stores them in
//! Terraform state so that a later provider process finds what exists.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::identity::{ClusterRecord, NodeRecord};
use crate::secret::Password;
use redisha_planner::Role;

/// A host to provision, with the nodes it will run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlan {
    /// The planner's host name (unique in the request).
    pub name: String,
    pub zone: String,
    /// 0-based index of the zone in the request.
    pub zone_index: u32,
    /// 0-based index of the host within its zone in the request.
    pub host_index: u32,
    /// The nodes this host runs (at provisioning time).
    pub nodes: Vec<NodePlan>,
}

/// A node to start on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// The planner's stable node name.
    pub name: String,
    /// 0-based index of the node on its host; a driver derives the port from it.
    pub index_on_host: u16,
    /// The node's shard and planned role, recorded on the node (see `NodeRecord`) before its
    /// process starts, so that a provider killed right after the start still finds it.
    #[serde(default)]
    pub shard: u32,
    #[serde(default = "default_role")]
    pub role: Role,
}

fn default_role() -> Role {
    Role::Replica
}

/// What exists for a host. Fields a driver does not use stay empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostHandle {
    pub name: String,
    pub zone: String,
    /// The address nodes on this host bind to and announce (an IP or DNS name).
    pub address: String,
    /// The cloud instance id, for drivers with instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Anything else the driver needs to find the host again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl HostHandle {
    /// The host a node's record names, at the address its node binds (what recovery knows of
    /// a host when only the driver's records are left).
    pub fn of_record(record: &crate::identity::NodeRecord, address: &str) -> HostHandle {
        HostHandle {
            name: record.host.clone(),
            zone: record.zone.clone(),
            address: address.to_string(),
            instance_id: None,
            extra: Default::default(),
        }
    }
}

/// What exists for a node: enough for the cluster code to connect to it and for the driver
/// to stop it again from a new process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHandle {
    pub name: String,
    /// The host's planner name.
    pub host: String,
    /// The address the cluster code connects to and the node announces.
    pub ip: String,
    pub port: u16,
    pub index_on_host: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
}

impl NodeHandle {
    /// `host:port`, as redis cluster announces it.
    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// Whether a node's process is there, as far as the driver can tell without talking redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProcessState {
    Running {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    Stopped,
    /// The driver cannot see processes (e.g. a remote host); ask redis.
    Unknown,
}

/// A process of sentinel mode ([`crate::sentinel`]); Redis Cluster nodes are started with
/// [`Driver::start_node`] instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProcessKind {
    /// A redis-server without cluster mode: the primary or one of its replicas. A replica
    /// names its primary (`replicaof` in its config, so a restart comes back as a replica).
    Standalone {
        replica_of: Option<(String, u16)>,
        min_replicas_to_write: u32,
        min_replicas_max_lag: u32,
    },
    /// A Redis Sentinel watching `master_name`, first seen at `primary`.
    Sentinel {
        master_name: String,
        primary: (String, u16),
        quorum: u32,
        down_after_ms: u64,
        failover_timeout_ms: u64,
        /// Sentinel's run id (40 hex digits), fixed so that a sentinel whose config file is
        /// rewritten keeps its identity: a new id would count as one more sentinel, and the
        /// majority a failover needs would grow.
        myid: String,
        /// The sentinel's own password: clients and the other sentinels log in with it (the
        /// `default` user's password, and `sentinel-pass` towards its peers). Never serialized.
        #[serde(skip)]
        password: Option<Password>,
    },
}

/// A host whose machine was made from another image than the driver makes hosts from now (aws:
/// another AMI or engine package). Such a machine is changed by replacing it
/// ([`crate::host_roll`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutdatedHost {
    pub host: String,
    /// What its machine runs now, in the driver's words (aws: `ami-1 with redis-server`).
    pub running: String,
    /// What a replacement runs.
    pub target: String,
}

/// Settings every node gets: the password and extra redis.conf settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeConfig {
    pub password: Option<Password>,
    /// Extra redis.conf settings (`redis_config` in Terraform).
    pub redis_config: BTreeMap<String, String>,
    /// ACL users, the operator user and whether `default` is switched off.
    pub acl: crate::acl::AclConfig,
}

/// redis.conf settings the cluster code and drivers own; `redis_config` may not set them.
pub const RESERVED_SETTINGS: &[&str] = &[
    "port",
    "bind",
    "dir",
    "daemonize",
    "pidfile",
    "logfile",
    "cluster-enabled",
    "cluster-config-file",
    "cluster-announce-ip",
    "bind-source-addr",
    "cluster-port",
    "requirepass",
    "masterauth",
    "masteruser",
    "include",
    "proc-title-template",
];

impl NodeConfig {
    /// The configuration a node is started (or its config file written) with. While the
    /// operator user's password rotates (`operator_password_retiring` set) and not every node
    /// accepts the new one yet (`new_accepted` false, see
    /// [`Driver::operator_new_password_accepted`]), the old one stays the one a node logs in
    /// with (`masterauth`, the exporter's password): a node started then must still reach a
    /// master that knows only the old one, and be scraped. The `user` lines carry both
    /// passwords either way.
    pub fn for_next_start(&self, new_accepted: bool) -> NodeConfig {
        let acl = &self.acl;
        match (&acl.operator_password, &acl.operator_password_retiring) {
            (Some(new), Some(old)) if !new_accepted => {
                let mut out = self.clone();
                out.acl.operator_password = Some(old.clone());
                out.acl.operator_password_retiring = Some(new.clone());
                out
            }
            _ => self.clone(),
        }
    }

    /// Rejects settings that would break the cluster or smuggle lines into redis.conf.
    pub fn validate(&self) -> Result<(), DriverError> {
        for (key, value) in &self.redis_config {
            let lower = key.to_ascii_lowercase();
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(DriverError::InvalidSetting {
                    key: key.clone(),
                    reason: "a setting name has only letters, digits, '-' and '_'".into(),
                });
            }
            if RESERVED_SETTINGS.contains(&lower.as_str()) || lower.starts_with("tls-") {
                return Err(DriverError::InvalidSetting {
                    key: key.clone(),
                    reason: "redisha sets this itself; remove it from redis_config (use the password argument for requirepass/masterauth, the tls block for tls-*)".into(),
                });
            }
            if value.contains(['\n', '\r', '\0']) {
                return Err(DriverError::InvalidSetting {
                    key: key.clone(),
                    reason: "the value may not contain a line break".into(),
                });
            }
        }
        if let Some(p) = &self.password {
            if p.expose().is_empty() || p.expose().contains(['\n', '\r', '\0', '"', '\\']) {
                return Err(DriverError::InvalidPassword);
            }
        }
        Ok(())
    }

    /// The cluster-node-timeout the nodes run with (redisha's default is 5000 ms).
    pub fn node_timeout_ms(&self) -> String {
        self.redis_config
            .get("cluster-node-timeout")
            .cloned()
            .unwrap_or_else(|| "5000".into())
    }

    /// The redis.conf lines of the shared settings (password and `redis_config`), for drivers
    /// that write config files. Contains the password in clear: write it mode 0600.
    pub fn render_shared_lines(&self) -> String {
        let mut out = String::new();
        // Defaults a user may override through redis_config.
        if !self.redis_config.contains_key("cluster-node-timeout") {
            out.push_str("cluster-node-timeout 5000\n");
        }
        // Redis waits 5 s for more replicas before a diskless full sync; redisha attaches
        // replicas one by one, so that wait would only delay every sync.
        if !self.redis_config.contains_key("repl-diskless-sync-delay") {
            out.push_str("repl-diskless-sync-delay 0\n");
        }
        for (key, value) in &self.redis_config {
            out.push_str(&format!("{key} {}\n", quote_conf(value)));
        }
        out.push_str(&self.acl.render_lines(self.password.as_ref()));
        out
    }
}

/// Quotes a redis.conf value when it needs it (spaces or quotes); values with a space-separated
/// list meaning (e.g. `save "900 1"`) are passed verbatim when they are already quoted.
pub(crate) fn quote_conf(value: &str) -> String {
    if value.is_empty() {
        return "\"\"".into();
    }
    if value.starts_with('"') && value.ends_with('"') && value.len() >= 2 {
        return value.to_string();
    }
    if value.contains([' ', '\t', '"', '\'', '\\']) {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    } else {
        value.to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("redis_server: {path:?} was not found or is not executable; install Debian's redis-server (apt-get install redis-server) or set redis_server to its full path")]
    RedisServerNotFound { path: String },
    #[error("base_port: {address} is already in use{}; choose another base_port or loopback_octet, or stop what listens there", .owner.as_deref().map(|o| format!(" by {o}")).unwrap_or_default())]
    PortInUse {
        address: String,
        /// Which node of which redisha cluster listens there, when the driver can tell.
        owner: Option<String>,
    },
    #[error("data_dir: cannot write {path:?} ({reason}); choose a writable data_dir")]
    DataDirUnwritable { path: PathBuf, reason: String },
    #[error("redis_config.{key}: {reason}")]
    InvalidSetting { key: String, reason: String },
    #[error("password: must be non-empty and may not contain line breaks, quotes or backslashes")]
    InvalidPassword,
    #[error("topology: {0}")]
    Topology(String),
    #[error("metrics: the exporter {path:?} was not found or is not executable; install Debian's prometheus-redis-exporter (apt-get install prometheus-redis-exporter) or set metrics.exporter to its full path")]
    ExporterNotFound { path: String },
    #[error("node {node}: its metrics exporter did not start: {reason}")]
    ExporterStartFailed { node: String, reason: String },
    #[error("node {node}: redis-server did not start: {reason}")]
    StartFailed { node: String, reason: String },
    #[error("node {node}: {context}: {source}")]
    Io {
        node: String,
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tls: {binary} was built without TLS, so its nodes cannot speak TLS; set local.redis_server to a server built with TLS (Debian's /usr/bin/redis-server is) or remove the tls block")]
    TlsUnsupported { binary: String },
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{what} belongs to another cluster (id {owner}); redisha never touches it")]
    NotOurs { what: String, owner: String },
    #[error("{0}")]
    Other(String),
}

/// Provisions hosts and runs redis-server nodes on them. The cluster logic (forming,
/// observing, repairing, migrating) sits on top and talks to nodes through `NodeHandle::ip`
/// and `port` only.
///
/// A driver whose hosts start their own redis (e.g. cloud-init on EC2) implements
/// `start_node` as "wait until the node answers" and returns its handle.
#[async_trait]
pub trait Driver: Send + Sync {
    /// A short name stored in state (`local`, `aws`).
    fn kind(&self) -> &'static str;

    /// Checks up front what `provision_host`/`start_node` need (binaries, ports, directories),
    /// for every node in `hosts` that is not among `existing` (nodes that already run).
    async fn preflight(
        &self,
        hosts: &[HostPlan],
        existing: &[NodeHandle],
        config: &NodeConfig,
    ) -> Result<(), DriverError>;

    /// Makes a host exist. Idempotent: provisioning an existing host returns its handle.
    async fn provision_host(
        &self,
        host: &HostPlan,
        config: &NodeConfig,
    ) -> Result<HostHandle, DriverError>;

    /// Starts (or restarts) a node and returns once it accepts connections. Idempotent: a
    /// running node is left running. A node whose data survived keeps its cluster identity.
    async fn start_node(
        &self,
        host: &HostHandle,
        node: &NodePlan,
        config: &NodeConfig,
    ) -> Result<NodeHandle, DriverError>;

    /// Stops a node's process (only ours; never by name). Stopping a stopped node is fine.
    async fn stop_node(&self, node: &NodeHandle) -> Result<(), DriverError>;

    /// Rewrites the config file of a running sentinel-mode process after its settings were
    /// changed live (a password rotation), so a restart keeps them; a sentinel rewrites its
    /// own file, which only gets its mode made private again. Drivers without files do nothing.
    async fn write_process_config(
        &self,
        _node: &NodeHandle,
        _kind: &ProcessKind,
        _config: &NodeConfig,
    ) -> Result<(), DriverError> {
        Ok(())
    }

    /// Starts a process of sentinel mode on a provisioned host; like `start_node`, a process
    /// already running is returned as it is. `stop_node`, `inspect_node` and `wipe_node` work
    /// on what it returns.
    async fn start_process(
        &self,
        _host: &HostHandle,
        node: &NodePlan,
        _kind: &ProcessKind,
        _config: &NodeConfig,
    ) -> Result<NodeHandle, DriverError> {
        Err(DriverError::Other(format!(
            "the {} driver does not run sentinel mode yet (node {})",
            self.kind(),
            node.name
        )))
    }

    /// The operator user's password the driver keeps for the cluster (see
    /// [`crate::acl::OPERATOR_USER`]); `None`: redisha works as `default`. While it rotates,
    /// the new one.
    fn operator_password(&self) -> Option<Password> {
        None
    }

    /// While the operator user's password rotates: the previous one, which the driver still
    /// keeps because nodes may accept only it.
    fn operator_password_retiring(&self) -> Option<Password> {
        None
    }

    /// Told during a rotation of the operator user's password once every node accepts the new
    /// one besides the old: from now on what a node reads at its next start may log in with
    /// the new one (the aws driver's `auth.conf` in SSM keeps the old `masterauth` until then).
    /// Called again by an apply that resumes a rotation.
    fn operator_new_password_accepted(&self) {}

    /// Ends a rotation of the operator user's password in the driver's keeping: only the new
    /// one is kept from now on. Called once every node accepts it and replication uses it.
    async fn keep_new_operator_password(&self) -> Result<(), DriverError> {
        Ok(())
    }

    /// What a client needs to speak TLS to this driver's nodes; `None` while they speak plain
    /// text. The operator's connections use it.
    fn client_tls(&self) -> Option<crate::tls::ClientTls> {
        None
    }

    /// What the driver recorded about the TLS certificate it issued `node` (expiry included).
    fn cert_info(&self, _node: &NodeHandle) -> Option<crate::tls::NodeCertInfo> {
        None
    }

    /// Whether `node`'s certificate must be replaced by a restart: an issued one close to
    /// expiry (or no longer naming the node or its authority), a supplied one changed.
    fn cert_due(&self, _node: &NodeHandle) -> bool {
        false
    }

    /// Whether the node's process exists.
    async fn inspect_node(&self, node: &NodeHandle) -> Result<ProcessState, DriverError>;

    /// Persists new shared settings (password, `redis_config`) for the node's next start; the
    /// cluster code applies them to the running node itself.
    async fn write_node_config(
        &self,
        node: &NodeHandle,
        config: &NodeConfig,
    ) -> Result<(), DriverError>;

    /// Whether `write_node_config` rewrites a node's whole config file (with its own mode). If
    /// not, the cluster code persists a rotated password with `CONFIG REWRITE` on the node.
    fn writes_config_files(&self) -> bool {
        false
    }

    /// Removes a stopped node's data (its directory, nodes.conf, dumps).
    async fn wipe_node(&self, node: &NodeHandle) -> Result<(), DriverError>;

    /// Removes a host once it runs no node.
    async fn remove_host(&self, host: &HostHandle) -> Result<(), DriverError>;

    /// The engine `start_node` runs (what the server binary says of itself), when the driver
    /// chooses it; `None` when hosts install their own (the cluster code then rolls nothing).
    async fn engine(&self) -> Result<Option<crate::engine::Engine>, DriverError> {
        Ok(None)
    }

    /// The hosts among `hosts` whose machine runs another image than the driver makes hosts
    /// from now: what a host roll replaces, one at a time. Drivers whose hosts cannot be
    /// re-imaged (local addresses) report none; hosts without a machine now are left out
    /// (repair provisions them, from the current image).
    async fn outdated_hosts(
        &self,
        _hosts: &[HostHandle],
    ) -> Result<Vec<OutdatedHost>, DriverError> {
        Ok(Vec::new())
    }

    /// The hosts among `hosts` whose machine the driver proves lost: gone (aws: its instance
    /// terminated or missing) or stopped. Nothing of theirs answers for sure, and provisioning
    /// the host again (a replacement machine, or the stopped one started) is what brings its
    /// processes back. Drivers whose hosts are addresses report none.
    async fn lost_hosts(&self, _hosts: &[HostHandle]) -> Result<Vec<String>, DriverError> {
        Ok(Vec::new())
    }

    /// Moves a stopped replica's data files (snapshot, append-only files) aside, kept next to
    /// where they were, so that it starts empty and resynchronises from its master: what an
    /// engine roll does for a replica whose snapshot the new engine cannot read. The node keeps
    /// its cluster identity (nodes.conf).
    async fn set_aside_data(&self, node: &NodeHandle) -> Result<(), DriverError> {
        Err(DriverError::Other(format!(
            "node {}: this driver cannot set a node's data aside",
            node.name
        )))
    }

    /// Puts a snapshot (RDB file) where `node` loads it at its first start: a restore with
    /// the backup's shards seeds each master before anything starts. A node already running
    /// is left alone. Drivers that cannot (their hosts start their own nodes) say so in
    /// `seeds_snapshots`; the restore then loads the keys into the running cluster instead.
    fn seeds_snapshots(&self) -> bool {
        false
    }

    async fn seed_snapshot(
        &self,
        node: &NodePlan,
        _rdb: &std::path::Path,
    ) -> Result<(), DriverError> {
        Err(DriverError::Other(format!(
            "node {}: this driver cannot place a snapshot before a node starts",
            node.name
        )))
    }

    /// Every node carrying `cluster_id` that this driver can find without Terraform's state,
    /// with what its record says. `None`: this driver cannot rediscover nodes (the provider then
    /// needs the private state).
    async fn discover(
        &self,
        _cluster_id: &str,
    ) -> Result<Option<Vec<(NodeHandle, NodeRecord)>>, DriverError> {
        Ok(None)
    }

    /// Rewrites a node's record (after its planned role changed, or to claim a node of an
    /// older state that had no cluster id). Only ever called for nodes of this cluster.
    async fn record_node(
        &self,
        _node: &NodeHandle,
        _record: &NodeRecord,
    ) -> Result<(), DriverError> {
        Ok(())
    }

    /// Records the cluster itself (its id, name, and whether its create finished), before any
    /// of its nodes start.
    async fn record_cluster(&self, _record: &ClusterRecord) -> Result<(), DriverError> {
        Ok(())
    }

    /// The clusters this driver's place (local: `data_dir`) already holds.
    async fn find_clusters(&self) -> Result<Vec<ClusterRecord>, DriverError> {
        Ok(Vec::new())
    }

    /// Removes the cluster's record once every node is gone (destroy).
    async fn forget_cluster(&self, _cluster_id: &str) -> Result<(), DriverError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_multiline_settings_are_rejected() {
        let mut c = NodeConfig::default();
        c.redis_config.insert("port".into(), "1".into());
        assert!(matches!(
            c.validate(),
            Err(DriverError::InvalidSetting { .. })
        ));
        let mut c = NodeConfig::default();
        c.redis_config
            .insert("maxmemory".into(), "1mb\nrequirepass x".into());
        assert!(c.validate().is_err());
        let mut c = NodeConfig::default();
        c.redis_config.insert("maxmemory".into(), "100mb".into());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn handles_round_trip_through_json() {
        let h = NodeHandle {
            name: "n1".into(),
            host: "h1".into(),
            ip: "127.0.1.1".into(),
            port: 7000,
            index_on_host: 0,
            pid: Some(42),
            data_dir: Some("/tmp/x".into()),
            config_file: None,
        };
        let text = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<NodeHandle>(&text).unwrap(), h);
    }
}
