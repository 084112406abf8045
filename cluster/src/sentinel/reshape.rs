//! Shape changes in place: replicas and sentinels added or removed (adding or removing a host
//! or zone moves them). New processes start first, so the deployment never runs with fewer
//! than before; the current primary is never removed (Sentinel fails over away from it
//! first); then the sentinels forget what was removed with `SENTINEL RESET`, one sentinel at a
//! time, so the others keep the quorum while one relearns its peers.

use redisha_planner::{Node, Placement, Request, Role, Sentinel};
use tracing::info;

use crate::driver::{HostPlan, NodePlan};
use crate::error::{ClusterError, Result, Unverified};
use crate::state::locate_host;

use super::lifecycle::Launch;
use super::{Member, SentinelOperator, SentinelState, SENTINEL_INDEX_BASE};

/// What differs between the processes that run and the plan. The planner keeps a process on
/// its host under its name and never gives a new process an old name, so a process is kept,
/// added or removed, never moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reshape {
    pub add_data: Vec<Node>,
    /// Names of data nodes to remove.
    pub remove_data: Vec<String>,
    pub add_sentinels: Vec<Sentinel>,
    /// Names of sentinels to remove.
    pub remove_sentinels: Vec<String>,
    /// The data node the plan now wants as primary, when it is not the one planned before
    /// (the planned primary is removed).
    pub new_planned_primary: Option<String>,
}

impl Reshape {
    pub fn between(state: &SentinelState, placement: &Placement, sentinels: &[Sentinel]) -> Self {
        let runs = |list: &[Member], name: &str, host: &str| {
            list.iter()
                .any(|m| m.handle.name == name && m.handle.host == host)
        };
        let planned_primary = placement.nodes.iter().find(|n| n.role == Role::Master);
        Reshape {
            add_data: placement
                .nodes
                .iter()
                .filter(|n| !runs(&state.data, &n.name, &n.host))
                .cloned()
                .collect(),
            remove_data: state
                .data
                .iter()
                .filter(|m| {
                    !placement
                        .nodes
                        .iter()
                        .any(|n| n.name == m.handle.name && n.host == m.handle.host)
                })
                .map(|m| m.handle.name.clone())
                .collect(),
            add_sentinels: sentinels
                .iter()
                .filter(|s| !runs(&state.sentinels, &s.name, &s.host))
                .cloned()
                .collect(),
            remove_sentinels: state
                .sentinels
                .iter()
                .filter(|m| {
                    !sentinels
                        .iter()
                        .any(|s| s.name == m.handle.name && s.host == m.handle.host)
                })
                .map(|m| m.handle.name.clone())
                .collect(),
            new_planned_primary: planned_primary
                .filter(|p| state.planned_primary().map(|m| &m.handle.name) != Some(&p.name))
                .map(|p| p.name.clone()),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Reshape::default()
    }

    /// One line per change, for the plan.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.add_data {
            out.push(format!(
                "add data node {} on host {} (zone {})",
                n.name, n.host, n.zone
            ));
        }
        for s in &self.add_sentinels {
            out.push(format!(
                "add sentinel {} on host {} (zone {})",
                s.name, s.host, s.zone
            ));
        }
        if let Some(p) = &self.new_planned_primary {
            out.push(format!("{p} becomes the planned primary"));
        }
        for n in &self.remove_data {
            out.push(format!(
                "remove data node {n} (Sentinel fails over first if it is the primary)"
            ));
        }
        for n in &self.remove_sentinels {
            out.push(format!("remove sentinel {n}"));
        }
        if !(self.remove_data.is_empty() && self.remove_sentinels.is_empty()) {
            out.push(
                "then SENTINEL RESET on each sentinel in turn, so they forget what was removed"
                    .into(),
            );
        }
        out
    }
}

