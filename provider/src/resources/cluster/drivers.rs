//! Building the driver a `redisha_cluster` names, and the request it plans on. The cluster
//! logic on top is the same for every driver.
//!
//! Local: the zones and hosts are written in the config. AWS: the zones are the zones of
//! `aws.subnet_ids`, and each zone gets candidate instances `<zone>-1`, `<zone>-2`, ... with
//! the instance type's memory; the planner decides which candidates get nodes, and only those
//! become instances.

use redisha_aws::dns_endpoint::EndpointSpec;
use redisha_aws::{AwsDriver, AwsDriverConfig, AwsError, DataVolume, HostStatus};
use redisha_cluster::{ClusterState, Driver, HostPlan, LocalDriver, NodePlan};
use redisha_planner::Request;
use tracing::info;

use crate::aws_errors;
use crate::provider_config::aws_settings;
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics, PathStep};
use crate::tfplugin::framework::Context;

use super::args::{AwsArgs, ClusterArgs, DriverArgs, Timeouts};

/// `Driver::kind` of the local driver, as stored in `ClusterState::driver`.
pub const LOCAL: &str = "local";

pub enum BuiltDriver {
    Local(LocalDriver),
    // Boxed: the EC2 client and config are much larger than the local driver.
    Aws(Box<AwsDriver>),
}

impl BuiltDriver {
    pub fn driver(&self) -> &dyn Driver {
        match self {
            BuiltDriver::Local(d) => d,
            BuiltDriver::Aws(d) => d.as_ref(),
        }
    }

    /// The driver acting for cluster `id`: the local driver puts its nodes under
    /// `<data_dir>/<id>/` and touches nothing that carries another id; the aws driver tags
    /// everything it makes with the id and finds only what carries it in the subnets' VPC.
    pub async fn for_cluster(self, id: &str, name: &str) -> Result<Self, Diagnostics> {
        match self {
            BuiltDriver::Local(d) => {
                let mut d = d
                    .with_cluster(id, name)
                    .map_err(|e| Diagnostic::error("Invalid cluster id", e.to_string()))?;
                // The operator user's password, when the cluster has one already (a create or
                // the first apply after an upgrade makes it: `make_operator_password`).
                d.load_operator_password(false).map_err(|e| {
                    Diagnostic::error("Cannot read the operator user's password", e.to_string())
                })?;
                // The cluster's TLS authority, when it has one already (a create makes it).
                d.load_authority(false).map_err(|e| {
                    Diagnostic::error("Cannot read the certificate authority", e.to_string())
                        .at(crate::tfplugin::diagnostics::AttrPath::attr("tls"))
                })?;
                Ok(BuiltDriver::Local(d))
            }
            BuiltDriver::Aws(d) => {
                let d = d
                    .with_cluster_id(id, name)
                    .map_err(|e| Diagnostic::error("Invalid cluster id", e.to_string()))?;
                // The operator user's password and the TLS authority, when SSM keeps them
                // already (a create makes them: `make_operator_password`, `make_authority`).
                d.load_security(false, false).await.map_err(|e| {
                    Diagnostics::from(Diagnostic::error(
                        "Cannot read the cluster's secrets from SSM",
                        e.to_string(),
                    ))
                })?;
                Ok(BuiltDriver::Aws(Box::new(d)))
            }
        }
    }

    /// Makes the cluster's TLS authority if TLS is on and it has none yet (a create, before
    /// any node starts).
    pub async fn make_authority(&mut self) -> Result<(), Diagnostics> {
        let made = match self {
            BuiltDriver::Local(d) => d
                .load_authority(true)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            BuiltDriver::Aws(d) if d.tls_wanted() => d
                .load_security(false, true)
                .await
                .map_err(|e| e.to_string()),
            BuiltDriver::Aws(_) => Ok(()),
        };
        made.map_err(|e| {
            Diagnostic::error("Cannot make the certificate authority", e)
                .at(crate::tfplugin::diagnostics::AttrPath::attr("tls"))
                .into()
        })
    }

