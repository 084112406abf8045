//! `data "redisha_cluster_health"`: the live state of a Redis Cluster, read from one or more
//! of its addresses. For monitoring and for checks in pipelines (`healthy`).

use async_trait::async_trait;
use redisha_cluster::{Options, Password, PlannedNode};
use redisha_planner::Role;

use crate::model;
use crate::resources::cluster::model::NodeValue;
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::{Attr, Context, DataSource};

pub struct ClusterHealthDataSource;

pub const TYPE_NAME: &str = "redisha_cluster_health";

model! {
    /// One node of `nodes`.
    pub struct HealthNode {
        pub id: Attr<String>,
        pub address: Attr<String>,
        pub alive: Attr<bool>,
        pub role: Attr<String>,
        pub master_id: Attr<String>,
        pub link_status: Attr<String>,
        pub lag_bytes: Attr<u64>,
        pub slots: Attr<u32>,
        pub cluster_state: Attr<String>,
        pub error: Attr<String>,
        pub memory_used_bytes: Attr<u64>,
        pub maxmemory_bytes: Attr<u64>,
        pub ops_per_sec: Attr<u64>,
        pub keys: Attr<u64>,
        pub open_slots: Attr<u32>,
        pub zone: Attr<String>,
    }
}

model! {
    /// One shard of `shards`.
    pub struct HealthShard {
        pub shard: Attr<u32>,
        pub master: Attr<String>,
        pub master_zone: Attr<String>,
        pub planned_master_zone: Attr<String>,
        pub replicas_up: Attr<u32>,
        pub max_lag_bytes: Attr<u64>,
        pub slots: Attr<u32>,
        pub keys: Attr<u64>,
    }
}

model! {
    pub struct ClusterHealthModel("Live health of a Redis Cluster: per node role, link status, replication lag and slots, and the cluster state.") {
        pub endpoints: Attr<Vec<String>> = required(
            "host:port of one or more nodes; the first that answers lists the others (e.g. `redisha_cluster.x.endpoints`).",
        ),
        pub user: Attr<String> = optional("The ACL user to log in as (default: `default`). With `default_user_enabled = false` on the cluster, \
             a `user` block's name, of a user allowed `+info +cluster|nodes +cluster|info` (and `+config|get` for `persistence_on_every_node`); \
             `password` is then that user's."),
        pub password: Attr<String> = optional("The password of `user` (without `user`: the cluster password), if there is one.").sensitive(),
        pub tls_ca_cert_pem: Attr<String> = optional("With a TLS cluster (endpoints written `rediss://host:port`): the certificate (PEM) of its authority, \
             to verify the nodes with (e.g. `redisha_cluster.x.tls_ca_cert_pem`)."),
        pub planned_nodes: Attr<Vec<NodeValue>> = optional(
            "The plan to compare the live cluster with: a `redisha_cluster`'s `nodes`. With it, nodes and shards \
             get their zones, a master outside its planned zone is a problem, and `survives_zone_loss` is known.",
        ),
        pub cluster_id: Attr<String> = optional("The cluster's `cluster_id`; with `backup_destination`, the last backup is reported."),
        pub backup_destination: Attr<String> = optional("Where the cluster's backups go (`destination` of `redisha_backup`: a directory or `s3://bucket/prefix`)."),
        pub cluster_state: Attr<String> = computed("`ok` when every node answers and says ok, else `fail`."),
        pub healthy: Attr<bool> = computed("cluster_state is ok and all 16384 slots are served."),
        pub slots_covered: Attr<u32> = computed("Slots served by a live master."),
        pub persistence_on_every_node: Attr<bool> = computed("Every node keeps its data over a restart (snapshots scheduled or an append-only file on)."),
        pub nodes_without_persistence: Attr<Vec<String>> = computed("`address: why` of each node that does not (or whose settings could not be read)."),
        pub last_backup_id: Attr<String> = computed("The newest complete backup of `cluster_id` in `backup_destination` (null when there is none or they are not given)."),
        pub last_backup_time: Attr<String> = computed("When it started, UTC (`YYYYMMDDThhmmssZ`)."),
        pub last_backup_age_seconds: Attr<u64> = computed("Seconds since it started."),
        pub nodes: Attr<Vec<HealthNode>> = computed(
            "Every node: `id`, `address`, `alive`, `role` (`master`/`replica`, empty when unknown), \
             `master_id` (replicas), `link_status` (`up`/`down`, replicas), `lag_bytes` (replication \
             offset behind the master, replicas), `slots` (count), `cluster_state`, `error` (why it could not be read), \
             `memory_used_bytes`, `maxmemory_bytes` (0: no limit), `ops_per_sec`, `keys`, `open_slots` (half-moved slots), \
             `zone` (from `planned_nodes`).",
        ),
        pub shards: Attr<Vec<HealthShard>> = computed(
            "Every shard: `shard`, `master` (address of its live master), `master_zone`, `planned_master_zone`, \
             `replicas_up` (replicas with their link up), `max_lag_bytes` (its most lagging replica), `slots`, `keys`.",
        ),
        pub survives_zone_loss: Attr<bool> = computed(
            "Whether losing any one zone would leave a majority of masters and a copy of every shard, as the plan \
             guarantees where the topology allows; null without `planned_nodes`.",
        ),
        pub problems: Attr<Vec<String>> = computed(
            "What needs attention: down nodes, a master in another zone than planned, a shard without a replica, \
             half-moved slots, slots not served, a zone whose loss the live layout would not survive.",
        ),
    }
}

