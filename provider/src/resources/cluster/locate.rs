//! Finding the cluster a plan, apply, read or destroy works on. The private state is a cache;
//! the truth is what the driver finds carrying the cluster's id and what the live cluster says
//! (`Operator::recover`). So a provider killed mid-apply, which leaves Terraform with no
//! private state (or, for a create, no resource at all), loses nothing: the next run finds the
//! nodes by the id (from the `cluster_id` attribute, or from the cluster record in `data_dir`
//! for a create that never finished).

use redisha_cluster::identity::{new_cluster_id, ClusterRecord, ClusterStatus};
use redisha_cluster::{ClusterState, Operator, Options, Password};
use redisha_planner::Request;
use tracing::{info, warn};

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::Context;

use super::adopt;
use super::args::{ClusterArgs, DriverArgs};
use super::drivers::{self, BuiltDriver};

/// What a run acts on.
pub struct Located {
    pub driver: BuiltDriver,
    pub request: Request,
    pub state: ClusterState,
    /// What recovery found that the cache did not say (for the log and the plan).
    pub notes: Vec<String>,
}

/// Operator options for one call: the timeout, the data-loss opt-in, and Ctrl-C.
pub fn options(ctx: &Context, timeout: std::time::Duration, allow_data_loss: bool) -> Options {
    let options = Options {
        timeout,
        allow_data_loss,
        ..Options::default()
    };
    let cancel = options.cancel.clone();
    if ctx.stop.is_stopped() {
        cancel.cancel();
    } else {
        // StopProvider reaches the operator at its next checkpoint.
        let stop = ctx.stop.clone();
        tokio::spawn(async move {
            stop.stopped().await;
            cancel.cancel();
        });
    }
    options
}

/// An operator that also tries `other_password` (the one the prior state was applied with):
/// a rotation cut short leaves nodes that accept only one of the two.
pub fn operator<'a>(
    driver: &'a BuiltDriver,
    args: &ClusterArgs,
    password: Option<Password>,
    other_password: Option<Password>,
    options: Options,
) -> Operator<'a> {
    let mut config = args.node_config.clone();
    config.password = password;
    let mut op = Operator::with_options(driver.driver(), config, options);
    op.also_accept([other_password]);
    op
}

/// Where the driver keeps its clusters' records (in words, and the attribute that chooses it):
/// a create of a name already there is refused or resumed.
fn record_place(args: &ClusterArgs) -> (&'static str, AttrPath) {
    match args.driver {
        DriverArgs::Local(_) => ("data_dir", AttrPath::attr("local").then("data_dir")),
        DriverArgs::Aws(_) => (
            "VPC (of aws.subnet_ids)",
            AttrPath::attr("aws").then("subnet_ids"),
        ),
    }
}

fn data_dir_path(args: &ClusterArgs) -> AttrPath {
    record_place(args).1
}

/// For a create: the interrupted create of this cluster to resume (its record says
/// `creating` and its provider process is gone), if any. A finished cluster of the same name
/// in the same place belongs to another Terraform state: refused, never adopted.
pub async fn resumable_create(
    driver: &BuiltDriver,
    args: &ClusterArgs,
) -> Result<Option<ClusterRecord>, Diagnostics> {
    let (place, at) = record_place(args);
    resumable_create_in(driver.driver(), &args.name, place, at).await
}

