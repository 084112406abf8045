//! What the deployment looks like now: each sentinel's view, each data node's role, and the
//! primary a majority of the sentinels names (what Sentinel-aware clients will be told).

use std::collections::HashMap;

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use super::{Member, SentinelOperator, SentinelState};

/// One sentinel's answer (or that it gave none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelView {
    pub name: String,
    pub address: String,
    pub zone: String,
    pub up: bool,
    /// `ip:port` it names as the primary.
    pub primary: Option<String>,
    pub replicas_seen: usize,
    pub peers_seen: usize,
    /// A failover is not finished on this sentinel: it flags one in progress, or it still
    /// monitors another address than the one it names. The leader of a failover names the
    /// promoted replica as soon as it is promoted, but monitors the old primary's address
    /// until every other replica is reconfigured; `SENTINEL RESET` in that window aborts the
    /// failover and leaves the sentinel watching the old address for good (its epoch is
    /// already the newest, so its peers' hellos never move it).
    #[serde(default)]
    pub failing_over: bool,
    /// `ip:port` of the replicas and peer sentinels this sentinel counts down (`s_down`): what
    /// proves a process failed when the driver cannot see processes (aws).
    #[serde(default)]
    pub down: Vec<String>,
    /// `ip:port` of every replica and peer sentinel it lists, down or not.
    #[serde(default)]
    pub known: Vec<String>,
}

/// One data node's own view of its role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataView {
    pub name: String,
    pub address: String,
    pub zone: String,
    pub up: bool,
    /// `master` or `replica` as the node says; empty when it does not answer.
    pub role: String,
    /// A replica's link to its primary is up.
    pub link_up: bool,
    pub planned_primary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelObservation {
    /// The primary a strict majority of all the deployment's sentinels names.
    pub primary: Option<String>,
    pub sentinels: Vec<SentinelView>,
    pub data: Vec<DataView>,
}

impl SentinelObservation {
    /// The data node the sentinels name as primary.
    pub fn primary_node(&self) -> Option<&DataView> {
        let p = self.primary.as_deref()?;
        self.data.iter().find(|d| d.address == p)
    }
}

/// The `ip:port` of the entries (of `SENTINEL REPLICAS` or `SENTINEL SENTINELS`) flagged
/// subjectively down.
fn flagged_down(entries: &[HashMap<String, String>]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| {
            e.get("flags")
                .is_some_and(|f| f.split(',').any(|x| x == "s_down"))
        })
        .filter_map(entry_address)
        .collect()
}

fn entry_address(e: &HashMap<String, String>) -> Option<String> {
    Some(format!("{}:{}", e.get("ip")?, e.get("port")?))
}

impl SentinelObservation {
    /// Whether a strict majority of all `sentinels` sentinels counts `address` down.
    pub fn counted_down(&self, address: &str, sentinels: usize) -> bool {
        let votes = self
            .sentinels
            .iter()
            .filter(|s| s.down.iter().any(|d| d == address))
            .count();
        votes > sentinels / 2
    }

    /// Whether `address` (a process that does not answer) never ran as far as Sentinel can
    /// tell: a strict majority of all `sentinels` answers, none of them lists it among the
    /// replicas or peers, and it is not the primary. A process recorded and then cut off before
    /// its first start looks so (aws records a new machine's processes in its launch tags).
    pub fn never_seen(&self, address: &str, sentinels: usize) -> bool {
        let answering: Vec<&SentinelView> = self.sentinels.iter().filter(|s| s.up).collect();
        answering.len() > sentinels / 2
            && self.primary.as_deref() != Some(address)
            && answering
                .iter()
                .all(|s| s.address != address && !s.known.iter().any(|k| k == address))
    }
}

