//! `operator_password_generation` of `redisha_cluster`: a number whose change rotates the
//! password of the user redisha works as (`redisha-operator`), which redisha generates and
//! keeps itself. Why a number: see docs/security.md, "Rotating the operator user's password".

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::model::AllKnown;

use super::drivers::BuiltDriver;
use super::model::ClusterModel;

const ATTR: &str = "operator_password_generation";

/// The configured generation (`None`: not set).
pub(super) fn decode(m: &ClusterModel, k: &mut AllKnown) -> Option<u64> {
    k.take(&m.operator_password_generation)
}

fn diagnostic(what: &str, e: impl std::fmt::Display) -> Diagnostics {
    Diagnostic::error(what, format!("{ATTR}: {e}"))
        .at(AttrPath::attr(ATTR))
        .into()
}

impl BuiltDriver {
    /// A create (or the apply that made the operator password of a cluster made without it):
    /// the new password is of the configured generation, so it is not rotated until the
    /// number changes.
    pub async fn record_operator_generation(
        &self,
        generation: Option<u64>,
    ) -> Result<(), Diagnostics> {
        let Some(g) = generation else {
            return Ok(());
        };
        let recorded = match self {
            BuiltDriver::Local(d) => d.record_operator_generation(g).map_err(|e| e.to_string()),
            BuiltDriver::Aws(d) => d
                .record_operator_generation(g)
                .await
                .map_err(|e| e.to_string()),
        };
        recorded.map_err(|e| diagnostic("Cannot record the operator password's generation", e))
    }

    /// An update: finds a rotation of the operator user's password under way, or starts one
    /// when `generation` is not the kept password's (the apply's ACL phase carries it out).
    pub async fn prepare_operator_rotation(
        &mut self,
        generation: Option<u64>,
    ) -> Result<(), Diagnostics> {
        let prepared = match self {
            BuiltDriver::Local(d) => d
                .prepare_operator_rotation(generation)
                .map_err(|e| e.to_string()),
            BuiltDriver::Aws(d) => d
                .prepare_operator_rotation(generation)
                .await
                .map_err(|e| e.to_string()),
        };
        prepared.map_err(|e| diagnostic("Cannot rotate the operator user's password", e))
    }
}