    /// Makes the password of the user redisha works as (`redisha-operator`) if the cluster has
    /// none yet: a create before any node starts, or the first apply of a cluster made before
    /// the operator user existed. The aws driver makes it (in SSM) once the cluster declares
    /// users or switches `default` off; until then redisha works as `default` there.
    pub async fn make_operator_password(
        &mut self,
        args: &ClusterArgs,
    ) -> Result<bool, Diagnostics> {
        let had = self.driver().operator_password().is_some();
        let made = match self {
            BuiltDriver::Local(d) => d
                .load_operator_password(true)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            BuiltDriver::Aws(d) => {
                let acl = &args.node_config.acl;
                if (!acl.users.is_empty() || acl.default_user_disabled) && !had {
                    d.load_security(true, false)
                        .await
                        .map_err(|e| e.to_string())
                } else {
                    Ok(())
                }
            }
        };
        made.map_err(|e| Diagnostic::error("Cannot make the operator user's password", e))?;
        // Whether this call made it (a cluster without one before).
        Ok(!had && self.driver().operator_password().is_some())
    }

    /// The certificate of the cluster's TLS authority, once loaded.
    pub fn tls_ca_cert(&self) -> Option<String> {
        match self {
            BuiltDriver::Local(d) => d.tls().map(|t| t.source.ca_cert_pem().to_string()),
            BuiltDriver::Aws(d) => d.tls().map(|t| t.source.ca_cert_pem().to_string()),
        }
    }

    /// The address a node will have, when the driver knows it before anything exists.
    pub fn planned_address(&self, host: &HostPlan, node: &NodePlan) -> Option<String> {
        match self {
            BuiltDriver::Local(d) => {
                let ip = d.host_address(host).ok()?;
                let port = d.node_port(node.index_on_host).ok()?;
                Some(format!("{ip}:{port}"))
            }
            // An instance's private address is only known once it runs.
            BuiltDriver::Aws(_) => None,
        }
    }

    /// Starts or ends the local nodes' exporters as `metrics` now says (aws instances run
    /// theirs from user data).
    /// The aws driver's security group rules for the plain-text ports of TLS `preferred`
    /// mode (`AwsDriver::sync_plain_ports`): added in `preferred`, revoked in `required` only
    /// once `rolled` (every node runs the mode). The local driver has no firewall.
    pub async fn sync_plain_ports(&self, rolled: bool) -> Result<(), Diagnostics> {
        match self {
            BuiltDriver::Aws(d) => d.sync_plain_ports(rolled).await.map_err(aws_diags),
            BuiltDriver::Local(_) => Ok(()),
        }
    }

    pub async fn sync_exporters(
        &self,
        state: &ClusterState,
        config: &redisha_cluster::NodeConfig,
    ) -> Result<(), Diagnostics> {
        let BuiltDriver::Local(d) = self else {
            return Ok(());
        };
        for n in &state.nodes {
            d.sync_exporter(&n.handle, config).await.map_err(|e| {
                Diagnostics::from(
                    Diagnostic::error("Cannot start or stop a metrics exporter", e.to_string())
                        .at(AttrPath::attr("metrics")),
                )
            })?;
        }
        Ok(())
    }

    /// At plan: the configuration endpoint's zone exists, is private, is associated with the
    /// subnets' VPC and holds the name.
    pub async fn check_endpoint(&self, spec: Option<&EndpointSpec>) -> Result<(), Diagnostics> {
        match (self, spec) {
            (BuiltDriver::Aws(d), Some(spec)) => d.check_endpoint(spec).await.map_err(aws_diags),
            _ => Ok(()),
        }
    }

    /// At the end of an apply: the configuration endpoint lists the instances in `state`. A
    /// previous endpoint (`prior`, from the state before) that names another record is
    /// withdrawn first, when it is this cluster's. Every step is an upsert or a delete of
    /// what is proven ours, so an interrupted apply is finished by the next one.
    pub async fn publish_endpoint(
        &self,
        spec: Option<&EndpointSpec>,
        prior: Option<&EndpointSpec>,
        state: &ClusterState,
    ) -> Result<(), Diagnostics> {
        let BuiltDriver::Aws(d) = self else {
            return Ok(());
        };
        if let Some(old) = prior {
            let moved = spec.is_none_or(|new| {
                new.fqdn() != old.fqdn() || new.hosted_zone_id != old.hosted_zone_id
            });
            if moved {
                d.withdraw_endpoint(old).await.map_err(aws_diags)?;
            }
        }
        if let Some(spec) = spec {
            d.publish_endpoint(spec, &state.hosts)
                .await
                .map_err(aws_diags)?;
        }
        Ok(())
    }

