//! What a node reads from SSM besides the cluster password, and where it puts it: the
//! operator user's `masteruser`/`masterauth` (with `requirepass` or not, as the `default` user
//! is on or off), the ACL `user` lines (password hashes only), and with TLS the authority's
//! certificate and each node's own certificate and key.
//!
//! Every such value is a parameter under the cluster's path ([`crate::secrets::parameter_prefix`]);
//! those a node reads are under `<prefix>/node/`, which is all the nodes' role may read besides
//! the password ([`crate::instance_profile::node_policy`]); the TLS authority and the operator
//! user's password are kept beside them for the provider only. The node setup lists what its
//! instance reads in `/etc/redisha/secret-parameters` (`<parameter> <file> [wait]`), and
//! `redisha-password` ([`crate::user_data`]) writes each file (0600, the redis user's) before
//! every start of a node, so a restarted node gets what SSM holds now. No value is in user
//! data, a Run Command, a tag or a process argument.
//!
//! Where each goes on the instance, and why there:
//! - `/etc/redisha/auth.conf` (included by every node's config): scalar settings, which a
//!   later line may repeat;
//! - `/etc/redisha/users.conf`: the `user` lines, copied into a node's own config when the node
//!   is set up, not included: Redis refuses a user defined twice, and `CONFIG REWRITE` (how the
//!   cluster code persists ACL changes on aws) writes every user into the node's own file;
//! - `/etc/redisha/tls/ca.crt` and `/etc/redisha/tls/node-<port>.pem` (certificate and key),
//!   with the node's TLS lines (ports, file paths; no secret) copied into its own config at
//!   setup, for the same reason (`CONFIG REWRITE` writes `port` and `tls-port` there).

use std::fmt::Write as _;
use std::path::Path;

use redisha_cluster::tls::{TlsConfig, TlsFiles};
use redisha_cluster::NodeConfig;

use crate::secrets::parameter_prefix;

/// Where the node setup lists the parameters its instance reads.
pub const SECRET_LIST: &str = "/etc/redisha/secret-parameters";
pub const AUTH_FILE: &str = "/etc/redisha/auth.conf";
pub const USERS_FILE: &str = "/etc/redisha/users.conf";
pub const TLS_DIR: &str = "/etc/redisha/tls";
pub const CA_FILE: &str = "/etc/redisha/tls/ca.crt";
/// The exporter user's password (`redisha-exporter`), from which `redisha-password` writes the
/// metrics exporters' password file; its presence in [`SECRET_LIST`] is what makes the
/// exporters log in as that user.
pub const EXPORTER_LOGIN_FILE: &str = "/etc/redisha/exporter-password";

/// The file holding node `port`'s certificate and key (one PEM file serves both settings:
/// OpenSSL reads the certificate and the key from it each by its own PEM header).
pub fn node_pem_file(port: u16) -> String {
    format!("{TLS_DIR}/node-{port}.pem")
}

/// The node's TLS lines, copied into its own config at setup.
pub fn node_tls_conf_file(port: u16) -> String {
    format!("/etc/redisha/tls-{port}.conf")
}