impl SentinelOperator<'_> {
    /// Brings the running processes to the plan's shape (see the module documentation).
    pub async fn reshape(
        &self,
        request: &Request,
        change: &Reshape,
        state: &mut SentinelState,
    ) -> Result<()> {
        if change.is_empty() {
            return Ok(());
        }
        let names = change
            .add_data
            .iter()
            .map(|n| &n.name)
            .chain(change.add_sentinels.iter().map(|s| &s.name));
        for name in names {
            let runs = state
                .data
                .iter()
                .chain(state.sentinels.iter())
                .any(|m| &m.handle.name == name);
            if runs {
                return Err(ClusterError::Plan(format!(
                    "the plan moves {name} to another host; a process is added or removed, never moved"
                )));
            }
        }
        let primary = self.current_primary(state).await?;
        let primary_addr = (primary.handle.ip.clone(), primary.handle.port);
        // Every new process gets its index before any host is provisioned: a new machine
        // carries the records of the processes it will run (aws: in its launch tags).
        let mut launches = Vec::new();
        for n in &change.add_data {
            let index = free_index(&state.data, &launches, &n.host, 0);
            launches.push(Launch {
                host: n.host.clone(),
                zone: n.zone.clone(),
                plan: node_plan(&n.name, index),
                kind: self.standalone(Some(primary_addr.clone())),
            });
        }
        let mut sentinel_launches = Vec::new();
        for s in &change.add_sentinels {
            let index = free_index(
                &state.sentinels,
                &sentinel_launches,
                &s.host,
                SENTINEL_INDEX_BASE,
            );
            sentinel_launches.push(Launch {
                host: s.host.clone(),
                zone: s.zone.clone(),
                plan: node_plan(&s.name, index),
                kind: self.sentinel_kind(&s.name, primary_addr.clone()),
            });
        }
        self.provision_hosts(request, launches.iter().chain(&sentinel_launches), state)
            .await?;
        self.op.checkpoint("sentinel.reshape.hosts_provisioned")?;

        let added = self.launch_all(state, launches).await?;
        for m in &added {
            self.op.wait_synced(&m.target(), &primary.target()).await?;
        }
        state.data.extend(added);
        self.op.checkpoint("sentinel.reshape.replicas_added")?;

        let added = self.launch_all(state, sentinel_launches).await?;
        state.sentinels.extend(added);
        self.op.checkpoint("sentinel.reshape.sentinels_added")?;

        if let Some(p) = &change.new_planned_primary {
            for m in &mut state.data {
                m.planned_primary = &m.handle.name == p;
            }
        }
        // The current primary is never removed: Sentinel first promotes the planned primary
        // (a node the plan keeps). Every sentinel must name the same primary first: one still
        // finishing a failover may name another than the majority.
        if !(change.remove_data.is_empty() && change.remove_sentinels.is_empty()) {
            self.wait_sentinels_agree(state).await?;
        }
        let now = self.current_primary(state).await?;
        if change.remove_data.contains(&now.handle.name) {
            info!(primary = %now.handle.name, "the primary is removed: failing over first");
            self.restore_primary(state).await?;
            let now = self.current_primary(state).await?;
            if change.remove_data.contains(&now.handle.name) {
                return Err(ClusterError::Plan(format!(
                    "{} is still the primary after the failover; it is not removed",
                    now.handle.name
                )));
            }
        }
        self.op.checkpoint("sentinel.reshape.primary_kept")?;

        let removed: Vec<Member> = state
            .data
            .iter()
            .filter(|m| change.remove_data.contains(&m.handle.name))
            .chain(
                state
                    .sentinels
                    .iter()
                    .filter(|m| change.remove_sentinels.contains(&m.handle.name)),
            )
            .cloned()
            .collect();
        for m in &removed {
            info!(process = %m.handle.name, "removing");
            self.op.driver.stop_node(&m.handle).await?;
            self.op.driver.wipe_node(&m.handle).await?;
        }
        state
            .data
            .retain(|m| !change.remove_data.contains(&m.handle.name));
        state
            .sentinels
            .retain(|m| !change.remove_sentinels.contains(&m.handle.name));
        self.op.checkpoint("sentinel.reshape.removed")?;
        if !removed.is_empty() {
            self.reset_sentinels(state).await?;
        }

        let used = |host: &str| {
            state
                .data
                .iter()
                .chain(state.sentinels.iter())
                .any(|m| m.handle.host == host)
        };
        let empty: Vec<_> = state
            .hosts
            .iter()
            .filter(|h| !used(&h.name))
            .cloned()
            .collect();
        for h in &empty {
            self.op.driver.remove_host(h).await?;
        }
        state.hosts.retain(|h| used(&h.name));
        self.wait_sentinels_agree(state).await
    }

    /// The quorum and timings of the settings on every sentinel (a sentinel added later
    /// starts with them; a changed `count` changes the default quorum).
    pub async fn apply_sentinel_settings(&self, state: &SentinelState) -> Result<()> {
        for m in &state.sentinels {
            let _: redis::Value = self
                .sentinel_conns
                .query(
                    &m.target(),
                    redis::cmd("SENTINEL")
                        .arg("SET")
                        .arg(&self.settings.master_name)
                        .arg("quorum")
                        .arg(self.settings.quorum)
                        .arg("down-after-milliseconds")
                        .arg(self.settings.down_after_ms)
                        .arg("failover-timeout")
                        .arg(self.settings.failover_timeout_ms),
                    "SENTINEL SET quorum down-after-milliseconds failover-timeout",
                )
                .await?;
        }
        Ok(())
    }

    /// The end of every update. An update that resumes a killed one may have no shape change
    /// left, while its sentinels still remember a process it removed (killed before the
    /// reset) or have not yet learned one it added: those remembering too much are reset, and
    /// every sentinel must then see exactly what runs, as after an uninterrupted reshape.
    pub async fn settle(&self, state: &SentinelState) -> Result<()> {
        let replicas = state.data.len().saturating_sub(1);
        let peers = state.sentinels.len().saturating_sub(1);
        let view = self.observe(state).await;
        let stale = view
            .sentinels
            .iter()
            .any(|s| s.up && (s.replicas_seen > replicas || s.peers_seen > peers));
        if stale {
            info!("sentinels remember processes that are gone: resetting them one at a time");
            self.wait_sentinels_agree(state).await?;
            self.reset_sentinels(state).await?;
        }
        self.wait_sentinels_agree(state).await
    }

    /// `SENTINEL RESET` on one sentinel at a time, each waited for until it knows exactly the
    /// replicas and peers that run (it relearns replicas from the primary's INFO, peers from
    /// their hello messages every 2 s): the others keep the quorum meanwhile.
    async fn reset_sentinels(&self, state: &SentinelState) -> Result<()> {
        let replicas = state.data.len().saturating_sub(1);
        let peers = state.sentinels.len().saturating_sub(1);
        for m in &state.sentinels {
            let _: redis::Value = self
                .sentinel_conns
                .query(
                    &m.target(),
                    redis::cmd("SENTINEL")
                        .arg("RESET")
                        .arg(&self.settings.master_name),
                    "SENTINEL RESET",
                )
                .await?;
            self.op
                .poll(
                    "the reset sentinel to know the replicas and peers again",
                    || async {
                        let v = self.sentinel_view(m).await;
                        if v.up && v.replicas_seen == replicas && v.peers_seen == peers {
                            Ok(())
                        } else {
                            Err(format!(
                                "sentinel {} sees {} of {replicas} replicas and {} of {peers} peers",
                                v.name, v.replicas_seen, v.peers_seen
                            ))
                        }
                    },
                )
                .await?;
            self.op.checkpoint("sentinel.reshape.sentinel_reset")?;
        }
        Ok(())
    }

    /// The data node a majority of the sentinels names as primary.
    async fn current_primary(&self, state: &SentinelState) -> Result<Member> {
        let view = self.observe(state).await;
        view.primary
            .as_deref()
            .and_then(|p| state.data_node(p))
            .cloned()
            .ok_or_else(|| {
                ClusterError::Unverified(vec![Unverified {
                    node: self.settings.master_name.clone(),
                    address: view.primary.clone().unwrap_or_default(),
                    cause: "no majority of sentinels names a primary of this deployment; its shape changes once they agree".into(),
                }])
            })
    }

    /// Hosts that new processes need and the state does not have yet, each with the
    /// processes it will run.
    async fn provision_hosts(
        &self,
        request: &Request,
        launches: impl Iterator<Item = &Launch>,
        state: &mut SentinelState,
    ) -> Result<()> {
        let mut plans: Vec<HostPlan> = Vec::new();
        for l in launches {
            if state.host(&l.host).is_some() {
                continue;
            }
            match plans.iter_mut().find(|p| p.name == l.host) {
                Some(p) => p.nodes.push(l.plan.clone()),
                None => {
                    let (zone_index, host_index, zone) = locate_host(request, &l.host)?;
                    plans.push(HostPlan {
                        name: l.host.clone(),
                        zone,
                        zone_index,
                        host_index,
                        nodes: vec![l.plan.clone()],
                    });
                }
            }
        }
        for plan in &plans {
            info!(host = %plan.name, zone = %plan.zone, "provisioning host");
            let handle = self.op.driver.provision_host(plan, &self.op.config).await?;
            state.hosts.push(handle);
        }
        Ok(())
    }
}

