//! Hosts whose machine is lost (aws: an instance terminated or stopped outside redisha). The
//! driver proves it ([`crate::Driver::lost_hosts`]): nothing on such a host answers, and no
//! sentinel vote is needed to say so. The host is provisioned again with the processes it ran
//! (same names, indexes and planned roles, so the new machine carries their records from its
//! first moment), and `repair` then starts each of them there.

use std::collections::BTreeSet;

use redisha_planner::{Request, Role};
use tracing::info;

use crate::driver::{HostPlan, NodePlan};
use crate::error::Result;
use crate::state::locate_host;

use super::{Member, SentinelOperator, SentinelState};

impl SentinelOperator<'_> {
    /// Provisions again every host of `state` whose machine the driver proves lost, and every
    /// host a process names that the state has no handle for; returns the names of the
    /// processes that ran there (all of them stopped for sure, to be started by
    /// [`SentinelOperator::repair_replaced`]).
    pub async fn replace_lost_hosts(
        &self,
        request: &Request,
        state: &mut SentinelState,
    ) -> Result<BTreeSet<String>> {
        let driver = self.op.driver;
        let mut lost: BTreeSet<String> =
            driver.lost_hosts(&state.hosts).await?.into_iter().collect();
        for m in state.data.iter().chain(&state.sentinels) {
            if state.host(&m.handle.host).is_none() {
                lost.insert(m.handle.host.clone());
            }
        }
        let mut replaced = BTreeSet::new();
        for host in &lost {
            let members: Vec<&Member> = state
                .data
                .iter()
                .chain(&state.sentinels)
                .filter(|m| &m.handle.host == host)
                .collect();
            if members.is_empty() {
                // Runs nothing: a shape change removes it, nothing needs it back.
                continue;
            }
            let (zone_index, host_index, zone) = locate_host(request, host)?;
            let plan = HostPlan {
                name: host.clone(),
                zone,
                zone_index,
                host_index,
                nodes: members.iter().map(|m| process_plan(m)).collect(),
            };
            info!(host = %host, "the host's machine is gone or stopped: provisioning it again");
            let handle = driver.provision_host(&plan, &self.op.config).await?;
            replaced.extend(members.iter().map(|m| m.handle.name.clone()));
            state.hosts.retain(|h| &h.name != host);
            state.hosts.push(handle);
        }
        Ok(replaced)
    }
}

/// A running process as the plan that starts it again: its index, and the planned primary's
/// role, which its record keeps.
pub(super) fn process_plan(m: &Member) -> NodePlan {
    NodePlan {
        name: m.handle.name.clone(),
        index_on_host: m.handle.index_on_host,
        shard: 0,
        role: if m.planned_primary {
            Role::Master
        } else {
            Role::Replica
        },
    }
}
