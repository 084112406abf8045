//! The `tls { }` block of `redisha_cluster`: its mode as the driver takes it, the changes a
//! plan accepts (`preferred` <-> `required` in place; TLS on or off only with a new cluster),
//! the user's own certificate (`ca_cert_pem`, `cert_pem`, `key_pem`) and its checks against
//! the planned nodes (on aws against the addresses known at plan; the instances' private
//! addresses of new instances are checked by the driver once they run, before any node
//! starts), and the `tls_ca_cert_pem` attribute clients verify the nodes with.

use redisha_cluster::tls::TlsMode;
use redisha_cluster::tls_supplied::{SuppliedCert, SuppliedCertError, SuppliedField};

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::model::AllKnown;
use crate::tfplugin::framework::Attr;

use super::drivers::BuiltDriver;
use super::model::{ClusterModel, NodeValue, TlsModel};

fn at() -> AttrPath {
    AttrPath::attr("tls")
}

/// The mode the `tls` block asks for (`None`: no block, plain text).
pub(super) fn decode(
    block: &Attr<TlsModel>,
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

/// The user's certificate when the `tls` block supplies one (`ca_cert_pem`, `cert_pem` and
/// `key_pem`, all three or none), checked as far as it can be without the node addresses.
pub(super) fn decode_supplied(
    block: &Attr<TlsModel>,
    diags: &mut Diagnostics,
    k: &mut AllKnown,
) -> Option<SuppliedCert> {
    let Attr::Known(block) = block else {
        return None;
    };
    let fields = [
        ("ca_cert_pem", &block.ca_cert_pem),
        ("cert_pem", &block.cert_pem),
        ("key_pem", &block.key_pem),
    ];
    if fields.iter().all(|(_, a)| a.is_null()) {
        return None;
    }
    let missing: Vec<&str> = fields
        .iter()
        .filter(|(_, a)| a.is_null())
        .map(|(n, _)| *n)
        .collect();
    for name in &missing {
        diags.push(
            Diagnostic::error(
                "Incomplete supplied certificate",
                format!("tls.{name}: ca_cert_pem, cert_pem and key_pem go together: set all three to have the nodes present your certificate, or none to have redisha make a certificate authority for the cluster"),
            )
            .at(at().then(name)),
        );
    }
    let (ca, cert, key) = (
        k.take(&block.ca_cert_pem),
        k.take(&block.cert_pem),
        k.take(&block.key_pem),
    );
    let supplied = SuppliedCert {
        ca_cert_pem: ca?,
        cert_pem: cert?,
        key_pem: redisha_cluster::secret::Password::new(key?),
    };
    if let Err(e) = supplied.check(&[], redisha_cluster::identity::unix_now()) {
        diags.push(supplied_error("Unusable TLS certificate", &e));
        return None;
    }
    Some(supplied)
}

fn supplied_error(summary: &str, e: &SuppliedCertError) -> Diagnostic {
    let field = match e.field() {
        SuppliedField::CaCert => "ca_cert_pem",
        SuppliedField::Cert => "cert_pem",
        SuppliedField::Key => "key_pem",
    };
    Diagnostic::error(summary, e.to_string()).at(at().then(field))
}

/// The certificate a state was applied with, if the user supplied one.
fn applied_supplied(state: &ClusterModel) -> Option<SuppliedCert> {
    let mut diags = Diagnostics::new();
    decode_supplied(&state.tls, &mut diags, &mut AllKnown::default())
}

/// The plan's checks of a supplied certificate against the nodes it will serve: it names
/// every planned address; it expires in more than 30 days (else a warning: redisha cannot
/// renew it); a switch between generated and supplied certificates is refused; and a new
/// certificate or bundle is accepted only if nodes on both sides of the rolling restart
/// accept each other (the new bundle verifies the old certificate, the old bundle the new).
/// On aws (`aws`) the addresses of nodes on instances yet to be launched are unknown: a
/// warning says the certificate must name them, and that apply checks it before any node
/// starts on them.
pub(super) fn check_supplied(
    wanted: Option<&SuppliedCert>,
    prior: Option<&ClusterModel>,
    nodes: &Attr<Vec<NodeValue>>,
    aws: bool,
) -> Result<Diagnostics, Diagnostics> {
    let prior_tls = prior.filter(|p| matches!(p.tls, Attr::Known(_)));
    let prior_cert = prior_tls.and_then(applied_supplied);
    if let Some(p) = prior_tls {
        if wanted.is_some() != prior_cert.is_some() && applied_mode(p).is_some() {
            return Err(Diagnostic::error(
                "Certificates cannot switch between generated and supplied in place",
                "tls: the nodes trust only the authority their certificates come from, so during a rolling restart the nodes on the new certificates and those on the old ones would refuse each other. Create a new cluster (for example with restore_from a backup of this one), or put ca_cert_pem, cert_pem and key_pem back as they were.",
            )
            .at(at())
            .into());
        }
    }
    let Some(cert) = wanted else {
        return Ok(Diagnostics::new());
    };
    let addresses: Vec<String> = match nodes {
        Attr::Known(list) => list
            .iter()
            .filter_map(|n| n.address.value())
            .map(|a| {
                a.rsplit_once(':')
                    .map_or(a.as_str(), |(h, _)| h)
                    .to_string()
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    let unknown_addresses = match nodes {
        Attr::Known(list) => list.iter().any(|n| n.address.value().is_none()),
        _ => true,
    };
    let mut said = Diagnostics::new();
    if aws && unknown_addresses {
        said.push(
            Diagnostic::warning(
                "The certificate must name every instance's private address",
                "tls.cert_pem: every node presents this one certificate, and clients verify it against the node's address, which on aws is its instance's private address, known only once the instance runs. Issue it with the private address of every instance as an IP subject alternative name (for example by giving the subnets' address ranges to your PKI, or reserving the addresses). Apply checks it once the instances run, before any node starts on them: a certificate missing an address fails the apply naming the addresses, starts no node, and the next apply with a certificate that names them resumes on the same instances.",
            )
            .at(at().then("cert_pem")),
        );
    }
    let now = redisha_cluster::identity::unix_now();
    let info = cert
        .check(&addresses, now)
        .map_err(|e| Diagnostics::from(supplied_error("Unusable TLS certificate", &e)))?;
    if let Some(old) = prior_cert.filter(|old| old != cert) {
        let old_on_new = SuppliedCert {
            ca_cert_pem: cert.ca_cert_pem.clone(),
            ..old.clone()
        };
        let new_on_old = SuppliedCert {
            ca_cert_pem: old.ca_cert_pem.clone(),
            ..cert.clone()
        };
        let refused = |which: &str, e: SuppliedCertError, field: &str| {
            Diagnostics::from(
                Diagnostic::error(
                    "The new certificate cannot be rolled out node by node",
                    format!("tls.{field}: during the rolling restart, nodes already on the new settings and nodes still on the old ones must accept each other, but {which} ({e}). Change in steps: first add the new authority to ca_cert_pem beside the old one, apply; then change cert_pem and key_pem, apply; then remove the old authority, apply."),
                )
                .at(at().then(field)),
            )
        };
        old_on_new.check(&addresses, now).map_err(|e| {
            refused(
                "the new ca_cert_pem does not verify the certificate the nodes have now",
                e,
                "ca_cert_pem",
            )
        })?;
        new_on_old.check(&addresses, now).map_err(|e| {
            refused(
                "the ca_cert_pem the nodes have now does not verify the new certificate",
                e,
                "cert_pem",
            )
        })?;
    }
    let days = (info.not_after_unix - now as i64).div_euclid(86_400);
    if days < i64::from(redisha_cluster::tls::REISSUE_BEFORE_DAYS) {
        said.push(Diagnostic::warning(
            format!("The supplied TLS certificate expires in {days} days"),
            format!(
                "tls.cert_pem expires at {}; redisha cannot renew a certificate it did not issue: put a renewed one in cert_pem and key_pem (apply restarts the nodes onto it, replicas first)",
                redisha_cluster::tls::rfc3339(info.not_after_unix)
            ),
        )
        .at(at().then("cert_pem")));
    }
    Ok(said)
}

/// The TLS mode a state was applied with.
pub(super) fn applied_mode(state: &ClusterModel) -> Option<TlsMode> {
    match &state.tls {
        Attr::Known(b) => b.mode.value().and_then(|m| TlsMode::parse(m)),
        _ => None,
    }
}

/// A plan's verdict on a TLS change of an existing cluster: a warning naming the rolling
/// restart for a change of mode (on aws, also what happens to the security group's
/// plain-text port rules), an error for TLS turned on or off (every node's announced port and
/// the cluster bus would change protocol at once).
pub(super) fn plan_change(
    prior: Option<TlsMode>,
    wanted: Option<TlsMode>,
    aws: bool,
) -> Result<Diagnostics, Diagnostics> {
    match (prior, wanted) {
        (Some(a), Some(b)) if a != b => {
            let clients = match b {
                TlsMode::Required => "plain-text clients are refused from then on",
                TlsMode::Preferred => {
                    "plain-text clients are accepted again on each node's port + 1000"
                }
            };
            let group = match (aws, b) {
                (false, _) => "",
                (true, TlsMode::Required) => "; the security group's plain-text port rules (port + 1000) are revoked once every node has restarted",
                (true, TlsMode::Preferred) => "; the security group opens the plain-text ports (port + 1000) to the client ports' sources before the first restart",
            };
            Ok(Diagnostic::warning(
                format!("Apply switches TLS from {a} to {b}"),
                format!("every node restarts in {b} mode, one shard copy at a time: replicas first, then each master after a coordinated failover (clients on TLS keep every shard; {clients}){group}"),
            )
            .at(at().then("mode"))
            .into())
        }
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
    supplied: bool,
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
    if supplied {
        return Diagnostic::warning(
            format!("Apply restarts {} node(s) onto the new certificate", due.len()),
            format!(
                "tls.cert_pem or tls.ca_cert_pem changed: the nodes load them at start, so apply restarts them one shard copy at a time, replicas first: {}",
                names.join(", ")
            ),
        )
        .at(at())
        .into();
    }
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

/// `tls_cert_expiry`: a supplied certificate's own expiry (known at plan); else as the
/// certificates on the nodes say now, unknown when apply will reissue some (`rotating`) or
/// none is readable yet; null without TLS.
pub(super) fn cert_expiry_value(
    op: &redisha_cluster::Operator<'_>,
    state: &redisha_cluster::ClusterState,
    tls_on: bool,
    supplied: Option<&SuppliedCert>,
    rotating: bool,
) -> Attr<String> {
    if !tls_on {
        return Attr::Null;
    }
    if let Some(cert) = supplied {
        return match cert.check(&[], redisha_cluster::identity::unix_now()) {
            Ok(info) => Attr::Known(redisha_cluster::tls::rfc3339(info.not_after_unix)),
            Err(_) => Attr::Unknown,
        };
    }
    match op.earliest_cert_expiry(state) {
        Some((_, info)) if !rotating => Attr::Known(info.not_after_rfc3339()),
        _ => Attr::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// The error paths of a `redisha_cluster` with an `aws` block, a password and `tls`
    /// (PEM values as given), as plan and apply decode it; and its supplied certificate.
    fn aws_cluster(
        mode: &str,
        pems: Option<(&str, &str, &str)>,
    ) -> (Vec<AttrPath>, Option<SuppliedCert>) {
        use crate::tfplugin::framework::model::Model;
        use crate::tfplugin::value::Value;
        let s = |v: &str| Value::String(v.into());
        let pem = |v: Option<&str>| v.map_or(Value::Null, s);
        let n = |v: i64| Value::Number(crate::tfplugin::value::Number::Int(v));
        let config = Value::object([
            ("name", s("shop")),
            ("password", s("a-cluster-password")),
            ("shards", n(3)),
            ("replicas", n(1)),
            ("node_memory_mb", n(512)),
            (
                "aws",
                Value::object([
                    ("subnet_ids", Value::List(vec![s("subnet-1")])),
                    ("instance_type", s("t3.small")),
                    ("ami", s("ami-1")),
                ]),
            ),
            (
                "tls",
                Value::object([
                    ("mode", s(mode)),
                    ("ca_cert_pem", pem(pems.map(|p| p.0))),
                    ("cert_pem", pem(pems.map(|p| p.1))),
                    ("key_pem", pem(pems.map(|p| p.2))),
                ]),
            ),
        ]);
        let mut diags = Diagnostics::new();
        let model = ClusterModel::decode_fields(&config, &AttrPath::root(), &mut diags);
        assert!(!diags.has_errors(), "{diags:?}");
        match super::super::args::ClusterArgs::from_model(&model) {
            Ok(args) => {
                let args = args.expect("known");
                assert!(
                    matches!(args.driver, super::super::args::DriverArgs::Aws(_)),
                    "the aws driver"
                );
                (Vec::new(), args.tls_cert)
            }
            Err(diags) => (
                diags
                    .iter()
                    .filter(|d| d.severity == crate::tfplugin::diagnostics::Severity::Error)
                    .filter_map(|d| d.path.clone())
                    .collect(),
                None,
            ),
        }
    }

    /// A CA and a certificate it issued for `ips` (serverAuth and clientAuth), with its key.
    fn issued(ips: &[&str]) -> (String, String, String) {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
        leaf.subject_alt_names = ips
            .iter()
            .map(|ip| SanType::IpAddress(ip.parse().expect("ip")))
            .collect();
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).expect("leaf");
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    fn node(address: Attr<String>) -> NodeValue {
        NodeValue {
            id: Attr::Unknown,
            name: Attr::Known("n".into()),
            address,
            role: Attr::Known("master".into()),
            planned_role: Attr::Known("master".into()),
            status: Attr::Known("up".into()),
            shard: Attr::Known(0),
            zone: Attr::Known("z".into()),
            host: Attr::Known("h".into()),
            slots: Attr::Known(Vec::new()),
        }
    }

    #[test]
    fn aws_takes_both_modes_and_supplied_certificates_and_warns_at_cert_pem() {
        for mode in ["required", "preferred"] {
            assert_eq!(aws_cluster(mode, None), (Vec::new(), None), "{mode}");
        }
        let (ca, cert, key) = issued(&["10.0.1.10", "10.0.2.10"]);
        let (errors, wanted) = aws_cluster("required", Some((&ca, &cert, &key)));
        assert_eq!(errors, Vec::<AttrPath>::new());
        assert!(wanted.is_some(), "the supplied certificate is taken");
        // A create: the instances' addresses are unknown at plan.
        for nodes in [
            Attr::Unknown,
            Attr::Known(vec![node(Attr::Unknown), node(Attr::Unknown)]),
        ] {
            let said = check_supplied(wanted.as_ref(), None, &nodes, true).expect("accepted");
            let warnings: Vec<_> = said.iter().collect();
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            let w = warnings[0];
            assert_eq!(w.severity, crate::tfplugin::diagnostics::Severity::Warning);
            assert_eq!(w.path, Some(at().then("cert_pem")));
            assert!(w.detail.contains("private address"), "{}", w.detail);
            assert!(w.detail.contains("before any node starts"), "{}", w.detail);
            // The local driver knows every address at plan: no such warning.
            assert!(check_supplied(wanted.as_ref(), None, &nodes, false)
                .expect("accepted")
                .is_empty());
        }
        // Every address known (an existing cluster): checked at plan, nothing to warn about.
        let known = Attr::Known(vec![
            node(Attr::Known("10.0.1.10:6379".into())),
            node(Attr::Known("10.0.2.10:6379".into())),
        ]);
        assert!(check_supplied(wanted.as_ref(), None, &known, true)
            .expect("accepted")
            .is_empty());
        // ... and one it does not name is refused at cert_pem, as on the local driver.
        let stranger = Attr::Known(vec![node(Attr::Known("10.0.3.10:6379".into()))]);
        let refused = check_supplied(wanted.as_ref(), None, &stranger, true).expect_err("refused");
        let e = refused.iter().next().expect("an error");
        assert_eq!(e.path, Some(at().then("cert_pem")));
        assert!(e.detail.contains("10.0.3.10"), "{}", e.detail);
    }

    #[test]
    fn on_aws_a_broken_supplied_certificate_is_refused_at_its_attribute() {
        let (ca, cert, key) = issued(&["10.0.1.10"]);
        let (other_ca, _, other_key) = issued(&["10.0.1.10"]);
        let errors = |pems| aws_cluster("required", Some(pems)).0;
        assert_eq!(
            errors((&ca, "not a certificate", &key)),
            vec![at().then("cert_pem")]
        );
        assert_eq!(errors((&ca, &cert, &other_key)), vec![at().then("key_pem")]);
        assert_eq!(
            errors((&other_ca, &cert, &key)),
            vec![at().then("cert_pem")],
            "not issued by ca_cert_pem"
        );
        assert_eq!(
            errors(("garbage", &cert, &key)),
            vec![at().then("ca_cert_pem")]
        );
    }

    #[test]
    fn a_mode_switch_plans_as_a_roll_and_on_aws_names_the_group_rules() {
        use TlsMode::{Preferred, Required};
        for aws in [false, true] {
            let to_required = plan_change(Some(Preferred), Some(Required), aws).expect("allowed");
            let d = to_required.iter().next().expect("a warning");
            assert_eq!(d.severity, crate::tfplugin::diagnostics::Severity::Warning);
            assert_eq!(d.path, Some(at().then("mode")));
            let detail = &d.detail;
            assert!(detail.contains("restarts in required mode"), "{detail}");
            assert_eq!(
                detail.contains("revoked once every node has restarted"),
                aws
            );
            let to_preferred = plan_change(Some(Required), Some(Preferred), aws).expect("allowed");
            let detail = &to_preferred.iter().next().expect("a warning").detail;
            assert_eq!(
                detail.contains("opens the plain-text ports"),
                aws,
                "{detail}"
            );
            assert!(plan_change(Some(Required), Some(Required), aws)
                .expect("no change")
                .is_empty());
            // On or off in place stays refused, on both drivers.
            assert!(plan_change(None, Some(Preferred), aws).is_err());
            assert!(plan_change(Some(Required), None, aws).is_err());
        }
    }
}
