//! TLS for clients, replication and the cluster bus: the per-cluster certificate authority,
//! the per-node certificates it issues (the node's address in the SAN), the redis.conf lines
//! that turn TLS on, and what a client needs to verify the nodes.
//!
//! Ports: a node's port (the one the driver gives it, the one the cluster announces and every
//! client and the operator connect to) is the TLS port whenever TLS is on, in both modes, and
//! the cluster bus is 10000 above it (`cluster-port`, set explicitly: with `port 0` the engine
//! would otherwise derive it from the plain port). `preferred` keeps a plain-text port too, at
//! the node's port + [`PLAINTEXT_PORT_OFFSET`]; `required` closes it (`port 0`). Since neither
//! the announced port nor the bus port differs between the modes, a switch between them is a
//! rolling restart that nodes of both modes survive side by side.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::driver::quote_conf;
use crate::secret::Password;

/// How far above a node's (TLS) port its plain-text port is in `preferred` mode.
pub const PLAINTEXT_PORT_OFFSET: u16 = 1000;

/// How long an issued node certificate is valid.
pub const NODE_CERT_DAYS: u32 = 365;

/// A node certificate with fewer days left than this is reissued at the node's next start or
/// config write.
pub const REISSUE_BEFORE_DAYS: u32 = 30;

/// How long a generated certificate authority is valid.
pub const CA_DAYS: u32 = 3650;

/// `preferred`: TLS and plain text both accepted; `required`: TLS only (ElastiCache's
/// transit encryption modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    Preferred,
    Required,
}

impl TlsMode {
    pub fn parse(text: &str) -> Option<TlsMode> {
        match text {
            "preferred" => Some(TlsMode::Preferred),
            "required" => Some(TlsMode::Required),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            TlsMode::Preferred => "preferred",
            TlsMode::Required => "required",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot make a certificate: {0}")]
    Generate(String),
    #[error("tls: the certificate authority's key is not a PEM private key redisha can use: {0}")]
    BadKey(String),
    #[error("tls: the certificate authority's certificate is not PEM")]
    BadCert,
    #[error("tls: the supplied certificate cannot be used: {0}")]
    Supplied(String),
}

/// The certificate authority that issues the node certificates. Its key is a secret (Debug
/// shows no key material); nodes only ever get its certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct CertAuthority {
    cert_pem: String,
    key_pem: Password,
    /// The subject common name: certificates it issues name it as their issuer.
    common_name: String,
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuthority")
            .field("common_name", &self.common_name)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// The common name of cluster `cluster_id`'s generated authority.
pub fn ca_common_name(cluster_id: &str) -> String {
    format!("redisha CA {cluster_id}")
}

impl CertAuthority {
    fn params(common_name: &str, days: u32) -> Result<CertificateParams, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "redisha");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(i64::from(days));
        Ok(params)
    }

    /// A new authority for cluster `cluster_id` (ECDSA P-256, valid [`CA_DAYS`]).
    pub fn generate(cluster_id: &str) -> Result<CertAuthority, TlsError> {
        let common_name = ca_common_name(cluster_id);
        let key = KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
        let cert = Self::params(&common_name, CA_DAYS)?
            .self_signed(&key)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(CertAuthority {
            cert_pem: cert.pem(),
            key_pem: Password::new(key.serialize_pem()),
            common_name,
        })
    }

    /// An authority generated earlier for `cluster_id`, from its certificate and key.
    pub fn from_pem(
        cluster_id: &str,
        cert_pem: &str,
        key_pem: Password,
    ) -> Result<CertAuthority, TlsError> {
        KeyPair::from_pem(key_pem.expose()).map_err(|e| TlsError::BadKey(e.to_string()))?;
        if !cert_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(TlsError::BadCert);
        }
        Ok(CertAuthority {
            cert_pem: cert_pem.to_string(),
            key_pem,
            common_name: ca_common_name(cluster_id),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The key, for the one place that must keep it (Terraform state, as a sensitive value).
    pub fn key_pem(&self) -> &Password {
        &self.key_pem
    }

    /// SHA-256 of the certificate, hex: tells which authority issued a node's certificate.
    pub fn fingerprint(&self) -> String {
        hex(&Sha256::digest(self.cert_pem.as_bytes()))
    }

    /// A certificate for a node at `address` (an IP address or a DNS name, in the SAN), good
    /// as server and as client (replication and the cluster bus connect with it).
    pub fn issue(&self, address: &str, days: u32) -> Result<NodeCert, TlsError> {
        let g = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let ca_key = KeyPair::from_pem(self.key_pem.expose())
            .map_err(|e| TlsError::BadKey(e.to_string()))?;
        // The issuer is identified by its name and key: an authority rebuilt from the same
        // name and key signs exactly as the original (same issuer name, same key identifier).
        let ca = Self::params(&self.common_name, CA_DAYS)?
            .self_signed(&ca_key)
            .map_err(g)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(g)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "redisha");
        dn.push(DnType::CommonName, address);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![match address.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(address.try_into().map_err(g)?),
        }];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        let not_after = now + time::Duration::days(i64::from(days));
        params.not_after = not_after;
        let key = KeyPair::generate().map_err(g)?;
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(g)?;
        Ok(NodeCert {
            cert_pem: cert.pem(),
            key_pem: Password::new(key.serialize_pem()),
            info: NodeCertInfo {
                address: address.to_string(),
                ca_fingerprint: self.fingerprint(),
                not_after_unix: not_after.unix_timestamp(),
            },
        })
    }
}

