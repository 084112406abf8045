//! Decoding a `redisha_cluster` configuration into what the planner and the cluster code take.
//! Every problem becomes a diagnostic on its attribute; unknown values make `None` so that
//! validate checks what is known and plan marks what depends on them as unknown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use redisha_cluster::{LocalConfig, NodeConfig, Password};
use redisha_planner::Request;

use crate::tfplugin::attrs::{self, Field};
use crate::data_sources::placement::request_from_config;
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::value::Value;

/// The `aws { }` block, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsArgs {
    pub subnet_ids: Vec<String>,
    pub instance_type: String,
    pub ami: String,
    pub key_name: Option<String>,
    pub allowed_cidrs: Vec<String>,
    pub placement_group: Option<String>,
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
}

/// Decodes the config. `Ok(None)` when some value is unknown; `Err` with every problem found.
pub fn decode(config: &Value) -> Result<Option<ClusterArgs>, Diagnostics> {
    let root = AttrPath::root();
    let mut diags = Diagnostics::new();
    let mut known = true;
    let mut take = |r: Result<Field<String>, Diagnostic>, diags: &mut Diagnostics| match r {
        Ok(Field::Known(v)) => Some(Some(v)),
        Ok(Field::Null) => Some(None),
        Ok(Field::Unknown) => {
            known = false;
            None
        }
        Err(d) => {
            diags.push(d);
            None
        }
    };

    let name = take(attrs::string(config, "name", &root), &mut diags).flatten();
    if let Some(n) = &name {
        if n.is_empty()
            || n.len() > 63
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            diags.push(
                Diagnostic::error(
                    "Invalid name",
                    "name: use 1 to 63 letters, digits, '-' or '_' (it names directories and tags)",
                )
                .at(root.then("name")),
            );
        }
    }
    let password = take(attrs::string(config, "password", &root), &mut diags);
    // Unset means false; unknown and invalid go through `field` like every other argument.
    let allow_data_loss = match attrs::bool(config, "allow_data_loss", &root) {
        Ok(Field::Null) => Some(false),
        other => field(other, &mut diags, &mut known),
    };
    let redis_config = match string_map(config.get("redis_config"), &root.then("redis_config")) {
        Ok(Some(m)) => Some(m),
        Ok(None) => {
            known = false;
            None
        }
        Err(d) => {
            diags.push(d);
            None
        }
    };

    let local = config.get("local");
    let aws = config.get("aws");
    let driver = match (local, aws) {
        (Value::Unknown, _) | (_, Value::Unknown) => {
            known = false;
            None
        }
        (Value::Null, Value::Null) | (Value::Map(_), Value::Map(_)) => {
            diags.push(
                Diagnostic::error(
                    "Exactly one driver block",
                    "redisha_cluster needs exactly one of `local { }` (redis-server processes on this machine) or `aws { }` (EC2 instances).",
                )
                .at(root.clone()),
            );
            None
        }
        (Value::Map(_), _) => decode_local(
            local,
            name.as_deref(),
            &root.then("local"),
            &mut diags,
            &mut known,
        )
        .map(DriverArgs::Local),
        (_, _) => decode_aws(aws, &root.then("aws"), &mut diags, &mut known).map(DriverArgs::Aws),
    };

    // The topology: validated by the planner the same way as for the placement data source.
    let mut topo_diags = Diagnostics::new();
    let request = request_from_config(config, &mut topo_diags);
    let topology_unknown = request.is_none() && topo_diags.is_empty();
    diags.extend(topo_diags);
    if topology_unknown {
        known = false;
    }
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

    let timeouts = decode_timeouts(
        config.get("timeouts"),
        &root.then("timeouts"),
        &mut diags,
        &mut known,
    );

    let node_config = NodeConfig {
        password: password.clone().flatten().map(Password::new),
        redis_config: redis_config.clone().unwrap_or_default(),
    };
    if password.is_some() && redis_config.is_some() {
        if let Err(e) = node_config.validate() {
            let at = if matches!(e, redisha_cluster::DriverError::InvalidPassword) {
                root.then("password")
            } else {
                root.then("redis_config")
            };
            diags.push(Diagnostic::error("Invalid node settings", e.to_string()).at(at));
        }
    }

    if diags.has_errors() {
        return Err(diags);
    }
    if !known {
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
            }))
        }
        _ => Ok(None),
    }
}

/// A map(string): `Ok(None)` when unknown, empty when null.
fn string_map(v: &Value, at: &AttrPath) -> Result<Option<BTreeMap<String, String>>, Diagnostic> {
    match v {
        Value::Null => Ok(Some(BTreeMap::new())),
        Value::Unknown => Ok(None),
        Value::Map(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    Value::Unknown => return Ok(None),
                    _ => {
                        return Err(Diagnostic::error(
                            "Invalid value",
                            format!("{at}.{k}: must be a string"),
                        )
                        .at(at.key(k)))
                    }
                }
            }
            Ok(Some(out))
        }
        _ => Err(
            Diagnostic::error("Invalid value", format!("{at}: must be a map of strings"))
                .at(at.clone()),
        ),
    }
}

