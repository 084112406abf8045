//! One sentinel-mode drill, start to end: check the deployment is in its planned layout,
//! start the traffic, break, watch what the sentinels name, heal, restore the planned layout
//! with the code `terraform apply` runs for `redisha_sentinel` (repair, then the planned
//! primary back through `SENTINEL FAILOVER`) and time it, read every write back, score.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redisha_cluster::conn::{Conns, Target};
use redisha_cluster::sentinel::{SentinelOperator, SentinelSettings, SentinelState};
use redisha_cluster::{LocalDriver, NodeConfig, Operator, Password};
use redisha_planner::sentinel::{failures_as_placed, SentinelFailure};
use redisha_planner::{FailureKind, PartitionSpec, Placement, Request, Sentinel};

use super::client::{self, pick, DataNodes, Sentinels, Writer};
use super::report::{IsolatedPrimary, SentinelDrillReport, SentinelVerdict};
use crate::error::{DrillError, Result};
use crate::failure::{cut_zones, Action, Failure, Scope};
use crate::inject::{check_sends_from_own_address, inject, split_addresses, wait_window, CutSides};
use crate::load::{Event, Traffic};
use crate::report::Restore;
use crate::run::{unix_ms_now, DrillOptions};
use crate::score::longest_gap;
use crate::{nft, procs};

/// Every sentinel's answer (`ip:port` or none) at a time, in ms since the drill started.
type Samples = Arc<Mutex<Vec<(f64, Vec<Option<String>>)>>>;

/// How often the drill asks every sentinel which primary it names.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// A shard counts as writable at the end of the window when it accepted a write in this last
/// stretch of it (as in the cluster drill).
const END_STRETCH_MS: f64 = 500.0;
/// The name of the partition a zone cut is predicted as (the planner reports declared
/// partitions; a drill on an undeclared zone declares it for the prediction only).
const ZONE_CUT: &str = "drill-zone-cut";

/// A sentinel-mode deployment as the drill needs it: the driver, the plan it was made from
/// (data placement and sentinels) and its settings.
pub struct SentinelDeployment<'a> {
    pub driver: &'a LocalDriver,
    pub request: &'a Request,
    pub config: &'a NodeConfig,
    pub settings: &'a SentinelSettings,
    pub cluster_id: &'a str,
    pub placement: &'a Placement,
    pub sentinels: &'a [Sentinel],
    /// The sentinels' own password when it is not the data nodes' (`sentinel_password`);
    /// `None`: they use `config.password`.
    pub sentinel_password: Option<Password>,
}

impl SentinelDeployment<'_> {
    /// The password the sentinels take.
    fn sentinel_password(&self) -> Option<Password> {
        self.sentinel_password
            .clone()
            .or_else(|| self.config.password.clone())
    }
}

/// The window a sentinel drill uses when none is given: long enough for the failover
/// (down-after-milliseconds, then the election and the promotion) and for a cut-off primary
/// to start refusing writes (its replicas' lag passes min-replicas-max-lag, counted in whole
/// seconds once a second).
pub fn sentinel_window(settings: &SentinelSettings) -> Duration {
    let failover = 2 * settings.down_after_ms + 3000;
    let refusal = (u64::from(settings.min_replicas_max_lag) + 3) * 1000;
    Duration::from_millis(failover.max(refusal))
}

