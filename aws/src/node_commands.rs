//! The shell that sets up, starts, stops, reconfigures and removes redis-server nodes on an
//! instance. One source of truth: the first boot's user data ([`crate::user_data`]) installs
//! [`setup_script`] as `/usr/local/sbin/redisha-node-setup` and runs it, and the Run Command
//! that starts a node on a running instance ([`start`]) runs the same [`node_setup`] text for
//! that node's port. What a node is on an instance:
//!
//! - `/etc/redisha/node-<port>.conf` (its own lines, written once: `CONFIG REWRITE` may add to
//!   it later), which includes `/etc/redisha/shared.conf` (the cluster's `redis_config`, no
//!   secret) and `/etc/redisha/auth.conf` (the password, written by `redisha-password` from
//!   SSM before every start);
//! - its data in `/var/lib/redisha/node-<port>/`;
//! - the systemd unit `redisha-node@<port>` (the template `redisha-node@.service`), enabled;
//! - where `prometheus-redis-exporter` is installed (the first boot installs it), its exporter:
//!   the unit `redisha-exporter-<port>` listening on port + [`EXPORTER_PORT_OFFSET`], its
//!   password in `/etc/redisha-exporter/password.json` (written by `redisha-password`).
//!
//! No command carries the password: commands are stored by SSM and shown in its console.

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine as _;
use redisha_cluster::NodeConfig;

use crate::settings::{CLUSTER_BUS_OFFSET, EXPORTER_PORT_OFFSET};

/// What the node setup of an instance depends on.
#[derive(Debug, Clone)]
pub struct NodeSetup<'a> {
    /// The ports of the nodes to set up (each node is known on its instance by its port).
    pub ports: &'a [u16],
    /// See [`crate::user_data::rejoin_delay_secs`].
    pub rejoin_delay_secs: u64,
    /// The SSM parameter holding the password ([`crate::secrets::parameter_name`]).
    pub password_parameter: &'a str,
    /// The address nodes bind to and announce, when it is fixed: only the test-only address
    /// map sets it (a loopback stand-in). Otherwise nodes listen on every address and announce
    /// the instance's private address, asked of the instance metadata service.
    pub fixed_ip: Option<IpAddr>,
    /// The instance's availability zone: nodes whose engine knows `availability-zone`
    /// (Valkey 8.1 and later) announce it, so clients can read from replicas in their zone.
    pub zone: &'a str,
    /// What the cluster's ACL and TLS add ([`crate::node_secrets::setup_fragment`]; empty
    /// without either).
    pub security: &'a str,
}

/// The header of every script: stop at the first failure, files private by default. No
/// `set -x`: the scripts handle a file holding the password.
pub(crate) const HEADER: &str = "#!/bin/sh\nset -eu\numask 077\n";

/// The node setup as a script of its own (the user data's `redisha-node-setup`).
pub fn setup_script(setup: &NodeSetup<'_>) -> String {
    format!("{HEADER}{}", node_setup(setup))
}

/// The node setup for `setup.ports`: variables, then [`NODE_SETUP`]. Idempotent: a node's
/// config is written only when missing (its data and cluster identity stay), the unit file
/// is rewritten, and `systemctl enable --now` leaves a running node running.
pub fn node_setup(setup: &NodeSetup<'_>) -> String {
    let ports: Vec<String> = setup.ports.iter().map(u16::to_string).collect();
    let mut out = String::new();
    let _ = writeln!(out, "PORTS=\"{}\"", ports.join(" "));
    let _ = writeln!(out, "BUS_OFFSET={CLUSTER_BUS_OFFSET}");
    let _ = writeln!(out, "EXPORTER_OFFSET={EXPORTER_PORT_OFFSET}");
    let _ = writeln!(out, "REJOIN_DELAY={}", setup.rejoin_delay_secs);
    let _ = writeln!(out, "PASSWORD_PARAMETER=\"{}\"", setup.password_parameter);
    let _ = writeln!(out, "ZONE=\"{}\"", shell_word(setup.zone));
    match setup.fixed_ip {
        Some(ip) => {
            let _ = writeln!(out, "IP=\"{ip}\"\nBIND=\"$IP\"");
        }
        None => out.push_str(IP_FROM_METADATA),
    }
    out.push_str(setup.security);
    out.push_str(NODE_SETUP);
    out.push_str(EXPORTER_SETUP);
    out
}

/// The instance's private address, from the instance metadata service (IMDSv2).
pub(crate) const IP_FROM_METADATA: &str = r#"TOKEN=$(curl -sS -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
IP=$(curl -sS -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/local-ipv4)
BIND=0.0.0.0
"#;

