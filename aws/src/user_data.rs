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
use std::net::IpAddr;

use base64::Engine as _;
use redisha_cluster::{HostPlan, NodeConfig};

use crate::node_commands::{self, NodeSetup};
use crate::settings::REDIS_BASE_PORT;

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
    /// The ports of the host's nodes ([`node_port`] of each, or the stand-in's with the
    /// test-only address map).
    pub ports: &'a [u16],
    /// See [`NodeSetup::fixed_ip`].
    pub fixed_ip: Option<IpAddr>,
    /// See [`NodeSetup::security`].
    pub security: &'a str,
}

/// The port of node `index_on_host` on an instance.
pub fn node_port(index_on_host: u16) -> u16 {
    REDIS_BASE_PORT.saturating_add(index_on_host)
}

/// The cloud-config document (plain text, before base64). First boot runs two scripts:
/// `redisha-install` (the package, the data volume) and `redisha-node-setup`, the node setup
/// that Run Command also runs for a node added later ([`crate::node_commands`]).
pub fn render(input: &UserDataInput<'_>) -> String {
    // The password is not rendered here: it comes from SSM at each start (auth.conf).
    let shared = crate::node_secrets::without_secrets(input.config).render_shared_lines();
    let ports: Vec<String> = input.ports.iter().map(u16::to_string).collect();

    let mut install = String::new();
    install.push_str("#!/bin/sh\nset -eu\n");
    let _ = writeln!(install, "PKG=\"{}\"", input.redis_package);
    install.push_str(INSTALL);
    if input.data_volume {
        let _ = writeln!(install, "DEVICE_NAME=\"{DATA_DEVICE}\"");
        install.push_str(MOUNT);
    }
    let node_setup = node_commands::setup_script(&NodeSetup {
        ports: input.ports,
        rejoin_delay_secs: rejoin_delay_secs(input.config),
        password_parameter: input.password_parameter,
        fixed_ip: input.fixed_ip,
        zone: &input.host.zone,
        security: input.security,
    });

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
    write_file(&mut doc, SHARED_CONF, "0600", &shared);
    write_script(&mut doc, INSTALL_SCRIPT, &install);
    write_script(&mut doc, NODE_SETUP_SCRIPT, &node_setup);
    write_script(&mut doc, PASSWORD_SCRIPT, FETCH_PASSWORD);
    doc.push_str("runcmd:\n");
    let _ = writeln!(doc, "  - [{INSTALL_SCRIPT}]");
    let _ = writeln!(doc, "  - [{NODE_SETUP_SCRIPT}]");
    doc
}

/// Where first boot writes the shared settings, the two setup scripts and the password helper.
pub const SHARED_CONF: &str = "/etc/redisha/shared.conf";
pub const INSTALL_SCRIPT: &str = "/usr/local/sbin/redisha-install";
pub const NODE_SETUP_SCRIPT: &str = "/usr/local/sbin/redisha-node-setup";
pub const PASSWORD_SCRIPT: &str = "/usr/local/sbin/redisha-password";

fn write_file(doc: &mut String, path: &str, mode: &str, content: &str) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let _ = writeln!(doc, "  - path: {path}");
    let _ = writeln!(doc, "    permissions: '{mode}'");
    doc.push_str("    owner: root:root\n");
    doc.push_str("    encoding: b64\n");
    let _ = writeln!(doc, "    content: {}", b64.encode(content));
}

/// How deep a script's lines are indented in the document (under `content: |`).
const LITERAL_INDENT: &str = "      ";

/// A script (redisha's own text, no secret) as a YAML literal block rather than base64: a
/// quarter smaller, and EC2 limits user data to 16 KB. For the same reason its whole-line
/// comments stay out (not the `#!` line): they are read in this crate's source.
fn write_script(doc: &mut String, path: &str, content: &str) {
    let _ = writeln!(doc, "  - path: {path}");
    doc.push_str("    permissions: '0700'\n");
    doc.push_str("    owner: root:root\n");
    doc.push_str("    content: |\n");
    for line in without_comments(content).lines() {
        if line.is_empty() {
            doc.push('\n');
        } else {
            let _ = writeln!(doc, "{LITERAL_INDENT}{line}");
        }
    }
}

