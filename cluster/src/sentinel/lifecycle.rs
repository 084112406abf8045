//! Create, repair, putting the planned primary back, and destroy.

use std::collections::BTreeSet;

use futures::future::join_all;
use redisha_planner::{Placement, Request, Role, Sentinel};
use tracing::info;

use crate::conn::Target;
use crate::driver::{HostPlan, NodePlan, ProcessState};
use crate::error::{ClusterError, Result};
use crate::state::locate_host;

use super::{Member, SentinelOperator, SentinelState, SENTINEL_INDEX_BASE};

/// What a repair did, one line per action, for the apply log and the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentinelRepair {
    pub actions: Vec<String>,
}

impl SentinelOperator<'_> {
    /// Starts the planned primary, its replicas (as replicas of it, in sync) and the
    /// sentinels, and returns once every sentinel sees the primary, every replica and every
    /// other sentinel. Processes already running (a create resumed) are taken as they are.
    pub async fn create(
        &self,
        request: &Request,
        placement: &Placement,
        sentinels: &[Sentinel],
        state: &mut SentinelState,
    ) -> Result<()> {
        let primary = placement
            .nodes
            .iter()
            .find(|n| n.role == Role::Master)
            .ok_or_else(|| ClusterError::Plan("the placement has no primary".into()))?;
        // Hosts: every host with a data node or a sentinel.
        let mut plans: Vec<HostPlan> = Vec::new();
        let mut host_plan = |host: &str, node: NodePlan| -> Result<()> {
            if let Some(p) = plans.iter_mut().find(|p| p.name == host) {
                p.nodes.push(node);
                return Ok(());
            }
            let (zone_index, host_index, zone) = locate_host(request, host)?;
            plans.push(HostPlan {
                name: host.to_string(),
                zone,
                zone_index,
                host_index,
                nodes: vec![node],
            });
            Ok(())
        };
        let mut data_plans = Vec::new();
        for n in &placement.nodes {
            let index = placement
                .nodes
                .iter()
                .take_while(|m| m.name != n.name)
                .filter(|m| m.host == n.host)
                .count() as u16;
            let plan = NodePlan {
                name: n.name.clone(),
                index_on_host: index,
                shard: 0,
                role: n.role,
            };
            host_plan(&n.host, plan.clone())?;
            data_plans.push((n.clone(), plan));
        }
        let mut sentinel_plans = Vec::new();
        for (k, s) in sentinels.iter().enumerate() {
            let index = SENTINEL_INDEX_BASE
                + sentinels[..k].iter().filter(|o| o.host == s.host).count() as u16;
            let plan = NodePlan {
                name: s.name.clone(),
                index_on_host: index,
                shard: 0,
                role: Role::Replica,
            };
            host_plan(&s.host, plan.clone())?;
            sentinel_plans.push((s.clone(), plan));
        }
        let driver = self.op.driver;
        let config = &self.op.config;
        config.validate()?;
        // Every host, also those a resumed create found: provisioning is idempotent, and on
        // aws it waits for an instance still booting and replaces one terminated meanwhile.
        for plan in &plans {
            if state.host(&plan.name).is_none() {
                info!(host = %plan.name, zone = %plan.zone, "provisioning host");
            }
            let handle = driver.provision_host(plan, config).await?;
            state.hosts.retain(|h| h.name != plan.name);
            state.hosts.push(handle);
        }
        self.op.checkpoint("sentinel.hosts_provisioned")?;

        // The primary first: replicas and sentinels are configured with its address.
        let host_of = |state: &SentinelState, name: &str| {
            state
                .host(name)
                .cloned()
                .ok_or_else(|| ClusterError::Plan(format!("host {name:?} was not provisioned")))
        };
        let (pnode, pplan) = data_plans
            .iter()
            .find(|(n, _)| n.name == primary.name)
            .cloned()
            .ok_or_else(|| ClusterError::Plan("the primary has no plan".into()))?;
        let phost = host_of(state, &pnode.host)?;
        info!(node = %pnode.name, host = %pnode.host, "starting the primary");
        let handle = driver
            .start_process(&phost, &pplan, &self.standalone(None), config)
            .await?;
        let primary_addr = (handle.ip.clone(), handle.port);
        upsert(
            &mut state.data,
            Member {
                handle,
                zone: pnode.zone.clone(),
                planned_primary: true,
            },
        );
        let replicas: Vec<Launch> = data_plans
            .iter()
            .filter(|(n, _)| n.role == Role::Replica)
            .map(|(n, plan)| Launch {
                host: n.host.clone(),
                zone: n.zone.clone(),
                plan: plan.clone(),
                kind: self.standalone(Some(primary_addr.clone())),
            })
            .collect();
        for started in self.launch_all(state, replicas).await? {
            upsert(&mut state.data, started);
        }
        self.op.checkpoint("sentinel.data_started")?;
        let primary_target =
            Target::new(pnode.name.clone(), primary_addr.0.clone(), primary_addr.1);
        for m in state.data.iter().filter(|m| !m.planned_primary) {
            self.op.wait_synced(&m.target(), &primary_target).await?;
        }
        self.op.checkpoint("sentinel.replicas_synced")?;

        let launches: Vec<Launch> = sentinel_plans
            .iter()
            .map(|(s, plan)| Launch {
                host: s.host.clone(),
                zone: s.zone.clone(),
                plan: plan.clone(),
                kind: self.sentinel_kind(&s.name, primary_addr.clone()),
            })
            .collect();
        for started in self.launch_all(state, launches).await? {
            upsert(&mut state.sentinels, started);
        }
        self.op.checkpoint("sentinel.sentinels_started")?;
        self.wait_sentinels_agree(state).await
    }

    /// Starts a stopped member again where it was, as `kind`.
    async fn restart(
        &self,
        state: &SentinelState,
        m: &Member,
        kind: &crate::driver::ProcessKind,
    ) -> Result<crate::driver::NodeHandle> {
        let host = state.host(&m.handle.host).cloned().ok_or_else(|| {
            ClusterError::Plan(format!("host {:?} is not in the state", m.handle.host))
        })?;
        // The planned primary keeps its role in its record, whatever it restarts as.
        let plan = super::hosts::process_plan(m);
        Ok(self
            .op
            .driver
            .start_process(&host, &plan, kind, &self.op.config)
            .await?)
    }

    /// Starts processes on their (provisioned) hosts, all at once.
    pub(super) async fn launch_all(
        &self,
        state: &SentinelState,
        launches: Vec<Launch>,
    ) -> Result<Vec<Member>> {
        let driver = self.op.driver;
        let config = &self.op.config;
        let mut jobs = Vec::new();
        for l in launches {
            let host = state.host(&l.host).cloned().ok_or_else(|| {
                ClusterError::Plan(format!("host {:?} was not provisioned", l.host))
            })?;
            jobs.push(async move {
                info!(process = %l.plan.name, host = %l.host, "starting");
                let handle = driver
                    .start_process(&host, &l.plan, &l.kind, config)
                    .await?;
                Ok::<_, ClusterError>(Member {
                    handle,
                    zone: l.zone,
                    planned_primary: false,
                })
            });
        }
        join_all(jobs).await.into_iter().collect()
    }

    /// Waits until every sentinel names the same primary, has finished any failover, and sees
    /// every replica and every other sentinel (Sentinel discovers replicas from the primary
    /// and peers through hello messages every 2 s).
    pub async fn wait_sentinels_agree(&self, state: &SentinelState) -> Result<()> {
        let replicas = state.data.len().saturating_sub(1);
        let peers = state.sentinels.len().saturating_sub(1);
        self.op
            .poll(
                "sentinels to agree on the primary, replicas and peers",
                || async {
                    let view = self.observe(state).await;
                    let Some(primary) = &view.primary else {
                        return Err("no primary named by a majority of sentinels".to_string());
                    };
                    for s in &view.sentinels {
                        if !s.up {
                            return Err(format!("sentinel {} does not answer", s.name));
                        }
                        if s.primary.as_deref() != Some(primary.as_str()) {
                            return Err(format!(
                                "sentinel {} names {:?}, not {primary}",
                                s.name, s.primary
                            ));
                        }
                        if s.failing_over {
                            return Err(format!(
                                "sentinel {} is still finishing a failover (reconfiguring replicas)",
                                s.name
                            ));
                        }
                        if s.replicas_seen < replicas || s.peers_seen < peers {
                            return Err(format!(
                            "sentinel {} sees {} of {replicas} replicas and {} of {peers} peers",
                            s.name, s.replicas_seen, s.peers_seen
                        ));
                        }
                    }
                    Ok(())
                },
            )
            .await
    }

    /// Restarts every process proven failed: stopped per the driver, or, when the driver
    /// cannot see processes (aws), not answering and counted down by a majority of the
    /// sentinels (then stopped through the driver first, which ends a hung one). A process
    /// such a driver recorded that no sentinel has ever seen (a start cut off before it ran)
    /// is started. A data node comes back as a replica of the primary Sentinel names now, a
    /// sentinel from its own config file (it keeps its id and what it learned). Nothing is
    /// failed over here: Sentinel does that.
    pub async fn repair(&self, state: &mut SentinelState) -> Result<SentinelRepair> {
        self.repair_replaced(state, &BTreeSet::new()).await
    }

    /// [`SentinelOperator::repair`] after [`SentinelOperator::replace_lost_hosts`]: the
    /// processes named in `replaced` ran on a machine the driver proved lost, so they are
    /// started on the new one without further proof. When the lost machine ran the primary,
    /// Sentinel's failover is waited for first (it is what keeps the acknowledged writes).
    pub async fn repair_replaced(
        &self,
        state: &mut SentinelState,
        replaced: &BTreeSet<String>,
    ) -> Result<SentinelRepair> {
        let mut report = SentinelRepair::default();
        let mut view = self.observe(state).await;
        let lost_primary = state
            .data
            .iter()
            .find(|m| replaced.contains(&m.handle.name) && view.primary == Some(m.address()))
            .map(Member::address);
        if let Some(lost) = lost_primary {
            info!(
                primary = %lost,
                timeout = ?self.op.options().timeout,
                "the primary's machine was lost: waiting for Sentinel to fail over"
            );
            let waiting = std::time::Instant::now();
            self.op
                .poll(
                    "Sentinel to fail over away from the lost primary",
                    || async {
                        match self.observe(state).await.primary {
                            Some(p) if p != lost => {
                                info!(primary = %p, waited = ?waiting.elapsed(), "Sentinel failed over");
                                Ok(())
                            }
                            other => Err(format!("sentinels name {other:?}")),
                        }
                    },
                )
                .await?;
            view = self.observe(state).await;
        }
        let current = view.primary.as_deref().and_then(crate::conn::split_address);
        for m in state.data.clone() {
            let answers = view.data.iter().any(|d| d.name == m.handle.name && d.up);
            if !replaced.contains(&m.handle.name)
                && !self.proven_failed(&m, answers, &view, state).await?
            {
                continue;
            }
            // The node comes back as a replica of the current primary, never as a primary
            // with old data: only Sentinel promotes.
            let Some(primary) = current
                .clone()
                .filter(|p| *p != (m.handle.ip.clone(), m.handle.port))
            else {
                return Err(ClusterError::Unverified(vec![crate::error::Unverified {
                    node: m.handle.name.clone(),
                    address: m.address(),
                    cause: "it is stopped and no sentinel majority names another primary to restart it under; start the sentinels first or wait for their failover".into(),
                }]));
            };
            let kind = self.standalone(Some(primary.clone()));
            let handle = self.restart(state, &m, &kind).await?;
            report.actions.push(format!(
                "{} {} as a replica of {}:{}",
                restarted_where(&m, replaced),
                m.handle.name,
                primary.0,
                primary.1
            ));
            replace_handle(&mut state.data, handle);
        }
        for m in state.sentinels.clone() {
            let answers = view
                .sentinels
                .iter()
                .any(|s| s.name == m.handle.name && s.up);
            if !replaced.contains(&m.handle.name)
                && !self.proven_failed(&m, answers, &view, state).await?
            {
                continue;
            }
            let primary = current.clone().or_else(|| {
                state
                    .planned_primary()
                    .map(|p| (p.handle.ip.clone(), p.handle.port))
            });
            let Some(primary) = primary else { continue };
            let kind = self.sentinel_kind(&m.handle.name, primary);
            let handle = self.restart(state, &m, &kind).await?;
            report.actions.push(format!(
                "{} sentinel {}",
                restarted_where(&m, replaced),
                m.handle.name
            ));
            replace_handle(&mut state.sentinels, handle);
        }
        if !report.actions.is_empty() {
            self.wait_sentinels_agree(state).await?;
        }
        Ok(report)
    }

    /// Whether `m` is proven failed (see [`SentinelOperator::repair`]); a process proven so
    /// by the sentinels alone is stopped through the driver, so that it is stopped for sure.
    async fn proven_failed(
        &self,
        m: &Member,
        answers: bool,
        view: &super::SentinelObservation,
        state: &SentinelState,
    ) -> Result<bool> {
        let driver = self.op.driver;
        match driver.inspect_node(&m.handle).await? {
            ProcessState::Stopped => Ok(true),
            ProcessState::Running { .. } => Ok(false),
            ProcessState::Unknown => {
                if answers {
                    return Ok(false);
                }
                if view.never_seen(&m.address(), state.sentinels.len()) {
                    // Recorded, then cut off before it ever ran: starting it is what the cut
                    // off apply was doing (a start is a no-op for a process that runs).
                    info!(process = %m.handle.name, address = %m.address(), "recorded but never seen by a sentinel: starting it");
                    return Ok(true);
                }
                if !view.counted_down(&m.address(), state.sentinels.len()) {
                    return Ok(false);
                }
                info!(process = %m.handle.name, address = %m.address(), "not answering and counted down by a majority of the sentinels; stopping it before the restart");
                driver.stop_node(&m.handle).await?;
                Ok(true)
            }
        }
    }

    /// Puts the planned primary back when Sentinel promoted another node: the planned node
    /// gets the best replica priority, Sentinel runs the failover (`SENTINEL FAILOVER`), and
    /// the priorities go back. Only a planned node that is up and in sync is promoted; returns
    /// whether a failover ran.
    pub async fn restore_primary(&self, state: &SentinelState) -> Result<bool> {
        let Some(planned) = state.planned_primary() else {
            return Ok(false);
        };
        let view = self.observe(state).await;
        let Some(current) = view.primary.clone() else {
            return Err(ClusterError::Unverified(vec![crate::error::Unverified {
                node: planned.handle.name.clone(),
                address: planned.address(),
                cause: "no majority of sentinels names a primary; the planned one is not put back until they agree".into(),
            }]));
        };
        if current == planned.address() {
            return Ok(false);
        }
        let current_member = state.data_node(&current).ok_or_else(|| {
            ClusterError::Plan(format!(
                "sentinels name {current} as primary, which is not a node of this deployment"
            ))
        })?;
        self.op
            .wait_synced(&planned.target(), &current_member.target())
            .await?;
        info!(planned = %planned.handle.name, current, "asking Sentinel to fail over to the planned primary");
        for m in &state.data {
            let priority = if m.planned_primary { "1" } else { "100" };
            let _: redis::Value = self
                .op
                .conns
                .query_idempotent(
                    &m.target(),
                    redis::cmd("CONFIG")
                        .arg("SET")
                        .arg("replica-priority")
                        .arg(priority),
                    "CONFIG SET replica-priority",
                )
                .await?;
        }
        let sentinel = view
            .sentinels
            .iter()
            .find(|s| s.up)
            .and_then(|s| state.sentinels.iter().find(|m| m.handle.name == s.name))
            .ok_or_else(|| ClusterError::Plan("no sentinel answers".into()))?;
        let wanted = planned.address();
        let mut from = current;
        for attempt in 1..=3 {
            // Sentinel learns a replica's priority from its INFO, every 10 s: the sentinel
            // asked must see the planned node's before it picks, or it may pick another.
            self.op
                .poll(
                    "the sentinel to see the planned replica's priority",
                    || async {
                        let replicas: Vec<std::collections::HashMap<String, String>> = self
                            .sentinel_conns
                            .query(
                                &sentinel.target(),
                                redis::cmd("SENTINEL")
                                    .arg("REPLICAS")
                                    .arg(&self.settings.master_name),
                                "SENTINEL REPLICAS",
                            )
                            .await
                            .map_err(|e| e.to_string())?;
                        let seen = replicas.iter().any(|r| {
                            r.get("ip") == Some(&planned.handle.ip)
                                && r.get("port") == Some(&planned.handle.port.to_string())
                                && r.get("slave-priority").map(String::as_str) == Some("1")
                        });
                        if seen {
                            Ok(())
                        } else {
                            Err("not yet".to_string())
                        }
                    },
                )
                .await?;
            let _: redis::Value = self
                .sentinel_conns
                .query(
                    &sentinel.target(),
                    redis::cmd("SENTINEL")
                        .arg("FAILOVER")
                        .arg(&self.settings.master_name),
                    "SENTINEL FAILOVER",
                )
                .await?;
            let before = from.clone();
            let now = self
                .op
                .poll("the sentinels to finish the failover", || async {
                    match self.observe(state).await.primary {
                        Some(p) if p != before => Ok(p),
                        other => Err(format!("sentinels name {other:?}")),
                    }
                })
                .await?;
            if now == wanted {
                break;
            }
            if attempt == 3 {
                return Err(ClusterError::Plan(format!(
                    "Sentinel promoted {now} instead of the planned primary {wanted} three times; check the replicas' replica-priority and replication lag"
                )));
            }
            info!(attempt, promoted = %now, "Sentinel promoted another replica; asking again");
            from = now;
        }
        for m in &state.data {
            let _: redis::Value = self
                .op
                .conns
                .query_idempotent(
                    &m.target(),
                    redis::cmd("CONFIG")
                        .arg("SET")
                        .arg("replica-priority")
                        .arg("100"),
                    "CONFIG SET replica-priority",
                )
                .await?;
        }
        self.wait_sentinels_agree(state).await?;
        Ok(true)
    }

    /// Stops every process (sentinels first, so none fails over a primary being stopped),
    /// wipes their data, removes the hosts and then the deployment's record.
    pub async fn destroy(&self, state: &mut SentinelState) -> Result<()> {
        let driver = self.op.driver;
        for m in state.sentinels.iter().chain(state.data.iter()) {
            driver.stop_node(&m.handle).await?;
            driver.wipe_node(&m.handle).await?;
        }
        for h in &state.hosts {
            driver.remove_host(h).await?;
        }
        *state = SentinelState::default();
        // The deployment's record goes last: until then it is what finds the processes.
        if !self.cluster_id.is_empty() {
            driver.forget_cluster(&self.cluster_id).await?;
        }
        Ok(())
    }
}

/// How a repair's action starts: a process on a replaced machine starts there for the first
/// time.
fn restarted_where(m: &Member, replaced: &BTreeSet<String>) -> String {
    if replaced.contains(&m.handle.name) {
        format!("on the new machine of host {}, started", m.handle.host)
    } else {
        "restarted".to_string()
    }
}

/// A process to start: where, under which plan, as what.
pub(super) struct Launch {
    pub(super) host: String,
    pub(super) zone: String,
    pub(super) plan: NodePlan,
    pub(super) kind: crate::driver::ProcessKind,
}

/// The member `handle` names gets it (after a restart: a new pid).
fn replace_handle(list: &mut [Member], handle: crate::driver::NodeHandle) {
    if let Some(slot) = list.iter_mut().find(|x| x.handle.name == handle.name) {
        slot.handle = handle;
    }
}

/// Puts `m` in `list`, replacing the member of the same name (a resumed create).
fn upsert(list: &mut Vec<Member>, m: Member) {
    match list.iter_mut().find(|x| x.handle.name == m.handle.name) {
        Some(slot) => *slot = m,
        None => list.push(m),
    }
}