/// The names of a cluster's parameters.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(cluster: &str, cluster_id: &str) -> Self {
        Names {
            prefix: parameter_prefix(cluster, cluster_id),
        }
    }

    /// What the nodes' role may read (besides the password): everything under it.
    pub fn node_path(&self) -> String {
        format!("{}/node", self.prefix)
    }

    /// `auth.conf` as the nodes include it.
    pub fn auth(&self) -> String {
        format!("{}/auth", self.node_path())
    }

    /// The ACL `user` lines.
    pub fn users(&self) -> String {
        format!("{}/users", self.node_path())
    }

    /// The metrics exporters' user's password ([`redisha_cluster::acl::EXPORTER_USER`]).
    pub fn exporter(&self) -> String {
        format!("{}/exporter", self.node_path())
    }

    /// The authority's certificate, as the nodes verify each other with it.
    pub fn ca_cert(&self) -> String {
        format!("{}/tls-ca", self.node_path())
    }

    /// Node `port` of `host`: its certificate and key.
    pub fn node_cert(&self, host: &str, port: u16) -> String {
        format!("{}/tls/{host}/{port}", self.node_path())
    }

    /// What redisha records about node `port` of `host`'s certificate (address, authority,
    /// expiry; no secret), read at plan for the days left.
    pub fn cert_info(&self, host: &str, port: u16) -> String {
        format!("{}/{host}/{port}", self.cert_info_path())
    }

    pub fn cert_info_path(&self) -> String {
        format!("{}/tls-info", self.prefix)
    }

    /// The operator user's password, for the provider (nodes get it inside `auth`).
    pub fn operator_password(&self) -> String {
        format!("{}/operator-password", self.prefix)
    }

    /// While the operator user's password rotates: the new one (provider only).
    pub fn operator_password_next(&self) -> String {
        format!("{}/operator-password-next", self.prefix)
    }

    /// The generation of the password in [`Names::operator_password`]
    /// (`operator_password_generation`; none recorded: 0).
    pub fn operator_generation(&self) -> String {
        format!("{}/operator-password-generation", self.prefix)
    }

    /// The TLS authority: its certificate, then its key (PEM). Never readable by the nodes.
    pub fn authority(&self) -> String {
        format!("{}/tls-authority", self.prefix)
    }
}

/// `config` as nodes may see it in user data and Run Commands: without the password and the
/// ACL (its lines hold the operator user's password and the users' hashes; they come from SSM).
pub fn without_secrets(config: &NodeConfig) -> NodeConfig {
    NodeConfig {
        password: None,
        acl: Default::default(),
        ..config.clone()
    }
}

/// Whether the cluster's nodes get their ACL from SSM: it has the operator user, declared users
/// or `default` switched off. Otherwise `auth.conf` is made from the password alone, as
/// clusters made before ACL users have it.
pub fn acl_in_use(config: &NodeConfig) -> bool {
    let acl = &config.acl;
    acl.operator_password.is_some() || acl.default_user_disabled || !acl.users.is_empty()
}

/// `auth.conf` and the `user` lines of `config` (the cluster code's own rendering, split).
pub fn auth_and_users(config: &NodeConfig) -> (String, String) {
    let lines = config.acl.render_lines(config.password.as_ref());
    let (mut auth, mut users) = (String::new(), String::new());
    for line in lines.lines() {
        let out = if line.starts_with("user ") {
            &mut users
        } else {
            &mut auth
        };
        out.push_str(line);
        out.push('\n');
    }
    (auth, users)
}

/// What a node setup needs to know of the cluster's security.
pub struct SetupSecrets<'a> {
    pub names: &'a Names,
    pub host: &'a str,
    /// Whether the ACL comes from SSM ([`acl_in_use`]).
    pub acl: bool,
    pub tls: Option<&'a TlsConfig>,
}

/// The shell that lists what the node setup reads from SSM and writes each node's TLS lines
/// (no secret in it: parameter names and file paths). Runs before the node setup's
/// `redisha-password`, for the ports in `$PORTS`; its size does not grow with them (user data
/// is limited to 16 KB). Empty when the cluster has neither ACL nor TLS.
pub fn setup_fragment(secrets: &SetupSecrets<'_>) -> String {
    if !secrets.acl && secrets.tls.is_none() {
        return String::new();
    }
    let mut out = list_prelude(secrets.names);
    if secrets.acl {
        out.push_str(&acl_list_lines());
    }
    if let Some(tls) = secrets.tls {
        let _ = writeln!(out, "redisha_list \"$NODE_PARAMETERS/tls-ca {CA_FILE}\"");
        let _ = write!(
            out,
            "cat > {TLS_TEMPLATE} <<'TLS'\n{}TLS\n",
            tls_template(tls)
        );
        // `wait`: a new instance's certificate is issued once EC2 gave it its address.
        let _ = write!(
            out,
            "for PORT in $PORTS; do\n  \
             redisha_list \"$NODE_PARAMETERS/tls/{host}/$PORT {TLS_DIR}/node-$PORT.pem wait\"\n  \
             sed -e \"s/@PORT@/$PORT/g\" -e \"s/@BUS@/$((PORT + BUS_OFFSET))/g\" \
             -e \"s/@PLAIN@/$((PORT + {plain}))/g\" {TLS_TEMPLATE} > /etc/redisha/tls-$PORT.conf\n\
             done\n",
            host = secrets.host,
            plain = redisha_cluster::tls::PLAINTEXT_PORT_OFFSET,
        );
    }
    out
}