/// A node's certificate and key, and what redisha records about it.
#[derive(Clone)]
pub struct NodeCert {
    pub cert_pem: String,
    pub key_pem: Password,
    pub info: NodeCertInfo,
}

/// What redisha records beside a node certificate: whether it still fits (same address, same
/// authority) and when it expires, without parsing it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCertInfo {
    pub address: String,
    /// The fingerprint of the authority that issued it, or of the supplied certificate
    /// (`CertSource::fingerprint`).
    pub ca_fingerprint: String,
    pub not_after_unix: i64,
}

impl NodeCertInfo {
    /// Whole days until the certificate expires (negative once expired).
    pub fn days_left(&self) -> i64 {
        (self.not_after_unix - crate::identity::unix_now() as i64).div_euclid(86_400)
    }

    /// The expiry as an RFC 3339 UTC time (`2027-11-26T06:10:00Z`).
    pub fn not_after_rfc3339(&self) -> String {
        rfc3339(self.not_after_unix)
    }

    /// Whether a node at `address` whose certificates come from `source` keeps this
    /// certificate: an issued one while it names the address, comes from the same authority
    /// and has [`REISSUE_BEFORE_DAYS`] left; a supplied one while it is the one supplied
    /// (redisha cannot renew it: the plan warns instead) and was given to the node at this
    /// address (a node at a new address, as on a replaced aws instance, gets it again once
    /// the certificate is checked against that address).
    pub fn still_fits(&self, address: &str, source: &CertSource) -> bool {
        match source {
            CertSource::Generated(ca) => {
                self.address == address
                    && self.ca_fingerprint == ca.fingerprint()
                    && self.days_left() >= i64::from(REISSUE_BEFORE_DAYS)
            }
            CertSource::Supplied(s) => {
                self.address == address && self.ca_fingerprint == s.fingerprint()
            }
        }
    }
}

/// Where the nodes' certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// The cluster's own authority issues each node a certificate naming its address.
    Generated(CertAuthority),
    /// The user's certificate, presented by every node (`tls { cert_pem, ... }`).
    Supplied(crate::tls_supplied::SuppliedCert),
}

impl CertSource {
    /// What clients verify the nodes with (PEM).
    pub fn ca_cert_pem(&self) -> &str {
        match self {
            CertSource::Generated(a) => a.cert_pem(),
            CertSource::Supplied(s) => &s.ca_cert_pem,
        }
    }

    /// What a node's certificate record names as where it came from: the authority's
    /// fingerprint, or the supplied certificate's.
    pub fn fingerprint(&self) -> String {
        match self {
            CertSource::Generated(a) => a.fingerprint(),
            CertSource::Supplied(s) => s.fingerprint(),
        }
    }

    /// The certificate and key of a node at `address`: issued now, or the supplied one.
    pub fn node_cert(&self, address: &str) -> Result<NodeCert, TlsError> {
        match self {
            CertSource::Generated(a) => a.issue(address, NODE_CERT_DAYS),
            CertSource::Supplied(s) => {
                let info = s
                    .check(&[], crate::identity::unix_now())
                    .map_err(|e| TlsError::Supplied(e.to_string()))?;
                Ok(NodeCert {
                    cert_pem: s.cert_pem.clone(),
                    key_pem: s.key_pem.clone(),
                    info: NodeCertInfo {
                        address: address.to_string(),
                        ca_fingerprint: s.fingerprint(),
                        not_after_unix: info.not_after_unix,
                    },
                })
            }
        }
    }
}

/// TLS on a cluster's nodes: the mode and where their certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub mode: TlsMode,
    pub source: CertSource,
}

