//! A `redisha_cluster` model as what the planner and the cluster code take. Every problem
//! becomes a diagnostic on its attribute; unknown values make `None` so that validate checks
//! what is known and plan marks what depends on them as unknown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use redisha_aws::dns_endpoint::{EndpointSpec, DEFAULT_TTL};
use redisha_cluster::local::DEFAULT_EXPORTER_PORT_OFFSET;
use redisha_cluster::persistence::{Persistence, PersistenceError};
use redisha_cluster::{LocalConfig, LocalExporter, NodeConfig, Password};
use redisha_planner::Request;

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::model::AllKnown;
use crate::tfplugin::framework::Attr;
use crate::topology;

use super::model::{
    AwsModel, ClusterModel, EndpointModel, LocalModel, MetricsModel, TimeoutsModel,
};

/// The `aws { }` block, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsArgs {
    pub subnet_ids: Vec<String>,
    pub instance_type: String,
    pub ami: String,
    /// `redis_package`; `None`: the driver's default.
    pub redis_package: Option<String>,
    pub key_name: Option<String>,
    pub allowed_cidrs: Vec<String>,
    pub monitoring_cidrs: Vec<String>,
    pub allowed_security_group_ids: Vec<String>,
    pub placement_group: Option<String>,
    pub instance_profile: Option<String>,
    pub max_nodes_per_instance: Option<u32>,
    pub tags: BTreeMap<String, String>,
    pub data_volume: Option<(u32, bool)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DriverArgs {
    Local(LocalConfig),
    Aws(AwsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub create: Duration,
    pub update: Duration,
    pub delete: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            create: Duration::from_secs(600),
            update: Duration::from_secs(1800),
            delete: Duration::from_secs(600),
        }
    }
}

/// Everything a `redisha_cluster` config says, fully known.
#[derive(Debug, Clone)]
pub struct ClusterArgs {
    pub name: String,
    /// For the local driver, the zones as written; for aws, empty until the subnets are read.
    pub request: Request,
    pub node_config: NodeConfig,
    pub driver: DriverArgs,
    pub timeouts: Timeouts,
    /// `allow_data_loss`: lets repair restart a master with no live copy of its data.
    pub allow_data_loss: bool,
    /// `restore_from`: the backup a new cluster starts from.
    pub restore_from: Option<String>,
    /// `final_backup`: where destroy puts a last backup first.
    pub final_backup: Option<String>,
    /// `configuration_endpoint` (aws driver only).
    pub endpoint: Option<EndpointSpec>,
    /// `tls { mode }`: `None` for plain text.
    pub tls: Option<redisha_cluster::tls::TlsMode>,
    /// `tls { ca_cert_pem, cert_pem, key_pem }`: the user's certificate, if supplied.
    pub tls_cert: Option<redisha_cluster::tls_supplied::SuppliedCert>,
    /// `operator_password_generation`: a change rotates the operator user's password.
    pub operator_password_generation: Option<u64>,
}

impl ClusterArgs {
    /// How far above its node an exporter listens, when nodes have exporters: on aws always,
    /// locally with `metrics { }`.
    pub fn exporter_port_offset(&self) -> Option<u16> {
        match &self.driver {
            DriverArgs::Local(l) => l.exporter.as_ref().map(|e| e.port_offset),
            DriverArgs::Aws(_) => Some(DEFAULT_EXPORTER_PORT_OFFSET),
        }
    }
}