const NODE_SETUP: &str = r#"REDIS_BIN=$(command -v redis-server || command -v redis6-server || command -v redis7-server) || {
  echo "redisha: no redis-server is installed" >&2; exit 1; }
mkdir -p /etc/redisha /var/lib/redisha /run/redisha
# Valkey 8.1 and later announce their zone to clients (availability-zone); other engines
# refuse the setting.
AZ_KNOWN=""
ENGINE=$("$REDIS_BIN" --version 2>/dev/null | sed -n 's/^Valkey server v=\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
if [ -n "$ENGINE" ]; then
  MAJOR=${ENGINE% *}
  MINOR=${ENGINE#* }
  if [ "$MAJOR" -gt 8 ] || { [ "$MAJOR" -eq 8 ] && [ "$MINOR" -ge 1 ]; }; then AZ_KNOWN=yes; fi
fi
printf '%s\n' "$PASSWORD_PARAMETER" > /etc/redisha/password-parameter
/usr/local/sbin/redisha-password
chown redis:redis /etc/redisha /etc/redisha/shared.conf /etc/redisha/auth.conf
chmod 0700 /etc/redisha
chmod 0600 /etc/redisha/shared.conf /etc/redisha/auth.conf
cat > /etc/systemd/system/redisha-node@.service <<UNIT
[Unit]
Description=redisha Redis Cluster node on port %i
After=network-online.target local-fs.target
Wants=network-online.target

[Service]
User=redis
Group=redis
# A node that was part of the cluster (it has a nodes.conf) and starts on its own (a reboot)
# waits until its replica must have taken over before it starts from its last snapshot: it
# then rejoins as that replica's replica. A start redisha asks for (Run Command) does not wait.
ExecStartPre=+/bin/sh -c 'if [ -s /var/lib/redisha/node-%i/nodes.conf ] && [ ! -e /run/redisha/start-now-%i ]; then sleep $REJOIN_DELAY; fi; rm -f /run/redisha/start-now-%i'
# The password as SSM holds it now (as root: the instance profile's credentials).
ExecStartPre=+/usr/local/sbin/redisha-password
ExecStart=$REDIS_BIN /etc/redisha/node-%i.conf
# Never restarted on failure: a master restarted within the node timeout comes back as master
# with stale data. Its replica takes over; the next apply repairs the node.
Restart=no
# CONFIG REWRITE (after a password rotation) writes the config file with this umask.
UMask=0077
LimitNOFILE=65535

[Install]
WantedBy=multi-user.target
UNIT
for PORT in $PORTS; do
  mkdir -p /var/lib/redisha/node-$PORT
  chown redis:redis /var/lib/redisha /var/lib/redisha/node-$PORT
  if [ ! -f /etc/redisha/node-$PORT.conf ]; then
    cat > /etc/redisha/node-$PORT.conf <<CONF
port $PORT
bind $BIND
protected-mode no
daemonize no
dir /var/lib/redisha/node-$PORT
cluster-enabled yes
cluster-config-file nodes.conf
cluster-port $((PORT + BUS_OFFSET))
cluster-announce-ip $IP
include /etc/redisha/shared.conf
include /etc/redisha/auth.conf
CONF
    # TLS ports and files, and the ACL users, in the node's own file: CONFIG REWRITE writes
    # them there, and Redis refuses a user defined twice (see crate::node_secrets).
    if [ -f /etc/redisha/tls-$PORT.conf ]; then cat /etc/redisha/tls-$PORT.conf >> /etc/redisha/node-$PORT.conf; fi
    if [ -f /etc/redisha/users.conf ]; then cat /etc/redisha/users.conf >> /etc/redisha/node-$PORT.conf; fi
    if [ -n "$AZ_KNOWN" ] && [ -n "$ZONE" ]; then
      echo "availability-zone $ZONE" >> /etc/redisha/node-$PORT.conf
    fi
    chown redis:redis /etc/redisha/node-$PORT.conf
    chmod 0600 /etc/redisha/node-$PORT.conf
  elif [ -f /etc/redisha/tls-$PORT.conf ]; then
    # A node set up before: its file keeps its data's settings, but its plain-text port
    # follows the TLS mode the node's TLS lines now say (preferred: port + 1000, required:
    # 0), so a restart runs the new mode. Every `port` line (the setup's, the TLS lines',
    # one CONFIG REWRITE left) is rewritten; a boot runs no setup and keeps the file.
    WANT=$(sed -n 's/^port //p' /etc/redisha/tls-$PORT.conf)
    if [ -n "$WANT" ] && grep '^port ' /etc/redisha/node-$PORT.conf | grep -qvx "port $WANT"; then
      sed "s/^port .*/port $WANT/" /etc/redisha/node-$PORT.conf > /etc/redisha/node-$PORT.conf.new
      chown redis:redis /etc/redisha/node-$PORT.conf.new
      chmod 0600 /etc/redisha/node-$PORT.conf.new
      mv /etc/redisha/node-$PORT.conf.new /etc/redisha/node-$PORT.conf
    fi
  fi
done
systemctl daemon-reload
for PORT in $PORTS; do systemctl enable --now redisha-node@$PORT; done
"#;

/// One `prometheus-redis-exporter` per node, at its port + EXPORTER_OFFSET, on the address
/// the node listens on. Images without the package run none (nothing is installed here: a Run
/// Command must not wait on a package manager). One unit per node with its ports written in,
/// so that a node added later gets its own without touching the others'. The password is in
/// a file only the exporters' user reads, never in its arguments; `redisha-password` rewrites
/// it with auth.conf before every start, so a restart after a rotation reads the new one.
const EXPORTER_SETUP: &str = r#"if [ -x /usr/bin/prometheus-redis-exporter ] && id prometheus >/dev/null 2>&1; then
  # The package's own instance scrapes localhost:6379 without a password: ours replace it.
  systemctl disable --now prometheus-redis-exporter >/dev/null 2>&1 || true
  if [ "$BIND" = 0.0.0.0 ]; then NODE_HOST=127.0.0.1; else NODE_HOST="$BIND"; fi
  # With TLS the nodes speak nothing else: the exporter verifies them with the authority.
  SCHEME=redis
  EXPORTER_TLS=""
  if [ -f /etc/redisha/tls/ca.crt ]; then
    SCHEME=rediss
    EXPORTER_TLS=" -tls-ca-cert-file=/etc/redisha/tls/ca.crt"
  fi
  mkdir -p /etc/redisha-exporter
  printf '%s\n' "$NODE_HOST" > /etc/redisha-exporter/node-host
  touch /etc/redisha-exporter/ports
  for PORT in $PORTS; do
    grep -qx "$PORT" /etc/redisha-exporter/ports || echo "$PORT" >> /etc/redisha-exporter/ports
  done
  /usr/local/sbin/redisha-password
  # With the operator user they log in as redisha-exporter, whose password redisha-password
  # then writes into their password file (the user's name is no secret: an argument).
  EXPORTER_USER=""
  if grep -qs " /etc/redisha/exporter-password" /etc/redisha/secret-parameters; then
    EXPORTER_USER=" -redis.user=redisha-exporter"
  fi
  chown -R prometheus /etc/redisha-exporter
  chmod 0700 /etc/redisha-exporter
  for PORT in $PORTS; do
    cat > /etc/systemd/system/redisha-exporter-$PORT.service <<UNIT
[Unit]
Description=redisha metrics exporter of the node on port $PORT
After=redisha-node@$PORT.service

[Service]
User=prometheus
ExecStartPre=+/usr/local/sbin/redisha-password
ExecStart=/usr/bin/prometheus-redis-exporter -redis.addr=$SCHEME://$NODE_HOST:$PORT$EXPORTER_TLS -web.listen-address=$BIND:$((PORT + EXPORTER_OFFSET)) -redis.password-file=/etc/redisha-exporter/password.json$EXPORTER_USER -redis-only-metrics
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  done
  systemctl daemon-reload
  for PORT in $PORTS; do systemctl enable --now redisha-exporter-$PORT; done
fi
"#;

/// `text` with only the characters a zone name has (letters, digits, '-'): it is written into
/// a shell script.
fn shell_word(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// What a Run Command does to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAction {
    Start,
    Stop,
    Reconfigure,
    Remove,
}

impl NodeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAction::Start => "start",
            NodeAction::Stop => "stop",
            NodeAction::Reconfigure => "reconfigure",
            NodeAction::Remove => "remove",
        }
    }
}

