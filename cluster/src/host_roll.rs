//! Changing what hosts are made from on a live cluster (the aws driver: the AMI or the engine
//! package, which an instance gets only at launch): every host the driver reports outdated
//! ([`Driver::outdated_hosts`](crate::Driver::outdated_hosts)) is replaced, one at a time, hosts
//! holding only replicas first. For each: every master on it fails over (coordinated CLUSTER
//! FAILOVER, as the engine roll does) to a replica of its shard on another host; then the host
//! is removed (its instance terminated) and repair provisions it again from the new image, with
//! the same nodes, which rejoin empty as replicas and resynchronise; the cluster converges
//! (every replica's link up, `cluster_state:ok`) and the planned masters are restored before the
//! next host. A shard's copies are on distinct hosts (the planner's rule, checked here), so no
//! shard ever has two copies down at once.
//!
//! Resumable without any record of its own: what is left to replace is what the driver still
//! reports outdated (for aws, DescribeInstances' ImageId and the package tag), and a host whose
//! machine went away half-way is provisioned again by repair like any lost machine.

use std::collections::{BTreeMap, BTreeSet};

use redisha_planner::{Request, Role};
use tracing::info;

use crate::driver::OutdatedHost;
use crate::error::{ClusterError, Result};
use crate::ops::Operator;
use crate::state::{ClusterNode, ClusterState};

/// What a host roll would do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChange {
    /// The hosts left to replace, in state order.
    pub hosts: Vec<OutdatedHost>,
    /// Why the roll cannot run, if it cannot (see [`replace_refusal`]).
    pub refusal: Option<String>,
}

/// Why replacing `outdated` hosts one at a time would take a shard down or lose its data: a
/// shard with all its copies on one of them (its only copy, or two copies sharing a host).
pub fn replace_refusal(state: &ClusterState, outdated: &[OutdatedHost]) -> Option<String> {
    let replaced: BTreeSet<&str> = outdated.iter().map(|h| h.host.as_str()).collect();
    let mut shards: BTreeMap<u32, Vec<&ClusterNode>> = BTreeMap::new();
    for n in &state.nodes {
        shards.entry(n.shard).or_default().push(n);
    }
    let mut problems = Vec::new();
    for (shard, copies) in &shards {
        for host in &replaced {
            let here: Vec<&str> = copies
                .iter()
                .filter(|n| n.host == *host)
                .map(|n| n.name.as_str())
                .collect();
            if here.is_empty() {
                continue;
            }
            if copies.len() == 1 {
                problems.push(format!(
                    "shard {shard} has a single copy (node {}) on host {host}: replacing that machine would lose its data; set replicas = 1 or more and apply first",
                    here[0]
                ));
            } else if here.len() > 1 {
                problems.push(format!(
                    "shard {shard} has {} on the same host {host}: replacing that machine would take them down together",
                    here.join(" and ")
                ));
            }
        }
    }
    (!problems.is_empty()).then(|| {
        format!(
            "the hosts cannot be replaced one at a time without a shard going down: {}",
            problems.join("; ")
        )
    })
}

