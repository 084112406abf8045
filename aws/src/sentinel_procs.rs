//! Sentinel mode on the aws driver: the primary, its replicas (redis-server without cluster
//! mode) and the Redis Sentinel processes (`redis-server --sentinel`), one instance per host
//! of the plan, started by SSM Run Command with the scripts below.
//!
//! The first boot installs the package and the node machinery (`redisha-password`, the
//! `redisha-node@` unit) but starts nothing: in sentinel mode every process needs the
//! primary's address, known only once the primary's instance runs, so each process is started
//! by a Run Command in the order the operator decides (primary, replicas, sentinels).
//!
//! - A data node is `redisha-node@<port>` with `/etc/redisha/node-<port>.conf`, rewritten at
//!   every start from its [`ProcessKind`] (a replica names its current primary), which
//!   includes the shared settings and `auth.conf` (the password, from SSM) as cluster nodes do.
//! - A sentinel is `redisha-sentinel@<port>` with `/etc/redisha/sentinel-<port>.conf`, written
//!   once: Sentinel rewrites it as it learns (peers, failovers, a rotated password), and a
//!   restart reuses what it learned. Its passwords reach it on the instance only: the data
//!   password from `auth.conf`, its own from the SSM parameter
//!   [`crate::secrets::sentinel_parameter_name`], which `redisha-password` writes to
//!   `/etc/redisha/sentinel-password` (0600). No script, user data or tag carries either.
//!
//! A handle's `config_file` says which of the two a process is, so that stop and remove reach
//! the right unit.

use std::fmt::Write as _;
use std::net::IpAddr;

use redisha_cluster::{DriverError, HostHandle, NodeConfig, NodeHandle, NodePlan, ProcessKind};

use crate::driver::{format_address, AwsDriver};
use crate::error::AwsError;
use crate::node_commands::{
    about, write_shared, NodeAction, HEADER, IP_FROM_METADATA, WAIT_FOR_FIRST_BOOT,
};
use crate::secrets;
use crate::sentinel_records::{config_file, SENTINEL_CONF_PREFIX};

/// The systemd unit template of the sentinels.
const SENTINEL_UNIT: &str = "/etc/systemd/system/redisha-sentinel@.service";

/// Whether `node` is a sentinel (else a data node or a cluster-mode node).
pub fn is_sentinel(node: &NodeHandle) -> bool {
    node.config_file
        .as_deref()
        .is_some_and(|p| p.to_string_lossy().starts_with(SENTINEL_CONF_PREFIX))
}

/// Where a process runs on its instance and where the instance reads its secrets.
#[derive(Debug, Clone)]
pub struct ProcessSetup<'a> {
    pub port: u16,
    /// The node password's SSM parameter ([`secrets::parameter_name`]).
    pub password_parameter: &'a str,
    /// Sentinels: their own password's parameter, when they have one.
    pub sentinel_parameter: Option<&'a str>,
    /// See [`crate::node_commands::NodeSetup::fixed_ip`].
    pub fixed_ip: Option<IpAddr>,
}

/// `text` with only what a master name, an address or a run id has: it goes into a shell
/// here-document and a config line.
fn conf_word(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.:".contains(*c))
        .collect()
}

/// The variables every start needs, and the helper that refreshes the secrets from SSM.
fn prelude(setup: &ProcessSetup<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "PORT={}", setup.port);
    let _ = writeln!(out, "PASSWORD_PARAMETER=\"{}\"", setup.password_parameter);
    match setup.fixed_ip {
        Some(ip) => {
            let _ = writeln!(out, "IP=\"{ip}\"\nBIND=\"$IP\"");
        }
        None => out.push_str(IP_FROM_METADATA),
    }
    out.push_str(
        "mkdir -p /etc/redisha /var/lib/redisha /run/redisha\n\
         printf '%s\\n' \"$PASSWORD_PARAMETER\" > /etc/redisha/password-parameter\n",
    );
    match setup.sentinel_parameter {
        Some(name) => {
            let _ = writeln!(
                out,
                "printf '%s\\n' \"{name}\" > /etc/redisha/sentinel-password-parameter"
            );
        }
        None => out.push_str("rm -f /etc/redisha/sentinel-password-parameter\n"),
    }
    out.push_str("/usr/local/sbin/redisha-password\n");
    out
}