impl std::fmt::Display for NodeAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The line naming the instance a command is for (after the header): for people reading the
/// Run Command history, and for the test-only runner (moto lists every instance of the region
/// on a command sent to one).
pub const INSTANCE_LINE: &str = "# redisha instance: ";

/// `script` (one of this module's) for `instance_id`: the instance named in it.
pub fn addressed(script: &str, instance_id: &str) -> String {
    match script.strip_prefix(HEADER) {
        Some(rest) => format!("{HEADER}{INSTANCE_LINE}{instance_id}\n{rest}"),
        None => format!("{INSTANCE_LINE}{instance_id}\n{script}"),
    }
}

/// The instance a command names ([`addressed`]), if any.
pub fn addressed_to(script: &str) -> Option<&str> {
    script
        .lines()
        .find_map(|l| l.strip_prefix(INSTANCE_LINE))
        .map(str::trim)
}

/// Every command first lets the first boot's setup finish (an instance launched moments ago
/// may still be installing redis-server), so that it never races it: a stop sent then would
/// otherwise be undone by the first boot starting the node afterwards.
pub(crate) const WAIT_FOR_FIRST_BOOT: &str = "if command -v cloud-init >/dev/null 2>&1; then cloud-init status --wait >/dev/null 2>&1 || true; fi\n";

