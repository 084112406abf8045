//! Putting a failure in force and lifting it, shared by the cluster and the sentinel drills:
//! SIGKILL or SIGSTOP of the proven processes, or the nftables cut, then the window.

use std::path::Path;
use std::time::{Duration, Instant};

use redisha_cluster::conn::{Conns, Target};
use redisha_cluster::Cancel;

use crate::error::{DrillError, Result};
use crate::failure::Action;
use crate::nft::{self, Cut};
use crate::procs::{NodeProcess, Stopped};

/// A failure in force; [`Injected::heal`] lifts it (SIGCONT, rules removed). Dropped without a
/// heal (an error, a panic) it heals too: stopped processes get SIGCONT, the rules go.
pub struct Injected {
    stopped: Option<Stopped>,
    cut: Option<Cut>,
}

/// Where a partition is cut: the cluster's directory (the record of installed tables), its id,
/// and the two sides' addresses.
pub struct CutSides<'a> {
    pub cluster_dir: &'a Path,
    pub cluster_id: &'a str,
    pub side: &'a [String],
    pub rest: &'a [String],
}

/// The cut side's and the rest's host addresses, from every process as (name, address): a
/// host with a hit process is on the cut side.
pub fn split_addresses<'a>(
    processes: impl Iterator<Item = (&'a str, &'a str)>,
    hit: &[String],
) -> (Vec<String>, Vec<String>) {
    let mut side: Vec<String> = Vec::new();
    let mut rest: Vec<String> = Vec::new();
    for (name, ip) in processes {
        let list = if hit.iter().any(|h| h == name) {
            &mut side
        } else {
            &mut rest
        };
        if !list.iter().any(|a| a == ip) {
            list.push(ip.to_string());
        }
    }
    rest.retain(|a| !side.contains(a));
    (side, rest)
}

/// A partition's rules name host addresses: every node (a `Target`, its host's address) must
/// send from its own (the local driver sets `bind-source-addr`; nodes started before it did
/// send from 127.0.0.1, which no rule can tell apart).
pub async fn check_sends_from_own_address(
    conns: &Conns,
    nodes: impl Iterator<Item = (Target, String)>,
) -> Result<()> {
    for (target, ip) in nodes {
        let reply: Vec<String> = conns
            .query(
                &target,
                redis::cmd("CONFIG").arg("GET").arg("bind-source-addr"),
                "CONFIG GET",
            )
            .await?;
        if reply.get(1) != Some(&ip) {
            return Err(DrillError::Partition(format!(
                "node {} sends from the kernel's default address, not {ip}: restart it with a redisha whose local driver sets bind-source-addr",
                target.name
            )));
        }
    }
    Ok(())
}

/// Puts `action` in force on `processes` (crash, hang) or between the sides (partition).
pub fn inject(action: Action, processes: &[NodeProcess], cut: CutSides<'_>) -> Result<Injected> {
    let mut injected = Injected {
        stopped: None,
        cut: None,
    };
    match action {
        Action::Crash => {
            for p in processes {
                p.signal(libc::SIGKILL)?;
            }
        }
        Action::Hang => {
            // The guard first: a failed signal still resumes the ones already stopped.
            injected.stopped = Some(Stopped(processes.to_vec()));
            for p in processes {
                p.signal(libc::SIGSTOP)?;
            }
        }
        Action::Stop => {
            return Err(DrillError::Failure(
                "stop acts on EC2 instances, not on processes (see ec2_stop)".into(),
            ))
        }
        Action::Partition => {
            injected.cut = Some(nft::install(
                cut.cluster_dir,
                cut.cluster_id,
                cut.side,
                cut.rest,
            )?);
        }
    }
    Ok(injected)
}

impl Injected {
    pub fn heal(self) -> Result<()> {
        let Injected { stopped, cut } = self;
        drop(stopped);
        match cut {
            Some(cut) => cut.heal(),
            None => Ok(()),
        }
    }
}

/// Waits out the window, or until Ctrl-C cancels it.
pub async fn wait_window(window: Duration, cancel: &Cancel) {
    let deadline = Instant::now() + window;
    while Instant::now() < deadline && !cancel.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
