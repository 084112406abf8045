//! The deployment a drill runs against, read from Terraform: a working directory (its
//! `terraform.tfstate`) or a state file. A `redisha_cluster` is a [`Target`]; a
//! `redisha_sentinel` a [`SentinelTarget`](crate::sentinel::SentinelTarget); [`read_any`]
//! takes whichever the state holds. The state names the deployment (`name`, `cluster_id`), its
//! request (shards, replicas, zones, partitions), its driver settings and `redis_config`.
//! Passwords never come from the state or argv: from environment variables only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redisha_cluster::persistence::Persistence;
use redisha_cluster::{
    ClusterState, LocalConfig, LocalDriver, NodeConfig, Operator, Options, Password,
};
use redisha_planner::{ClusterSpec, HostSpec, PartitionSpec, Request, Spread, ZoneSpec};
use serde_json::Value;

use crate::error::{DrillError, Result};

/// The environment variable the password is read from unless told otherwise.
pub const PASSWORD_ENV: &str = "REDISHA_PASSWORD";

/// A `redisha_cluster` found in a Terraform state.
#[derive(Debug, Clone)]
pub struct Target {
    pub state_file: PathBuf,
    /// The resource's address in the state (`redisha_cluster.NAME`).
    pub address: String,
    pub name: String,
    pub cluster_id: String,
    pub request: Request,
    pub local: LocalConfig,
    /// `redis_config` and the password (from the environment).
    pub node_config: NodeConfig,
    /// Node names as Terraform last saw them (`nodes`).
    pub nodes: Vec<String>,
}

impl Target {
    /// Reads `path` (a Terraform working directory or a state file). `resource` picks one of
    /// several `redisha_cluster` resources by name.
    pub fn read(path: &Path, resource: Option<&str>, password: Option<Password>) -> Result<Self> {
        let state = StateFile::read(path)?;
        let res = state
            .select(&["redisha_cluster"], resource)
            .map_err(|r| state.bad(r))?;
        state.cluster(res, password)
    }

    /// The local driver of this cluster and its state, rebuilt the way the provider rebuilds
    /// it before every apply: the driver's node records plus the live cluster.
    pub async fn locate(&self, options: Options) -> Result<(LocalDriver, ClusterState)> {
        let mut driver =
            LocalDriver::new(self.local.clone()).with_cluster(&self.cluster_id, &self.name)?;
        // The drill's own work (layout checks, the restore) logs in as the operator user, as
        // the provider does: it works with `default` off.
        driver.load_operator_password(false)?;
        let mut state = ClusterState {
            cluster_id: self.cluster_id.clone(),
            name: self.name.clone(),
            ..ClusterState::new("local")
        };
        {
            let op = Operator::with_options(&driver, self.node_config.clone(), options);
            op.recover(&mut state).await?;
        }
        if state.nodes.is_empty() {
            return Err(DrillError::Target {
                path: self.state_file.clone(),
                reason: format!(
                    "no node of cluster_id {} under {}: is the cluster running here?",
                    self.cluster_id,
                    self.local.data_dir.display()
                ),
            });
        }
        let missing: Vec<&String> = self
            .nodes
            .iter()
            .filter(|n| state.node(n).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(DrillError::Target {
                path: self.state_file.clone(),
                reason: format!(
                    "nodes {missing:?} of the state have no record under {}; run `terraform apply` first",
                    self.local.data_dir.display()
                ),
            });
        }
        Ok((driver, state))
    }
}

/// The password from `var`; `None` when it is unset (a cluster without a password).
pub fn password_from_env(var: &str) -> Option<Password> {
    std::env::var(var)
        .ok()
        .filter(|p| !p.is_empty())
        .map(Password::new)
}

/// A read state file: where it is, its document, and the directory relative paths in it
/// (a `data_dir`) are relative to, where Terraform ran.
pub(crate) struct StateFile {
    pub path: PathBuf,
    pub doc: Value,
    pub working_dir: PathBuf,
}