impl ClusterArgs {
    /// The arguments of a config (or of a state: its arguments are the config it was applied
    /// with). `Ok(None)` when some value is unknown; `Err` with every problem found.
    pub fn from_model(m: &ClusterModel) -> Result<Option<ClusterArgs>, Diagnostics> {
        let root = AttrPath::root();
        let mut diags = Diagnostics::new();
        let mut k = AllKnown::default();

        let name = k.take(&m.name);
        check_name(name.as_deref(), &mut diags);
        let password = k.take(&m.password);
        // Unset means false.
        let allow_data_loss = m.allow_data_loss.clone().or_default_when_null(false);
        k.take(&m.allow_data_loss);
        let redis_config = m.redis_config.clone().or_default_when_null(BTreeMap::new());
        k.take(&m.redis_config);

        let metrics = match &m.metrics {
            Attr::Unknown => {
                k.0 = false;
                None
            }
            Attr::Null => None,
            Attr::Known(block) => decode_metrics(block, &root.then("metrics"), &mut diags, &mut k),
        };
        let driver = match (&m.local, &m.aws) {
            (Attr::Unknown, _) | (_, Attr::Unknown) => {
                k.0 = false;
                None
            }
            (Attr::Known(local), Attr::Null) => decode_local(
                local,
                name.as_deref(),
                &root.then("local"),
                &mut diags,
                &mut k,
            )
            .map(|mut config| {
                config.exporter = metrics;
                DriverArgs::Local(config)
            }),
            (Attr::Null, Attr::Known(aws)) => {
                if let Attr::Known(block) = &m.metrics {
                    aws_metrics_fixed(block, &root.then("metrics"), &mut diags);
                }
                decode_aws(aws, &root.then("aws"), &mut diags, &mut k).map(DriverArgs::Aws)
            }
            _ => {
                diags.push(
                    Diagnostic::error(
                        "Exactly one driver block",
                        "redisha_cluster needs exactly one of `local { }` (redis-server processes on this machine) or `aws { }` (EC2 instances).",
                    )
                    .at(root.clone()),
                );
                None
            }
        };

        let endpoint = match &m.configuration_endpoint {
            Attr::Unknown => {
                k.0 = false;
                None
            }
            Attr::Null => None,
            Attr::Known(block) => {
                let at = root.then("configuration_endpoint");
                if matches!(m.local, Attr::Known(_)) {
                    diags.push(
                        Diagnostic::error(
                            "configuration_endpoint needs the aws driver",
                            "A configuration endpoint is a Route 53 record of the EC2 instances; with `local { }` connect to `endpoints` instead, or remove the block.",
                        )
                        .at(at.clone()),
                    );
                }
                endpoint_of(block, &at, &mut diags, &mut k)
            }
        };

        // The topology: validated by the planner the same way as for the placement data source.
        let request = match topology::request(&m.topology) {
            Ok(r) => {
                k.0 &= r.is_some();
                r
            }
            Err(d) => {
                diags.extend(d);
                None
            }
        };
        if let (Some(DriverArgs::Local(_)), Some(req)) = (&driver, &request) {
            if req.zones.is_empty() {
                diags.push(
                    Diagnostic::error(
                        "No zone",
                        "zone: the local driver needs at least one `zone { host { ... } }` block describing where nodes may run.",
                    )
                    .at(root.then("zone")),
                );
            }
        }
        if let (Some(DriverArgs::Aws(_)), Some(req)) = (&driver, &request) {
            if !req.zones.is_empty() {
                diags.push(
                    Diagnostic::error(
                        "Zones come from the subnets",
                        "zone: with the aws driver the zones and hosts come from aws.subnet_ids and aws.instance_type; remove the zone blocks.",
                    )
                    .at(root.then("zone")),
                );
            }
        }

        if matches!(driver, Some(DriverArgs::Aws(_))) && matches!(m.password, Attr::Null) {
            diags.push(
                Diagnostic::error(
                    "The aws driver requires a password",
                    "password: the aws driver's nodes listen on the VPC's network, so they must not run without one. Set `password`, e.g. `password = random_password.redis.result` (it is stored in SSM Parameter Store as a SecureString, never in user data).",
                )
                .at(root.then("password")),
            );
        }

        let timeouts = timeouts_of(&m.timeouts, &mut diags, &mut k);
        let tls = super::tls::decode(&m.tls, &mut diags, &mut k);
        let acl = super::users::decode(m, &mut diags, &mut k);
        let operator_password_generation = super::operator_rotation::decode(m, &mut k);
        let tls_cert = super::tls::decode_supplied(&m.tls, &mut diags, &mut k);

        let restore_from = k.take(&m.restore_from);
        let final_backup = k.take(&m.final_backup);
        let persistence = match persistence_of(m) {
            Ok(p) => p,
            Err(e) => {
                diags.push(
                    Diagnostic::error("Invalid persistence settings", e.to_string())
                        .at(root.then(e.field)),
                );
                None
            }
        };
        // The persistence arguments become redis.conf settings, merged into `redis_config`
        // before the settings are checked, so a clash names the attribute.
        let merged = match (&persistence, &redis_config) {
            (Some((p, explicit)), Some(given)) => match p.merge_into(given, *explicit) {
                Ok(merged) => Some(merged),
                Err(e) => {
                    diags.push(
                        Diagnostic::error("Invalid persistence settings", e.to_string())
                            .at(root.then(e.field)),
                    );
                    None
                }
            },
            _ => None,
        };
        k.0 &= persistence.is_some();
        let mut node_config = node_config_of(
            password.as_deref(),
            merged.as_ref(),
            m.password.is_unknown(),
            &mut diags,
        );
        node_config.acl = acl.unwrap_or_default();

        if diags.has_errors() {
            return Err(diags);
        }
        if !k.all_known() {
            return Ok(None);
        }
        match (name, request, driver, timeouts, allow_data_loss) {
            (Some(name), Some(request), Some(driver), Some(timeouts), Some(allow_data_loss)) => {
                Ok(Some(ClusterArgs {
                    name,
                    request,
                    node_config,
                    driver,
                    timeouts,
                    allow_data_loss,
                    restore_from,
                    final_backup,
                    endpoint,
                    tls,
                    tls_cert,
                    operator_password_generation,
                }))
            }
            _ => Ok(None),
        }
    }
}

