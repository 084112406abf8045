//! The cloud-init user data that installs, configures and starts redis-server on an instance.
//!
//! The cluster password is needed on the instance. It travels in the user data, base64-encoded
//! inside a cloud-init `write_files` entry that lands in `/etc/redisha/shared.conf`, mode 0600,
//! owned by the redis user; the setup script runs without `set -x` and never echoes it, so it
//! does not reach the console output or cloud-init's logs. Anyone allowed
//! `ec2:DescribeInstanceAttribute` on the instance can still read the user data: restrict that
//! permission (docs/resources/cluster.md says so), or rotate the password after creation.

use std::fmt::Write as _;

use base64::Engine as _;
use redisha_cluster::{HostPlan, NodeConfig};

use crate::settings::{CLUSTER_BUS_OFFSET, REDIS_BASE_PORT};

/// Where the data volume is mounted and nodes keep their data.
pub const DATA_DIR: &str = "/var/lib/redisha";
/// The device name the data volume is attached as.
pub const DATA_DEVICE: &str = "/dev/sdf";
/// EC2's user data limit (before base64).
pub const MAX_USER_DATA: usize = 16 * 1024;

/// What the user data of one instance depends on.
pub struct UserDataInput<'a> {
    pub cluster: &'a str,
    pub host: &'a HostPlan,
    pub config: &'a NodeConfig,
    pub data_volume: bool,
    pub redis_package: &'a str,
}

/// The port of node `index_on_host` on an instance.
pub fn node_port(index_on_host: u16) -> u16 {
    REDIS_BASE_PORT.saturating_add(index_on_host)
}

/// The cloud-config document (plain text, before base64).
pub fn render(input: &UserDataInput<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let shared = input.config.render_shared_lines();
    let ports: Vec<String> = input
        .host
        .nodes
        .iter()
        .map(|n| node_port(n.index_on_host).to_string())
        .collect();

    let mut script = String::new();
    // No `set -x`: the script handles a file holding the password.
    script.push_str("#!/bin/sh\nset -eu\numask 077\n");
    let _ = writeln!(script, "PORTS=\"{}\"", ports.join(" "));
    let _ = writeln!(script, "PKG=\"{}\"", input.redis_package);
    script.push_str(INSTALL);
    if input.data_volume {
        let _ = writeln!(script, "DEVICE_NAME=\"{DATA_DEVICE}\"");
        script.push_str(MOUNT);
    }
    let _ = writeln!(script, "BUS_OFFSET={CLUSTER_BUS_OFFSET}");
    let _ = writeln!(script, "REJOIN_DELAY={}", rejoin_delay_secs(input.config));
    script.push_str(CONFIGURE);

    let mut doc = String::new();
    doc.push_str("#cloud-config\n");
    let _ = writeln!(
        doc,
        "# redisha cluster {} host {} (zone {}): runs redis-server on ports {}",
        input.cluster,
        input.host.name,
        input.host.zone,
        ports.join(", ")
    );
    doc.push_str("write_files:\n");
    doc.push_str("  - path: /etc/redisha/shared.conf\n");
    doc.push_str("    permissions: '0600'\n");
    doc.push_str("    owner: root:root\n");
    doc.push_str("    encoding: b64\n");
    let _ = writeln!(doc, "    content: {}", b64.encode(shared));
    doc.push_str("  - path: /usr/local/sbin/redisha-setup\n");
    doc.push_str("    permissions: '0700'\n");
    doc.push_str("    owner: root:root\n");
    doc.push_str("    encoding: b64\n");
    let _ = writeln!(doc, "    content: {}", b64.encode(script));
    doc.push_str("runcmd:\n");
    doc.push_str("  - [/usr/local/sbin/redisha-setup]\n");
    doc
}

/// How long a node that was part of the cluster waits before it starts again (after a reboot):
/// twice the cluster-node-timeout plus a margin, so that when it was a master its replica has
/// been promoted by then and it rejoins as a replica of it (the newer config epoch wins), instead
/// of coming back as master with its last snapshot and handing that stale data to its replicas.
pub fn rejoin_delay_secs(config: &NodeConfig) -> u64 {
    let timeout_ms: u64 = config.node_timeout_ms().parse().unwrap_or(5000);
    (2 * timeout_ms).div_ceil(1000) + 5
}

/// The user data as RunInstances takes it (base64).
pub fn encode(document: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(document)
}

const INSTALL: &str = r#"
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "$PKG"
elif command -v dnf >/dev/null 2>&1; then
  dnf install -y -q "$PKG"
else
  yum install -y -q "$PKG"
fi
REDIS_BIN=$(command -v redis-server || command -v redis6-server || command -v redis7-server)
# The distribution's own instance listens on 6379, which our first node needs.
for unit in redis-server redis redis6 redis7; do
  systemctl disable --now "$unit" >/dev/null 2>&1 || true
done
"#;

const MOUNT: &str = r#"
DEVICE=""
for i in $(seq 1 60); do
  for candidate in "$DEVICE_NAME" /dev/xvdf /dev/nvme1n1; do
    if [ -b "$candidate" ]; then DEVICE="$candidate"; break; fi
  done
  [ -n "$DEVICE" ] && break
  sleep 2