/// `script` without its whole-line comments (but the `#!` line).
fn without_comments(script: &str) -> String {
    script
        .lines()
        .filter(|line| {
            let code = line.trim_start();
            !code.starts_with('#') || code.starts_with("#!")
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The files of a document made by [`render`], decoded: (path, content), in order.
pub fn files(document: &str) -> Vec<(String, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut path = None;
    let mut literal: Option<(String, String)> = None;
    for raw in document.lines() {
        if let Some((_, text)) = literal.as_mut() {
            if raw.is_empty() {
                text.push('\n');
                continue;
            }
            if let Some(line) = raw.strip_prefix(LITERAL_INDENT) {
                text.push_str(line);
                text.push('\n');
                continue;
            }
            out.extend(literal.take());
        }
        let line = raw.trim();
        if let Some(p) = line.strip_prefix("- path: ") {
            path = Some(p.to_string());
        } else if line == "content: |" {
            if let Some(p) = path.take() {
                literal = Some((p, String::new()));
            }
        } else if let Some(c) = line.strip_prefix("content: ") {
            let Some(p) = path.take() else { continue };
            let content = b64
                .decode(c)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default();
            out.push((p, content));
        }
    }
    out.extend(literal.take());
    out
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
  # Metrics: one exporter per node (the node setup starts them); optional, like its package.
  apt-get install -y -q prometheus-redis-exporter || echo "redisha: prometheus-redis-exporter not installed; no metrics" >&2
elif command -v dnf >/dev/null 2>&1; then
  dnf install -y -q "$PKG"
else
  yum install -y -q "$PKG"
fi
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

/// Reads the password parameter (SSM GetParameter, decrypted) with the instance profile's
/// credentials and writes `/etc/redisha/auth.conf`. Standard library only (SigV4 by hand):
/// the AMI may have no AWS CLI, but every cloud-init image has python3. Keeps the last file
/// when SSM does not answer, so a node still starts during an SSM outage.
pub const FETCH_PASSWORD: &str = r#"#!/usr/bin/env python3
import datetime, fcntl, hashlib, hmac, json, os, sys, time, urllib.request

AUTH = "/etc/redisha/auth.conf"
# What else the node setup listed (crate::node_secrets): "<parameter> <file> [wait]".
SECRET_LIST = "/etc/redisha/secret-parameters"
CA_FILE = "/etc/redisha/tls/ca.crt"
# The exporter user's password, when the node setup lists it (crate::node_secrets).
EXPORTER_LOGIN = "/etc/redisha/exporter-password"


# SSM transport
IMDS = "http://169.254.169.254/latest"


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
# end of SSM transport


def secret_files():
    out = []
    if os.path.exists(SECRET_LIST):
        with open(SECRET_LIST) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2:
                    out.append((parts[0], parts[1], "wait" in parts[2:]))
    return out


def write_private(path, text, owner):
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    old = os.umask(0o077)
    with open(path + ".new", "w") as f:
        f.write(text)
    os.umask(old)
    try:
        import pwd
        user = pwd.getpwnam(owner)
        os.chown(directory, user.pw_uid, user.pw_gid)
        os.chown(path + ".new", user.pw_uid, user.pw_gid)
    except KeyError:
        pass
    os.rename(path + ".new", path)


def fetch_files(files):
    """Each listed parameter into its file. A node's certificate is issued once its instance
    has its address: a new instance waits for it. When SSM does not answer, a file written
    before is kept."""
    for name, path, wait in files:
        deadline = time.time() + (300 if wait and not os.path.exists(path) else 0)
        while True:
            try:
                value = get_parameter(name)
                break
            except Exception as e:
                if time.time() < deadline:
                    time.sleep(2)
                    continue
                if os.path.exists(path):
                    print("redisha-password: SSM unreachable (%s); keeping %s" % (type(e).__name__, path),
                          file=sys.stderr)
                    value = None
                    break
                print("redisha-password: cannot read %s: %s" % (name, type(e).__name__), file=sys.stderr)
                return 1
        if value is not None:
            write_private(path, value, "redis")
    return 0


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
    files = secret_files()
    # With ACL users, auth.conf comes whole from SSM (the operator user's masterauth).
    if AUTH not in [path for _, path, _ in files]:
        text = ""
        if password is not None:
            text = 'requirepass "%s"\nmasterauth "%s"\n' % (password, password)
        write_private(AUTH, text, "redis")
    if fetch_files(files):
        return 1
    exporter = password
    if EXPORTER_LOGIN in [path for _, path, _ in files] and os.path.exists(EXPORTER_LOGIN):
        with open(EXPORTER_LOGIN) as f:
            exporter = f.read().strip()
    write_exporter_passwords(exporter)
    return write_sentinel_password()


def write_sentinel_password():
    """Sentinel mode: the sentinels' own password, for the config their first start writes."""
    target = "/etc/redisha/sentinel-password"
    if not os.path.exists(target + "-parameter"):
        return 0
    with open(target + "-parameter") as f:
        name = f.read().strip()
    try:
        password = get_parameter(name)
    except Exception as e:
        print("redisha-password: cannot read %s: %s" % (name, type(e).__name__), file=sys.stderr)
        return 0 if os.path.exists(target) else 1
    old = os.umask(0o077)
    with open(target + ".new", "w") as f:
        f.write(password)
    os.umask(old)
    os.rename(target + ".new", target)
    return 0


def write_exporter_passwords(password):
    """The exporters' password file: redis URI -> password, for each node's port."""
    directory = "/etc/redisha-exporter"
    if not os.path.exists(directory + "/ports"):
        return
    with open(directory + "/ports") as f:
        ports = f.read().split()
    host = "127.0.0.1"
    if os.path.exists(directory + "/node-host"):
        with open(directory + "/node-host") as f:
            host = f.read().strip() or host
    target = directory + "/password.json"
    old = os.umask(0o077)
    with open(target + ".new", "w") as f:
        scheme = "rediss" if os.path.exists(CA_FILE) else "redis"
        json.dump({"%s://%s:%s" % (scheme, host, p): password or "" for p in ports}, f)
    os.umask(old)
    try:
        import pwd
        user = pwd.getpwnam("prometheus")
        os.chown(target + ".new", user.pw_uid, user.pw_gid)
    except KeyError:
        pass
    os.rename(target + ".new", target)


# One run at a time: at boot systemd starts every node's unit (and exporter) at once, and each
# runs this helper; two runs writing the same `.new` file would fail one of them and leave its
# node down (no unit restarts by itself). The lock is on this file itself: no path of its own.
def serialized(run):
    with open(os.path.realpath(__file__)) as me:
        fcntl.flock(me, fcntl.LOCK_EX)
        return run()


sys.exit(serialized(main))
"#;

/// A checker the tests need; missing is a failure (not a skip) that says how to get it.
#[cfg(test)]
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

/// Asserts `text` (named `what`) is POSIX shell that `sh -n` parses (without running it) and
/// shellcheck passes.
#[cfg(test)]
pub(crate) fn assert_valid_shell(text: &str, what: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("script.sh");
    std::fs::write(&path, text).expect("write");
    let out = std::process::Command::new("sh")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "sh -n {what}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = checker("shellcheck")
        .args(["--shell=sh", "--severity=warning"])
        .arg(&path)
        .output()
        .expect("shellcheck");
    assert!(
        out.status.success(),
        "shellcheck {what}: {}\n{text}",
        String::from_utf8_lossy(&out.stdout)
    );
}

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

    fn document(config: &NodeConfig) -> String {
        let host = host();
        render(&UserDataInput {
            cluster: "shop",
            password_parameter: "/redisha/shop/0123456789abcdef/password",
            host: &host,
            config,
            data_volume: true,
            redis_package: "redis-server",
            ports: &[6379, 6380],
            fixed_ip: None,
            security: "",
        })
    }

    fn file(doc: &str, path: &str) -> String {
        files(doc)
            .into_iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no {path} in the user data"))
    }

    #[test]
    fn no_secret_in_user_data_the_password_comes_from_ssm() {
        let config = NodeConfig {
            password: Some(Password::new("s3cret-pw")),
            ..Default::default()
        };
        let doc = document(&config);
        assert!(doc.starts_with("#cloud-config\n"));
        assert!(!doc.contains("s3cret-pw"), "password in clear in user data");
        let all: String = files(&doc).into_iter().map(|(_, c)| c).collect();
        assert!(!all.contains("s3cret-pw"), "password in user data");
        let setup = file(&doc, NODE_SETUP_SCRIPT);
        assert!(setup.contains("PASSWORD_PARAMETER=\"/redisha/shop/0123456789abcdef/password\""));
        assert!(setup.contains("ExecStartPre=+/usr/local/sbin/redisha-password"));
        assert!(setup.contains("include /etc/redisha/auth.conf"));
        assert!(file(&doc, PASSWORD_SCRIPT).contains("AmazonSSM.GetParameter"));
        assert!(doc.contains("path: /etc/redisha/shared.conf\n    permissions: '0600'"));
        assert!(!all.contains("set -x"));
        assert!(setup.contains("PORTS=\"6379 6380\""));
        assert!(setup.contains("cluster-enabled yes"));
        assert!(file(&doc, INSTALL_SCRIPT).contains("mkfs.ext4"));
        assert!(encode(&doc).len() < MAX_USER_DATA * 2);
    }

    /// First boot runs the same node setup as the Run Command that adds a node later.
    #[test]
    fn first_boot_runs_the_shared_node_setup() {
        let doc = document(&NodeConfig::default());
        let setup = file(&doc, NODE_SETUP_SCRIPT);
        let shared = node_commands::setup_script(&NodeSetup {
            ports: &[6379, 6380],
            rejoin_delay_secs: 15,
            password_parameter: "/redisha/shop/0123456789abcdef/password",
            fixed_ip: None,
            zone: "us-east-1a",
            security: "",
        });
        assert_eq!(setup, without_comments(&shared));
        let runcmd = doc.split("runcmd:\n").nth(1).expect("runcmd");
        assert_eq!(
            runcmd,
            format!("  - [{INSTALL_SCRIPT}]\n  - [{NODE_SETUP_SCRIPT}]\n"),
            "install first, then the node setup"
        );
    }

    #[test]
    fn nodes_never_restart_into_a_stale_snapshot() {
        let script = file(&document(&NodeConfig::default()), NODE_SETUP_SCRIPT);
        assert!(script.contains("Restart=no"), "{script}");
        assert!(!script.contains("Restart=on-failure"));
        // redisha's default node timeout is 5 s: 2 x 5 s + 5 s.
        assert!(script.contains("REJOIN_DELAY=15\n"), "{script}");
        assert!(script.contains(
            "nodes.conf ] && [ ! -e /run/redisha/start-now-%i ]; then sleep $REJOIN_DELAY"
        ));
        let slow = NodeConfig {
            redis_config: [("cluster-node-timeout".to_string(), "15001".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(rejoin_delay_secs(&slow), 36);
    }

    /// Both scripts are valid POSIX shell (parsed by `sh -n`, without running them) and pass
    /// shellcheck.
    #[test]
    fn the_setup_scripts_parse_and_pass_shellcheck() {
        let doc = document(&NodeConfig::default());
        for script in [INSTALL_SCRIPT, NODE_SETUP_SCRIPT] {
            assert_valid_shell(&file(&doc, script), script);
        }
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

    /// The document is valid cloud-config, by cloud-init's own schema.
    #[test]
    fn cloud_init_accepts_the_document() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("user-data");
        std::fs::write(&path, document(&NodeConfig::default())).expect("write");
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
}
