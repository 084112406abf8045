//! Finding a shard's writable master the way a cluster-aware client does, bounded tightly so
//! the drill adds little to a measured outage: follow MOVED, else ask every node of the shard
//! at once and take the first that is a master in `cluster_state:ok`.

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use redis::aio::MultiplexedConnection;
use redisha_cluster::conn::{parse_info, Conns, Credential, Target};

/// A probe's reply bound for a node that answered last time, and for one that did not (a
/// hung node must not slow every round down).
const PROBE_TIMEOUT: Duration = Duration::from_millis(150);
const PROBE_TIMEOUT_SILENT: Duration = Duration::from_millis(30);

/// One client's view of one shard.
pub struct Route {
    pub nodes: Vec<Target>,
    /// Index into `nodes` of the node the client sends to.
    pub current: usize,
    silent: Vec<bool>,
    conns: Conns,
}

impl Route {
    /// Connections log in as `login` (a client's user, or `default`).
    pub fn new(nodes: Vec<Target>, current: usize, login: &Credential) -> Self {
        let silent = vec![false; nodes.len()];
        Route {
            nodes,
            current,
            silent,
            conns: Conns::new(None, Duration::from_millis(200), PROBE_TIMEOUT).logging_in_as(login),
        }
    }

    pub fn current(&self) -> &Target {
        &self.nodes[self.current]
    }

    /// Runs `pipe` on the current node within `timeout`; the raw error, for MOVED.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        timeout: Duration,
    ) -> Result<T, String> {
        let target = self.current().clone();
        let send = async {
            let mut con: MultiplexedConnection =
                self.conns.get(&target).await.map_err(|e| e.to_string())?;
            pipe.query_async::<T>(&mut con)
                .await
                .map_err(|e| match e.redirect_node() {
                    Some((addr, _)) => format!("MOVED {addr}"),
                    None => e.to_string(),
                })
        };
        match tokio::time::timeout(timeout, send).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if !e.starts_with("MOVED ") {
                    self.conns.drop_conn(&target).await;
                }
                Err(e)
            }
            Err(_) => {
                self.conns.drop_conn(&target).await;
                Err(format!("no reply within {timeout:?}"))
            }
        }
    }

    /// After an error: switches to the node a MOVED names, else to the first node of the
    /// shard that says it is a master with `cluster_state:ok`. Whether it switched or
    /// confirmed a node.
    pub async fn reroute(&mut self, error: &str) -> bool {
        if let Some(addr) = error.strip_prefix("MOVED ") {
            if let Some(i) = self.nodes.iter().position(|t| t.address() == addr) {
                self.current = i;
                return true;
            }
        }
        let mut probes: FuturesUnordered<_> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let timeout = if self.silent[i] {
                    PROBE_TIMEOUT_SILENT
                } else {
                    PROBE_TIMEOUT
                };
                let conns = &self.conns;
                async move { (i, writable_master(conns, t, timeout).await) }
            })
            .collect();
        let mut found = None;
        let mut silent = self.silent.clone();
        while let Some((i, answer)) = probes.next().await {
            silent[i] = answer.is_none();
            if answer == Some(true) {
                found = Some(i);
                // Another node than the one that failed is the better bet; keep looking
                // only while the others still answer quickly.
                if i != self.current {
                    break;
                }
            }
        }
        drop(probes);
        self.silent = silent;
        match found {
            Some(i) => {
                self.current = i;
                true
            }
            None => false,
        }
    }
}

/// `Some(true)`: a master in `cluster_state:ok`; `Some(false)`: answered, not that; `None`: no
/// answer within `timeout`.
async fn writable_master(conns: &Conns, t: &Target, timeout: Duration) -> Option<bool> {
    let ask = async {
        let mut con = conns.get(t).await.ok()?;
        let mut pipe = redis::pipe();
        pipe.cmd("INFO")
            .arg("replication")
            .cmd("CLUSTER")
            .arg("INFO");
        pipe.query_async::<(String, String)>(&mut con).await.ok()
    };
    match tokio::time::timeout(timeout, ask).await {
        Ok(Some((repl, cluster))) => {
            let repl = parse_info(&repl);
            let cluster = parse_info(&cluster);
            Some(
                repl.get("role").map(String::as_str) == Some("master")
                    && cluster.get("cluster_state").map(String::as_str) == Some("ok"),
            )
        }
        _ => {
            conns.drop_conn(t).await;
            None
        }
    }
}