/// Installs `text` as the redis user's 0600 file `path` in one rename.
fn install_private(path: &str) -> String {
    format!("chown redis:redis {path}.new\nchmod 0600 {path}.new\nmv {path}.new {path}\n")
}

/// Starts a data node: its config written from `kind`, then its unit (the first boot's
/// `redisha-node@`, the same as cluster nodes'), enabled so a reboot brings it back.
pub fn start_data(
    cluster: &str,
    node: &str,
    setup: &ProcessSetup<'_>,
    kind: &ProcessKind,
    config: &NodeConfig,
) -> String {
    let mut out = String::from(HEADER);
    out.push_str(&about(cluster, NodeAction::Start, node));
    out.push_str(WAIT_FOR_FIRST_BOOT);
    out.push_str(&write_shared(config));
    out.push_str(&prelude(setup));
    out.push_str(
        "[ -f /etc/systemd/system/redisha-node@.service ] || {\n  \
         echo \"redisha: the first boot did not install redisha-node@.service\" >&2; exit 1; }\n\
         mkdir -p /var/lib/redisha/node-$PORT\n\
         chown redis:redis /etc/redisha /var/lib/redisha/node-$PORT\n\
         chmod 0700 /etc/redisha\n\
         cat > /etc/redisha/node-$PORT.conf.new <<CONF\n\
         port $PORT\n\
         bind $BIND\n\
         protected-mode no\n\
         daemonize no\n\
         dir /var/lib/redisha/node-$PORT\n\
         replica-announce-ip $IP\n",
    );
    if let ProcessKind::Standalone {
        replica_of,
        min_replicas_to_write,
        min_replicas_max_lag,
    } = kind
    {
        // An isolated primary stops taking writes (Sentinel's known failure mode).
        let _ = writeln!(out, "min-replicas-to-write {min_replicas_to_write}");
        let _ = writeln!(out, "min-replicas-max-lag {min_replicas_max_lag}");
        if let Some((ip, port)) = replica_of {
            let _ = writeln!(out, "replicaof {} {port}", conf_word(ip));
        }
    }
    out.push_str("include /etc/redisha/shared.conf\ninclude /etc/redisha/auth.conf\nCONF\n");
    out.push_str(&install_private("/etc/redisha/node-$PORT.conf"));
    out.push_str("systemctl enable --now redisha-node@$PORT\n");
    out
}

