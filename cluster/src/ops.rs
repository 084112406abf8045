//! The operator: one driver, the shared node settings and connection cache, plus the
//! waiting helpers every operation uses (poll tightly, bounded by `Options::timeout`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use redisha_planner::Role;

use crate::conn::{Conns, Target};
use crate::driver::{Driver, NodeConfig};
use crate::error::{ClusterError, Result};
use crate::secret::Password;
use crate::state::ClusterState;

/// The longest pause between two polls of a condition.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(200);
/// How long a wait polls at `Options::poll_interval` before it backs off.
const QUICK_POLLS_FOR: Duration = Duration::from_secs(1);

/// Timeouts and batch sizes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bound of every wait (cluster convergence, sync, failover).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Pause between two polls of a condition.
    pub poll_interval: Duration,
    /// Keys moved per MIGRATE.
    pub migrate_batch: usize,
    /// Bytes (as MEMORY USAGE counts them) moved per MIGRATE: bounds how long one MIGRATE
    /// blocks the two nodes, whatever the key sizes.
    pub migrate_batch_bytes: u64,
    /// How long the key-moving script runs on a source before it lets other clients in (it
    /// finishes the MIGRATE batch it is in): two calls of half this time each are queued on
    /// the source at a time, so that it never waits for redisha between calls.
    pub migrate_call_time: Duration,
    /// Keys bigger than this are copied piece by piece instead of with one MIGRATE, which
    /// would block both nodes for the whole key (about 2.4 s for a 144 MB hash here, more
    /// on a busy machine: past `cluster-node-timeout` that means a failover).
    pub migrate_big_key_bytes: u64,
    /// Attempts of a migration round that failed with a transient error (IOERR, timeout,
    /// TRYAGAIN, a dropped connection), with doubling pauses between them.
    pub migrate_attempts: u32,
    /// Slots migrated at the same time between one pair of masters.
    pub migrate_parallel_slots: usize,
    /// MIGRATE's own timeout.
    pub migrate_timeout: Duration,
    /// Longest time client writes on a source are held so that a big key written more often
    /// than it can be copied still moves (its last copy attempt); reads are never held.
    pub hold_writes_limit: Duration,
    /// How often a running migration logs its progress.
    pub progress_interval: Duration,
    /// Set when the user asked to stop (Terraform's StopProvider, Ctrl-C): operations return
    /// `ClusterError::Cancelled` at their next checkpoint, a point where the cluster is
    /// consistent and the next apply resumes.
    pub cancel: Cancel,
    /// Lets repair restart a failed master that has no live replica and no append-only file
    /// (it comes back with its last snapshot at best). Off: such a repair is refused.
    pub allow_data_loss: bool,
    /// Stops the operation at the first checkpoint of this name, as a cancel there would: for
    /// tests and drills that need an operation cut at an exact point. `None` in production.
    pub stop_at: Option<&'static str>,
    /// TLS for what connects without a driver (health, import, status): the cluster's
    /// authority to verify the nodes with. An operator takes TLS from its driver instead.
    pub tls: Option<crate::tls::ClientTls>,
    /// The user what connects without a driver (health, status) logs in as, with the password
    /// it is given: with `default` off, a declared user. `None`: `default`.
    pub user: Option<String>,
}

/// A shared stop flag. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(15),
            poll_interval: Duration::from_millis(20),
            migrate_batch: 1000,
            migrate_batch_bytes: 1 << 20,
            migrate_call_time: Duration::from_millis(100),
            migrate_big_key_bytes: 4 << 20,
            migrate_attempts: 5,
            migrate_parallel_slots: 4,
            migrate_timeout: Duration::from_secs(10),
            hold_writes_limit: Duration::from_secs(10),
            progress_interval: Duration::from_secs(5),
            cancel: Cancel::default(),
            allow_data_loss: false,
            stop_at: None,
            tls: None,
            user: None,
        }
    }
}

/// Runs cluster operations through a driver. Operations that change the cluster take the
/// state `&mut` and keep it true as they go: on an error, the state still names everything
/// that exists, so the provider can save it and a later run (or destroy) continues.
pub struct Operator<'a> {
    pub(crate) driver: &'a dyn Driver,
    pub(crate) config: NodeConfig,
    pub(crate) options: Options,
    pub(crate) conns: Conns,
}

impl<'a> Operator<'a> {
    pub fn new(driver: &'a dyn Driver, config: NodeConfig) -> Self {
        Self::with_options(driver, config, Options::default())
    }

