//! The cloud-init user data that installs, configures and starts redis-server on an instance.
//!
//! No secret is in the user data (anyone allowed `ec2:DescribeInstanceAttribute` reads it).
//! The password is in SSM Parameter Store ([`crate::secrets`]); before every start of a node,
//! `redisha-password` (python3, which every cloud-init image has) reads it with the instance
//! profile's credentials from the instance metadata service and writes
//! `/etc/redisha/auth.conf` (0600, the redis user's), which each node's config includes. A
//! node started after a rotation therefore gets the new password; when SSM cannot be reached
//! the last written file is used.

use std::fmt::Write as _;

use base64::Engine as _;
use redisha_cluster::{HostPlan, NodeConfig};

use crate::settings::{CLUSTER_BUS_OFFSET, EXPORTER_PORT_OFFSET, REDIS_BASE_PORT};

/// Where the data volume is mounted and nodes keep their data.
pub const DATA_DIR: &str = "/var/lib/redisha";
/// The device name the data volume is attached as.
pub const DATA_DEVICE: &str = "/dev/sdf";
/// EC2's user data limit (before base64).
pub const MAX_USER_DATA: usize = 16 * 1024;

/// What the user data of one instance depends on.
pub struct UserDataInput<'a> {
    pub cluster: &'a str,
    /// The SSM parameter holding the password ([`crate::secrets::parameter_name`]).
    pub password_parameter: &'a str,
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
    // The password is not rendered here: it comes from SSM at each start (auth.conf).
    let shared = NodeConfig {
        password: None,
        ..input.config.clone()
    }
    .render_shared_lines();
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
    let _ = writeln!(script, "EXPORTER_OFFSET={EXPORTER_PORT_OFFSET}");
    let _ = writeln!(script, "REJOIN_DELAY={}", rejoin_delay_secs(input.config));
    let _ = writeln!(
        script,
        "PASSWORD_PARAMETER=\"{}\"",
        input.password_parameter
    );
    script.push_str(CONFIGURE);
    script.push_str(EXPORTERS);

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
    doc.push_str("  - path: /usr/local/sbin/redisha-password\n");
    doc.push_str("    permissions: '0700'\n");
    doc.push_str("    owner: root:root\n");
    doc.push_str("    encoding: b64\n");
    let _ = writeln!(doc, "    content: {}", b64.encode(FETCH_PASSWORD));
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
for _ in $(seq 1 60); do
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

/// One `prometheus-redis-exporter` per node at its port + EXPORTER_OFFSET (Debian's package;
/// images without it run no exporter). Its password file is written by `redisha-password`
/// with auth.conf, in a directory only the exporters' user reads: never in its arguments.
const EXPORTERS: &str = r#"
if command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -q prometheus-redis-exporter || echo "redisha: prometheus-redis-exporter not installed; no metrics" >&2
fi
if [ -x /usr/bin/prometheus-redis-exporter ] && id prometheus >/dev/null 2>&1; then
  # The package's own instance scrapes localhost:6379 without a password: ours replace it.
  systemctl disable --now prometheus-redis-exporter >/dev/null 2>&1 || true
  mkdir -p /etc/redisha-exporter
  printf '%s\n' "$PORTS" > /etc/redisha-exporter/ports
  /usr/local/sbin/redisha-password
  chown -R prometheus /etc/redisha-exporter
  chmod 0700 /etc/redisha-exporter
  cat > /etc/systemd/system/redisha-exporter@.service <<UNIT
[Unit]
Description=redisha metrics exporter of the node on port %i
After=redisha-node@%i.service

[Service]
User=prometheus
EnvironmentFile=/etc/redisha-exporter/%i.env
# The password as SSM holds it now: a restart after a rotation reads the new one.
ExecStartPre=+/usr/local/sbin/redisha-password
ExecStart=/usr/bin/prometheus-redis-exporter -redis.addr=redis://127.0.0.1:%i -web.listen-address=:\${LISTEN_PORT} -redis.password-file=/etc/redisha-exporter/password.json -redis-only-metrics
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  for PORT in $PORTS; do
    echo "LISTEN_PORT=$((PORT + EXPORTER_OFFSET))" > /etc/redisha-exporter/$PORT.env
    systemctl enable --now redisha-exporter@$PORT
  done
fi
"#;

