//! The driver a `redisha_sentinel` names and the request it plans on: the zones as written
//! (local), or the subnets' zones with candidate instances `<zone>-1`, `<zone>-2`, ... of the
//! instance type's memory (aws), as for `redisha_cluster`; the planner decides which
//! candidates get a data node or a sentinel, and only those become instances.

use redisha_aws::AwsDriver;
use redisha_cluster::sentinel::SentinelState;
use redisha_cluster::{Driver, LocalDriver};
use redisha_planner::Request;
use tracing::info;

use crate::provider_config::aws_settings;
use crate::resources::cluster::args::DriverArgs;
use crate::resources::cluster::drivers::{aws_config, aws_diags, aws_request_with};
use crate::tfplugin::diagnostics::{Diagnostic, Diagnostics};
use crate::tfplugin::framework::Context;

use super::args::SentinelArgs;

pub enum SentinelDriver {
    Local(LocalDriver),
    // Boxed: the AWS clients and config are much larger than the local driver.
    Aws(Box<AwsDriver>),
}

impl SentinelDriver {
    pub fn driver(&self) -> &dyn Driver {
        match self {
            SentinelDriver::Local(d) => d,
            SentinelDriver::Aws(d) => d.as_ref(),
        }
    }

    /// Deletes everything the driver made, when it has its own way to (`None`: the operator
    /// stops and wipes process by process). AWS terminates every instance carrying the
    /// deployment's id in its VPC (their processes go with them), then deletes its security
    /// group, its SSM parameters (the node and sentinel passwords) and the nodes' role.
    pub async fn destroy_all(&self, state: &SentinelState) -> Option<Result<(), Diagnostics>> {
        let SentinelDriver::Aws(d) = self else {
            return None;
        };
        d.remember_hosts(&state.hosts).await;
        Some(match d.destroy().await {
            Ok(report) => {
                info!(
                    instances = report.terminated.len(),
                    security_group_deleted = report.security_group_deleted,
                    "aws sentinel deployment destroyed"
                );
                Ok(())
            }
            Err(e) => Err(aws_diags(e)),
        })
    }
}

/// The driver for `args` (acting for `cluster_id` when given: at plan of a create there is
/// none yet) and the planner request. Hosts of `running` stay candidates on aws, so the
/// planner re-plans from what runs.
pub async fn build(
    ctx: &Context,
    args: &SentinelArgs,
    cluster_id: Option<&str>,
    running: Option<&SentinelState>,
) -> Result<(SentinelDriver, Request), Diagnostics> {
    match &args.driver {
        DriverArgs::Local(config) => {
            let driver = LocalDriver::new(config.clone());
            let driver = match cluster_id {
                Some(id) => driver
                    .with_cluster(id, &args.name)
                    .map_err(|e| Diagnostic::error("Invalid cluster id", e.to_string()))?,
                None => driver,
            };
            Ok((SentinelDriver::Local(driver), args.request.clone()))
        }
        DriverArgs::Aws(aws) => {
            let settings = aws_settings(ctx, "redisha_sentinel's aws driver")?;
            let config = aws_config(&args.name, aws, &args.timeouts)?;
            let driver = AwsDriver::new(&settings, config).await.map_err(aws_diags)?;
            let known: Vec<String> = running
                .into_iter()
                .flat_map(|s| {
                    s.hosts.iter().map(|h| h.name.clone()).chain(
                        s.data
                            .iter()
                            .chain(&s.sentinels)
                            .map(|m| m.handle.host.clone()),
                    )
                })
                .collect();
            if let Some(state) = running {
                driver.remember_hosts(&state.hosts).await;
            }
            let request = aws_request_with(&driver, &args.request, aws, &known).await?;
            let driver = match cluster_id {
                Some(id) => driver
                    .with_cluster_id(id, &args.name)
                    .map_err(|e| Diagnostic::error("Invalid cluster id", e.to_string()))?,
                None => driver,
            };
            Ok((
                SentinelDriver::Aws(Box::new(driver.for_sentinel_mode())),
                request,
            ))
        }
    }
}
