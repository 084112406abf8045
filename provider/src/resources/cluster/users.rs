//! The `user { }` blocks and `default_user_enabled` of `redisha_cluster`: ACL users on every
//! node, checked at plan with the attribute that is wrong, as the cluster code takes them.

use std::collections::BTreeSet;

use redisha_cluster::acl::{check_user_name, parse_rules, AclConfig, AclUser};
use redisha_cluster::{ClusterState, Operator, Password};
use tracing::warn;

use crate::model;
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::model::AllKnown;
use crate::tfplugin::framework::Attr;

use super::model::ClusterModel;

model! {
    pub struct UserModel("An ACL user every node has (as ElastiCache's users): clients log in with `AUTH name password`. \
         Adding, removing or changing one applies in place on every node. A changed password is added first and the old \
         one removed after (two-password rotation), so clients may move over during the apply. A user whose block is removed \
         is deleted; users made on the nodes by hand (`ACL SETUSER`) are left alone and named in a plan warning.") {
        pub name: Attr<String> = required("User name: letters, digits and `- _ . @ :`; not `default` and not `redisha-operator` (the user redisha works as)."),
        pub password: Attr<String> = required("The user's password. The nodes' config files keep only its SHA-256.").sensitive(),
        pub rules: Attr<String> = required("ACL rules, space separated, as `ACL SETUSER` takes them (ElastiCache's access string), e.g. \
             `~app:* +@read` for read-only access to keys starting with `app:`. The user starts from no permission \
             (`resetkeys resetchannels -@all`) and is `on` unless the rules say `off`. Password rules (`>`, `<`, `#`, `nopass`, `reset`) \
             and selectors are refused: the password comes from `password`."),
    }
}

fn at() -> AttrPath {
    AttrPath::attr("user")
}

/// The users and the `default` switch a config asks for; `None` while something is unknown.
pub(super) fn decode(
    m: &ClusterModel,
    diags: &mut Diagnostics,
    k: &mut AllKnown,
) -> Option<AclConfig> {
    let default_enabled = k.take(&m.default_user_enabled).unwrap_or(true);
    let blocks = match &m.user {
        Attr::Unknown => {
            k.0 = false;
            return None;
        }
        Attr::Null => Vec::new(),
        Attr::Known(b) => b.clone(),
    };
    let mut users = Vec::new();
    let mut seen = BTreeSet::new();
    let mut all_known = true;
    for (i, b) in blocks.iter().enumerate() {
        let here = at().index(i);
        let name = k.take(&b.name);
        let password = k.take(&b.password);
        let rules = k.take(&b.rules);
        if let Some(n) = &name {
            if let Err(why) = check_user_name(n) {
                diags.push(
                    Diagnostic::error("Invalid user name", format!("user[{i}].name: {why}"))
                        .at(here.then("name")),
                );
            } else if !seen.insert(n.clone()) {
                diags.push(
                    Diagnostic::error(
                        "Duplicate user",
                        format!(
                            "user[{i}].name: {n:?} is declared twice; give each user one block"
                        ),
                    )
                    .at(here.then("name")),
                );
            }
        }
        if password.as_deref() == Some("") {
            diags.push(
                Diagnostic::error(
                    "Invalid user password",
                    format!("user[{i}].password: must not be empty"),
                )
                .at(here.then("password")),
            );
        }
        let parsed = rules.as_deref().map(parse_rules);
        if let Some(Err(why)) = &parsed {
            diags.push(
                Diagnostic::error("Invalid ACL rules", format!("user[{i}].rules: {why}"))
                    .at(here.then("rules")),
            );
        }
        match (name, password, parsed) {
            (Some(name), Some(password), Some(Ok(rules))) => users.push(AclUser {
                name,
                password: Password::new(password),
                rules,
            }),
            _ => all_known = false,
        }
    }
    all_known.then_some(AclConfig {
        users,
        default_user_disabled: !default_enabled,
        ..AclConfig::default()
    })
}

/// What a state was applied with (its problems were reported when it was planned).
pub(super) fn acl_of(state: &ClusterModel) -> AclConfig {
    let mut diags = Diagnostics::new();
    decode(state, &mut diags, &mut AllKnown::default()).unwrap_or_default()
}

/// Whether the users' rules (not their passwords, which the nodes show as hashes) differ.
pub(super) fn rules_changed(prior: &AclConfig, wanted: &AclConfig) -> bool {
    let rules = |a: &AclConfig| {
        a.users
            .iter()
            .map(|u| (u.name.clone(), u.rules.clone()))
            .collect::<Vec<_>>()
    };
    rules(prior) != rules(wanted)
}

/// The users redisha counts as its own on a cluster: those it remembers making
/// (`ClusterState::acl_users`) and those the prior state declared, which stand in when the
/// private state that remembers them was lost.
pub(super) fn ours(remembered: Option<&BTreeSet<String>>, prior: &AclConfig) -> BTreeSet<String> {
    let mut out = remembered.cloned().unwrap_or_default();
    out.extend(prior.users.iter().map(|u| u.name.clone()));
    out
}

/// The plan's warning naming the users on the nodes that apply leaves alone because redisha
/// did not make them (none when there are none, or the nodes cannot be asked now: apply asks
/// again).
pub(super) async fn foreign_warning(
    op: &Operator<'_>,
    state: &ClusterState,
    prior: &AclConfig,
) -> Diagnostics {
    let ours = ours(state.acl_users.as_ref(), prior);
    let foreign = match op.foreign_acl_users(state, &ours).await {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => return Diagnostics::new(),
        Err(e) => {
            warn!(error = %e, "cannot list the nodes' ACL users at plan");
            return Diagnostics::new();
        }
    };
    let names: Vec<String> = foreign.iter().map(|n| format!("{n:?}")).collect();
    let mut detail = format!(
        "The nodes have ACL users that no `user` block declares and that redisha did not make: {}. \
         Apply leaves them alone (redisha deletes only users it made, once their block is removed). \
         The config files redisha writes do not carry them, so a node redisha restarts comes back without them: \
         declare them in a `user` block to keep them, or delete them with `ACL DELUSER` on every node.",
        names.join(", ")
    );
    if state.acl_users.is_none() {
        detail.push_str(
            " redisha's record of the users it made is not in the private state (lost, written by an older \
             provider, or an imported cluster), so only the users the last applied configuration declared count as its own.",
        );
    }
    Diagnostic::warning("ACL users redisha did not make are left alone", detail)
        .at(at())
        .into()
}
