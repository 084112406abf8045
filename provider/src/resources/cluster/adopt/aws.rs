//! Adoption by an `aws { }` configuration. The import named the cluster id; the instances
//! carrying it in the configured subnets' VPC, and the node records on them, say where each
//! node runs (the same lookup that rebuilds a lost private state, `locate`). Each planned node
//! must then be a running node of the imported cluster with the same role and slots.

use redisha_cluster::{ClusterState, Password};

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::Context;

use super::super::args::ClusterArgs;
use super::super::drivers::{self, aws_diags, BuiltDriver};
use super::super::{locate, place};
use super::{mismatch, none_left_over, running_as_planned};

const FIX: &str = "describe the cluster as it was created (the same shards, replicas, \
    node_memory_mb, aws.subnet_ids, aws.instance_type and aws.max_nodes_per_instance)";

pub(super) async fn adopt(
    ctx: &Context,
    args: &ClusterArgs,
    imported: &ClusterState,
    [password, other_password]: [Option<Password>; 2],
) -> Result<ClusterState, Diagnostics> {
    let id = imported.cluster_id.as_str();
    if id.is_empty() {
        return Err(Diagnostic::error(
            "An aws cluster is imported by its cluster id",
            "This import named only a node's address, which says nothing about which instances are the cluster's. Fix: `terraform state rm` the resource, then `terraform import` it as CLUSTER_ID@HOST:PORT (the `cluster_id` of the redisha_cluster that created it, also the redisha:cluster-id tag of its instances, then one node's address). Nothing was changed.",
        )
        .into());
    }
    let (driver, _) = drivers::build(ctx, args, None).await?;
    let driver = driver.for_cluster(id, &args.name).await?;
    check_instances(&driver, args, id).await?;

    // The cluster as the driver finds it by its id, with the live node ids and slots.
    let mut state = ClusterState::new(driver.driver().kind());
    state.cluster_id = id.to_string();
    state.name = args.name.clone();
    let op = locate::operator(
        &driver,
        args,
        password,
        other_password,
        locate::options(ctx, args.timeouts.update, false),
    );
    op.recover(&mut state).await.map_err(|e| {
        Diagnostics::from(Diagnostic::error(
            "Cannot read the imported cluster",
            e.to_string(),
        ))
    })?;
    drop(op);

    // The plan from what runs (its hosts are candidates): each planned node must be running.
    let (_, request) = drivers::build(ctx, args, Some(&state)).await?;
    let placement = place(&request, Some(&state))?.placement;
    let mut matched = Vec::new();
    for planned in &placement.nodes {
        let found = state.nodes.iter().find(|n| n.name == planned.name);
        let Some(node) = found else {
            let recorded: Vec<&str> = state.nodes.iter().map(|n| n.name.as_str()).collect();
            return Err(mismatch(
                format!(
                    "planned node {} ({} in {}): no instance of cluster id {id} runs it (they run {})",
                    planned.name,
                    planned.role.as_str(),
                    planned.zone,
                    if recorded.is_empty() { "none".to_string() } else { recorded.join(", ") }
                ),
                FIX,
            )
            .into());
        };
        let address = node.address();
        running_as_planned(imported, planned, &address, FIX)?;
        matched.push(address);
    }
    none_left_over(imported, &matched, FIX)?;
    Ok(state)
}

/// Refuses, naming the fix, an id that no instance of the configured VPC carries, and a
/// configured name that differs from the one its instances carry: adopting either would take
/// over nothing, or another cluster's nodes.
async fn check_instances(
    driver: &BuiltDriver,
    args: &ClusterArgs,
    id: &str,
) -> Result<(), Diagnostics> {
    let BuiltDriver::Aws(aws) = driver else {
        return Err(Diagnostic::error(
            "The aws driver was not built for an aws configuration",
            "This is a bug in the provider; please report it.",
        )
        .into());
    };
    let carriers = aws.carriers_of_id().await.map_err(aws_diags)?;
    if carriers.instances.is_empty() {
        return Err(Diagnostic::error(
            format!("No instance carries cluster id {id}"),
            format!(
                "No running or stopped instance in VPC {} (the VPC of aws.subnet_ids) carries the tag redisha:cluster-id = {id}. Fix: check the id given to `terraform import` (the `cluster_id` of the redisha_cluster that created the cluster) and that aws.subnet_ids are subnets of the cluster's VPC; then `terraform state rm` the resource and import it again as CLUSTER_ID@HOST:PORT. Nothing was changed.",
                carriers.vpc_id
            ),
        )
        .at(AttrPath::attr("aws").then("subnet_ids"))
        .into());
    }
    if !carriers.names.contains(&args.name) || carriers.names.len() > 1 {
        let names: Vec<String> = carriers.names.iter().map(|n| format!("{n:?}")).collect();
        return Err(Diagnostic::error(
            "The imported cluster has another name",
            format!(
                "The instances carrying cluster id {id} in VPC {} are named {} (tag redisha:cluster), but the configuration says name = {:?}. Fix: set name to the name the cluster was created with. Nothing was changed.",
                carriers.vpc_id,
                names.join(", "),
                args.name
            ),
        )
        .at(AttrPath::attr("name"))
        .into());
    }
    Ok(())
}
