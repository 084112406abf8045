//! The operator user's password in the cluster directory, `<data_dir>/<cluster id>/`, mode
//! 0600, beside the TLS authority's key and for the same reason: a create killed after its
//! first node started never returns a state, so a secret kept only in Terraform's state could
//! be lost while nodes already require it; beside the cluster record it is found again by the
//! cluster id.
//!
//! A rotation (`operator_password_generation` changed) keeps the new password beside the
//! current one (`operator-password-next`) until every node accepts it and replication uses
//! it; only then does it replace the current one. So the files always hold a password every
//! node accepts, and a rotation cut short is finished with the same new password. Which
//! generation the current password is, is kept beside it (`operator-password-generation`;
//! none: 0).

use std::io::Write;
use std::path::Path;

use super::write_private_file;
use crate::driver::DriverError;
use crate::secret::Password;

pub const OPERATOR_PASSWORD_FILE: &str = "operator-password";
/// The new password while a rotation is under way.
pub const NEXT_PASSWORD_FILE: &str = "operator-password-next";
/// The generation of the password in [`OPERATOR_PASSWORD_FILE`].
pub const GENERATION_FILE: &str = "operator-password-generation";

fn read_password(path: &Path) -> Option<Password> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| Password::new(text))
}

/// The password kept in the cluster directory `dir`, if there is one.
pub(super) fn read(dir: &Path) -> Option<Password> {
    read_password(&dir.join(OPERATOR_PASSWORD_FILE))
}

/// The new password of a rotation under way, if there is one.
pub(super) fn read_next(dir: &Path) -> Option<Password> {
    read_password(&dir.join(NEXT_PASSWORD_FILE))
}

/// The generation of the current password (0 when none was recorded: a cluster made before
/// generations, or without one configured).
pub(super) fn generation(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(GENERATION_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn io_error(cluster_id: &str, context: String) -> impl FnOnce(std::io::Error) -> DriverError {
    let node = cluster_id.to_string();
    move |source| DriverError::Io {
        node,
        context,
        source,
    }
}

fn write(dir: &Path, file: &str, cluster_id: &str, text: &str) -> Result<(), DriverError> {
    let path = dir.join(file);
    write_private_file(&path, &path.with_extension("tmp"), |f| {
        f.write_all(text.as_bytes())
    })
    .map_err(io_error(
        cluster_id,
        format!("cannot write {}", path.display()),
    ))
}

/// Makes a new password and keeps it in `dir` as `file`.
fn make(dir: &Path, file: &str, cluster_id: &str, what: &str) -> Result<Password, DriverError> {
    let password = crate::acl::generate_password()
        .map_err(io_error(cluster_id, "cannot read /dev/urandom".into()))?;
    write(dir, file, cluster_id, password.expose())?;
    tracing::info!(cluster_id, "{what}");
    Ok(password)
}

/// Makes a new password and keeps it in `dir`.
pub(super) fn write_new(dir: &Path, cluster_id: &str) -> Result<Password, DriverError> {
    make(
        dir,
        OPERATOR_PASSWORD_FILE,
        cluster_id,
        "operator user password made",
    )
}

/// Records that the current password is of `generation`.
pub(super) fn write_generation(
    dir: &Path,
    cluster_id: &str,
    generation: u64,
) -> Result<(), DriverError> {
    write(dir, GENERATION_FILE, cluster_id, &generation.to_string())
}

/// Starts a rotation: a new password kept beside the current one.
pub(super) fn start_rotation(dir: &Path, cluster_id: &str) -> Result<Password, DriverError> {
    make(
        dir,
        NEXT_PASSWORD_FILE,
        cluster_id,
        "operator user password rotation started",
    )
}

/// Ends a rotation: the new password (`next`) becomes the current one, of `generation` when
/// given. Each step can be repeated: a rotation cut short between them is found with
/// `read_next` equal to `read` and finished by calling this again.
pub(super) fn keep_next(
    dir: &Path,
    cluster_id: &str,
    next: &Password,
    generation: Option<u64>,
) -> Result<(), DriverError> {
    write(dir, OPERATOR_PASSWORD_FILE, cluster_id, next.expose())?;
    if let Some(g) = generation {
        write_generation(dir, cluster_id, g)?;
    }
    let path = dir.join(NEXT_PASSWORD_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(
            cluster_id,
            format!("cannot remove {}", path.display()),
        )(e)),
        _ => {
            tracing::info!(cluster_id, "operator user password rotated");
            Ok(())
        }
    }
}

/// Removes them with the cluster (destroy, once no node is left).
pub(super) fn remove(dir: &Path) {
    for file in [OPERATOR_PASSWORD_FILE, NEXT_PASSWORD_FILE, GENERATION_FILE] {
        let _ = std::fs::remove_file(dir.join(file));
        let _ = std::fs::remove_file(dir.join(file).with_extension("tmp"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_cut_short_anywhere_leaves_a_password_and_finishes_with_the_same_new_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let first = write_new(d, "c1").expect("make");
        assert_eq!(generation(d), 0);
        let next = start_rotation(d, "c1").expect("start");
        assert_ne!(next, first);
        // Mid-rotation both are kept.
        assert_eq!(read(d), Some(first.clone()));
        assert_eq!(read_next(d), Some(next.clone()));
        // Cut short after the switch but before the next file went: found again as equal.
        write(d, OPERATOR_PASSWORD_FILE, "c1", next.expose()).expect("switch");
        assert_eq!(read(d), read_next(d));
        keep_next(d, "c1", &next, Some(2)).expect("keep");
        assert_eq!(read(d), Some(next));
        assert_eq!(read_next(d), None);
        assert_eq!(generation(d), 2);
        remove(d);
        assert_eq!(std::fs::read_dir(d).expect("dir").count(), 0);
    }
}
