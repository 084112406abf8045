//! Persistence settings (`persistence`, `appendfsync`, `min_replicas_to_write`,
//! `min_replicas_max_lag` in Terraform) as the redis.conf settings they stand for. They travel
//! in `NodeConfig::redis_config`, so a change rolls out like any other setting (CONFIG SET,
//! live, on every node).

use std::collections::BTreeMap;
use std::fmt;

/// Redis's own snapshot schedule: after 1 h if a key changed, 5 min if 100 did, 1 min if
/// 10,000 did.
pub const SNAPSHOT_SCHEDULE: &str = "3600 1 300 100 60 10000";

/// The redis.conf settings persistence owns; `redis_config` may set them only while
/// `persistence` is left unset.
pub const PERSISTENCE_SETTINGS: &[&str] = &[
    "save",
    "appendonly",
    "appendfsync",
    "min-replicas-to-write",
    "min-replicas-max-lag",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    EverySec,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No snapshot, no append-only file: a node restarted alone comes back empty.
    None,
    /// Snapshots on Redis's schedule.
    Rdb,
    /// An append-only file (with snapshots as well).
    Aof(Fsync),
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::None => "none",
            Mode::Rdb => "rdb",
            Mode::Aof(_) => "aof",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    pub mode: Mode,
    /// A master refuses writes while fewer replicas than this are connected with at most
    /// `min_replicas_max_lag` seconds of lag. `None`: Redis's default (0, never refuse).
    pub min_replicas_to_write: Option<u32>,
    pub min_replicas_max_lag: Option<u32>,
}

impl Default for Persistence {
    /// Snapshots: what redis-server does unconfigured, so clusters made before `persistence`
    /// existed keep running as they did.
    fn default() -> Self {
        Persistence {
            mode: Mode::Rdb,
            min_replicas_to_write: None,
            min_replicas_max_lag: None,
        }
    }
}

/// Why a persistence argument cannot be used; `field` is its Terraform name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PersistenceError {
    pub field: &'static str,
    pub message: String,
}

impl Persistence {
    /// From the arguments as written (`None`: unset).
    pub fn parse(
        mode: Option<&str>,
        appendfsync: Option<&str>,
        min_replicas_to_write: Option<u32>,
        min_replicas_max_lag: Option<u32>,
    ) -> Result<Persistence, PersistenceError> {
        let fsync = match appendfsync {
            None | Some("everysec") => Fsync::EverySec,
            Some("always") => Fsync::Always,
            Some(other) => {
                return Err(PersistenceError {
                    field: "appendfsync",
                    message: format!("{other:?} is not one of everysec, always"),
                })
            }
        };
        let mode = match mode {
            None | Some("rdb") => Mode::Rdb,
            Some("none") => Mode::None,
            Some("aof") => Mode::Aof(fsync),
            Some(other) => {
                return Err(PersistenceError {
                    field: "persistence",
                    message: format!("{other:?} is not one of none, rdb, aof"),
                })
            }
        };
        if appendfsync.is_some() && !matches!(mode, Mode::Aof(_)) {
            return Err(PersistenceError {
                field: "appendfsync",
                message: format!(
                    "only applies to persistence = \"aof\" (persistence is {mode}); remove it"
                ),
            });
        }
        if min_replicas_max_lag.is_some() && min_replicas_to_write.unwrap_or(0) == 0 {
            return Err(PersistenceError {
                field: "min_replicas_max_lag",
                message: "only applies when min_replicas_to_write is 1 or more".into(),
            });
        }
        if min_replicas_max_lag == Some(0) {
            return Err(PersistenceError {
                field: "min_replicas_max_lag",
                message: "must be at least 1 (seconds)".into(),
            });
        }
        Ok(Persistence {
            mode,
            min_replicas_to_write,
            min_replicas_max_lag,
        })
    }