impl SentinelOperator<'_> {
    /// Asks every sentinel and every data node; never fails (a process that does not answer
    /// is reported down).
    pub async fn observe(&self, state: &SentinelState) -> SentinelObservation {
        let sentinels = join_all(state.sentinels.iter().map(|m| self.sentinel_view(m))).await;
        let data = join_all(state.data.iter().map(|m| self.data_view(m))).await;
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for s in &sentinels {
            if let Some(p) = &s.primary {
                *votes.entry(p.as_str()).or_default() += 1;
            }
        }
        let majority = state.sentinels.len() / 2 + 1;
        let primary = votes
            .into_iter()
            .find(|(_, n)| *n >= majority)
            .map(|(p, _)| p.to_string());
        SentinelObservation {
            primary,
            sentinels,
            data,
        }
    }

    pub(super) async fn sentinel_view(&self, m: &Member) -> SentinelView {
        let t = m.target();
        let name = &self.settings.master_name;
        let conns = &self.sentinel_conns;
        let addr: crate::error::Result<Vec<String>> = conns
            .query(
                &t,
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(name),
                "SENTINEL GET-MASTER-ADDR-BY-NAME",
            )
            .await;
        let mut view = SentinelView {
            name: m.handle.name.clone(),
            address: m.address(),
            zone: m.zone.clone(),
            up: addr.is_ok(),
            primary: addr
                .ok()
                .filter(|a| a.len() == 2)
                .map(|a| format!("{}:{}", a[0], a[1])),
            replicas_seen: 0,
            peers_seen: 0,
            failing_over: false,
            down: Vec::new(),
            known: Vec::new(),
        };
        if !view.up {
            conns.drop_conn(&t).await;
            return view;
        }
        let replicas: crate::error::Result<Vec<HashMap<String, String>>> = conns
            .query(
                &t,
                redis::cmd("SENTINEL").arg("REPLICAS").arg(name),
                "SENTINEL REPLICAS",
            )
            .await;
        let replicas = replicas.unwrap_or_default();
        view.replicas_seen = replicas.len();
        view.down.extend(flagged_down(&replicas));
        view.known.extend(replicas.iter().filter_map(entry_address));
        let peers: crate::error::Result<Vec<HashMap<String, String>>> = conns
            .query(
                &t,
                redis::cmd("SENTINEL").arg("SENTINELS").arg(name),
                "SENTINEL SENTINELS",
            )
            .await;
        let peers = peers.unwrap_or_default();
        view.peers_seen = peers.len();
        view.down.extend(flagged_down(&peers));
        view.known.extend(peers.iter().filter_map(entry_address));
        let master: crate::error::Result<HashMap<String, String>> = conns
            .query(
                &t,
                redis::cmd("SENTINEL").arg("MASTER").arg(name),
                "SENTINEL MASTER",
            )
            .await;
        view.failing_over = match master {
            Ok(m) => {
                let monitored = match (m.get("ip"), m.get("port")) {
                    (Some(ip), Some(port)) => Some(format!("{ip}:{port}")),
                    _ => None,
                };
                let in_progress = m
                    .get("flags")
                    .is_some_and(|f| f.split(',').any(|x| x == "failover_in_progress"));
                in_progress || monitored != view.primary
            }
            // Unknown counts as not finished: waits retry.
            Err(_) => true,
        };
        view
    }

    async fn data_view(&self, m: &Member) -> DataView {
        let t = m.target();
        let info = self.op.conns.info(&t, "replication").await;
        if info.is_err() {
            self.op.conns.drop_conn(&t).await;
        }
        let info = info.unwrap_or_default();
        let role = match info.get("role").map(String::as_str) {
            Some("master") => "master",
            Some("slave") => "replica",
            _ => "",
        };
        DataView {
            name: m.handle.name.clone(),
            address: m.address(),
            zone: m.zone.clone(),
            up: !role.is_empty(),
            role: role.to_string(),
            link_up: info.get("master_link_status").map(String::as_str) == Some("up"),
            planned_primary: m.planned_primary,
        }
    }
}
