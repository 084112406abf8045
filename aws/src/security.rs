//! The aws driver's side of TLS and ACL users: what it loaded from SSM for the cluster (the
//! operator user's password, the TLS authority, the node certificates' records), what the
//! `Driver` hooks answer from it (`operator_password`, `client_tls`, `cert_info`, `cert_due`:
//! synchronous, so loaded before by [`AwsDriver::load_security`]), and what it stores for the
//! nodes before they start ([`crate::node_secrets`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

use redisha_cluster::tls::{CertSource, ClientTls, NodeCertInfo, TlsConfig, TlsMode};
use redisha_cluster::tls_supplied::SuppliedCert;
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
    /// The authority, once loaded or made, or the supplied certificate (with `tls_mode`, the
    /// nodes' TLS).
    tls: Mutex<Option<TlsConfig>>,
    /// `tls { ca_cert_pem, cert_pem, key_pem }`: the user's certificate, which every node
    /// presents instead of one from the cluster's authority.
    supplied: Mutex<Option<SuppliedCert>>,
    operator_password: Mutex<Option<Password>>,
    /// While the operator user's password rotates (`prepare_operator_rotation`): the new
    /// password, and the generation the apply asks for.
    operator_rotation: Mutex<Option<(Password, Option<u64>)>>,
    /// Whether every node accepts the rotation's new password
    /// (`operator_new_password_accepted`): until then the nodes' `auth.conf` in SSM keeps the
    /// old one as `masterauth`.
    operator_new_accepted: Mutex<bool>,
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

    /// Every node presents `cert` (the user's own: `tls { ca_cert_pem, cert_pem, key_pem }`)
    /// rather than a certificate from the cluster's authority (`None`). Its checks without
    /// the addresses are the plan's; that it names every instance's address is checked here
    /// once the instances run, before any node starts on them ([`AwsDriver::ensure_node_cert`]).
    pub fn set_supplied_cert(&self, cert: Option<SuppliedCert>) {
        *locked(&self.security().supplied) = cert.clone();
        let mut tls = locked(&self.security().tls);
        if let (Some(config), Some(cert)) = (tls.as_mut(), cert) {
            config.source = CertSource::Supplied(cert);
        }
    }

    /// Whether the nodes present the user's certificate.
    pub(crate) fn supplied_tls(&self) -> bool {
        locked(&self.security().supplied).is_some()
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
    /// `make_authority`; none with a supplied certificate, which is in the configuration) and
    /// the node certificates' records. Without a cluster id there is nothing to load.
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
                let password = new_password(
                    ssm,
                    owner,
                    &names.operator_password(),
                    "the password of redisha-operator, the user redisha works as",
                )
                .await?;
                tracing::info!(cluster_id = owner.cluster_id, "operator user password made");
                Some(password)
            }
            _ => None,
        };
        *locked(&self.security().operator_password) = operator;
        *locked(&self.security().operator_rotation) = None;
        *locked(&self.security().operator_new_accepted) = false;
        let Some(mode) = *locked(&self.security().tls_mode) else {
            return Ok(());
        };
        let supplied = locked(&self.security().supplied).clone();
        let source = match supplied {
            Some(cert) => Some(CertSource::Supplied(cert)),
            None => match tls_material::read_authority(ssm, &names, owner.cluster_id).await? {
                Some(a) => Some(CertSource::Generated(a)),
                None if make_authority => Some(CertSource::Generated(
                    tls_material::write_authority(ssm, &names, owner).await?,
                )),
                None => None,
            },
        };
        *locked(&self.security().tls) = source.map(|source| TlsConfig { mode, source });
        let infos = tls_material::read_cert_infos(ssm, &names).await?;
        *locked(&self.security().certs) = infos.into_iter().collect();
        Ok(())
    }

    /// Records, for a new cluster, that its operator password is of `generation` (the
    /// configured `operator_password_generation`), unless a generation is recorded already or
    /// the cluster has no operator password (redisha works as `default`).
    pub async fn record_operator_generation(&self, generation: u64) -> Result<(), AwsError> {
        if self.config().cluster_id.is_none() || self.operator_password_loaded().is_none() {
            return Ok(());
        }
        let (names, owner) = self.names()?;
        let ssm = &self.clients().ssm;
        if secrets::get_parameter(ssm, &names.operator_generation())
            .await?
            .is_some()
        {
            return Ok(());
        }
        put_generation(ssm, &names, owner, generation).await
    }

    /// Finds a rotation of the operator user's password under way (`<prefix>/operator-password-next`
    /// in SSM), or starts one when `generation` (the configured `operator_password_generation`;
    /// `None`: not set) is not the kept password's. A rotation under way is finished whatever
    /// `generation` says: the nodes may already use its new password. Call after
    /// [`AwsDriver::load_security`].
    pub async fn prepare_operator_rotation(&self, generation: Option<u64>) -> Result<(), AwsError> {
        let Some(current) = self.operator_password_loaded() else {
            return Ok(());
        };
        let (names, owner) = self.names()?;
        let ssm = &self.clients().ssm;
        let next = secrets::get_parameter(ssm, &names.operator_password_next())
            .await?
            .and_then(|p| nonempty_password(&p));
        let recorded = read_generation(ssm, &names).await?;
        let next = match rotation_step(&current, next, recorded, generation) {
            RotationStep::Nothing => return Ok(()),
            RotationStep::Finish(next) => {
                keep_next(ssm, &names, owner, &next, generation).await?;
                return Ok(());
            }
            RotationStep::Resume(next) => next,
            RotationStep::Start => {
                let password = new_password(
                    ssm,
                    owner,
                    &names.operator_password_next(),
                    "the new password of redisha-operator while it rotates",
                )
                .await?;
                tracing::info!(
                    cluster_id = owner.cluster_id,
                    "operator user password rotation started"
                );
                password
            }
        };
        *locked(&self.security().operator_new_accepted) = false;
        *locked(&self.security().operator_rotation) = Some((next, generation));
        Ok(())
    }

    /// The operator user's password redisha logs in with: while it rotates, the new one.
    pub(crate) fn operator_password_now(&self) -> Option<Password> {
        match &*locked(&self.security().operator_rotation) {
            Some((next, _)) => Some(next.clone()),
            None => self.operator_password_loaded(),
        }
    }

    /// While the operator user's password rotates: the old one.
    pub(crate) fn operator_password_retiring_now(&self) -> Option<Password> {
        locked(&self.security().operator_rotation)
            .as_ref()
            .and_then(|_| self.operator_password_loaded())
    }

    /// Whether a rotation of the operator user's password is under way and every node
    /// accepts its new password.
    pub(crate) fn operator_new_accepted_now(&self) -> bool {
        locked(&self.security().operator_rotation).is_some()
            && *locked(&self.security().operator_new_accepted)
    }

    pub(crate) fn note_operator_new_accepted(&self) {
        if locked(&self.security().operator_rotation).is_some() {
            *locked(&self.security().operator_new_accepted) = true;
        }
    }

    /// Ends a rotation: the new password replaces the old in SSM, with its generation, and the
    /// `-next` parameter goes. Cut short, the next apply's `prepare_operator_rotation` finds
    /// it again and finishes it.
    pub(crate) async fn keep_new_operator_password_in_ssm(&self) -> Result<(), AwsError> {
        let Some((next, generation)) = locked(&self.security().operator_rotation).clone() else {
            return Ok(());
        };
        let (names, owner) = self.names()?;
        keep_next(&self.clients().ssm, &names, owner, &next, generation).await?;
        *locked(&self.security().operator_password) = Some(next);
        *locked(&self.security().operator_rotation) = None;
        *locked(&self.security().operator_new_accepted) = false;
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

    /// What a write of node `port`'s settings also runs on its instance when the cluster uses
    /// ACL ([`node_secrets::acl_adopt_fragment`]); nothing otherwise.
    pub(crate) fn acl_adopt_script(
        &self,
        port: u16,
        config: &NodeConfig,
    ) -> Result<String, AwsError> {
        if self.config().cluster_id.is_none() || !node_secrets::acl_in_use(config) {
            return Ok(String::new());
        }
        let (names, _) = self.names()?;
        Ok(node_secrets::acl_adopt_fragment(&names, port))
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
            let accepted = *locked(&self.security().operator_new_accepted);
            let config = &config.for_next_start(accepted);
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
    /// still fits (names the address, comes from the authority, is not close to expiry; a
    /// supplied one: is the one configured and was checked against the address). A supplied
    /// certificate is stored for a node only once it names the address of every instance of
    /// the cluster ([`AwsDriver::check_supplied_names_instances`]): until then the instances'
    /// nodes have no certificate to start with, so none starts.
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
        if let CertSource::Supplied(cert) = &tls.source {
            self.check_supplied_names_instances(cert).await?;
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

    /// Refuses, naming every one of them and the fix, the instances of the cluster (running,
    /// starting or stopped) whose address `cert` does not name: every node presents it, and
    /// clients and the other nodes verify it against the node's address. An instance's
    /// address is the one its nodes announce ([`AwsDriver::instance_address`]).
    async fn check_supplied_names_instances(&self, cert: &SuppliedCert) -> Result<(), AwsError> {
        let instances = self.instance_addresses().await?;
        let addresses: Vec<String> = instances
            .iter()
            .map(|(_, address)| address.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // The other checks (chain, key, expiry) are the plan's; repeated here, their message
        // names the attribute already.
        let unnamed = cert
            .unnamed_addresses(&addresses, redisha_cluster::identity::unix_now())
            .map_err(|e| AwsError::Shared(e.to_string()))?;
        if unnamed.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = instances
            .iter()
            .filter(|(_, address)| unnamed.contains(address))
            .map(|(host, address)| format!("{address} (instance of host {host})"))
            .collect();
        tracing::warn!(
            missing = ?unnamed,
            "the supplied certificate does not name every instance's address; no node starts"
        );
        Err(AwsError::config(
            Field::TlsCert,
            format!(
                "the supplied certificate does not name the private address of {} of the cluster's instances: {}. It names {}. Every node presents this one certificate and clients verify it against the node's address, so redisha gives it to no node (and no new node starts) while it misses one; the instances stay, and the next apply resumes with them. Reissue the certificate with these addresses as IP subject alternative names (and every other instance's address) and put it in tls.cert_pem and its key in tls.key_pem; or, for a cluster being created, remove tls.ca_cert_pem, tls.cert_pem and tls.key_pem to have redisha issue certificates from an authority of its own",
                unnamed.len(),
                listed.join(", "),
                cert.subject_alt_names().join(", ")
            ),
        ))
    }

    /// Before a new instance is launched for `host` with a supplied certificate: what SSM
    /// holds for its nodes' certificates goes, so that the new instance's first boot waits
    /// for [`AwsDriver::ensure_node_cert`] (its address checked) instead of starting its
    /// nodes with the previous instance's copy, checked against another address.
    pub(crate) async fn forget_supplied_node_certs(
        &self,
        host: &str,
        ports: &[u16],
    ) -> Result<(), AwsError> {
        if !self.supplied_tls() || self.config().cluster_id.is_none() {
            return Ok(());
        }
        let (names, _) = self.names()?;
        let ssm = &self.clients().ssm;
        for port in ports {
            // The copy first: a record left alone names the old instance's address, which
            // the new instance's does not fit.
            secrets::delete_secret(ssm, &names.node_cert(host, *port)).await?;
            secrets::delete_secret(ssm, &names.cert_info(host, *port)).await?;
            locked(&self.security().certs).remove(&(host.to_string(), *port));
        }
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
        *locked(&self.security().operator_rotation) = None;
        *locked(&self.security().operator_new_accepted) = false;
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

/// Makes a password and keeps it in SSM as `name` (a SecureString).
async fn new_password(
    ssm: &aws_sdk_ssm::Client,
    owner: Owner<'_>,
    name: &str,
    what: &str,
) -> Result<Password, AwsError> {
    let password = redisha_cluster::acl::generate_password()
        .map_err(|e| AwsError::Shared(format!("cannot read /dev/urandom: {e}")))?;
    secrets::put_parameter(ssm, owner, name, password.expose(), Kind::Secret, what).await?;
    Ok(password)
}

fn nonempty_password(text: &str) -> Option<Password> {
    let text = text.trim();
    (!text.is_empty()).then(|| Password::new(text))
}

/// The generation of the kept operator password (0 when none was recorded: a cluster made
/// before generations, or without one configured).
async fn read_generation(ssm: &aws_sdk_ssm::Client, names: &Names) -> Result<u64, AwsError> {
    Ok(secrets::get_parameter(ssm, &names.operator_generation())
        .await?
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0))
}

async fn put_generation(
    ssm: &aws_sdk_ssm::Client,
    names: &Names,
    owner: Owner<'_>,
    generation: u64,
) -> Result<(), AwsError> {
    secrets::put_parameter(
        ssm,
        owner,
        &names.operator_generation(),
        &generation.to_string(),
        Kind::Secret,
        "the generation of redisha-operator's password (operator_password_generation)",
    )
    .await
}

/// The last steps of a rotation, each repeatable: the new password (`next`) replaces the
/// current one, the generation is recorded, the `-next` parameter goes. Cut short between
/// them, the next apply finds `-next` equal to the current one and calls this again.
async fn keep_next(
    ssm: &aws_sdk_ssm::Client,
    names: &Names,
    owner: Owner<'_>,
    next: &Password,
    generation: Option<u64>,
) -> Result<(), AwsError> {
    secrets::put_parameter(
        ssm,
        owner,
        &names.operator_password(),
        next.expose(),
        Kind::Secret,
        "the password of redisha-operator, the user redisha works as",
    )
    .await?;
    if let Some(g) = generation {
        put_generation(ssm, names, owner, g).await?;
    }
    secrets::delete_secret(ssm, &names.operator_password_next()).await?;
    tracing::info!(
        cluster_id = owner.cluster_id,
        "operator user password rotated"
    );
    Ok(())
}

/// What an apply does about the operator user's password, from what SSM keeps.
#[derive(Debug, PartialEq, Eq)]
enum RotationStep {
    /// No rotation under way, none asked for.
    Nothing,
    /// Cut short after the new password replaced the current one: only the last steps left.
    Finish(Password),
    /// A rotation under way, with this new password: carried on.
    Resume(Password),
    /// The configured generation is not the kept password's: a new password is made.
    Start,
}

/// `current`: the kept password; `next`: the `-next` parameter's; `recorded`: the kept
/// password's generation; `wanted`: the configured one (`None`: not set).
fn rotation_step(
    current: &Password,
    next: Option<Password>,
    recorded: u64,
    wanted: Option<u64>,
) -> RotationStep {
    match next {
        Some(next) if &next == current => RotationStep::Finish(next),
        Some(next) => RotationStep::Resume(next),
        None => match wanted {
            Some(g) if g != recorded => RotationStep::Start,
            _ => RotationStep::Nothing,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_under_way_is_always_carried_on_and_one_starts_only_on_a_new_generation() {
        let old = Password::new("old-pw");
        let new = Password::new("new-pw");
        // Nothing asked, or the kept generation asked: nothing to do.
        assert_eq!(rotation_step(&old, None, 0, None), RotationStep::Nothing);
        assert_eq!(rotation_step(&old, None, 3, Some(3)), RotationStep::Nothing);
        // A cluster made before generations has 0: any other number rotates.
        assert_eq!(rotation_step(&old, None, 0, Some(1)), RotationStep::Start);
        // The number changed back: rotated too (it is not the kept password's).
        assert_eq!(rotation_step(&old, None, 3, Some(2)), RotationStep::Start);
        // Under way: the same new password, whatever the number says now.
        for wanted in [None, Some(0), Some(3), Some(4)] {
            assert_eq!(
                rotation_step(&old, Some(new.clone()), 3, wanted),
                RotationStep::Resume(new.clone())
            );
        }
        // Cut short after the switch: only the last steps.
        assert_eq!(
            rotation_step(&new, Some(new.clone()), 3, Some(4)),
            RotationStep::Finish(new.clone())
        );
    }
}
