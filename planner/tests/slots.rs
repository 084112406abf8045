//! Slot layout: contiguous, balanced, and a re-plan moves the fewest slots.

mod common;

use common::{request, uniform};
use redisha_planner::{plan, slots, Spread, SLOT_COUNT};

#[test]
fn fresh_layout_is_contiguous_and_balanced() {
    for shards in [1, 3, 7, 1000, 16384] {
        let layout = slots::fresh(shards);
        let mut next = 0u32;
        for ranges in &layout {
            assert_eq!(ranges.len(), 1);
            assert_eq!(u32::from(ranges[0].start), next);
            next = u32::from(ranges[0].end) + 1;
        }
        assert_eq!(next, SLOT_COUNT);
        let sizes: Vec<u32> = layout.iter().map(|r| r[0].len()).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
    }
}

#[test]
fn replan_moves_the_minimum() {
    for (from, to) in [(3u32, 4u32), (4, 3), (3, 5), (6, 2), (5, 5)] {
        let old = slots::owners(
            &plan(&request(from, 1, Spread::Zone, uniform(3, 4, 3)), None)
                .unwrap()
                .placement,
        );
        let new = slots::rebalance(&old, to);
        let mut owner = vec![None; SLOT_COUNT as usize];
        for (shard, ranges) in new.iter().enumerate() {
            for r in ranges {
                for s in r.start..=r.end {
                    owner[usize::from(s)] = Some(shard as u32);
                }
            }
        }
        // Lower bound: every slot above a kept shard's new size, plus all of removed shards.
        let (base, extra) = (SLOT_COUNT / to, SLOT_COUNT % to);
        let mut old_sizes: Vec<u32> = (0..from)
            .map(|s| old.iter().filter(|o| **o == Some(s)).count() as u32)
            .collect();
        let removed: u32 = old_sizes.iter().skip(to as usize).sum();
        old_sizes.truncate(to as usize);
        old_sizes.sort_unstable_by(|a, b| b.cmp(a));
        let kept_excess: u32 = old_sizes
            .iter()
            .enumerate()
            .map(|(i, &o)| o.saturating_sub(base + u32::from((i as u32) < extra)))
            .sum();
        assert_eq!(
            slots::moved(&old, &owner) as u32,
            removed + kept_excess,
            "{from} -> {to}"
        );
    }
}