/// Runs `failure` against the deployment of `state` and reports. An `Err` means the drill
/// could not run or could not heal; a drill that ran returns its report, passed or not.
pub async fn run_sentinel(
    d: &SentinelDeployment<'_>,
    mut state: SentinelState,
    failure: &Failure,
    opts: &DrillOptions,
) -> Result<SentinelDrillReport> {
    let sop = SentinelOperator::new(
        Operator::with_options(d.driver, d.config.clone(), opts.operator.clone()),
        d.settings.clone(),
        d.cluster_id,
    )
    .with_sentinel_password(d.sentinel_password.clone());
    let planned = state
        .planned_primary()
        .cloned()
        .ok_or_else(|| DrillError::Failure("the deployment has no planned primary".into()))?;
    let hit = hit_members(d.request, &state, &failure.scope)?;
    let prediction = prediction(d, failure)?;
    let predicted = SentinelVerdict {
        failover: prediction.failover,
        writable: prediction.writable,
        isolated_primary_accepts_writes: prediction.isolated_primary_accepts_writes,
    };
    let drift = drift(&sop, &state).await;
    if !drift.is_empty() {
        return Err(DrillError::Failure(format!(
            "the deployment is not in its planned layout ({}); run `terraform apply` first",
            drift.join("; ")
        )));
    }
    let cluster_dir = d.driver.config().data_dir.join(d.cluster_id);
    for table in nft::remove_leftovers(&cluster_dir)? {
        tracing::warn!(%table, "removed a partition an interrupted drill left behind");
    }
    let processes = procs::find(d.driver, &hit).await?;
    let (side, rest) = split_addresses(
        state
            .data
            .iter()
            .chain(state.sentinels.iter())
            .map(|m| (m.handle.name.as_str(), m.handle.ip.as_str())),
        &hit,
    );
    if failure.action == Action::Partition {
        check_source_addresses(&sop, &state).await?;
    }

    let password = d.config.password.clone();
    let replicas = state.data.len().saturating_sub(1) as u32;
    let sentinel_targets: Vec<Target> = state.sentinels.iter().map(|m| m.target()).collect();
    let nodes = DataNodes {
        targets: state.data.iter().map(|m| m.target()).collect(),
    };
    let started = Instant::now();
    let started_unix_ms = unix_ms_now();
    let main = Traffic::new(started);
    let mut tasks = vec![tokio::spawn(client::follow(
        main.clone(),
        Sentinels::new(
            sentinel_targets.clone(),
            &d.settings.master_name,
            d.sentinel_password(),
        ),
        nodes,
        Writer::new("s", password.clone(), replicas, opts.wait),
    ))];
    // A client on the cut-off primary's side: it can reach only that primary.
    let cut_primary = failure.action == Action::Partition && hit.contains(&planned.handle.name);
    let isolated = Traffic::new(started);
    let pinned = cut_primary.then(|| {
        tokio::spawn(client::pinned(
            isolated.clone(),
            planned.target(),
            Writer::new("iso", password.clone(), replicas, opts.wait),
        ))
    });
    let samples: Samples = Default::default();
    tasks.push(tokio::spawn(watch(
        main.clone(),
        Sentinels::new(
            sentinel_targets,
            &d.settings.master_name,
            d.sentinel_password(),
        ),
        samples.clone(),
    )));
    tokio::time::sleep(opts.warm_up).await;

    let injected = inject(
        failure.action,
        &processes,
        CutSides {
            cluster_dir: &cluster_dir,
            cluster_id: d.cluster_id,
            side: &side,
            rest: &rest,
        },
    )?;
    let failed_at = main.now_ms();
    wait_window(failure.window, &opts.cancel).await;
    let healed_at = main.now_ms();
    // The cut side's client ends with the cut: after the heal it is no longer cut off.
    isolated.stop();
    injected.heal()?;
    if let Some(p) = pinned {
        let _ = p.await;
    }
    if failure.action != Action::Crash {
        // The resumed or reconnected old primary is turned into a replica by the sentinels;
        // the traffic runs on until they agree again.
        let until = Instant::now() + opts.heal_timeout;
        while Instant::now() < until && !sentinels_agree(&sop, &state).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    main.stop();
    for t in tasks {
        let _ = t.await;
    }
    let events = main.events();
    let isolated_events = isolated.events();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();

    let restore = restore(&sop, &mut state, opts.heal_timeout).await;
    let view = sop.observe(&state).await;
    let primary = view
        .primary
        .as_deref()
        .and_then(|p| state.data_node(p))
        .map(|m| m.target())
        .ok_or_else(|| {
            DrillError::Failure(
                "no primary named by a majority of sentinels to read the writes back from".into(),
            )
        })?;
    let conns = Conns::new(
        password.clone(),
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    let (acked_lost, unacked_lost) = client::verify(&conns, &primary, "s", &events)
        .await
        .map_err(DrillError::Failure)?;
    let isolated_lost = client::verify(&conns, &primary, "iso", &isolated_events)
        .await
        .map_err(DrillError::Failure)?;

    let planned_address = planned.address();
    let failover_at = samples.iter().find(|(t, named)| {
        let (primary, majority) = pick(named, state.sentinels.len());
        *t >= failed_at && *t <= healed_at && majority && primary.as_ref() != Some(&planned_address)
    });
    let in_window = |e: &&Event| e.t_ms >= failed_at && e.t_ms <= healed_at;
    let end_stretch =
        |e: &&Event| e.ok && e.t_ms > healed_at - END_STRETCH_MS && e.t_ms <= healed_at;
    let lost = |seq: u64| acked_lost.contains(&seq) || unacked_lost.contains(&seq);
    let accepted: Vec<f64> = events.iter().filter(|e| e.ok).map(|e| e.t_ms).collect();
    let kept: Vec<f64> = events
        .iter()
        .filter(|e| e.ok && !lost(e.seq))
        .map(|e| e.t_ms)
        .collect();
    let isolated_report = cut_primary.then(|| {
        let after: Vec<&Event> = isolated_events.iter().filter(in_window).collect();
        let ok: Vec<&&Event> = after.iter().filter(|e| e.ok).collect();
        let refused: Vec<&&Event> = after
            .iter()
            .filter(|e| !e.ok && !e.error.as_deref().unwrap_or("").contains("no reply"))
            .collect();
        IsolatedPrimary {
            node: planned.handle.name.clone(),
            accepted: ok.len() as u64,
            acked: ok.iter().filter(|e| e.acked).count() as u64,
            lost_after_heal: ok
                .iter()
                .filter(|e| isolated_lost.0.contains(&e.seq) || isolated_lost.1.contains(&e.seq))
                .count() as u64,
            // Over all its writes, before the cut too: none acknowledged may be lost.
            acked_lost: isolated_lost.0.len() as u64,
            refused: refused.len() as u64,
            refused_after_ms: refused.first().map(|e| e.t_ms - failed_at),
            last_accepted_after_ms: ok.last().map(|e| e.t_ms - failed_at),
        }
    });
    let observed = SentinelVerdict {
        failover: failover_at.is_some(),
        writable: events
            .iter()
            .filter(end_stretch)
            .any(|e| !hit.contains(&e.node))
            || isolated_events.iter().any(|e| end_stretch(&e)),
        isolated_primary_accepts_writes: cut_primary
            && isolated_events.iter().any(|e| end_stretch(&e)),
    };
    let disagreements = disagreements(&predicted, &observed, failure.action == Action::Partition);
    Ok(SentinelDrillReport {
        master_name: d.settings.master_name.clone(),
        failure: failure.clone(),
        label: failure.label(),
        down_after_ms: d.settings.down_after_ms,
        min_replicas_to_write: d.settings.min_replicas_to_write,
        min_replicas_max_lag: d.settings.min_replicas_max_lag,
        wait_ms: opts.wait.as_millis() as u64,
        hit,
        prediction,
        predicted,
        observed,
        disagreements,
        failover_after_ms: failover_at.map(|(t, _)| t - failed_at),
        write_outage_ms: longest_gap(&kept, failed_at, healed_at),
        longest_accepted_gap_ms: longest_gap(&accepted, failed_at, healed_at),
        writes_acked: events.iter().filter(|e| e.ok && e.acked).count() as u64,
        writes_unacked: events.iter().filter(|e| e.ok && !e.acked).count() as u64,
        writes_failed: events.iter().filter(|e| !e.ok).count() as u64,
        acked_lost: acked_lost.len() as u64,
        unacked_lost: unacked_lost.len() as u64,
        primary_at_end: events
            .iter()
            .rfind(|e| e.ok && e.t_ms <= healed_at)
            .map(|e| e.node.clone()),
        isolated: isolated_report,
        failed_at_unix_ms: started_unix_ms + failed_at,
        healed_at_unix_ms: started_unix_ms + healed_at,
        restore,
    })
}

/// The members (data nodes and sentinels, by name) a failure hits.
fn hit_members(request: &Request, state: &SentinelState, scope: &Scope) -> Result<Vec<String>> {
    let zones = cut_zones(request, scope)?;
    let hit: Vec<String> = state
        .data
        .iter()
        .chain(state.sentinels.iter())
        .filter(|m| match scope {
            Scope::Host(h) => &m.handle.host == h,
            _ => zones.contains(&m.zone),
        })
        .map(|m| m.handle.name.clone())
        .collect();
    if hit.is_empty() {
        return Err(DrillError::Failure(format!(
            "{scope:?} runs no process of this deployment: nothing to drill"
        )));
    }
    Ok(hit)
}

/// The planner's row for this failure, the deployment as placed (its planned primary).
fn prediction(d: &SentinelDeployment<'_>, failure: &Failure) -> Result<SentinelFailure> {
    let mut request = d.request.clone();
    let (kind, name) = match (&failure.action, &failure.scope) {
        (Action::Partition, Scope::Host(_)) => {
            return Err(DrillError::Failure(
                "sentinel mode: partition a --zone or a declared --partition side; the planner predicts partitions between zones".into(),
            ))
        }
        (Action::Partition, Scope::Zone(z)) => {
            request.partitions = vec![PartitionSpec {
                name: ZONE_CUT.into(),
                side: vec![z.clone()],
            }];
            (FailureKind::PartitionSide, ZONE_CUT.to_string())
        }
        (_, Scope::Host(h)) => (FailureKind::Host, h.clone()),
        (_, Scope::Zone(z)) => (FailureKind::Zone, z.clone()),
        (_, Scope::DeclaredSide(p) | Scope::OtherSide(p)) => (FailureKind::PartitionSide, p.clone()),
    };
    failures_as_placed(&request, d.placement, d.sentinels)
        .into_iter()
        .find(|f| f.kind == kind && f.name == name)
        .ok_or_else(|| {
            DrillError::Failure(format!(
                "the sentinel report has no outcome for {:?}; is it in the request?",
                failure.scope
            ))
        })
}

/// Where prediction and observation differ, one line each. A cut-off primary's writes are
/// compared for partitions only (a crashed or hung one takes none).
fn disagreements(p: &SentinelVerdict, o: &SentinelVerdict, partition: bool) -> Vec<String> {
    let mut out = Vec::new();
    if p.failover != o.failover {
        out.push(format!(
            "failover: predicted {}, observed {}",
            p.failover, o.failover
        ));
    }
    if p.writable != o.writable {
        out.push(format!(
            "writable at the end of the window: predicted {}, observed {}",
            p.writable, o.writable
        ));
    }
    if partition && p.isolated_primary_accepts_writes != o.isolated_primary_accepts_writes {
        out.push(format!(
            "cut-off primary accepts writes: predicted {}, observed {}",
            p.isolated_primary_accepts_writes, o.isolated_primary_accepts_writes
        ));
    }
    out
}

/// Samples which primary every sentinel names until `traffic` stops.
async fn watch(traffic: Traffic, mut sentinels: Sentinels, samples: Samples) {
    while !traffic.is_stopped() {
        let named = sentinels.ask().await;
        if let Ok(mut s) = samples.lock() {
            s.push((traffic.now_ms(), named));
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// Every sentinel answers and names the primary a majority names, and every data node is up.
async fn sentinels_agree(sop: &SentinelOperator<'_>, state: &SentinelState) -> bool {
    let v = sop.observe(state).await;
    let Some(primary) = &v.primary else {
        return false;
    };
    v.sentinels
        .iter()
        .all(|s| s.up && s.primary.as_deref() == Some(primary.as_str()))
        && v.data.iter().all(|d| d.up)
}

/// What differs from the planned layout: the primary the sentinels name, processes down,
/// replicas not linked to their primary.
async fn drift(sop: &SentinelOperator<'_>, state: &SentinelState) -> Vec<String> {
    let v = sop.observe(state).await;
    let planned = state.planned_primary().map(|m| m.address());
    let mut out = Vec::new();
    if v.primary != planned {
        out.push(format!(
            "a majority of sentinels names {:?}, not the planned primary {:?}",
            v.primary, planned
        ));
    }
    for s in &v.sentinels {
        if !s.up {
            out.push(format!("sentinel {} does not answer", s.name));
        } else if s.primary != planned {
            out.push(format!("sentinel {} names {:?}", s.name, s.primary));
        }
    }
    for n in &v.data {
        if !n.up {
            out.push(format!("data node {} does not answer", n.name));
        } else if n.planned_primary && n.role != "master" {
            out.push(format!("the planned primary {} is a {}", n.name, n.role));
        } else if !n.planned_primary && (n.role != "replica" || !n.link_up) {
            out.push(format!("replica {} is not linked to its primary", n.name));
        }
    }
    out
}

/// What `terraform apply` runs on a `redisha_sentinel`: restart what is proven stopped, then
/// put the planned primary back through Sentinel. Timed, with the layout checked after.
async fn restore(
    sop: &SentinelOperator<'_>,
    state: &mut SentinelState,
    settle: Duration,
) -> Restore {
    let started = Instant::now();
    let mut actions = Vec::new();
    let result: Result<()> = async {
        actions.extend(sop.repair(state).await?.actions);
        if sop.restore_primary(state).await? {
            actions.push("put the planned primary back with SENTINEL FAILOVER".to_string());
        }
        Ok(())
    }
    .await;
    // A replica that was just reconfigured syncs in the background: give it a moment.
    let until = Instant::now() + settle;
    let mut left = drift(sop, state).await;
    while !left.is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        left = drift(sop, state).await;
    }
    Restore {
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        actions,
        planned_layout: result.is_ok() && left.is_empty(),
        drift: left,
        error: result.err().map(|e| e.to_string()),
    }
}

/// A partition's rules name host addresses: every data node and every sentinel must send
/// from its own (the local driver sets `bind-source-addr`; deployments started before it did
/// send from 127.0.0.1, which no rule can tell apart).
async fn check_source_addresses(sop: &SentinelOperator<'_>, state: &SentinelState) -> Result<()> {
    let conns = Conns::new(
        sop.operator().config().password.clone(),
        Duration::from_secs(2),
        Duration::from_secs(2),
    );
    check_sends_from_own_address(
        &conns,
        state.data.iter().map(|m| (m.target(), m.handle.ip.clone())),
    )
    .await?;
    // Sentinels name their links `sentinel-<id>-cmd` / `-pubsub`: the primary sees where
    // they come from.
    let sentinel_ips: Vec<&str> = state
        .sentinels
        .iter()
        .map(|m| m.handle.ip.as_str())
        .collect();
    if let Some(primary) = state.planned_primary() {
        let list: String = conns
            .query(
                &primary.target(),
                redis::cmd("CLIENT").arg("LIST"),
                "CLIENT LIST",
            )
            .await?;
        for line in list.lines().filter(|l| l.contains(" name=sentinel-")) {
            let ip = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("addr="))
                .and_then(|a| a.rsplit_once(':'))
                .map(|(ip, _)| ip);
            if let Some(ip) = ip.filter(|ip| !sentinel_ips.contains(ip)) {
                return Err(DrillError::Partition(format!(
                    "a sentinel connects from {ip}, not from its host's address: restart the sentinels with a redisha whose local driver sets bind-source-addr for them"
                )));
            }
        }
    }
    Ok(())
}
