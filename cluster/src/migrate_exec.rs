//! Executing the planner's migration steps (scale shards and replicas). Slot migration moves
//! keys in large MIGRATE batches, several slots at a time, and pipelines the SETSLOT calls;
//! clients keep working throughout through ASK redirects.

use futures::future::join_all;
use redisha_planner::{Placement, Request, Role, SlotRange, Step};
use tracing::info;

use crate::conn::Target;
use crate::driver::{HostPlan, NodePlan};
use crate::error::{ClusterError, Result};
use crate::ops::Operator;
use crate::state::{locate_host, ClusterState};

/// Slots whose SETSLOT calls go in one pipeline.
const SLOT_CHUNK: usize = 1024;

impl Operator<'_> {
    /// Runs `steps` (from `redisha_planner::migrate::steps(state.placement(), target)`) and
    /// records `target` as the plan. `state` follows every step.
    pub async fn update(
        &self,
        request: &Request,
        target: &Placement,
        steps: &[Step],
        state: &mut ClusterState,
    ) -> Result<()> {
        let migrates = steps.iter().any(|s| matches!(s, Step::MigrateSlots { .. }));
        for (i, step) in steps.iter().enumerate() {
            info!(step = i + 1, of = steps.len(), ?step, "migration step");
            self.run_step(request, target, step, state).await?;
            state.apply_step(step);
            if matches!(step, Step::Failover { .. }) {
                self.record_nodes(state).await?;
            }
            self.checkpoint("migrate.step")?;
        }
        if migrates {
            self.set_replica_migration(state, self.replica_migration_setting())
                .await?;
        }
        state.adopt_plan(target);
        self.record_nodes(state).await?;
        self.wait_converged(state).await
    }

    /// The user's cluster-allow-replica-migration (redis' default is yes).
    fn replica_migration_setting(&self) -> &str {
        self.config
            .redis_config
            .get("cluster-allow-replica-migration")
            .map_or("yes", String::as_str)
    }

    async fn set_replica_migration(&self, state: &ClusterState, value: &str) -> Result<()> {
        let jobs = state.nodes.iter().map(|n| async move {
            self.conns
                .query::<redis::Value>(
                    &n.target(),
                    redis::cmd("CONFIG")
                        .arg("SET")
                        .arg("cluster-allow-replica-migration")
                        .arg(value),
                    "CONFIG SET cluster-allow-replica-migration",
                )
                .await
        });
        join_all(jobs)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    pub async fn run_step(
        &self,
        request: &Request,
        target: &Placement,
        step: &Step,
        state: &mut ClusterState,
    ) -> Result<()> {
        match step {
            Step::AddNode { node, host, .. } => {
                self.add_node(request, target, node, host, state).await
            }
            Step::AttachReplica { node, master } => {
                let n = state.require(node)?;
                let m = state.require(master)?;
                self.replicate(n, m).await
            }
            Step::WaitSync { node } => {
                let n = state.require(node)?;
                let (_, master_id) = self.role_of(&n.target()).await?;
                let master = master_id
                    .as_deref()
                    .and_then(|id| state.by_id(id))
                    .ok_or_else(|| {
                        ClusterError::Plan(format!("node {node} replicates no known master"))
                    })?;
                self.wait_synced(&n.target(), &master.target()).await
            }
            Step::Failover { node } => {
                let n = state.require(node)?;
                let (role, master_id) = self.role_of(&n.target()).await?;
                if role == Role::Master {
                    return Ok(());
                }
                let master = master_id
                    .as_deref()
                    .and_then(|id| state.by_id(id))
                    .ok_or_else(|| {
                        ClusterError::Plan(format!("node {node} replicates no known master"))
                    })?;
                self.failover_to(n, master).await
            }
            Step::MigrateSlots { from, to, slots } => {
                self.migrate_slots(state, from, to, *slots).await
            }
            Step::RemoveNode { node } => self.remove_node(state, node).await,
        }
    }

    async fn add_node(
        &self,
        request: &Request,
        target: &Placement,
        name: &str,
        host: &str,
        state: &mut ClusterState,
    ) -> Result<()> {
        if state.node(name).is_some() {
            return Ok(());
        }
        let planned = target
            .node(name)
            .ok_or_else(|| ClusterError::Plan(format!("node {name:?} is not in the placement")))?;
        let (zone_index, host_index, zone) = locate_host(request, host)?;
        let plan = HostPlan {
            name: host.to_string(),
            zone,
            zone_index,
            host_index,
            nodes: vec![NodePlan {
                name: name.to_string(),
                index_on_host: state.free_index_on(host),
                shard: planned.shard,
                role: planned.role,
            }],
        };
        let existing: Vec<_> = state.nodes.iter().map(|n| n.handle.clone()).collect();
        self.driver
            .preflight(std::slice::from_ref(&plan), &existing, &self.config)
            .await?;
        self.provision_hosts(std::slice::from_ref(&plan), state)
            .await?;
        let node_plan = plan.nodes[0].clone();
        self.start_nodes(target, &[(plan, node_plan)], state)
            .await?;
        let new = state.require(name)?.clone();
        let id = self.my_id(&new.target()).await?;
        if let Some(n) = state.node_mut(name) {
            n.node_id = id;
            // A new node joins empty; it gets slots only by migration.
            n.slots.clear();
        }
        let mut pipe = redis::pipe();
        for other in state.nodes.iter().filter(|o| o.name != name) {
            pipe.cmd("CLUSTER")
                .arg("MEET")
                .arg(&other.handle.ip)
                .arg(other.handle.port)
                .ignore();
        }
        let _: () = self
            .conns
            .pipe(&new.target(), &pipe, "CLUSTER MEET")
            .await?;
        self.wait_all_known(state).await
    }

    /// Moves `slots` with their keys from master `from` to master `to`.
    pub async fn migrate_slots(
        &self,
        state: &ClusterState,
        from: &str,
        to: &str,
        slots: SlotRange,
    ) -> Result<()> {
        let src = state.require(from)?;
        let dst = state.require(to)?;
        let (st, dt) = (src.target(), dst.target());
        info!(from, to, %slots, "migrating slots");
        // A freshly added master says the cluster is down until its rejoin delay has passed,
        // and until then answers the keys MIGRATE sends it with CLUSTERDOWN.
        self.poll("the receiving node to report cluster_state:ok", || async {
            match self.conns.cluster_info(&dt).await {
                Ok(info) if info.get("cluster_state").map(String::as_str) == Some("ok") => Ok(()),
                Ok(_) => Err(format!("{to} still reports the cluster down")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
        // A master that hands over its last slot would turn itself into a replica of the
        // receiver (and its replicas would follow): while a migration may empty a master
        // that later receives slots again, that must not happen. `update` restores it.
        self.set_replica_migration(state, "no").await?;
        // Every master learns the new owner; gossip would do it too, but slower.
        let view = self.conns.cluster_nodes(&st).await?;
        let masters: Vec<Target> = view
            .iter()
            .filter(|l| {
                l.is_master() && !l.is_failed() && l.id != src.node_id && l.id != dst.node_id
            })
            .filter_map(|l| state.by_id(&l.id))
            .map(|n| n.target())
            .collect();
        let all: Vec<u16> = (slots.start..=slots.end).collect();
        for chunk in all.chunks(SLOT_CHUNK) {
            let mut importing = redis::pipe();
            let mut migrating = redis::pipe();
            for s in chunk {
                importing
                    .cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(*s)
                    .arg("IMPORTING")
                    .arg(&src.node_id)
                    .ignore();
                migrating
                    .cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(*s)
                    .arg("MIGRATING")
                    .arg(&dst.node_id)
                    .ignore();
            }
            let _: () = self
                .conns
                .pipe(&dt, &importing, "CLUSTER SETSLOT IMPORTING")
                .await?;
            let _: () = self
                .conns
                .pipe(&st, &migrating, "CLUSTER SETSLOT MIGRATING")
                .await?;

            // One round trip finds the slots that hold keys.
            let mut probe = redis::pipe();
            for s in chunk {
                probe.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(*s);
            }
            let counts: Vec<u64> = self
                .conns
                .pipe(&st, &probe, "CLUSTER COUNTKEYSINSLOT")
                .await?;
            let busy: Vec<u16> = chunk
                .iter()
                .zip(counts)
                .filter(|(_, c)| *c > 0)
                .map(|(s, _)| *s)
                .collect();
            self.move_keys(&st, &dt, busy).await?;

            // The owner change goes to the destination first, then the source, then the rest.
            let mut assign = redis::pipe();
            for s in chunk {
                assign
                    .cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(*s)
                    .arg("NODE")
                    .arg(&dst.node_id)
                    .ignore();
            }
            let _: () = self
                .conns
                .pipe(&dt, &assign, "CLUSTER SETSLOT NODE")
                .await?;
            let _: () = self
                .conns
                .pipe(&st, &assign, "CLUSTER SETSLOT NODE")
                .await?;
            let others = masters.iter().map(|m| {
                let assign = &assign;
                async move {
                    // A master that misses this learns the owner from gossip.
                    if let Err(e) = self
                        .conns
                        .pipe::<()>(m, assign, "CLUSTER SETSLOT NODE")
                        .await
                    {
                        tracing::warn!(node = %m.name, error = %e, "SETSLOT NODE");
                    }
                }
            });
            join_all(others).await;
        }
        Ok(())
    }

    /// Moves every key of `slots` from `src` to `dst`: one pipeline of GETKEYSINSLOT and one
    /// of MIGRATE (a batch of keys per slot) per round, so a round costs two round trips
    /// whatever the number of slots.
    async fn move_keys(&self, src: &Target, dst: &Target, mut slots: Vec<u16>) -> Result<()> {
        let batch = self.options.migrate_batch.max(1);
        let timeout_ms =
            u64::try_from(self.options.migrate_timeout.as_millis()).unwrap_or(u64::MAX);
        // The destination's password, which during a rotation may still be the old one.
        let dst_password = self.conns.password_for(dst).await;
        while !slots.is_empty() {
            let mut list = redis::pipe();
            for s in &slots {
                list.cmd("CLUSTER").arg("GETKEYSINSLOT").arg(*s).arg(batch);
            }
            let keys: Vec<Vec<Vec<u8>>> =
                self.conns.pipe(src, &list, "CLUSTER GETKEYSINSLOT").await?;
            let mut migrate = redis::pipe();
            let mut again = Vec::new();
            for (slot, keys) in slots.iter().zip(&keys) {
                if keys.is_empty() {
                    continue;
                }
                // A full batch may leave keys behind; a short one emptied the slot, since keys
                // of a migrating slot only leave the source (new keys go to the destination
                // through ASK).
                if keys.len() >= batch {
                    again.push(*slot);
                }
                let cmd = migrate.cmd("MIGRATE");
                cmd.arg(&dst.ip)
                    .arg(dst.port)
                    .arg("")
                    .arg(0)
                    .arg(timeout_ms)
                    .arg("REPLACE");
                if let Some(p) = &dst_password {
                    cmd.arg("AUTH2").arg("default").arg(p.expose());
                }
                cmd.arg("KEYS");
                for k in keys {
                    cmd.arg(k.as_slice());
                }
                cmd.ignore();
            }
            let _: () = self.conns.pipe(src, &migrate, "MIGRATE").await?;
            slots = again;
        }
        Ok(())
    }

    /// Forgets and stops `name`, which must serve no slot, and removes its data (and its host
    /// when no node is left on it).
    pub async fn remove_node(&self, state: &mut ClusterState, name: &str) -> Result<()> {
        let node = state.require(name)?.clone();
        let t = node.target();
        if let Ok(view) = self.conns.cluster_nodes(&t).await {
            if let Some(me) = view.iter().find(|l| l.is_myself()) {
                if me.slot_count() > 0 {
                    return Err(ClusterError::Plan(format!(
                        "node {name} still serves {} slots; migrate them before removing it",
                        me.slot_count()
                    )));
                }
            }
        }
        info!(node = %name, "removing node");
        let others: Vec<Target> = state
            .nodes
            .iter()
            .filter(|n| n.name != name)
            .map(|n| n.target())
            .collect();
        let old_id = &node.node_id;
        let forget = others.iter().map(|o| async move {
            self.conns
                .query::<redis::Value>(
                    o,
                    redis::cmd("CLUSTER").arg("FORGET").arg(old_id),
                    "CLUSTER FORGET",
                )
                .await
        });
        for r in join_all(forget).await {
            if let Err(e) = r {
                if !e.to_string().contains("Unknown node") {
                    return Err(e);
                }
            }
        }
        self.driver.stop_node(&node.handle).await?;
        self.driver.wipe_node(&node.handle).await?;
        self.conns.drop_conn(&t).await;
        state.nodes.retain(|n| n.name != name);
        if !state.nodes.iter().any(|n| n.host == node.host) {
            if let Some(host) = state.host(&node.host).cloned() {
                self.driver.remove_host(&host).await?;
                state.hosts.retain(|h| h.name != node.host);
            }
        }
        Ok(())
    }
}