/// Starts a sentinel: its unit template, its config when it has none yet (passwords read on
/// the instance, see the module doc), then its unit, enabled.
pub fn start_sentinel(
    cluster: &str,
    node: &str,
    setup: &ProcessSetup<'_>,
    kind: &ProcessKind,
    config: &NodeConfig,
) -> String {
    let mut out = String::from(HEADER);
    out.push_str(&about(cluster, NodeAction::Start, node));
    out.push_str(WAIT_FOR_FIRST_BOOT);
    out.push_str(&prelude(setup));
    let _ = write!(
        out,
        "REDIS_BIN=$(command -v redis-server || command -v redis6-server || command -v redis7-server) || {{\n  \
         echo \"redisha: no redis-server is installed\" >&2; exit 1; }}\n\
         mkdir -p /var/lib/redisha/sentinel-$PORT\n\
         chown redis:redis /etc/redisha /var/lib/redisha/sentinel-$PORT\n\
         chmod 0700 /etc/redisha\n\
         cat > {SENTINEL_UNIT} <<UNIT\n\
         [Unit]\n\
         Description=redisha Redis Sentinel on port %i\n\
         After=network-online.target local-fs.target\n\
         Wants=network-online.target\n\n\
         [Service]\n\
         User=redis\n\
         Group=redis\n\
         ExecStart=$REDIS_BIN {SENTINEL_CONF_PREFIX}%i.conf --sentinel\n\
         # Repaired by the next apply, as data nodes are.\n\
         Restart=no\n\
         # Sentinel rewrites its config (with the passwords) under this umask.\n\
         UMask=0077\n\
         LimitNOFILE=65535\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n\
         UNIT\n"
    );
    if let ProcessKind::Sentinel {
        master_name,
        primary,
        quorum,
        down_after_ms,
        failover_timeout_ms,
        myid,
        password,
    } = kind
    {
        let name = conf_word(master_name);
        let conf = format!("{SENTINEL_CONF_PREFIX}$PORT.conf");
        let _ = write!(
            out,
            "if [ ! -f {conf} ]; then\n\
             cat > {conf}.new <<CONF\n\
             port $PORT\n\
             bind $BIND\n\
             protected-mode no\n\
             daemonize no\n\
             dir /var/lib/redisha/sentinel-$PORT\n\
             sentinel myid {myid}\n\
             sentinel announce-ip $IP\n\
             sentinel monitor {name} {pip} {pport} {quorum}\n\
             sentinel down-after-milliseconds {name} {down_after_ms}\n\
             sentinel failover-timeout {name} {failover_timeout_ms}\n\
             sentinel parallel-syncs {name} 1\n\
             CONF\n",
            myid = conf_word(myid),
            pip = conf_word(&primary.0),
            pport = primary.1,
        );
        // printf is the shell's own: the passwords never show in a process's arguments.
        if config.password.is_some() {
            let _ = write!(
                out,
                "DATA_PASSWORD=$(sed -n 's/^masterauth \"\\(.*\\)\"$/\\1/p' /etc/redisha/auth.conf)\n\
                 printf 'sentinel auth-pass {name} \"%s\"\\n' \"$DATA_PASSWORD\" >> {conf}.new\n"
            );
        }
        if password.is_some() {
            let _ = write!(
                out,
                "SENTINEL_PASSWORD=$(cat /etc/redisha/sentinel-password)\n\
                 printf 'user default on \">%s\" ~* &* +@all\\n' \"$SENTINEL_PASSWORD\" >> {conf}.new\n\
                 printf 'sentinel sentinel-pass \"%s\"\\n' \"$SENTINEL_PASSWORD\" >> {conf}.new\n"
            );
        }
        out.push_str(&install_private(&conf));
        out.push_str("fi\n");
    }
    out.push_str("systemctl daemon-reload\nsystemctl enable --now redisha-sentinel@$PORT\n");
    out
}

/// Stops a sentinel's unit; it stays enabled.
pub fn stop_sentinel(cluster: &str, node: &str, port: u16) -> String {
    format!(
        "{HEADER}{}{WAIT_FOR_FIRST_BOOT}if [ -f {SENTINEL_UNIT} ]; then systemctl stop redisha-sentinel@{port}; fi\n",
        about(cluster, NodeAction::Stop, node)
    )
}

/// Removes a sentinel from its instance: unit disabled, config and directory deleted.
pub fn remove_sentinel(cluster: &str, node: &str, port: u16) -> String {
    format!(
        "{HEADER}{}{WAIT_FOR_FIRST_BOOT}if [ -f {SENTINEL_UNIT} ]; then systemctl disable --now redisha-sentinel@{port}; fi\n\
         rm -f {SENTINEL_CONF_PREFIX}{port}.conf\nrm -rf /var/lib/redisha/sentinel-{port}\n",
        about(cluster, NodeAction::Remove, node)
    )
}