    pub fn with_options(driver: &'a dyn Driver, config: NodeConfig, options: Options) -> Self {
        let mut config = config;
        // The operator user's password is the driver's to keep, not the configuration's.
        if config.acl.operator_password.is_none() {
            config.acl.operator_password = driver.operator_password();
            config.acl.operator_password_retiring = driver.operator_password_retiring();
        }
        let mut conns = Conns::new(
            config.password.clone(),
            options.connect_timeout,
            options.command_timeout,
        );
        conns.set_operator_passwords(config.acl.operator_candidates());
        conns.set_tls(driver.client_tls());
        Operator {
            driver,
            config,
            options,
            conns,
        }
    }

    /// Other passwords nodes may accept besides the configured one (the one the state was
    /// applied with, while a rotation is unfinished): connections try each in turn.
    pub fn also_accept(&mut self, passwords: impl IntoIterator<Item = Option<Password>>) {
        let mut all = vec![self.config.password.clone()];
        all.extend(passwords);
        self.conns.set_passwords(all);
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// A safe point of a long operation: everything before it is complete and recorded in
    /// the cluster, so stopping here leaves nothing half done. Logs `checkpoint = name` (the
    /// crash-injection tests kill the provider on these lines) and returns
    /// `ClusterError::Cancelled` when the user asked to stop.
    pub fn checkpoint(&self, name: &'static str) -> Result<()> {
        tracing::debug!(checkpoint = name, "checkpoint");
        if self.options.stop_at == Some(name) {
            self.options.cancel.cancel();
        }
        if self.options.cancel.is_cancelled() {
            return Err(ClusterError::Cancelled { at: name });
        }
        Ok(())
    }

    /// Polls `check` until it returns Ok, or fails with its last complaint at the timeout.
    /// A wait longer than `progress_interval` says in the log, that often, what it still
    /// waits for.
    pub(crate) async fn poll<T, F, Fut>(&self, what: &str, mut check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, String>>,
    {
        let started = Instant::now();
        let deadline = started + self.options.timeout;
        let mut pause = self.options.poll_interval;
        let mut logged = started;
        loop {
            match check().await {
                Ok(v) => return Ok(v),
                Err(why) if Instant::now() >= deadline => {
                    return Err(ClusterError::NotConverged {
                        timeout: self.options.timeout,
                        waiting_for: vec![format!("{what}: {why}")],
                    })
                }
                Err(why) => {
                    if logged.elapsed() >= self.options.progress_interval {
                        logged = Instant::now();
                        tracing::info!(
                            waited = ?started.elapsed(),
                            timeout = ?self.options.timeout,
                            "still waiting for {what}: {why}"
                        );
                    }
                    tokio::time::sleep(pause).await;
                    pause = self.backoff(started, pause);
                }
            }
        }
    }

    /// Waits until every node of the state says `cluster_state:ok`, knows every other node,
    /// and every replica's link to its master is up.
    pub async fn wait_converged(&self, state: &ClusterState) -> Result<()> {
        let targets = state.targets();
        let expected = targets.len();
        let started = Instant::now();
        let deadline = started + self.options.timeout;
        let mut last_report = Instant::now();
        let mut pause = self.options.poll_interval;
        loop {
            let problems: Vec<String> = join_all(
                targets
                    .iter()
                    .map(|t| self.convergence_problem(t, expected)),
            )
            .await
            .into_iter()
            .flatten()
            .collect();
            if problems.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NotConverged {
                    timeout: self.options.timeout,
                    waiting_for: problems,
                });
            }
            if last_report.elapsed() > Duration::from_secs(1) {
                tracing::debug!(?problems, "waiting for the cluster to converge");
                last_report = Instant::now();
            }
            tokio::time::sleep(pause).await;
            pause = self.backoff(started, pause);
        }
    }

    /// The next pause of a wait that started at `started`: `poll_interval` for the first
    /// `QUICK_POLLS_FOR` (most waits end within it, and a migration's speed depends on noticing
    /// at once), then doubling up to `MAX_POLL_PAUSE`, so a long wait does not hammer the nodes.
    pub(crate) fn backoff(&self, started: Instant, pause: Duration) -> Duration {
        if started.elapsed() < QUICK_POLLS_FOR {
            return self.options.poll_interval;
        }
        (pause * 2).min(MAX_POLL_PAUSE.max(self.options.poll_interval))
    }

