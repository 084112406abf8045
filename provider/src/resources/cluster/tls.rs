//! The `tls { }` block of `redisha_cluster`: its mode as the driver takes it, the changes a
//! plan accepts (`preferred` <-> `required` in place; TLS on or off only with a new cluster),
//! and the `tls_ca_cert_pem` attribute clients verify the nodes with.

use redisha_cluster::tls::TlsMode;

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::model::AllKnown;
use crate::tfplugin::framework::Attr;

use super::args::DriverArgs;
use super::drivers::BuiltDriver;
use super::model::{ClusterModel, TlsModel};

fn at() -> AttrPath {
    AttrPath::attr("tls")
}

/// The mode the `tls` block asks for (`None`: no block, plain text).
pub(super) fn decode(
    block: &Attr<TlsModel>,
    driver: Option<&DriverArgs>,
    diags: &mut Diagnostics,
    k: &mut AllKnown,
) -> Option<TlsMode> {
    let block = match block {
        Attr::Unknown => {
            k.0 = false;
            return None;
        }
        Attr::Null => return None,
        Attr::Known(b) => b,
    };
    if matches!(driver, Some(DriverArgs::Aws(_))) {
        diags.push(
            Diagnostic::error(
                "tls needs the local driver for now",
                "tls: the aws driver does not set up TLS on its instances yet; remove the tls block, or use the local driver.",
            )
            .at(at()),
        );
    }
    let mode = k.take(&block.mode)?;
    let parsed = TlsMode::parse(&mode);
    if parsed.is_none() {
        diags.push(
            Diagnostic::error(
                "Invalid TLS mode",
                format!("tls.mode: {mode:?} is not a mode; choose \"preferred\" (TLS and plain text both accepted) or \"required\" (TLS only)"),
            )
            .at(at().then("mode")),
        );
    }
    parsed
}

/// The TLS mode a state was applied with.
pub(super) fn applied_mode(state: &ClusterModel) -> Option<TlsMode> {
    match &state.tls {
        Attr::Known(b) => b.mode.value().and_then(|m| TlsMode::parse(m)),
        _ => None,
    }
}

/// A plan's verdict on a TLS change of an existing cluster: a warning naming the rolling
/// restart for a change of mode, an error for TLS turned on or off (every node's announced
/// port and the cluster bus would change protocol at once).
pub(super) fn plan_change(
    prior: Option<TlsMode>,
    wanted: Option<TlsMode>,
) -> Result<Diagnostics, Diagnostics> {
    match (prior, wanted) {
        (Some(a), Some(b)) if a != b => Ok(Diagnostic::warning(
            format!("Apply switches TLS from {a} to {b}"),
            format!("every node restarts in {b} mode, one shard copy at a time: replicas first, then each master after a coordinated failover (clients on TLS keep every shard; {})", match b {
                TlsMode::Required => "plain-text clients are refused from then on",
                TlsMode::Preferred => "plain-text clients are accepted again on each node's port + 1000",
            }),
        )
        .at(at().then("mode"))
        .into()),
        (None, Some(_)) | (Some(_), None) => Err(Diagnostic::error(
            "TLS cannot be turned on or off in place",
            "tls: the nodes' announced ports and the cluster bus would all change protocol at once. Create a new cluster with the tls block (for example with restore_from a backup of this one), or put the block back as it was.",
        )
        .at(at())
        .into()),
        _ => Ok(Diagnostics::new()),
    }
}

/// `tls_ca_cert_pem` as known now: the authority the driver loaded, or unknown until apply
/// makes it; null without TLS.
pub(super) fn ca_cert_value(driver: &BuiltDriver, tls_on: bool) -> Attr<String> {
    if !tls_on {
        return Attr::Null;
    }
    match driver.tls_ca_cert() {
        Some(pem) => Attr::Known(pem),
        None => Attr::Unknown,
    }
}

/// How an endpoint is written: `rediss://host:port` where TLS is on, else `host:port`.
pub(super) fn endpoint(address: String, tls_on: bool) -> String {
    if tls_on {
        format!("rediss://{address}")
    } else {
        address
    }
}

/// `model` with its endpoints written as its `tls` block says.
pub(super) fn with_endpoints(mut model: ClusterModel) -> ClusterModel {
    let tls_on = matches!(model.tls, Attr::Known(_));
    if let Attr::Known(list) = &mut model.endpoints {
        for e in list.iter_mut() {
            let bare = e.strip_prefix("rediss://").unwrap_or(e).to_string();
            *e = endpoint(bare, tls_on);
        }
    }
    model
}

/// What a plan says about the node certificates: the days left on the one that expires first,
/// and, when some are due, that apply reissues them in a rolling restart.
pub(super) fn plan_certs(
    op: &redisha_cluster::Operator<'_>,
    state: &redisha_cluster::ClusterState,
) -> Diagnostics {
    let Some((node, info)) = op.earliest_cert_expiry(state) else {
        return Diagnostics::new();
    };
    let days = info.days_left();
    let due = op.certs_due(state);
    if due.is_empty() {
        return Diagnostics::new();
    }
    let names: Vec<&str> = due.iter().map(String::as_str).collect();
    Diagnostic::warning(
        format!("Node certificates expire in {days} days (first: {node})"),
        format!(
            "apply reissues the certificates of {} node(s) with fewer than {} days left and restarts them onto the new ones, replicas first: {}",
            due.len(),
            redisha_cluster::tls::REISSUE_BEFORE_DAYS,
            names.join(", ")
        ),
    )
    .at(at())
    .into()
}

/// `tls_cert_expiry` as the certificates on the nodes say now; unknown when apply will
/// reissue some (`rotating`) or none is readable yet; null without TLS.
pub(super) fn cert_expiry_value(
    op: &redisha_cluster::Operator<'_>,
    state: &redisha_cluster::ClusterState,
    tls_on: bool,
    rotating: bool,
) -> Attr<String> {
    if !tls_on {
        return Attr::Null;
    }
    match op.earliest_cert_expiry(state) {
        Some((_, info)) if !rotating => Attr::Known(info.not_after_rfc3339()),
        _ => Attr::Unknown,
    }
}