    /// The redis.conf settings, values as CONFIG SET takes them.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut set = |k: &str, v: &str| {
            out.insert(k.to_string(), v.to_string());
        };
        match self.mode {
            Mode::None => {
                set("save", "");
                set("appendonly", "no");
            }
            Mode::Rdb => {
                set("save", SNAPSHOT_SCHEDULE);
                set("appendonly", "no");
            }
            Mode::Aof(fsync) => {
                set("save", SNAPSHOT_SCHEDULE);
                set("appendonly", "yes");
                set(
                    "appendfsync",
                    match fsync {
                        Fsync::EverySec => "everysec",
                        Fsync::Always => "always",
                    },
                );
            }
        }
        if let Some(n) = self.min_replicas_to_write {
            set("min-replicas-to-write", &n.to_string());
            // Redis's default lag bound (10 s) unless given.
            set(
                "min-replicas-max-lag",
                &self.min_replicas_max_lag.unwrap_or(10).to_string(),
            );
        }
        out
    }

    /// `redis_config` with these settings merged in. A setting `redis_config` also names is
    /// an error when `explicit` (the user set `persistence` and friends); otherwise
    /// `redis_config` wins, as it did before `persistence` existed.
    pub fn merge_into(
        &self,
        redis_config: &BTreeMap<String, String>,
        explicit: bool,
    ) -> Result<BTreeMap<String, String>, PersistenceError> {
        let mut out = redis_config.clone();
        for (k, v) in self.settings() {
            let given = redis_config
                .keys()
                .find(|c| c.eq_ignore_ascii_case(&k))
                .cloned();
            match given {
                Some(key) if explicit => {
                    return Err(PersistenceError {
                        field: "redis_config",
                        message: format!(
                            "{key} is set by persistence, appendfsync and min_replicas_*; remove it from redis_config"
                        ),
                    })
                }
                Some(_) => {}
                None => {
                    out.insert(k, v);
                }
            }
        }
        Ok(out)
    }
}

/// Whether a node's running settings (CONFIG GET save, appendonly) keep its data over a
/// restart: snapshots scheduled or an append-only file on.
pub fn persists(save: &str, appendonly: &str) -> bool {
    !save.trim().is_empty() || appendonly.trim().eq_ignore_ascii_case("yes")
}

/// The nodes among `addresses` (host:port) that do not keep their data over a restart, or
/// whose settings cannot be read (as `address: why`); empty when every node persists.
pub async fn nodes_without_persistence(
    addresses: &[String],
    password: Option<&crate::secret::Password>,
    options: &crate::ops::Options,
) -> Vec<String> {
    let mut conns = crate::conn::Conns::new(
        password.cloned(),
        options.connect_timeout,
        options.command_timeout,
    );
    conns.set_tls(options.tls.clone());
    conns.set_user(options.user.clone());
    let checks = addresses.iter().map(|a| {
        let conns = &conns;
        async move {
            let Some((ip, port)) = crate::conn::split_address(a) else {
                return Some(format!("{a}: not host:port"));
            };
            let t = crate::conn::Target::new(a, ip, port);
            let mut pipe = redis::pipe();
            pipe.cmd("CONFIG")
                .arg("GET")
                .arg("save")
                .cmd("CONFIG")
                .arg("GET")
                .arg("appendonly");
            match conns
                .pipe::<(Vec<String>, Vec<String>)>(&t, &pipe, "CONFIG GET")
                .await
            {
                Ok((save, aof)) => {
                    let value = |v: &[String]| v.get(1).cloned().unwrap_or_default();
                    (!persists(&value(&save), &value(&aof)))
                        .then(|| format!("{a}: neither snapshots nor an append-only file"))
                }
                Err(e) => Some(format!("{a}: cannot read its settings ({e})")),
            }
        }
    });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_sets_what_it_promises() {
        let none = Persistence::parse(Some("none"), None, None, None).unwrap();
        assert_eq!(none.settings()["save"], "");
        assert_eq!(none.settings()["appendonly"], "no");
        let aof = Persistence::parse(Some("aof"), Some("always"), Some(1), None).unwrap();
        let s = aof.settings();
        assert_eq!(s["appendonly"], "yes");
        assert_eq!(s["appendfsync"], "always");
        assert_eq!(s["min-replicas-to-write"], "1");
        assert_eq!(s["min-replicas-max-lag"], "10");
        assert_eq!(
            Persistence::parse(None, None, None, None).unwrap(),
            Persistence::default()
        );
        assert_eq!(Persistence::default().settings()["save"], SNAPSHOT_SCHEDULE);
    }

    #[test]
    fn wrong_combinations_name_their_argument() {
        let e = Persistence::parse(Some("rdb"), Some("always"), None, None).unwrap_err();
        assert_eq!(e.field, "appendfsync");
        let e = Persistence::parse(Some("disk"), None, None, None).unwrap_err();
        assert_eq!(e.field, "persistence");
        let e = Persistence::parse(None, None, None, Some(5)).unwrap_err();
        assert_eq!(e.field, "min_replicas_max_lag");
    }

    #[test]
    fn redis_config_wins_unless_persistence_is_explicit() {
        let given: BTreeMap<String, String> = [("save".to_string(), "60 1".to_string())].into();
        let p = Persistence::default();
        let merged = p.merge_into(&given, false).unwrap();
        assert_eq!(merged["save"], "60 1");
        assert_eq!(merged["appendonly"], "no");
        assert_eq!(
            p.merge_into(&given, true).unwrap_err().field,
            "redis_config"
        );
    }

    #[test]
    fn persistence_is_read_from_running_settings() {
        assert!(!persists("", "no"));
        assert!(persists("3600 1", "no"));
        assert!(persists("", "yes"));
    }
}