fn string_list(v: &Value, at: &AttrPath, diags: &mut Diagnostics, known: &mut bool) -> Vec<String> {
    match v {
        Value::Null => Vec::new(),
        Value::Unknown => {
            *known = false;
            Vec::new()
        }
        Value::List(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                Value::String(s) => Some(s.clone()),
                Value::Unknown => {
                    *known = false;
                    None
                }
                _ => {
                    diags.push(
                        Diagnostic::error("Invalid value", format!("{at}[{i}]: must be a string"))
                            .at(at.index(i)),
                    );
                    None
                }
            })
            .collect(),
        _ => {
            diags.push(
                Diagnostic::error("Invalid value", format!("{at}: must be a list of strings"))
                    .at(at.clone()),
            );
            Vec::new()
        }
    }
}

fn field<T>(
    r: Result<Field<T>, Diagnostic>,
    diags: &mut Diagnostics,
    known: &mut bool,
) -> Option<T> {
    match r {
        Ok(Field::Known(v)) => Some(v),
        Ok(Field::Null) => None,
        Ok(Field::Unknown) => {
            *known = false;
            None
        }
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

fn decode_local(
    block: &Value,
    cluster_name: Option<&str>,
    at: &AttrPath,
    diags: &mut Diagnostics,
    known: &mut bool,
) -> Option<LocalConfig> {
    let data_dir = field(attrs::string(block, "data_dir", at), diags, known);
    let base_port = field(attrs::u32(block, "base_port", at), diags, known);
    let octet = field(attrs::u32(block, "loopback_octet", at), diags, known);
    let redis_server = field(attrs::string(block, "redis_server", at), diags, known);
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

fn decode_aws(
    block: &Value,
    at: &AttrPath,
    diags: &mut Diagnostics,
    known: &mut bool,
) -> Option<AwsArgs> {
    let subnet_ids = string_list(
        block.get("subnet_ids"),
        &at.then("subnet_ids"),
        diags,
        known,
    );
    if subnet_ids.is_empty() && *known && !block.get("subnet_ids").is_unknown() {
        diags.push(
            Diagnostic::error(
                "No subnet",
                "aws.subnet_ids: list at least one subnet; their zones are the cluster's zones",
            )
            .at(at.then("subnet_ids")),
        );
    }
    let instance_type = field(attrs::string(block, "instance_type", at), diags, known);
    let ami = field(attrs::string(block, "ami", at), diags, known);
    let key_name = field(attrs::string(block, "key_name", at), diags, known);
    let allowed_cidrs = string_list(
        block.get("allowed_cidrs"),
        &at.then("allowed_cidrs"),
        diags,
        known,
    );
    let placement_group = field(attrs::string(block, "placement_group", at), diags, known);
    let max_nodes_per_instance = field(
        attrs::u32(block, "max_nodes_per_instance", at),
        diags,
        known,
    );
    let tags = match string_map(block.get("tags"), &at.then("tags")) {
        Ok(Some(m)) => m,
        Ok(None) => {
            *known = false;
            BTreeMap::new()
        }
        Err(d) => {
            diags.push(d);
            BTreeMap::new()
        }
    };
    let volume = block.get("data_volume");
    let data_volume = if volume.is_unknown() {
        *known = false;
        None
    } else if volume.is_null() {
        None
    } else {
        let vat = at.then("data_volume");
        let size = field(attrs::u32(volume, "size_gb", &vat), diags, known);
        let encrypted = field(attrs::bool(volume, "encrypted", &vat), diags, known).unwrap_or(true);
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
    };
    for (i, cidr) in allowed_cidrs.iter().enumerate() {
        if !looks_like_cidr(cidr) {
            diags.push(
                Diagnostic::error(
                    "Invalid CIDR",
                    format!("aws.allowed_cidrs[{i}]: {cidr:?} is not an IPv4 CIDR block such as 10.0.0.0/16"),
                )
                .at(at.then("allowed_cidrs").index(i)),
            );
        }
    }
    Some(AwsArgs {
        subnet_ids,
        instance_type: instance_type?,
        ami: ami?,
        key_name,
        allowed_cidrs,
        placement_group,
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

fn decode_timeouts(
    block: &Value,
    at: &AttrPath,
    diags: &mut Diagnostics,
    known: &mut bool,
) -> Option<Timeouts> {
    let mut t = Timeouts::default();
    if block.is_unknown() {
        *known = false;
        return None;
    }
    if block.is_null() {
        return Some(t);
    }
    for (name, slot) in [
        ("create", &mut t.create),
        ("update", &mut t.update),
        ("delete", &mut t.delete),
    ] {
        if let Some(text) = field(attrs::string(block, name, at), diags, known) {
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
    Some(t)
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
