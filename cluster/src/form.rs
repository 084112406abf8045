//! Creating a cluster: provision hosts, start nodes, then form the cluster directly with
//! CLUSTER commands, all nodes at once (no fixed sleeps: every wait polls).

use futures::future::join_all;
use redisha_planner::{Placement, Request, Role};
use tracing::info;

use crate::conn::Target;
use crate::driver::{HostPlan, NodeHandle, NodePlan};
use crate::error::{ClusterError, Result};
use crate::ops::Operator;
use crate::state::{host_plans, ClusterNode, ClusterState};

/// How long a MEET gets to complete its handshake before it is sent again.
const MEET_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// cluster-node-timeout while a cluster forms (see `form`).
const FORMING_NODE_TIMEOUT_MS: u64 = 500;

impl Operator<'_> {
    /// Checks what apply will need (binary, ports, data dir, settings) without changing
    /// anything. `state` is the current state (empty for a new cluster).
    pub async fn preflight(
        &self,
        request: &Request,
        placement: &Placement,
        state: &ClusterState,
    ) -> Result<()> {
        self.config.validate()?;
        let hosts = host_plans(request, placement, state)?;
        let existing: Vec<NodeHandle> = state.nodes.iter().map(|n| n.handle.clone()).collect();
        self.driver
            .preflight(&hosts, &existing, &self.config)
            .await?;
        Ok(())
    }

    /// Creates the cluster of `placement`, filling `state` as hosts and nodes come up.
    /// Returns once every node reports `cluster_state:ok` and every replica is linked.
    pub async fn create(
        &self,
        request: &Request,
        placement: &Placement,
        state: &mut ClusterState,
    ) -> Result<()> {
        if placement.nodes.is_empty() {
            return Err(ClusterError::Plan("the placement has no node".into()));
        }
        self.start(request, placement, state).await?;
        self.form(state).await
    }

    /// The first half of `create`: provisions hosts and starts every node, without joining
    /// them (benchmarks compare forming methods on the same started nodes).
    pub async fn start(
        &self,
        request: &Request,
        placement: &Placement,
        state: &mut ClusterState,
    ) -> Result<()> {
        self.preflight(request, placement, state).await?;
        state.driver = self.driver.kind().to_string();
        let hosts = host_plans(request, placement, state)?;
        self.provision_hosts(&hosts, state).await?;
        self.checkpoint("create.hosts_provisioned")?;
        let wanted: Vec<(HostPlan, NodePlan)> = hosts
            .iter()
            .flat_map(|h| h.nodes.iter().map(move |n| (h.clone(), n.clone())))
            .collect();
        self.start_nodes(placement, &wanted, state).await?;
        self.fetch_node_ids(state).await?;
        self.checkpoint("create.nodes_started")
    }

    pub(crate) async fn provision_hosts(
        &self,
        hosts: &[HostPlan],
        state: &mut ClusterState,
    ) -> Result<()> {
        let missing: Vec<&HostPlan> = hosts
            .iter()
            .filter(|h| state.host(&h.name).is_none())
            .collect();
        let results = join_all(missing.iter().map(|h| async move {
            info!(host = %h.name, zone = %h.zone, "provisioning host");
            self.driver.provision_host(h, &self.config).await
        }))
        .await;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(handle) => state.hosts.push(handle),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Starts the given nodes concurrently (their hosts must be provisioned) and records them.
    pub(crate) async fn start_nodes(
        &self,
        placement: &Placement,
        nodes: &[(HostPlan, NodePlan)],
        state: &mut ClusterState,
    ) -> Result<()> {
        let mut jobs = Vec::new();
        for (host, node) in nodes {
            let handle = state.host(&host.name).cloned().ok_or_else(|| {
                ClusterError::Plan(format!("host {:?} was not provisioned", host.name))
            })?;
            let planned = placement.node(&node.name).cloned().ok_or_else(|| {
                ClusterError::Plan(format!("node {:?} is not in the placement", node.name))
            })?;
            jobs.push(async move {
                info!(node = %node.name, host = %host.name, "starting node");
                let started = self.driver.start_node(&handle, node, &self.config).await?;
                Ok::<_, ClusterError>(ClusterNode::planned(&planned, String::new(), started))
            });
        }
        let mut first_error = None;
        for r in join_all(jobs).await {
            match r {
                Ok(node) => match state.node_mut(&node.name) {
                    // A node found running (a create resumed after a kill): it takes its
                    // planned place; its id stays.
                    Some(existing) => {
                        let node_id = std::mem::take(&mut existing.node_id);
                        *existing = ClusterNode { node_id, ..node };
                    }
                    None => state.nodes.push(node),
                },
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Fills in every node's redis node id. A node still loading its data (a master started
    /// from a restored snapshot) is waited for, within the operation's timeout.
    pub(crate) async fn fetch_node_ids(&self, state: &mut ClusterState) -> Result<()> {
        let targets = state.targets();
        let ids = join_all(targets.iter().map(|t| self.my_id_once_loaded(t))).await;
        for (node, id) in state.nodes.iter_mut().zip(ids) {
            node.node_id = id?;
        }
        Ok(())
    }

    async fn my_id_once_loaded(&self, t: &Target) -> Result<String> {
        let deadline = std::time::Instant::now() + self.options.timeout;
        loop {
            match self.my_id(t).await {
                Err(ClusterError::Redis { ref source, .. })
                    if source.kind() == redis::ErrorKind::BusyLoadingError
                        && std::time::Instant::now() < deadline =>
                {
                    self.conns.drop_conn(t).await;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// Joins the started nodes of `state` into one cluster as planned.
    pub async fn form(&self, state: &mut ClusterState) -> Result<()> {
        self.fetch_node_ids(state).await?;
        let all: Vec<Target> = state.targets();
        let total = all.len();

        // Distinct config epochs before the nodes meet spare the collision resolution;
        // masters own their slots before they meet, so gossip spreads the final map at once.
        info!(nodes = total, "assigning epochs and slots, meeting nodes");
        let setup = state.nodes.iter().enumerate().map(|(i, node)| {
            async move {
                let t = node.target();
                // A master turns cluster_state:ok only once it has been out of the minority
                // for cluster-node-timeout (at most 5 s): a fresh node always starts in the
                // minority. A short timeout while forming cuts that wait; the configured one
                // is restored as soon as the cluster converged.
                let _: redis::Value = self
                    .conns
                    .query(
                        &t,
                        redis::cmd("CONFIG")
                            .arg("SET")
                            .arg("cluster-node-timeout")
                            .arg(FORMING_NODE_TIMEOUT_MS),
                        "CONFIG SET cluster-node-timeout",
                    )
                    .await?;
                let cinfo = self.conns.cluster_info(&t).await?;
                let known: usize = cinfo
                    .get("cluster_known_nodes")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let my_epoch = self
                    .conns
                    .cluster_nodes(&t)
                    .await?
                    .iter()
                    .find(|l| l.is_myself())
                    .map_or(0, |l| l.config_epoch);
                // Only a node that has none yet (a create resumed after a kill may find it set).
                if known <= 1 && my_epoch == 0 {
                    let _: redis::Value = self
                        .conns
                        .query(
                            &t,
                            redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1),
                            "CLUSTER SET-CONFIG-EPOCH",
                        )
                        .await?;
                }
                if node.role == Role::Master && !node.slots.is_empty() {
                    // Only the planned slots nobody serves yet: a create resumed after a kill
                    // finds them assigned, and a master started from a restored snapshot has
                    // already claimed the slots its keys are in.
                    let lines = self.conns.cluster_nodes(&t).await?;
                    let assigned: std::collections::HashSet<u16> = lines
                        .iter()
                        .flat_map(|l| l.slots.iter().flat_map(|r| r.start..=r.end))
                        .collect();
                    let missing: Vec<u16> = node
                        .slots
                        .iter()
                        .flat_map(|r| r.start..=r.end)
                        .filter(|s| !assigned.contains(s))
                        .collect();
                    if !missing.is_empty() {
                        self.add_slots(&t, &crate::conn::slots_to_ranges(missing))
                            .await?;
                    }
                }
                Ok::<_, ClusterError>(())
            }
        });
        join_all(setup)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        self.checkpoint("form.slots_assigned")?;

        self.wait_all_known(state).await?;
        self.checkpoint("form.nodes_met")?;
        self.attach_planned_replicas(state).await?;
        self.checkpoint("form.replicas_attached")?;
        let converged = self.wait_converged(state).await;
        let timeout = self.config.node_timeout_ms();
        let restore = state.nodes.iter().map(|n| {
            let timeout = timeout.clone();
            async move {
                self.conns
                    .query::<redis::Value>(
                        &n.target(),
                        redis::cmd("CONFIG")
                            .arg("SET")
                            .arg("cluster-node-timeout")
                            .arg(timeout),
                        "CONFIG SET cluster-node-timeout",
                    )
                    .await
            }
        });
        join_all(restore)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        converged?;
        info!(nodes = total, "cluster formed");
        Ok(())
    }

    /// Waits until every node knows every node id of the state (handshakes done).
    pub(crate) async fn wait_all_known(&self, state: &ClusterState) -> Result<()> {
        let ids: Vec<&str> = state.nodes.iter().map(|n| n.node_id.as_str()).collect();
        let targets = state.targets();
        // When each (node, peer) pair was last sent a MEET: a handshake takes a moment, and
        // meeting again before it could finish only adds traffic.
        let met: std::sync::Mutex<std::collections::HashMap<(usize, usize), std::time::Instant>> =
            Default::default();
        let met = &met;
        self.poll("every node to know every other node", || async {
            let views = join_all(targets.iter().map(|t| self.conns.cluster_nodes(t))).await;
            let mut missing = Vec::new();
            for (ti, (t, view)) in targets.iter().zip(views).enumerate() {
                let view = view.map_err(|e| e.to_string())?;
                for (oi, (id, other)) in ids.iter().zip(&targets).enumerate() {
                    if view.iter().any(|l| l.id == *id && !l.in_handshake()) {
                        continue;
                    }
                    missing.push(format!("{} does not know {} yet", t.name, other.name));
                    let recently = {
                        let mut met = met.lock().unwrap_or_else(|p| p.into_inner());
                        let now = std::time::Instant::now();
                        match met.get(&(ti, oi)) {
                            Some(at) if now.duration_since(*at) < MEET_AGAIN_AFTER => true,
                            _ => {
                                met.insert((ti, oi), now);
                                false
                            }
                        }
                    };
                    if recently {
                        continue;
                    }
                    // A handshake that timed out is dropped and never retried by redis: meet
                    // again (redis ignores a MEET while a handshake with that address runs).
                    let _ = self
                        .conns
                        .query::<redis::Value>(
                            t,
                            redis::cmd("CLUSTER")
                                .arg("MEET")
                                .arg(&other.ip)
                                .arg(other.port),
                            "CLUSTER MEET",
                        )
                        .await;
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(missing.join(", "))
            }
        })
        .await
    }

    /// CLUSTER REPLICATE for every planned replica that does not replicate its shard's
    /// current master (the planned master, or whichever node of the shard serves slots).
    pub(crate) async fn attach_planned_replicas(&self, state: &ClusterState) -> Result<()> {
        let jobs = state
            .nodes
            .iter()
            .filter(|n| n.role == Role::Replica)
            .map(|n| async move {
                let master = self.current_master(state, n.shard).await?;
                if master.name == n.name {
                    return Ok(());
                }
                self.replicate(n, master).await
            });
        join_all(jobs)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    /// Makes `node` a replica of `master` unless it already is one.
    pub(crate) async fn replicate(&self, node: &ClusterNode, master: &ClusterNode) -> Result<()> {
        let t = node.target();
        let (role, current) = self.role_of(&t).await?;
        if role == Role::Replica && current.as_deref() == Some(master.node_id.as_str()) {
            return Ok(());
        }
        info!(node = %node.name, master = %master.name, "attaching replica");
        let what = format!("{} to replicate {}", node.name, master.name);
        self.poll(&what, || async {
            // Fails with "Unknown node" until the handshake reached this node.
            self.conns
                .query::<redis::Value>(
                    &t,
                    redis::cmd("CLUSTER").arg("REPLICATE").arg(&master.node_id),
                    "CLUSTER REPLICATE",
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// The node of `shard` that currently serves its slots: the node every other node of the
    /// shard should replicate. Falls back to the planned master.
    pub(crate) async fn current_master<'s>(
        &self,
        state: &'s ClusterState,
        shard: u32,
    ) -> Result<&'s ClusterNode> {
        let members: Vec<&ClusterNode> = state.nodes.iter().filter(|n| n.shard == shard).collect();
        let planned = members
            .iter()
            .find(|n| n.role == Role::Master)
            .copied()
            .or_else(|| members.first().copied())
            .ok_or_else(|| ClusterError::Plan(format!("shard {shard} has no node")))?;
        // A node's word about itself is current; another node's view may lag gossip.
        for m in &members {
            let Ok(view) = self.conns.cluster_nodes(&m.target()).await else {
                continue;
            };
            if view
                .iter()
                .any(|l| l.is_myself() && l.is_master() && l.slot_count() > 0)
            {
                return Ok(m);
            }
        }
        // No member says it serves (a shard being added or drained): the planned master.
        Ok(planned)
    }
}
