//! The resource's private state: a cache of what the driver made (`ClusterState`), never the
//! only record of it (the nodes carry the cluster id; see `redisha_cluster::identity`).
//!
//! Encoded as a keyed, versioned JSON object, `{"redisha_cluster": {"format": 2, "state": …}}`,
//! so a later provider version reads today's and keys of other concerns can sit beside it.
//! Format 1 is what providers before cluster ids wrote: a bare `ClusterState`.

use redisha_cluster::ClusterState;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::tfplugin::framework::Private;

const KEY: &str = "redisha_cluster";
pub const FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Entry {
    format: u32,
    state: ClusterState,
}

/// The cached state, or `None` when there is none or it cannot be read (a newer format, a
/// damaged value): the caller then rebuilds it from the driver and the cluster.
pub fn decode(bytes: &[u8]) -> Option<ClusterState> {
    if bytes.is_empty() {
        return None;
    }
    let json: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "the private state is not JSON; rebuilding it from the cluster");
            return None;
        }
    };
    match json.get(KEY) {
        Some(entry) => match serde_json::from_value::<Entry>(entry.clone()) {
            Ok(e) if e.format <= FORMAT => Some(e.state),
            Ok(e) => {
                warn!(
                    format = e.format,
                    "the private state was written by a newer provider; rebuilding it from the cluster"
                );
                None
            }
            Err(e) => {
                warn!(error = %e, "the private state does not decode; rebuilding it from the cluster");
                None
            }
        },
        // Format 1: a bare ClusterState.
        None => serde_json::from_value::<ClusterState>(json).ok(),
    }
}

pub fn encode(state: &ClusterState) -> Vec<u8> {
    let entry = Entry {
        format: FORMAT,
        state: state.clone(),
    };
    // Plain data: encoding cannot fail; an empty value would only mean "rebuild next time".
    serde_json::to_vec(&serde_json::json!({ KEY: entry })).unwrap_or_default()
}

/// The framework hands the resource its private state decoded, and stores what it returns.
impl Private for ClusterState {
    fn decode(bytes: &[u8]) -> Option<Self> {
        decode(bytes)
    }
    fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_the_first_format() {
        let mut state = ClusterState::new("local");
        state.cluster_id = "0123456789abcdef".into();
        state.name = "demo".into();
        assert_eq!(decode(&encode(&state)), Some(state.clone()));
        // What providers before cluster ids stored.
        let legacy = serde_json::to_vec(&ClusterState::new("local")).unwrap();
        assert_eq!(decode(&legacy), Some(ClusterState::new("local")));
    }

    #[test]
    fn unreadable_or_newer_state_means_rebuild() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"not json"), None);
        let newer = serde_json::json!({ KEY: { "format": FORMAT + 1, "state": ClusterState::new("local") } });
        assert_eq!(decode(&serde_json::to_vec(&newer).unwrap()), None);
    }
}