/// [`resumable_create`] for any resource whose driver keeps records: `place` names where (in
/// words), `at` the attribute that chooses it.
pub async fn resumable_create_in(
    driver: &dyn redisha_cluster::Driver,
    name: &str,
    place: &str,
    at: AttrPath,
) -> Result<Option<ClusterRecord>, Diagnostics> {
    let found = driver.find_clusters().await.map_err(|e| {
        Diagnostics::from(Diagnostic::error(
            "Cannot look for existing clusters",
            e.to_string(),
        ))
    })?;
    let mut resumable = None;
    for record in found.into_iter().filter(|r| r.name == name) {
        if record.status == ClusterStatus::Ready {
            return Err(Diagnostic::error(
                format!("Another cluster of this name lives in this {place}"),
                format!(
                    "The {place} already holds a running cluster named {:?} (cluster_id {}), created by another Terraform state or workspace. redisha never adopts or touches it. Fix: give this cluster another name or {place}, or take that one over with `terraform import`: one of its node addresses, HOST:PORT (local) or {}@HOST:PORT (aws).",
                    record.name, record.cluster_id, record.cluster_id
                ),
            )
            .at(at.clone())
            .into());
        }
        if !record.is_abandoned_create() {
            return Err(Diagnostic::error(
                "This cluster is being created right now",
                format!(
                    "Another terraform apply (provider {}) is creating cluster {:?} (cluster_id {}) here. Wait for it to finish; redisha does not run two applies on one cluster. An apply killed on another machine is resumed here once its lease (renewed every {}s while it works) has run out, {}s after it stopped.",
                    record.owner(),
                    record.name,
                    record.cluster_id,
                    redisha_cluster::identity::LEASE_RENEWAL.as_secs(),
                    redisha_cluster::identity::CREATE_LEASE.as_secs(),
                ),
            )
            .at(at.clone())
            .into());
        }
        resumable.get_or_insert(record);
    }
    Ok(resumable)
}

/// For a create: the driver, the request and the state to create into, resuming an
/// interrupted create of this cluster when there is one. With `write`, the cluster record is
/// written (status `creating`, this process as owner) before anything starts.
pub async fn for_create(
    ctx: &Context,
    args: &ClusterArgs,
    write: bool,
) -> Result<Located, Diagnostics> {
    let (driver, request) = drivers::build(ctx, args, None).await?;
    let resume = resumable_create(&driver, args).await?;
    let resuming = resume.is_some();
    let id = match (resume, write) {
        (Some(r), _) => r.cluster_id,
        (None, true) => new_cluster_id().map_err(|e| {
            Diagnostics::from(Diagnostic::error(
                "Cannot make a cluster id",
                format!("reading /dev/urandom failed: {e}"),
            ))
        })?,
        (None, false) => {
            let state = ClusterState::new(driver.driver().kind());
            return Ok(Located {
                driver,
                request,
                state,
                notes: Vec::new(),
            });
        }
    };
    let mut driver = driver.for_cluster(&id, &args.name).await?;
    if write {
        let record = ClusterRecord::new(&id, &args.name, ClusterStatus::Creating);
        driver.driver().record_cluster(&record).await.map_err(|e| {
            Diagnostics::from(
                Diagnostic::error("Cannot record the cluster", e.to_string())
                    .at(data_dir_path(args)),
            )
        })?;
        // Beside the record, before any node starts: a resumed create finds it there.
        driver.make_authority().await?;
        driver.make_operator_password(args).await?;
        driver
            .record_operator_generation(args.operator_password_generation)
            .await?;
    }
    let mut state = ClusterState::new(driver.driver().kind());
    state.cluster_id = id;
    state.name = args.name.clone();
    let mut notes = Vec::new();
    if resuming {
        let op = operator(
            &driver,
            args,
            args.node_config.password.clone(),
            None,
            options(ctx, args.timeouts.create, args.allow_data_loss),
        );
        notes = op.recover(&mut state).await.map_err(|e| {
            Diagnostics::from(Diagnostic::error(
                "Cannot read the interrupted create",
                e.to_string(),
            ))
        })?;
        notes.insert(
            0,
            format!(
                "an interrupted create of cluster {:?} (cluster_id {}) was found with {} node(s) already started: apply resumes it",
                args.name,
                state.cluster_id,
                state.nodes.len()
            ),
        );
    }
    Ok(Located {
        driver,
        request,
        state,
        notes,
    })
}