/// The systemd unit template of the nodes.
const UNIT_TEMPLATE: &str = "/etc/systemd/system/redisha-node@.service";

/// The first line after the header: who sent the command and what for (it shows in the SSM
/// console next to the command).
pub(crate) fn about(cluster: &str, action: NodeAction, node: &str) -> String {
    format!("# redisha cluster {cluster}: {action} node {node}\n")
}

/// Writes `/etc/redisha/shared.conf` (the shared settings, without the password) in one
/// rename, the redis user's and mode 0600.
pub(crate) fn write_shared(config: &NodeConfig) -> String {
    let shared = crate::node_secrets::without_secrets(config).render_shared_lines();
    let b64 = base64::engine::general_purpose::STANDARD.encode(shared);
    format!(
        "mkdir -p /etc/redisha\n\
         printf '%s' '{b64}' | base64 -d > /etc/redisha/shared.conf.new\n\
         chown redis:redis /etc/redisha/shared.conf.new\n\
         chmod 0600 /etc/redisha/shared.conf.new\n\
         mv /etc/redisha/shared.conf.new /etc/redisha/shared.conf\n"
    )
}

/// Starts one node (set up first when it is new on the instance: an added node). Waits for
/// the first boot's cloud-init first, so that it never races the instance's own setup. The
/// node starts at once (no rejoin delay): redisha decided it.
pub fn start(cluster: &str, node: &str, setup: &NodeSetup<'_>, config: &NodeConfig) -> String {
    let mut out = String::from(HEADER);
    out.push_str(&about(cluster, NodeAction::Start, node));
    out.push_str(WAIT_FOR_FIRST_BOOT);
    out.push_str(&write_shared(config));
    out.push_str("mkdir -p /run/redisha\n");
    for port in setup.ports {
        let _ = writeln!(out, "touch /run/redisha/start-now-{port}");
    }
    out.push_str(&node_setup(setup));
    for port in setup.ports {
        let _ = writeln!(out, "rm -f /run/redisha/start-now-{port}");
    }
    out
}

/// Stops one node's unit; it stays enabled (a restart follows, or a reboot brings it back).
/// systemd ends a hung node too (SIGTERM, then SIGKILL), which a SHUTDOWN over redis cannot.
pub fn stop(cluster: &str, node: &str, port: u16) -> String {
    format!(
        "{HEADER}{}{WAIT_FOR_FIRST_BOOT}if [ -f {UNIT_TEMPLATE} ]; then systemctl stop redisha-node@{port}; fi\n",
        about(cluster, NodeAction::Stop, node)
    )
}

/// Writes the shared settings for the nodes' next start (the running nodes get them over
/// redis: CONFIG SET).
pub fn reconfigure(cluster: &str, node: &str, config: &NodeConfig) -> String {
    format!(
        "{HEADER}{}{WAIT_FOR_FIRST_BOOT}{}",
        about(cluster, NodeAction::Reconfigure, node),
        write_shared(config)
    )
}

/// Restarts node `port`'s metrics exporter, where it has one: its start (`redisha-password`)
/// reads its password from SSM again. A line to add to a Run Command script.
pub fn restart_exporter(port: u16) -> String {
    format!(
        "if [ -f /etc/systemd/system/redisha-exporter-{port}.service ]; then\n  \
         systemctl restart redisha-exporter-{port}\nfi\n"
    )
}

