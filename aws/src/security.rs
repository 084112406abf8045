//! The aws driver's side of TLS and ACL users: what it loaded from SSM for the cluster (the
//! operator user's password, the TLS authority, the node certificates' records), what the
//! `Driver` hooks answer from it (`operator_password`, `client_tls`, `cert_info`, `cert_due`:
//! synchronous, so loaded before by [`AwsDriver::load_security`]), and what it stores for the
//! nodes before they start ([`crate::node_secrets`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

use redisha_cluster::tls::{CertSource, ClientTls, NodeCertInfo, TlsConfig, TlsMode};
use redisha_cluster::{NodeConfig, NodeHandle, Password};

use crate::driver::AwsDriver;
use crate::error::{AwsError, Field};
use crate::node_secrets::{self, Names, SetupSecrets};
use crate::secrets::{self, Kind, Owner};
use crate::security_group::PlainPorts;
use crate::tls_material;

/// What the driver knows of the cluster's security. Locks are never held across an await.
#[derive(Default)]
pub struct Security {
    /// `tls { mode }`: `None` for plain text.
    tls_mode: Mutex<Option<TlsMode>>,
    /// What the security group's plain-text port rules become (see
    /// [`crate::security_group::PlainPorts`]): from the mode, and `Closed` once a switch to
    /// `required` has rolled out ([`AwsDriver::sync_plain_ports`]).
    plain_ports: Mutex<PlainPorts>,
    /// The authority, once loaded or made (with `tls_mode`, the nodes' TLS).
    tls: Mutex<Option<TlsConfig>>,
    operator_password: Mutex<Option<Password>>,
    /// (host, port) -> what redisha recorded about the node's certificate.
    certs: Mutex<BTreeMap<(String, u16), NodeCertInfo>>,
    /// SHA-256 of the last value written to each parameter: a rotation writes each once.
    written: tokio::sync::Mutex<BTreeMap<String, [u8; 32]>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AwsDriver {
    /// Nodes speak TLS in `mode` (`None`: plain text). Their certificates come from the
    /// cluster's authority, loaded or made by [`AwsDriver::load_security`].
    pub fn set_tls_mode(&self, mode: Option<TlsMode>) {
        *locked(&self.security().tls_mode) = mode;
        // `required`: the plain-text ports stay open until the nodes no longer listen on them.
        *locked(&self.security().plain_ports) = match mode {
            Some(TlsMode::Preferred) => PlainPorts::Open,
            Some(TlsMode::Required) | None => PlainPorts::Keep,
        };
        match mode {
            None => *locked(&self.security().tls) = None,
            // An authority loaded already: the nodes start in the new mode from now on.
            Some(mode) => {
                if let Some(tls) = locked(&self.security().tls).as_mut() {
                    tls.mode = mode;
                }
            }
        }
    }

    /// What the security group's plain-text port rules become when the group is reconciled.
    pub(crate) fn plain_ports(&self) -> PlainPorts {
        *locked(&self.security().plain_ports)
    }

    /// Reconciles the security group's plain-text port rules with the TLS mode. `rolled`: the
    /// nodes run the mode (`Operator::roll_tls_mode` returned), so in `required` mode the rules
    /// are revoked; before that they are kept, since a plain-text client still reaches the
    /// nodes not yet restarted through them. In `preferred` mode they are added (before the
    /// roll, so a node that comes back listening on its plain-text port is reachable at once).
    pub async fn sync_plain_ports(&self, rolled: bool) -> Result<(), AwsError> {
        let mode = *locked(&self.security().tls_mode);
        if rolled && mode == Some(TlsMode::Required) {
            *locked(&self.security().plain_ports) = PlainPorts::Closed;
        }
        if mode.is_none() {
            return Ok(());
        }
        self.sync_group().await
    }

    /// Whether the nodes speak TLS (`set_tls_mode`).
    pub fn tls_wanted(&self) -> bool {
        locked(&self.security().tls_mode).is_some()
    }

    /// The TLS the nodes run with, once the authority is loaded.
    pub fn tls(&self) -> Option<TlsConfig> {
        locked(&self.security().tls).clone()
    }

    fn names(&self) -> Result<(Names, Owner<'_>), AwsError> {
        let id = self.config().cluster_id.as_deref().ok_or_else(|| {
            AwsError::config(
                Field::ClusterId,
                "the cluster has no id yet; this is a bug in the provider, please report it",
            )
        })?;
        let cluster = self.config().cluster_name.as_str();
        Ok((
            Names::new(cluster, id),
            Owner {
                cluster,
                cluster_id: id,
            },
        ))
    }

    /// Loads what SSM keeps for the cluster: the operator user's password (made with
    /// `make_operator` when there is none), and with TLS on the authority (made with
    /// `make_authority`) and the node certificates' records. Without a cluster id there is
    /// nothing to load.
    pub async fn load_security(
        &self,
        make_operator: bool,
        make_authority: bool,
    ) -> Result<(), AwsError> {
        if self.config().cluster_id.is_none() {
            return Ok(());
        }
        let (names, owner) = self.names()?;
        let ssm = &self.clients().ssm;
        let operator = match secrets::get_parameter(ssm, &names.operator_password()).await? {
            Some(p) if !p.trim().is_empty() => Some(Password::new(p.trim())),
            _ if make_operator => {
                let password = redisha_cluster::acl::generate_password()
                    .map_err(|e| AwsError::Shared(format!("cannot read /dev/urandom: {e}")))?;
                secrets::put_parameter(
                    ssm,
                    owner,
                    &names.operator_password(),
                    password.expose(),
                    Kind::Secret,
                    "the password of redisha-operator, the user redisha works as",
                )
                .await?;
                tracing::info!(cluster_id = owner.cluster_id, "operator user password made");
                Some(password)
            }
            _ => None,
        };
        *locked(&self.security().operator_password) = operator;
        let Some(mode) = *locked(&self.security().tls_mode) else {
            return Ok(());
        };
        let authority = match tls_material::read_authority(ssm, &names, owner.cluster_id).await? {
            Some(a) => Some(a),
            None if make_authority => {
                Some(tls_material::write_authority(ssm, &names, owner).await?)
            }
            None => None,
        };
        *locked(&self.security().tls) = authority.map(|a| TlsConfig {
            mode,
            source: CertSource::Generated(a),
        });
        let infos = tls_material::read_cert_infos(ssm, &names).await?;
        *locked(&self.security().certs) = infos.into_iter().collect();
        Ok(())
    }

    /// The TLS the nodes must start with: `None` for plain text, an error when TLS is on but
    /// the authority was not loaded (a node would start with certificates nobody verifies).
    fn tls_for_start(&self) -> Result<Option<TlsConfig>, AwsError> {
        match (*locked(&self.security().tls_mode), self.tls()) {
            (None, _) => Ok(None),
            (Some(_), Some(tls)) => Ok(Some(tls)),
            (Some(_), None) => Err(AwsError::Shared(
                "tls: the cluster's certificate authority was not loaded before starting a node; this is a bug in the provider, please report it".into(),
            )),
        }
    }

    /// Stores in SSM what the nodes read besides the password (`auth`, `users`, the
    /// authority's certificate), each only when it changed.
    pub(crate) async fn store_node_secrets(&self, config: &NodeConfig) -> Result<(), AwsError> {
        if self.config().cluster_id.is_none() {
            return Ok(());
        }
        let (names, owner) = self.names()?;
        let mut values = Vec::new();
        if node_secrets::acl_in_use(config) {
            let (auth, users) = node_secrets::auth_and_users(config);
            values.push((names.auth(), auth, "the nodes' auth.conf"));
            values.push((
                names.users(),
                users,
                "the nodes' ACL user lines (password hashes)",
            ));
            // With the operator user the exporters log in as theirs (see docs/security.md).
            if let (Some(_), Some(exporter)) = config.acl.exporter_login(config.password.as_ref()) {
                values.push((
                    names.exporter(),
                    exporter.expose().to_string(),
                    "the metrics exporters' password (redisha-exporter)",
                ));
            }
        }
        if let Some(tls) = self.tls_for_start()? {
            values.push((
                names.ca_cert(),
                tls.source.ca_cert_pem().to_string(),
                "the TLS authority's certificate",
            ));
        }
        let mut written = self.security().written.lock().await;
        for (name, value, what) in values {
            use sha2::Digest as _;
            let digest: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
            if written.get(&name) == Some(&digest) {
                continue;
            }
            // `users` may be empty (no declared user and no operator): SSM refuses an empty
            // value, and an empty file is what it means.
            let stored = if value.is_empty() {
                "\n"
            } else {
                value.as_str()
            };
            secrets::put_parameter(
                &self.clients().ssm,
                owner,
                &name,
                stored,
                Kind::Secret,
                what,
            )
            .await?;
            written.insert(name, digest);
        }
        Ok(())
    }

    /// Makes sure node `port` of `host`, reached at `address`, has a certificate in SSM that
    /// still fits (names the address, comes from the authority, is not close to expiry).
    pub(crate) async fn ensure_node_cert(
        &self,
        host: &str,
        port: u16,
        address: &str,
    ) -> Result<(), AwsError> {
        let Some(tls) = self.tls_for_start()? else {
            return Ok(());
        };
        let key = (host.to_string(), port);
        let fits = locked(&self.security().certs)
            .get(&key)
            .is_some_and(|i| i.still_fits(address, &tls.source));
        if fits {
            return Ok(());
        }
        let (names, owner) = self.names()?;
        let info = tls_material::issue_node_cert(
            &self.clients().ssm,
            &names,
            owner,
            &tls.source,
            host,
            port,
            address,
        )
        .await?;
        locked(&self.security().certs).insert(key, info);
        Ok(())
    }

    /// The node setup's lines for the cluster's ACL and TLS on `host` (see
    /// [`node_secrets::setup_fragment`]).
    pub(crate) fn security_setup(
        &self,
        host: &str,
        config: &NodeConfig,
    ) -> Result<String, AwsError> {
        if self.config().cluster_id.is_none() {
            return Ok(String::new());
        }
        let (names, _) = self.names()?;
        let tls = self.tls_for_start()?;
        Ok(node_secrets::setup_fragment(&SetupSecrets {
            names: &names,
            host,
            acl: node_secrets::acl_in_use(config),
            tls: tls.as_ref(),
        }))
    }

    /// Forgets what was written (destroy deleted it).
    pub(crate) async fn forget_security(&self) {
        self.security().written.lock().await.clear();
        locked(&self.security().certs).clear();
    }

    pub(crate) fn operator_password_loaded(&self) -> Option<Password> {
        locked(&self.security().operator_password).clone()
    }

    pub(crate) fn client_tls_loaded(&self) -> Option<ClientTls> {
        self.tls().map(|t| t.client())
    }

    pub(crate) fn cert_info_of(&self, node: &NodeHandle) -> Option<NodeCertInfo> {
        locked(&self.security().tls_mode).as_ref()?;
        locked(&self.security().certs)
            .get(&(node.host.clone(), node.port))
            .cloned()
    }

    pub(crate) fn cert_due_of(&self, node: &NodeHandle) -> bool {
        let (Some(tls), Some(info)) = (self.tls(), self.cert_info_of(node)) else {
            return false;
        };
        !info.still_fits(&node.ip, &tls.source)
    }
}
