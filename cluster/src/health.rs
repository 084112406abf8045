//! Live health of any cluster from one or more addresses (the `redisha_cluster_health` data
//! source), and adopting a running cluster into a state (`terraform import`).

use std::collections::BTreeMap;

use futures::future::join_all;
use redisha_planner::{Role, SLOT_COUNT};
use serde::{Deserialize, Serialize};

use crate::conn::{parse_info, split_address, Conns, NodeLine, Target};
use crate::driver::{HostHandle, NodeHandle};
use crate::error::{ClusterError, Result};
use crate::observe::{view_node, NodeView};
use crate::ops::Options;
use crate::secret::Password;
use crate::state::{ClusterNode, ClusterState};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub id: String,
    pub address: String,
    pub alive: bool,
    pub role: Option<Role>,
    pub master_id: Option<String>,
    pub link_status: Option<String>,
    /// Bytes of replication stream the replica is behind its master.
    pub lag_bytes: Option<u64>,
    pub slots: u32,
    pub cluster_state: Option<String>,
    pub error: Option<String>,
    /// Slots this node is migrating or importing.
    #[serde(default)]
    pub open_slots: Vec<u16>,
    /// What INFO says of the node's load, when it answered.
    #[serde(default)]
    pub stats: NodeStats,
}

/// A node's load from INFO: memory against `maxmemory`, operations per second and keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    pub memory_used_bytes: Option<u64>,
    /// 0: no limit.
    pub maxmemory_bytes: Option<u64>,
    pub ops_per_sec: Option<u64>,
    pub keys: Option<u64>,
}

