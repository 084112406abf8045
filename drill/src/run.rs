//! One drill, start to end: check the cluster is whole, start the traffic, break, watch,
//! heal, stop the traffic, restore the planned layout through the operator (the code
//! `terraform apply` runs) and time it, read every write back, score.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redisha_aws::AwsDriver;
use redisha_cluster::conn::Credential;
use redisha_cluster::{Cancel, ClusterState, NodeConfig, Operator, Options};
use redisha_planner::{migrate, plan, Request, Role};

use crate::drill_driver::DrillDriver;
use crate::ec2_stop::{self, StoppedInstances};
use crate::error::{DrillError, Result};
use crate::failure::{hit_nodes, prediction, Action, Failure};
use crate::inject::{
    check_sends_from_own_address, inject, split_addresses, wait_window, CutSides, Injected,
};
use crate::load::{plan_load, verify, Traffic};
use crate::report::{DrillReport, Restore};
use crate::score::{disagreements, predicted, score, Window};
use crate::{nft, procs, watch};

/// How a drill runs.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// WAIT's timeout for every write.
    pub wait: Duration,
    /// Traffic before the failure, for a baseline.
    pub warm_up: Duration,
    /// Longest wait for `cluster_state:ok` everywhere after a heal (the command's default
    /// depends on the failure: [`crate::timing::default_heal_timeout`]). When it runs out the
    /// report says so (`heal_timed_out`) instead of scoring what an unfinished heal left.
    pub heal_timeout: Duration,
    /// The operator's options for the restore.
    pub operator: Options,
    /// Set by Ctrl-C: the window ends at once, the failure is healed and the cluster restored.
    pub cancel: Cancel,
    /// Where to write every request of the traffic (JSON lines).
    pub log_file: Option<PathBuf>,
    /// Who the traffic logs in as, as a client would: a declared user and its password.
    /// `None`: `default` with the cluster password. A cluster with `default_user_enabled =
    /// false` needs one.
    pub client: Option<Credential>,
}

impl Default for DrillOptions {
    fn default() -> Self {
        DrillOptions {
            wait: Duration::from_millis(50),
            warm_up: Duration::from_secs(1),
            heal_timeout: Duration::from_secs(60),
            operator: Options::default(),
            cancel: Cancel::default(),
            log_file: None,
            client: None,
        }
    }
}

/// The window of a local drill when none is given: long enough for a failover
/// (cluster-node-timeout, then the election) to finish with time to spare. By failure kind:
/// [`crate::timing::default_window_for`].
pub fn default_window(node_timeout_ms: u64) -> Duration {
    crate::timing::failover_window(node_timeout_ms)
}

pub fn node_timeout_ms(config: &NodeConfig) -> u64 {
    config.node_timeout_ms().parse().unwrap_or(5000)
}