/// What the state holds: a cluster or a sentinel-mode deployment.
pub enum AnyTarget {
    Cluster(Target),
    /// A `redisha_cluster` with an `aws { }` block (boxed: the driver's configuration is
    /// large).
    Aws(Box<crate::aws_target::AwsTarget>),
    Sentinel(crate::sentinel::SentinelTarget),
}

/// The `redisha_cluster` or `redisha_sentinel` of the state at `path` (`resource` picks one
/// by name or address when there are several). `password`: the data nodes';
/// `sentinel_password`: the sentinels' when the deployment gives them their own.
pub fn read_any(
    path: &Path,
    resource: Option<&str>,
    password: Option<Password>,
    sentinel_password: Option<Password>,
) -> Result<AnyTarget> {
    let state = StateFile::read(path)?;
    let res = state
        .select(&["redisha_cluster", "redisha_sentinel"], resource)
        .map_err(|r| state.bad(r))?;
    if res["type"] == "redisha_sentinel" {
        crate::sentinel::SentinelTarget::parse(&state, res, password, sentinel_password)
            .map(AnyTarget::Sentinel)
    } else if !single(&state.instance(res)?.0["aws"]).is_null() {
        crate::aws_target::AwsTarget::parse(&state, res, password)
            .map(|t| AnyTarget::Aws(Box::new(t)))
    } else {
        state.cluster(res, password).map(AnyTarget::Cluster)
    }
}

impl StateFile {
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let state_file = if path.is_dir() {
            path.join("terraform.tfstate")
        } else {
            path.to_path_buf()
        };
        // Absolute, so that the data_dir under it is too: a node's process title names its
        // config file by absolute path, and only a pid whose title names it is ours (the
        // default `--target .` would otherwise find no node running).
        let state_file = std::path::absolute(&state_file).unwrap_or(state_file);
        let bad = |reason: String| DrillError::Target {
            path: state_file.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&state_file)
            .map_err(|e| bad(format!("cannot read it ({e}); run the drill in a Terraform working directory after `terraform apply`, or name the state file")))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a Terraform state (JSON: {e})")))?;
        let working_dir = state_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(StateFile {
            path: state_file,
            doc,
            working_dir,
        })
    }

    pub(crate) fn bad(&self, reason: String) -> DrillError {
        DrillError::Target {
            path: self.path.clone(),
            reason,
        }
    }

    /// The one managed resource of one of `types` (named `resource`, or at that address).
    pub(crate) fn select(
        &self,
        types: &[&str],
        resource: Option<&str>,
    ) -> std::result::Result<&Value, String> {
        let resources = self.doc["resources"]
            .as_array()
            .ok_or("no `resources` in the state: not a Terraform state of format 4")?;
        let address = |r: &Value| {
            format!(
                "{}.{}",
                r["type"].as_str().unwrap_or("?"),
                r["name"].as_str().unwrap_or("?")
            )
        };
        let found: Vec<&Value> = resources
            .iter()
            .filter(|r| r["mode"] == "managed")
            .filter(|r| types.iter().any(|t| r["type"] == *t))
            .filter(|r| resource.is_none_or(|want| r["name"] == want || address(r) == want))
            .collect();
        let kinds = types.join(" or ");
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(match resource {
                Some(r) if r.contains('.') => format!("no {r} in the state"),
                Some(r) => {
                    let at: Vec<String> = types.iter().map(|t| format!("{t}.{r}")).collect();
                    format!("no {} in the state", at.join(" or "))
                }
                None => format!("no {kinds} resource in the state"),
            }),
            _ => {
                let names: Vec<String> = found.iter().map(|r| address(r)).collect();
                Err(format!(
                    "several deployments ({}); choose one with --resource",
                    names.join(", ")
                ))
            }
        }
    }

    /// The attributes of `res`'s one instance, and its address.
    pub(crate) fn instance<'v>(&self, res: &'v Value) -> Result<(&'v Value, String)> {
        let address = format!(
            "{}.{}",
            res["type"].as_str().unwrap_or("?"),
            res["name"].as_str().unwrap_or("?")
        );
        let attrs = &res["instances"][0]["attributes"];
        if attrs.is_null() {
            return Err(self.bad(format!("{address} has no instance in the state")));
        }
        Ok((attrs, address))
    }

    fn cluster(&self, res: &Value, password: Option<Password>) -> Result<Target> {
        let (attrs, address) = self.instance(res)?;
        parse_cluster(attrs, address, &self.working_dir, password)
            .map(|t| Target {
                state_file: self.path.clone(),
                ..t
            })
            .map_err(|r| self.bad(r))
    }
}

