//! Certificates the user brings (`tls { ca_cert_pem, cert_pem, key_pem }`): one certificate
//! (a multi-SAN or wildcard one from the team's own PKI) that every node presents, its key,
//! and the authority bundle that verifies it. redisha never issues anything from it; it checks
//! it before any node uses it, with the same verifier (rustls/webpki) its own connections use,
//! so a certificate accepted here is one the nodes and redisha's clients accept:
//! - every piece parses as PEM, and the key is the certificate's;
//! - the certificate chains to `ca_cert_pem` and is valid now;
//! - it names every node address (IP or DNS SAN), since clients verify the address;
//! - it may be used as a client certificate too: nodes present it to each other on the
//!   cluster bus and for replication, where the peer checks it as a client certificate.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use x509_cert::der::Decode;

use crate::secret::Password;

/// Which of the three PEM values a problem is in (the provider turns it into an attribute
/// path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppliedField {
    CaCert,
    Cert,
    Key,
}

#[derive(Debug, thiserror::Error)]
pub enum SuppliedCertError {
    #[error("{0}")]
    Invalid(String, SuppliedField),
}

impl SuppliedCertError {
    fn at(field: SuppliedField, text: impl Into<String>) -> Self {
        SuppliedCertError::Invalid(text.into(), field)
    }

    pub fn field(&self) -> SuppliedField {
        match self {
            SuppliedCertError::Invalid(_, f) => *f,
        }
    }
}

/// The user's certificate, key and authority bundle. The key is a secret: `Debug` shows
/// only the fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct SuppliedCert {
    /// The authority (PEM, one or more certificates: a bundle may carry an old and a new
    /// authority while one replaces the other).
    pub ca_cert_pem: String,
    /// The node certificate, optionally followed by intermediates.
    pub cert_pem: String,
    pub key_pem: Password,
}

impl fmt::Debug for SuppliedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SuppliedCert")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// What a check found out about a supplied certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppliedInfo {
    pub not_after_unix: i64,
}

fn certs(
    pem: &str,
    field: SuppliedField,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, SuppliedCertError> {
    let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match parsed {
        Ok(list) if !list.is_empty() => Ok(list),
        Ok(_) => Err(SuppliedCertError::at(
            field,
            format!("{what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        )),
        Err(e) => Err(SuppliedCertError::at(
            field,
            format!("{what} is not PEM redisha can read: {e}"),
        )),
    }
}

impl SuppliedCert {
    /// SHA-256 over the certificate and the authority bundle, hex: what a node records
    /// beside its copy, so that a changed certificate or bundle restarts it onto the new one.
    /// The key is not hashed: it belongs to the certificate.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.cert_pem.as_bytes());
        h.update([0u8]);
        h.update(self.ca_cert_pem.as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Every check above, for nodes at `addresses` (IP addresses or DNS names, without
    /// port), at `now_unix`. An address the certificate does not name is an error naming the
    /// first such address and the names the certificate has.
    pub fn check(
        &self,
        addresses: &[String],
        now_unix: u64,
    ) -> Result<SuppliedInfo, SuppliedCertError> {
        let (info, unnamed) = self.verify(addresses, now_unix)?;
        if let Some(address) = unnamed.first() {
            return Err(SuppliedCertError::at(
                SuppliedField::Cert,
                format!(
                    "tls.cert_pem does not name node address {address} in its subject alternative names ({}); every node presents this one certificate, so it must name every node's address",
                    self.subject_alt_names().join(", ")
                ),
            ));
        }
        Ok(info)
    }

    /// The addresses among `addresses` the certificate does not name (in their order), after
    /// every other check of [`SuppliedCert::check`], which are errors as there: for a driver
    /// that learns the node addresses only once its machines run (aws) and names all that
    /// are missing at once.
    pub fn unnamed_addresses(
        &self,
        addresses: &[String],
        now_unix: u64,
    ) -> Result<Vec<String>, SuppliedCertError> {
        self.verify(addresses, now_unix).map(|(_, unnamed)| unnamed)
    }

    /// The certificate's subject alternative names (DNS names and IP addresses), for
    /// messages; `["none"]` when it has none or cannot be read.
    pub fn subject_alt_names(&self) -> Vec<String> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .and_then(|der| x509_cert::Certificate::from_der(&der).ok())
            .map_or_else(|| vec!["none".to_string()], |leaf| names(&leaf))
    }

    /// The checks; the addresses not named are returned rather than refused.
    fn verify(
        &self,
        addresses: &[String],
        now_unix: u64,
    ) -> Result<(SuppliedInfo, Vec<String>), SuppliedCertError> {
        use SuppliedField::*;
        let roots = certs(&self.ca_cert_pem, CaCert, "tls.ca_cert_pem")?;
        let chain = certs(&self.cert_pem, Cert, "tls.cert_pem")?;
        // Never echo the key's parser errors: they could quote the key.
        let key =
            PrivateKeyDer::from_pem_slice(self.key_pem.expose().as_bytes()).map_err(|_| {
                SuppliedCertError::at(
                    Key,
                    "tls.key_pem is not a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)",
                )
            })?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
            SuppliedCertError::at(
                Key,
                "tls.key_pem is a key type redisha cannot use (use RSA, ECDSA P-256/P-384 or Ed25519)",
            )
        })?;
        rustls::sign::CertifiedKey::new(chain.clone(), signer)
            .keys_match()
            .map_err(|_| {
                SuppliedCertError::at(
                    Key,
                    "tls.key_pem is not the key of the first certificate in tls.cert_pem",
                )
            })?;
        let leaf = x509_cert::Certificate::from_der(&chain[0]).map_err(|e| {
            SuppliedCertError::at(
                Cert,
                format!("tls.cert_pem's first certificate cannot be read: {e}"),
            )
        })?;
        let not_after = leaf
            .tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs() as i64;

        let mut store = rustls::RootCertStore::empty();
        for (i, root) in roots.iter().enumerate() {
            store.add(root.clone()).map_err(|e| {
                SuppliedCertError::at(
                    CaCert,
                    format!(
                        "tls.ca_cert_pem: certificate {} is not a usable authority: {e}",
                        i + 1
                    ),
                )
            })?;
        }
        let store = Arc::new(store);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_unix));
        let intermediates = &chain[1..];

        // As a client certificate first: this also proves the chain and the validity period,
        // so an error here names the real problem before any address is checked.
        let as_client =
            WebPkiClientVerifier::builder_with_provider(store.clone(), provider.clone())
                .build()
                .map_err(|e| SuppliedCertError::at(CaCert, format!("tls.ca_cert_pem: {e}")))?;
        as_client
            .verify_client_cert(&chain[0], intermediates, now)
            .map_err(|e| chain_error(e, true))?;
        let as_server = WebPkiServerVerifier::builder_with_provider(store, provider)
            .build()
            .map_err(|e| SuppliedCertError::at(CaCert, format!("tls.ca_cert_pem: {e}")))?;
        let mut unnamed = Vec::new();
        for address in addresses {
            let name = ServerName::try_from(address.clone()).map_err(|_| {
                SuppliedCertError::at(
                    Cert,
                    format!("{address} is not an address a certificate can name"),
                )
            })?;
            match as_server.verify_server_cert(&chain[0], intermediates, &name, &[], now) {
                Ok(_) => {}
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                )) => unnamed.push(address.clone()),
                Err(other) => return Err(chain_error(other, false)),
            }
        }
        Ok((
            SuppliedInfo {
                not_after_unix: not_after,
            },
            unnamed,
        ))
    }
}

