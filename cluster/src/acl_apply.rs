//! Bringing every node's ACL users to what the configuration says, in phases that each leave
//! every client of a declared user and redisha itself able to log in, so an apply killed
//! anywhere is finished by the next one (every phase is idempotent):
//! 1. the operator user exists on every node; replication logs in as it (`masteruser`); a
//!    rotation of its password moves everything to the new one here, the old one staying
//!    accepted until phase 3 (`Operator::converge_operator_user`);
//! 2. every declared user has its permissions and its new password, besides any old one;
//!    config files carry the users for the next start;
//! 3. old passwords, and users no longer declared that redisha made, are removed
//!    (two-password rotation: a client moves to the new password any time between phases 2
//!    and 3);
//! 4. `default` is switched off or on.
//!
//! Which phase has work left is read from the nodes (`ACL LIST`), not remembered: a changed
//! rule is the one difference that cannot be read back, so the caller says whether rules
//! changed since the last apply.
//!
//! Which users are redisha's is remembered (`ClusterState::acl_users`, the names some apply
//! declared): the nodes cannot tell a user redisha made from one an administrator made with
//! `ACL SETUSER`, and redisha never deletes what it has not proven its own. A user on the
//! nodes that is neither declared nor remembered is left alone and named in a warning.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use tracing::{info, warn};

use crate::acl::{exporter_password, password_hash, AclConfig, EXPORTER_USER, OPERATOR_USER};
use crate::conn::Target;
use crate::error::{ClusterError, Result};
use crate::ops::Operator;
use crate::secret::Password;
use crate::state::ClusterState;

/// One user as a node's `ACL LIST` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedUser {
    pub enabled: bool,
    /// SHA-256 hashes (hex) of its passwords.
    pub hashes: BTreeSet<String>,
}

/// A node's `ACL LIST`, by user name.
pub fn parse_acl_list(lines: &[String]) -> BTreeMap<String, ListedUser> {
    let mut out = BTreeMap::new();
    for line in lines {
        let mut tokens = line.split_whitespace();
        if tokens.next() != Some("user") {
            continue;
        }
        let Some(name) = tokens.next() else { continue };
        let mut user = ListedUser::default();
        for t in tokens {
            if t == "on" {
                user.enabled = true;
            } else if let Some(h) = t.strip_prefix('#') {
                user.hashes.insert(h.to_ascii_lowercase());
            }
        }
        out.insert(name.to_string(), user);
    }
    out
}