fn parse_cluster(
    attrs: &Value,
    address: String,
    working_dir: &Path,
    password: Option<Password>,
) -> std::result::Result<Target, String> {
    let text = |key: &str| attrs[key].as_str().map(str::to_string);
    let name = text("name").ok_or(format!("{address}: no `name`"))?;
    let cluster_id = text("cluster_id").ok_or(format!("{address}: no `cluster_id`"))?;
    if !single(&attrs["aws"]).is_null() {
        return Err(format!(
            "{address} uses the aws driver: read it with `read_any` (an `AwsTarget`), whose drill stops a zone's instances"
        ));
    }
    let mut local = local_of(attrs, working_dir, &name);
    // Nodes the drill restarts get their exporter back, as the provider would start it.
    local.exporter = exporter_of(&attrs["metrics"]);
    if !attrs["password"].is_null() && password.is_none() {
        return Err(format!(
            "{address} has a password: export it in {PASSWORD_ENV} (never on the command line)"
        ));
    }
    let redis_config =
        with_persistence(attrs, redis_config_of(attrs)).map_err(|e| format!("{address}: {e}"))?;
    let request =
        request_of(attrs, need(attrs, "shards")? as u32).map_err(|e| format!("{address}: {e}"))?;
    let nodes = node_names(attrs);
    let acl = crate::state_acl::acl_of(attrs).map_err(|e| format!("{address}: {e}"))?;
    Ok(Target {
        state_file: PathBuf::new(),
        address,
        name,
        cluster_id,
        request,
        local,
        node_config: NodeConfig {
            password,
            redis_config,
            acl,
        },
        nodes,
    })
}

/// `redis_config` with the persistence arguments (`persistence`, `appendfsync`,
/// `min_replicas_*`) merged in as the provider merges them: the nodes run with both, and a
/// node the drill's restore restarts must come back with the same settings.
pub(crate) fn with_persistence(
    attrs: &Value,
    given: BTreeMap<String, String>,
) -> std::result::Result<BTreeMap<String, String>, String> {
    let text = |key: &str| attrs[key].as_str();
    let count = |key: &str| number(&attrs[key]).and_then(|n| u32::try_from(n).ok());
    let explicit = [
        "persistence",
        "appendfsync",
        "min_replicas_to_write",
        "min_replicas_max_lag",
    ]
    .iter()
    .any(|k| !attrs[*k].is_null());
    let persistence = Persistence::parse(
        text("persistence"),
        text("appendfsync"),
        count("min_replicas_to_write"),
        count("min_replicas_max_lag"),
    )
    .map_err(|e| e.to_string())?;
    persistence
        .merge_into(&given, explicit)
        .map_err(|e| e.to_string())
}

/// The `local { }` block (without exporters): a relative `data_dir` is relative to the
/// working directory, the provider's defaults where the block leaves a setting out.
pub(crate) fn local_of(attrs: &Value, working_dir: &Path, name: &str) -> LocalConfig {
    let local = single(&attrs["local"]);
    let data_dir = match local["data_dir"].as_str() {
        Some(d) => working_dir.join(d),
        // The provider's default: `.redisha/<name>` under Terraform's working directory.
        None => working_dir.join(".redisha").join(name),
    };
    LocalConfig {
        data_dir,
        base_port: number(&local["base_port"]).unwrap_or(7000) as u16,
        loopback_octet: number(&local["loopback_octet"]).unwrap_or(0) as u8,
        redis_server: local["redis_server"]
            .as_str()
            .unwrap_or("redis-server")
            .to_string(),
        exporter: None,
    }
}

