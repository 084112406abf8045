//! Password rotation without a moment where Sentinel or a replica cannot log in: the data
//! nodes accept both passwords while the sentinels and replicas move to the new one, then
//! only the new one.

use crate::error::Result;
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
            return Err(crate::error::ClusterError::Plan(
                "sentinel mode keeps a password: removing it is not supported".into(),
            ));
        };
        self.op.also_accept([old]);
        let conns = &self.op.conns;
        // 1. Both passwords valid on every data node; replicas authenticate with the new one.
        for m in &state.data {
            let t = m.target();
            let _: redis::Value = conns
                .query(
                    &t,
                    redis::cmd("ACL")
                        .arg("SETUSER")
                        .arg("default")
                        .arg(format!(">{}", new.expose())),
                    "ACL SETUSER default (add the new password)",
                )
                .await?;
            let _: redis::Value = conns
                .query(
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
                .query(
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