/// The start of a script that lists parameters for `redisha-password`: `redisha_list` adds a
/// line to [`SECRET_LIST`] unless it is there, `$NODE_PARAMETERS` is the cluster's node path.
fn list_prelude(names: &Names) -> String {
    format!(
        "mkdir -p /etc/redisha\n\
         touch {SECRET_LIST}\n\
         redisha_list() {{ grep -qxF \"$1\" {SECRET_LIST} || echo \"$1\" >> {SECRET_LIST}; }}\n\
         NODE_PARAMETERS='{}'\n",
        names.node_path()
    )
}

/// The ACL parameters an instance reads (after [`list_prelude`]).
fn acl_list_lines() -> String {
    format!(
        "redisha_list \"$NODE_PARAMETERS/auth {AUTH_FILE}\"\n\
         redisha_list \"$NODE_PARAMETERS/users {USERS_FILE}\"\n\
         redisha_list \"$NODE_PARAMETERS/exporter {EXPORTER_LOGIN_FILE}\"\n"
    )
}

/// For a running node of a cluster that uses ACL, on every write of its settings: its
/// instance lists the ACL parameters, and its exporter logs in as `redisha-exporter`
/// (restarted when its unit changes). A cluster made without users had its nodes set up
/// without either: once it declares its first user, a node restarted would read only the
/// password (its `auth.conf` then says `masterauth` with the cluster password beside
/// `masteruser redisha-operator`), and an exporter logging in as `default` is refused once
/// `default` is off. Setting things that are already so changes nothing.
pub fn acl_adopt_fragment(names: &Names, port: u16) -> String {
    let unit = format!("/etc/systemd/system/redisha-exporter-{port}.service");
    format!(
        "{}{}\
         if [ -f {unit} ] && ! grep -q -- ' -redis.user=redisha-exporter' {unit}; then\n  \
         sed -i 's| -redis-only-metrics$| -redis.user=redisha-exporter -redis-only-metrics|' {unit}\n  \
         systemctl daemon-reload\n  \
         systemctl restart redisha-exporter-{port}\n\
         fi\n",
        list_prelude(names),
        acl_list_lines()
    )
}

/// Where the node setup keeps the nodes' TLS lines with their ports left open.
const TLS_TEMPLATE: &str = "/etc/redisha/tls.conf.in";

/// The cluster code's TLS lines ([`TlsConfig::redis_conf_lines`]) with the node's port, its
/// bus port and plain-text port as `@PORT@`, `@BUS@` and `@PLAIN@` (the node setup fills them
/// in per node).
fn tls_template(tls: &TlsConfig) -> String {
    const PORT: u16 = 1;
    let pem = format!("{TLS_DIR}/node-@PORT@.pem");
    let lines = tls.redis_conf_lines(
        PORT,
        &TlsFiles {
            ca_cert: Path::new(CA_FILE),
            cert: Path::new(&pem),
            key: Path::new(&pem),
        },
    );
    let bus = u32::from(PORT) + 10000;
    let plain = tls.plaintext_port(PORT).unwrap_or(0);
    lines
        .lines()
        .map(|line| match line.split_once(' ') {
            Some(("tls-port", p)) if p == PORT.to_string() => "tls-port @PORT@".to_string(),
            Some(("cluster-port", p)) if p == bus.to_string() => "cluster-port @BUS@".to_string(),
            Some(("port", p)) if p != "0" && p == plain.to_string() => "port @PLAIN@".to_string(),
            _ => line.to_string(),
        })
        .map(|l| l + "\n")
        .collect()
}