/// `redis_config` as written.
pub(crate) fn redis_config_of(attrs: &Value) -> BTreeMap<String, String> {
    attrs["redis_config"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The processes' names as Terraform last saw them (`nodes`).
pub(crate) fn node_names(attrs: &Value) -> Vec<String> {
    attrs["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A nested block stored as an object or as a one-element list.
pub(crate) fn single(v: &Value) -> &Value {
    match v {
        Value::Array(a) => a.first().unwrap_or(&Value::Null),
        other => other,
    }
}

pub(crate) fn number(v: &Value) -> Option<u64> {
    v.as_u64()
}

/// A number attribute the resource requires.
pub(crate) fn need(attrs: &Value, key: &str) -> std::result::Result<u64, String> {
    number(&attrs[key]).ok_or(format!("no `{key}`"))
}

/// The planner request the resource was planned with (sentinel mode: one shard, and the
/// caller adds `sentinel`).
pub(crate) fn request_of(attrs: &Value, shards: u32) -> std::result::Result<Request, String> {
    Ok(Request {
        zones: zones_of(attrs)?,
        ..shape_of(attrs, shards)?
    })
}

/// The `zone { host { } }` blocks (the local driver's topology).
fn zones_of(attrs: &Value) -> std::result::Result<Vec<ZoneSpec>, String> {
    let mut zones = Vec::new();
    for z in attrs["zone"].as_array().ok_or("no `zone` blocks")? {
        let mut hosts = Vec::new();
        for h in z["host"].as_array().ok_or("a zone without `host` blocks")? {
            hosts.push(HostSpec {
                name: h["name"].as_str().ok_or("a host without `name`")?.into(),
                memory_mb: number(&h["memory_mb"]).ok_or("a host without `memory_mb`")?,
                max_nodes: number(&h["max_nodes"]).unwrap_or(1) as u32,
                rack: h["rack"].as_str().map(str::to_string),
            });
        }
        zones.push(ZoneSpec {
            name: z["name"].as_str().ok_or("a zone without `name`")?.into(),
            hosts,
        });
    }
    Ok(zones)
}

/// The request without zones: shards, replicas, memory, spread and partitions (on the aws
/// driver the zones and hosts come from EC2).
pub(crate) fn shape_of(attrs: &Value, shards: u32) -> std::result::Result<Request, String> {
    let need = |key: &str| need(attrs, key);
    let spread = match attrs["spread"].as_str() {
        Some(s) => s.parse::<Spread>()?,
        None => Spread::default(),
    };
    let partitions = attrs["partition"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some(PartitionSpec {
                        name: p["name"].as_str()?.into(),
                        side: p["side"]
                            .as_array()?
                            .iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Request {
        cluster: ClusterSpec {
            survive: Default::default(),
            shards,
            replicas: need("replicas")? as u32,
            node_memory_mb: need("node_memory_mb")?,
            spread,
        },
        zones: Vec::new(),
        partitions,
        sentinel: None,
    })
}

/// The local exporters a state's `metrics` block asks for.
fn exporter_of(metrics: &Value) -> Option<redisha_cluster::LocalExporter> {
    let block = single(metrics);
    if block.is_null() {
        return None;
    }
    let mut exporter = redisha_cluster::LocalExporter::default();
    if let Some(binary) = block["exporter"].as_str() {
        exporter.binary = binary.to_string();
    }
    if let Some(offset) = number(&block["port_offset"]).and_then(|o| u16::try_from(o).ok()) {
        exporter.port_offset = offset;
    }
    Some(exporter)
}
