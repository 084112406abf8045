//! A `redisha_cluster` on the aws driver, read from a Terraform state: the `aws { }` block
//! becomes the driver's configuration, `name` and `cluster_id` scope every EC2 lookup (name and
//! id tags in the subnets' VPC, as the provider's), and the nodes are found again the way every
//! apply finds them (`Operator::recover`: the node records in the instances' tags, then the
//! live cluster). The failure is StopInstances of a zone's or a host's instances.
//!
//! What the state does not hold comes from the standard AWS places, as for the provider: the
//! region (`--region`, else `AWS_REGION` or the profile's), credentials (environment, profile,
//! SSO, instance role), an endpoint override (`--endpoint`, else `AWS_ENDPOINT_URL`). The
//! password comes from the environment only.

use std::path::{Path, PathBuf};

use redisha_aws::{AwsDriver, AwsDriverConfig, AwsSettings, DataVolume};
use redisha_cluster::{ClusterState, Driver, NodeConfig, Operator, Options, Password};
use redisha_planner::Request;
use serde_json::Value;

use crate::error::{DrillError, Result};
use crate::target::{need, node_names, number, redis_config_of, shape_of, single, StateFile};
use crate::target::{with_persistence, PASSWORD_ENV};

/// A `redisha_cluster` with an `aws { }` block.
#[derive(Debug, Clone)]
pub struct AwsTarget {
    pub state_file: PathBuf,
    /// The resource's address in the state (`redisha_cluster.NAME`).
    pub address: String,
    pub name: String,
    pub cluster_id: String,
    /// The configuration's shape; the zones and candidate hosts come from EC2 at
    /// [`AwsTarget::locate`], as the provider makes them.
    pub shape: Request,
    pub config: AwsDriverConfig,
    pub max_nodes_per_instance: Option<u32>,
    /// `redis_config` with the persistence settings, and the password (from the environment).
    pub node_config: NodeConfig,
    /// Node names as Terraform last saw them (`nodes`).
    pub nodes: Vec<String>,
    /// Where the record of stopped instances is kept: the Terraform working directory.
    pub record_dir: PathBuf,
}

/// Where the drill reaches EC2: the region and an endpoint override, if any.
#[derive(Debug, Clone, Default)]
pub struct AwsConnection {
    /// `None`: the SDK's region chain (`AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's).
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

impl AwsTarget {
    pub(crate) fn parse(
        state: &StateFile,
        res: &Value,
        password: Option<Password>,
    ) -> Result<AwsTarget> {
        let (attrs, address) = state.instance(res)?;
        parse(attrs, address, &state.working_dir, password)
            .map(|t| AwsTarget {
                state_file: state.path.clone(),
                ..t
            })
            .map_err(|r| state.bad(r))
    }