impl NodeStats {
    /// From the text of a plain `INFO` (memory, stats and keyspace sections).
    pub fn from_info(text: &str) -> NodeStats {
        let info = parse_info(text);
        let number = |k: &str| info.get(k).and_then(|v| v.trim().parse::<u64>().ok());
        // A cluster node has db0 only: `db0:keys=12,expires=0,avg_ttl=0`.
        let keys = info
            .iter()
            .filter(|(k, _)| k.starts_with("db"))
            .filter_map(|(_, v)| {
                v.split(',')
                    .find_map(|kv| kv.strip_prefix("keys="))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .reduce(|a, b| a + b);
        NodeStats {
            memory_used_bytes: number("used_memory"),
            maxmemory_bytes: number("maxmemory"),
            ops_per_sec: number("instantaneous_ops_per_sec"),
            // INFO leaves out an empty keyspace: a node that answered has 0 keys then.
            keys: keys.or(info.contains_key("used_memory").then_some(0)),
        }
    }

    /// Used memory as a share of `maxmemory` (0 to 1), when there is a limit.
    pub fn memory_fill(&self) -> Option<f64> {
        match (self.memory_used_bytes, self.maxmemory_bytes) {
            (Some(used), Some(max)) if max > 0 => Some(used as f64 / max as f64),
            _ => None,
        }
    }
}

async fn node_stats(conns: &Conns, t: &Target) -> NodeStats {
    conns
        .query::<String>(t, &redis::cmd("INFO"), "INFO")
        .await
        .map(|text| NodeStats::from_info(&text))
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `ok` when every reachable node says ok and every node answers, else `fail`.
    pub cluster_state: String,
    /// Slots served by a live master, as seen by the first node that answered.
    pub slots_covered: u32,
    pub nodes: Vec<NodeHealth>,
}

impl HealthReport {
    pub fn healthy(&self) -> bool {
        self.cluster_state == "ok" && self.slots_covered == SLOT_COUNT
    }
}

/// Reads CLUSTER NODES from the first seed that answers.
pub(crate) async fn discover(conns: &Conns, seeds: &[String]) -> Result<Vec<NodeLine>> {
    let mut last = None;
    for seed in seeds {
        let Some((ip, port)) = split_address(seed) else {
            return Err(ClusterError::Plan(format!(
                "address {seed:?} is not host:port"
            )));
        };
        match conns.cluster_nodes(&Target::new(seed, ip, port)).await {
            Ok(lines) => return Ok(lines),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ClusterError::Unreachable("(no address given)".into())))
}

/// Health of the cluster that `seeds` (host:port) belong to.
pub async fn health(
    seeds: &[String],
    password: Option<&Password>,
    options: &Options,
) -> Result<HealthReport> {
    let mut conns = Conns::new(
        password.cloned(),
        options.connect_timeout,
        options.command_timeout,
    );
    conns.set_tls(options.tls.clone());
    conns.set_user(options.user.clone());
    let lines = discover(&conns, seeds).await?;
    let targets: Vec<Target> = lines
        .iter()
        .filter_map(|l| split_address(&l.address).map(|(ip, port)| Target::new(&l.id, ip, port)))
        .collect();
    let views: Vec<(NodeView, NodeStats)> = join_all(targets.iter().map(|t| async {
        let view = view_node(&conns, t).await;
        let stats = if view.alive {
            node_stats(&conns, t).await
        } else {
            NodeStats::default()
        };
        (view, stats)
    }))
    .await;
    let offsets: BTreeMap<String, u64> = lines
        .iter()
        .zip(views.iter().map(|(v, _)| v))
        .filter(|(_, v)| v.role == Some(Role::Master))
        .filter_map(|(l, v)| v.repl_offset.map(|o| (l.id.clone(), o)))
        .collect();
    let nodes: Vec<NodeHealth> = lines
        .iter()
        .zip(views)
        .map(|(l, (v, stats))| {
            let lag_bytes = match (&v.master_id, v.repl_offset) {
                (Some(m), Some(mine)) => offsets.get(m).map(|theirs| theirs.saturating_sub(mine)),
                _ => None,
            };
            NodeHealth {
                id: l.id.clone(),
                address: l.address.clone(),
                alive: v.alive,
                role: v.role,
                master_id: v.master_id,
                link_status: v.link_status,
                lag_bytes,
                slots: v.slots.iter().map(|r| r.len()).sum(),
                cluster_state: v.cluster_state,
                error: v.error,
                open_slots: v.open_slots,
                stats,
            }
        })
        .collect();
    let slots_covered = lines
        .iter()
        .filter(|l| l.is_master() && !l.is_failed())
        .map(NodeLine::slot_count)
        .sum();
    let all_ok = nodes
        .iter()
        .all(|n| n.alive && n.cluster_state.as_deref() == Some("ok"));
    Ok(HealthReport {
        cluster_state: if all_ok { "ok" } else { "fail" }.into(),
        slots_covered,
        nodes,
    })
}

/// Adopts a running cluster: discovers every node from `address` and returns a state with
/// planner-style names (`shard-S-K`, K = 0 for the master), shards ordered by first slot,
/// one host per IP. Handles carry no pid: the processes belong to whoever started them.
pub async fn import(
    address: &str,
    password: Option<&Password>,
    options: &Options,
) -> Result<ClusterState> {
    let mut conns = Conns::new(
        password.cloned(),
        options.connect_timeout,
        options.command_timeout,
    );
    conns.set_tls(options.tls.clone());
    let mut lines = discover(&conns, &[address.to_string()]).await?;
    // One node's view of the others' roles can lag gossip (right after a failover): every node
    // that answers says for itself what it is, whom it replicates and which slots it serves.
    let views: Vec<Option<NodeView>> = join_all(lines.iter().map(|l| {
        let conns = &conns;
        async move {
            let (ip, port) = split_address(&l.address)?;
            let v = view_node(conns, &Target::new(&l.id, ip, port)).await;
            v.alive.then_some(v)
        }
    }))
    .await;
    for (line, view) in lines.iter_mut().zip(views) {
        let Some(v) = view else { continue };
        match v.role {
            Some(Role::Master) => {
                line.flags.retain(|f| f != "slave" && f != "replica");
                if !line.has_flag("master") {
                    line.flags.push("master".into());
                }
                line.master_id = None;
                line.slots = v.slots;
            }
            Some(Role::Replica) => {
                line.flags.retain(|f| f != "master");
                if !line.has_flag("slave") {
                    line.flags.push("slave".into());
                }
                line.master_id = v.master_id;
                line.slots.clear();
            }
            None => {}
        }
    }
    let mut masters: Vec<&NodeLine> = lines
        .iter()
        .filter(|l| l.is_master() && !l.is_failed())
        .collect();
    masters.sort_by_key(|l| {
        (
            l.slots.first().map_or(u32::MAX, |r| u32::from(r.start)),
            l.id.clone(),
        )
    });
    let mut state = ClusterState::new("imported");
    let mut per_ip: BTreeMap<String, u16> = BTreeMap::new();
    let mut add = |state: &mut ClusterState,
                   line: &NodeLine,
                   shard: u32,
                   k: usize,
                   role: Role|
     -> Result<()> {
        let (ip, port) = split_address(&line.address).ok_or_else(|| {
            ClusterError::Plan(format!(
                "node {} has no usable address {:?}",
                line.id, line.address
            ))
        })?;
        let index = per_ip.entry(ip.clone()).or_insert(0);
        let name = format!("shard-{shard}-{k}");
        if state.host(&ip).is_none() {
            state.hosts.push(HostHandle {
                name: ip.clone(),
                zone: String::new(),
                address: ip.clone(),
                instance_id: None,
                extra: Default::default(),
            });
        }
        state.nodes.push(ClusterNode {
            name: name.clone(),
            shard,
            role,
            zone: String::new(),
            host: ip.clone(),
            slots: if role == Role::Master {
                line.slots.clone()
            } else {
                Vec::new()
            },
            node_id: line.id.clone(),
            handle: NodeHandle {
                name,
                host: ip,
                ip: String::new(),
                port,
                index_on_host: *index,
                pid: None,
                data_dir: None,
                config_file: None,
            },
        });
        if let Some(n) = state.nodes.last_mut() {
            n.handle.ip = n.host.clone();
        }
        *index += 1;
        Ok(())
    };
    for (shard, m) in masters.iter().enumerate() {
        let shard = u32::try_from(shard).unwrap_or(u32::MAX);
        add(&mut state, m, shard, 0, Role::Master)?;
        let replicas = lines
            .iter()
            .filter(|l| !l.is_master() && l.master_id.as_deref() == Some(m.id.as_str()));
        for (k, r) in replicas.enumerate() {
            add(&mut state, r, shard, k + 1, Role::Replica)?;
        }
    }
    Ok(state)
}