impl AwsDriver {
    /// [`redisha_cluster::Driver::start_process`]: writes the process's record on its
    /// instance first ([`crate::sentinel_records`]); returns at once when the process answers;
    /// else stores the passwords in SSM, starts it with a Run Command on its host's running
    /// instance and waits until it answers.
    pub(crate) async fn start_sentinel_mode_process(
        &self,
        host: &HostHandle,
        node: &NodePlan,
        kind: &ProcessKind,
        config: &NodeConfig,
    ) -> Result<NodeHandle, DriverError> {
        self.check_stand_in(host)?;
        let (ip, port) = self.node_address(host, node.index_on_host);
        let on_instance = self.port_on(&host.name, node.index_on_host);
        let sentinel = matches!(kind, ProcessKind::Sentinel { .. });
        let address = format_address(&ip, port);
        let handle = NodeHandle {
            name: node.name.clone(),
            host: host.name.clone(),
            ip,
            port,
            index_on_host: node.index_on_host,
            pid: None,
            data_dir: None,
            config_file: Some(config_file(on_instance, sentinel)),
        };
        self.record_process(host, node, &handle).await?;
        if crate::probe::answers(&address).await {
            tracing::info!(process = node.name, host = host.name, address, "answers");
            return Ok(handle);
        }
        let instance = self.instance_to_start_on(&host.name, &node.name).await?;
        let password_parameter = self.store_password(config).await?.unwrap_or_default();
        let sentinel_parameter = match kind {
            ProcessKind::Sentinel {
                password: Some(p), ..
            } => Some(self.store_sentinel_password(p.expose()).await?),
            _ => None,
        };
        let setup = ProcessSetup {
            port: on_instance,
            password_parameter: &password_parameter,
            sentinel_parameter: sentinel_parameter.as_deref(),
            fixed_ip: self.fixed_ip(&host.name),
        };
        let cluster = &self.config().cluster_name;
        let script = if sentinel {
            start_sentinel(cluster, &node.name, &setup, kind, config)
        } else {
            start_data(cluster, &node.name, &setup, kind, config)
        };
        let timeout = self.config().timeouts.create;
        self.run_on(
            &instance,
            &node.name,
            NodeAction::Start,
            &script,
            "create",
            timeout,
        )
        .await?;
        self.wait_for_node(&node.name, &host.name, &address, true, "create", timeout)
            .await?;
        tracing::info!(process = node.name, host = host.name, address, "answers");
        Ok(handle)
    }

    /// [`redisha_cluster::Driver::write_process_config`] after a rotation: the passwords in
    /// SSM (a process started later reads them there) and the shared settings on the
    /// instance. The running processes have theirs already; a sentinel rewrote its own file
    /// (private: its unit's umask), and a data node's file is written at each start.
    pub(crate) async fn write_sentinel_mode_config(
        &self,
        node: &NodeHandle,
        kind: &ProcessKind,
        config: &NodeConfig,
    ) -> Result<(), DriverError> {
        match kind {
            ProcessKind::Sentinel { password, .. } => {
                self.store_password(config).await?;
                if let Some(p) = password {
                    self.store_sentinel_password(p.expose()).await?;
                }
                Ok(())
            }
            ProcessKind::Standalone { .. } => {
                redisha_cluster::Driver::write_node_config(self, node, config).await
            }
        }
    }

    /// Writes the sentinels' password parameter; returns its name.
    async fn store_sentinel_password(&self, password: &str) -> Result<String, AwsError> {
        let cluster = self.config().cluster_name.clone();
        let id = self
            .acting_id("store the sentinels' password of")?
            .to_string();
        secrets::put_sentinel_password(&self.clients().ssm, &cluster, &id, password).await?;
        Ok(secrets::sentinel_parameter_name(&cluster, &id))
    }

