//! The local driver's TLS files in each node directory: the authority's certificate, the
//! node's certificate and key (all mode 0600, like the config file), and what redisha records
//! about the certificate (`tls-node.json`: address, authority, expiry), which decides whether
//! a start keeps the certificate or issues a new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{read_json, write_private_file, LocalDriver};
use crate::driver::{DriverError, NodeHandle};
use crate::secret::Password;
use crate::tls::{CertAuthority, NodeCertInfo, TlsConfig, TlsFiles};

pub const TLS_CA_FILE: &str = "tls-ca.crt";
pub const TLS_CERT_FILE: &str = "tls-node.crt";
pub const TLS_KEY_FILE: &str = "tls-node.key";
pub const TLS_INFO_FILE: &str = "tls-node.json";
/// The cluster's authority, in `<data_dir>/<cluster id>/` (see docs/ARCHITECTURE.md, "Where
/// the TLS keys live").
pub const AUTHORITY_CERT_FILE: &str = "tls-authority.crt";
pub const AUTHORITY_KEY_FILE: &str = "tls-authority.key";

/// The authority kept in the cluster directory `dir`, if there is one.
pub(super) fn read_authority(
    dir: &Path,
    cluster_id: &str,
) -> Result<Option<CertAuthority>, DriverError> {
    let (Ok(cert), Ok(key)) = (
        std::fs::read_to_string(dir.join(AUTHORITY_CERT_FILE)),
        std::fs::read_to_string(dir.join(AUTHORITY_KEY_FILE)),
    ) else {
        return Ok(None);
    };
    Ok(Some(CertAuthority::from_pem(
        cluster_id,
        &cert,
        Password::new(key),
    )?))
}

/// Makes the cluster's authority and keeps it in the cluster directory `dir`: the key first,
/// mode 0600, so that a certificate on disk always has its key.
pub(super) fn write_authority(dir: &Path, cluster_id: &str) -> Result<CertAuthority, DriverError> {
    let authority = CertAuthority::generate(cluster_id)?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        write_private_file(&path, &path.with_extension("tmp"), |f| f.write_all(bytes)).map_err(
            |source| DriverError::Io {
                node: cluster_id.to_string(),
                context: format!("cannot write {}", path.display()),
                source,
            },
        )
    };
    write(AUTHORITY_KEY_FILE, authority.key_pem().expose().as_bytes())?;
    write(AUTHORITY_CERT_FILE, authority.cert_pem().as_bytes())?;
    tracing::info!(cluster_id, "certificate authority made");
    Ok(authority)
}

/// Removes the authority with the cluster (destroy, once no node is left).
pub(super) fn remove_authority(dir: &Path) {
    for name in [AUTHORITY_KEY_FILE, AUTHORITY_CERT_FILE] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// The paths of a node directory's TLS files.
pub struct NodeTlsPaths {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub info: PathBuf,
}

impl NodeTlsPaths {
    pub fn in_dir(dir: &Path) -> Self {
        NodeTlsPaths {
            ca_cert: dir.join(TLS_CA_FILE),
            cert: dir.join(TLS_CERT_FILE),
            key: dir.join(TLS_KEY_FILE),
            info: dir.join(TLS_INFO_FILE),
        }
    }

    pub fn files(&self) -> TlsFiles<'_> {
        TlsFiles {
            ca_cert: &self.ca_cert,
            cert: &self.cert,
            key: &self.key,
        }
    }
}

/// What redisha recorded about the certificate of the node in `dir`, if it has one.
pub fn node_cert_info(dir: &Path) -> Option<NodeCertInfo> {
    read_json(&NodeTlsPaths::in_dir(dir).info)
}

impl LocalDriver {
    /// Writes the node's TLS files: the authority's certificate always, and the node's own
    /// certificate and key when it has none, or, with `at_start` (the node is about to start
    /// and load them), when those on disk no longer fit (another address or authority, or
    /// close to expiry). A running node's certificate is never replaced under it: the
    /// rotation restarts it. Returns whether a new certificate was issued.
    pub(super) fn write_tls_files(
        &self,
        node: &NodeHandle,
        dir: &Path,
        tls: &TlsConfig,
        at_start: bool,
    ) -> Result<bool, DriverError> {
        let paths = NodeTlsPaths::in_dir(dir);
        let write = |path: &Path, bytes: &[u8]| {
            let tmp = path.with_extension("tmp");
            write_private_file(path, &tmp, |f| f.write_all(bytes)).map_err(|source| {
                DriverError::Io {
                    node: node.name.clone(),
                    context: format!("cannot write {}", path.display()),
                    source,
                }
            })
        };
        write(&paths.ca_cert, tls.source.ca_cert_pem().as_bytes())?;
        let info = read_json::<NodeCertInfo>(&paths.info);
        let present = paths.cert.is_file() && paths.key.is_file() && info.is_some();
        let fits = info.is_some_and(|i| i.still_fits(&node.ip, &tls.source));
        if present && (fits || !at_start) {
            return Ok(false);
        }
        let cert = tls.source.node_cert(&node.ip)?;
        // The key first: a certificate on disk always has its key beside it.
        write(&paths.key, cert.key_pem.expose().as_bytes())?;
        write(&paths.cert, cert.cert_pem.as_bytes())?;
        let info = serde_json::to_vec_pretty(&cert.info)
            .map_err(|e| DriverError::Other(format!("cannot encode a record: {e}")))?;
        write(&paths.info, &info)?;
        tracing::info!(node = %node.name, days = cert.info.days_left(), "node certificate written");
        Ok(true)
    }
}