/// Where a node's TLS files are.
pub struct TlsFiles<'a> {
    pub ca_cert: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl TlsConfig {
    /// The node's port lines (`port`, `tls-port`, `cluster-port`) and TLS settings, for a node
    /// whose announced port is `port`.
    pub fn redis_conf_lines(&self, port: u16, files: &TlsFiles<'_>) -> String {
        let plain = match self.mode {
            TlsMode::Required => 0,
            TlsMode::Preferred => self.plaintext_port(port).unwrap_or(0),
        };
        let path = |p: &Path| quote_conf(&p.to_string_lossy());
        format!(
            "port {plain}\n\
             tls-port {port}\n\
             cluster-port {bus}\n\
             tls-cert-file {cert}\n\
             tls-key-file {key}\n\
             tls-ca-cert-file {ca}\n\
             tls-auth-clients optional\n\
             tls-replication yes\n\
             tls-cluster yes\n",
            bus = u32::from(port) + 10000,
            cert = path(files.cert),
            key = path(files.key),
            ca = path(files.ca_cert),
        )
    }

    /// The plain-text port of a node at `port` in `preferred` mode (`None` if out of range).
    pub fn plaintext_port(&self, port: u16) -> Option<u16> {
        port.checked_add(PLAINTEXT_PORT_OFFSET)
    }

    /// What a client needs to verify the nodes.
    pub fn client(&self) -> ClientTls {
        ClientTls {
            ca_cert_pem: self.source.ca_cert_pem().to_string(),
        }
    }
}

/// What a client needs to speak TLS to the nodes: the authority's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub ca_cert_pem: String,
}

/// Whether the server binary was built with TLS: started with a TLS port, a TLS build stops
/// at once complaining about its TLS settings, one without refuses the directive (Redis 6.2)
/// or says it has no TLS (Valkey). It never listens: the probe's certificate files do not
/// exist.
pub fn server_has_tls(binary: &Path) -> Result<bool, String> {
    let missing = std::env::temp_dir().join("redisha-tls-probe-missing");
    let mut child = std::process::Command::new(binary)
        .args([
            "--port",
            "0",
            "--tls-port",
            "1",
            "--save",
            "",
            "--tls-cert-file",
        ])
        .arg(missing.join("c.crt"))
        .arg("--tls-key-file")
        .arg(missing.join("c.key"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                // Our own child: ended by its handle.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not stop when probed for TLS",
                    binary.display()
                ));
            }
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("cannot read {}'s output: {e}", binary.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(text.contains("Failed to configure TLS") || text.contains("tls-ca-cert-file"))
}

/// A Unix time as RFC 3339 UTC (`2027-11-26T06:10:00Z`; empty if out of range).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authority_rebuilt_from_its_pem_issues_what_the_original_would() {
        let ca = CertAuthority::generate("0123456789abcdef").unwrap();
        let again =
            CertAuthority::from_pem("0123456789abcdef", ca.cert_pem(), ca.key_pem().clone())
                .unwrap();
        assert_eq!(ca, again);
        let node = again.issue("127.0.220.1", 20).unwrap();
        assert!(node.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(node.key_pem.expose().contains("PRIVATE KEY"));
        assert_eq!(node.info.ca_fingerprint, ca.fingerprint());
        assert!((19..=20).contains(&node.info.days_left()));
        // Too close to expiry to keep; another address or authority does not fit either.
        let source = CertSource::Generated(ca.clone());
        assert!(!node.info.still_fits("127.0.220.1", &source));
        let long = ca.issue("127.0.220.1", NODE_CERT_DAYS).unwrap();
        assert!(long.info.still_fits("127.0.220.1", &source));
        assert!(!long.info.still_fits("127.0.220.2", &source));
        let other = CertSource::Generated(CertAuthority::generate("fedcba9876543210").unwrap());
        assert!(!long.info.still_fits("127.0.220.1", &other));
    }

    #[test]
    fn debug_shows_no_key() {
        let ca = CertAuthority::generate("0123456789abcdef").unwrap();
        let key_body: String = ca
            .key_pem()
            .expose()
            .lines()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        assert!(!format!("{ca:?}").contains(&key_body));
        assert!(
            CertAuthority::from_pem("0123456789abcdef", ca.cert_pem(), Password::new("x")).is_err()
        );
    }

    #[test]
    fn required_closes_the_plain_port_and_both_modes_keep_the_bus_port() {
        let ca = CertAuthority::generate("0123456789abcdef").unwrap();
        let files = TlsFiles {
            ca_cert: Path::new("/d/ca.crt"),
            cert: Path::new("/d/n.crt"),
            key: Path::new("/d/n.key"),
        };
        let required = TlsConfig {
            mode: TlsMode::Required,
            source: CertSource::Generated(ca.clone()),
        }
        .redis_conf_lines(9700, &files);
        assert!(required.contains("port 0\ntls-port 9700\ncluster-port 19700\n"));
        let preferred = TlsConfig {
            mode: TlsMode::Preferred,
            source: CertSource::Generated(ca),
        }
        .redis_conf_lines(9700, &files);
        assert!(preferred.contains("port 10700\ntls-port 9700\ncluster-port 19700\n"));
        for line in [
            "tls-cluster yes",
            "tls-replication yes",
            "tls-key-file /d/n.key",
        ] {
            assert!(
                preferred.contains(line) && required.contains(line),
                "{line}"
            );
        }
    }
}
