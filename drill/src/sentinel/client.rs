//! A Sentinel-aware client, as the drill's traffic in sentinel mode: it asks the sentinels for
//! the primary (`SENTINEL GET-MASTER-ADDR-BY-NAME`), writes `SET` + `WAIT <replicas> <ms>` in
//! one round trip, and asks again after every error and every [`REASK`], so it follows a
//! failover the way a client subscribed to `+switch-master` does. A second writer, pinned to
//! the planned primary, plays a client left on the primary's side of a partition: it sees
//! what the cut-off primary accepts and refuses (`min-replicas-to-write`).

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use redisha_cluster::conn::{split_address, Conns, Target};
use redisha_cluster::Password;

use crate::load::{sort_lost, Event, Op, Traffic};

/// Pause after a failed request, so a dead primary is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How often the following writer asks the sentinels even without an error.
const REASK: Duration = Duration::from_millis(200);
/// A sentinel's reply bound when it answered last time, and when it did not (a hung sentinel
/// must not slow every question down).
const ASK_TIMEOUT: Duration = Duration::from_millis(150);
const ASK_TIMEOUT_SILENT: Duration = Duration::from_millis(30);

/// The sentinels of one deployment, as a client asks them.
pub(crate) struct Sentinels {
    targets: Vec<Target>,
    silent: Vec<bool>,
    master_name: String,
    conns: Conns,
}

impl Sentinels {
    /// `password`: the sentinels' own (`sentinel_password`, by default the data nodes' one).
    pub fn new(targets: Vec<Target>, master_name: &str, password: Option<Password>) -> Self {
        Sentinels {
            silent: vec![false; targets.len()],
            targets,
            master_name: master_name.to_string(),
            conns: Conns::new(password, ASK_TIMEOUT, ASK_TIMEOUT),
        }
    }

    /// Every sentinel's answer (`ip:port`), `None` for one that did not answer in time; in
    /// the order of the targets.
    pub async fn ask(&mut self) -> Vec<Option<String>> {
        let mut asks: FuturesUnordered<_> = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let bound = if self.silent[i] {
                    ASK_TIMEOUT_SILENT
                } else {
                    ASK_TIMEOUT
                };
                let (conns, name) = (&self.conns, &self.master_name);
                async move {
                    let ask = async {
                        let mut con = conns.get(t).await.ok()?;
                        let reply: Vec<String> = redis::cmd("SENTINEL")
                            .arg("GET-MASTER-ADDR-BY-NAME")
                            .arg(name)
                            .query_async(&mut con)
                            .await
                            .ok()?;
                        match reply.as_slice() {
                            [ip, port] => Some(format!("{ip}:{port}")),
                            _ => None,
                        }
                    };
                    let answer = tokio::time::timeout(bound, ask).await.ok().flatten();
                    if answer.is_none() {
                        conns.drop_conn(t).await;
                    }
                    (i, answer)
                }
            })
            .collect();
        let mut answers = vec![None; self.targets.len()];
        while let Some((i, a)) = asks.next().await {
            answers[i] = a;
        }
        drop(asks);
        for (i, a) in answers.iter().enumerate() {
            self.silent[i] = a.is_none();
        }
        answers
    }
}