impl Operator<'_> {
    /// Uses `acl` from now on (for config files and [`Operator::converge_acl`]); the operator
    /// user's password stays the driver's when `acl` has none.
    pub fn set_acl(&mut self, acl: AclConfig) {
        let mut acl = acl;
        acl.keep_operator_of(&self.config.acl);
        self.config.acl = acl;
    }

    /// Makes every node's users what `self.config().acl` says (see the module docs).
    /// `rules_changed`: the declared users' rules differ from the last apply's. Returns whether
    /// anything was changed.
    /// `state.acl_users` names the users redisha made; it names the declared ones once this
    /// returns.
    pub async fn converge_acl(
        &mut self,
        state: &mut ClusterState,
        rules_changed: bool,
    ) -> Result<bool> {
        let acl = self.config.acl.clone();
        if acl.default_user_disabled && acl.operator_password.is_none() {
            return Err(ClusterError::Plan(
                "default_user_enabled = false needs the operator user, which this driver does not keep yet".into(),
            ));
        }
        let listed = self.acl_lists(state).await?;
        let wanted = wanted_users(&acl);
        let declared: BTreeSet<String> = acl.users.iter().map(|u| u.name.clone()).collect();
        // Remembered before any user is made: a failed apply's private state keeps them.
        let mut ours = state.acl_users.clone().unwrap_or_default();
        ours.extend(declared.iter().cloned());
        state.acl_users = Some(ours.clone());
        let foreign = foreign_users(&listed, &wanted, &ours);
        if !foreign.is_empty() {
            warn!(users = ?foreign, "ACL: users redisha did not make are left alone");
        }
        // What phases 2 to 4 have to do, read before phase 1 (which changes none of it).
        let users_differ = listed.values().any(|users| {
            acl.users.iter().any(|u| {
                users
                    .get(&u.name)
                    .is_none_or(|l| !l.hashes.contains(&password_hash(&u.password)))
            })
        });
        let stale = stale_entries(&listed, &wanted, &ours);
        let default_wrong = listed.values().any(|users| {
            users
                .get("default")
                .is_some_and(|d| d.enabled == acl.default_user_disabled)
        });
        let users_work = users_differ || rules_changed || !stale.is_empty() || default_wrong;
        let mut changed = false;

        // 1. The operator user, then replication as it.
        if acl.operator_password.is_some() {
            changed |= self.converge_operator_user(state, &listed).await?;
            if changed || users_work {
                // Every node accepts the operator user, the users are not touched yet.
                self.checkpoint("acl.operator_ready")?;
            }
        }

        // 2. Declared users: permissions and the new password added.
        if users_differ || rules_changed {
            for u in &acl.users {
                info!(user = %u.name, "ACL: user set on every node");
                let mut args = AclConfig::permission_args(&u.rules);
                args.push(format!("#{}", password_hash(&u.password)));
                self.setuser_all(state, &u.name, &args).await?;
            }
            changed = true;
        }
        // 3. Old passwords, and users redisha made that are no longer declared, removed.
        if changed || !stale.is_empty() || default_wrong {
            // The config files first: a node restarted from here on comes back with the users.
            self.write_configs(state, &self.config).await?;
            self.rewrite_all(state).await?;
            self.checkpoint("acl.users_set")?;
        }
        for (node, entries) in &stale {
            let Some(n) = state.nodes.iter().find(|n| &n.name == node) else {
                continue;
            };
            for entry in entries {
                let mut cmd = redis::cmd("ACL");
                let what = match entry {
                    Stale::User(name) => {
                        info!(node = %n.name, user = %name, "ACL: user no longer declared is deleted");
                        cmd.arg("DELUSER").arg(name);
                        "ACL DELUSER"
                    }
                    Stale::Hash(name, hash) => {
                        cmd.arg("SETUSER").arg(name).arg(format!("!{hash}"));
                        "ACL SETUSER <old password>"
                    }
                };
                self.acl_command(&n.target(), &cmd, what).await?;
            }
            changed = true;
        }
        state.acl_users = Some(declared);
        if !stale.is_empty() {
            self.checkpoint("acl.old_removed")?;
        }
        // 4. `default`, now that redisha no longer needs it.
        if default_wrong {
            let switch = if acl.default_user_disabled {
                "off"
            } else {
                "on"
            };
            info!(switch, "ACL: the default user is switched");
            self.setuser_all(state, "default", &[switch.to_string()])
                .await?;
            changed = true;
        }
        // Into every node's own config file too, where the nodes keep their users that way
        // (`CONFIG REWRITE`, aws): the rewrite of phase 3 wrote `default` as it was then, and a
        // node restarted from that file would come back with `default` on. Also when the
        // switch was made by an apply cut off before this rewrite.
        if default_wrong || acl.default_user_disabled {
            self.rewrite_all(state).await?;
        }
        Ok(changed)
    }

    /// Phase 1: the operator and exporter users with the operator's password on every node,
    /// and replication logging in as the operator (`masteruser`, `masterauth`). Returns whether
    /// anything changed.
    ///
    /// While the operator's password rotates (`operator_password_retiring`), in steps that
    /// each leave redisha, replication and the exporters able to log in:
    /// 1. every node accepts the new password besides the old (the driver keeps both);
    /// 2. replication and the config files use the new one; the exporters move over;
    /// 3. the driver keeps only the new one. Phase 3 of [`Operator::converge_acl`] then removes
    ///    the old one from the nodes.
    async fn converge_operator_user(
        &mut self,
        state: &ClusterState,
        listed: &BTreeMap<String, BTreeMap<String, ListedUser>>,
    ) -> Result<bool> {
        let Some(op) = self.config.acl.operator_password.clone() else {
            return Ok(false);
        };
        let rotating = self.config.acl.operator_password_retiring.is_some();
        let hash = password_hash(&op);
        let exporter_hash = password_hash(&exporter_password(&op));
        let missing = listed.values().any(|users| {
            users
                .get(OPERATOR_USER)
                .is_none_or(|u| !u.hashes.contains(&hash))
                || users
                    .get(EXPORTER_USER)
                    .is_none_or(|u| !u.hashes.contains(&exporter_hash))
        });
        if missing && rotating {
            info!("ACL: the operator user's new password is added on every node");
        } else if missing {
            info!("ACL: the operator and exporter users are made on every node");
        }
        // Always set: their rules may have changed with redisha's version, which ACL LIST
        // cannot be compared with; setting the same again changes nothing. `#hash` adds a
        // password and keeps the others: a rotation's old one stays until phase 3.
        let mut args = AclConfig::operator_args();
        args.push(format!("#{hash}"));
        self.setuser_all(state, OPERATOR_USER, &args).await?;
        // The exporters move to their user (or its new password) when the config files are
        // written.
        let mut args = AclConfig::exporter_args();
        args.push(format!("#{exporter_hash}"));
        self.setuser_all(state, EXPORTER_USER, &args).await?;
        if rotating {
            // Every node accepts the new password now (the SETUSERs above succeeded on all).
            self.driver.operator_new_password_accepted();
        }
        let mut changed = missing;
        if missing {
            // From now on every node accepts the operator user's (new) password: log in with it.
            self.conns.forget();
            if rotating {
                self.checkpoint("acl.operator_new_accepted")?;
            }
        }
        if missing || self.replication_login_differs(state, &op).await? {
            // Both in one CONFIG SET: a replica never pairs the new user with the old
            // password.
            self.config_set_all(
                state,
                &[
                    ("masteruser".into(), OPERATOR_USER.to_string()),
                    ("masterauth".into(), op.expose().to_string()),
                ],
                "CONFIG SET masteruser",
            )
            .await?;
            changed = true;
        }
        if rotating {
            // Config files with the new `masterauth` and both passwords (a node restarted now
            // accepts either); the exporters restart with the new one.
            self.write_configs(state, &self.config).await?;
            self.rewrite_all(state).await?;
            self.checkpoint("acl.operator_masterauth_set")?;
            self.driver
                .keep_new_operator_password()
                .await
                .map_err(ClusterError::Driver)?;
            info!("ACL: the operator user's new password is the one kept");
            self.config.acl.operator_password_retiring = None;
            self.conns.set_operator_passwords(vec![op]);
            self.checkpoint("acl.operator_password_kept")?;
            changed = true;
        }
        Ok(changed)
    }

    /// The users on the nodes that are neither declared (`self.config().acl`), nor in `ours`
    /// (the ones redisha made), nor `default` or the operator user: what apply leaves alone.
    pub async fn foreign_acl_users(
        &self,
        state: &ClusterState,
        ours: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>> {
        let listed = self.acl_lists(state).await?;
        Ok(foreign_users(
            &listed,
            &wanted_users(&self.config.acl),
            ours,
        ))
    }

    /// Every node's users.
    async fn acl_lists(
        &self,
        state: &ClusterState,
    ) -> Result<BTreeMap<String, BTreeMap<String, ListedUser>>> {
        let jobs = state.nodes.iter().map(|n| async move {
            let lines: Vec<String> = self
                .conns
                .query(&n.target(), redis::cmd("ACL").arg("LIST"), "ACL LIST")
                .await?;
            Ok::<_, ClusterError>((n.name.clone(), parse_acl_list(&lines)))
        });
        join_all(jobs).await.into_iter().collect()
    }

    /// Whether some node's replication does not log in as the operator user with `op`.
    async fn replication_login_differs(&self, state: &ClusterState, op: &Password) -> Result<bool> {
        let jobs = state.nodes.iter().map(|n| async move {
            // One pattern for both: CONFIG GET takes one argument before Redis 7.
            let reply: Vec<String> = self
                .conns
                .query(
                    &n.target(),
                    redis::cmd("CONFIG").arg("GET").arg("master*"),
                    "CONFIG GET master*",
                )
                .await?;
            let value = |name: &str| {
                reply
                    .chunks(2)
                    .find(|kv| kv.first().map(String::as_str) == Some(name))
                    .and_then(|kv| kv.get(1))
                    .map(String::as_str)
            };
            Ok::<_, ClusterError>(
                value("masteruser") != Some(OPERATOR_USER)
                    || value("masterauth") != Some(op.expose()),
            )
        });
        let mut any = false;
        for r in join_all(jobs).await {
            any |= r?;
        }
        Ok(any)
    }

    /// `ACL SETUSER name args...` on every node.
    async fn setuser_all(&self, state: &ClusterState, name: &str, args: &[String]) -> Result<()> {
        let jobs = state.nodes.iter().map(|n| async move {
            let mut cmd = redis::cmd("ACL");
            cmd.arg("SETUSER").arg(name);
            for a in args {
                cmd.arg(a);
            }
            self.acl_command(&n.target(), &cmd, "ACL SETUSER").await
        });
        join_all(jobs)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    /// Runs an ACL or CONFIG command whose arguments may hold a password: Redis quotes its
    /// arguments in some refusals, so only the reply's code is passed on.
    async fn acl_command(&self, target: &Target, cmd: &redis::Cmd, what: &str) -> Result<()> {
        match self.conns.query::<redis::Value>(target, cmd, what).await {
            Ok(_) => Ok(()),
            Err(ClusterError::Redis { source, .. }) => Err(target.protocol(
                what,
                format!("refused ({})", source.code().unwrap_or("connection error")),
            )),
            Err(e) => Err(e),
        }
    }
}

/// The users a node should have besides `default`, with the one hash each should keep.
fn wanted_users(acl: &AclConfig) -> BTreeMap<String, Option<String>> {
    let mut out: BTreeMap<String, Option<String>> = acl
        .users
        .iter()
        .map(|u| (u.name.clone(), Some(password_hash(&u.password))))
        .collect();
    if let Some(op) = &acl.operator_password {
        out.insert(OPERATOR_USER.to_string(), Some(password_hash(op)));
        out.insert(
            EXPORTER_USER.to_string(),
            Some(password_hash(&exporter_password(op))),
        );
    }
    out
}

/// Something a node has that the configuration no longer declares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stale {
    User(String),
    /// A user's password (by hash) besides its declared one.
    Hash(String, String),
}