/// For an existing resource: the cached state made true from the driver and the cluster.
/// `cluster_id` comes from the cache or the resource's `cluster_id` attribute. A state made
/// before cluster ids existed gets one when `write` (apply, destroy): the id is recorded on
/// the cluster and on each node it names, which is what makes them findable afterwards.
pub async fn existing(
    ctx: &Context,
    args: &ClusterArgs,
    cached: Option<ClusterState>,
    prior_cluster_id: Option<&str>,
    password: Option<Password>,
    other_password: Option<Password>,
    write: bool,
) -> Result<Located, Diagnostics> {
    let cached = match cached {
        Some(c) if c.driver == adopt::IMPORTED => {
            Some(adopt::adopt(ctx, args, &c, [password.clone(), other_password.clone()]).await?)
        }
        other => other,
    };
    let (driver, request) = drivers::build(ctx, args, cached.as_ref()).await?;
    let had_cache = cached.is_some();
    let id = cached
        .as_ref()
        .map(|c| c.cluster_id.clone())
        .filter(|id| !id.is_empty())
        .or_else(|| prior_cluster_id.map(str::to_string));
    let (driver, mut state) = match (cached, id) {
        (Some(mut c), Some(id)) => {
            c.cluster_id = id.clone();
            c.name = args.name.clone();
            (driver.for_cluster(&id, &args.name).await?, c)
        }
        (None, Some(id)) => {
            info!(cluster = %args.name, cluster_id = %id, "no private state: finding the nodes by the cluster id");
            let mut c = ClusterState::new(driver.driver().kind());
            c.cluster_id = id.clone();
            c.name = args.name.clone();
            (driver.for_cluster(&id, &args.name).await?, c)
        }
        (Some(c), None) if !write => (driver, c),
        (Some(mut c), None) => {
            let id = new_cluster_id().map_err(|e| {
                Diagnostics::from(Diagnostic::error("Cannot make a cluster id", e.to_string()))
            })?;
            info!(cluster = %args.name, cluster_id = %id, "giving a cluster of an older state its id");
            c.cluster_id = id.clone();
            c.name = args.name.clone();
            let driver = driver.for_cluster(&id, &args.name).await?;
            claim(&driver, &c).await?;
            (driver, c)
        }
        (None, None) => {
            return Err(Diagnostic::error(
                "Cannot find the cluster",
                "The resource has neither private state nor a cluster_id (it was made by an older provider and its private state was lost). Fix: `terraform state rm` it, then `terraform import` it by one node's address: HOST:PORT (local) or CLUSTER_ID@HOST:PORT (aws).",
            )
            .into())
        }
    };
    let op = operator(
        &driver,
        args,
        password,
        other_password,
        options(ctx, args.timeouts.update, args.allow_data_loss),
    );
    let notes = if state.cluster_id.is_empty() {
        Vec::new()
    } else {
        match op.recover(&mut state).await {
            Ok(notes) => notes,
            // With a cache the run can go on from it (and keeps the id a claim just gave it);
            // without one there is nothing to go on.
            Err(e) if had_cache => {
                warn!(cluster = %args.name, error = %e, "cannot read the cluster; going on from the private state");
                Vec::new()
            }
            Err(e) => {
                return Err(Diagnostic::error("Cannot read the cluster", e.to_string()).into())
            }
        }
    };
    // Every node's record is rewritten on a run that writes: records missing from nodes made
    // by an older provider (which the driver could not find above) are in place from now on.
    if write && !state.cluster_id.is_empty() {
        if let Err(e) = op.record_nodes(&state).await {
            warn!(cluster = %args.name, error = %e, "cannot record the nodes; the next apply tries again");
        }
    }
    drop(op);
    Ok(Located {
        driver,
        request,
        state,
        notes,
    })
}

/// Records a fresh id on the cluster and on every node of an older state.
async fn claim(driver: &BuiltDriver, state: &ClusterState) -> Result<(), Diagnostics> {
    let record = ClusterRecord::new(&state.cluster_id, &state.name, ClusterStatus::Ready);
    driver.driver().record_cluster(&record).await.map_err(|e| {
        Diagnostics::from(Diagnostic::error(
            "Cannot record the cluster",
            e.to_string(),
        ))
    })?;
    for n in &state.nodes {
        if let Err(e) = driver
            .driver()
            .record_node(&n.handle, &state.record_of(n))
            .await
        {
            warn!(node = %n.name, error = %e, "cannot record the cluster id on the node");
        }
    }
    Ok(())
}