/// The primary a strict majority of `total` sentinels names; else the one most of those who
/// answered name (a client takes some answer rather than none); `None` when none answered.
pub(crate) fn pick(answers: &[Option<String>], total: usize) -> (Option<String>, bool) {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for a in answers.iter().flatten() {
        match counts.iter_mut().find(|(x, _)| x == a) {
            Some((_, n)) => *n += 1,
            None => counts.push((a, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    match counts.first() {
        Some((addr, n)) => (Some(addr.to_string()), *n > total / 2),
        None => (None, false),
    }
}

/// What a writer needs to know about the data nodes: their names by address.
#[derive(Clone)]
pub(crate) struct DataNodes {
    pub targets: Vec<Target>,
}

impl DataNodes {
    fn target_of(&self, address: &str) -> Option<Target> {
        if let Some(t) = self.targets.iter().find(|t| t.address() == address) {
            return Some(t.clone());
        }
        // Not a node of this deployment: still write there (the report shows the address).
        let (ip, port) = split_address(address)?;
        Some(Target::new(address, ip, port))
    }
}

/// The key of one write of the writer `prefix` (`s` following, `iso` pinned).
pub(crate) fn key(prefix: &str, seq: u64) -> String {
    format!("drill:{prefix}:{seq}")
}

/// One write: SET and WAIT in one round trip, bounded. Ok(replicas that acknowledged).
async fn write(
    conns: &Conns,
    target: &Target,
    key: &str,
    seq: u64,
    replicas: u32,
    wait: Duration,
) -> Result<i64, String> {
    let bound = wait + Duration::from_millis(200);
    let send = async {
        let mut con = conns.get(target).await.map_err(|e| e.to_string())?;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(key)
            .arg(seq)
            .ignore()
            .cmd("WAIT")
            .arg(replicas)
            .arg(wait.as_millis() as u64);
        pipe.query_async::<(i64,)>(&mut con)
            .await
            .map(|(n,)| n)
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(bound, send).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => {
            conns.drop_conn(target).await;
            Err(e)
        }
        Err(_) => {
            conns.drop_conn(target).await;
            Err(format!("no reply within {bound:?}"))
        }
    }
}

fn event(
    traffic: &Traffic,
    node: &str,
    seq: u64,
    reply: &Result<i64, String>,
    replicas: u32,
) -> Event {
    Event {
        t_ms: traffic.now_ms(),
        shard: 0,
        op: Op::Write,
        node: node.to_string(),
        seq,
        ok: reply.is_ok(),
        acked: reply.as_ref().is_ok_and(|n| *n >= i64::from(replicas)),
        error: reply.as_ref().err().cloned(),
    }
}

/// One writer's connections and settings: every write is SET + WAIT, logged.
pub(crate) struct Writer {
    conns: Conns,
    /// Key prefix: `s` for the Sentinel-following writer, `iso` for the pinned one.
    prefix: &'static str,
    replicas: u32,
    wait: Duration,
}

impl Writer {
    pub fn new(
        prefix: &'static str,
        password: Option<Password>,
        replicas: u32,
        wait: Duration,
    ) -> Self {
        let bound = Duration::from_millis(200);
        Writer {
            conns: Conns::new(password, bound, bound),
            prefix,
            replicas,
            wait,
        }
    }

    /// Writes `seq` to `target` and logs it; whether it was accepted (a failed one paused).
    async fn write_logged(&self, traffic: &Traffic, target: &Target, seq: u64) -> bool {
        let reply = write(
            &self.conns,
            target,
            &key(self.prefix, seq),
            seq,
            self.replicas,
            self.wait,
        )
        .await;
        traffic.log(event(traffic, &target.name, seq, &reply, self.replicas));
        if reply.is_err() {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        reply.is_ok()
    }
}

/// Writes until `traffic` stops, to the primary the sentinels name.
pub(crate) async fn follow(
    traffic: Traffic,
    mut sentinels: Sentinels,
    nodes: DataNodes,
    writer: Writer,
) {
    let total = sentinels.targets.len();
    let mut current: Option<Target> = None;
    let mut asked = Instant::now();
    let mut seq = 0u64;
    while !traffic.is_stopped() {
        if current.is_none() || asked.elapsed() >= REASK {
            asked = Instant::now();
            let (named, _) = pick(&sentinels.ask().await, total);
            match named.and_then(|a| nodes.target_of(&a)) {
                Some(t) => current = Some(t),
                None if current.is_none() => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                None => {}
            }
        }
        let Some(target) = current.clone() else {
            continue;
        };
        seq += 1;
        if !writer.write_logged(&traffic, &target, seq).await {
            current = None;
        }
    }
}

/// Writes until `traffic` stops, always to `target`: a client that can reach only it.
pub(crate) async fn pinned(traffic: Traffic, target: Target, writer: Writer) {
    let mut seq = 0u64;
    while !traffic.is_stopped() {
        seq += 1;
        writer.write_logged(&traffic, &target, seq).await;
    }
}

/// Which of the writes in `events` (of the writer `prefix`) are gone, read from `primary`:
/// (acknowledged lost, accepted-unacknowledged lost), by sequence number.
pub(crate) async fn verify(
    conns: &Conns,
    primary: &Target,
    prefix: &str,
    events: &[Event],
) -> Result<(Vec<u64>, Vec<u64>), String> {
    let written: Vec<&Event> = events.iter().filter(|e| e.ok).collect();
    let (mut acked_lost, mut unacked_lost) = (Vec::new(), Vec::new());
    for chunk in written.chunks(500) {
        let mut mget = redis::cmd("MGET");
        for e in chunk {
            mget.arg(key(prefix, e.seq));
        }
        let values: Vec<Option<String>> = conns
            .query(primary, &mget, "MGET")
            .await
            .map_err(|e| e.to_string())?;
        sort_lost(chunk, values, &mut acked_lost, &mut unacked_lost);
    }
    Ok((acked_lost, unacked_lost))
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn a_majority_wins_and_a_plurality_is_taken_without_one() {
        let a = Some("10.0.0.1:6379".to_string());
        let b = Some("10.0.0.2:6379".to_string());
        assert_eq!(
            pick(&[a.clone(), b.clone(), b.clone()], 3),
            (b.clone(), true)
        );
        assert_eq!(pick(&[a.clone(), None, None], 3), (a.clone(), false));
        assert_eq!(pick(&[None, None, None], 3), (None, false));
    }
}