const CONFIGURE: &str = r#"
TOKEN=$(curl -sS -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
IP=$(curl -sS -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/local-ipv4)
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
# A node that was part of the cluster (it has a nodes.conf) waits until its replica must have
# taken over before it starts from its last snapshot: it then rejoins as that replica's replica.
ExecStartPre=/bin/sh -c 'if [ -s /var/lib/redisha/node-%i/nodes.conf ]; then sleep $REJOIN_DELAY; fi'
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
bind 0.0.0.0
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
    chown redis:redis /etc/redisha/node-$PORT.conf
    chmod 0600 /etc/redisha/node-$PORT.conf
  fi
done
systemctl daemon-reload
for PORT in $PORTS; do systemctl enable --now redisha-node@$PORT; done
"#;

/// Reads the password parameter (SSM GetParameter, decrypted) with the instance profile's
/// credentials and writes `/etc/redisha/auth.conf`. Standard library only (SigV4 by hand):
/// the AMI may have no AWS CLI, but every cloud-init image has python3. Keeps the last file
/// when SSM does not answer, so a node still starts during an SSM outage.
const FETCH_PASSWORD: &str = r#"#!/usr/bin/env python3
import datetime, hashlib, hmac, json, os, sys, urllib.request

IMDS = "http://169.254.169.254/latest"
AUTH = "/etc/redisha/auth.conf"


def imds(path, token):
    req = urllib.request.Request(IMDS + path, headers={"X-aws-ec2-metadata-token": token})
    return urllib.request.urlopen(req, timeout=5).read().decode()


def sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def get_parameter(name):
    req = urllib.request.Request(IMDS + "/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    token = urllib.request.urlopen(req, timeout=5).read().decode()
    region = imds("/meta-data/placement/region", token)
    role = imds("/meta-data/iam/security-credentials/", token).splitlines()[0]
    creds = json.loads(imds("/meta-data/iam/security-credentials/" + role, token))
    host = "ssm.%s.amazonaws.com" % region
    body = json.dumps({"Name": name, "WithDecryption": True})
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {"content-type": "application/x-amz-json-1.1", "host": host,
               "x-amz-date": amz_date, "x-amz-security-token": creds["Token"],
               "x-amz-target": "AmazonSSM.GetParameter"}
    names = ";".join(sorted(headers))
    canonical = "\n".join(["POST", "/", ""] + ["%s:%s" % (k, headers[k]) for k in sorted(headers)]
                          + ["", names, hashlib.sha256(body.encode()).hexdigest()])
    scope = "%s/%s/ssm/aws4_request" % (day, region)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = sign(sign(sign(sign(("AWS4" + creds["SecretAccessKey"]).encode(), day), region), "ssm"),
               "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"
                                % (creds["AccessKeyId"], scope, names, signature))
    req = urllib.request.Request("https://" + host + "/", data=body.encode(), headers=headers)
    return json.loads(urllib.request.urlopen(req, timeout=10).read())["Parameter"]["Value"]


def main():
    with open("/etc/redisha/password-parameter") as f:
        name = f.read().strip()
    try:
        # No parameter: a cluster without a password (only tests make one).
        password = get_parameter(name) if name else None
    except Exception as e:
        if os.path.exists(AUTH):
            print("redisha-password: SSM unreachable (%s); keeping %s" % (type(e).__name__, AUTH),
                  file=sys.stderr)
            return 0
        print("redisha-password: cannot read %s: %s" % (name, type(e).__name__), file=sys.stderr)
        return 1
    old = os.umask(0o077)
    with open(AUTH + ".new", "w") as f:
        if password is not None:
            f.write('requirepass "%s"\nmasterauth "%s"\n' % (password, password))
    os.umask(old)
    try:
        import pwd
        user = pwd.getpwnam("redis")
        os.chown(AUTH + ".new", user.pw_uid, user.pw_gid)
    except KeyError:
        pass
    os.rename(AUTH + ".new", AUTH)
    write_exporter_passwords(password)
    return 0


def write_exporter_passwords(password):
    """The exporters' password file: redis URI -> password, for each node's port."""
    directory = "/etc/redisha-exporter"
    if not os.path.exists(directory + "/ports"):
        return
    with open(directory + "/ports") as f:
        ports = f.read().split()
    target = directory + "/password.json"
    old = os.umask(0o077)
    with open(target + ".new", "w") as f:
        json.dump({"redis://127.0.0.1:%s" % p: password or "" for p in ports}, f)
    os.umask(old)
    try:
        import pwd
        user = pwd.getpwnam("prometheus")
        os.chown(target + ".new", user.pw_uid, user.pw_gid)
    except KeyError:
        pass
    os.rename(target + ".new", target)


sys.exit(main())
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
    fn no_secret_in_user_data_the_password_comes_from_ssm() {
        let config = NodeConfig {
            password: Some(Password::new("s3cret-pw")),
            ..Default::default()
        };
        let host = host();
        let doc = render(&UserDataInput {
            cluster: "shop",
            password_parameter: "/redisha/shop/0123456789abcdef/password",
            host: &host,
            config: &config,
            data_volume: true,
            redis_package: "redis-server",
        });
        assert!(doc.starts_with("#cloud-config\n"));
        assert!(!doc.contains("s3cret-pw"), "password in clear in user data");
        let files = decode_b64_lines(&doc);
        assert!(!files.contains("s3cret-pw"), "password in user data");
        assert!(files.contains("PASSWORD_PARAMETER=\"/redisha/shop/0123456789abcdef/password\""));
        assert!(files.contains("ExecStartPre=+/usr/local/sbin/redisha-password"));
        assert!(files.contains("include /etc/redisha/auth.conf"));
        assert!(files.contains("AmazonSSM.GetParameter"));
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
            password_parameter: "/redisha/shop/0123456789abcdef/password",
            host: &host,
            config,
            data_volume: true,
            redis_package: "redis-server",
        });
        decode_b64_lines(&doc)
            .split("#!/bin/sh")
            .nth(1)
            // The password helper (python) follows the setup script.
            .and_then(|s| s.split("#!/usr/bin/env python3").next())
            .map(|s| format!("#!/bin/sh{s}"))
            .expect("the setup script")
    }

    #[test]
    fn every_node_gets_an_exporter_whose_password_is_in_a_file() {
        let script = script_of(&NodeConfig::default());
        assert!(script.contains("EXPORTER_OFFSET=20000"));
        assert!(script.contains("systemctl enable --now redisha-exporter@$PORT"));
        let exec = script
            .lines()
            .find(|l| l.starts_with("ExecStart=/usr/bin/prometheus-redis-exporter"))
            .expect("the exporter's ExecStart");
        assert!(exec.contains("-redis.password-file=/etc/redisha-exporter/password.json"));
        assert!(!exec.contains("-redis.password="), "{exec}");
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

    /// The password helper is valid python3 (compiled, not run).
    #[test]
    fn the_password_helper_compiles() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("redisha-password");
        std::fs::write(&path, FETCH_PASSWORD).expect("write");
        let out = std::process::Command::new("python3")
            .args(["-c", "import ast,sys; ast.parse(open(sys.argv[1]).read())"])
            .arg(&path)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "python3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A checker the tests need; missing is a failure (not a skip) that says how to get it.
    fn checker(name: &str) -> std::process::Command {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{name} is not installed: run scripts/setup (it installs cloud-init and shellcheck)"
        );
        std::process::Command::new(name)
    }

    fn full_document() -> String {
        let host = host();
        render(&UserDataInput {
            cluster: "shop",
            password_parameter: "/redisha/shop/0123456789abcdef/password",
            host: &host,
            config: &NodeConfig::default(),
            data_volume: true,
            redis_package: "redis-server",
        })
    }

    /// The document is valid cloud-config, by cloud-init's own schema.
    #[test]
    fn cloud_init_accepts_the_document() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("user-data");
        std::fs::write(&path, full_document()).expect("write");
        let out = checker("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&path)
            .output()
            .expect("cloud-init");
        assert!(
            out.status.success(),
            "cloud-init schema: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The setup script passes shellcheck as POSIX sh.
    #[test]
    fn shellcheck_accepts_the_setup_script() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("redisha-setup");
        std::fs::write(&path, script_of(&NodeConfig::default())).expect("write");
        let out = checker("shellcheck")
            .args(["--shell=sh", "--severity=warning"])
            .arg(&path)
            .output()
            .expect("shellcheck");
        assert!(
            out.status.success(),
            "shellcheck: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