    async fn convergence_problem(&self, t: &Target, expected: usize) -> Option<String> {
        let mut pipe = redis::pipe();
        pipe.cmd("CLUSTER")
            .arg("INFO")
            .cmd("INFO")
            .arg("replication")
            .cmd("CLUSTER")
            .arg("NODES");
        let (cinfo, rinfo, nodes): (String, String, String) =
            match self.conns.pipe(t, &pipe, "CLUSTER INFO").await {
                Ok(v) => v,
                Err(e) => return Some(e.to_string()),
            };
        // A node still flagged failing (or suspected) somewhere can turn that view of the
        // cluster down a moment later: not converged until every flag is gone.
        if let Ok(lines) = crate::conn::parse_cluster_nodes(&nodes) {
            if let Some(flagged) = lines.iter().find(|l| l.is_failed()) {
                return Some(format!("{}: flags {} as failing", t.name, flagged.address));
            }
        }
        let cinfo = crate::conn::parse_info(&cinfo);
        let rinfo = crate::conn::parse_info(&rinfo);
        let name = &t.name;
        if cinfo.get("cluster_state").map(String::as_str) != Some("ok") {
            return Some(format!("{name}: cluster_state is not ok"));
        }
        let known: usize = cinfo
            .get("cluster_known_nodes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if known != expected {
            return Some(format!("{name}: knows {known} nodes, expected {expected}"));
        }
        if rinfo.get("role").map(String::as_str) == Some("slave")
            && rinfo.get("master_link_status").map(String::as_str) != Some("up")
        {
            return Some(format!("{name}: replication link to its master is not up"));
        }
        None
    }

    /// The node's current role as it reports it.
    pub(crate) async fn role_of(&self, t: &Target) -> Result<(Role, Option<String>)> {
        let nodes = self.conns.cluster_nodes(t).await?;
        let me = nodes
            .iter()
            .find(|n| n.is_myself())
            .ok_or_else(|| t.protocol("CLUSTER NODES", "no myself line"))?;
        Ok(if me.is_master() {
            (Role::Master, None)
        } else {
            (Role::Replica, me.master_id.clone())
        })
    }

    pub(crate) async fn my_id(&self, t: &Target) -> Result<String> {
        self.conns
            .query(t, redis::cmd("CLUSTER").arg("MYID"), "CLUSTER MYID")
            .await
    }

    /// Waits until `replica` replicates `master_id` with its link up and its offset caught up
    /// with the master's offset as read at the start.
    /// Gives the node `slots` with CLUSTER ADDSLOTS, each slot named: ADDSLOTSRANGE would be
    /// shorter but Redis 6.2 does not have it.
    pub(crate) async fn add_slots(
        &self,
        t: &crate::conn::Target,
        slots: &[redisha_planner::SlotRange],
    ) -> Result<()> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("ADDSLOTS");
        for r in slots {
            for slot in r.start..=r.end {
                cmd.arg(slot);
            }
        }
        let _: redis::Value = self.conns.query(t, &cmd, "CLUSTER ADDSLOTS").await?;
        Ok(())
    }

    pub(crate) async fn wait_synced(&self, replica: &Target, master: &Target) -> Result<()> {
        let what = format!("{} in sync with {}", replica.name, master.name);
        let master_offset = self
            .poll(&what, || async {
                let info = self
                    .conns
                    .info(master, "replication")
                    .await
                    .map_err(|e| e.to_string())?;
                info.get("master_repl_offset")
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| "master offset unknown".to_string())
            })
            .await?;
        self.poll(&what, || async {
            let info = self
                .conns
                .info(replica, "replication")
                .await
                .map_err(|e| e.to_string())?;
            let port = master.port.to_string();
            if info.get("master_host") != Some(&master.ip) || info.get("master_port") != Some(&port)
            {
                return Err("not yet replicating that master".to_string());
            }
            if info.get("master_link_status").map(String::as_str) != Some("up") {
                return Err("link not up".to_string());
            }
            let offset: u64 = info
                .get("slave_repl_offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if offset < master_offset {
                return Err(format!("offset {offset} behind {master_offset}"));
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{LocalConfig, LocalDriver};

    #[test]
    fn a_checkpoint_after_cancel_stops_the_operation() {
        let driver = LocalDriver::new(LocalConfig::new("/nonexistent"));
        let op = Operator::new(&driver, NodeConfig::default());
        assert!(op.checkpoint("test.before").is_ok());
        op.options().cancel.cancel();
        match op.checkpoint("test.after") {
            Err(ClusterError::Cancelled { at }) => assert_eq!(at, "test.after"),
            other => panic!("expected Cancelled, got {other:?}"),
        }
    }
}
