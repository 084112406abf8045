//! Executing the planner's migration steps (scale shards and replicas).
//!
//! Slot migration: moves between different pairs of masters run at the same time; per chunk
//! of slots the SETSLOT calls go in pipelines, and a script on the source moves the keys in
//! MIGRATE batches bounded by keys and bytes, leaving keys too big for one MIGRATE to a
//! piecewise copy that blocks no node. Clients keep working throughout through ASK redirects.
//! Every step is idempotent and a move resumes where a killed one stopped (see also
//! `open_slots`). Figures and the reasons behind the choices: docs/performance.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use redisha_planner::{Placement, Request, Role, SlotRange, Step};
use tracing::info;

use crate::conn::{Credential, NodeLine, Target};
use crate::driver::{HostPlan, NodePlan};
use crate::error::{ClusterError, Result};
use crate::ops::Operator;
use crate::state::{locate_host, ClusterNode, ClusterState};

/// Slots whose SETSLOT calls go in one pipeline.
const SLOT_CHUNK: usize = 4096;

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
        let mut i = 0;
        while i < steps.len() {
            let run = steps[i..]
                .iter()
                .take_while(|s| matches!(s, Step::MigrateSlots { .. }))
                .count();
            if run > 0 {
                self.run_migrations(&steps[i..i + run], i, steps.len(), state)
                    .await?;
                for step in &steps[i..i + run] {
                    state.apply_step(step);
                }
                i += run;
                continue;
            }
            let step = &steps[i];
            info!(step = i + 1, of = steps.len(), ?step, "migration step");
            self.run_step(request, target, step, state).await?;
            state.apply_step(step);
            if matches!(step, Step::Failover { .. }) {
                self.record_nodes(state).await?;
            }
            self.checkpoint("migrate.step")?;
            i += 1;
        }
        if migrates {
            self.set_replica_migration(state, self.replica_migration_setting())
                .await?;
        }
        state.adopt_plan(target);
        self.record_nodes(state).await?;
        let converging = Instant::now();
        let converged = self.wait_converged(state).await;
        tracing::debug!(
            wait_ms = converging.elapsed().as_millis() as u64,
            "converged after the update"
        );
        converged
    }

    /// Runs consecutive MigrateSlots steps. Steps between different (source, destination)
    /// pairs run at the same time: their slots are disjoint, and while one waits on SETSLOT
    /// round trips another keeps the source busy moving keys. The steps of one pair run as
    /// one move. A failure or the user's cancel stops each move at its next chunk boundary
    /// (the `migrate.slot_chunk` checkpoint), so nothing is left mid-chunk.
    async fn run_migrations(
        &self,
        group: &[Step],
        first: usize,
        of: usize,
        state: &ClusterState,
    ) -> Result<()> {
        let total: u64 = group
            .iter()
            .map(|s| match s {
                Step::MigrateSlots { slots, .. } => u64::from(slots.len()),
                _ => 0,
            })
            .sum();
        let progress = Progress::new(total);
        self.set_replica_migration(state, "no").await?;
        // (from, to) -> its steps with their plan index.
        type Lane<'g> = ((&'g str, &'g str), Vec<(usize, &'g Step)>);
        let mut lanes: Vec<Lane> = Vec::new();
        for (k, step) in group.iter().enumerate() {
            if let Step::MigrateSlots { from, to, .. } = step {
                let pair = (from.as_str(), to.as_str());
                match lanes.iter_mut().find(|(p, _)| *p == pair) {
                    Some((_, steps)) => steps.push((first + k, step)),
                    None => lanes.push((pair, vec![(first + k, step)])),
                }
            }
        }
        // All steps of one pair go in one move: one setup, one announcement, and no idle
        // gap between a small step and the next (a 1-slot step cost 76 ms of setup that way).
        let lanes = lanes.iter().map(|((from, to), steps)| {
            let progress = &progress;
            async move {
                for (n, step) in steps {
                    info!(step = n + 1, of, ?step, "migration step");
                }
                let ranges: Vec<SlotRange> = steps
                    .iter()
                    .filter_map(|(_, s)| match s {
                        Step::MigrateSlots { slots, .. } => Some(*slots),
                        _ => None,
                    })
                    .collect();
                self.migrate_pair(state, from, to, &ranges, progress)
                    .await?;
                for _ in steps {
                    self.checkpoint("migrate.step")?;
                }
                Ok(())
            }
        });
        let results = progress
            .while_running(self.options.progress_interval, join_all(lanes))
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    /// The user's cluster-allow-replica-migration (redis' default is yes).
    pub(crate) fn replica_migration_setting(&self) -> &str {
        self.config
            .redis_config
            .get("cluster-allow-replica-migration")
            .map_or("yes", String::as_str)
    }

    pub(crate) async fn set_replica_migration(
        &self,
        state: &ClusterState,
        value: &str,
    ) -> Result<()> {
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

    /// Moves `slots` with their keys from master `from` to master `to`. Resumable: slots the
    /// destination already owns are skipped (only a mark left behind is cleared), slots
    /// half-moved by an interrupted run are finished, so re-running after a kill continues.
    pub async fn migrate_slots(
        &self,
        state: &ClusterState,
        from: &str,
        to: &str,
        slots: SlotRange,
    ) -> Result<()> {
        let progress = Progress::new(u64::from(slots.len()));
        // A master that hands over its last slot would turn itself into a replica of the
        // receiver (and its replicas would follow): while a migration may empty a master
        // that later receives slots again, that must not happen. `update` restores it.
        self.set_replica_migration(state, "no").await?;
        progress
            .while_running(
                self.options.progress_interval,
                self.migrate_pair(state, from, to, &[slots], &progress),
            )
            .await
    }

    /// `migrate_slots` without the replica-migration setting (the caller set it).
    pub(crate) async fn migrate_pair(
        &self,
        state: &ClusterState,
        from: &str,
        to: &str,
        ranges: &[SlotRange],
        progress: &Progress,
    ) -> Result<()> {
        let src = state.require(from)?;
        let dst = state.require(to)?;
        let (st, dt) = (src.target(), dst.target());
        let shown: Vec<String> = ranges.iter().map(ToString::to_string).collect();
        info!(from, to, slots = %shown.join(","), "migrating slots");
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
        let (src_view, dst_view) = futures::join!(
            self.retry("CLUSTER NODES", || self.conns.cluster_nodes(&st)),
            self.retry("CLUSTER NODES", || self.conns.cluster_nodes(&dt))
        );
        let (src_view, dst_view) = (src_view?, dst_view?);
        let src_me = myself(&src_view, &st)?;
        let dst_me = myself(&dst_view, &dt)?;
        // Who holds each slot now: the source, the destination (done by an earlier run), or,
        // when the cluster changed since the plan, a third master the keys must come from.
        let mut by_source: Vec<(String, Vec<SlotMove>)> = Vec::new();
        let mut skipped = 0u64;
        for slot in ranges.iter().flat_map(|r| r.start..=r.end) {
            let src_owns = owns(src_me, slot);
            let dst_owns = owns(dst_me, slot);
            let marked = src_me.migrating.iter().any(|m| m.slot == slot)
                || dst_me.importing.iter().any(|m| m.slot == slot);
            let source = if dst_owns {
                if !marked {
                    skipped += 1;
                    continue;
                }
                src.name.clone()
            } else if src_owns {
                src.name.clone()
            } else {
                let owner = src_view
                    .iter()
                    .chain(dst_view.iter())
                    .filter(|l| l.is_master() && owns(l, slot))
                    .max_by_key(|l| l.config_epoch)
                    .and_then(|l| state.by_id(&l.id))
                    .ok_or_else(|| {
                        ClusterError::Plan(format!(
                            "slot {slot} is served by no node of the cluster state; nothing to migrate it from"
                        ))
                    })?;
                owner.name.clone()
            };
            let src_owns = source != src.name || src_owns;
            let entry = match by_source.iter_mut().position(|(n, _)| *n == source) {
                Some(i) => &mut by_source[i].1,
                None => {
                    by_source.push((source, Vec::new()));
                    &mut by_source.last_mut().expect("just pushed").1
                }
            };
            entry.push(SlotMove {
                slot,
                src_owns,
                dst_owns,
                resumed: marked,
            });
        }
        progress.slots_done(skipped);
        if skipped > 0 {
            info!(from, to, skipped, "slots already moved by an earlier run");
        }
        for (source, moves) in by_source {
            let s = state.require(&source)?;
            self.move_slots(state, s, dst, &moves, progress).await?;
        }
        Ok(())
    }

    /// Moves each slot of `moves` from `src` to `dst`, chunk by chunk: IMPORTING on the
    /// destination where it does not own the slot yet, MIGRATING on the source where it still
    /// owns it, the keys, then SETSLOT NODE on the destination and the source (the other
    /// nodes hear once the move is done or stopped at a checkpoint, see `announce`). Every
    /// step is idempotent, so a chunk interrupted anywhere is finished by running it again.
    pub(crate) async fn move_slots(
        &self,
        state: &ClusterState,
        src: &ClusterNode,
        dst: &ClusterNode,
        moves: &[SlotMove],
        progress: &Progress,
    ) -> Result<()> {
        let (st, dt) = (src.target(), dst.target());
        let mut done: Vec<u16> = Vec::new();
        let sides = [src.node_id.as_str(), dst.node_id.as_str()];
        for chunk in moves.chunks(SLOT_CHUNK) {
            let t0 = Instant::now();
            let importing: Vec<u16> = chunk
                .iter()
                .filter(|m| !m.dst_owns)
                .map(|m| m.slot)
                .collect();
            let migrating: Vec<u16> = chunk
                .iter()
                .filter(|m| m.src_owns && !m.dst_owns)
                .map(|m| m.slot)
                .collect();
            // IMPORTING first: from the moment the source says MIGRATING, clients are sent to
            // the destination (ASK) for new keys, and it must accept them.
            if !importing.is_empty() {
                let mut pipe = redis::pipe();
                setslots(&mut pipe, "IMPORTING", &src.node_id, &importing);
                self.retry("CLUSTER SETSLOT IMPORTING", || {
                    self.conns
                        .pipe::<()>(&dt, &pipe, "CLUSTER SETSLOT IMPORTING")
                })
                .await?;
            }
            // A slot an interrupted run left open may hold the scratch key of a piecewise
            // copy that never finished: it would stay on the destination as a stray key.
            let resumed: Vec<u16> = chunk
                .iter()
                .filter(|m| m.resumed && !m.dst_owns)
                .map(|m| m.slot)
                .collect();
            if !resumed.is_empty() {
                let mut clean = redis::pipe();
                for s in &resumed {
                    clean
                        .cmd("ASKING")
                        .ignore()
                        .cmd("UNLINK")
                        .arg(partial_key(*s))
                        .ignore();
                }
                self.retry("UNLINK scratch keys", || {
                    self.conns.pipe::<()>(&dt, &clean, "UNLINK scratch keys")
                })
                .await?;
            }
            if !migrating.is_empty() {
                let mut pipe = redis::pipe();
                setslots(&mut pipe, "MIGRATING", &dst.node_id, &migrating);
                self.retry("CLUSTER SETSLOT MIGRATING", || {
                    self.conns
                        .pipe::<()>(&st, &pipe, "CLUSTER SETSLOT MIGRATING")
                })
                .await?;
            }
            let t1 = Instant::now();
            self.move_keys(&st, &dt, migrating, progress).await?;
            let t2 = Instant::now();

            // The owner change goes to the destination first, then the source (then, at the
            // end, the rest). On the destination, SETSLOT NODE of a slot it imports bumps its
            // config epoch (so its claim wins everywhere) and broadcasts a PONG to every
            // node: per slot, that flood of 2 KB messages cost more than the keys. One
            // importing slot per chunk gets the bump; the others' IMPORTING marks are
            // cleared right before, in the same pipeline, so they are claimed without a
            // broadcast under the bumped epoch.
            let all: Vec<u16> = chunk.iter().map(|m| m.slot).collect();
            let mut assign = redis::pipe();
            setslots(&mut assign, "NODE", &dst.node_id, &all);
            let mut claim = redis::pipe();
            if let Some((first, rest)) = importing.split_first() {
                setslots(&mut claim, "NODE", &dst.node_id, &[*first]);
                setslots(&mut claim, "STABLE", "", rest);
            }
            setslots(&mut claim, "NODE", &dst.node_id, &all);
            self.retry("CLUSTER SETSLOT NODE", || {
                self.conns.pipe::<()>(&dt, &claim, "CLUSTER SETSLOT NODE")
            })
            .await?;
            let t3 = Instant::now();
            self.retry("CLUSTER SETSLOT NODE", || {
                self.conns.pipe::<()>(&st, &assign, "CLUSTER SETSLOT NODE")
            })
            .await?;
            tracing::debug!(
                from = %src.name,
                to = %dst.name,
                slots = chunk.len(),
                marks_ms = (t1 - t0).as_millis() as u64,
                keys_ms = (t2 - t1).as_millis() as u64,
                claim_ms = (t3 - t2).as_millis() as u64,
                source_ms = t3.elapsed().as_millis() as u64,
                "chunk moved"
            );
            progress.slots_done(chunk.len() as u64);
            progress.maybe_log(self.options.progress_interval);
            done.extend(chunk.iter().map(|m| m.slot));
            if let Err(e) = self.checkpoint("migrate.slot_chunk") {
                // Stopping here is fine; the other nodes still hear of what moved.
                self.announce(state, &dst.node_id, &sides, &done).await;
                return Err(e);
            }
        }
        self.announce(state, &dst.node_id, &sides, &done).await;
        Ok(())
    }

    /// Tells every node but `skip` (the two sides of the move, which know) that `owner` now
    /// serves `slots`, in one pipeline per node once the move is done: a master that has not
    /// heard yet sends clients to the old owner, which sends them on (MOVED), and gossip
    /// tells it within a second anyway. Done per chunk, this cost a round trip and a config
    /// save on every master on the migration's critical path; now it overlaps the other
    /// moves of the update. Replicas refuse SETSLOT (they follow their master); errors are
    /// only logged.
    pub(crate) async fn announce(
        &self,
        state: &ClusterState,
        owner: &str,
        skip: &[&str],
        slots: &[u16],
    ) {
        if slots.is_empty() {
            return;
        }
        let mut assign = redis::pipe();
        setslots(&mut assign, "NODE", owner, slots);
        let jobs = state
            .nodes
            .iter()
            .filter(|n| !skip.contains(&n.node_id.as_str()))
            .map(|n| {
                let assign = &assign;
                async move {
                    let t = n.target();
                    if let Err(e) = self
                        .conns
                        .pipe::<()>(&t, assign, "CLUSTER SETSLOT NODE")
                        .await
                    {
                        tracing::debug!(node = %n.name, error = %e, "SETSLOT NODE (announce)");
                    }
                }
            });
        join_all(jobs).await;
    }

    /// Moves every key of `slots` from `src` to `dst`. The work runs on the source, in a
    /// script (`MOVE_KEYS`) that per call takes up to `SCRIPT_SLOTS` slots: it lists up to
    /// `migrate_batch` keys per slot, asks their sizes (MEMORY USAGE: O(1) for strings, 5
    /// samples of an aggregate), and MIGRATEs them in batches bounded by `migrate_batch`
    /// keys and `migrate_batch_bytes` bytes; it leaves keys above `migrate_big_key_bytes` to
    /// the piecewise copy. Keys never travel through redisha, and a call costs one round trip
    /// however many keys it moves: listing and sizing keys from here took more time than
    /// moving them.
    ///
    /// `CALLS_IN_FLIGHT` calls are queued on the source at a time, so when one ends the next
    /// is already there: the source does not sit idle for a round trip to redisha between
    /// calls (a few ms on loopback, far more when Terraform runs far from the nodes, and
    /// whenever redisha's process waits for a core). Each call returns after the batch that
    /// used up its share of `migrate_call_time`, so the calls queued together block the
    /// source for about `migrate_call_time` plus a batch each, as one call did before; the
    /// source serves other clients between rounds.
    ///
    /// A call that fails with a transient error (IOERR, timeout, TRYAGAIN) is made again
    /// (it lists again, so nothing is moved twice or skipped), a bounded number of times.
    /// Keys too big for MIGRATE are moved once no call is running on the source: their copy
    /// pauses the source's writes, which would hold a queued call back.
    async fn move_keys(
        &self,
        src: &Target,
        dst: &Target,
        slots: Vec<u16>,
        progress: &Progress,
    ) -> Result<()> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut pending: std::collections::VecDeque<u16> = slots.into();
        let mut failures = 0u32;
        // The password the destination accepts: during a rotation it may still be the old one.
        let dst_credential = self.conns.credential_for(dst).await;
        let script = self.move_keys_script(&dst_credential);
        let budget = self.options.migrate_call_time / CALLS_IN_FLIGHT as u32;
        let mut in_flight = FuturesUnordered::new();
        // Big keys found by calls, moved when no call runs; slots they leave to count.
        let mut big: Vec<(u16, Vec<u8>, u64)> = Vec::new();
        let mut emptied_after_big = 0u64;
        let mut fatal: Option<crate::error::ClusterError> = None;
        loop {
            while fatal.is_none() && big.is_empty() && in_flight.len() < CALLS_IN_FLIGHT {
                let take = pending.len().min(SCRIPT_SLOTS);
                if take == 0 {
                    break;
                }
                let slots: Vec<u16> = pending.drain(..take).collect();
                in_flight.push(self.move_keys_call(src, dst, &script, slots, budget));
            }
            let Some((slots, reply)) = in_flight.next().await else {
                if let Some(e) = fatal {
                    return Err(e);
                }
                if big.is_empty() {
                    break;
                }
                for (slot, key, size) in std::mem::take(&mut big) {
                    self.move_big_key(src, dst, slot, &key, size).await?;
                    progress.moved(1, size);
                    progress.maybe_log(self.options.progress_interval);
                }
                progress.emptied(std::mem::take(&mut emptied_after_big));
                continue;
            };
            let reply = match reply {
                Ok(r) => {
                    failures = 0;
                    r
                }
                Err(e)
                    if fatal.is_none()
                        && is_transient(&e)
                        && failures + 1 < self.options.migrate_attempts =>
                {
                    failures += 1;
                    let pause = backoff(failures);
                    tracing::warn!(error = %e, attempt = failures, ?pause, "moving keys failed; retrying");
                    tokio::time::sleep(pause).await;
                    for s in slots.into_iter().rev() {
                        pending.push_front(s);
                    }
                    continue;
                }
                Err(e) => {
                    // Let the other call on the source end first: nothing of this move keeps
                    // running once it returns.
                    fatal.get_or_insert(e);
                    continue;
                }
            };
            progress.moved(reply.keys, reply.bytes);
            progress.maybe_log(self.options.progress_interval);
            let emptied = (slots.len() - reply.unreached.len() - reply.again.len()) as u64;
            if reply.big.is_empty() {
                progress.emptied(emptied);
            } else {
                emptied_after_big += emptied;
                big.extend(reply.big);
            }
            // Slots not reached, then slots that may hold more keys, go round again.
            for s in reply.unreached.into_iter().rev() {
                pending.push_front(s);
            }
            pending.extend(reply.again);
        }
        Ok(())
    }

    /// One call of `MOVE_KEYS` on `src` for `slots`, with `budget` of time; returns the
    /// slots with the reply, for the caller to queue again what the call did not finish.
    async fn move_keys_call(
        &self,
        src: &Target,
        dst: &Target,
        script: &str,
        slots: Vec<u16>,
        budget: Duration,
    ) -> (Vec<u16>, Result<MoveReply>) {
        let mut eval = redis::cmd("EVAL");
        eval.arg(script)
            .arg(0)
            .arg(&dst.ip)
            .arg(dst.port)
            .arg(u64::try_from(self.options.migrate_timeout.as_millis()).unwrap_or(u64::MAX))
            .arg(self.options.migrate_batch.max(1))
            .arg(self.options.migrate_batch_bytes.max(1))
            .arg(self.options.migrate_big_key_bytes)
            .arg(u64::try_from(budget.as_millis()).unwrap_or(u64::MAX).max(1));
        for s in &slots {
            eval.arg(*s);
        }
        // A call may wait behind the other calls queued on the source.
        let timeout = self.options.migrate_call_time * 2
            + self.migrate_reply_timeout(slots.len(), self.options.migrate_batch_bytes)
                * CALLS_IN_FLIGHT as u32;
        let reply = self
            .conns
            .query_within(src, &eval, "MIGRATE (script)", timeout)
            .await;
        (slots, reply)
    }

    /// The script's text. The user and password for MIGRATE's AUTH2 are written at its end as
    /// Lua strings: SLOWLOG keeps 128 characters of an argument, so the password never shows
    /// there, while as an argument of EVAL it would.
    fn move_keys_script(&self, dst: &Credential) -> String {
        let auth = match &dst.password {
            Some(p) => format!(
                "{}, {}",
                lua_string(dst.user_name()),
                lua_string(p.expose())
            ),
            None => "false, false".to_string(),
        };
        format!("{MOVE_KEYS}\nreturn run({auth})\n")
    }

    /// Appends `MIGRATE ... KEYS keys` (reply ignored) to `pipe`.
    fn push_migrate(
        &self,
        pipe: &mut redis::Pipeline,
        dst: &Target,
        credential: &Credential,
        keys: &[Vec<u8>],
    ) {
        let timeout_ms =
            u64::try_from(self.options.migrate_timeout.as_millis()).unwrap_or(u64::MAX);
        let cmd = pipe.cmd("MIGRATE");
        cmd.arg(&dst.ip)
            .arg(dst.port)
            .arg("")
            .arg(0)
            .arg(timeout_ms)
            .arg("REPLACE");
        // The credential the destination accepts: during a rotation it may still be the old one.
        if let Some(p) = &credential.password {
            cmd.arg("AUTH2").arg(credential.user_name()).arg(p.expose());
        }
        cmd.arg("KEYS");
        for k in keys {
            cmd.arg(k.as_slice());
        }
        cmd.ignore();
    }

    /// How long to wait for the replies of `commands` MIGRATE calls carrying `bytes`: MIGRATE's
    /// own timeout bounds each wait on the destination, not a whole call, so the deadline is
    /// that timeout plus the usual command timeout plus the transfer at a rate far below what
    /// loopback or a LAN does (4 MB/s), plus 5 ms per call. Always longer than MIGRATE's
    /// timeout, so a slow MIGRATE reports its own IOERR rather than being cut off.
    fn migrate_reply_timeout(&self, commands: usize, bytes: u64) -> Duration {
        const SLOW_RATE: f64 = 4.0 * 1024.0 * 1024.0;
        self.options.migrate_timeout
            + self.conns.response_timeout()
            + Duration::from_secs_f64(bytes as f64 / SLOW_RATE)
            + Duration::from_millis(5) * u32::try_from(commands).unwrap_or(u32::MAX)
    }

    /// Runs `op` again after a transient error, with doubling pauses, at most
    /// `migrate_attempts` times in all.
    pub(crate) async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) && attempt < self.options.migrate_attempts => {
                    let pause = backoff(attempt);
                    tracing::warn!(error = %e, what, attempt, ?pause, "transient error; retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves one key too big for a single MIGRATE. MIGRATE serializes the whole value on the
    /// source and rebuilds it on the destination while both wait (2.4 s for a 144 MB hash
    /// here; past `cluster-node-timeout` the cluster would fail the node over). Instead:
    ///
    /// 1. WATCH the key on the source, then copy it piece by piece (HSCAN/SSCAN/ZRANGE/LRANGE/
    ///    GETRANGE) into a scratch key of the same slot on the destination (ASKING). Neither
    ///    node is blocked longer than one piece; clients keep reading and writing the key on
    ///    the source.
    /// 2. Pause client writes on the source (CLIENT PAUSE WRITE, which expires on its own if
    ///    redisha dies) and check the WATCH (EXEC of a PING): if any client changed the key
    ///    during the copy, drop the copy and start over (bounded by `migrate_attempts`).
    /// 3. On the destination, give the copy the key's expiry and RENAME it to the key (over a
    ///    placeholder: in an importing slot RENAME needs both keys to exist); it stays
    ///    invisible while the source still has the key.
    /// 4. Send `CLIENT UNPAUSE` and `UNLINK key` to the source in one write: redis runs both
    ///    before any write the pause held back, so from then on clients are sent to the
    ///    destination (ASK) and find the key there. UNLINK frees the value in the background.
    ///
    /// When every attempt but the last found the key changed, the last one pauses client
    /// writes on the source before the copy (bounded by `hold_writes_limit`; reads go on and
    /// the node keeps answering the cluster bus, so no failover), and the key moves.
    ///
    /// Types without a piecewise copy (streams, module types) go with one MIGRATE, logged.
    async fn move_big_key(
        &self,
        src: &Target,
        dst: &Target,
        slot: u16,
        key: &[u8],
        size: u64,
    ) -> Result<()> {
        let scratch = partial_key(slot);
        let name = String::from_utf8_lossy(key).into_owned();
        let mut attempt = 1;
        loop {
            let outcome = {
                // One swap at a time: the unpause of one would end another's pause.
                let _swap = BIG_KEY_SWAP.lock().await;
                // The last attempt holds client writes on the source for the whole copy: a
                // key written more often than a copy takes would otherwise never move.
                let hold = attempt == self.options.migrate_attempts.max(1);
                let outcome = self.copy_big_key(src, dst, key, size, &scratch, hold).await;
                if hold && !matches!(outcome, Ok(Copied::Done)) {
                    // Whatever stopped the copy, the writes held must go on now.
                    if let Err(e) = self
                        .conns
                        .query::<()>(src, redis::cmd("CLIENT").arg("UNPAUSE"), "CLIENT UNPAUSE")
                        .await
                    {
                        tracing::warn!(node = %src.name, error = %e, "CLIENT UNPAUSE failed; the pause ends by itself");
                    }
                }
                outcome
            };
            match outcome {
                Ok(Copied::Done) => {
                    info!(key = %name, slot, bytes = size, from = %src.name, to = %dst.name, "big key copied piecewise");
                    return Ok(());
                }
                Ok(Copied::Gone) => return Ok(()),
                Ok(Copied::Unsupported(kind)) => {
                    tracing::warn!(key = %name, kind = %kind, bytes = size, from = %src.name, to = %dst.name,
                        "no piecewise copy for this type: moving it with one MIGRATE, which blocks both nodes while it runs");
                    let mut pipe = redis::pipe();
                    let dst_credential = self.conns.credential_for(dst).await;
                    self.push_migrate(&mut pipe, dst, &dst_credential, &[key.to_vec()]);
                    let timeout = self.migrate_reply_timeout(1, size);
                    return self
                        .conns
                        .pipe_within::<()>(src, &pipe, "MIGRATE", timeout)
                        .await;
                }
                Ok(Copied::Changed) if attempt < self.options.migrate_attempts => {}
                Ok(Copied::Changed) => {
                    return Err(ClusterError::Plan(format!(
                        "key {name:?} (slot {slot}, {size} bytes) changed during each of {attempt} piecewise copies from {} to {}; the slot stays half-moved (clients are served) and the next apply tries again, or raise migrate_big_key_bytes to move it with one blocking MIGRATE",
                        src.name, dst.name
                    )))
                }
                Err(e) if is_transient(&e) && attempt < self.options.migrate_attempts => {
                    tracing::warn!(key = %name, error = %e, attempt, "piecewise copy failed; retrying");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn copy_big_key(
        &self,
        src: &Target,
        dst: &Target,
        key: &[u8],
        size: u64,
        scratch: &str,
        hold_writes: bool,
    ) -> Result<Copied> {
        let timeout = self.conns.response_timeout();
        // WATCH is per connection: this one is ours alone.
        let watch = self.conns.dedicated(src).await?;
        let on_watch = |cmd: redis::Pipeline, action: &'static str| {
            let mut con = watch.clone();
            async move {
                match tokio::time::timeout(timeout, cmd.query_async::<redis::Value>(&mut con)).await
                {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(src.err(action, e)),
                    Err(_) => Err(src.err(
                        action,
                        redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no reply within {timeout:?}"),
                        )),
                    )),
                }
            }
        };
        // Held before the WATCH, so that no write can slip in between.
        if hold_writes {
            let limit = self.options.hold_writes_limit;
            tracing::warn!(node = %src.name, key = %String::from_utf8_lossy(key), ?limit,
                "the key changed during every copy: holding client writes on the source while it is copied");
            let mut p = redis::pipe();
            p.cmd("CLIENT")
                .arg("PAUSE")
                .arg(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX))
                .arg("WRITE")
                .ignore();
            on_watch(p, "CLIENT PAUSE").await?;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("WATCH")
            .arg(key)
            .ignore()
            .cmd("TYPE")
            .arg(key)
            .cmd("PEXPIRETIME")
            .arg(key);
        let reply = on_watch(pipe, "WATCH").await?;
        let (kind, expire_at): (String, i64) = redis::from_redis_value(&reply)
            .map_err(|e| src.protocol("TYPE/PEXPIRETIME", e.to_string()))?;
        let len_cmd = match kind.as_str() {
            "none" => return Ok(Copied::Gone),
            "hash" => "HLEN",
            "set" => "SCARD",
            "zset" => "ZCARD",
            "list" => "LLEN",
            "string" => "STRLEN",
            _ => return Ok(Copied::Unsupported(kind)),
        };
        let len: u64 = self
            .conns
            .query(src, redis::cmd(len_cmd).arg(key), len_cmd)
            .await?;
        let mut clear = redis::pipe();
        clear
            .cmd("ASKING")
            .ignore()
            .cmd("UNLINK")
            .arg(scratch)
            .ignore();
        self.conns
            .pipe::<()>(dst, &clear, "UNLINK scratch key")
            .await?;
        let unpause = || async {
            let mut p = redis::pipe();
            p.cmd("CLIENT").arg("UNPAUSE").ignore();
            if let Err(e) = on_watch(p, "CLIENT UNPAUSE").await {
                tracing::warn!(node = %src.name, error = %e, "CLIENT UNPAUSE failed; the pause ends by itself");
            }
        };
        let copied = self
            .copy_pieces(src, dst, key, &kind, len, size, scratch)
            .await;
        copied?;

        // The swap, with client writes on the source paused (see above).
        let mut pause = redis::pipe();
        pause
            .cmd("CLIENT")
            .arg("PAUSE")
            .arg(2000)
            .arg("WRITE")
            .ignore();
        pause.cmd("MULTI").ignore().cmd("PING").ignore().cmd("EXEC");
        // Watched again for the final UNLINK: should the pause run out before it (a very
        // slow destination), a write that slipped in makes the UNLINK fail instead of
        // being deleted with the key.
        pause.cmd("WATCH").arg(key).ignore();
        let checked = on_watch(pause, "CLIENT PAUSE").await;
        let unchanged = match checked {
            Ok(v) => !aborted(&v),
            Err(e) => {
                unpause().await;
                return Err(e);
            }
        };
        if !unchanged {
            unpause().await;
            self.conns
                .pipe::<()>(dst, &clear, "UNLINK scratch key")
                .await?;
            return Ok(Copied::Changed);
        }
        let mut place = redis::pipe();
        // A copy left by an interrupted earlier swap: invisible while the source has the key,
        // freed in the background.
        place.cmd("ASKING").ignore().cmd("UNLINK").arg(key).ignore();
        // In an importing slot a command on several keys is refused (TRYAGAIN) unless all
        // of them exist: RENAME needs its target to exist. A placeholder, invisible like the
        // rest while the source holds the key and writes are paused, makes it so.
        place
            .cmd("ASKING")
            .ignore()
            .cmd("SET")
            .arg(key)
            .arg("")
            .ignore();
        if expire_at >= 0 {
            place
                .cmd("ASKING")
                .ignore()
                .cmd("PEXPIREAT")
                .arg(scratch)
                .arg(expire_at)
                .ignore();
        }
        place
            .cmd("ASKING")
            .ignore()
            .cmd("RENAME")
            .arg(scratch)
            .arg(key)
            .ignore();
        if let Err(e) = self.conns.pipe::<()>(dst, &place, "RENAME copy").await {
            unpause().await;
            return Err(e);
        }
        let mut swap = redis::pipe();
        swap.cmd("CLIENT")
            .arg("UNPAUSE")
            .ignore()
            .cmd("MULTI")
            .ignore()
            .cmd("UNLINK")
            .arg(key)
            .ignore()
            .cmd("EXEC");
        let done = on_watch(swap, "UNLINK").await?;
        if aborted(&done) {
            // The source's key changed after all: the copy on the destination is stale.
            let mut drop = redis::pipe();
            drop.cmd("ASKING").ignore().cmd("UNLINK").arg(key).ignore();
            self.conns
                .pipe::<()>(dst, &drop, "UNLINK stale copy")
                .await?;
            return Ok(Copied::Changed);
        }
        Ok(Copied::Done)
    }

    /// Copies `key` into `scratch` on the destination, reading the next piece while the
    /// previous one is written.
    #[allow(clippy::too_many_arguments)]
    async fn copy_pieces(
        &self,
        src: &Target,
        dst: &Target,
        key: &[u8],
        kind: &str,
        len: u64,
        size: u64,
        scratch: &str,
    ) -> Result<()> {
        // Pieces of about migrate_batch_bytes, at most migrate_batch elements.
        let per_element = (size / len.max(1)).max(1);
        let per_piece = (self.options.migrate_batch_bytes / per_element)
            .clamp(1, self.options.migrate_batch.max(1) as u64);
        let string_piece = self.options.migrate_batch_bytes.clamp(4096, 4 << 20);
        let mut cursor = Cursor::Start;
        let mut pending: Option<redis::Pipeline> = None;
        loop {
            // Read the next piece while the previous one is written.
            let write = async {
                match pending.take() {
                    Some(p) => self.conns.pipe::<()>(dst, &p, "copy piece").await,
                    None => Ok(()),
                }
            };
            let read = self.read_piece(src, key, kind, len, per_piece, string_piece, &mut cursor);
            let (written, piece) = futures::join!(write, read);
            written?;
            match piece? {
                Some(p) => pending = p.into_write(kind, scratch),
                None => break,
            }
        }

        Ok(())
    }

    /// The next piece of `key`, or None when the copy is complete.
    #[allow(clippy::too_many_arguments)]
    async fn read_piece(
        &self,
        src: &Target,
        key: &[u8],
        kind: &str,
        len: u64,
        per_piece: u64,
        string_piece: u64,
        cursor: &mut Cursor,
    ) -> Result<Option<Piece>> {
        match (kind, &*cursor) {
            (_, Cursor::Done) => Ok(None),
            ("hash" | "set", c) => {
                let from = match c {
                    Cursor::Scan(s) => s.clone(),
                    _ => "0".to_string(),
                };
                let cmd_name = if kind == "hash" { "HSCAN" } else { "SSCAN" };
                let (next, items): (String, Vec<Vec<u8>>) = self
                    .conns
                    .query(
                        src,
                        redis::cmd(cmd_name)
                            .arg(key)
                            .arg(&from)
                            .arg("COUNT")
                            .arg(per_piece),
                        cmd_name,
                    )
                    .await?;
                *cursor = if next == "0" {
                    Cursor::Done
                } else {
                    Cursor::Scan(next)
                };
                Ok(Some(Piece(items)))
            }
            ("zset" | "list" | "string", c) => {
                let start = match c {
                    Cursor::Index(i) => *i,
                    _ => 0,
                };
                if start >= len {
                    *cursor = Cursor::Done;
                    return Ok(None);
                }
                let step = if kind == "string" {
                    string_piece
                } else {
                    per_piece
                };
                let end = start + step - 1;
                let items: Vec<Vec<u8>> = match kind {
                    "zset" => {
                        self.conns
                            .query(
                                src,
                                redis::cmd("ZRANGE")
                                    .arg(key)
                                    .arg(start)
                                    .arg(end)
                                    .arg("WITHSCORES"),
                                "ZRANGE",
                            )
                            .await?
                    }
                    "list" => {
                        self.conns
                            .query(
                                src,
                                redis::cmd("LRANGE").arg(key).arg(start).arg(end),
                                "LRANGE",
                            )
                            .await?
                    }
                    _ => {
                        let bytes: Vec<u8> = self
                            .conns
                            .query(
                                src,
                                redis::cmd("GETRANGE").arg(key).arg(start).arg(end),
                                "GETRANGE",
                            )
                            .await?;
                        vec![bytes]
                    }
                };
                *cursor = Cursor::Index(end + 1);
                Ok(Some(Piece(items)))
            }
            _ => Ok(None),
        }
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

/// One slot of a move, as the two sides stand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotMove {
    pub slot: u16,
    /// The source still owns the slot (so it gets MIGRATING and its keys move).
    pub src_owns: bool,
    /// The destination owns it already (an earlier run got that far).
    pub dst_owns: bool,
    /// An earlier run left the slot open.
    pub resumed: bool,
}

/// `text` as a Lua long string literal whose brackets it does not contain.
fn lua_string(text: &str) -> String {
    let level = (0..)
        .find(|n| !text.contains(&format!("]{}]", "=".repeat(*n))))
        .unwrap_or(0);
    let eq = "=".repeat(level);
    format!("[{eq}[{text}]{eq}]")
}

/// Slots one script call takes at most.
const SCRIPT_SLOTS: usize = 256;

/// Script calls of one move queued on the source at a time (see `move_keys`).
const CALLS_IN_FLIGHT: usize = 2;

/// Runs on the source (see `move_keys`). ARGV: host, port, MIGRATE timeout (ms), keys per
/// batch, bytes per batch, big-key threshold, time per call (ms), then the slots. `run(user, auth)`
/// is appended with the user and password (or false, false). Returns {keys moved, bytes moved, {slots that may
/// hold more}, {slot, key, size of each big key}, {slots not reached}}.
const MOVE_KEYS: &str = r#"#!lua flags=allow-cross-slot-keys
local function run(user, auth)
  local host, port, timeout = ARGV[1], ARGV[2], ARGV[3]
  local max_keys, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
  local big_bytes, budget_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
  local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local started = now_ms()
  -- TIME costs a call: ask it every 16 slots or after a full batch, not after every slot.
  local slots_unchecked, bytes_unchecked = 0, 0
  local function spent()
    if slots_unchecked < 16 and bytes_unchecked < max_bytes then return false end
    slots_unchecked, bytes_unchecked = 0, 0
    return now_ms() - started >= budget_ms
  end
  local moved_keys, moved_bytes = 0, 0
  local again, big, unreached = {}, {}, {}
  local out_of_time = false
  local function migrate(batch)
    if #batch == 0 then return end
    slots_unchecked = slots_unchecked + 1
    if auth then
      redis.call('MIGRATE', host, port, '', 0, timeout, 'REPLACE', 'AUTH2', user, auth, 'KEYS', unpack(batch))
    else
      redis.call('MIGRATE', host, port, '', 0, timeout, 'REPLACE', 'KEYS', unpack(batch))
    end
  end
  for i = 8, #ARGV do
    local slot = ARGV[i]
    if out_of_time then
      table.insert(unreached, slot)
    else
      local keys = redis.call('CLUSTER', 'GETKEYSINSLOT', slot, max_keys)
      local batch, bytes, cut = {}, 0, false
      for _, key in ipairs(keys) do
        local size = redis.call('MEMORY', 'USAGE', key)
        if size then
          if size > big_bytes then
            table.insert(big, slot)
            table.insert(big, key)
            table.insert(big, size)
          else
            if #batch > 0 and (#batch >= max_keys or bytes + size > max_bytes) then
              migrate(batch)
              batch, bytes = {}, 0
              if spent() then
                out_of_time, cut = true, true
                break
              end
            end
            table.insert(batch, key)
            bytes = bytes + size
            bytes_unchecked = bytes_unchecked + size
            moved_keys = moved_keys + 1
            moved_bytes = moved_bytes + size
          end
        end
      end
      migrate(batch)
      if spent() then out_of_time = true end
      if cut or #keys >= max_keys then table.insert(again, slot) end
    end
  end
  return {moved_keys, moved_bytes, again, big, unreached}
end"#;

/// What one call of `MOVE_KEYS` did.
struct MoveReply {
    keys: u64,
    bytes: u64,
    again: Vec<u16>,
    big: Vec<(u16, Vec<u8>, u64)>,
    unreached: Vec<u16>,
}

impl redis::FromRedisValue for MoveReply {
    fn from_redis_value(v: &redis::Value) -> redis::RedisResult<Self> {
        let (keys, bytes, again, big, unreached): (
            u64,
            u64,
            Vec<u16>,
            Vec<redis::Value>,
            Vec<u16>,
        ) = redis::from_redis_value(v)?;
        let mut triples = Vec::new();
        for t in big.chunks(3) {
            if let [slot, key, size] = t {
                triples.push((
                    redis::from_redis_value(slot)?,
                    redis::from_redis_value(key)?,
                    redis::from_redis_value(size)?,
                ));
            }
        }
        Ok(MoveReply {
            keys,
            bytes,
            again,
            big: triples,
            unreached,
        })
    }
}

enum Copied {
    Done,
    /// The key disappeared (expired or deleted) before the copy: nothing to move.
    Gone,
    /// A client changed the key during the copy; the copy was dropped.
    Changed,
    Unsupported(String),
}

enum Cursor {
    Start,
    Scan(String),
    Index(u64),
    Done,
}

/// Elements read from the source: fields and values, members, (member, score) pairs, or one
/// string range.
struct Piece(Vec<Vec<u8>>);

impl Piece {
    fn into_write(self, kind: &str, scratch: &str) -> Option<redis::Pipeline> {
        if self.0.is_empty() {
            return None;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("ASKING").ignore();
        let cmd = match kind {
            "hash" => pipe.cmd("HSET"),
            "set" => pipe.cmd("SADD"),
            "zset" => pipe.cmd("ZADD"),
            "list" => pipe.cmd("RPUSH"),
            _ => pipe.cmd("APPEND"),
        };
        cmd.arg(scratch);
        if kind == "zset" {
            // ZRANGE WITHSCORES gives member, score; ZADD wants score, member. Scores are
            // passed as redis printed them (17 significant digits), so they round-trip.
            for pair in self.0.chunks(2) {
                if let [member, score] = pair {
                    cmd.arg(score.as_slice()).arg(member.as_slice());
                }
            }
        } else {
            for item in &self.0 {
                cmd.arg(item.as_slice());
            }
        }
        cmd.ignore();
        Some(pipe)
    }
}

/// Serializes the pause-and-swap of big keys within this process.
static BIG_KEY_SWAP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `CLUSTER SETSLOT <slot> <sub> [id]` for every slot, from a script (reply ignored).
/// One command instead of thousands: redis rewrites nodes.conf once per event-loop pass,
/// and a pipeline of SETSLOT calls is read 16 KB at a time, so this saves a dozen rewrites
/// per chunk on the node and most of the encoding in redisha.
const SETSLOTS: &str = r#"#!lua
local sub, id = ARGV[1], ARGV[2]
for i = 3, #ARGV do
  if sub == 'STABLE' then
    redis.call('CLUSTER', 'SETSLOT', ARGV[i], 'STABLE')
  else
    redis.call('CLUSTER', 'SETSLOT', ARGV[i], sub, id)
  end
end
return #ARGV - 2"#;

/// Appends SETSLOT `sub` of `slots` (as one script call) to `pipe`.
fn setslots(pipe: &mut redis::Pipeline, sub: &str, id: &str, slots: &[u16]) {
    if slots.is_empty() {
        return;
    }
    let cmd = pipe.cmd("EVAL").arg(SETSLOTS).arg(0).arg(sub).arg(id);
    for s in slots {
        cmd.arg(*s);
    }
    cmd.ignore();
}

/// Whether the reply of a pipeline ending in EXEC says the transaction was aborted (a
/// watched key changed).
fn aborted(reply: &redis::Value) -> bool {
    match reply {
        redis::Value::Nil => true,
        redis::Value::Array(a) => matches!(a.last(), Some(redis::Value::Nil)),
        _ => false,
    }
}

/// The myself line of a CLUSTER NODES reply.
pub(crate) fn myself<'v>(view: &'v [NodeLine], t: &Target) -> Result<&'v NodeLine> {
    view.iter()
        .find(|l| l.is_myself())
        .ok_or_else(|| t.protocol("CLUSTER NODES", "no myself line"))
}

pub(crate) fn owns(line: &NodeLine, slot: u16) -> bool {
    line.slots.iter().any(|r| r.start <= slot && slot <= r.end)
}

/// Errors worth another attempt: the network, a node busy loading, MIGRATE's IOERR, a
/// TRYAGAIN during resharding, a cluster briefly down.
pub(crate) fn is_transient(e: &ClusterError) -> bool {
    let ClusterError::Redis { source, .. } = e else {
        return false;
    };
    source.is_timeout()
        || source.is_io_error()
        || source.is_connection_dropped()
        || source.is_connection_refusal()
        || matches!(
            source.kind(),
            redis::ErrorKind::TryAgain
                | redis::ErrorKind::ClusterDown
                | redis::ErrorKind::BusyLoadingError
        )
        || source.code() == Some("IOERR")
}

/// 100 ms, 200 ms, 400 ms, ... at most 3 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(3))
}

/// CRC16/XMODEM, the hash of redis cluster key slots.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key (honouring a `{hash tag}`).
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % 16384
}

