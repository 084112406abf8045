//! `resource "redisha_backup"`: one backup of a running cluster, taken at create (one
//! snapshot per shard from a caught-up replica, a manifest with the SHA-256 of every file),
//! then older backups of the cluster pruned to `retain`. Destroying the resource leaves the
//! backup in place: backups outlive what made them, and `retain` prunes them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use redisha_cluster::backup::{take_backup, utc_stamp, BackupRequest, Manifest};
use redisha_cluster::Password;

use crate::backups;
use crate::model;
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::typed::{ApplyArgs, Outcome, PlanArgs};
use crate::tfplugin::framework::{Applied, Attr, Context, Failed, Planned, Resource};

pub const TYPE_NAME: &str = "redisha_backup";

/// Backups kept per cluster when `retain` is unset.
pub const DEFAULT_RETAIN: u32 = 7;

model! {
    pub struct BackupModel("One backup of a whole Redis Cluster, consistent per shard: each shard's snapshot is taken \
         from a replica once it has every write its master had acknowledged when the backup started (from the \
         master where the shard has no live replica). Written with a manifest (cluster id, engine, slot ranges, key \
         counts, sizes, SHA-256 of every file); older backups of the cluster are then pruned to `retain`. \
         Destroying the resource keeps the backup.") {
        pub cluster_id: Attr<String> = required("The cluster's `cluster_id` (`redisha_cluster.x.cluster_id`): names the backups' folder. Changing it takes a new backup.").requires_replace(),
        pub endpoints: Attr<Vec<String>> = required("host:port of one or more of the cluster's nodes (`redisha_cluster.x.endpoints`)."),
        pub password: Attr<String> = optional("The cluster password, if it has one; with `user`, that user's password.").sensitive(),
        pub user: Attr<String> = optional("The ACL user to log in as (default: `default`). With `default_user_enabled = false`, a `user` of the \
             cluster allowed to take snapshots: rules `-@all +info +cluster|nodes +replconf +sync +psync`."),
        pub destination: Attr<String> = required("A directory, or `s3://bucket/prefix` (with the provider block's AWS connection). \
             The backup goes to `<destination>/<cluster_id>/<backup_id>/`. Changing it takes a new backup.").requires_replace(),
        pub retain: Attr<u32> = optional("Backups of this cluster kept in `destination`, this one included; older ones are removed. Default 7."),
        pub triggers: Attr<BTreeMap<String, String>> = optional("Any change takes a new backup (for example `{ day = formatdate(\"YYYY-MM-DD\", timestamp()) }`).").requires_replace(),
        pub id: Attr<String> = computed("Where the backup is: `<destination>/<cluster_id>/<backup_id>`. Give it to `restore_from` of `redisha_cluster`."),
        pub backup_id: Attr<String> = computed("`<UTC time>Z-<4 hex digits>`; backup ids sort by time."),
        pub created_at: Attr<String> = computed("When the backup started (UTC, `YYYYMMDDThhmmssZ`): every write acknowledged before is in it."),
        pub engine: Attr<String> = computed("The engine the snapshots come from, e.g. `Redis 7.0.15`."),
        pub shards: Attr<u32> = computed("Shards (one snapshot file each)."),
        pub keys: Attr<u64> = computed("Keys in the snapshots."),
        pub bytes: Attr<u64> = computed("Total size of the snapshots."),
    }
}

pub struct BackupResource;

type Failure = Failed<BackupModel, ()>;

fn with_manifest(config: &BackupModel, location: String, m: &Manifest) -> BackupModel {
    BackupModel {
        id: location.into(),
        backup_id: m.backup_id.clone().into(),
        created_at: utc_stamp(m.started_at).into(),
        engine: m.engine.to_string().into(),
        shards: u32::try_from(m.shards.len()).unwrap_or(u32::MAX).into(),
        keys: m.total_keys().into(),
        bytes: m.total_bytes().into(),
        ..config.clone()
    }
}

fn retain_of(m: &BackupModel) -> Result<u32, Diagnostic> {
    match m.retain.value().copied() {
        Some(0) => Err(Diagnostic::error(
            "Invalid retain",
            "retain: keep at least 1 backup (the one this resource takes)",
        )
        .at(AttrPath::attr("retain"))),
        Some(n) => Ok(n),
        None => Ok(DEFAULT_RETAIN),
    }
}

fn endpoint_list(m: &BackupModel) -> Result<Vec<String>, Diagnostic> {
    let list = m.endpoints.value().cloned().unwrap_or_default();
    for (i, e) in list.iter().enumerate() {
        if redisha_cluster::conn::split_address(e).is_none() {
            return Err(Diagnostic::error(
                "Invalid endpoint",
                format!("endpoints[{i}]: write each endpoint as host:port"),
            )
            .at(AttrPath::attr("endpoints").index(i)));
        }
    }
    if list.is_empty() && m.endpoints.value().is_some() {
        return Err(Diagnostic::error(
            "No endpoint",
            "endpoints: give at least one host:port of the cluster",
        )
        .at(AttrPath::attr("endpoints")));
    }
    Ok(list)
}

/// Who a backup logs in as: `user` (`None`: `default`) with `password`, after the operator
/// user when its password is known (`final_backup`).
#[derive(Default)]
pub struct BackupLogin {
    pub user: Option<String>,
    pub password: Option<Password>,
    pub operator_password: Option<Password>,
}

