//! Masters over the hosts and racks of each zone. The zone-level decisions (masters per zone,
//! which zones hold a shard's copies) are taken before this pass and never changed by it: it
//! only moves a master to another host of the same zone, by swapping roles inside a shard, by
//! moving the master copy to a free slot, or by trading places with another shard's replica.
//! So every zone and partition outcome stays the same, and only host and rack losses improve.
//!
//! With 3 or more shards the masters of a zone are spread: racks as evenly as possible first
//! (a rack loss takes all its hosts), then hosts. With fewer, no master loss is ever failed
//! over, so the masters are packed onto as few hosts as possible instead.

use std::cmp::Reverse;

use crate::solver::{Copy, Problem};

/// How many candidate target hosts are tried for each overloaded host before giving up on it.
const TARGETS_TRIED: usize = 64;

struct State<'c> {
    copies: &'c mut [Copy],
    /// Copy indices on each host.
    on_host: Vec<Vec<usize>>,
    /// Copy indices of each shard.
    of_shard: Vec<Vec<usize>>,
    masters_on_host: Vec<u32>,
    masters_on_rack: Vec<u32>,
}

impl Problem<'_> {
    /// Rebalance masters over hosts and racks inside each zone (see the module comment).
    /// Copies kept from a previous placement (named) are never moved or demoted: keeping nodes
    /// in place outranks balance.
    pub(crate) fn balance_hosts(&self, copies: &mut [Copy]) {
        let topo = self.topo;
        let mut st = State {
            on_host: vec![Vec::new(); topo.hosts.len()],
            of_shard: vec![Vec::new(); self.shards as usize],
            masters_on_host: vec![0; topo.hosts.len()],
            masters_on_rack: vec![0; topo.racks.len()],
            copies,
        };
        for (i, c) in st.copies.iter().enumerate() {
            st.on_host[c.host].push(i);
            st.of_shard[c.shard as usize].push(i);
            if c.master {
                st.masters_on_host[c.host] += 1;
                st.masters_on_rack[topo.hosts[c.host].rack] += 1;
            }
        }
        let pack = self.shards < 3;
        for zone in &topo.zones {
            let hosts: Vec<usize> = zone
                .hosts
                .iter()
                .copied()
                .filter(|&h| topo.hosts[h].capacity > 0)
                .collect();
            // Every applied move lowers a bounded potential; the guard only caps pathological runs.
            let mut guard = 4 * hosts.len() + 4 * self.shards as usize;
            while guard > 0 && self.one_move(&mut st, &hosts, pack) {
                guard -= 1;
            }
        }
    }

    /// Find and apply one improving move inside the zone made of `hosts`.
    fn one_move(&self, st: &mut State<'_>, hosts: &[usize], pack: bool) -> bool {
        let topo = self.topo;
        let rack = |h: usize| topo.hosts[h].rack;
        let key = |st: &State<'_>, h: usize| (st.masters_on_rack[rack(h)], st.masters_on_host[h]);
        let mut from: Vec<usize> = hosts
            .iter()
            .copied()
            .filter(|&h| st.masters_on_host[h] > 0)
            .collect();
        let mut to: Vec<usize> = hosts.to_vec();
        if pack {
            // Empty the hosts with fewest masters into those with most.
            from.sort_by_key(|&h| (st.masters_on_host[h], h));
            to.sort_by_key(|&h| (Reverse(st.masters_on_host[h]), h));
        } else {
            from.sort_by_key(|&h| (Reverse(key(st, h)), h));
            to.sort_by_key(|&h| (key(st, h), h));
        }
        for &a in &from {
            for &b in to.iter().take(TARGETS_TRIED) {
                if a == b || !self.improves(st, a, b, pack) {
                    continue;
                }
                if self.move_master(st, a, b) {
                    return true;
                }
            }
        }
        false
    }

    /// Moving one master from host `a` to host `b` makes the zone better balanced (or, when
    /// packing, leaves fewer hosts holding a master).
    fn improves(&self, st: &State<'_>, a: usize, b: usize, pack: bool) -> bool {
        let (ma, mb) = (st.masters_on_host[a], st.masters_on_host[b]);
        if pack {
            return ma == 1 && mb >= 1;
        }
        let (ra, rb) = (self.topo.hosts[a].rack, self.topo.hosts[b].rack);
        if ra != rb {
            let (qa, qb) = (st.masters_on_rack[ra], st.masters_on_rack[rb]);
            if qa >= qb + 2 {
                return true;
            }
            if qa < qb + 1 {
                return false;
            }
        }
        ma >= mb + 2
    }

    /// Move one master of host `a` to host `b` if some legal way exists; true if done.
    fn move_master(&self, st: &mut State<'_>, a: usize, b: usize) -> bool {
        let masters: Vec<usize> = st.on_host[a]
            .iter()
            .copied()
            .filter(|&i| st.copies[i].master && st.copies[i].name.is_none())
            .collect();
        for &i in &masters {
            let shard = st.copies[i].shard as usize;
            // 1. A replica of the same shard on b: swap roles, nothing moves.
            if let Some(&j) = st.of_shard[shard]
                .iter()
                .find(|&&j| st.copies[j].host == b && st.copies[j].name.is_none())
            {
                st.copies[i].master = false;
                st.copies[j].master = true;
                self.count_master(st, a, b);
                return true;
            }
            if !self.may_host(st, i, b) {
                continue;
            }
            // 2. A free slot on b: move the master there.
            if (st.on_host[b].len() as u32) < self.topo.hosts[b].capacity {
                self.relocate(st, i, b);
                self.count_master(st, a, b);
                return true;
            }
            // 3. Trade places with another shard's new replica on b.
            let swap = st.on_host[b].iter().copied().find(|&j| {
                let other = &st.copies[j];
                !other.master
                    && other.name.is_none()
                    && other.shard as usize != shard
                    && self.may_host(st, j, a)
            });
            if let Some(j) = swap {
                self.relocate(st, i, b);
                self.relocate(st, j, a);
                self.count_master(st, a, b);
                return true;
            }
        }
        false
    }

    /// Copy `i` may live on host `h`: no other copy of its shard is on `h` or in `h`'s spread
    /// domain. (Room is the caller's concern: a trade leaves both hosts as full as before.)
    fn may_host(&self, st: &State<'_>, i: usize, h: usize) -> bool {
        let d = self.domain_of_host[h];
        let shard = st.copies[i].shard as usize;
        st.of_shard[shard].iter().all(|&k| {
            k == i || (st.copies[k].host != h && self.domain_of_host[st.copies[k].host] != d)
        })
    }

    fn relocate(&self, st: &mut State<'_>, i: usize, to: usize) {
        let from = st.copies[i].host;
        st.on_host[from].retain(|&k| k != i);
        st.on_host[to].push(i);
        st.copies[i].host = to;
    }

    fn count_master(&self, st: &mut State<'_>, from: usize, to: usize) {
        st.masters_on_host[from] -= 1;
        st.masters_on_host[to] += 1;
        st.masters_on_rack[self.topo.hosts[from].rack] -= 1;
        st.masters_on_rack[self.topo.hosts[to].rack] += 1;
    }
}
