//! Making a sentinel deployment's state say what exists, as `crate::recover` does for cluster
//! mode. Terraform's private state is only a cache: a provider killed mid-apply drops it (or
//! keeps one from before the apply). Every process the driver started carries a record with
//! the deployment's id (local: `redisha-node.json` in its directory, written before the
//! process starts), so the driver finds them all; the record says which are sentinels (their
//! node index), where they run and which data node was planned as the primary.

use std::collections::BTreeSet;

use redisha_planner::Role;
use tracing::info;

use crate::driver::{HostHandle, NodeHandle, ProcessState};
use crate::error::Result;
use crate::identity::NodeRecord;

use super::{Member, SentinelOperator, SentinelState, SENTINEL_INDEX_BASE};

impl SentinelOperator<'_> {
    /// Rebuilds `state` from what the driver finds carrying the deployment's id; returns one
    /// line per change, for the log. Reads only. A process the state names stays unless the
    /// driver neither finds its record nor sees it run (only then is it proven gone).
    pub async fn recover(&self, state: &mut SentinelState) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        if self.cluster_id.is_empty() {
            return Ok(notes);
        }
        let Some(found) = self.op.driver.discover(&self.cluster_id).await? else {
            return Ok(notes);
        };
        let names: BTreeSet<&str> = found.iter().map(|(h, _)| h.name.as_str()).collect();
        let mut gone = BTreeSet::new();
        for m in state
            .data
            .iter()
            .chain(&state.sentinels)
            .filter(|m| !names.contains(m.handle.name.as_str()))
        {
            if self.op.driver.inspect_node(&m.handle).await? == ProcessState::Stopped {
                gone.insert(m.handle.name.clone());
            }
        }
        merge_found(state, found, &gone, &mut notes);
        for note in &notes {
            info!(cluster_id = %self.cluster_id, %note, "sentinel deployment recovered from the driver");
        }
        Ok(notes)
    }
}

/// Processes the driver found join the state (or refresh their handles); `gone` ones leave it.
fn merge_found(
    state: &mut SentinelState,
    found: Vec<(NodeHandle, NodeRecord)>,
    gone: &BTreeSet<String>,
    notes: &mut Vec<String>,
) {
    for list in [&mut state.data, &mut state.sentinels] {
        list.retain(|m| {
            let keep = !gone.contains(&m.handle.name);
            if !keep {
                notes.push(format!(
                    "{} has neither record nor process left: dropped from state",
                    m.handle.name
                ));
            }
            keep
        });
    }
    // The record's role is the plan's when the process started: it names the planned primary
    // when the state knows none (lost, or the one it knew is gone).
    let mut recorded_primary = None;
    for (handle, record) in found {
        if state.host(&record.host).is_none() {
            state.hosts.push(HostHandle::of_record(&record, &handle.ip));
        }
        let sentinel = record.index_on_host >= SENTINEL_INDEX_BASE;
        if !sentinel && record.role == Role::Master {
            recorded_primary = Some(record.name.clone());
        }
        let list = if sentinel {
            &mut state.sentinels
        } else {
            &mut state.data
        };
        match list.iter_mut().find(|m| m.handle.name == record.name) {
            // Only what the driver sees now: the cached handle may carry more than a
            // record tells (the config file a driver dispatches on).
            Some(m) => m.handle.pid = handle.pid,
            None => {
                notes.push(format!(
                    "{} {} found on host {} (zone {}): taken into state",
                    if sentinel { "sentinel" } else { "data node" },
                    record.name,
                    record.host,
                    record.zone
                ));
                list.push(Member {
                    handle,
                    zone: record.zone,
                    planned_primary: false,
                });
            }
        }
    }
    if state.planned_primary().is_none() {
        if let Some(m) = state
            .data
            .iter_mut()
            .find(|m| Some(&m.handle.name) == recorded_primary.as_ref())
        {
            notes.push(format!(
                "{} is the planned primary (its record says so)",
                m.handle.name
            ));
            m.planned_primary = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(name: &str, host: &str, index: u16, role: Role) -> (NodeHandle, NodeRecord) {
        let handle = NodeHandle {
            name: name.into(),
            host: host.into(),
            ip: "127.0.9.1".into(),
            port: 7000 + index,
            index_on_host: index,
            pid: Some(42),
            config_file: None,
            data_dir: None,
        };
        let record = NodeRecord {
            format: crate::identity::RECORD_FORMAT,
            cluster_id: "0123456789abcdef".into(),
            cluster_name: "orders".into(),
            name: name.into(),
            shard: 0,
            role,
            zone: "zone-a".into(),
            host: host.into(),
            address: "127.0.9.1".into(),
            index_on_host: index,
        };
        (handle, record)
    }

    #[test]
    fn a_lost_state_is_rebuilt_with_kinds_and_the_planned_primary_from_the_records() {
        let mut state = SentinelState::default();
        let mut notes = Vec::new();
        merge_found(
            &mut state,
            vec![
                found("data-1", "h1", 0, Role::Master),
                found("data-2", "h2", 0, Role::Replica),
                found("sentinel-1", "h1", SENTINEL_INDEX_BASE, Role::Replica),
            ],
            &BTreeSet::new(),
            &mut notes,
        );
        assert_eq!(state.data.len(), 2);
        assert_eq!(state.sentinels.len(), 1);
        assert_eq!(
            state.planned_primary().map(|m| m.handle.name.as_str()),
            Some("data-1")
        );
        assert_eq!(state.hosts.len(), 2);
        assert_eq!(notes.len(), 4, "{notes:?}");
    }

    #[test]
    fn known_processes_refresh_gone_ones_leave_and_a_record_names_the_lost_primary() {
        let (h1, _) = found("data-1", "h1", 0, Role::Master);
        let (h3, _) = found("data-3", "h3", 0, Role::Replica);
        let mut state = SentinelState {
            hosts: Vec::new(),
            data: vec![
                Member {
                    handle: NodeHandle { pid: None, ..h1 },
                    zone: "zone-a".into(),
                    planned_primary: false,
                },
                Member {
                    handle: h3,
                    zone: "zone-a".into(),
                    planned_primary: true,
                },
            ],
            sentinels: Vec::new(),
        };
        let gone: BTreeSet<String> = ["data-3".to_string()].into();
        let mut notes = Vec::new();
        merge_found(
            &mut state,
            vec![found("data-1", "h1", 0, Role::Master)],
            &gone,
            &mut notes,
        );
        // data-3 was the cached planned primary and is gone: data-1's record names it.
        assert_eq!(state.data.len(), 1);
        assert_eq!(state.data[0].handle.pid, Some(42));
        assert!(state.data[0].planned_primary);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn a_cached_planned_primary_is_kept_over_an_older_record() {
        let (h1, _) = found("data-1", "h1", 0, Role::Master);
        let (h2, _) = found("data-2", "h2", 0, Role::Replica);
        let member = |handle: NodeHandle, planned_primary| Member {
            handle,
            zone: "zone-a".into(),
            planned_primary,
        };
        let mut state = SentinelState {
            hosts: Vec::new(),
            data: vec![member(h1, false), member(h2, true)],
            sentinels: Vec::new(),
        };
        let mut notes = Vec::new();
        merge_found(
            &mut state,
            vec![
                found("data-1", "h1", 0, Role::Master),
                found("data-2", "h2", 0, Role::Replica),
            ],
            &BTreeSet::new(),
            &mut notes,
        );
        assert_eq!(
            state.planned_primary().map(|m| m.handle.name.as_str()),
            Some("data-2")
        );
        assert!(state.data.iter().filter(|m| m.planned_primary).count() == 1);
    }
}