/// For every slot, a short tag whose slot it is (the smallest decimal number that hashes
/// there), so redisha can name a key of any slot.
fn slot_tags() -> &'static [String] {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; 16384];
        let mut missing = tags.len();
        let mut n: u64 = 0;
        while missing > 0 {
            let t = n.to_string();
            let slot = usize::from(key_slot(t.as_bytes()));
            if tags[slot].is_none() {
                tags[slot] = Some(t);
                missing -= 1;
            }
            n += 1;
        }
        tags.into_iter().map(Option::unwrap_or_default).collect()
    })
}

/// The scratch key a piecewise copy builds on the destination, in `slot`. At most one per
/// slot exists (copies of a slot run one at a time) and any leftover of an interrupted copy
/// is deleted before the next copy or when the slot is finished.
pub fn partial_key(slot: u16) -> String {
    let tag = slot_tags()
        .get(usize::from(slot))
        .cloned()
        .unwrap_or_default();
    format!("redisha:partial-copy:{{{tag}}}")
}

/// Slots done, keys and bytes moved, logged every `progress_interval` (5 s by default) with an
/// estimate of the time left.
pub(crate) struct Progress {
    started: Instant,
    total: AtomicU64,
    done: AtomicU64,
    /// Slots whose keys are all moved (ownership follows at the end of the chunk): the
    /// time left is estimated from these, which advance steadily.
    emptied: AtomicU64,
    keys: AtomicU64,
    bytes: AtomicU64,
    last_log: std::sync::Mutex<Instant>,
}