/// `name`: it names directories and tags.
pub(crate) fn check_name(name: Option<&str>, diags: &mut Diagnostics) {
    let Some(n) = name else { return };
    let ok = !n.is_empty()
        && n.len() <= 63
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        diags.push(
            Diagnostic::error(
                "Invalid name",
                "name: use 1 to 63 letters, digits, '-' or '_' (it names directories and tags)",
            )
            .at(AttrPath::root().then("name")),
        );
    }
}

/// The `timeouts { }` block (defaults when absent); `None` while unknown.
pub(crate) fn timeouts_of(
    block: &Attr<TimeoutsModel>,
    diags: &mut Diagnostics,
    k: &mut AllKnown,
) -> Option<Timeouts> {
    match block {
        Attr::Unknown => {
            k.0 = false;
            None
        }
        Attr::Null => Some(Timeouts::default()),
        Attr::Known(t) => Some(decode_timeouts(
            t,
            &AttrPath::root().then("timeouts"),
            diags,
            k,
        )),
    }
}

/// The node settings from `password` and `redis_config`, checked once both are known; a
/// problem goes on the attribute that has it.
pub(crate) fn node_config_of(
    password: Option<&str>,
    redis_config: Option<&BTreeMap<String, String>>,
    password_unknown: bool,
    diags: &mut Diagnostics,
) -> NodeConfig {
    let node_config = NodeConfig {
        password: password.map(Password::new),
        redis_config: redis_config.cloned().unwrap_or_default(),
        acl: Default::default(),
    };
    if !password_unknown && redis_config.is_some() {
        if let Err(e) = node_config.validate() {
            let at = if matches!(e, redisha_cluster::DriverError::InvalidPassword) {
                AttrPath::root().then("password")
            } else {
                AttrPath::root().then("redis_config")
            };
            diags.push(Diagnostic::error("Invalid node settings", e.to_string()).at(at));
        }
    }
    node_config
}

/// The persistence arguments, and whether any was written (`Ok(None)`: one is unknown).
fn persistence_of(m: &ClusterModel) -> Result<Option<(Persistence, bool)>, PersistenceError> {
    if m.persistence.is_unknown()
        || m.appendfsync.is_unknown()
        || m.min_replicas_to_write.is_unknown()
        || m.min_replicas_max_lag.is_unknown()
    {
        return Ok(None);
    }
    let explicit = !(m.persistence.is_null()
        && m.appendfsync.is_null()
        && m.min_replicas_to_write.is_null()
        && m.min_replicas_max_lag.is_null());
    let p = Persistence::parse(
        m.persistence.value().map(String::as_str),
        m.appendfsync.value().map(String::as_str),
        m.min_replicas_to_write.value().copied(),
        m.min_replicas_max_lag.value().copied(),
    )?;
    Ok(Some((p, explicit)))
}

/// The node settings a state was applied with (its password, redis_config and persistence
/// attributes), as `from_model` makes them for a config.
pub fn applied_node_config(state: &ClusterModel) -> NodeConfig {
    let given = state.redis_config.value().cloned().unwrap_or_default();
    let redis_config = match persistence_of(state) {
        Ok(Some((p, explicit))) => p.merge_into(&given, explicit).unwrap_or(given),
        _ => given,
    };
    NodeConfig {
        password: state.password.value().map(Password::new),
        redis_config,
        acl: super::users::acl_of(state),
    }
}

