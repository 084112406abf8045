//! Password rotation without a moment where Sentinel or a replica cannot log in: the data
//! nodes accept both passwords while the sentinels and replicas move to the new one, then
//! only the new one. The sentinels' own password moves the same way, so that they keep
//! reaching each other (a failover needs their votes, asked sentinel to sentinel).

use crate::conn::Conns;
use crate::error::{ClusterError, Result};
use crate::secret::Password;

use super::{SentinelOperator, SentinelState};

impl SentinelOperator<'_> {
    /// Moves every process to the operator's configured password. `old` is the password the
    /// deployment runs with now (the operator also tries it to connect).
    pub async fn rotate_password(
        &mut self,
        state: &SentinelState,
        old: Option<Password>,
    ) -> Result<()> {
        let Some(new) = self.op.config.password.clone() else {
            return Err(ClusterError::Plan(
                "sentinel mode keeps a password: removing it is not supported".into(),
            ));
        };
        self.op.also_accept([old]);
        let conns = &self.op.conns;
        // 1. Both passwords valid on every data node; replicas authenticate with the new one.
        for m in &state.data {
            let t = m.target();
            let _: redis::Value = conns
                .query_idempotent(
                    &t,
                    redis::cmd("ACL")
                        .arg("SETUSER")
                        .arg("default")
                        .arg(format!(">{}", new.expose())),
                    "ACL SETUSER default (add the new password)",
                )
                .await?;
            let _: redis::Value = conns
                .query_idempotent(
                    &t,
                    redis::cmd("CONFIG")
                        .arg("SET")
                        .arg("masterauth")
                        .arg(new.expose()),
                    "CONFIG SET masterauth",
                )
                .await?;
        }
        self.op.checkpoint("sentinel.rotate.both_accepted")?;
        // 2. The sentinels log in with the new one (each rewrites its own config).
        for m in &state.sentinels {
            let _: redis::Value = self
                .sentinel_conns
                .query(
                    &m.target(),
                    redis::cmd("SENTINEL")
                        .arg("SET")
                        .arg(&self.settings.master_name)
                        .arg("auth-pass")
                        .arg(new.expose()),
                    "SENTINEL SET auth-pass",
                )
                .await?;
        }
        self.op.checkpoint("sentinel.rotate.sentinels_moved")?;
        // 3. Only the new one, and config files that say so.
        let view = self.observe(state).await;
        let primary = view.primary.as_deref().and_then(crate::conn::split_address);
        for m in &state.data {
            let _: redis::Value = conns
                .query_idempotent(
                    &m.target(),
                    redis::cmd("CONFIG")
                        .arg("SET")
                        .arg("requirepass")
                        .arg(new.expose()),
                    "CONFIG SET requirepass",
                )
                .await?;
            let replica_of = primary
                .clone()
                .filter(|p| *p != (m.handle.ip.clone(), m.handle.port));
            self.op
                .driver
                .write_process_config(&m.handle, &self.standalone(replica_of), &self.op.config)
                .await?;
        }
        for m in &state.sentinels {
            let kind = self.sentinel_kind(&m.handle.name, primary.clone().unwrap_or_default());
            self.op
                .driver
                .write_process_config(&m.handle, &kind, &self.op.config)
                .await?;
        }
        self.wait_sentinels_agree(state).await
    }
}

impl SentinelOperator<'_> {
    /// Sentinels that answer without a password (made before sentinels had one): the next
    /// [`SentinelOperator::rotate_sentinel_password`] gives them theirs.
    pub async fn sentinels_without_password(&self, state: &SentinelState) -> Vec<String> {
        let open = Conns::new(
            None,
            self.op.options.connect_timeout,
            self.op.options.command_timeout,
        );
        let mut out = Vec::new();
        for m in &state.sentinels {
            let ping: Result<String> = open.query(&m.target(), &redis::cmd("PING"), "PING").await;
            if ping.is_ok() {
                out.push(m.handle.name.clone());
            }
        }
        out
    }

    /// Moves every sentinel to the configured sentinel password without a moment where one
    /// sentinel refuses another: (1) the sentinels that have a password accept the new one
    /// too, (2) each sends the new one to its peers (`sentinel-pass`), (3) each accepts only
    /// the new one, and writes its config (Sentinel keeps a SHA-256 of it). Sentinels without
    /// a password ignore the AUTH their peers send in (2), then get theirs in (3).
    pub async fn rotate_sentinel_password(&self, state: &SentinelState) -> Result<()> {
        let Some(new) = self.sentinel_password.clone() else {
            return Err(ClusterError::Plan(
                "sentinel mode keeps a sentinel password: removing it is not supported".into(),
            ));
        };
        let conns = &self.sentinel_conns;
        for m in &state.sentinels {
            let t = m.target();
            let _: String = conns.query(&t, &redis::cmd("PING"), "PING").await?;
            if conns.credential_for(&t).await.password.is_some() {
                let _: redis::Value = conns
                    .query(
                        &t,
                        redis::cmd("ACL")
                            .arg("SETUSER")
                            .arg("default")
                            .arg(format!(">{}", new.expose())),
                        "ACL SETUSER default (add the new sentinel password)",
                    )
                    .await?;
            }
        }
        self.op
            .checkpoint("sentinel.rotate.sentinels_accept_both")?;
        for m in &state.sentinels {
            let _: redis::Value = conns
                .query_idempotent(
                    &m.target(),
                    redis::cmd("SENTINEL")
                        .arg("CONFIG")
                        .arg("SET")
                        .arg("sentinel-pass")
                        .arg(new.expose()),
                    "SENTINEL CONFIG SET sentinel-pass",
                )
                .await?;
        }
        self.op.checkpoint("sentinel.rotate.sentinels_send_new")?;
        for m in &state.sentinels {
            let t = m.target();
            let _: redis::Value = conns
                .query_idempotent(
                    &t,
                    redis::cmd("ACL")
                        .arg("SETUSER")
                        .arg("default")
                        .arg("on")
                        .arg("resetpass")
                        .arg(format!(">{}", new.expose())),
                    "ACL SETUSER default (only the new sentinel password)",
                )
                .await?;
            let _: redis::Value = conns
                .query_idempotent(
                    &t,
                    redis::cmd("SENTINEL").arg("FLUSHCONFIG"),
                    "SENTINEL FLUSHCONFIG",
                )
                .await?;
            self.op
                .driver
                .write_process_config(
                    &m.handle,
                    &self.sentinel_kind(&m.handle.name, Default::default()),
                    &self.op.config,
                )
                .await?;
        }
        self.wait_sentinels_agree(state).await
    }
}