/// What removing node `port` from its instance also removes: its certificate's entry and
/// files.
pub fn remove_fragment(port: u16) -> String {
    let pem = node_pem_file(port);
    format!(
        "if [ -f {SECRET_LIST} ]; then\n  \
         grep -v ' {pem}' {SECRET_LIST} > {SECRET_LIST}.new || true\n  \
         mv {SECRET_LIST}.new {SECRET_LIST}\nfi\n\
         rm -f {pem} {}\n",
        node_tls_conf_file(port)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use redisha_cluster::acl::{AclConfig, AclUser};
    use redisha_cluster::tls::{CertAuthority, CertSource, TlsMode};
    use redisha_cluster::Password;

    fn acl_config() -> NodeConfig {
        NodeConfig {
            password: Some(Password::new("cluster-pw")),
            redis_config: Default::default(),
            acl: AclConfig {
                users: vec![AclUser {
                    name: "reader".into(),
                    password: Password::new("reader-pw"),
                    rules: vec!["~*".into(), "+@read".into()],
                }],
                default_user_disabled: true,
                operator_password: Some(Password::new("operator-pw")),
                operator_password_retiring: None,
            },
        }
    }

    #[test]
    fn users_go_apart_from_the_scalar_settings_and_hold_hashes_only() {
        let (auth, users) = auth_and_users(&acl_config());
        assert!(auth.contains("masteruser redisha-operator\n"), "{auth}");
        assert!(auth.contains("masterauth operator-pw\n"), "{auth}");
        assert!(!auth.lines().any(|l| l.starts_with("user ")), "{auth}");
        assert!(!auth.contains("requirepass"), "default is off: {auth}");
        // The operator, the metrics exporters' user, `default` (off) and the declared one.
        assert_eq!(users.lines().count(), 4, "{users}");
        assert!(users.contains("user redisha-exporter #"), "{users}");
        assert!(users.lines().all(|l| l.starts_with("user ")), "{users}");
        for secret in ["cluster-pw", "reader-pw", "operator-pw"] {
            assert!(!users.contains(secret), "{users}");
        }
        assert!(acl_in_use(&acl_config()));
        assert!(!acl_in_use(&NodeConfig::default()));
        // What user data and Run Commands may carry has neither.
        let shared = without_secrets(&acl_config()).render_shared_lines();
        for secret in ["cluster-pw", "operator-pw", "\nuser ", "masterauth"] {
            assert!(!shared.contains(secret), "{shared}");
        }
    }

    /// Runs a setup fragment for real under `root` (its `/etc/redisha` moved there) for
    /// nodes 6379 and 6380; returns `root`'s path, to strip from what it wrote.
    fn run_under(root: &tempfile::TempDir, text: &str) -> String {
        let r = root.path().display().to_string();
        let script = format!(
            "set -eu\nPORTS=\"6379 6380\"\nBUS_OFFSET=10000\n{}",
            text.replace("/etc/redisha", &format!("{r}/etc/redisha"))
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("sh");
        assert!(out.status.success(), "{out:?}\n{script}");
        r
    }

    /// What the cluster code renders as node `port`'s TLS lines, with the aws file paths.
    fn rendered_lines(tls: &TlsConfig, port: u16) -> String {
        let pem = node_pem_file(port);
        tls.redis_conf_lines(
            port,
            &TlsFiles {
                ca_cert: Path::new(CA_FILE),
                cert: Path::new(&pem),
                key: Path::new(&pem),
            },
        )
    }

    #[test]
    fn mid_rotation_a_node_logs_in_with_the_old_password_until_every_node_accepts_the_new() {
        let mut config = acl_config();
        config.acl.operator_password = Some(Password::new("new-op-pw"));
        config.acl.operator_password_retiring = Some(Password::new("old-op-pw"));
        let hashes = |users: &str| {
            users
                .lines()
                .find(|l| l.starts_with("user redisha-operator "))
                .map(|l| l.matches(" #").count())
        };
        let (before, users_before) = auth_and_users(&config.for_next_start(false));
        assert!(before.contains("masterauth old-op-pw\n"), "{before}");
        let (after, users_after) = auth_and_users(&config.for_next_start(true));
        assert!(after.contains("masterauth new-op-pw\n"), "{after}");
        // Both passwords accepted by a node set up at either step.
        assert_eq!(hashes(&users_before), Some(2), "{users_before}");
        assert_eq!(hashes(&users_after), Some(2), "{users_after}");
        // The exporters likewise: the old one until the new is accepted.
        let exporter = |c: &NodeConfig| c.acl.exporter_login(c.password.as_ref()).1;
        assert_eq!(
            exporter(&config.for_next_start(false)),
            exporter(&NodeConfig {
                acl: AclConfig {
                    operator_password: Some(Password::new("old-op-pw")),
                    ..config.acl.clone()
                },
                ..config.clone()
            })
        );
        assert_eq!(exporter(&config.for_next_start(true)), exporter(&config));
        // No rotation: as it is.
        assert_eq!(acl_config().for_next_start(false), acl_config());
    }

    #[test]
    fn the_setup_lists_its_parameters_and_writes_each_nodes_tls_lines_without_secrets() {
        let names = Names::new("shop", "0123456789abcdef");
        let authority = CertAuthority::generate("0123456789abcdef").expect("authority");
        let tls = TlsConfig {
            mode: TlsMode::Required,
            source: CertSource::Generated(authority.clone()),
        };
        let text = setup_fragment(&SetupSecrets {
            names: &names,
            host: "us-east-1a-1",
            acl: true,
            tls: Some(&tls),
        });
        assert!(!text.contains("BEGIN"), "no key or certificate: {text}");
        assert!(!text.contains(&names.authority()), "{text}");
        // Run for real (in a scratch root): the list and each node's lines are what the
        // cluster code renders for that port.
        let root = tempfile::tempdir().expect("temp dir");
        let r = run_under(&root, &text);
        // Twice: nothing listed twice.
        run_under(&root, &text);
        let list = std::fs::read_to_string(format!("{r}{SECRET_LIST}"))
            .expect("list")
            .replace(&r, "");
        assert_eq!(
            list,
            "/redisha/shop/0123456789abcdef/node/auth /etc/redisha/auth.conf\n\
             /redisha/shop/0123456789abcdef/node/users /etc/redisha/users.conf\n\
             /redisha/shop/0123456789abcdef/node/exporter /etc/redisha/exporter-password\n\
             /redisha/shop/0123456789abcdef/node/tls-ca /etc/redisha/tls/ca.crt\n\
             /redisha/shop/0123456789abcdef/node/tls/us-east-1a-1/6379 /etc/redisha/tls/node-6379.pem wait\n\
             /redisha/shop/0123456789abcdef/node/tls/us-east-1a-1/6380 /etc/redisha/tls/node-6380.pem wait\n"
        );
        for port in [6379u16, 6380] {
            let got = std::fs::read_to_string(format!("{r}/etc/redisha/tls-{port}.conf"))
                .expect("the node's TLS lines")
                .replace(&r, "");
            assert_eq!(got, rendered_lines(&tls, port));
        }
        // Neither ACL nor TLS: nothing to list, as before.
        let none = setup_fragment(&SetupSecrets {
            names: &names,
            host: "h",
            acl: false,
            tls: None,
        });
        assert!(none.is_empty());
        crate::user_data::assert_valid_shell(
            &format!(
                "#!/bin/sh\nset -eu\nPORTS=1\nBUS_OFFSET=1\n{text}{}",
                remove_fragment(6379)
            ),
            "the security fragments",
        );
    }

    /// A running node of a cluster that declared its first user: the instance lists the ACL
    /// parameters once, and the node's exporter unit gains its user and restarts, once.
    #[test]
    fn a_node_set_up_without_acl_adopts_it_once() {
        let names = Names::new("shop", "0123456789abcdef");
        let root = tempfile::tempdir().expect("temp dir");
        let r = root.path().display().to_string();
        let units = format!("{r}/etc/systemd/system");
        std::fs::create_dir_all(&units).expect("units dir");
        let unit = format!("{units}/redisha-exporter-6379.service");
        let exec = "ExecStart=/usr/bin/prometheus-redis-exporter -redis.addr=redis://10.0.0.5:6379 -redis.password-file=/etc/redisha-exporter/password.json -redis-only-metrics";
        std::fs::write(&unit, format!("[Service]\n{exec}\n")).expect("unit");
        // systemctl records what it is asked.
        let bin = format!("{r}/bin");
        std::fs::create_dir_all(&bin).expect("bin");
        let fake = format!("{bin}/systemctl");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\necho \"$*\" >> {r}/systemctl.log\n"),
        )
        .expect("fake systemctl");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let text = acl_adopt_fragment(&names, 6379);
        crate::user_data::assert_valid_shell(
            &format!("#!/bin/sh\nset -eu\n{text}"),
            "the ACL adoption fragment",
        );
        let script = format!(
            "set -eu\nPATH=\"{bin}:$PATH\"\n{}",
            text.replace("/etc/", &format!("{r}/etc/"))
        );
        for _ in 0..2 {
            let out = std::process::Command::new("sh")
                .args(["-c", &script])
                .output()
                .expect("sh");
            assert!(out.status.success(), "{out:?}");
        }
        let list = std::fs::read_to_string(format!("{r}{SECRET_LIST}"))
            .expect("list")
            .replace(&r, "");
        assert_eq!(
            list,
            "/redisha/shop/0123456789abcdef/node/auth /etc/redisha/auth.conf\n\
             /redisha/shop/0123456789abcdef/node/users /etc/redisha/users.conf\n\
             /redisha/shop/0123456789abcdef/node/exporter /etc/redisha/exporter-password\n"
        );
        let got = std::fs::read_to_string(&unit).expect("unit");
        assert_eq!(
            got,
            format!(
                "[Service]\n{}\n",
                exec.replace(
                    " -redis-only-metrics",
                    " -redis.user=redisha-exporter -redis-only-metrics"
                )
            )
        );
        let calls = std::fs::read_to_string(format!("{r}/systemctl.log")).expect("calls");
        assert_eq!(calls, "daemon-reload\nrestart redisha-exporter-6379\n");
    }

    /// Each mode's lines, filled in per node by the setup's shell, are exactly what the
    /// cluster code renders for that node: `preferred` listens in plain text on port + 1000,
    /// `required` on no plain-text port.
    #[test]
    fn the_setup_writes_each_modes_port_lines() {
        let names = Names::new("shop", "0123456789abcdef");
        let authority = CertAuthority::generate("0123456789abcdef").expect("authority");
        for (mode, plain) in [(TlsMode::Preferred, "7380"), (TlsMode::Required, "0")] {
            let tls = TlsConfig {
                mode,
                source: CertSource::Generated(authority.clone()),
            };
            let text = setup_fragment(&SetupSecrets {
                names: &names,
                host: "h",
                acl: false,
                tls: Some(&tls),
            });
            let root = tempfile::tempdir().expect("temp dir");
            let r = run_under(&root, &text);
            let got = std::fs::read_to_string(format!("{r}/etc/redisha/tls-6380.conf"))
                .expect("the node's TLS lines")
                .replace(&r, "");
            assert_eq!(got, rendered_lines(&tls, 6380), "{mode}");
            assert!(
                got.starts_with(&format!("port {plain}\ntls-port 6380\n")),
                "{mode}: {got}"
            );
        }
    }
}