done
[ -n "$DEVICE" ] || { echo "redisha: data volume not attached" >&2; exit 1; }
if ! blkid "$DEVICE" >/dev/null 2>&1; then mkfs.ext4 -q -L redisha-data "$DEVICE"; fi
mkdir -p /var/lib/redisha
UUID=$(blkid -s UUID -o value "$DEVICE")
grep -q "$UUID" /etc/fstab || echo "UUID=$UUID /var/lib/redisha ext4 defaults,nofail,noatime 0 2" >> /etc/fstab
mountpoint -q /var/lib/redisha || mount /var/lib/redisha
"#;

const CONFIGURE: &str = r#"
TOKEN=$(curl -sS -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
IP=$(curl -sS -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/local-ipv4)
chown redis:redis /etc/redisha /etc/redisha/shared.conf
chmod 0700 /etc/redisha
chmod 0600 /etc/redisha/shared.conf
cat > /etc/systemd/system/redisha-node@.service <<UNIT
[Unit]
Description=redisha Redis Cluster node on port %i
After=network-online.target local-fs.target
Wants=network-online.target

[Service]
User=redis
Group=redis
# A node that was part of the cluster (it has a nodes.conf) waits until its replica must have
# taken over before it starts from its last snapshot: it then rejoins as that replica's replica.
ExecStartPre=/bin/sh -c 'if [ -s /var/lib/redisha/node-%i/nodes.conf ]; then sleep $REJOIN_DELAY; fi'
ExecStart=$REDIS_BIN /etc/redisha/node-%i.conf
# Never restarted on failure: a master restarted within the node timeout comes back as master
# with stale data. Its replica takes over; the next apply repairs the node.
Restart=no
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
bind 0.0.0.0
protected-mode no
daemonize no
dir /var/lib/redisha/node-$PORT
cluster-enabled yes
cluster-config-file nodes.conf
cluster-port $((PORT + BUS_OFFSET))
cluster-announce-ip $IP
include /etc/redisha/shared.conf
CONF
    chown redis:redis /etc/redisha/node-$PORT.conf
    chmod 0600 /etc/redisha/node-$PORT.conf
  fi
done
systemctl daemon-reload
for PORT in $PORTS; do systemctl enable --now redisha-node@$PORT; done
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use redisha_cluster::{NodePlan, Password};

    fn host() -> HostPlan {
        HostPlan {
            name: "h-a-0".into(),
            zone: "us-east-1a".into(),
            zone_index: 0,
            host_index: 0,
            nodes: vec![
                NodePlan {
                    name: "n0".into(),
                    index_on_host: 0,
                    shard: 0,
                    role: redisha_planner::Role::Master,
                },
                NodePlan {
                    name: "n1".into(),
                    index_on_host: 1,
                    shard: 0,
                    role: redisha_planner::Role::Master,
                },
            ],
        }
    }

    fn decode_b64_lines(doc: &str) -> String {
        doc.lines()
            .filter_map(|l| l.trim().strip_prefix("content: "))
            .map(|c| {
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(c).unwrap())
                    .unwrap()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn password_is_only_in_the_0600_file_and_not_in_clear() {
        let config = NodeConfig {
            password: Some(Password::new("s3cret-pw")),
            ..Default::default()
        };
        let host = host();
        let doc = render(&UserDataInput {
            cluster: "shop",
            host: &host,
            config: &config,
            data_volume: true,
            redis_package: "redis-server",
        });
        assert!(doc.starts_with("#cloud-config\n"));
        assert!(!doc.contains("s3cret-pw"), "password in clear in user data");
        let files = decode_b64_lines(&doc);
        assert!(files.contains("requirepass s3cret-pw"));
        assert!(doc.contains("path: /etc/redisha/shared.conf\n    permissions: '0600'"));
        assert!(!files.contains("set -x"));
        assert!(files.contains("PORTS=\"6379 6380\""));
        assert!(files.contains("cluster-enabled yes"));
        assert!(files.contains("mkfs.ext4"));
        assert!(encode(&doc).len() < MAX_USER_DATA * 2);
    }

    fn script_of(config: &NodeConfig) -> String {
        let host = host();
        let doc = render(&UserDataInput {
            cluster: "shop",
            host: &host,
            config,
            data_volume: true,
            redis_package: "redis-server",
        });
        decode_b64_lines(&doc)
            .split("#!/bin/sh")
            .nth(1)
            .map(|s| format!("#!/bin/sh{s}"))
            .expect("the setup script")
    }

    #[test]
    fn nodes_never_restart_into_a_stale_snapshot() {
        let script = script_of(&NodeConfig::default());
        assert!(script.contains("Restart=no"), "{script}");
        assert!(!script.contains("Restart=on-failure"));
        // redisha's default node timeout is 5 s: 2 x 5 s + 5 s.
        assert!(script.contains("REJOIN_DELAY=15\n"), "{script}");
        assert!(script.contains("nodes.conf ]; then sleep $REJOIN_DELAY"));
        let slow = NodeConfig {
            redis_config: [("cluster-node-timeout".to_string(), "15001".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(rejoin_delay_secs(&slow), 36);
    }

    /// The setup script is valid POSIX shell (parsed by `sh -n`, without running it).
    #[test]
    fn the_setup_script_parses() {
        let script = script_of(&NodeConfig::default());
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("redisha-setup");
        std::fs::write(&path, &script).expect("write");
        let out = std::process::Command::new("sh")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "sh -n: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