pub(crate) fn decode_local(
    block: &LocalModel,
    cluster_name: Option<&str>,
    at: &AttrPath,
    diags: &mut Diagnostics,
    k: &mut AllKnown,
) -> Option<LocalConfig> {
    let data_dir = k.take(&block.data_dir);
    let base_port = k.take(&block.base_port);
    let octet = k.take(&block.loopback_octet);
    let redis_server = k.take(&block.redis_server);
    let mut config = LocalConfig::new(PathBuf::new());
    if let Some(p) = base_port {
        match u16::try_from(p) {
            Ok(p) if (1024..=55535).contains(&p) => config.base_port = p,
            _ => diags.push(
                Diagnostic::error(
                    "Invalid base_port",
                    format!("local.base_port: {p} is out of range; choose 1024 to 55535 (the bus port is base_port + 10000)"),
                )
                .at(at.then("base_port")),
            ),
        }
    }
    if let Some(o) = octet {
        match u8::try_from(o) {
            Ok(o) => config.loopback_octet = o,
            Err(_) => diags.push(
                Diagnostic::error(
                    "Invalid loopback_octet",
                    format!("local.loopback_octet: {o} is not 0 to 255"),
                )
                .at(at.then("loopback_octet")),
            ),
        }
    }
    if let Some(r) = redis_server {
        config.redis_server = r;
    }
    let dir = match (data_dir, cluster_name) {
        (Some(d), _) => PathBuf::from(d),
        (None, Some(name)) => PathBuf::from(".redisha").join(name),
        (None, None) => PathBuf::from(".redisha"),
    };
    // Relative directories are taken from Terraform's working directory, where the provider runs.
    config.data_dir = if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or(dir)
    };
    Some(config)
}

fn decode_metrics(
    block: &MetricsModel,
    at: &AttrPath,
    diags: &mut Diagnostics,
    k: &mut AllKnown,
) -> Option<LocalExporter> {
    let mut exporter = LocalExporter::default();
    if let Some(binary) = k.take(&block.exporter) {
        exporter.binary = binary;
    }
    if let Some(offset) = k.take(&block.port_offset) {
        match u16::try_from(offset) {
            Ok(o) if o > 0 => exporter.port_offset = o,
            _ => diags.push(
                Diagnostic::error(
                    "Invalid port_offset",
                    format!("metrics.port_offset: {offset} is out of range; choose 1 to 65535 such that every node's port plus it stays below 65536 (default 20000)"),
                )
                .at(at.then("port_offset")),
            ),
        }
    }
    Some(exporter)
}

/// The `configuration_endpoint` block, checked as far as it can be without AWS (the zone is
/// checked at plan).
fn endpoint_of(
    block: &EndpointModel,
    at: &AttrPath,
    diags: &mut Diagnostics,
    k: &mut AllKnown,
) -> Option<EndpointSpec> {
    let hosted_zone_id = k.take(&block.hosted_zone_id)?;
    let name = k.take(&block.name)?;
    let ttl = match &block.ttl {
        Attr::Null => Some(DEFAULT_TTL),
        other => k.take(other).map(i64::from),
    }?;
    let spec = EndpointSpec {
        hosted_zone_id,
        name,
        ttl,
    };
    if let Err(e) = spec.validate() {
        let path = e
            .field()
            .as_ref()
            .and_then(crate::aws_errors::hcl)
            .unwrap_or_else(|| at.clone());
        diags.push(
            Diagnostic::error(
                "Invalid configuration_endpoint",
                crate::aws_errors::detail(&e),
            )
            .at(path),
        );
        return None;
    }
    Some(spec)
}

/// On aws the user data runs the exporters: their binary and port are fixed.
fn aws_metrics_fixed(block: &MetricsModel, at: &AttrPath, diags: &mut Diagnostics) {
    for (name, set) in [
        ("port_offset", !block.port_offset.is_null()),
        ("exporter", !block.exporter.is_null()),
    ] {
        if set {
            diags.push(
                Diagnostic::error(
                    "Not settable on aws",
                    format!("metrics.{name}: aws instances run Debian's prometheus-redis-exporter at each node's port + 20000 (see aws.monitoring_cidrs); remove metrics.{name}"),
                )
                .at(at.then(name)),
            );
        }
    }
}

