//! The ACL users of a `redisha_cluster` in a Terraform state (`user` blocks,
//! `default_user_enabled`), so that a node the drill's restore restarts comes back with the
//! users and the `default` switch the provider gave it: the local driver writes a node's
//! config file whole when it starts it.
//!
//! The users' passwords are read from the state, unlike the cluster password: a restarted
//! node's config file must carry each user's password hash, and the state is the one place
//! that has them (the nodes keep only the hashes, which `ACL SETUSER` cannot take back as a
//! config line of the same user without its other settings).

use redisha_cluster::acl::{parse_rules, AclConfig, AclUser};
use redisha_cluster::Password;
use serde_json::Value;

/// The users and the `default` switch of the resource's attributes.
pub fn acl_of(attrs: &Value) -> Result<AclConfig, String> {
    let mut users = Vec::new();
    for (i, block) in attrs["user"].as_array().into_iter().flatten().enumerate() {
        let field = |key: &str| {
            block[key]
                .as_str()
                .map(str::to_string)
                .ok_or(format!("user[{i}] has no `{key}`"))
        };
        let rules =
            parse_rules(&field("rules")?).map_err(|why| format!("user[{i}].rules: {why}"))?;
        users.push(AclUser {
            name: field("name")?,
            password: Password::new(field("password")?),
            rules,
        });
    }
    Ok(AclConfig {
        users,
        default_user_disabled: attrs["default_user_enabled"].as_bool() == Some(false),
        // The driver keeps it (`LocalDriver::load_operator_password`).
        operator_password: None,
        operator_password_retiring: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_the_default_switch_come_from_the_attributes() {
        let attrs = serde_json::json!({
            "default_user_enabled": false,
            "user": [{ "name": "app", "password": "pw", "rules": "~* +@all" }],
        });
        let acl = acl_of(&attrs).unwrap();
        assert!(acl.default_user_disabled);
        assert_eq!(acl.users.len(), 1);
        assert_eq!(acl.users[0].name, "app");
        assert_eq!(acl.users[0].rules, vec!["~*", "+@all"]);
        // A state made before users existed.
        let old = acl_of(&serde_json::json!({})).unwrap();
        assert!(!old.default_user_disabled && old.users.is_empty());
    }
}
