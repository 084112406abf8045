//! A `redisha_sentinel` model as what the planner and the sentinel operator take; every
//! problem becomes a diagnostic on its attribute, unknown values make `Ok(None)`.

use std::collections::BTreeMap;

use redisha_cluster::sentinel::SentinelSettings;
use redisha_cluster::{NodeConfig, Password};
use redisha_planner::{Request, SentinelSpec};

use crate::resources::cluster::args::{
    check_name, decode_aws, decode_local, node_config_of, timeouts_of, DriverArgs, Timeouts,
};
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::model::AllKnown;
use crate::tfplugin::framework::Attr;
use crate::topology::{self, TopologyModel};

use super::model::SentinelModel;

#[derive(Debug, Clone)]
pub struct SentinelArgs {
    pub name: String,
    /// With `sentinel` set and one shard.
    pub request: Request,
    pub node_config: NodeConfig,
    /// `sentinel_password`; `None`: the sentinels use `password`.
    pub sentinel_password: Option<Password>,
    /// `local { }` or `aws { }` (for aws, `request` has no zones: they come from the subnets).
    pub driver: DriverArgs,
    pub timeouts: Timeouts,
    pub settings: SentinelSettings,
}

impl SentinelArgs {
    pub fn from_model(m: &SentinelModel) -> Result<Option<SentinelArgs>, Diagnostics> {
        let root = AttrPath::root();
        let mut diags = Diagnostics::new();
        let mut k = AllKnown::default();
        let name = k.take(&m.name);
        check_name(name.as_deref(), &mut diags);
        let password = k.take(&m.password);
        let sentinel_password = k.take(&m.sentinel_password).map(Password::new);
        if let Some(p) = &sentinel_password {
            let check = NodeConfig {
                password: Some(p.clone()),
                ..NodeConfig::default()
            };
            if let Err(e) = check.validate() {
                diags.push(
                    Diagnostic::error("Invalid sentinel_password", e.to_string())
                        .at(root.then("sentinel_password")),
                );
            }
        }
        let redis_config = m.redis_config.clone().or_default_when_null(BTreeMap::new());
        k.take(&m.redis_config);

        // The same topology as a cluster's, with one shard.
        let topo = TopologyModel {
            shards: Attr::Known(1),
            replicas: m.replicas.clone(),
            node_memory_mb: m.node_memory_mb.clone(),
            spread: m.spread.clone(),
            zone: m.zone.clone(),
            partition: m.partition.clone(),
            survive: m.survive.clone(),
        };
        let request = match topology::request(&topo) {
            Ok(r) => {
                k.0 &= r.is_some();
                r
            }
            Err(d) => {
                diags.extend(d);
                None
            }
        };

        let mut spec = SentinelSpec::default();
        let mut settings = SentinelSettings::default();
        let mut master_name = None;
        match &m.sentinel {
            Attr::Unknown => k.0 = false,
            Attr::Null => {}
            Attr::Known(s) => {
                let at = root.then("sentinel");
                if let Some(c) = k.take(&s.count) {
                    spec.count = c;
                }
                spec.quorum = k.take(&s.quorum);
                if let Some(mem) = k.take(&s.memory_mb) {
                    spec.memory_mb = mem;
                }
                if let Some(m) = k.take(&s.min_replicas_to_write) {
                    spec.min_replicas_to_write = m;
                }
                if let Some(l) = k.take(&s.min_replicas_max_lag) {
                    settings.min_replicas_max_lag = l;
                }
                if let Some(ms) = k.take(&s.down_after_ms) {
                    if ms < 100 {
                        diags.push(
                            Diagnostic::error(
                                "Invalid down_after_ms",
                                format!("sentinel.down_after_ms: {ms} ms would count a primary down on any pause; use 100 or more (default 5000)"),
                            )
                            .at(at.then("down_after_ms")),
                        );
                    }
                    settings.down_after_ms = ms;
                }
                if let Some(ms) = k.take(&s.failover_timeout_ms) {
                    settings.failover_timeout_ms = ms;
                }
                master_name = k.take(&s.master_name);
                if let Some(n) = &master_name {
                    if n.is_empty()
                        || !n
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    {
                        diags.push(
                            Diagnostic::error(
                                "Invalid master_name",
                                "sentinel.master_name: use letters, digits, '-', '_' or '.'",
                            )
                            .at(at.then("master_name")),
                        );
                    }
                }
            }
        }
        settings.quorum = spec.quorum();
        settings.min_replicas_to_write = spec.min_replicas_to_write;
        settings.master_name = master_name.or_else(|| name.clone()).unwrap_or_default();
        let request = request.map(|mut r| {
            r.sentinel = Some(spec);
            r
        });

        let driver = match (&m.local, &m.aws) {
            (Attr::Unknown, _) | (_, Attr::Unknown) => {
                k.0 = false;
                None
            }
            (Attr::Known(l), Attr::Null) => {
                decode_local(l, name.as_deref(), &root.then("local"), &mut diags, &mut k)
                    .map(DriverArgs::Local)
            }
            (Attr::Null, Attr::Known(aws)) => {
                decode_aws(aws, &root.then("aws"), &mut diags, &mut k).map(DriverArgs::Aws)
            }
            _ => {
                diags.push(
                    Diagnostic::error(
                        "Exactly one driver block",
                        "redisha_sentinel needs exactly one of `local { }` (redis-server and Redis Sentinel processes on this machine) or `aws { }` (EC2 instances).",
                    )
                    .at(root.clone()),
                );
                None
            }
        };
        // Zones are written for the local driver and come from the subnets on aws.
        match (&driver, &request) {
            (Some(DriverArgs::Local(_)), Some(req)) if req.zones.is_empty() => diags.push(
                Diagnostic::error(
                    "No zone",
                    "zone: the local driver needs at least one `zone { host { ... } }` block describing where processes may run.",
                )
                .at(root.then("zone")),
            ),
            (Some(DriverArgs::Aws(_)), Some(req)) if !req.zones.is_empty() => diags.push(
                Diagnostic::error(
                    "Zones come from the subnets",
                    "zone: with the aws driver the zones and hosts come from aws.subnet_ids and aws.instance_type; remove the zone blocks.",
                )
                .at(root.then("zone")),
            ),
            _ => {}
        }
        let timeouts = timeouts_of(&m.timeouts, &mut diags, &mut k);
        let node_config = node_config_of(
            password.as_deref(),
            redis_config.as_ref(),
            m.password.is_unknown(),
            &mut diags,
        );
        if diags.has_errors() {
            return Err(diags);
        }
        if !k.all_known() {
            return Ok(None);
        }
        match (name, request, driver, timeouts) {
            (Some(name), Some(request), Some(driver), Some(timeouts)) => Ok(Some(SentinelArgs {
                name,
                request,
                node_config,
                sentinel_password,
                driver,
                timeouts,
                settings,
            })),
            _ => Ok(None),
        }
    }
}