/// Runs `failure` against the cluster of `state` (rebuilt from the driver and the live
/// cluster, as `Target::locate` does) and reports. An `Err` means the drill could not run or
/// could not heal; a drill that ran returns its report, passed or not.
pub async fn run<'a>(
    driver: impl Into<DrillDriver<'a>>,
    request: &Request,
    config: &NodeConfig,
    mut state: ClusterState,
    failure: &Failure,
    opts: &DrillOptions,
) -> Result<DrillReport> {
    let driver = driver.into();
    driver.check(failure.action)?;
    // The traffic logs in as a client would; the drill's own work (layout, restore) as the
    // operator user, through `op`.
    let login = opts
        .client
        .clone()
        .unwrap_or_else(|| Credential::default_user(config.password.clone()));
    let hit = hit_nodes(request, &state, &failure.scope)?;
    let outcome = prediction(request, &state, &failure.scope)?;
    let expected = predicted(&state, &hit, &outcome);
    let op = Operator::with_options(driver.driver(), config.clone(), opts.operator.clone());
    if let DrillDriver::Aws { driver, record_dir } = driver {
        // Before the layout check: instances a killed drill left stopped are why it drifts.
        for id in ec2_stop::start_leftovers(driver, record_dir, &state.cluster_id).await? {
            tracing::warn!(instance_id = %id, "started an instance an interrupted drill left stopped");
        }
    }
    let drift = layout_drift(&op, &state).await;
    if !drift.is_empty() {
        return Err(DrillError::Failure(format!(
            "the cluster is not in its planned layout ({}); run `terraform apply` first",
            drift.join("; ")
        )));
    }
    let breaker = Breaker::prepare(driver, &state, failure, &hit).await?;
    if failure.action == Action::Partition {
        check_source_addresses(&op, &state).await?;
    }

    let loads = plan_load(&state);
    let traffic = Traffic::new(Instant::now());
    let started_unix_ms = unix_ms_now();
    let tasks = traffic.start(&loads, login.clone(), opts.wait);
    let targets = state.targets();
    let (samples, watcher) = watch::start(&traffic, targets, login.clone());
    tokio::time::sleep(opts.warm_up).await;

    let broken = breaker.inject(failure.action, &state.cluster_id).await?;
    // The failure is in force once the signals are sent, nft returned or EC2 accepted the
    // stop: writes acknowledged before that are not "after the cut".
    let failed_at = traffic.now_ms();
    wait_window(failure.window, &opts.cancel).await;
    let healed_at = traffic.now_ms();
    broken.heal().await?;
    let all: Vec<usize> = (0..state.nodes.len()).collect();
    let survivors: Vec<usize> = state
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| !hit.contains(&n.name))
        .map(|(i, _)| i)
        .collect();
    let mut all_ok_after_heal = None;
    if failure.action != Action::Crash {
        let until = Instant::now() + opts.heal_timeout;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let s = samples.lock().map(|s| s.clone()).unwrap_or_default();
            // Ok for a full second, not a single lucky sample.
            if let Some(t) = watch::ok_from(&s, &all, healed_at, f64::MAX) {
                if traffic.now_ms() - t > 1000.0 {
                    all_ok_after_heal = Some(t - healed_at);
                    break;
                }
            }
        }
    }
    traffic.stop();
    for t in tasks {
        let _ = t.await;
    }
    let _ = watcher.await;
    let events = traffic.events();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let survivors_ok = watch::ok_from(&samples, &survivors, failed_at, healed_at);

    // A crash has nothing to heal (the restore restarts the nodes); anything else that is not
    // back everywhere within the bound ran out of time.
    let heal_timed_out = failure.action != Action::Crash && all_ok_after_heal.is_none();
    if heal_timed_out {
        tracing::warn!(
            heal_timeout = ?opts.heal_timeout,
            "not every node said cluster_state:ok within the heal timeout; restoring anyway"
        );
    }

    let restore = restore(&op, request, &mut state).await;
    let mut lost = Vec::new();
    let mut unverified = Vec::new();
    for load in &loads {
        match verify(load, &events, &login).await {
            Ok(l) => lost.push(l),
            // After a heal that ran out of time a shard may have no master yet: its writes are
            // unread, not lost.
            Err(e) if heal_timed_out => {
                tracing::warn!(shard = load.shard, error = %e, "writes not read back");
                unverified.push(load.shard);
                lost.push((Vec::new(), Vec::new()));
            }
            Err(e) => return Err(DrillError::Failure(e)),
        }
    }
    let window = Window {
        failed_at,
        healed_at,
        survivors_ok: survivors_ok.is_some(),
        partition: failure.action == Action::Partition,
    };
    let scored = score(&state, &loads, &events, &hit, &expected, window, &lost);
    let mut log = None;
    if let Some(path) = &opts.log_file {
        write_log(path, &events)?;
        log = Some(path.display().to_string());
    }
    Ok(DrillReport {
        cluster: state.name.clone(),
        failure: failure.clone(),
        label: failure.label(),
        node_timeout_ms: node_timeout_ms(config),
        wait_ms: opts.wait.as_millis() as u64,
        hit_nodes: hit,
        disagreements: disagreements(&expected, &scored.observed),
        predicted: expected,
        observed: scored.observed,
        survivors_ok_after_ms: survivors_ok.map(|t| t - failed_at),
        all_ok_after_heal_ms: all_ok_after_heal,
        heal_timeout_ms: opts.heal_timeout.as_millis() as u64,
        heal_timed_out,
        unverified_shards: unverified,
        failed_at_unix_ms: started_unix_ms + failed_at,
        healed_at_unix_ms: started_unix_ms + healed_at,
        shards: scored.shards,
        restore,
        log,
    })
}

/// What a failure acts on, found before the traffic starts.
enum Breaker<'a> {
    Local {
        cluster_dir: PathBuf,
        processes: Vec<procs::NodeProcess>,
        side: Vec<String>,
        rest: Vec<String>,
    },
    Aws {
        driver: &'a AwsDriver,
        record_dir: &'a Path,
        instances: Vec<String>,
    },
}

/// A failure in force.
enum Broken<'a> {
    Local(Injected),
    Aws(StoppedInstances<'a>),
}