impl Operator<'_> {
    /// The hosts a host roll would replace now, and whether it may.
    pub async fn host_change(&self, state: &ClusterState) -> Result<HostChange> {
        let hosts = self.driver.outdated_hosts(&state.hosts).await?;
        let refusal = replace_refusal(state, &hosts);
        Ok(HostChange { hosts, refusal })
    }

    /// Replaces every outdated host, one at a time (see the module docs); the names replaced.
    /// Refused, with nothing changed, when a shard would go down.
    pub async fn roll_hosts(
        &self,
        request: &Request,
        state: &mut ClusterState,
    ) -> Result<Vec<String>> {
        let mut replaced: Vec<String> = Vec::new();
        loop {
            let change = self.host_change(state).await?;
            if change.hosts.is_empty() {
                return Ok(replaced);
            }
            if let Some(why) = change.refusal {
                return Err(ClusterError::Plan(why));
            }
            if let Some(again) = change.hosts.iter().find(|h| replaced.contains(&h.host)) {
                // A replacement that still runs the old image would loop forever.
                return Err(ClusterError::Plan(format!(
                    "host {} still runs {} after its replacement, not {}",
                    again.host, again.running, again.target
                )));
            }
            let outdated: BTreeSet<String> = change.hosts.iter().map(|h| h.host.clone()).collect();
            let next = self.next_host(state, &change.hosts).await?;
            info!(host = %next.host, running = %next.running, target = %next.target, left = change.hosts.len(), "replacing host");
            self.checkpoint("host_roll.host_chosen")?;
            self.move_masters_off(state, &next.host, &outdated).await?;
            self.checkpoint("host_roll.masters_moved")?;
            self.replace_host(request, state, &next.host).await?;
            self.checkpoint("host_roll.host_replaced")?;
            replaced.push(next.host);
        }
    }

    /// The host to replace next: one whose nodes are all replicas now, else the first.
    async fn next_host(
        &self,
        state: &ClusterState,
        outdated: &[OutdatedHost],
    ) -> Result<OutdatedHost> {
        let masters = self.current_masters(state).await?;
        let first = outdated
            .first()
            .cloned()
            .ok_or_else(|| ClusterError::Plan("no host to replace".into()))?;
        Ok(outdated
            .iter()
            .find(|h| !masters.iter().any(|m| m.host == h.host))
            .cloned()
            .unwrap_or(first))
    }

    /// The node serving each shard now.
    async fn current_masters(&self, state: &ClusterState) -> Result<Vec<ClusterNode>> {
        let shards: BTreeSet<u32> = state.nodes.iter().map(|n| n.shard).collect();
        let mut out = Vec::with_capacity(shards.len());
        for shard in shards {
            out.push(self.current_master(state, shard).await?.clone());
        }
        Ok(out)
    }

    /// Fails every master on `host` over to a replica of its shard on another host (one on a
    /// host not left to replace when there is one, so it is not moved again), then waits until
    /// no node sees a node of `host` serving slots.
    async fn move_masters_off(
        &self,
        state: &ClusterState,
        host: &str,
        outdated: &BTreeSet<String>,
    ) -> Result<()> {
        for master in self
            .current_masters(state)
            .await?
            .iter()
            .filter(|m| m.host == host)
        {
            let mut candidates: Vec<&ClusterNode> = state
                .nodes
                .iter()
                .filter(|n| n.shard == master.shard && n.host != host)
                .collect();
            candidates.sort_by_key(|n| (outdated.contains(&n.host), n.name.clone()));
            let mut stand_in = None;
            for c in candidates {
                if let Ok((Role::Replica, Some(of))) = self.role_of(&c.target()).await {
                    if of == master.node_id {
                        stand_in = Some(c);
                        break;
                    }
                }
            }
            let stand_in = stand_in.ok_or_else(|| {
                ClusterError::Plan(format!(
                    "master {} on host {host} has no attached replica on another host to hand shard {} to",
                    master.name, master.shard
                ))
            })?;
            info!(from = %master.name, to = %stand_in.name, host, "moving a master off the host to replace");
            self.failover_to(stand_in, master).await?;
        }
        let on_host: BTreeSet<String> = state
            .nodes
            .iter()
            .filter(|n| n.host == host && !n.node_id.is_empty())
            .map(|n| n.node_id.clone())
            .collect();
        let others: Vec<ClusterNode> = state
            .nodes
            .iter()
            .filter(|n| n.host != host)
            .cloned()
            .collect();
        // Repair treats the host's nodes as lost once it is gone; a peer whose view still had
        // one serving slots would make it promote a replica that already serves them.
        self.poll(
            &format!("every node to see no node of {host} serving slots"),
            || async {
                for o in &others {
                    let view = self
                        .conns
                        .cluster_nodes(&o.target())
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Some(l) = view
                        .iter()
                        .find(|l| on_host.contains(&l.id) && l.slot_count() > 0)
                    {
                        return Err(format!("{} still sees {} serving slots", o.name, l.id));
                    }
                }
                Ok(())
            },
        )
        .await
    }

    /// Removes `host` (the driver terminates its machine and waits until it is gone), waits
    /// until its nodes no longer answer, and repairs: the host is provisioned again from the
    /// driver's current image and its nodes rejoin as replicas.
    async fn replace_host(
        &self,
        request: &Request,
        state: &mut ClusterState,
        host: &str,
    ) -> Result<()> {
        let handle = state
            .host(host)
            .cloned()
            .ok_or_else(|| ClusterError::Plan(format!("host {host:?} is not in the state")))?;
        self.driver.remove_host(&handle).await?;
        state.hosts.retain(|h| h.name != host);
        let gone: Vec<ClusterNode> = state
            .nodes
            .iter()
            .filter(|n| n.host == host)
            .cloned()
            .collect();
        for n in &gone {
            self.conns.drop_conn(&n.target()).await;
        }
        self.poll(
            &format!("the nodes of {host} to stop answering"),
            || async {
                for n in &gone {
                    if self.my_id(&n.target()).await.is_ok() {
                        return Err(format!("{} still answers", n.name));
                    }
                }
                Ok(())
            },
        )
        .await?;
        self.checkpoint("host_roll.host_removed")?;
        let report = self.repair(request, state).await?;
        for action in &report.actions {
            info!(host, %action, "host replaced");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::NodeHandle;

    fn node(name: &str, shard: u32, host: &str) -> ClusterNode {
        ClusterNode {
            name: name.into(),
            shard,
            role: Role::Replica,
            zone: "z".into(),
            host: host.into(),
            slots: Vec::new(),
            node_id: String::new(),
            handle: NodeHandle {
                name: name.into(),
                host: host.into(),
                ip: "127.0.0.1".into(),
                port: 7000,
                index_on_host: 0,
                pid: None,
                data_dir: None,
                config_file: None,
            },
        }
    }

    fn outdated(hosts: &[&str]) -> Vec<OutdatedHost> {
        hosts
            .iter()
            .map(|h| OutdatedHost {
                host: h.to_string(),
                running: "ami-1".into(),
                target: "ami-2".into(),
            })
            .collect()
    }

    fn state(nodes: Vec<ClusterNode>) -> ClusterState {
        ClusterState {
            nodes,
            ..ClusterState::new("aws")
        }
    }

    #[test]
    fn copies_on_distinct_hosts_may_be_replaced() {
        let s = state(vec![
            node("a", 0, "h1"),
            node("b", 0, "h2"),
            node("c", 1, "h2"),
            node("d", 1, "h3"),
        ]);
        assert_eq!(replace_refusal(&s, &outdated(&["h1", "h2", "h3"])), None);
    }

    #[test]
    fn a_shard_with_two_copies_on_one_host_is_refused() {
        let s = state(vec![node("a", 0, "h1"), node("b", 0, "h1")]);
        let why = replace_refusal(&s, &outdated(&["h1"])).expect("refused");
        assert!(
            why.contains("shard 0 has a and b on the same host h1"),
            "{why}"
        );
        // Not replacing that host is fine.
        assert_eq!(replace_refusal(&s, &outdated(&["h2"])), None);
    }

    #[test]
    fn a_shard_without_replica_is_refused() {
        let s = state(vec![node("a", 0, "h1"), node("b", 1, "h2")]);
        let why = replace_refusal(&s, &outdated(&["h2"])).expect("refused");
        assert!(
            why.contains("shard 1 has a single copy (node b) on host h2"),
            "{why}"
        );
        assert!(why.contains("replicas = 1"), "{why}");
    }
}
