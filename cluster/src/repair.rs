//! Converging a drifted cluster back to its plan: restart dead nodes (a node that lost its
//! data rejoins as a replica of its shard's current master), re-attach replicas, and give
//! every shard back its planned master (CLUSTER FAILOVER once synced), so masters stay spread
//! across zones as planned.

use futures::future::join_all;
use redisha_planner::{Request, Role};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::conn::Target;
use crate::driver::ProcessState;
use std::collections::BTreeSet;

use crate::error::{ClusterError, Result, Unverified};
use crate::observe::Observation;
use crate::ops::Operator;
use crate::state::{host_plans, ClusterNode, ClusterState};

/// A failover candidate up for less than this many seconds may not yet be reached again by
/// every master's cluster-bus link (see `failover_to`).
const RECENT_RESTART_SECS: u64 = 10;

/// The nodes that do not answer and are proven failed: the driver saw the process or the
/// machine gone, or the cluster itself flags them `fail` (a majority of masters agreed).
/// A node that does not answer without such proof (wrong password, BUSY, LOADING, a network
/// problem between this machine and the node) is an error naming the node and the cause:
/// failing it over or restarting it could hurt a healthy shard.
fn proven_failed(state: &ClusterState, observation: &Observation) -> Result<Vec<String>> {
    let flagged: BTreeSet<&str> = observation
        .nodes
        .iter()
        .filter(|n| n.view.alive)
        .flat_map(|n| n.view.failed_peers.iter().map(String::as_str))
        .collect();
    let mut dead = Vec::new();
    let mut unverified = Vec::new();
    for n in observation.nodes.iter().filter(|n| !n.view.alive) {
        let node = state.require(&n.name)?;
        let machine_gone = state.host(&node.host).is_none();
        let flagged_fail = !node.node_id.is_empty() && flagged.contains(node.node_id.as_str());
        if n.process == ProcessState::Stopped || machine_gone || flagged_fail {
            let why = if n.process == ProcessState::Stopped {
                "its process is gone"
            } else if machine_gone {
                "its machine is gone"
            } else {
                "the cluster flags it failed"
            };
            info!(node = %n.name, why, "node failed");
            dead.push(n.name.clone());
        } else {
            unverified.push(Unverified {
                node: n.name.clone(),
                address: node.address(),
                cause: describe_cause(n.view.error.as_deref().unwrap_or("no answer")),
            });
        }
    }
    if unverified.is_empty() {
        Ok(dead)
    } else {
        Err(ClusterError::Unverified(unverified))
    }
}

/// A reader's words for why a node did not answer (the raw error follows).
pub fn describe_cause(error: &str) -> String {
    let lower = error.to_ascii_lowercase();
    let what = if [
        "wrongpass",
        "noauth",
        "authentication",
        "invalid password",
        "username-password",
    ]
    .iter()
    .any(|k| lower.contains(k))
    {
        "authentication failed with every password redisha knows (the configured one and the one in state)"
    } else if lower.contains("busy") {
        "the node is busy (a long-running script or function)"
    } else if lower.contains("loading") {
        "the node is still loading its data"
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "the node did not answer in time"
    } else if lower.contains("refused") {
        "the connection was refused"
    } else {
        "the node does not answer"
    };
    format!("{what} ({error})")
}

/// What `repair` did, one line per action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    pub actions: Vec<String>,
}

