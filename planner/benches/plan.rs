//! Planner speed: 1,000 shards x 3 copies over 3,000 hosts in 6 zones (the target is well under
//! 1 s), and 10x that work (10,000 shards over 30,000 hosts) to check the growth stays near
//! linear. Figures go to docs/performance.md.

use criterion::{criterion_group, criterion_main, Criterion};
use redisha_planner::{analyse, plan, ClusterSpec, HostSpec, Request, Spread, Survive, ZoneSpec};

/// `shards` x 3 copies over `hosts` one-node hosts in 6 zones, 10 racks per zone: every host
/// slot is needed, so the solver's capacity reasoning is exercised, not just its happy path.
fn request(shards: u32, hosts: usize) -> Request {
    let zones = 6;
    Request {
        cluster: ClusterSpec {
            shards,
            replicas: 2,
            node_memory_mb: 4096,
            spread: Spread::Zone,
            survive: Default::default(),
        },
        zones: (0..zones)
            .map(|z| ZoneSpec {
                name: format!("zone-{z}"),
                hosts: (0..hosts / zones)
                    .map(|h| HostSpec {
                        name: format!("z{z}-h{h}"),
                        memory_mb: 8192,
                        max_nodes: 1,
                        rack: Some(format!("r{}", h % 10)),
                    })
                    .collect(),
            })
            .collect(),
        partitions: Vec::new(),
        sentinel: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    group.sample_size(10);
    let base = request(1_000, 3_000);
    group.bench_function("1000 shards x 3, 3000 hosts, 6 zones", |b| {
        b.iter(|| plan(&base, None).expect("feasible"))
    });
    let big = request(10_000, 30_000);
    group.bench_function("10000 shards x 3, 30000 hosts, 6 zones", |b| {
        b.iter(|| plan(&big, None).expect("feasible"))
    });
    let mut two_zones = base.clone();
    two_zones.cluster.survive = Survive { zones: 2, hosts: 2 };
    group.bench_function(
        "1000 shards x 3, 3000 hosts, survive.zones=2 hosts=2",
        |b| b.iter(|| plan(&two_zones, None).expect("goal met")),
    );
    let placement = plan(&base, None).expect("feasible").placement;
    group.bench_function("analyse 3000 nodes", |b| {
        b.iter(|| analyse(&base, &placement))
    });
    let mut replan = base.clone();
    replan.cluster.shards = 1_100;
    replan.zones.iter_mut().for_each(|z| {
        z.hosts.iter_mut().for_each(|h| h.max_nodes = 2);
    });
    group.bench_function("re-plan 1000 -> 1100 shards with previous", |b| {
        b.iter(|| plan(&replan, Some(&placement)).expect("feasible"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
