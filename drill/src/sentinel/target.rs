//! A `redisha_sentinel` read from a Terraform state. Its request and settings come from the
//! attributes, as the provider reads them; its processes from the provider's private state,
//! the only record of which data node is the planned primary. Each process is then found
//! again by its record under `data_dir` (the driver's handles, with this machine's paths and
//! the pids running now), so the drill acts only on what carries the deployment's id.

use std::path::{Path, PathBuf};

use base64::Engine;
use redisha_cluster::sentinel::{Member, Reshape, SentinelSettings, SentinelState};
use redisha_cluster::{Driver, LocalConfig, LocalDriver, NodeConfig, Password};
use redisha_planner::{plan_with_sentinels, Placement, Request, Sentinel, SentinelSpec};
use serde_json::Value;

use super::run::SentinelDeployment;
use crate::error::{DrillError, Result};
use crate::target::{
    local_of, node_names, number, redis_config_of, request_of, single, StateFile, PASSWORD_ENV,
};

/// The environment variable the sentinels' own password is read from unless told otherwise.
pub const SENTINEL_PASSWORD_ENV: &str = "REDISHA_SENTINEL_PASSWORD";

/// The key the provider keeps its `redisha_sentinel` private state under.
const PRIVATE_KEY: &str = "redisha_sentinel";

/// A `redisha_sentinel` found in a Terraform state.
#[derive(Debug, Clone)]
pub struct SentinelTarget {
    pub state_file: PathBuf,
    /// The resource's address in the state (`redisha_sentinel.NAME`).
    pub address: String,
    pub name: String,
    pub cluster_id: String,
    /// The planner request, with its `sentinel` part.
    pub request: Request,
    pub local: LocalConfig,
    /// `redis_config` and the data nodes' password (from the environment).
    pub node_config: NodeConfig,
    /// `sentinel_password` (from the environment) when the state sets one.
    pub sentinel_password: Option<Password>,
    pub settings: SentinelSettings,
    /// The processes as the provider recorded them at its last apply.
    pub recorded: SentinelState,
    /// Process names as Terraform last saw them (`nodes`).
    pub nodes: Vec<String>,
}

impl SentinelTarget {
    /// Reads `path` (a Terraform working directory or a state file). `resource` picks one of
    /// several `redisha_sentinel` resources by name.
    pub fn read(
        path: &Path,
        resource: Option<&str>,
        password: Option<Password>,
        sentinel_password: Option<Password>,
    ) -> Result<Self> {
        let state = StateFile::read(path)?;
        let res = state
            .select(&["redisha_sentinel"], resource)
            .map_err(|r| state.bad(r))?;
        Self::parse(&state, res, password, sentinel_password)
    }

    pub(crate) fn parse(
        state: &StateFile,
        res: &Value,
        password: Option<Password>,
        sentinel_password: Option<Password>,
    ) -> Result<Self> {
        let (attrs, address) = state.instance(res)?;
        let private = private_state(&res["instances"][0]).map_err(|r| {
            state.bad(format!(
                "{address}: {r}; the drill needs the processes the provider recorded: run `terraform apply` first"
            ))
        })?;
        parse_sentinel(
            attrs,
            address,
            &state.working_dir,
            password,
            sentinel_password,
        )
        .map(|t| SentinelTarget {
            state_file: state.path.clone(),
            recorded: private,
            ..t
        })
        .map_err(|r| state.bad(r))
    }

    /// The data nodes as placed (the planned primary as master) and the sentinels.
    pub fn placement(&self) -> (Placement, Vec<Sentinel>) {
        (self.recorded.placement(), self.recorded.placed_sentinels())
    }

    /// The local driver of this deployment and its processes found again by their records,
    /// after checking that they are the ones the state describes and that the configuration
    /// in the state plans no change of shape (the drill predicts from the deployment as it
    /// runs; a pending change is `terraform apply`'s first).
    pub async fn locate(&self) -> Result<(LocalDriver, SentinelState)> {
        let driver =
            LocalDriver::new(self.local.clone()).with_cluster(&self.cluster_id, &self.name)?;
        let found = driver.discover(&self.cluster_id).await?.unwrap_or_default();
        let mut missing = Vec::new();
        let mut relocated = |members: &[Member]| -> Vec<Member> {
            let mut out = Vec::new();
            for m in members {
                match found
                    .iter()
                    .find(|(h, _)| h.name == m.handle.name && h.host == m.handle.host)
                {
                    Some((handle, _)) => out.push(Member {
                        handle: handle.clone(),
                        ..m.clone()
                    }),
                    None => missing.push(m.handle.name.clone()),
                }
            }
            out
        };
        let state = SentinelState {
            hosts: self.recorded.hosts.clone(),
            data: relocated(&self.recorded.data),
            sentinels: relocated(&self.recorded.sentinels),
        };
        if !missing.is_empty() {
            return Err(self.bad(format!(
                "processes {missing:?} of the state have no record of cluster_id {} under {}: is the deployment running here? If so, run `terraform apply` first",
                self.cluster_id,
                self.local.data_dir.display()
            )));
        }
        let unknown: Vec<&String> = self
            .nodes
            .iter()
            .filter(|n| {
                !state
                    .data
                    .iter()
                    .chain(state.sentinels.iter())
                    .any(|m| &m.handle.name == *n)
            })
            .collect();
        if !unknown.is_empty() {
            return Err(self.bad(format!(
                "processes {unknown:?} of `nodes` are not in the provider's record: run `terraform apply` first"
            )));
        }
        let (placement, sentinels) = self.placement();
        let plan = plan_with_sentinels(&self.request, Some(&placement), &sentinels)?;
        let planned_sentinels = plan
            .sentinel
            .as_ref()
            .map(|s| s.sentinels.as_slice())
            .unwrap_or_default();
        let change = Reshape::between(&state, &plan.placement, planned_sentinels);
        if !change.is_empty() {
            return Err(self.bad(format!(
                "the configuration in the state changes the deployment's shape ({}): run `terraform apply` first",
                change.describe().join("; ")
            )));
        }
        Ok((driver, state))
    }