fn node_plan(name: &str, index_on_host: u16) -> NodePlan {
    NodePlan {
        name: name.to_string(),
        index_on_host,
        shard: 0,
        role: Role::Replica,
    }
}

/// The lowest index from `base` that no member nor pending launch on `host` has.
fn free_index(members: &[Member], pending: &[Launch], host: &str, base: u16) -> u16 {
    let taken = |i: u16| {
        members
            .iter()
            .any(|m| m.handle.host == host && m.handle.index_on_host == i)
            || pending
                .iter()
                .any(|l| l.host == host && l.plan.index_on_host == i)
    };
    (base..=u16::MAX).find(|i| !taken(*i)).unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::NodeHandle;

    fn member(name: &str, host: &str, planned_primary: bool) -> Member {
        Member {
            handle: NodeHandle {
                name: name.into(),
                host: host.into(),
                ip: "127.0.0.1".into(),
                port: 6379,
                index_on_host: 0,
                pid: None,
                data_dir: None,
                config_file: None,
            },
            zone: format!("zone-{host}"),
            planned_primary,
        }
    }

    fn node(name: &str, host: &str, role: Role) -> Node {
        Node {
            name: name.into(),
            shard: 0,
            role,
            host: host.into(),
            zone: format!("zone-{host}"),
            slots: Vec::new(),
        }
    }

    fn sentinel(name: &str, host: &str) -> Sentinel {
        Sentinel {
            name: name.into(),
            host: host.into(),
            zone: format!("zone-{host}"),
        }
    }

    #[test]
    fn a_kept_deployment_has_nothing_to_change() {
        let state = SentinelState {
            hosts: Vec::new(),
            data: vec![member("s0-0", "a", true), member("s0-1", "b", false)],
            sentinels: vec![member("sentinel-1", "a", false)],
        };
        let placement = Placement {
            nodes: vec![
                node("s0-0", "a", Role::Master),
                node("s0-1", "b", Role::Replica),
            ],
        };
        let change = Reshape::between(&state, &placement, &[sentinel("sentinel-1", "a")]);
        assert!(change.is_empty(), "{change:?}");
        assert!(change.describe().is_empty());
    }

    #[test]
    fn added_removed_and_a_new_planned_primary_are_listed() {
        let state = SentinelState {
            hosts: Vec::new(),
            data: vec![member("s0-0", "a", true), member("s0-1", "b", false)],
            sentinels: vec![
                member("sentinel-1", "a", false),
                member("sentinel-2", "b", false),
            ],
        };
        let placement = Placement {
            nodes: vec![
                node("s0-1", "b", Role::Master),
                node("s0-2", "c", Role::Replica),
            ],
        };
        let sentinels = [sentinel("sentinel-2", "b"), sentinel("sentinel-3", "c")];
        let change = Reshape::between(&state, &placement, &sentinels);
        assert_eq!(change.add_data, vec![node("s0-2", "c", Role::Replica)]);
        assert_eq!(change.remove_data, vec!["s0-0".to_string()]);
        assert_eq!(change.add_sentinels, vec![sentinel("sentinel-3", "c")]);
        assert_eq!(change.remove_sentinels, vec!["sentinel-1".to_string()]);
        assert_eq!(change.new_planned_primary.as_deref(), Some("s0-1"));
        let text = change.describe().join("\n");
        for part in [
            "add data node s0-2 on host c",
            "add sentinel sentinel-3",
            "s0-1 becomes the planned primary",
            "remove data node s0-0",
            "remove sentinel sentinel-1",
            "SENTINEL RESET",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
    }

    #[test]
    fn free_indexes_skip_members_and_pending_launches_on_the_host() {
        let mut m = member("s0-0", "a", false);
        m.handle.index_on_host = 0;
        let pending = [Launch {
            host: "a".into(),
            zone: "zone-a".into(),
            plan: node_plan("s0-5", 1),
            kind: crate::driver::ProcessKind::Standalone {
                replica_of: None,
                min_replicas_to_write: 0,
                min_replicas_max_lag: 0,
            },
        }];
        assert_eq!(free_index(&[m.clone()], &pending, "a", 0), 2);
        assert_eq!(free_index(&[m], &pending, "b", 0), 0);
    }
}
