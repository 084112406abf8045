//! `operator_password_generation` of `redisha_cluster`: a number whose change rotates the
//! password of the user redisha works as (`redisha-operator`), which redisha generates and
//! keeps itself. Why a number: see docs/security.md, "Rotating the operator user's password".

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::model::AllKnown;

use super::args::DriverArgs;
use super::drivers::BuiltDriver;
use super::model::ClusterModel;

const ATTR: &str = "operator_password_generation";

/// The configured generation (`None`: not set); refused with the aws driver, which keeps no
/// operator password yet.
pub(super) fn decode(
    m: &ClusterModel,
    driver: Option<&DriverArgs>,
    diags: &mut Diagnostics,
    k: &mut AllKnown,
) -> Option<u64> {
    let generation = k.take(&m.operator_password_generation);
    if generation.is_some() && matches!(driver, Some(DriverArgs::Aws(_))) {
        diags.push(
            Diagnostic::error(
                "operator_password_generation needs the local driver for now",
                "operator_password_generation: rotating the operator user's password is not built for the aws driver yet (its password lives in SSM and the nodes' setup reads it at start); remove the setting, or use the local driver.",
            )
            .at(AttrPath::attr(ATTR)),
        );
    }
    generation
}

fn diagnostic(what: &str, e: impl std::fmt::Display) -> Diagnostics {
    Diagnostic::error(what, format!("{ATTR}: {e}"))
        .at(AttrPath::attr(ATTR))
        .into()
}

impl BuiltDriver {
    /// A create: the new cluster's operator password is of the configured generation, so
    /// it is not rotated until the number changes.
    pub fn record_operator_generation(&self, generation: Option<u64>) -> Result<(), Diagnostics> {
        match (self, generation) {
            (BuiltDriver::Local(d), Some(g)) => d
                .record_operator_generation(g)
                .map_err(|e| diagnostic("Cannot record the operator password's generation", e)),
            _ => Ok(()),
        }
    }

    /// An update: finds a rotation of the operator user's password under way, or starts one
    /// when `generation` is not the kept password's (the apply's ACL phase carries it out).
    pub fn prepare_operator_rotation(
        &mut self,
        generation: Option<u64>,
    ) -> Result<(), Diagnostics> {
        match self {
            BuiltDriver::Local(d) => d
                .prepare_operator_rotation(generation)
                .map_err(|e| diagnostic("Cannot rotate the operator user's password", e)),
            BuiltDriver::Aws(_) => Ok(()),
        }
    }
}
