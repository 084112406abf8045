//! The operator user's password in the cluster directory, `<data_dir>/<cluster id>/`, mode
//! 0600, beside the TLS authority's key and for the same reason: a create killed after its
//! first node started never returns a state, so a secret kept only in Terraform's state could
//! be lost while nodes already require it; beside the cluster record it is found again by the
//! cluster id.

use std::io::Write;
use std::path::Path;

use super::write_private_file;
use crate::driver::DriverError;
use crate::secret::Password;

pub const OPERATOR_PASSWORD_FILE: &str = "operator-password";

/// The password kept in the cluster directory `dir`, if there is one.
pub(super) fn read(dir: &Path) -> Option<Password> {
    let text = std::fs::read_to_string(dir.join(OPERATOR_PASSWORD_FILE)).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| Password::new(text))
}

/// Makes a new password and keeps it in `dir`.
pub(super) fn write_new(dir: &Path, cluster_id: &str) -> Result<Password, DriverError> {
    let io = |context: String| {
        move |source| DriverError::Io {
            node: cluster_id.to_string(),
            context,
            source,
        }
    };
    let password =
        crate::acl::generate_password().map_err(io("cannot read /dev/urandom".into()))?;
    let path = dir.join(OPERATOR_PASSWORD_FILE);
    write_private_file(&path, &path.with_extension("tmp"), |f| {
        f.write_all(password.expose().as_bytes())
    })
    .map_err(io(format!("cannot write {}", path.display())))?;
    tracing::info!(cluster_id, "operator user password made");
    Ok(password)
}

/// Removes it with the cluster (destroy, once no node is left).
pub(super) fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(OPERATOR_PASSWORD_FILE));
}
