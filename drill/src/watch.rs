//! Samples every node's `cluster_state` while the drill runs, to time when the cluster is
//! `ok` everywhere again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use redisha_cluster::conn::{Conns, Credential, Target};
use serde::{Deserialize, Serialize};

use crate::load::Traffic;

const EVERY: Duration = Duration::from_millis(50);
const REPLY_BOUND: Duration = Duration::from_millis(200);

/// One round of answers: per node (in the order of the targets), `Some(ok)` or no answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub t_ms: f64,
    pub ok: Vec<Option<bool>>,
}

/// Runs until `traffic` stops; the samples land in the returned log.
pub fn start(
    traffic: &Traffic,
    targets: Vec<Target>,
    login: Credential,
) -> (Arc<Mutex<Vec<Sample>>>, tokio::task::JoinHandle<()>) {
    let log: Arc<Mutex<Vec<Sample>>> = Default::default();
    let (t, l) = (traffic.clone(), log.clone());
    let task = tokio::spawn(async move {
        let conns = Conns::new(None, REPLY_BOUND, REPLY_BOUND).logging_in_as(&login);
        while !t.is_stopped() {
            let answers = join_all(targets.iter().map(|target| {
                let conns = &conns;
                async move {
                    let ask = conns.cluster_info(target);
                    match tokio::time::timeout(REPLY_BOUND, ask).await {
                        Ok(Ok(info)) => {
                            Some(info.get("cluster_state").map(String::as_str) == Some("ok"))
                        }
                        _ => {
                            conns.drop_conn(target).await;
                            None
                        }
                    }
                }
            }))
            .await;
            if let Ok(mut v) = l.lock() {
                v.push(Sample {
                    t_ms: t.now_ms(),
                    ok: answers,
                });
            }
            tokio::time::sleep(EVERY).await;
        }
    });
    (log, task)
}

/// The first time at or after `from_ms` from which every node in `which` (indexes) answered
/// `ok` in every later sample up to `until_ms`.
pub fn ok_from(samples: &[Sample], which: &[usize], from_ms: f64, until_ms: f64) -> Option<f64> {
    let mut since = None;
    for s in samples
        .iter()
        .filter(|s| s.t_ms >= from_ms && s.t_ms <= until_ms)
    {
        let all_ok = which
            .iter()
            .all(|&i| s.ok.get(i).copied().flatten() == Some(true));
        match (all_ok, since) {
            (true, None) => since = Some(s.t_ms),
            (false, _) => since = None,
            _ => {}
        }
    }
    since
}