    /// The deployment as [`super::run_sentinel`] takes it.
    pub fn deployment<'a>(
        &'a self,
        driver: &'a LocalDriver,
        placement: &'a Placement,
        sentinels: &'a [Sentinel],
    ) -> SentinelDeployment<'a> {
        SentinelDeployment {
            driver,
            request: &self.request,
            config: &self.node_config,
            settings: &self.settings,
            cluster_id: &self.cluster_id,
            placement,
            sentinels,
            sentinel_password: self.sentinel_password.clone(),
        }
    }

    fn bad(&self, reason: String) -> DrillError {
        DrillError::Target {
            path: self.state_file.clone(),
            reason,
        }
    }
}

/// The provider's private state of one instance: base64 in the state file, JSON under
/// [`PRIVATE_KEY`].
fn private_state(instance: &Value) -> std::result::Result<SentinelState, String> {
    let text = instance["private"]
        .as_str()
        .ok_or("no private state in the state file")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("the private state is not base64 ({e})"))?;
    let json: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the private state is not the provider's JSON ({e})"))?;
    let state = json
        .get(PRIVATE_KEY)
        .and_then(|p| p.get("state"))
        .ok_or("the private state is not a redisha_sentinel's")?;
    let state: SentinelState = serde_json::from_value(state.clone())
        .map_err(|e| format!("the private state has another format ({e})"))?;
    if state.planned_primary().is_none() {
        return Err("the private state names no planned primary".into());
    }
    Ok(state)
}

fn parse_sentinel(
    attrs: &Value,
    address: String,
    working_dir: &Path,
    password: Option<Password>,
    sentinel_password: Option<Password>,
) -> std::result::Result<SentinelTarget, String> {
    let text = |key: &str| attrs[key].as_str().map(str::to_string);
    let name = text("name").ok_or(format!("{address}: no `name`"))?;
    let cluster_id = text("cluster_id").ok_or(format!("{address}: no `cluster_id`"))?;
    if !attrs["password"].is_null() && password.is_none() {
        return Err(format!(
            "{address} has a password: export it in {PASSWORD_ENV} (never on the command line)"
        ));
    }
    if !attrs["sentinel_password"].is_null() && sentinel_password.is_none() {
        return Err(format!(
            "{address} gives the sentinels their own password: export it in {SENTINEL_PASSWORD_ENV} (never on the command line)"
        ));
    }
    let (spec, settings) =
        sentinel_settings(attrs, &name).map_err(|e| format!("{address}: {e}"))?;
    let mut request = request_of(attrs, 1).map_err(|e| format!("{address}: {e}"))?;
    request.sentinel = Some(spec);
    Ok(SentinelTarget {
        state_file: PathBuf::new(),
        address,
        local: local_of(attrs, working_dir, &name),
        name,
        cluster_id,
        request,
        node_config: NodeConfig {
            password,
            redis_config: redis_config_of(attrs),
            // Sentinel mode has no ACL users of its own: the data nodes' `default` user.
            acl: Default::default(),
        },
        sentinel_password,
        settings,
        recorded: SentinelState::default(),
        nodes: node_names(attrs),
    })
}

/// The `sentinel { }` block as the planner's spec and the operator's settings, with the
/// provider's defaults (`master_name`: the computed attribute, else the resource's name).
fn sentinel_settings(
    attrs: &Value,
    name: &str,
) -> std::result::Result<(SentinelSpec, SentinelSettings), String> {
    let block = single(&attrs["sentinel"]);
    let small = |key: &str| {
        number(&block[key])
            .map(|n| u32::try_from(n).map_err(|_| format!("sentinel.{key}: {n} is too large")))
            .transpose()
    };
    let mut spec = SentinelSpec::default();
    let mut settings = SentinelSettings::default();
    if let Some(c) = small("count")? {
        spec.count = c;
    }
    spec.quorum = small("quorum")?;
    if let Some(m) = number(&block["memory_mb"]) {
        spec.memory_mb = m;
    }
    if let Some(m) = small("min_replicas_to_write")? {
        spec.min_replicas_to_write = m;
    }
    if let Some(l) = small("min_replicas_max_lag")? {
        settings.min_replicas_max_lag = l;
    }
    if let Some(ms) = number(&block["down_after_ms"]) {
        settings.down_after_ms = ms;
    }
    if let Some(ms) = number(&block["failover_timeout_ms"]) {
        settings.failover_timeout_ms = ms;
    }
    settings.quorum = spec.quorum();
    settings.min_replicas_to_write = spec.min_replicas_to_write;
    settings.master_name = attrs["master_name"]
        .as_str()
        .or(block["master_name"].as_str())
        .unwrap_or(name)
        .to_string();
    Ok((spec, settings))
}