/// Removes one node from its instance: stopped, its unit disabled, its config and data
/// deleted (a reboot does not bring it back); the unit template goes with the last node.
pub fn remove(cluster: &str, node: &str, port: u16) -> String {
    format!(
        "{HEADER}{}{WAIT_FOR_FIRST_BOOT}if [ -f {UNIT_TEMPLATE} ]; then\n  \
         systemctl disable --now redisha-node@{port}\nfi\n\
         rm -f /etc/redisha/node-{port}.conf\n\
         rm -rf /var/lib/redisha/node-{port}\n\
         if [ -f /etc/systemd/system/redisha-exporter-{port}.service ]; then\n  \
         systemctl disable --now redisha-exporter-{port}\n  \
         rm -f /etc/systemd/system/redisha-exporter-{port}.service\nfi\n\
         if [ -f /etc/redisha-exporter/ports ]; then\n  \
         grep -vx {port} /etc/redisha-exporter/ports > /etc/redisha-exporter/ports.new || true\n  \
         mv /etc/redisha-exporter/ports.new /etc/redisha-exporter/ports\nfi\n\
         {}\
         if ! ls /etc/redisha/node-*.conf >/dev/null 2>&1; then\n  \
         rm -f {UNIT_TEMPLATE}\n  systemctl daemon-reload\nfi\n",
        about(cluster, NodeAction::Remove, node),
        crate::node_secrets::remove_fragment(port)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use redisha_cluster::Password;

    fn setup(ports: &[u16]) -> NodeSetup<'_> {
        NodeSetup {
            ports,
            rejoin_delay_secs: 15,
            password_parameter: "/redisha/shop/0123456789abcdef/password",
            fixed_ip: None,
            zone: "us-east-1a",
            security: "",
        }
    }

    fn secret_config() -> NodeConfig {
        NodeConfig {
            password: Some(Password::new("s3cret-pw")),
            redis_config: [("maxmemory-policy".to_string(), "allkeys-lru".to_string())].into(),
            acl: Default::default(),
        }
    }

    fn decoded_shared(script: &str) -> String {
        let b64 = script
            .lines()
            .find_map(|l| l.strip_prefix("printf '%s' '"))
            .and_then(|l| l.split('\'').next())
            .expect("the shared settings");
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64"),
        )
        .expect("utf-8")
    }

    #[test]
    fn no_command_carries_the_password() {
        let config = secret_config();
        let start = start("shop", "n0", &setup(&[6380]), &config);
        let reconfigure = reconfigure("shop", "n0", &config);
        for text in [
            &start,
            &reconfigure,
            &stop("shop", "n0", 6380),
            &remove("shop", "n0", 6380),
        ] {
            assert!(!text.contains("s3cret-pw"), "{text}");
            assert!(!text.contains("set -x"), "{text}");
        }
        for text in [&start, &reconfigure] {
            let shared = decoded_shared(text);
            assert!(shared.contains("maxmemory-policy allkeys-lru"), "{shared}");
            assert!(!shared.contains("s3cret-pw"), "{shared}");
            assert!(!shared.contains("requirepass"), "{shared}");
        }
    }

    #[test]
    fn a_start_sets_up_only_its_node_and_skips_the_rejoin_delay() {
        let text = start("shop", "n1", &setup(&[6380]), &NodeConfig::default());
        assert!(text
            .starts_with("#!/bin/sh\nset -eu\numask 077\n# redisha cluster shop: start node n1\n"));
        assert!(text.contains("PORTS=\"6380\"\n"), "{text}");
        assert!(text.contains("cloud-init status --wait"), "{text}");
        let flag = text
            .find("touch /run/redisha/start-now-6380")
            .expect("flag set");
        let enable = text
            .find("systemctl enable --now")
            .expect("enabled and started");
        let cleared = text
            .find("rm -f /run/redisha/start-now-6380\n")
            .expect("flag cleared");
        assert!(flag < enable && enable < cleared, "{text}");
        // The same node setup as the first boot's.
        assert!(text.contains(&node_setup(&setup(&[6380]))));
    }

    #[test]
    fn a_stand_in_address_replaces_the_metadata_service() {
        let mut s = setup(&[7710]);
        assert!(node_setup(&s).contains("169.254.169.254/latest/meta-data/local-ipv4"));
        assert!(node_setup(&s).contains("BIND=0.0.0.0"));
        s.fixed_ip = Some("127.0.91.1".parse().unwrap());
        let text = node_setup(&s);
        assert!(text.contains("IP=\"127.0.91.1\"\nBIND=\"$IP\"\n"), "{text}");
        assert!(!text.contains("169.254.169.254"), "{text}");
    }

    #[test]
    fn every_node_gets_an_exporter_whose_password_is_in_a_file() {
        let text = node_setup(&setup(&[6380]));
        assert!(text.contains("EXPORTER_OFFSET=20000"), "{text}");
        assert!(text.contains("systemctl enable --now redisha-exporter-$PORT"));
        let exec = text
            .lines()
            .find(|l| l.starts_with("ExecStart=/usr/bin/prometheus-redis-exporter"))
            .expect("the exporter's ExecStart");
        assert!(exec.contains("-redis.password-file=/etc/redisha-exporter/password.json"));
        assert!(!exec.contains("-redis.password="), "{exec}");
        // No package manager in a Run Command: the first boot installs the exporter.
        assert!(!text.contains("apt-get"), "{text}");
        let removed = remove("shop", "n1", 6380);
        assert!(removed.contains("systemctl disable --now redisha-exporter-6380"));
        assert!(removed.contains("grep -vx 6380 /etc/redisha-exporter/ports"));
    }

    /// The node setup's engine check, run for real by sh against stand-in server binaries
    /// that print what each engine's `--version` prints.
    #[test]
    fn only_valkey_8_1_and_later_nodes_announce_their_zone() {
        let script = NODE_SETUP;
        let start = script.find("AZ_KNOWN=\"\"").expect("the engine check");
        let end = script[start..].find("\nfi\n").expect("its end") + start + 4;
        let check = &script[start..end];
        for (version, expected) in [
            (
                "Valkey server v=8.1.8 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1",
                "yes",
            ),
            (
                "Valkey server v=9.0.0 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1",
                "yes",
            ),
            (
                "Valkey server v=8.0.2 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1",
                "",
            ),
            (
                "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1",
                "",
            ),
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            let bin = dir.path().join("server");
            std::fs::write(&bin, format!("#!/bin/sh\necho '{version}'\n")).expect("write");
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(&bin)
                .status()
                .expect("chmod");
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "set -eu\nREDIS_BIN={}\n{check}printf '%s' \"$AZ_KNOWN\"",
                    bin.display()
                ))
                .output()
                .expect("sh");
            assert!(out.status.success(), "{version}: {out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{version}");
        }
        let text = node_setup(&setup(&[6380]));
        assert!(text.contains("ZONE=\"us-east-1a\"\n"), "{text}");
        assert!(text.contains("echo \"availability-zone $ZONE\" >> /etc/redisha/node-$PORT.conf"));
        let mut odd = setup(&[6380]);
        odd.zone = "us-east-1a\"; rm -rf /";
        assert!(node_setup(&odd).contains("ZONE=\"us-east-1arm-rf\"\n"));
    }

    #[test]
    fn a_command_names_its_instance() {
        let text = addressed(&stop("shop", "n1", 6380), "i-0abc");
        assert!(text.starts_with("#!/bin/sh\nset -eu\numask 077\n# redisha instance: i-0abc\n"));
        assert_eq!(addressed_to(&text), Some("i-0abc"));
        assert_eq!(addressed_to(&stop("shop", "n1", 6380)), None);
    }

    #[test]
    fn a_removed_node_loses_its_unit_config_and_data() {
        let text = remove("shop", "n1", 6380);
        assert!(
            text.contains("systemctl disable --now redisha-node@6380"),
            "{text}"
        );
        assert!(text.contains("rm -f /etc/redisha/node-6380.conf"), "{text}");
        assert!(text.contains("rm -rf /var/lib/redisha/node-6380"), "{text}");
        let stop = stop("shop", "n1", 6380);
        assert!(
            stop.contains("then systemctl stop redisha-node@6380; fi\n"),
            "{stop}"
        );
        assert!(
            !stop.contains("disable"),
            "a stop keeps the unit enabled: {stop}"
        );
    }

    /// Every command is valid POSIX shell, by `sh -n` and shellcheck.
    #[test]
    fn every_command_parses_and_passes_shellcheck() {
        let config = secret_config();
        let mut fixed = setup(&[7710, 7711]);
        fixed.fixed_ip = Some("127.0.91.1".parse().unwrap());
        let texts = [
            start("shop", "n0", &setup(&[6379]), &config),
            start("shop", "n0", &fixed, &config),
            stop("shop", "n0", 6379),
            reconfigure("shop", "n0", &config),
            remove("shop", "n0", 6379),
            setup_script(&setup(&[6379, 6380])),
        ];
        for (i, text) in texts.iter().enumerate() {
            crate::user_data::assert_valid_shell(text, &format!("command {i}"));
        }
    }
}
