//! Bringing every node's ACL users to what the configuration says, in phases that each leave
//! every client of a declared user and redisha itself able to log in, so an apply killed
//! anywhere is finished by the next one (every phase is idempotent):
//! 1. the operator user exists on every node; replication logs in as it (`masteruser`);
//! 2. every declared user has its permissions and its new password, besides any old one;
//!    config files carry the users for the next start;
//! 3. old passwords, and users no longer declared, are removed (two-password rotation: a
//!    client moves to the new password any time between phases 2 and 3);
//! 4. `default` is switched off or on.
//!
//! Which phase has work left is read from the nodes (`ACL LIST`), not remembered: a changed
//! rule is the one difference that cannot be read back, so the caller says whether rules
//! changed since the last apply.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use tracing::info;

use crate::acl::{password_hash, AclConfig, OPERATOR_USER};
use crate::conn::Target;
use crate::error::{ClusterError, Result};
use crate::ops::Operator;
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
        let operator = self.config.acl.operator_password.take();
        self.config.acl = acl;
        if self.config.acl.operator_password.is_none() {
            self.config.acl.operator_password = operator;
        }
    }

    /// Makes every node's users what `self.config().acl` says (see the module docs).
    /// `rules_changed`: the declared users' rules differ from the last apply's. Returns whether
    /// anything was changed.
    pub async fn converge_acl(
        &mut self,
        state: &ClusterState,
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
        let mut changed = false;

        // 1. The operator user, then replication as it.
        if let Some(op) = &acl.operator_password {
            let hash = password_hash(op);
            let missing = listed.values().any(|users| {
                users
                    .get(OPERATOR_USER)
                    .is_none_or(|u| !u.hashes.contains(&hash))
            });
            // Always set: its rules may have changed with redisha's version, which ACL LIST
            // cannot be compared with; setting the same again changes nothing.
            if missing {
                info!("ACL: the operator user is made on every node");
            }
            let mut args = AclConfig::operator_args();
            args.push(format!("#{hash}"));
            self.setuser_all(state, OPERATOR_USER, &args).await?;
            changed |= missing;
            if missing || self.masteruser_differs(state).await? {
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
            if changed {
                // From now on every node accepts the operator user: log in as it.
                self.conns.forget();
                self.checkpoint("acl.operator_ready")?;
            }
        }

        // 2. Declared users: permissions and the new password added.
        let users_differ = listed.values().any(|users| {
            acl.users.iter().any(|u| {
                users
                    .get(&u.name)
                    .is_none_or(|l| !l.hashes.contains(&password_hash(&u.password)))
            })
        });
        if users_differ || rules_changed {
            for u in &acl.users {
                info!(user = %u.name, "ACL: user set on every node");
                let mut args = AclConfig::permission_args(&u.rules);
                args.push(format!("#{}", password_hash(&u.password)));
                self.setuser_all(state, &u.name, &args).await?;
            }
            changed = true;
        }
        // 3. Old passwords and undeclared users removed.
        let stale = stale_entries(&listed, &wanted);
        let default_wrong = listed.values().any(|users| {
            users
                .get("default")
                .is_some_and(|d| d.enabled == acl.default_user_disabled)
        });
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
        Ok(changed)
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

    async fn masteruser_differs(&self, state: &ClusterState) -> Result<bool> {
        let jobs = state.nodes.iter().map(|n| async move {
            let reply: Vec<String> = self
                .conns
                .query(
                    &n.target(),
                    redis::cmd("CONFIG").arg("GET").arg("masteruser"),
                    "CONFIG GET masteruser",
                )
                .await?;
            Ok::<_, ClusterError>(reply.get(1).map(String::as_str) != Some(OPERATOR_USER))
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

/// Per node, the users and passwords to remove. `default` is never removed; its passwords
/// belong to the cluster password's own rotation.
fn stale_entries(
    listed: &BTreeMap<String, BTreeMap<String, ListedUser>>,
    wanted: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, Vec<Stale>> {
    let mut out = BTreeMap::new();
    for (node, users) in listed {
        let mut entries = Vec::new();
        for (name, user) in users.iter().filter(|(n, _)| n.as_str() != "default") {
            match wanted.get(name) {
                None => entries.push(Stale::User(name.clone())),
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

    #[test]
    fn old_passwords_and_undeclared_users_are_stale_but_never_default() {
        let acl = AclConfig {
            users: vec![AclUser {
                name: "reader".into(),
                password: Password::new("new"),
                rules: vec![],
            }],
            default_user_disabled: false,
            operator_password: None,
        };
        let new_hash = password_hash(&Password::new("new"));
        let node = BTreeMap::from([
            (
                "default".to_string(),
                ListedUser {
                    enabled: true,
                    hashes: BTreeSet::from(["d1".to_string()]),
                },
            ),
            (
                "reader".to_string(),
                ListedUser {
                    enabled: true,
                    hashes: BTreeSet::from(["old".to_string(), new_hash]),
                },
            ),
            ("gone".to_string(), ListedUser::default()),
        ]);
        let listed = BTreeMap::from([("n1".to_string(), node)]);
        let stale = stale_entries(&listed, &wanted_users(&acl));
        assert_eq!(
            stale["n1"],
            vec![
                Stale::User("gone".into()),
                Stale::Hash("reader".into(), "old".into())
            ]
        );
    }
}