pub(crate) fn decode_aws(
    block: &AwsModel,
    at: &AttrPath,
    diags: &mut Diagnostics,
    k: &mut AllKnown,
) -> Option<AwsArgs> {
    let subnet_ids = k.take(&block.subnet_ids).unwrap_or_default();
    if subnet_ids.is_empty() && k.all_known() {
        diags.push(
            Diagnostic::error(
                "No subnet",
                "aws.subnet_ids: list at least one subnet; their zones are the cluster's zones",
            )
            .at(at.then("subnet_ids")),
        );
    }
    let instance_type = k.take(&block.instance_type);
    let ami = k.take(&block.ami);
    let redis_package = k.take(&block.redis_package);
    let key_name = k.take(&block.key_name);
    let allowed_cidrs = k.take(&block.allowed_cidrs).unwrap_or_default();
    let monitoring_cidrs = k.take(&block.monitoring_cidrs).unwrap_or_default();
    let allowed_security_group_ids = k
        .take(&block.allowed_security_group_ids)
        .unwrap_or_default();
    let placement_group = k.take(&block.placement_group);
    let instance_profile = k.take(&block.instance_profile);
    let max_nodes_per_instance = k.take(&block.max_nodes_per_instance);
    let tags = k.take(&block.tags).unwrap_or_default();
    let data_volume = match k.take(&block.data_volume) {
        None => None,
        Some(volume) => {
            let vat = at.then("data_volume");
            let size = k.take(&volume.size_gb);
            let encrypted = k.take(&volume.encrypted).unwrap_or(true);
            match size {
                Some(s) if s >= 1 => Some((s, encrypted)),
                Some(_) => {
                    diags.push(
                        Diagnostic::error(
                            "Invalid size_gb",
                            "aws.data_volume.size_gb: must be at least 1",
                        )
                        .at(vat.then("size_gb")),
                    );
                    None
                }
                None => None,
            }
        }
    };
    for (name, list) in [
        ("allowed_cidrs", &allowed_cidrs),
        ("monitoring_cidrs", &monitoring_cidrs),
    ] {
        for (i, cidr) in list.iter().enumerate() {
            if !looks_like_cidr(cidr) {
                diags.push(
                    Diagnostic::error(
                        "Invalid CIDR",
                        format!("aws.{name}[{i}]: {cidr:?} is not an IPv4 CIDR block such as 10.0.0.0/16"),
                    )
                    .at(at.then(name).index(i)),
                );
            }
        }
    }
    Some(AwsArgs {
        subnet_ids,
        instance_type: instance_type?,
        ami: ami?,
        redis_package,
        key_name,
        allowed_cidrs,
        monitoring_cidrs,
        allowed_security_group_ids,
        placement_group,
        instance_profile,
        max_nodes_per_instance,
        tags,
        data_volume,
    })
}

fn looks_like_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    ip.parse::<std::net::Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}

pub(crate) fn decode_timeouts(
    block: &TimeoutsModel,
    at: &AttrPath,
    diags: &mut Diagnostics,
    k: &mut AllKnown,
) -> Timeouts {
    let mut t = Timeouts::default();
    for (name, attr, slot) in [
        ("create", &block.create, &mut t.create),
        ("update", &block.update, &mut t.update),
        ("delete", &block.delete, &mut t.delete),
    ] {
        if let Some(text) = k.take(attr) {
            match parse_duration(&text) {
                Some(d) => *slot = d,
                None => diags.push(
                    Diagnostic::error(
                        "Invalid timeout",
                        format!("timeouts.{name}: {text:?} is not a duration; write it as 90s, 10m or 1h"),
                    )
                    .at(at.then(name)),
                ),
            }
        }
    }
    t
}

/// `90s`, `10m`, `1h`, `1h30m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        any = true;
    }
    if !digits.is_empty() || !any || total == 0 {
        return None;
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_terraform_timeouts() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("ten minutes"), None);
        assert_eq!(parse_duration("0s"), None);
    }

    #[test]
    fn cidrs_are_checked() {
        assert!(looks_like_cidr("10.0.0.0/16"));
        assert!(!looks_like_cidr("10.0.0.0"));
        assert!(!looks_like_cidr("10.0.0.0/33"));
    }
}
