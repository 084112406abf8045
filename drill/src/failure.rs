//! What a drill breaks: the failure (crash, hang, partition), where (a host, a zone, a side of
//! a declared partition), the nodes it hits, and the planner's prediction for it.

use std::time::Duration;

use redisha_cluster::ClusterState;
use redisha_planner::{analyse, FailureKind, FailureOutcome, Request};
use serde::{Deserialize, Serialize};

use crate::error::{DrillError, Result};

/// How the hit nodes fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// SIGKILL of exactly the cluster's processes there.
    Crash,
    /// SIGSTOP, then SIGCONT after the window.
    Hang,
    /// A packet-level cut (nftables) of the hit hosts' addresses from the rest of the cluster.
    Partition,
    /// The aws driver: the hit hosts' EC2 instances stopped (StopInstances), started again
    /// after the window.
    Stop,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Crash => "crash",
            Action::Hang => "hang",
            Action::Partition => "partition",
            Action::Stop => "stop",
        }
    }
}

/// Where the failure lands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope", content = "name")]
pub enum Scope {
    Host(String),
    Zone(String),
    /// The declared side (`side` in the request) of the named partition is cut off.
    DeclaredSide(String),
    /// Every zone *not* in the named partition's declared side is cut off.
    OtherSide(String),
}

/// One drill's failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub action: Action,
    pub scope: Scope,
    /// How long the failure lasts before it is healed (a crash: how long the drill watches
    /// before it restores).
    pub window: Duration,
}

impl Failure {
    pub fn label(&self) -> String {
        let what = match &self.scope {
            Scope::Host(h) => format!("host {h}"),
            Scope::Zone(z) => format!("zone {z}"),
            Scope::DeclaredSide(p) => format!("declared side of partition {p}"),
            Scope::OtherSide(p) => format!("other side of partition {p}"),
        };
        format!("{} {what} for {:?}", self.action.as_str(), self.window)
    }
}

/// The zones a scope cuts off, in request order (a host: its zone only for naming the
/// survivors; its nodes are found by host).
pub(crate) fn cut_zones(request: &Request, scope: &Scope) -> Result<Vec<String>> {
    let zone_names = || request.zones.iter().map(|z| z.name.clone());
    let side = |name: &str| {
        request
            .partitions
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.side.clone())
            .ok_or_else(|| {
                DrillError::Failure(format!(
                    "no partition {name:?} is declared; declared: {}",
                    names(request.partitions.iter().map(|p| p.name.as_str()))
                ))
            })
    };
    match scope {
        Scope::Host(h) => request
            .zones
            .iter()
            .find(|z| z.hosts.iter().any(|x| &x.name == h))
            .map(|z| vec![z.name.clone()])
            .ok_or_else(|| {
                DrillError::Failure(format!(
                    "no host {h:?} in the cluster's zones; hosts: {}",
                    names(
                        request
                            .zones
                            .iter()
                            .flat_map(|z| z.hosts.iter().map(|h| h.name.as_str()))
                    )
                ))
            }),
        Scope::Zone(z) if request.zones.iter().any(|x| &x.name == z) => Ok(vec![z.clone()]),
        Scope::Zone(z) => Err(DrillError::Failure(format!(
            "no zone {z:?}; zones: {}",
            names(request.zones.iter().map(|z| z.name.as_str()))
        ))),
        Scope::DeclaredSide(p) => {
            let side = side(p)?;
            Ok(zone_names().filter(|z| side.contains(z)).collect())
        }
        Scope::OtherSide(p) => {
            let side = side(p)?;
            Ok(zone_names().filter(|z| !side.contains(z)).collect())
        }
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The nodes (by name) a failure hits.
pub fn hit_nodes(request: &Request, state: &ClusterState, scope: &Scope) -> Result<Vec<String>> {
    let zones = cut_zones(request, scope)?;
    let hit: Vec<String> = state
        .nodes
        .iter()
        .filter(|n| match scope {
            Scope::Host(h) => &n.host == h,
            _ => zones.contains(&n.zone),
        })
        .map(|n| n.name.clone())
        .collect();
    if hit.is_empty() {
        return Err(DrillError::Failure(format!(
            "{scope:?} runs no node of this cluster: nothing to drill"
        )));
    }
    Ok(hit)
}

/// The what-if report's outcome for this failure, on the planned placement in `state`.
pub fn prediction(
    request: &Request,
    state: &ClusterState,
    scope: &Scope,
) -> Result<FailureOutcome> {
    let report = analyse(request, &state.placement());
    let (kind, name, surviving) = match scope {
        Scope::Host(h) => (FailureKind::Host, h.clone(), None),
        Scope::Zone(z) => (FailureKind::Zone, z.clone(), None),
        Scope::DeclaredSide(p) | Scope::OtherSide(p) => {
            let cut = cut_zones(request, scope)?;
            let rest: Vec<&str> = request
                .zones
                .iter()
                .map(|z| z.name.as_str())
                .filter(|z| !cut.iter().any(|c| c == z))
                .collect();
            (FailureKind::PartitionSide, p.clone(), Some(rest.join("+")))
        }
    };
    report
        .failures
        .into_iter()
        .find(|f| {
            f.kind == kind && f.name == name && surviving.as_ref().is_none_or(|s| &f.surviving == s)
        })
        .ok_or_else(|| {
            DrillError::Failure(format!(
                "the what-if report has no outcome for {scope:?}; is it in the request?"
            ))
        })
}