/// Per node, the users and passwords to remove: users only when `ours` names them (redisha
/// made them). `default` is never removed; its passwords belong to the cluster password's
/// own rotation.
fn stale_entries(
    listed: &BTreeMap<String, BTreeMap<String, ListedUser>>,
    wanted: &BTreeMap<String, Option<String>>,
    ours: &BTreeSet<String>,
) -> BTreeMap<String, Vec<Stale>> {
    let mut out = BTreeMap::new();
    for (node, users) in listed {
        let mut entries = Vec::new();
        for (name, user) in users.iter().filter(|(n, _)| n.as_str() != "default") {
            match wanted.get(name) {
                None if ours.contains(name) => entries.push(Stale::User(name.clone())),
                None => {}
                Some(keep) => entries.extend(
                    user.hashes
                        .iter()
                        .filter(|h| Some(*h) != keep.as_ref())
                        .map(|h| Stale::Hash(name.clone(), h.clone())),
                ),
            }
        }
        if !entries.is_empty() {
            out.insert(node.clone(), entries);
        }
    }
    out
}

/// The users some node has that are neither wanted, nor `default` or redisha's own, nor in
/// `ours`.
fn foreign_users(
    listed: &BTreeMap<String, BTreeMap<String, ListedUser>>,
    wanted: &BTreeMap<String, Option<String>>,
    ours: &BTreeSet<String>,
) -> BTreeSet<String> {
    listed
        .values()
        .flat_map(BTreeMap::keys)
        .filter(|n| !matches!(n.as_str(), "default" | OPERATOR_USER | EXPORTER_USER))
        .filter(|n| !wanted.contains_key(*n) && !ours.contains(*n))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::AclUser;
    use crate::secret::Password;

    #[test]
    fn reads_acl_list_lines() {
        let lines = vec![
            "user default off sanitize-payload #aa ~* &* +@all".to_string(),
            "user reader on #BB #cc ~* resetchannels -@all +@read".to_string(),
        ];
        let users = parse_acl_list(&lines);
        assert!(!users["default"].enabled);
        assert!(users["reader"].enabled);
        assert_eq!(
            users["reader"].hashes,
            BTreeSet::from(["bb".to_string(), "cc".to_string()])
        );
    }

    fn listed_node(users: &[(&str, &[&str])]) -> BTreeMap<String, ListedUser> {
        users
            .iter()
            .map(|(name, hashes)| {
                (
                    name.to_string(),
                    ListedUser {
                        enabled: true,
                        hashes: hashes.iter().map(|h| h.to_string()).collect(),
                    },
                )
            })
            .collect()
    }

    fn reader_acl() -> AclConfig {
        AclConfig {
            users: vec![AclUser {
                name: "reader".into(),
                password: Password::new("new"),
                rules: vec![],
            }],
            default_user_disabled: false,
            operator_password: None,
            operator_password_retiring: None,
        }
    }

    #[test]
    fn old_passwords_and_removed_users_redisha_made_are_stale_but_never_default() {
        let new_hash = password_hash(&Password::new("new"));
        let node = listed_node(&[
            ("default", &["d1"]),
            ("reader", &["old", &new_hash]),
            ("gone", &[]),
        ]);
        let listed = BTreeMap::from([("n1".to_string(), node)]);
        let ours = BTreeSet::from(["reader".to_string(), "gone".to_string()]);
        let stale = stale_entries(&listed, &wanted_users(&reader_acl()), &ours);
        assert_eq!(
            stale["n1"],
            vec![
                Stale::User("gone".into()),
                Stale::Hash("reader".into(), "old".into())
            ]
        );
        assert!(foreign_users(&listed, &wanted_users(&reader_acl()), &ours).is_empty());
    }

    #[test]
    fn a_user_redisha_did_not_make_is_left_alone_and_named() {
        let new_hash = password_hash(&Password::new("new"));
        // One node has a hand-made user, another one redisha made before its removal from
        // the configuration, a third nothing extra.
        let listed = BTreeMap::from([
            (
                "n1".to_string(),
                listed_node(&[("reader", &[&new_hash]), ("admin", &["a1"])]),
            ),
            (
                "n2".to_string(),
                listed_node(&[("reader", &[&new_hash]), ("old-app", &["o1"])]),
            ),
            ("n3".to_string(), listed_node(&[("reader", &[&new_hash])])),
        ]);
        let ours = BTreeSet::from(["reader".to_string(), "old-app".to_string()]);
        let wanted = wanted_users(&reader_acl());
        let stale = stale_entries(&listed, &wanted, &ours);
        assert_eq!(
            stale,
            BTreeMap::from([("n2".to_string(), vec![Stale::User("old-app".into())])])
        );
        assert_eq!(
            foreign_users(&listed, &wanted, &ours),
            BTreeSet::from(["admin".to_string()])
        );
        // With nothing remembered (a lost private state), nothing undeclared is deleted.
        let stale = stale_entries(&listed, &wanted, &BTreeSet::new());
        assert!(stale.is_empty(), "{stale:?}");
        assert_eq!(
            foreign_users(&listed, &wanted, &BTreeSet::new()),
            BTreeSet::from(["admin".to_string(), "old-app".to_string()])
        );
    }
}
