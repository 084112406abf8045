//! Hash-slot assignment: 16384 slots in contiguous ranges, shard sizes differing by at most
//! one, and on a re-plan as few slots moved as possible.

use crate::placement::{Placement, Role, SlotRange, SLOT_COUNT};

/// The owner shard of every slot in `placement` (its masters' slots), `None` where unowned.
pub fn owners(placement: &Placement) -> Vec<Option<u32>> {
    let mut owner = vec![None; SLOT_COUNT as usize];
    for node in placement.nodes.iter().filter(|n| n.role == Role::Master) {
        for r in &node.slots {
            if r.start > r.end || u32::from(r.end) >= SLOT_COUNT {
                continue;
            }
            for s in r.start..=r.end {
                owner[usize::from(s)] = Some(node.shard);
            }
        }
    }
    owner
}

/// Compress a per-slot owner array into each shard's ranges.
pub fn ranges_by_shard(owner: &[Option<u32>], shards: u32) -> Vec<Vec<SlotRange>> {
    let mut out = vec![Vec::new(); shards as usize];
    let mut start = 0usize;
    while start < owner.len() {
        let mut end = start;
        while end + 1 < owner.len() && owner[end + 1] == owner[start] {
            end += 1;
        }
        if let Some(s) = owner[start] {
            if let Some(ranges) = out.get_mut(s as usize) {
                ranges.push(SlotRange {
                    start: start as u16,
                    end: end as u16,
                });
            }
        }
        start = end + 1;
    }
    out
}

/// A fresh layout: shard i gets one contiguous range; the first `16384 % shards` get one more.
pub fn fresh(shards: u32) -> Vec<Vec<SlotRange>> {
    let shards = shards.clamp(1, SLOT_COUNT);
    let (base, extra) = (SLOT_COUNT / shards, SLOT_COUNT % shards);
    let mut start = 0u32;
    (0..shards)
        .map(|i| {
            let len = base + u32::from(i < extra);
            let r = SlotRange {
                start: start as u16,
                end: (start + len - 1) as u16,
            };
            start += len;
            vec![r]
        })
        .collect()
}

/// Re-balance `previous` owners onto `shards` shards moving the fewest slots: every kept shard
/// keeps its lowest slots up to its new size; the shards that get the larger size (q+1) are the
/// ones that held most before, so fewer slots leave them. Freed and unowned slots fill the
/// shards below size in slot order, which keeps the ranges few.
pub fn rebalance(previous: &[Option<u32>], shards: u32) -> Vec<Vec<SlotRange>> {
    let shards = shards.clamp(1, SLOT_COUNT);
    if previous.iter().all(Option::is_none) {
        return fresh(shards);
    }
    let n = shards as usize;
    let mut old_size = vec![0u32; n];
    for s in previous.iter().flatten() {
        if (*s as usize) < n {
            old_size[*s as usize] += 1;
        }
    }
    let (base, extra) = (SLOT_COUNT / shards, (SLOT_COUNT % shards) as usize);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(old_size[i]), i));
    let mut target = vec![base; n];
    for &i in order.iter().take(extra) {
        target[i] += 1;
    }
    let mut owner: Vec<Option<u32>> = vec![None; previous.len()];
    let mut held = vec![0u32; n];
    for (slot, prev) in previous.iter().enumerate() {
        if let Some(s) = prev {
            let s = *s as usize;
            if s < n && held[s] < target[s] {
                held[s] += 1;
                owner[slot] = Some(s as u32);
            }
        }
    }
    let mut next = 0usize;
    for (slot, o) in owner.iter_mut().enumerate() {
        if o.is_some() {
            continue;
        }
        while next < n && held[next] >= target[next] {
            next += 1;
        }
        if next < n {
            held[next] += 1;
            *o = Some(next as u32);
        } else {
            debug_assert!(false, "slot {slot} left unassigned");
        }
    }
    ranges_by_shard(&owner, shards)
}

/// Number of slots whose owner differs between two owner arrays.
pub fn moved(a: &[Option<u32>], b: &[Option<u32>]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}