impl Operator<'_> {
    /// Brings the cluster back to the plan recorded in `state`.
    pub async fn repair(
        &self,
        request: &Request,
        state: &mut ClusterState,
    ) -> Result<RepairReport> {
        let mut report = RepairReport::default();
        let observation = self.observe(state).await;
        let dead = proven_failed(state, &observation)?;
        self.refuse_data_loss(state, &observation, &dead).await?;

        // Hosts that vanished (a terminated instance) are provisioned again.
        let placement = state.placement();
        let plans = host_plans(request, &placement, state)?;
        let missing: Vec<_> = plans
            .iter()
            .filter(|h| state.host(&h.name).is_none())
            .cloned()
            .collect();
        self.provision_hosts(&missing, state).await?;
        // Their nodes run on a new machine (or one started again): no old process of theirs
        // is left there to end, and a stop now could end what the machine's first boot just
        // started.
        let new_machines: BTreeSet<&str> = missing.iter().map(|h| h.name.as_str()).collect();

        // A dead master must not come back as master: without persistence (or with a stale
        // snapshot) it would restart empty and its replicas would resync from it, losing the
        // shard's data. Promote the most up-to-date live replica first; the old master then
        // rejoins as its replica.
        for name in &dead {
            self.take_over_from_dead(state, &observation, name, &mut report)
                .await?;
        }

        for name in &dead {
            let node = state.require(name)?.clone();
            if new_machines.contains(node.host.as_str()) {
                continue;
            }
            if self.driver.inspect_node(&node.handle).await? != ProcessState::Stopped {
                // Running but not answering: end it so it restarts clean.
                warn!(node = %name, "node runs but does not answer; restarting it");
                self.driver.stop_node(&node.handle).await?;
            }
        }
        let restarts = dead.iter().map(|name| {
            let state = &*state;
            async move {
                let node = state.require(name)?;
                let host = state.host(&node.host).ok_or_else(|| {
                    ClusterError::Plan(format!("host {:?} of node {name} is missing", node.host))
                })?;
                let plan = node.node_plan();
                info!(node = %name, "restarting dead node");
                let handle = self.driver.start_node(host, &plan, &self.config).await?;
                self.conns.drop_conn(&node.target()).await;
                Ok::<_, ClusterError>((name.clone(), handle))
            }
        });
        let restarted = join_all(restarts).await;
        for r in restarted {
            let (name, handle) = r?;
            if let Some(n) = state.node_mut(&name) {
                n.handle = handle;
            }
            report.actions.push(format!("restarted node {name}"));
        }

        // A restarted node with a new id lost its data: replace the old identity.
        for name in &dead {
            let node = state.require(name)?.clone();
            let id = self.my_id(&node.target()).await?;
            if node.node_id.is_empty() {
                // Started before it ever answered (a create cut short): nothing to replace.
                if let Some(n) = state.node_mut(name) {
                    n.node_id = id;
                }
            } else if id != node.node_id {
                self.replace_identity(state, &node, &id).await?;
                report.actions.push(format!(
                    "node {name} lost its data and rejoined with a new id"
                ));
            }
        }

        self.wait_all_known(state).await?;
        self.reattach_shards(state, &mut report).await?;
        self.restore_planned_masters(state, &mut report).await?;
        self.wait_converged(state).await?;
        Ok(report)
    }

    /// A failed master that serves slots and has no live replica can only come back with
    /// what its data directory holds: its last snapshot at best, nothing if it lost the
    /// directory. Without an append-only file that loses acknowledged writes, so it needs the
    /// user's explicit `allow_data_loss`.
    async fn refuse_data_loss(
        &self,
        state: &ClusterState,
        observation: &Observation,
        dead: &[String],
    ) -> Result<()> {
        if self.options.allow_data_loss
            || self
                .config
                .redis_config
                .get("appendonly")
                .map(String::as_str)
                == Some("yes")
        {
            return Ok(());
        }
        let live: Vec<ClusterNode> = state
            .nodes
            .iter()
            .filter(|n| observation.node(&n.name).is_some_and(|o| o.view.alive))
            .cloned()
            .collect();
        for name in dead {
            let node = state.require(name)?;
            if node.node_id.is_empty() || live.is_empty() {
                continue;
            }
            let serves = !self.slots_of_id(&live, &node.node_id).await.is_empty();
            let copy_alive = live.iter().any(|n| n.shard == node.shard);
            if serves && !copy_alive {
                return Err(ClusterError::WouldLoseData {
                    what: format!("restarting master {name} (shard {})", node.shard),
                    why: "no replica of its shard is alive and append-only persistence is off, so it comes back with its last snapshot at best".into(),
                });
            }
        }
        Ok(())
    }

    /// `node` came back empty with `new_id`: fail its shard over if the old identity still
    /// serves slots, make every node forget the old id, and meet the new one.
    async fn replace_identity(
        &self,
        state: &mut ClusterState,
        node: &ClusterNode,
        new_id: &str,
    ) -> Result<()> {
        let old_id = node.node_id.clone();
        let others: Vec<ClusterNode> = state
            .nodes
            .iter()
            .filter(|n| n.name != node.name)
            .cloned()
            .collect();
        let old_slots = self.slots_of_id(&others, &old_id).await;
        if !old_slots.is_empty() {
            // Its shard's slots still point at the lost identity: promote a live replica.
            let replica = others.iter().find(|n| n.shard == node.shard);
            match replica {
                Some(r) => {
                    info!(node = %r.name, "promoting replica of a master that lost its data");
                    self.take_over(r, &old_id, &others).await?;
                }
                None => {
                    warn!(node = %node.name, "a master without replica lost its data; its slots come back empty")
                }
            }
        }
        info!(node = %node.name, "forgetting the lost node id");
        let forget = others.iter().map(|o| {
            let old_id = old_id.clone();
            async move {
                let r: Result<redis::Value> = self
                    .conns
                    .query(
                        &o.target(),
                        redis::cmd("CLUSTER").arg("FORGET").arg(&old_id),
                        "CLUSTER FORGET",
                    )
                    .await;
                // "Unknown node" means already forgotten; anything else is tolerated here
                // because convergence is checked at the end.
                if let Err(e) = r {
                    warn!(node = %o.name, error = %e, "CLUSTER FORGET");
                }
            }
        });
        join_all(forget).await;
        if let Some(n) = state.node_mut(&node.name) {
            n.node_id = new_id.to_string();
        }
        let t = node.target();
        let mut pipe = redis::pipe();
        for o in &others {
            pipe.cmd("CLUSTER")
                .arg("MEET")
                .arg(&o.handle.ip)
                .arg(o.handle.port)
                .ignore();
        }
        let _: () = self.conns.pipe(&t, &pipe, "CLUSTER MEET").await?;
        if !old_slots.is_empty() && !others.iter().any(|n| n.shard == node.shard) {
            // No copy survived: the node takes its slots back, empty.
            self.add_slots(&t, &old_slots).await?;
            let _: redis::Value = self
                .conns
                .query(
                    &t,
                    redis::cmd("CLUSTER").arg("BUMPEPOCH"),
                    "CLUSTER BUMPEPOCH",
                )
                .await?;
        }
        Ok(())
    }

    /// If dead node `name` still owns slots in the live nodes' view, promotes the live replica
    /// of its shard with the highest replication offset (CLUSTER FAILOVER TAKEOVER) and waits
    /// until the cluster sees it as the slots' owner.
    async fn take_over_from_dead(
        &self,
        state: &ClusterState,
        observation: &crate::observe::Observation,
        name: &str,
        report: &mut RepairReport,
    ) -> Result<()> {
        let node = state.require(name)?.clone();
        if node.node_id.is_empty() {
            return Ok(());
        }
        let live: Vec<ClusterNode> = state
            .nodes
            .iter()
            .filter(|n| n.name != name && observation.node(&n.name).is_some_and(|o| o.view.alive))
            .cloned()
            .collect();
        if self.slots_of_id(&live, &node.node_id).await.is_empty() {
            return Ok(()); // a replica, or its replica was promoted already
        }
        let candidate = live
            .iter()
            .filter(|n| n.shard == node.shard)
            .filter_map(|n| {
                let o = observation.node(&n.name)?;
                (o.view.role == Some(Role::Replica)).then_some((o.view.repl_offset.unwrap_or(0), n))
            })
            .max_by_key(|(offset, n)| (*offset, std::cmp::Reverse(n.name.clone())))
            .map(|(offset, n)| (offset, n.clone()));
        let Some((offset, replica)) = candidate else {
            warn!(node = %name, "a dead master has no live replica; it restarts with what its data dir holds");
            return Ok(());
        };
        info!(
            node = %replica.name,
            dead = %name,
            replication_offset = offset,
            "forced takeover: promoting the live replica with the highest replication offset in place of a failed master"
        );
        self.take_over(&replica, &node.node_id, &live).await?;
        report.actions.push(format!(
            "promoted {} in place of dead master {name}",
            replica.name
        ));
        Ok(())
    }

    /// Promotes `replica` without its master's consent (CLUSTER FAILOVER TAKEOVER: the master is
    /// dead or lost its data) and waits until it is master and no peer sees `old_id` owning slots.
    async fn take_over(
        &self,
        replica: &ClusterNode,
        old_id: &str,
        peers: &[ClusterNode],
    ) -> Result<()> {
        let t = replica.target();
        let asked: Result<redis::Value> = self
            .conns
            .query(
                &t,
                redis::cmd("CLUSTER").arg("FAILOVER").arg("TAKEOVER"),
                "CLUSTER FAILOVER TAKEOVER",
            )
            .await;
        match asked {
            Ok(_) => {}
            // The cluster's own failover can promote the replica between the observation and
            // this request (the master's node timeout runs out meanwhile). It is then a master
            // already; the wait below still proves it owns the dead master's slots.
            Err(e) if e.to_string().contains("send CLUSTER FAILOVER to a replica") => {
                info!(node = %replica.name, "the replica was promoted by the cluster itself meanwhile");
            }
            Err(e) => return Err(e),
        }
        self.poll(&format!("{} to take over", replica.name), || {
            let t = &t;
            async move {
                if !self.slots_of_id(peers, old_id).await.is_empty() {
                    return Err("the old master still owns slots".to_string());
                }
                match self.role_of(t).await {
                    Ok((Role::Master, _)) => Ok(()),
                    Ok(_) => Err("still a replica".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await
    }

    async fn slots_of_id(
        &self,
        nodes: &[ClusterNode],
        id: &str,
    ) -> Vec<redisha_planner::SlotRange> {
        for n in nodes {
            if let Ok(view) = self.conns.cluster_nodes(&n.target()).await {
                if let Some(line) = view.iter().find(|l| l.id == id) {
                    return line.slots.clone();
                }
            }
        }
        Vec::new()
    }

    /// Every node of a shard other than its current master replicates that master.
    async fn reattach_shards(&self, state: &ClusterState, report: &mut RepairReport) -> Result<()> {
        let shards: Vec<u32> = {
            let mut s: Vec<u32> = state.nodes.iter().map(|n| n.shard).collect();
            s.dedup();
            s
        };
        for shard in shards {
            let master = self.current_master(state, shard).await?;
            for n in state
                .nodes
                .iter()
                .filter(|n| n.shard == shard && n.name != master.name)
            {
                let (role, current) = self.role_of(&n.target()).await?;
                if role == Role::Replica && current.as_deref() == Some(master.node_id.as_str()) {
                    continue;
                }
                self.replicate(n, master).await?;
                report
                    .actions
                    .push(format!("attached {} as replica of {}", n.name, master.name));
            }
        }
        Ok(())
    }

    /// Fails every shard over to its planned master where a replica serves instead.
    pub(crate) async fn restore_planned_masters(
        &self,
        state: &ClusterState,
        report: &mut RepairReport,
    ) -> Result<()> {
        let jobs =
            state
                .nodes
                .iter()
                .filter(|n| n.role == Role::Master)
                .map(|planned| async move {
                    let current = self.current_master(state, planned.shard).await?;
                    if current.name == planned.name {
                        return Ok(None);
                    }
                    self.failover_to(planned, current).await?;
                    Ok::<_, ClusterError>(Some(format!(
                        "failed shard {} over from {} back to its planned master {}",
                        planned.shard, current.name, planned.name
                    )))
                });
        for r in join_all(jobs).await {
            if let Some(action) = r? {
                report.actions.push(action);
            }
        }
        Ok(())
    }

    /// Promotes replica `node` (of `master`) with a coordinated CLUSTER FAILOVER once synced.
    /// `uptime_in_seconds` of a node (whole seconds, rounded down).
    async fn uptime_secs(&self, target: &Target) -> Result<u64> {
        let info: String = self
            .conns
            .query(target, redis::cmd("INFO").arg("server"), "INFO server")
            .await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }

    /// The masters serving slots as `view_of` sees them (those not flagged failing), each with
    /// the moment, by its own clock (unix ms, from TIME), from which a node up `uptime_secs`
    /// has surely been running: its start, or up to a second after it. Masters that do not
    /// answer are left out.
    async fn voters(&self, view_of: &Target, uptime_secs: u64) -> Result<Vec<(Target, u64)>> {
        let view = self.conns.cluster_nodes(view_of).await?;
        let mut out = Vec::new();
        for l in view.iter().filter(|l| {
            l.has_flag("master") && !l.slots.is_empty() && !l.is_failed() && !l.has_flag("fail?")
        }) {
            let Some((ip, port)) = crate::conn::split_address(&l.address) else {
                continue;
            };
            let voter = Target::new(l.address.clone(), ip, port);
            let now: std::result::Result<(u64, u64), _> =
                self.conns.query(&voter, &redis::cmd("TIME"), "TIME").await;
            if let Ok((secs, micros)) = now {
                let now_ms = secs * 1000 + micros / 1000;
                out.push((voter, now_ms.saturating_sub(uptime_secs * 1000)));
            }
        }
        Ok(out)
    }

    pub(crate) async fn failover_to(&self, node: &ClusterNode, master: &ClusterNode) -> Result<()> {
        let t = node.target();
        let mt = master.target();
        self.wait_synced(&t, &mt).await?;
        // The master ignores the failover request of a node it does not yet see as its
        // replica (gossip lags a restart), so wait for its view first.
        self.poll(
            &format!("{} to see {} as its replica", master.name, node.name),
            || async {
                let view = self
                    .conns
                    .cluster_nodes(&mt)
                    .await
                    .map_err(|e| e.to_string())?;
                match view.iter().find(|l| l.id == node.node_id) {
                    Some(l)
                        if l.master_id.as_deref() == Some(master.node_id.as_str())
                            && !l.is_failed() =>
                    {
                        Ok(())
                    }
                    _ => Err("not yet".into()),
                }
            },
        )
        .await?;
        // And the replica refuses while it still flags its master as failing (a node that just
        // rejoined learns the master's state by gossip).
        self.poll(
            &format!("{} to see {} up", node.name, master.name),
            || async {
                let view = self
                    .conns
                    .cluster_nodes(&t)
                    .await
                    .map_err(|e| e.to_string())?;
                match view.iter().find(|l| l.id == master.node_id) {
                    Some(l) if !l.is_failed() && !l.has_flag("fail?") && l.link_connected => Ok(()),
                    _ => Err("not yet".into()),
                }
            },
        )
        .await?;
        // The masters vote by answering on their own link to the candidate. A node restarted
        // moments ago (an engine or settings roll) is reached on a link they make again
        // after the restart; votes sent before that are lost, the election fails, and Redis
        // lets the replica try again only after twice the failover timeout, with the master's
        // clients paused for 5 s at each manual attempt. So, for a candidate up less than
        // RECENT_RESTART_SECS, wait until every master has had a pong from it since it
        // started (by the master's own clock): that link works. One up longer has links
        // that have long been made again.
        let uptime_secs = self.uptime_secs(&t).await.unwrap_or(0);
        let voters = if uptime_secs < RECENT_RESTART_SECS {
            self.voters(&mt, uptime_secs).await?
        } else {
            Vec::new()
        };
        self.poll(
            &format!("every master to hear from {} again", node.name),
            || async {
                for (voter, since) in &voters {
                    // A master this process cannot ask (cut off from it) is not waited for:
                    // it votes if it can, and the failover needs only a majority.
                    let Ok(seen) = self.conns.cluster_nodes(voter).await else {
                        continue;
                    };
                    let heard = seen.iter().any(|l| {
                        l.id == node.node_id
                            && l.link_connected
                            && l.pong_recv_ms >= *since
                            && !l.is_failed()
                    });
                    if !heard {
                        return Err(format!("{} has not heard from it yet", voter.name));
                    }
                }
                Ok(())
            },
        )
        .await?;
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        // How long a refusal for a missing bus link is waited out: a link is made again within
        // a second or two; a master that really went down meanwhile is an error, not a wait
        // for the whole operation's deadline.
        let link_deadline = (tokio::time::Instant::now()
            + std::time::Duration::from_secs(RECENT_RESTART_SECS))
        .min(deadline);
        loop {
            info!(node = %node.name, from = %master.name, "failing over");
            let asked: Result<redis::Value> = self
                .conns
                .query(
                    &t,
                    redis::cmd("CLUSTER").arg("FAILOVER"),
                    "CLUSTER FAILOVER",
                )
                .await;
            match asked {
                Ok(_) => {}
                // The replica refuses while its cluster-bus link to the master is not made
                // (yet, or again: a restarted node's links are made anew, and one can drop
                // right after the check above). Nothing changed: ask again, for a bounded time.
                Err(e)
                    if e.to_string().contains("Master is down or failed")
                        && tokio::time::Instant::now() < link_deadline =>
                {
                    tracing::debug!(node = %node.name, error = %e, "replica not linked to its master yet; asking again");
                    tokio::time::sleep(
                        self.options
                            .poll_interval
                            .max(std::time::Duration::from_millis(50)),
                    )
                    .await;
                    continue;
                }
                Err(e) => return Err(e),
            }
            // Redis gives a manual failover 5 s; ask again if it timed out.
            let attempt_end = tokio::time::Instant::now() + std::time::Duration::from_secs(6);
            while tokio::time::Instant::now() < attempt_end {
                let mine = self.role_of(&t).await.map(|r| r.0);
                let theirs = self.role_of(&mt).await.map(|r| r.0);
                if matches!((mine, theirs), (Ok(Role::Master), Ok(Role::Replica))) {
                    return Ok(());
                }
                tokio::time::sleep(self.options.poll_interval).await;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::NotConverged {
                    timeout: self.options.timeout,
                    waiting_for: vec![format!("{} to take over from {}", node.name, master.name)],
                });
            }
        }
    }
}
