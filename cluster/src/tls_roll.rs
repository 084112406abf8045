//! Changing the TLS mode of a running cluster (`preferred` <-> `required`): the driver already
//! writes the new mode into every config file it renders, so what is left is a rolling
//! restart of the nodes still running the other mode, replicas first. Neither the announced
//! (TLS) port nor the bus port differs between the modes, so nodes of both modes work side by
//! side while it runs; clients on TLS never lose a shard.

use tracing::info;

use crate::error::Result;
use crate::ops::Operator;
use crate::state::ClusterState;
use crate::tls::TlsMode;

impl Operator<'_> {
    /// Restarts, one shard copy at a time, every node whose plain-text port differs from what
    /// `mode` gives it. Nodes an interrupted roll already restarted are left alone.
    pub async fn roll_tls_mode(&self, state: &ClusterState, mode: TlsMode) -> Result<()> {
        let mut pending = std::collections::BTreeSet::new();
        for node in &state.nodes {
            let wanted = match mode {
                TlsMode::Required => "0".to_string(),
                TlsMode::Preferred => node
                    .handle
                    .port
                    .checked_add(crate::tls::PLAINTEXT_PORT_OFFSET)
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
            };
            let reply: Vec<String> = self
                .conns
                .query(
                    &node.target(),
                    redis::cmd("CONFIG").arg("GET").arg("port"),
                    "CONFIG GET port",
                )
                .await?;
            if reply.get(1) != Some(&wanted) {
                pending.insert(node.name.clone());
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        info!(%mode, nodes = pending.len(), "restarting nodes into the new TLS mode");
        self.restart_nodes(state, &pending, &Default::default())
            .await
    }
}

impl Operator<'_> {
    /// The node whose certificate expires first, and what is recorded about that certificate
    /// (`None`: no node has a certificate the driver can read).
    pub fn earliest_cert_expiry(
        &self,
        state: &ClusterState,
    ) -> Option<(String, crate::tls::NodeCertInfo)> {
        state
            .nodes
            .iter()
            .filter_map(|n| Some((n.name.clone(), self.driver.cert_info(&n.handle)?)))
            .min_by_key(|(_, info)| info.not_after_unix)
    }

    /// The nodes whose certificate is due for replacement (`Driver::cert_due`).
    pub fn certs_due(&self, state: &ClusterState) -> std::collections::BTreeSet<String> {
        state
            .nodes
            .iter()
            .filter(|n| self.driver.cert_due(&n.handle))
            .map(|n| n.name.clone())
            .collect()
    }

    /// Restarts the nodes whose certificate is due onto a new one (reissued, or the newly
    /// supplied one), replicas first.
    pub async fn rotate_certs(&self, state: &ClusterState) -> Result<()> {
        let due = self.certs_due(state);
        if due.is_empty() {
            return Ok(());
        }
        info!(
            nodes = due.len(),
            "reissuing node certificates before they expire"
        );
        self.restart_nodes(state, &due, &Default::default()).await
    }
}