    /// The aws driver of this cluster, the planner request the provider plans it with, and its
    /// state rebuilt from EC2 and the live cluster.
    pub async fn locate(
        &self,
        connection: &AwsConnection,
        options: Options,
    ) -> Result<(AwsDriver, Request, ClusterState)> {
        let settings = settings(connection).await?;
        let driver = AwsDriver::new(&settings, self.config.clone())
            .await?
            .with_cluster_id(&self.cluster_id, &self.name)?;
        let mut state = ClusterState {
            cluster_id: self.cluster_id.clone(),
            name: self.name.clone(),
            ..ClusterState::new(driver.kind())
        };
        Operator::with_options(&driver, self.node_config.clone(), options)
            .recover(&mut state)
            .await?;
        let bad = |reason: String| DrillError::Target {
            path: self.state_file.clone(),
            reason,
        };
        if state.nodes.is_empty() {
            return Err(bad(format!(
                "no instance carries cluster_id {} and the name {:?} in the VPC of the subnets {:?} (region {}): is this the right region and account?",
                self.cluster_id, self.name, self.config.subnet_ids, settings.region
            )));
        }
        let missing: Vec<&String> = self
            .nodes
            .iter()
            .filter(|n| state.node(n).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(bad(format!(
                "nodes {missing:?} of the state are on no instance of the cluster; run `terraform apply` first"
            )));
        }
        let known: Vec<String> = state
            .nodes
            .iter()
            .map(|n| n.host.clone())
            .chain(state.hosts.iter().map(|h| h.name.clone()))
            .collect();
        let request = redisha_aws::candidates::planner_request(
            &driver,
            &self.shape,
            self.max_nodes_per_instance,
            &known,
        )
        .await?;
        Ok((driver, request, state))
    }
}

/// The provider's connection settings, from the command line and the SDK's chain.
async fn settings(connection: &AwsConnection) -> Result<AwsSettings> {
    use aws_config::meta::region::ProvideRegion;
    let region = match &connection.region {
        Some(r) => r.clone(),
        None => aws_config::default_provider::region::default_provider()
            .region()
            .await
            .map(|r| r.as_ref().to_string())
            .ok_or_else(|| {
                DrillError::Failure(
                    "no AWS region: pass --region (the provider's `region`) or set AWS_REGION"
                        .into(),
                )
            })?,
    };
    let settings = AwsSettings {
        region,
        endpoint: connection.endpoint.clone(),
        assume_role: None,
    };
    settings.validate()?;
    Ok(settings)
}

fn parse(
    attrs: &Value,
    address: String,
    working_dir: &Path,
    password: Option<Password>,
) -> std::result::Result<AwsTarget, String> {
    let text = |key: &str| attrs[key].as_str().map(str::to_string);
    let name = text("name").ok_or(format!("{address}: no `name`"))?;
    let cluster_id = text("cluster_id").ok_or(format!("{address}: no `cluster_id`"))?;
    if password.is_none() {
        // The aws driver always has one (the provider requires it).
        return Err(format!(
            "{address} runs on the aws driver, whose clusters always have a password: export it in {PASSWORD_ENV} (never on the command line)"
        ));
    }
    let aws = single(&attrs["aws"]);
    let (config, max_nodes_per_instance) =
        driver_config(aws, &name).map_err(|e| format!("{address}: aws.{e}"))?;
    let redis_config =
        with_persistence(attrs, redis_config_of(attrs)).map_err(|e| format!("{address}: {e}"))?;
    let shape =
        shape_of(attrs, need(attrs, "shards")? as u32).map_err(|e| format!("{address}: {e}"))?;
    Ok(AwsTarget {
        state_file: PathBuf::new(),
        address,
        name,
        cluster_id,
        shape,
        config,
        max_nodes_per_instance,
        node_config: NodeConfig {
            password,
            redis_config,
            acl: Default::default(),
        },
        nodes: node_names(attrs),
        record_dir: working_dir.to_path_buf(),
    })
}

/// The driver's configuration from the `aws { }` block, as the provider builds it (plus, in
/// test builds only, the address map to loopback stand-ins), and `max_nodes_per_instance`.
fn driver_config(
    aws: &Value,
    name: &str,
) -> std::result::Result<(AwsDriverConfig, Option<u32>), String> {
    let text = |key: &str| aws[key].as_str().map(str::to_string);
    let texts = |key: &str| -> Vec<String> {
        aws[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut config = AwsDriverConfig::new(
        name,
        texts("subnet_ids"),
        text("instance_type").ok_or("instance_type: missing")?,
        text("ami").ok_or("ami: missing")?,
    );
    if let Some(package) = text("redis_package") {
        config.redis_package = package;
    }
    config.key_name = text("key_name");
    config.allowed_cidrs = texts("allowed_cidrs");
    config.monitoring_cidrs = texts("monitoring_cidrs");
    config.allowed_security_group_ids = texts("allowed_security_group_ids");
    config.placement_group = text("placement_group");
    config.instance_profile = text("instance_profile");
    config.tags = aws["tags"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let volume = single(&aws["data_volume"]);
    if let Some(size) = number(&volume["size_gb"]) {
        config.data_volume = Some(DataVolume {
            size_gib: i32::try_from(size).map_err(|_| "data_volume.size_gb: too large")?,
            encrypted: volume["encrypted"].as_bool().unwrap_or(true),
            kms_key_id: None,
        });
    }
    let max_nodes = number(&aws["max_nodes_per_instance"]).and_then(|m| u32::try_from(m).ok());
    if let Some(max) = max_nodes {
        config.max_nodes_per_host = u16::try_from(max).unwrap_or(u16::MAX);
    }
    // Test builds only (feature `test-address-map`): REDISHA_AWS_TEST_ADDRESS_MAP points hosts
    // at loopback stand-ins. Other builds return the config as it is.
    let config = config.with_test_hooks().map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok((config, max_nodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs() -> Value {
        json!({
            "name": "shop",
            "cluster_id": "00000000000000aa",
            "shards": 3,
            "replicas": 1,
            "node_memory_mb": 256,
            "password": "x",
            "redis_config": { "cluster-node-timeout": "1000" },
            "nodes": [{ "name": "s0-0" }, { "name": "s0-1" }],
            "aws": [{
                "subnet_ids": ["subnet-1", "subnet-2"],
                "instance_type": "t3.small",
                "ami": "ami-1",
                "max_nodes_per_instance": 2,
                "tags": { "team": "sre" },
                "data_volume": [{ "size_gb": 10, "encrypted": null }]
            }]
        })
    }

    #[test]
    fn the_aws_block_becomes_the_drivers_configuration() {
        let t = parse(
            &attrs(),
            "redisha_cluster.shop".into(),
            Path::new("/tf"),
            Some(Password::new("x")),
        )
        .expect("parsed");
        assert_eq!(t.name, "shop");
        assert_eq!(t.cluster_id, "00000000000000aa");
        assert_eq!(t.config.subnet_ids, ["subnet-1", "subnet-2"]);
        assert_eq!(t.config.ami, "ami-1");
        assert_eq!(t.config.max_nodes_per_host, 2);
        assert_eq!(t.max_nodes_per_instance, Some(2));
        assert_eq!(t.config.tags.get("team").map(String::as_str), Some("sre"));
        let volume = t.config.data_volume.expect("a data volume");
        assert_eq!((volume.size_gib, volume.encrypted), (10, true));
        assert!(t.shape.zones.is_empty(), "zones come from the subnets");
        assert_eq!(t.shape.cluster.shards, 3);
        assert_eq!(
            t.node_config
                .redis_config
                .get("cluster-node-timeout")
                .map(String::as_str),
            Some("1000")
        );
        assert_eq!(t.nodes, ["s0-0", "s0-1"]);
        assert_eq!(t.record_dir, Path::new("/tf"));
    }

    #[test]
    fn an_aws_cluster_needs_its_password_from_the_environment() {
        let refused = parse(
            &attrs(),
            "redisha_cluster.shop".into(),
            Path::new("/tf"),
            None,
        )
        .expect_err("refused");
        assert!(refused.contains(PASSWORD_ENV), "{refused}");
    }
}
