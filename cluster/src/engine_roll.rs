//! Changing the server engine (Redis 6.2 → 7.0 → Valkey 8.1, or back where that can work) on a
//! live cluster: the nodes whose running engine differs from the driver's are restarted on it
//! one shard copy at a time, replicas first, then the master after a coordinated failover to an
//! upgraded replica (the same roll as a restart for new settings). A roll cut short is resumed
//! by the next apply: nodes already on the target engine are not restarted again.

use std::collections::BTreeSet;

use tracing::info;

use crate::engine::{roll_refusal, Engine};
use crate::error::{ClusterError, Result};
use crate::ops::Operator;
use crate::state::ClusterState;

/// Each node's running engine against the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineChange {
    pub target: Engine,
    /// (node, running engine), in state order.
    pub nodes: Vec<(String, Engine)>,
    /// Why the roll cannot run, if it cannot (see [`roll_refusal`]).
    pub refusal: Option<String>,
}

impl EngineChange {
    /// The nodes that still run another engine.
    pub fn pending(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter(|(_, e)| *e != self.target)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

impl Operator<'_> {
    /// What an engine roll would do now; `None` when the driver does not choose the engine
    /// (its hosts install their own).
    pub async fn engine_change(&self, state: &ClusterState) -> Result<Option<EngineChange>> {
        let Some(target) = self.driver.engine().await? else {
            return Ok(None);
        };
        let mut nodes = Vec::with_capacity(state.nodes.len());
        for n in &state.nodes {
            let info = self.conns.info(&n.target(), "server").await?;
            let running = Engine::from_info(&info).ok_or_else(|| ClusterError::Protocol {
                node: n.name.clone(),
                address: n.address(),
                action: "INFO server".into(),
                detail: "no version in the reply".into(),
            })?;
            nodes.push((n.name.clone(), running));
        }
        let mut shards: Vec<u32> = state.nodes.iter().map(|n| n.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut masters = Vec::new();
        for shard in shards {
            let master = self.current_master(state, shard).await?;
            if let Some((_, e)) = nodes.iter().find(|(n, _)| *n == master.name) {
                masters.push(e.clone());
            }
        }
        let refusal = roll_refusal(&masters, &target);
        Ok(Some(EngineChange {
            target,
            nodes,
            refusal,
        }))
    }

    /// Restarts the nodes that run another engine than the driver's, shard copy by shard copy
    /// (see the module docs). Refused, with nothing restarted, when the target cannot follow
    /// the current masters.
    pub async fn roll_engine(&self, state: &ClusterState) -> Result<()> {
        let Some(change) = self.engine_change(state).await? else {
            return Ok(());
        };
        let pending = change.pending();
        if pending.is_empty() {
            return Ok(());
        }
        if let Some(why) = change.refusal {
            return Err(ClusterError::Plan(why));
        }
        // A node on an engine whose snapshots the target cannot read (a replica rolled back to
        // an older engine) restarts with its data set aside and resynchronises.
        let target_rdb = change.target.rdb_version();
        let fresh: BTreeSet<String> = change
            .nodes
            .iter()
            .filter(|(_, e)| e.rdb_version() > target_rdb)
            .map(|(n, _)| n.clone())
            .collect();
        info!(target = %change.target, nodes = pending.len(), fresh = fresh.len(), "rolling the cluster onto another engine");
        self.restart_nodes(state, &pending, &fresh).await
    }
}