/// A verifier's refusal in the user's words.
fn chain_error(e: rustls::Error, as_client: bool) -> SuppliedCertError {
    use rustls::CertificateError as C;
    use SuppliedField::*;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            SuppliedCertError::at(
                Cert,
                "tls.cert_pem was not issued by (a certificate in) tls.ca_cert_pem; put the issuing authority in ca_cert_pem, and any intermediates after the node certificate in cert_pem",
            )
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            SuppliedCertError::at(Cert, "tls.cert_pem has expired")
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            SuppliedCertError::at(Cert, "tls.cert_pem is not valid yet")
        }
        rustls::Error::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => {
            SuppliedCertError::at(
                Cert,
                if as_client {
                    "tls.cert_pem cannot be used as a client certificate: nodes present it to each other on the cluster bus and for replication, so its extended key usage must allow clientAuth as well as serverAuth (or name no extended key usage)"
                } else {
                    "tls.cert_pem cannot be used as a server certificate: its extended key usage must allow serverAuth"
                },
            )
        }
        other => SuppliedCertError::at(Cert, format!("tls.cert_pem is refused: {other}")),
    }
}

/// The subject alternative names of `cert`, for messages.
fn names(cert: &x509_cert::Certificate) -> Vec<String> {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let mut out = Vec::new();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id != <SubjectAltName as x509_cert::der::oid::AssociatedOid>::OID {
            continue;
        }
        let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
            continue;
        };
        for name in san.0 {
            match name {
                GeneralName::DnsName(d) => out.push(d.to_string()),
                GeneralName::IpAddress(ip) => {
                    let b = ip.as_bytes();
                    if let Ok(v4) = <[u8; 4]>::try_from(b) {
                        out.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
                        out.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if out.is_empty() {
        out.push("none".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    };

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca() -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        Ca {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    fn leaf(ca: &Ca, ips: &[&str], eku: Vec<ExtendedKeyUsagePurpose>) -> (String, String) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = ips
            .iter()
            .map(|ip| SanType::IpAddress(ip.parse().unwrap()))
            .collect();
        p.extended_key_usages = eku;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(365);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn both() -> Vec<ExtendedKeyUsagePurpose> {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    }

    fn supplied(ca: &Ca, cert: &str, key: &str) -> SuppliedCert {
        SuppliedCert {
            ca_cert_pem: ca.cert.pem(),
            cert_pem: cert.to_string(),
            key_pem: Password::new(key),
        }
    }

    fn now() -> u64 {
        crate::identity::unix_now()
    }

    fn addrs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_certificate_naming_every_node_from_the_given_authority_is_accepted() {
        let ca = ca();
        let (cert, key) = leaf(&ca, &["127.0.240.1", "127.0.240.2"], both());
        let info = supplied(&ca, &cert, &key)
            .check(&addrs(&["127.0.240.1", "127.0.240.2"]), now())
            .unwrap();
        assert!(info.not_after_unix > now() as i64);
    }

    #[test]
    fn each_problem_is_named_at_its_field() {
        let ca = ca();
        let (cert, key) = leaf(&ca, &["127.0.240.1"], both());
        let nodes = addrs(&["127.0.240.1", "127.0.240.2"]);
        let e = supplied(&ca, &cert, &key).check(&nodes, now()).unwrap_err();
        assert_eq!(e.field(), SuppliedField::Cert);
        assert!(e.to_string().contains("127.0.240.2"), "{e}");
        assert!(
            e.to_string().contains("127.0.240.1"),
            "names what it has: {e}"
        );

        let (_, other_key) = leaf(&ca, &["127.0.240.1"], both());
        let e = supplied(&ca, &cert, &other_key)
            .check(&nodes[..1], now())
            .unwrap_err();
        assert_eq!(e.field(), SuppliedField::Key);

        let stranger = self::ca();
        let e = supplied(&stranger, &cert, &key)
            .check(&nodes[..1], now())
            .unwrap_err();
        assert_eq!(e.field(), SuppliedField::Cert);
        assert!(e.to_string().contains("not issued by"), "{e}");

        let (server_only, server_key) = leaf(
            &ca,
            &["127.0.240.1"],
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        );
        let e = supplied(&ca, &server_only, &server_key)
            .check(&nodes[..1], now())
            .unwrap_err();
        assert!(e.to_string().contains("clientAuth"), "{e}");

        let in_two_years = now() + 2 * 366 * 86_400;
        let e = supplied(&ca, &cert, &key)
            .check(&nodes[..1], in_two_years)
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");

        let mut broken = supplied(&ca, &cert, &key);
        broken.ca_cert_pem = "not a certificate".into();
        assert_eq!(
            broken.check(&nodes[..1], now()).unwrap_err().field(),
            SuppliedField::CaCert
        );
    }

    #[test]
    fn every_address_the_certificate_does_not_name_is_listed_and_other_problems_stay_errors() {
        let ca = ca();
        let (cert, key) = leaf(&ca, &["127.0.240.1", "127.0.240.3"], both());
        let nodes = addrs(&["127.0.240.1", "127.0.240.2", "127.0.240.3", "127.0.240.4"]);
        let s = supplied(&ca, &cert, &key);
        assert_eq!(
            s.unnamed_addresses(&nodes, now()).unwrap(),
            addrs(&["127.0.240.2", "127.0.240.4"])
        );
        assert!(s.unnamed_addresses(&nodes[..1], now()).unwrap().is_empty());
        assert_eq!(
            s.subject_alt_names(),
            addrs(&["127.0.240.1", "127.0.240.3"])
        );
        // Expired: an error, not a list.
        let in_two_years = now() + 2 * 366 * 86_400;
        assert!(s.unnamed_addresses(&nodes, in_two_years).is_err());
    }

    #[test]
    fn no_error_or_debug_text_carries_the_key() {
        let ca = ca();
        let (cert, key) = leaf(&ca, &["127.0.240.1"], both());
        let body = key.lines().nth(1).unwrap().to_string();
        let mut garbled = supplied(&ca, &cert, &key);
        garbled.key_pem = Password::new(key.replace(&body[..8], "!!!!!!!!"));
        let e = garbled.check(&addrs(&["127.0.240.1"]), now()).unwrap_err();
        assert!(!e.to_string().contains(&body[8..20]));
        assert!(!format!("{:?}", supplied(&ca, &cert, &key)).contains(&body));
    }

    #[test]
    fn the_fingerprint_follows_the_certificate_and_the_bundle() {
        let ca = ca();
        let (cert, key) = leaf(&ca, &["127.0.240.1"], both());
        let a = supplied(&ca, &cert, &key);
        let mut b = a.clone();
        b.ca_cert_pem.push_str(&ca.cert.pem());
        assert_ne!(a.fingerprint(), b.fingerprint());
        let (cert2, _) = leaf(&ca, &["127.0.240.1"], both());
        assert_ne!(a.fingerprint(), supplied(&ca, &cert2, &key).fingerprint());
    }
}
