//! ACL users: the users a cluster declares (`user { }` in Terraform), the operator user redisha
//! does its own work as, and the `default` user switched off or on.
//!
//! Every node gets the same users. They live in each node's config file as `user` lines with
//! SHA-256 password hashes (`#<hex>`), never clear text: the file is what a restarted node
//! loads, and `ACL SETUSER` applies the same to running nodes (see [`crate::acl_apply`]).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::secret::Password;

/// The user redisha itself connects as, once a cluster has it (clusters made before it existed
/// get it at their next apply; until then redisha uses `default`).
pub const OPERATOR_USER: &str = "redisha-operator";

/// What the operator user may do, in order (later rules override earlier ones). Why each is
/// needed is written in docs/security.md.
pub const OPERATOR_RULES: &[&str] = &[
    "~*",
    "&*",
    "-@all",
    // Copying big keys piecewise and loading backups reads and writes every type.
    "+@read",
    "+@write",
    // ... but not what only wipes or scans everything at once (FLUSHALL, FLUSHDB, KEYS, SORT,
    // DEBUG, SHUTDOWN, ...): redisha never needs those.
    "-@dangerous",
    "+ping",
    "+info",
    "+time",
    "+multi",
    "+exec",
    "+watch",
    "+asking",
    "+eval",
    "+cluster",
    "+config|get",
    "+config|set",
    "+config|rewrite",
    "+migrate",
    "+restore",
    // MIGRATE logs in to the target and sends these there.
    "+select",
    "+restore-asking",
    "+client|pause",
    "+client|unpause",
    "+acl|setuser",
    "+acl|deluser",
    "+acl|list",
    // Replicas authenticate as the operator (`masteruser`), and backups fetch snapshots.
    "+psync",
    "+replconf",
    "+sync",
];

/// The user the metrics exporters log in as (with the operator user; without it they log in
/// as `default`): they read `INFO` and little else, so the password an exporter holds gives
/// neither data nor settings.
pub const EXPORTER_USER: &str = "redisha-exporter";

/// What the exporter user may do: what `prometheus-redis-exporter -redis-only-metrics` runs
/// and needs. Not `CONFIG GET` (it shows `masterauth`, the operator's password) nor
/// `SLOWLOG GET` (it shows the arguments of slow commands: keys and values); the exporter does
/// without both and still reports `redis_up 1`.
/// (`permission_args` starts every user from `-@all`.)
pub const EXPORTER_RULES: &[&str] = &[
    "+info",
    "+ping",
    "+cluster|info",
    "+latency|latest",
    "+slowlog|len",
    "+client|setname",
];

/// The exporter user's password, made from the operator user's (a SHA-256 of a label and
/// it): no second secret to keep, and it reveals nothing of the operator's.
pub fn exporter_password(operator: &Password) -> Password {
    let digest = Sha256::new()
        .chain_update(b"redisha-exporter\0")
        .chain_update(operator.expose().as_bytes())
        .finalize();
    Password::new(
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

/// One user a cluster declares.
#[derive(Clone, PartialEq, Eq)]
pub struct AclUser {
    pub name: String,
    pub password: Password,
    /// The permission rules, one token each (`~app:*`, `+@read`, `-flushall`, `off`).
    pub rules: Vec<String>,
}

impl fmt::Debug for AclUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclUser")
            .field("name", &self.name)
            .field("password", &self.password)
            .field("rules", &self.rules)
            .finish()
    }
}

/// The users every node of a cluster has besides `default`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclConfig {
    pub users: Vec<AclUser>,
    /// `default_user_enabled = false`: `default` is switched off (`ACL SETUSER default off`).
    pub default_user_disabled: bool,
    /// The operator user's password, when the driver keeps one for the cluster; `None`:
    /// redisha works as `default`. While it rotates, the new one.
    pub operator_password: Option<Password>,
    /// While the operator user's password rotates: the previous one, which the nodes and
    /// their config files keep accepting until every node accepts the new one and replication
    /// uses it (see [`crate::acl_apply`]).
    pub operator_password_retiring: Option<Password>,
}

impl AclConfig {
    /// Takes the operator user's passwords from `other` when this configuration has none:
    /// they are the driver's to keep, not the user's to configure.
    pub fn keep_operator_of(&mut self, other: &AclConfig) {
        if self.operator_password.is_none() {
            self.operator_password = other.operator_password.clone();
            self.operator_password_retiring = other.operator_password_retiring.clone();
        }
    }

    /// The operator user's passwords the nodes may accept, the current one first.
    pub fn operator_candidates(&self) -> Vec<Password> {
        self.operator_password
            .iter()
            .chain(&self.operator_password_retiring)
            .cloned()
            .collect()
    }

