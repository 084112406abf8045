//! go-plugin's AutoMTLS: Terraform passes its client certificate in PLUGIN_CLIENT_CERT and
//! trusts exactly the self-signed certificate we print in the handshake line.
//!
//! Terraform's client certificate is ECDSA P-521 with CA:TRUE, which webpki rejects as an
//! end-entity certificate and ring cannot verify, so the verifier pins it instead: the
//! presented certificate must be byte-for-byte the one Terraform announced, and its handshake
//! signature is checked with the certificate's key (P-521 with RustCrypto's `p521`, anything
//! else with ring). ring rather than aws-lc-rs keeps start-up fast: aws-lc's first key
//! generation costs ~70-100 ms, paid by every provider process Terraform starts.

use std::sync::Arc;

use p521::ecdsa::signature::Verifier;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use x509_cert::der::Decode;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("PLUGIN_CLIENT_CERT holds no PEM certificate")]
    NoClientCert,
    #[error("reading PLUGIN_CLIENT_CERT: {0}")]
    Pem(#[from] std::io::Error),
    #[error("parsing PLUGIN_CLIENT_CERT: {0}")]
    Der(String),
    #[error("generating the server certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server side of AutoMTLS: the rustls config and our certificate (DER) for the handshake.
pub struct AutoMtls {
    pub config: Arc<ServerConfig>,
    pub server_cert_der: Vec<u8>,
}

struct PinnedClientCert {
    expected: CertificateDer<'static>,
    /// The pinned certificate's key when it is P-521 (Terraform's case).
    p521_key: Option<p521::ecdsa::VerifyingKey>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for PinnedClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedClientCert")
            .field("p521", &self.p521_key.is_some())
            .finish_non_exhaustive()
    }
}

impl PinnedClientCert {
    /// A handshake signature by the pinned certificate: P-521 with `p521`, anything else with
    /// rustls' `verify` (the TLS 1.2 or 1.3 rules).
    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        verify: fn(
            &[u8],
            &CertificateDer<'_>,
            &DigitallySignedStruct,
            &rustls::crypto::WebPkiSupportedAlgorithms,
        ) -> Result<HandshakeSignatureValid, rustls::Error>,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_pinned(cert)?;
        if dss.scheme == SignatureScheme::ECDSA_NISTP521_SHA512 {
            return self.verify_p521(message, dss);
        }
        verify(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn new(
        expected: CertificateDer<'static>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let cert = x509_cert::Certificate::from_der(expected.as_ref())
            .map_err(|e| TlsError::Der(e.to_string()))?;
        let spki = &cert.tbs_certificate.subject_public_key_info;
        let p521_key = spki
            .subject_public_key
            .as_bytes()
            .and_then(|point| p521::ecdsa::VerifyingKey::from_sec1_bytes(point).ok());
        Ok(PinnedClientCert {
            expected,
            p521_key,
            provider,
        })
    }

    fn check_pinned(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if cert.as_ref() == self.expected.as_ref() {
            Ok(())
        } else {
            Err(rustls::Error::General(
                "client certificate is not the one Terraform announced in PLUGIN_CLIENT_CERT"
                    .into(),
            ))
        }
    }

    fn verify_p521(
        &self,
        message: &[u8],
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let key = self
            .p521_key
            .as_ref()
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature,
            ))?;
        let sig = p521::ecdsa::Signature::from_der(dss.signature()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        })?;
        key.verify(message, &sig)
            .map(|()| HandshakeSignatureValid::assertion())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))
    }
}

impl ClientCertVerifier for PinnedClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_pinned(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss, verify_tls12_signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss, verify_tls13_signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let mut schemes = self
            .provider
            .signature_verification_algorithms
            .supported_schemes();
        if self.p521_key.is_some() {
            schemes.push(SignatureScheme::ECDSA_NISTP521_SHA512);
        }
        schemes
    }
}

impl AutoMtls {
    /// `client_cert_pem`: the value of PLUGIN_CLIENT_CERT; `organization` names the provider
    /// in our certificate.
    pub fn new(client_cert_pem: &str, organization: &str) -> Result<Self, TlsError> {
        let expected = rustls_pemfile::certs(&mut client_cert_pem.as_bytes())
            .next()
            .ok_or(TlsError::NoClientCert)??;

        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, organization);
        // Terraform puts this one certificate in its root pool: it must be usable as a CA too.
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
            rcgen::KeyUsagePurpose::KeyCertSign,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().to_vec();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinnedClientCert::new(expected, provider.clone())?);
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(AutoMtls {
            config: Arc::new(config),
            server_cert_der: cert_der,
        })
    }
}
