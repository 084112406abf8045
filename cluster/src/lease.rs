//! Holding a create: while it runs, its owner rewrites the cluster record with a fresh lease
//! every `LEASE_RENEWAL`. An apply on another machine (which cannot check the owner's pid) may
//! resume the create only once the lease has run out; and if that happened to this owner (it
//! was frozen longer than the lease), it sees another owner on the record and stops at its next
//! checkpoint instead of working beside the new one.

use std::convert::Infallible;

use tracing::warn;

use crate::driver::Driver;
use crate::identity::{ClusterRecord, LEASE_RENEWAL};
use crate::ops::Cancel;

/// Renews `record`'s lease until dropped (run it beside the create with `select!`). Never
/// returns; a failed renewal is logged and tried again at the next tick (the lease outlasts
/// several ticks).
pub async fn hold_create(
    driver: &dyn Driver,
    record: &ClusterRecord,
    cancel: &Cancel,
) -> Infallible {
    let mut lost = false;
    loop {
        tokio::time::sleep(LEASE_RENEWAL).await;
        if lost {
            continue;
        }
        match driver.find_clusters().await {
            Ok(found) => {
                let current = found.iter().find(|r| r.cluster_id == record.cluster_id);
                if let Some(other) = current.filter(|r| !r.is_mine()) {
                    warn!(
                        cluster = %record.name,
                        cluster_id = %record.cluster_id,
                        owner = %other.owner(),
                        "another apply took over this create (this one was held up longer than its lease); stopping at the next checkpoint"
                    );
                    cancel.cancel();
                    lost = true;
                    continue;
                }
            }
            Err(e) => {
                warn!(cluster = %record.name, error = %e, "cannot read the cluster record to renew the create's lease")
            }
        }
        if let Err(e) = driver.record_cluster(&record.clone().owned_now()).await {
            warn!(cluster = %record.name, error = %e, "cannot renew the create's lease; trying again");
        }
    }
}