    /// The `ACL SETUSER` arguments (after the name) that make `user`'s permissions exactly
    /// `rules` while keeping its passwords: what was granted before is cleared first.
    pub fn permission_args(rules: &[String]) -> Vec<String> {
        let mut out: Vec<String> = ["on", "resetkeys", "resetchannels", "-@all"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        out.extend(rules.iter().cloned());
        out
    }

    /// The operator user's `ACL SETUSER` arguments without its password.
    pub fn operator_args() -> Vec<String> {
        let rules: Vec<String> = OPERATOR_RULES.iter().map(|s| s.to_string()).collect();
        Self::permission_args(&rules)
    }

    /// The exporter user's `ACL SETUSER` arguments without its password.
    pub fn exporter_args() -> Vec<String> {
        let rules: Vec<String> = EXPORTER_RULES.iter().map(|s| s.to_string()).collect();
        Self::permission_args(&rules)
    }

    /// Who the metrics exporters log in as: the exporter user when the cluster has the
    /// operator user, else `default` with the cluster password `password`.
    pub fn exporter_login(
        &self,
        password: Option<&Password>,
    ) -> (Option<&'static str>, Option<Password>) {
        match &self.operator_password {
            Some(op) => (Some(EXPORTER_USER), Some(exporter_password(op))),
            None => (None, password.cloned()),
        }
    }

    /// The redis.conf lines of the users, `masteruser` and `masterauth` (with the operator) and
    /// `default` switched off; `password` is the cluster password (`default`'s). Holds the
    /// operator's password in clear (`masterauth`): write it mode 0600.
    pub fn render_lines(&self, password: Option<&Password>) -> String {
        let mut out = String::new();
        let user_line = |name: &str, args: &[String], pws: &[Password]| {
            let hashes: Vec<String> = pws
                .iter()
                .map(|p| format!("#{}", password_hash(p)))
                .collect();
            let hashes = if hashes.is_empty() {
                "nopass".to_string()
            } else {
                hashes.join(" ")
            };
            format!("user {name} {hashes} {}\n", args.join(" "))
        };
        if let Some(op) = &self.operator_password {
            // Mid-rotation a restarted node must accept both: the nodes not yet moved to the
            // new one log in to it with the old.
            let operator = self.operator_candidates();
            let exporter: Vec<Password> = operator.iter().map(exporter_password).collect();
            out.push_str(&format!("masteruser {OPERATOR_USER}\n"));
            out.push_str(&format!(
                "masterauth {}\n",
                crate::driver::quote_conf(op.expose())
            ));
            out.push_str(&user_line(OPERATOR_USER, &Self::operator_args(), &operator));
            out.push_str(&user_line(EXPORTER_USER, &Self::exporter_args(), &exporter));
        } else if let Some(p) = password {
            out.push_str(&format!(
                "masterauth {}\n",
                crate::driver::quote_conf(p.expose())
            ));
        }
        if self.default_user_disabled {
            // A `user default` line resets what `requirepass` set, so it carries the password.
            let args: Vec<String> = ["off", "~*", "&*", "+@all"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            out.push_str(&user_line(
                "default",
                &args,
                &password.cloned().into_iter().collect::<Vec<_>>(),
            ));
        } else if let Some(p) = password {
            out.push_str(&format!(
                "requirepass {}\n",
                crate::driver::quote_conf(p.expose())
            ));
        }
        for u in &self.users {
            out.push_str(&user_line(
                &u.name,
                &Self::permission_args(&u.rules),
                std::slice::from_ref(&u.password),
            ));
        }
        out
    }
}

/// The SHA-256 of a password, as ACL LIST shows it (`#<hex>`, without the `#`).
pub fn password_hash(p: &Password) -> String {
    let digest = Sha256::digest(p.expose().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes a new random password (for the operator user): 32 bytes from the OS, hex.
pub fn generate_password() -> std::io::Result<Password> {
    let mut bytes = [0u8; 32];
    getrandom_fill(&mut bytes)?;
    Ok(Password::new(
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    ))
}

fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Why a user name cannot be used, if it cannot.
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("use 1 to 64 characters".into());
    }
    if name == "default" {
        return Err("`default` is Redis's own user: set `password` and `default_user_enabled` for it instead".into());
    }
    if name == OPERATOR_USER || name == EXPORTER_USER {
        return Err(format!(
            "{name:?} is a user redisha keeps for itself (its own work, the metrics exporters); choose another name"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'))
    {
        return Err("use letters, digits and - _ . @ : only (no spaces)".into());
    }
    Ok(())
}

/// The rule tokens of a `rules` string (space separated, as in `ACL SETUSER`), or why one of
/// them is refused. Passwords come from `password`, so password rules are refused; so are
/// selectors, which redisha cannot reset on the engines it supports.
pub fn parse_rules(text: &str) -> Result<Vec<String>, String> {
    let tokens: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    for t in &tokens {
        check_rule(t)?;
    }
    Ok(tokens)
}

fn check_rule(t: &str) -> Result<(), String> {
    let lower = t.to_ascii_lowercase();
    if t.chars().any(|c| c.is_control()) {
        return Err(format!("{t:?} contains a control character"));
    }
    let passwordish = lower.starts_with('>')
        || lower.starts_with('<')
        || lower.starts_with('#')
        || lower.starts_with('!')
        || matches!(lower.as_str(), "nopass" | "resetpass" | "reset");
    if passwordish {
        return Err(format!(
            "{:?}: passwords come from the block's `password`; remove password rules (>, <, #, !, nopass, resetpass, reset)",
            t.chars().next().unwrap_or(' ')
        ));
    }
    if lower.starts_with('(') || lower == "clearselectors" {
        return Err(format!("{t:?}: selectors are not supported"));
    }
    let ok = match lower.as_str() {
        "on"
        | "off"
        | "allkeys"
        | "resetkeys"
        | "allchannels"
        | "resetchannels"
        | "allcommands"
        | "nocommands"
        | "sanitize-payload"
        | "skip-sanitize-payload" => true,
        _ => {
            let rest = if let Some(r) = lower.strip_prefix('~').or(lower.strip_prefix('&')) {
                Some(r)
            } else if let Some(r) = lower.strip_prefix('%') {
                r.split_once('~').and_then(|(flags, pattern)| {
                    (!flags.is_empty() && flags.chars().all(|c| c == 'r' || c == 'w'))
                        .then_some(pattern)
                })
            } else {
                lower
                    .strip_prefix('+')
                    .or(lower.strip_prefix('-'))
                    .map(|r| r.strip_prefix('@').unwrap_or(r))
            };
            rest.is_some_and(|r| !r.is_empty())
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{t:?} is not an ACL rule; use e.g. `on`, `~app:*`, `%R~*`, `&chan`, `+@read`, `-flushall`, `+config|get`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_redis_and_redisha_and_with_spaces_are_refused() {
        assert!(check_user_name("app-reader").is_ok());
        for bad in [
            "",
            "default",
            OPERATOR_USER,
            EXPORTER_USER,
            "two words",
            "a\nb",
        ] {
            assert!(check_user_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rules_are_tokens_of_acl_setuser_without_passwords() {
        assert_eq!(
            parse_rules(" ~app:*  +@read -keys %R~x &c on ").unwrap(),
            vec!["~app:*", "+@read", "-keys", "%R~x", "&c", "on"]
        );
        for bad in [
            ">secret",
            "<old",
            "#abc",
            "nopass",
            "reset",
            "(~x +get)",
            "read",
            "+",
            "~",
            "%X~a",
        ] {
            assert!(parse_rules(bad).is_err(), "{bad:?} accepted");
        }
        // The refusal never repeats a password rule's text.
        assert!(!parse_rules(">hunter2").unwrap_err().contains("hunter2"));
    }

    #[test]
    fn config_lines_hold_hashes_and_only_masterauth_in_clear() {
        let acl = AclConfig {
            users: vec![AclUser {
                name: "reader".into(),
                password: Password::new("userpw"),
                rules: vec!["~*".into(), "+@read".into()],
            }],
            default_user_disabled: true,
            operator_password: Some(Password::new("oppw")),
            operator_password_retiring: None,
        };
        let text = acl.render_lines(Some(&Password::new("clusterpw")));
        assert!(
            !text.contains("userpw") && !text.contains("clusterpw"),
            "{text}"
        );
        assert!(text.contains(&format!("#{}", password_hash(&Password::new("userpw")))));
        assert!(text.contains("masteruser redisha-operator\nmasterauth oppw\n"));
        assert!(text.contains("user default #"), "{text}");
        // The exporter's user, with its derived password's hash only.
        let exporter = exporter_password(&Password::new("oppw"));
        assert_ne!(exporter.expose(), "oppw");
        assert!(!text.contains(exporter.expose()), "{text}");
        assert!(text.contains(&format!(
            "user redisha-exporter #{} on resetkeys resetchannels -@all +info",
            password_hash(&exporter)
        )));
        assert!(!text.contains("requirepass"));
        // Without the operator or the switch, what clusters had before.
        let plain = AclConfig::default().render_lines(Some(&Password::new("pw")));
        assert_eq!(plain, "masterauth pw\nrequirepass pw\n");
    }

    #[test]
    fn mid_rotation_config_files_accept_both_operator_passwords_and_replicate_with_the_new() {
        let acl = AclConfig {
            operator_password: Some(Password::new("newpw")),
            operator_password_retiring: Some(Password::new("oldpw")),
            ..AclConfig::default()
        };
        let text = acl.render_lines(Some(&Password::new("clusterpw")));
        let hash = |p: &str| password_hash(&Password::new(p));
        assert!(text.contains("masterauth newpw\n"), "{text}");
        assert!(!text.contains("oldpw"), "{text}");
        assert!(
            text.contains(&format!(
                "user redisha-operator #{} #{} on",
                hash("newpw"),
                hash("oldpw")
            )),
            "{text}"
        );
        let exporter = |p: &str| password_hash(&exporter_password(&Password::new(p)));
        assert!(
            text.contains(&format!(
                "user redisha-exporter #{} #{} on",
                exporter("newpw"),
                exporter("oldpw")
            )),
            "{text}"
        );
        assert_eq!(
            acl.operator_candidates(),
            vec![Password::new("newpw"), Password::new("oldpw")]
        );
    }

    #[test]
    fn hashes_are_what_acl_list_shows() {
        // echo -n foo | sha256sum
        assert_eq!(
            password_hash(&Password::new("foo")),
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
    }
}
