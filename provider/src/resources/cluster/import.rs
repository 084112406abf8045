//! ImportResourceState: a running cluster found from one node's address (and, for a cluster
//! the aws driver made, its cluster id). The first plan and apply with a configuration adopt
//! it (`adopt`).

use redisha_cluster::conn::split_address;
use redisha_cluster::identity::is_cluster_id;
use redisha_cluster::{ClusterState, Options, Password};
use redisha_planner::Role;

use crate::tfplugin::diagnostics::{Diagnostic, Diagnostics};
use crate::tfplugin::framework::{Applied, Attr};
use crate::topology::TopologyModel;

use super::model::ClusterModel;
use super::{cluster_error, id_value, nodes, with_cluster};

/// What an import id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportId {
    /// `CLUSTER_ID@` of the aws form: the id every instance of the cluster is tagged with.
    pub cluster_id: Option<String>,
    /// One node's `host:port`, from which the running cluster is read.
    pub address: String,
}

/// The two accepted forms, for the diagnostic of an id that is neither.
const FORMS: &str = "import a cluster by one node's address: HOST:PORT for the local driver \
    (e.g. 127.0.1.1:7000), or CLUSTER_ID@HOST:PORT for the aws driver (the `cluster_id` of the \
    redisha_cluster that created it, then one node's address, e.g. 0123456789abcdef@10.0.1.12:6379); \
    set REDISHA_PASSWORD if the cluster has a password";

/// Parses `HOST:PORT` or `CLUSTER_ID@HOST:PORT`.
pub fn parse_import_id(id: &str) -> Result<ImportId, Diagnostic> {
    let invalid = |why: String| {
        Diagnostic::error("Invalid import id", format!("{id:?}: {why}. Fix: {FORMS}."))
    };
    let (cluster_id, address) = match id.split_once('@') {
        Some((cluster_id, address)) => {
            if !is_cluster_id(cluster_id) {
                return Err(invalid(format!(
                    "{cluster_id:?} is not a cluster id (16 lowercase hex digits)"
                )));
            }
            (Some(cluster_id.to_string()), address)
        }
        None => (None, id),
    };
    match split_address(address) {
        Some((host, _)) if !host.is_empty() => Ok(ImportId {
            cluster_id,
            address: address.to_string(),
        }),
        _ => Err(invalid(format!("{address:?} is not a host:port address"))),
    }
}

pub(super) async fn import(
    id: &str,
) -> Result<Vec<Applied<ClusterModel, ClusterState>>, Diagnostics> {
    // The password, if any, comes from the environment so that it never appears on a
    // command line.
    let password = std::env::var("REDISHA_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(Password::new);
    let ImportId {
        cluster_id,
        address,
    } = parse_import_id(id)?;
    let mut state =
        redisha_cluster::health::import(&address, password.as_ref(), &Options::default())
            .await
            .map_err(|e| Diagnostics::from(cluster_error("Cannot import the cluster", e)))?;
    // Checked at the first plan, where the configuration says where to look for it.
    state.cluster_id = cluster_id.unwrap_or_default();
    let shards = state
        .nodes
        .iter()
        .filter(|n| n.role == Role::Master)
        .count();
    // Only what the cluster tells: the configuration fills in the rest at the first plan.
    let known = ClusterModel {
        password: password.as_ref().map(|p| p.expose().to_string()).into(),
        topology: TopologyModel {
            shards: Attr::Known(u32::try_from(shards).unwrap_or(u32::MAX)),
            ..TopologyModel::default()
        },
        ..ClusterModel::default()
    };
    let imported = with_cluster(
        &known,
        Attr::Known(id.to_string()),
        id_value(&state),
        nodes::recorded(&state),
        String::new().into(),
    );
    Ok(vec![Applied {
        state: imported,
        private: Some(state),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_alone_is_the_local_form() {
        assert_eq!(
            parse_import_id("127.0.1.1:7000"),
            Ok(ImportId {
                cluster_id: None,
                address: "127.0.1.1:7000".into()
            })
        );
    }

    #[test]
    fn a_cluster_id_before_the_address_is_the_aws_form() {
        assert_eq!(
            parse_import_id("0123456789abcdef@10.0.1.12:6379"),
            Ok(ImportId {
                cluster_id: Some("0123456789abcdef".into()),
                address: "10.0.1.12:6379".into()
            })
        );
        // An IPv6 node address keeps its brackets for the connection.
        assert_eq!(
            parse_import_id("0123456789abcdef@[fd00::12]:6379").map(|i| i.address),
            Ok("[fd00::12]:6379".into())
        );
    }

    #[test]
    fn bad_ids_name_the_problem_and_both_forms() {
        for (id, problem) in [
            (
                "not-an-address",
                "\"not-an-address\" is not a host:port address",
            ),
            ("127.0.1.1:notaport", "is not a host:port address"),
            (":7000", "\":7000\" is not a host:port address"),
            ("0123456789ABCDEF@10.0.1.12:6379", "is not a cluster id"),
            ("abc@10.0.1.12:6379", "\"abc\" is not a cluster id"),
            ("@10.0.1.12:6379", "\"\" is not a cluster id"),
            ("0123456789abcdef@", "\"\" is not a host:port address"),
            ("0123456789abcdef@10.0.1.12", "is not a host:port address"),
        ] {
            let d = parse_import_id(id).expect_err(id);
            assert_eq!(d.summary, "Invalid import id");
            assert!(d.detail.contains(problem), "{id}: {}", d.detail);
            assert!(
                d.detail.contains("HOST:PORT for the local driver"),
                "{}",
                d.detail
            );
            assert!(
                d.detail.contains("CLUSTER_ID@HOST:PORT for the aws driver"),
                "{}",
                d.detail
            );
        }
    }
}