impl<'a> Breaker<'a> {
    async fn prepare(
        driver: DrillDriver<'a>,
        state: &ClusterState,
        failure: &Failure,
        hit: &[String],
    ) -> Result<Breaker<'a>> {
        match driver {
            DrillDriver::Local(driver) => {
                let cluster_dir = driver.config().data_dir.join(&state.cluster_id);
                for table in nft::remove_leftovers(&cluster_dir)? {
                    tracing::warn!(%table, "removed a partition an interrupted drill left behind");
                }
                let processes = procs::find(driver, hit).await?;
                let (side, rest) = split_addresses(
                    state
                        .nodes
                        .iter()
                        .map(|n| (n.name.as_str(), n.handle.ip.as_str())),
                    hit,
                );
                Ok(Breaker::Local {
                    cluster_dir,
                    processes,
                    side,
                    rest,
                })
            }
            DrillDriver::Aws { driver, record_dir } => Ok(Breaker::Aws {
                driver,
                record_dir,
                instances: ec2_stop::instances_to_stop(driver, state, &failure.scope, hit).await?,
            }),
        }
    }

    async fn inject(self, action: Action, cluster_id: &str) -> Result<Broken<'a>> {
        match self {
            Breaker::Local {
                cluster_dir,
                processes,
                side,
                rest,
            } => Ok(Broken::Local(inject(
                action,
                &processes,
                CutSides {
                    cluster_dir: &cluster_dir,
                    cluster_id,
                    side: &side,
                    rest: &rest,
                },
            )?)),
            Breaker::Aws {
                driver,
                record_dir,
                instances,
            } => Ok(Broken::Aws(
                ec2_stop::stop(driver, record_dir, cluster_id, instances).await?,
            )),
        }
    }
}

impl Broken<'_> {
    /// Lifts the failure: SIGCONT, rules removed, or the instances started and running.
    async fn heal(self) -> Result<()> {
        match self {
            Broken::Local(injected) => injected.heal(),
            Broken::Aws(stopped) => {
                let started = stopped.start_again().await?;
                tracing::info!(instances = ?started, "started the stopped instances again");
                Ok(())
            }
        }
    }
}

/// Now, in ms since the Unix epoch (0 on a clock set before it).
pub(crate) fn unix_ms_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// A partition's rules name host addresses: every node must send from its own.
async fn check_source_addresses(op: &Operator<'_>, state: &ClusterState) -> Result<()> {
    let mut conns = redisha_cluster::conn::Conns::new(
        op.config().password.clone(),
        Duration::from_secs(2),
        Duration::from_secs(2),
    );
    conns.set_operator_passwords(op.config().acl.operator_password.iter().cloned().collect());
    check_sends_from_own_address(
        &conns,
        state
            .nodes
            .iter()
            .map(|n| (n.target(), n.handle.ip.clone())),
    )
    .await
}

/// What differs from the planned layout: down nodes, roles, slots, replicas of the wrong
/// master, cluster_state.
async fn layout_drift(op: &Operator<'_>, state: &ClusterState) -> Vec<String> {
    let seen = op.observe(state).await;
    let mut drift = seen.drift();
    for n in &state.nodes {
        let Some(o) = seen.node(&n.name) else {
            drift.push(format!("node {} was not observed", n.name));
            continue;
        };
        if n.role == Role::Master && o.view.alive && o.view.slots != n.slots {
            drift.push(format!("master {} serves other slots than planned", n.name));
        }
        if n.role == Role::Replica && o.view.alive {
            let master = state
                .nodes
                .iter()
                .find(|m| m.shard == n.shard && m.role == Role::Master);
            if o.master_name.as_deref() != master.map(|m| m.name.as_str()) {
                drift.push(format!(
                    "replica {} does not follow its planned master",
                    n.name
                ));
            }
        }
    }
    drift
}

/// What `terraform apply` runs on an existing cluster: recover, finish open slots, repair,
/// then the planner's migration steps (none when nothing but failures changed). Timed.
async fn restore(op: &Operator<'_>, request: &Request, state: &mut ClusterState) -> Restore {
    let started = Instant::now();
    let mut actions = Vec::new();
    let result: Result<()> = async {
        actions.extend(op.recover(state).await?);
        actions.extend(op.finish_open_slots(state).await?);
        actions.extend(op.repair(request, state).await?.actions);
        let planned = plan(request, Some(&state.placement()))?;
        let steps = migrate::steps(&state.placement(), &planned.placement)
            .map_err(|e| DrillError::Failure(format!("no safe migration back to the plan: {e}")))?;
        op.update(request, &planned.placement, &steps, state)
            .await?;
        actions.extend(steps.iter().map(|s| format!("{s:?}")));
        op.wait_converged(state).await?;
        Ok(())
    }
    .await;
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    let drift = layout_drift(op, state).await;
    Restore {
        took_ms,
        actions,
        planned_layout: result.is_ok() && drift.is_empty(),
        drift,
        error: result.err().map(|e| e.to_string()),
    }
}

fn write_log(path: &std::path::Path, events: &[crate::load::Event]) -> Result<()> {
    let mut text = String::new();
    for e in events {
        if let Ok(line) = serde_json::to_string(e) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    std::fs::write(path, text).map_err(DrillError::io(format!("writing {}", path.display())))
}