/// The endpoints as host:port (a `rediss://` scheme, which a TLS cluster's endpoints carry,
/// dropped: whether to speak TLS follows from `tls_ca_cert_pem`).
fn endpoints(list: &[String]) -> Result<Vec<String>, Diagnostic> {
    let at = AttrPath::attr("endpoints");
    let list: Vec<String> = list
        .iter()
        .map(|s| s.strip_prefix("rediss://").unwrap_or(s).to_string())
        .collect();
    for (i, s) in list.iter().enumerate() {
        if redisha_cluster::conn::split_address(s).is_none() {
            return Err(Diagnostic::error(
                "Invalid endpoint",
                format!("endpoints[{i}]: write each endpoint as host:port, e.g. 127.0.1.1:7000"),
            )
            .at(at.index(i)));
        }
    }
    if list.is_empty() {
        return Err(Diagnostic::error(
            "No endpoint",
            "endpoints: give at least one host:port of the cluster",
        )
        .at(at));
    }
    Ok(list)
}

/// Why the cluster could not be read: a refused login names `user` (and how to set it) when
/// none is given, since the usual cause is a cluster with `default` switched off.
fn read_failed(e: &redisha_cluster::ClusterError, user: Option<&str>) -> Diagnostic {
    let refused = matches!(e, redisha_cluster::ClusterError::Redis { source, .. }
        if redisha_cluster::conn::is_auth_error(source));
    match (refused, user) {
        (true, None) => Diagnostic::error(
            "Cannot read the cluster's health",
            format!(
                "{e}. user: not set, so the data source logged in as `default`; if the cluster has \
                 default_user_enabled = false, set `user` to the name of one of its `user` blocks \
                 (allowed `+info +cluster|nodes +cluster|info`) and `password` to that user's password."
            ),
        )
        .at(AttrPath::attr("user")),
        (true, Some(u)) => Diagnostic::error(
            "Cannot read the cluster's health",
            format!("{e}. user: {u:?} was refused: check that the cluster declares it and that `password` is its password."),
        )
        .at(AttrPath::attr("password")),
        (false, _) => Diagnostic::error("Cannot read the cluster's health", e.to_string())
            .at(AttrPath::attr("endpoints")),
    }
}

/// The newest complete backup of `cluster_id` in `backup_destination`, when both are given.
async fn last_backup(
    ctx: &Context,
    config: &ClusterHealthModel,
) -> Result<Option<redisha_cluster::backup::Manifest>, Diagnostics> {
    let (Some(id), Some(dest)) = (config.cluster_id.value(), config.backup_destination.value())
    else {
        return Ok(None);
    };
    let at = AttrPath::attr("backup_destination");
    let store = crate::backups::open(ctx, dest, &at).await?;
    let list = redisha_cluster::backup::list_backups(store.as_ref(), id)
        .await
        .map_err(|e| {
            Diagnostics::from(Diagnostic::error("Cannot list the backups", e.to_string()).at(at))
        })?;
    Ok(list.into_iter().next())
}

#[async_trait]
impl DataSource for ClusterHealthDataSource {
    type Model = ClusterHealthModel;

    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    async fn validate(&self, _ctx: &Context, config: &ClusterHealthModel) -> Diagnostics {
        match config.endpoints.value().map(|l| endpoints(l)) {
            Some(Err(d)) => d.into(),
            _ => Diagnostics::new(),
        }
    }