/// Takes a backup of the cluster at `endpoints` into `destination`; what `final_backup` of
/// `redisha_cluster` uses too. Returns the backup's location and manifest.
pub async fn backup_to(
    ctx: &Context,
    destination: &str,
    at: &AttrPath,
    cluster_id: &str,
    endpoints: Vec<String>,
    login: BackupLogin,
    retain: Option<u32>,
) -> Result<(String, Manifest), Diagnostics> {
    let store = backups::open(ctx, destination, at).await?;
    let request = BackupRequest {
        seeds: endpoints,
        user: login.user,
        password: login.password,
        operator_password: login.operator_password,
        cluster_id: cluster_id.to_string(),
        store: store.as_ref(),
        retain,
        scratch: backups::scratch(),
        connect_timeout: backups::CONNECT_TIMEOUT,
        command_timeout: backups::COMMAND_TIMEOUT,
        timeout: std::time::Duration::from_secs(600),
    };
    let manifest = take_backup(&request).await.map_err(|e| {
        Diagnostics::from(Diagnostic::error("The backup failed", e.to_string()).at(at.clone()))
    })?;
    let location = format!(
        "{}/{}/{}",
        store.location().trim_end_matches('/'),
        cluster_id,
        manifest.backup_id
    );
    Ok((location, manifest))
}

#[async_trait]
impl Resource for BackupResource {
    type Model = BackupModel;
    type Private = ();

    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    async fn validate(&self, _ctx: &Context, config: &BackupModel) -> Diagnostics {
        let mut d = Diagnostics::new();
        if let Err(e) = retain_of(config) {
            d.push(e);
        }
        if let Err(e) = endpoint_list(config) {
            d.push(e);
        }
        if let Some(id) = config.cluster_id.value() {
            if !redisha_cluster::identity::is_cluster_id(id) {
                d.push(
                    Diagnostic::error(
                        "Invalid cluster_id",
                        format!("cluster_id: {id:?} is not a redisha cluster id (16 hex digits); use redisha_cluster.x.cluster_id"),
                    )
                    .at(AttrPath::attr("cluster_id")),
                );
            }
        }
        d
    }

    /// An update (retain, endpoints, password) keeps the backup that exists.
    async fn plan(
        &self,
        _ctx: &Context,
        args: PlanArgs<BackupModel, ()>,
    ) -> Result<Planned<BackupModel>, Diagnostics> {
        let state = match (&args.prior, args.creating()) {
            (Some(prior), false) => BackupModel {
                id: prior.id.clone(),
                backup_id: prior.backup_id.clone(),
                created_at: prior.created_at.clone(),
                engine: prior.engine.clone(),
                shards: prior.shards.clone(),
                keys: prior.keys.clone(),
                bytes: prior.bytes.clone(),
                ..args.config
            },
            _ => args.proposed,
        };
        Ok(Planned {
            state,
            diagnostics: Diagnostics::new(),
        })
    }

    async fn create(
        &self,
        ctx: &Context,
        a: ApplyArgs<BackupModel, ()>,
    ) -> Outcome<BackupModel, ()> {
        let c = &a.config;
        let retain = retain_of(c).map_err(Diagnostics::from)?;
        let endpoints = endpoint_list(c).map_err(Diagnostics::from)?;
        let (Some(cluster_id), Some(destination)) = (c.cluster_id.value(), c.destination.value())
        else {
            return Err(Diagnostic::error(
                "Configuration not fully known at apply",
                "Terraform sends known configuration to apply; this is a bug.",
            )
            .into());
        };
        let (location, manifest) = backup_to(
            ctx,
            destination,
            &AttrPath::attr("destination"),
            cluster_id,
            endpoints,
            BackupLogin {
                user: c.user.value().cloned(),
                password: c.password.value().map(Password::new),
                operator_password: None,
            },
            Some(retain),
        )
        .await?;
        Ok(Applied {
            state: with_manifest(c, location, &manifest),
            private: None,
        })
    }

    async fn update(
        &self,
        ctx: &Context,
        prior: BackupModel,
        a: ApplyArgs<BackupModel, ()>,
    ) -> Outcome<BackupModel, ()> {
        let retain = retain_of(&a.config).map_err(Diagnostics::from)?;
        if retain != retain_of(&prior).unwrap_or(DEFAULT_RETAIN) {
            if let (Some(dest), Some(id)) =
                (a.config.destination.value(), a.config.cluster_id.value())
            {
                let store = backups::open(ctx, dest, &AttrPath::attr("destination")).await?;
                redisha_cluster::backup::prune(store.as_ref(), id, retain)
                    .await
                    .map_err(|e| {
                        Diagnostics::from(
                            Diagnostic::error("Pruning old backups failed", e.to_string())
                                .at(AttrPath::attr("retain")),
                        )
                    })?;
            }
        }
        Ok(Applied {
            state: BackupModel {
                id: prior.id,
                backup_id: prior.backup_id,
                created_at: prior.created_at,
                engine: prior.engine,
                shards: prior.shards,
                keys: prior.keys,
                bytes: prior.bytes,
                ..a.planned
            },
            private: None,
        })
    }

    async fn delete(
        &self,
        _ctx: &Context,
        _prior: BackupModel,
        _: Option<()>,
    ) -> Result<(), Failure> {
        Ok(())
    }

    async fn read(
        &self,
        _ctx: &Context,
        state: BackupModel,
        _: Option<()>,
    ) -> Result<Option<Applied<BackupModel, ()>>, Failure> {
        Ok(Some(Applied {
            state,
            private: None,
        }))
    }
}