impl Progress {
    pub(crate) fn new(total_slots: u64) -> Self {
        Progress {
            started: Instant::now(),
            total: AtomicU64::new(total_slots),
            done: AtomicU64::new(0),
            emptied: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last_log: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn slots_done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    fn emptied(&self, n: u64) {
        self.emptied.fetch_add(n, Ordering::Relaxed);
    }

    fn moved(&self, keys: u64, bytes: u64) {
        self.keys.fetch_add(keys, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Logs when the last line is older than `every`.
    fn maybe_log(&self, every: Duration) {
        let due = match self.last_log.lock() {
            Ok(mut last) if last.elapsed() >= every => {
                *last = Instant::now();
                true
            }
            _ => false,
        };
        if due {
            self.log();
        }
    }

    fn log(&self) {
        let total = self.total.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed).min(total);
        // Slots skipped or without keys count as emptied when their chunk is done.
        let emptied = self.emptied.load(Ordering::Relaxed).max(done).min(total);
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta_s = if emptied > 0 {
            format!("{:.0}", elapsed * (total - emptied) as f64 / emptied as f64)
        } else {
            "unknown".to_string()
        };
        info!(
            slots_done = done,
            slots_emptied = emptied,
            slots_total = total,
            keys = self.keys.load(Ordering::Relaxed),
            bytes = self.bytes.load(Ordering::Relaxed),
            elapsed_s = format!("{elapsed:.0}"),
            eta_s,
            "migration progress"
        );
    }

    /// Runs `work`, logging progress every `every` even while one long call (a big key)
    /// keeps the work itself from reporting.
    pub(crate) async fn while_running<T>(
        &self,
        every: Duration,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        futures::pin_mut!(work);
        loop {
            tokio::select! {
                out = &mut work => {
                    self.log();
                    return out;
                }
                _ = tokio::time::sleep(every) => self.maybe_log(every),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis() {
        // Values from the redis cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bighash"), 15077);
        assert_eq!(key_slot(b"bigzset"), 6977);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
    }

    #[test]
    fn every_slot_has_a_scratch_key_in_it() {
        for slot in 0..16384u16 {
            assert_eq!(key_slot(partial_key(slot).as_bytes()), slot);
        }
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(30), Duration::from_secs(3));
    }
}
