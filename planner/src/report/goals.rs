//! The survival goal in the report: does every combination of `survive.zones` zone losses (and
//! of `survive.hosts` host losses) keep a copy of every shard and a strict master majority?
//!
//! The combinations are not enumerated (C(3000, 2) host pairs is 4.5 million): a combination
//! loses a shard only if it covers every unit (zone or host) that shard's copies use, so a shard
//! on at most N units gives a failing combination directly; if there is none, no combination
//! loses a shard, survival depends only on the voting masters lost, and the N units holding the
//! most of them are the worst case. Either way one combination decides, and it is judged like
//! any other failure.

use serde::{Deserialize, Serialize};

use super::FailureOutcome;

/// The level a goal counts losses of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoalLevel {
    Zones,
    Hosts,
}

impl GoalLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            GoalLevel::Zones => "zones",
            GoalLevel::Hosts => "hosts",
        }
    }
}

/// The verdict on one survival goal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalOutcome {
    pub level: GoalLevel,
    /// Simultaneous losses the goal names.
    pub count: u32,
    /// How many combinations that is: C(units, count), saturated at u64::MAX.
    pub combinations: u64,
    /// Every combination survives.
    pub met: bool,
    /// The combination that does the most harm: every combination survives iff this one does.
    pub worst: FailureOutcome,
}

impl GoalOutcome {
    /// `survive.zones=2: yes (all 10 combinations)` or `... : no (zones a+b: why)`.
    pub fn line(&self, voting: u32) -> String {
        let head = format!("survive.{}={}", self.level.as_str(), self.count);
        if self.met {
            format!("{head}: yes (all {} combinations)", self.combinations)
        } else {
            format!(
                "{head}: no ({}: {})",
                self.worst.label,
                super::why(&self.worst, voting)
            )
        }
    }
}

/// Binomial coefficient, saturating.
pub(crate) fn combinations(n: u64, k: u64) -> u64 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut c: u128 = 1;
    for i in 0..k {
        c = c * u128::from(n - i) / u128::from(i + 1);
        if c > u128::from(u64::MAX) {
            return u64::MAX;
        }
    }
    c as u64
}

/// The units (zone or host indices) of the worst combination of `count` losses.
///
/// `unit_of[i]`: node i's unit, `None` if the topology does not know it (never lost);
/// `shard_of[i]`: its dense shard; `voting_master[i]`: it is a master that votes.
pub(crate) fn worst_units(
    units: usize,
    count: usize,
    unit_of: &[Option<usize>],
    shard_of: &[usize],
    voting_master: &[bool],
    shards: usize,
) -> Vec<usize> {
    if count >= units {
        return (0..units).collect();
    }
    let mut votes = vec![0u32; units];
    let mut shard_units: Vec<Vec<usize>> = vec![Vec::new(); shards];
    let mut unlosable = vec![false; shards];
    for (i, unit) in unit_of.iter().enumerate() {
        match unit {
            Some(u) => {
                shard_units[shard_of[i]].push(*u);
                if voting_master[i] {
                    votes[*u] += 1;
                }
            }
            None => unlosable[shard_of[i]] = true,
        }
    }
    let mut by_votes: Vec<usize> = (0..units).collect();
    by_votes.sort_by_key(|&u| (std::cmp::Reverse(votes[u]), u));
    // The shard on the fewest units, if it fits in `count` of them.
    let mut fewest: Option<Vec<usize>> = None;
    for (s, us) in shard_units.iter_mut().enumerate() {
        if unlosable[s] || us.is_empty() {
            continue;
        }
        us.sort_unstable();
        us.dedup();
        if us.len() <= count && fewest.as_ref().is_none_or(|f| us.len() < f.len()) {
            fewest = Some(us.clone());
        }
    }
    let mut chosen = fewest.unwrap_or_default();
    for u in by_votes {
        if chosen.len() >= count {
            break;
        }
        if !chosen.contains(&u) {
            chosen.push(u);
        }
    }
    chosen.sort_unstable();
    chosen
}
