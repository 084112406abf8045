//! Server engines (Redis, Valkey) and their versions, and which engine changes a rolling
//! restart can carry out.
//!
//! A roll restarts a shard's replicas on the target engine while its master still runs the old
//! one, so each restarted replica must load its master's full-sync snapshot: the target must
//! read the RDB version every current master writes. After the coordinated failover the old
//! master comes back on the target engine too, so no node ever follows a newer engine than its
//! own. Masters of different shards only gossip; the cluster bus of these engines is
//! compatible both ways (checked by the engine e2e test).

use std::fmt;

use serde::{Deserialize, Serialize};

/// An engine and its version, as `--version` and `INFO server` report them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engine {
    /// `redis` or `valkey`.
    pub name: String,
    /// `7.0.15`.
    pub version: String,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.name.as_str() {
            "valkey" => "Valkey",
            _ => "Redis",
        };
        write!(f, "{name} {}", self.version)
    }
}

impl Engine {
    /// From a server's `--version` line: `Redis server v=7.0.15 sha=...` or
    /// `Valkey server v=8.1.8 ...`.
    pub fn from_version_line(line: &str) -> Option<Engine> {
        let mut words = line.split_whitespace();
        let name = words.next()?.to_ascii_lowercase();
        let version = words.find_map(|w| w.strip_prefix("v="))?;
        (matches!(name.as_str(), "redis" | "valkey") && !version.is_empty()).then(|| Engine {
            name,
            version: version.to_string(),
        })
    }

    /// From `INFO server` fields: Valkey reports `server_name:valkey` and `valkey_version`
    /// (its `redis_version` is the Redis API level it is compatible with, not its own).
    pub fn from_info(info: &std::collections::HashMap<String, String>) -> Option<Engine> {
        match info.get("server_name").map(String::as_str) {
            Some("valkey") => Some(Engine {
                name: "valkey".into(),
                version: info.get("valkey_version")?.clone(),
            }),
            _ => Some(Engine {
                name: "redis".into(),
                version: info.get("redis_version")?.clone(),
            }),
        }
    }

    fn major_minor(&self) -> Option<(u32, u32)> {
        let mut parts = self.version.split('.');
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }

    /// Whether the engine knows `availability-zone` (Valkey 8.1 and later): a node then tells
    /// clients its zone in CLUSTER SHARDS / HELLO, so they can read from a replica nearby.
    pub fn has_availability_zone(&self) -> bool {
        self.name == "valkey" && self.major_minor().is_some_and(|v| v >= (8, 1))
    }

    /// The RDB format version the engine writes (measured: Redis 6.2.14 writes 9, Redis
    /// 7.0.15 writes 10, Valkey 8.1.8 writes 11); `None` for versions redisha does not know.
    pub fn rdb_version(&self) -> Option<u32> {
        let (major, minor) = self.major_minor()?;
        match (self.name.as_str(), major, minor) {
            ("redis", 6, _) => Some(9),
            ("redis", 7, 0 | 1) => Some(10),
            ("redis", 7, 2 | 3) => Some(11),
            ("redis", 7, 4) => Some(12),
            ("valkey", 7 | 8, _) => Some(11),
            _ => None,
        }
    }
}

/// Why a roll to `target` cannot run while the shards' masters run `masters`, or `None` when
/// it can: every replica restarted on the target must load its (old) master's snapshot.
pub fn roll_refusal<'a>(
    masters: impl IntoIterator<Item = &'a Engine>,
    target: &Engine,
) -> Option<String> {
    let Some(target_rdb) = target.rdb_version() else {
        return masters.into_iter().any(|m| m != target).then(|| {
            format!("redisha does not know which snapshot (RDB) format {target} reads, so it cannot tell whether its replicas could follow the current masters")
        });
    };
    for master in masters {
        if master == target {
            continue;
        }
        match master.rdb_version() {
            Some(rdb) if rdb <= target_rdb => {}
            Some(rdb) => {
                return Some(format!(
                    "{target} reads snapshots (RDB) up to version {target_rdb}, but a master runs {master}, which writes version {rdb}: a replica restarted on {target} could not resynchronise from it. A rolling downgrade is possible only while every master still runs an engine whose snapshots {target} reads (for example, rolling back an upgrade that was interrupted before its failovers). Otherwise move the data: back up with DUMP from this cluster and RESTORE into a new cluster on {target}, which works only where {target} accepts the DUMP payload version"
                ))
            }
            None => {
                return Some(format!(
                    "a master runs {master}, whose snapshot (RDB) format redisha does not know"
                ))
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, version: &str) -> Engine {
        Engine {
            name: name.into(),
            version: version.into(),
        }
    }

    #[test]
    fn only_valkey_8_1_and_later_know_availability_zone() {
        assert!(e("valkey", "8.1.8").has_availability_zone());
        assert!(e("valkey", "9.0.0").has_availability_zone());
        assert!(!e("valkey", "8.0.2").has_availability_zone());
        assert!(!e("redis", "8.2.0").has_availability_zone());
    }

    #[test]
    fn version_lines_of_the_three_engines_parse() {
        assert_eq!(
            Engine::from_version_line("Redis server v=6.2.14 sha=40305114:0 malloc=libc bits=64"),
            Some(e("redis", "6.2.14"))
        );
        assert_eq!(
            Engine::from_version_line("Valkey server v=8.1.8 sha=00000000:1 malloc=libc"),
            Some(e("valkey", "8.1.8"))
        );
        assert_eq!(Engine::from_version_line("KeyDB server v=6.3.4"), None);
        assert_eq!(Engine::from_version_line(""), None);
    }

    #[test]
    fn valkey_is_told_apart_in_info() {
        let info = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            Engine::from_info(&info(&[
                ("redis_version", "7.2.4"),
                ("server_name", "valkey"),
                ("valkey_version", "8.1.8")
            ])),
            Some(e("valkey", "8.1.8"))
        );
        assert_eq!(
            Engine::from_info(&info(&[("redis_version", "7.0.15")])),
            Some(e("redis", "7.0.15"))
        );
    }

    #[test]
    fn upgrades_roll_and_downgrades_past_a_snapshot_format_are_refused() {
        let (r62, r70, v81) = (
            e("redis", "6.2.14"),
            e("redis", "7.0.15"),
            e("valkey", "8.1.8"),
        );
        assert_eq!(roll_refusal([&r62, &r62], &r70), None);
        assert_eq!(roll_refusal([&r70], &v81), None);
        assert_eq!(roll_refusal([&r62], &v81), None);
        let refused = roll_refusal([&r62, &r70], &r62).expect("7.0 masters cannot feed 6.2");
        assert!(
            refused.contains("Redis 7.0.15, which writes version 10"),
            "{refused}"
        );
        assert!(roll_refusal([&v81], &r70).is_some());
        // Rolling back an upgrade cut short before its failovers: masters still on 6.2.
        assert_eq!(roll_refusal([&r62, &r62, &r62], &r62), None);
        // Unknown engines roll only to themselves.
        let odd = e("redis", "9.9.0");
        assert!(roll_refusal([&r70], &odd).is_some());
        assert_eq!(roll_refusal([&odd], &odd), None);
    }
}