    /// The Run Command that stops (`remove`: and removes) a sentinel, for
    /// [`redisha_cluster::Driver::stop_node`] and `wipe_node`.
    pub(crate) fn sentinel_script(&self, node: &NodeHandle, remove: bool) -> String {
        let cluster = &self.config().cluster_name;
        if remove {
            remove_sentinel(cluster, &node.name, node.port)
        } else {
            stop_sentinel(cluster, &node.name, node.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redisha_cluster::Password;

    fn setup(sentinel: bool) -> ProcessSetup<'static> {
        ProcessSetup {
            port: 6479,
            password_parameter: "/redisha/orders/0123456789abcdef/password",
            sentinel_parameter: sentinel
                .then_some("/redisha/orders/0123456789abcdef/sentinel-password"),
            fixed_ip: None,
        }
    }

    fn config() -> NodeConfig {
        NodeConfig {
            password: Some(Password::new("data-S3cret")),
            ..NodeConfig::default()
        }
    }

    fn sentinel_kind() -> ProcessKind {
        ProcessKind::Sentinel {
            master_name: "orders".into(),
            primary: ("10.0.1.5".into(), 6379),
            quorum: 2,
            down_after_ms: 5000,
            failover_timeout_ms: 60_000,
            myid: "0123456789abcdef0123456789abcdef01234567".into(),
            password: Some(Password::new("own-S3cret")),
        }
    }

    fn replica_kind() -> ProcessKind {
        ProcessKind::Standalone {
            replica_of: Some(("10.0.1.5".into(), 6379)),
            min_replicas_to_write: 1,
            min_replicas_max_lag: 10,
        }
    }

    #[test]
    fn no_script_carries_a_password_and_each_is_valid_shell() {
        let texts = [
            start_data("orders", "n1", &setup(false), &replica_kind(), &config()),
            start_sentinel("orders", "s1", &setup(true), &sentinel_kind(), &config()),
            stop_sentinel("orders", "s1", 6479),
            remove_sentinel("orders", "s1", 6479),
        ];
        for (i, text) in texts.iter().enumerate() {
            assert!(!text.contains("S3cret"), "{text}");
            crate::user_data::assert_valid_shell(text, &format!("script {i}"));
        }
    }

    #[test]
    fn a_replica_names_its_primary_and_keeps_the_write_guard() {
        let text = start_data("orders", "n1", &setup(false), &replica_kind(), &config());
        for line in [
            "replicaof 10.0.1.5 6379\n",
            "min-replicas-to-write 1\n",
            "min-replicas-max-lag 10\n",
            "include /etc/redisha/auth.conf\n",
            "systemctl enable --now redisha-node@$PORT\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        assert!(!text.contains("cluster-enabled"), "{text}");
    }

    #[test]
    fn a_sentinel_reads_its_passwords_on_the_instance_and_keeps_its_own_file() {
        let text = start_sentinel("orders", "s1", &setup(true), &sentinel_kind(), &config());
        assert!(text.contains(
            "printf '%s\\n' \"/redisha/orders/0123456789abcdef/sentinel-password\" > /etc/redisha/sentinel-password-parameter"
        ));
        assert!(
            text.contains("sentinel monitor orders 10.0.1.5 6379 2\n"),
            "{text}"
        );
        assert!(text.contains("sentinel myid 0123456789abcdef0123456789abcdef01234567\n"));
        assert!(text.contains("if [ ! -f /etc/redisha/sentinel-$PORT.conf ]; then"));
        assert!(text.contains("sentinel sentinel-pass"), "{text}");
        assert!(text.contains("--sentinel\n"), "{text}");
        // Without a sentinel password, no parameter and no user line.
        let mut kind = sentinel_kind();
        if let ProcessKind::Sentinel { password, .. } = &mut kind {
            *password = None;
        }
        let text = start_sentinel("orders", "s1", &setup(false), &kind, &config());
        assert!(text.contains("rm -f /etc/redisha/sentinel-password-parameter"));
        assert!(!text.contains("sentinel sentinel-pass"), "{text}");
    }

    #[test]
    fn handles_tell_sentinels_from_data_nodes() {
        let mut h = NodeHandle {
            name: "s1".into(),
            host: "a-1".into(),
            ip: "10.0.1.5".into(),
            port: 6479,
            index_on_host: 100,
            pid: None,
            data_dir: None,
            config_file: Some("/etc/redisha/sentinel-6479.conf".into()),
        };
        assert!(is_sentinel(&h));
        h.config_file = Some("/etc/redisha/node-6379.conf".into());
        assert!(!is_sentinel(&h));
        h.config_file = None;
        assert!(!is_sentinel(&h));
    }
}