    async fn read(
        &self,
        ctx: &Context,
        config: ClusterHealthModel,
    ) -> Result<ClusterHealthModel, Diagnostics> {
        let seeds = endpoints(config.endpoints.value().map_or(&[], Vec::as_slice))?;
        let password = config.password.value().map(Password::new);
        let layout = planned_layout(config.planned_nodes.value().map_or(&[], Vec::as_slice));
        let user = config.user.value().cloned();
        let options = Options {
            user: user.clone(),
            tls: config
                .tls_ca_cert_pem
                .value()
                .map(|pem| redisha_cluster::tls::ClientTls {
                    ca_cert_pem: pem.clone(),
                }),
            ..Options::default()
        };
        let report = redisha_cluster::status(&seeds, password.as_ref(), &layout, &options)
            .await
            .map_err(|e| Diagnostics::from(read_failed(&e, user.as_deref())))?;
        let nodes = report.nodes.iter().map(|n| HealthNode {
            id: n.id.clone().into(),
            address: n.address.clone().into(),
            alive: n.alive.into(),
            role: n.role.map(|r| r.as_str().to_string()).into(),
            master_id: n.master_id.clone().into(),
            link_status: n.link_status.clone().into(),
            lag_bytes: n.lag_bytes.into(),
            slots: n.slots.into(),
            cluster_state: n.cluster_state.clone().into(),
            error: n.error.clone().into(),
            memory_used_bytes: n.stats.memory_used_bytes.into(),
            maxmemory_bytes: n.stats.maxmemory_bytes.into(),
            ops_per_sec: n.stats.ops_per_sec.into(),
            keys: n.stats.keys.into(),
            open_slots: (n.open_slots.len() as u32).into(),
            zone: (!n.zone.is_empty()).then(|| n.zone.clone()).into(),
        });
        let shards = report.shards.iter().map(|s| HealthShard {
            shard: s.shard.into(),
            master: s.master.clone().into(),
            master_zone: s.master_zone.clone().into(),
            planned_master_zone: s.planned_master_zone.clone().into(),
            replicas_up: s.replicas_up.into(),
            max_lag_bytes: s.max_lag_bytes.into(),
            slots: s.slots.into(),
            keys: s.keys.into(),
        });
        let healthy =
            report.cluster_state == "ok" && report.slots_covered == redisha_planner::SLOT_COUNT;
        let addresses: Vec<String> = report.nodes.iter().map(|n| n.address.clone()).collect();
        let unpersisted = redisha_cluster::persistence::nodes_without_persistence(
            &addresses,
            password.as_ref(),
            &options,
        )
        .await;
        let last = last_backup(ctx, &config).await?;
        let now = redisha_cluster::identity::unix_now();
        Ok(ClusterHealthModel {
            persistence_on_every_node: unpersisted.is_empty().into(),
            nodes_without_persistence: Attr::Known(unpersisted),
            last_backup_id: last.as_ref().map(|m| m.backup_id.clone()).into(),
            last_backup_time: last
                .as_ref()
                .map(|m| redisha_cluster::backup::utc_stamp(m.started_at))
                .into(),
            last_backup_age_seconds: last
                .as_ref()
                .map(|m| now.saturating_sub(m.started_at))
                .into(),
            cluster_state: report.cluster_state.clone().into(),
            healthy: healthy.into(),
            slots_covered: report.slots_covered.into(),
            nodes: Attr::Known(nodes.collect()),
            shards: Attr::Known(shards.collect()),
            survives_zone_loss: report.survives_zone_loss.into(),
            problems: Attr::Known(report.problems.iter().map(|p| p.message.clone()).collect()),
            ..config
        })
    }
}

/// The plan's layout from a `redisha_cluster`'s `nodes` (entries missing a value are left out).
fn planned_layout(nodes: &[NodeValue]) -> Vec<PlannedNode> {
    nodes
        .iter()
        .filter_map(|n| {
            let role = n.planned_role.value().or(n.role.value())?;
            Some(PlannedNode {
                address: n.address.value()?.clone(),
                name: n.name.value().cloned().unwrap_or_default(),
                zone: n.zone.value().cloned().unwrap_or_default(),
                host: n.host.value().cloned().unwrap_or_default(),
                shard: *n.shard.value()?,
                role: if role == "master" {
                    Role::Master
                } else {
                    Role::Replica
                },
            })
        })
        .collect()
}