    /// At destroy: the configuration endpoint's records go first, when they are this
    /// cluster's (clients stop resolving to instances about to be terminated).
    pub async fn withdraw_endpoint(&self, spec: Option<&EndpointSpec>) -> Result<(), Diagnostics> {
        match (self, spec) {
            (BuiltDriver::Aws(d), Some(spec)) => {
                d.withdraw_endpoint(spec).await.map_err(aws_diags)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Compares the hosts in `state` with what exists, and takes out of `state` the hosts whose
    /// machine is gone (a terminated instance) or stopped, so that `Operator::repair` provisions
    /// them again: a replacement instance in the same zone, or the stopped one started.
    /// Returns the names taken out. The local driver's hosts are addresses: nothing to do.
    pub async fn sync_hosts(&self, state: &mut ClusterState) -> Result<Vec<String>, Diagnostics> {
        let BuiltDriver::Aws(d) = self else {
            return Ok(Vec::new());
        };
        if state.hosts.is_empty() {
            return Ok(Vec::new());
        }
        // read_hosts also remembers the instance ids in state, so that of duplicates for a
        // host the one holding its data is kept.
        let statuses = d.read_hosts(&state.hosts).await.map_err(aws_diags)?;
        let mut gone = Vec::new();
        for status in statuses {
            match status {
                HostStatus::Present { .. } => {}
                HostStatus::Missing { name, zone } => {
                    info!(host = %name, zone = %zone, "instance terminated or missing; it will be replaced");
                    gone.push(name);
                }
                HostStatus::Stopped { handle } => {
                    info!(host = %handle.name, "instance stopped; it will be started");
                    gone.push(handle.name);
                }
            }
        }
        state.hosts.retain(|h| !gone.contains(&h.name));
        Ok(gone)
    }

    /// Deletes everything the driver made for the cluster, when the driver has its own way to
    /// do it (`None`: use the generic node-by-node destroy). AWS terminates every instance
    /// tagged with the cluster (terminating stops its nodes), waits, and deletes the security
    /// group; the nodes are not shut down one by one first (their data goes with the volumes).
    pub async fn destroy_all(&self, state: &mut ClusterState) -> Option<Result<(), Diagnostics>> {
        let BuiltDriver::Aws(d) = self else {
            return None;
        };
        d.remember_hosts(&state.hosts).await;
        Some(match d.destroy().await {
            Ok(report) => {
                info!(
                    instances = report.terminated.len(),
                    security_group_deleted = report.security_group_deleted,
                    "aws cluster destroyed"
                );
                state.nodes.clear();
                state.hosts.clear();
                Ok(())
            }
            Err(e) => Err(aws_diags(e)),
        })
    }
}

/// The driver and the planner request for `args`. `state` is what the driver made so far (for
/// AWS: the hosts in it stay candidates, and the driver learns their instance ids).
pub async fn build(
    ctx: &Context,
    args: &ClusterArgs,
    state: Option<&ClusterState>,
) -> Result<(BuiltDriver, Request), Diagnostics> {
    match &args.driver {
        DriverArgs::Local(config) => Ok((
            BuiltDriver::Local(
                LocalDriver::new(config.clone())
                    .with_tls(args.tls)
                    .with_supplied_cert(args.tls_cert.clone()),
            ),
            args.request.clone(),
        )),
        DriverArgs::Aws(aws) => {
            let settings = aws_settings(ctx, "redisha_cluster's aws driver")?;
            let config = aws_config(&args.name, aws, &args.timeouts)?;
            let driver = AwsDriver::new(&settings, config).await.map_err(aws_diags)?;
            driver.set_tls_mode(args.tls);
            driver.set_supplied_cert(args.tls_cert.clone());
            if let Some(state) = state {
                driver.remember_hosts(&state.hosts).await;
            }
            let request = aws_request(&driver, args, aws, state).await?;
            Ok((BuiltDriver::Aws(Box::new(driver)), request))
        }
    }
}

/// `AwsDriverConfig` from the `aws { }` block (plus the test-only address map, see docs).
pub(crate) fn aws_config(
    name: &str,
    aws: &AwsArgs,
    timeouts: &Timeouts,
) -> Result<AwsDriverConfig, Diagnostics> {
    let mut config = AwsDriverConfig::new(
        name,
        aws.subnet_ids.clone(),
        aws.instance_type.clone(),
        aws.ami.clone(),
    );
    if let Some(package) = &aws.redis_package {
        config.redis_package = package.clone();
    }
    config.key_name = aws.key_name.clone();
    config.allowed_cidrs = aws.allowed_cidrs.clone();
    config.monitoring_cidrs = aws.monitoring_cidrs.clone();
    config.allowed_security_group_ids = aws.allowed_security_group_ids.clone();
    config.placement_group = aws.placement_group.clone();
    config.instance_profile = aws.instance_profile.clone();
    config.tags = aws.tags.clone();
    if let Some((size_gb, encrypted)) = aws.data_volume {
        let size_gib = i32::try_from(size_gb).map_err(|_| {
            Diagnostic::error(
                "Invalid size_gb",
                format!("aws.data_volume.size_gb: {size_gb} GiB is over gp3's 16384"),
            )
            .at(AttrPath::attr("aws").then("data_volume").then("size_gb"))
        })?;
        config.data_volume = Some(DataVolume {
            size_gib,
            encrypted,
            kms_key_id: None,
        });
    }
    if let Some(max) = aws.max_nodes_per_instance {
        config.max_nodes_per_host = u16::try_from(max).unwrap_or(u16::MAX);
    }
    config.timeouts = redisha_aws::Timeouts {
        create: timeouts.create,
        update: timeouts.update,
        delete: timeouts.delete,
    };
    // Test builds only: REDISHA_AWS_TEST_ADDRESS_MAP points hosts at loopback stand-ins.
    let config = config.with_test_hooks().map_err(aws_diags)?;
    config.validate().map_err(aws_diags)?;
    Ok(config)
}

/// The planner request for the aws driver: the config's shape, the subnets' zones, and enough
/// candidate instances per zone for the planner to place every node
/// (`redisha_aws::candidates`, which the drill's restore plans with too).
async fn aws_request(
    driver: &AwsDriver,
    args: &ClusterArgs,
    aws: &AwsArgs,
    state: Option<&ClusterState>,
) -> Result<Request, Diagnostics> {
    let known: Vec<String> = state
        .into_iter()
        .flat_map(|s| {
            s.nodes
                .iter()
                .map(|n| n.host.clone())
                .chain(s.hosts.iter().map(|h| h.name.clone()))
        })
        .collect();
    aws_request_with(driver, &args.request, aws, &known).await
}

/// [`aws_request`] for any request (sentinel mode's too): `known` names the hosts that exist.
pub(crate) async fn aws_request_with(
    driver: &AwsDriver,
    base: &Request,
    aws: &AwsArgs,
    known: &[String],
) -> Result<Request, Diagnostics> {
    redisha_aws::candidates::planner_request(driver, base, aws.max_nodes_per_instance, known)
        .await
        .map_err(aws_diags)
}

/// An aws error as a diagnostic on the attribute it names (when this resource has it).
pub fn aws_diags(e: AwsError) -> Diagnostics {
    let summary = match &e {
        AwsError::Api { .. } => "EC2 call failed",
        AwsError::Timeout { .. } => "Timed out waiting for EC2",
        _ => "Invalid aws driver setting",
    };
    // The provider block's settings and the cluster id are not this resource's arguments.
    let ours = |path: &AttrPath| {
        matches!(path.0.first(), Some(PathStep::Attribute(a))
            if ["aws", "name", "timeouts", "redis_config", "configuration_endpoint"].contains(&a.as_str()))
    };
    aws_errors::diagnostic(summary, &e, ours).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_fields_become_this_resources_attribute_paths() {
        use redisha_aws::error::Field;
        let config = |field, message: &str| AwsError::Config {
            field,
            message: message.into(),
        };
        let d = aws_diags(config(Field::MaxNodesPerHost, "must be between 1 and 1000"));
        let d = d.iter().next().expect("a diagnostic");
        assert_eq!(
            d.path,
            Some(AttrPath::attr("aws").then("max_nodes_per_instance"))
        );
        assert_eq!(
            d.detail,
            "aws.max_nodes_per_instance: must be between 1 and 1000"
        );
        let d = aws_diags(config(Field::SubnetIds { index: Some(2) }, "bad"));
        assert_eq!(
            d.iter().next().and_then(|d| d.path.clone()),
            Some(AttrPath::attr("aws").then("subnet_ids").index(2))
        );
        // Settings outside this resource's schema point nowhere.
        for field in [Field::AddressMap, Field::Region] {
            let d = aws_diags(config(field, "bad"));
            assert_eq!(d.iter().next().and_then(|d| d.path.clone()), None);
        }
    }
}
