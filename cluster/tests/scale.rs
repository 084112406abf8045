//! Create 3 shards x 1 replica over 3 zones, write 10,000 keys, scale 3 -> 5 -> 3 shards,
//! add a replica per shard, and destroy: no key lost, no process or data left.

mod common;

use std::time::Duration;

use common::*;
use redisha_cluster::{ClusterState, NodeConfig, Operator, Password, ProcessState};
use redisha_planner::{Role, Step};

const KEYS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_and_in_keeps_every_key_then_destroy_leaves_nothing() {
    let fx = Fixture::new(21, 7100);
    tokio::time::timeout(Duration::from_secs(300), run(&fx))
        .await
        .expect("test timed out");
}

async fn run(fx: &Fixture) {
    // With a password, so slot migration must authenticate its MIGRATE calls (AUTH2).
    let pw = Password::new("scale-secret");
    let config = NodeConfig {
        password: Some(pw.clone()),
        ..NodeConfig::default()
    };
    let op = Operator::with_options(&fx.driver, config, options());
    let three = placement(3, 1);
    let mut state = ClusterState::default();
    op.create(&fx.request, &three, &mut state)
        .await
        .expect("create");

    // Masters spread over the three zones, every node on its own loopback host address.
    let observed = op.observe(&state).await;
    assert!(observed.drift().is_empty(), "{:?}", observed.drift());
    for n in &state.nodes {
        let planned = three.node(&n.name).expect("planned node");
        let zone_octet = planned.zone.trim_start_matches("zone-");
        assert!(
            n.handle.ip.starts_with(&format!("127.21.{zone_octet}.")),
            "{}",
            n.handle.ip
        );
        assert_eq!(
            observed.node(&n.name).and_then(|o| o.view.role),
            Some(n.role)
        );
    }

    let con = cluster_client(&state, Some(&pw)).await;
    write_keys(&con, KEYS).await;

    // 3 -> 5 shards.
    let five = placement(5, 1);
    let mut steps = add_shard_steps(&five, 3);
    steps.extend(add_shard_steps(&five, 4));
    steps.extend(slot_moves(&three, &five));
    op.update(&fx.request, &five, &steps, &mut state)
        .await
        .expect("scale out");
    assert_eq!(state.nodes.len(), 10);
    let observed = op.observe(&state).await;
    assert!(observed.drift().is_empty(), "{:?}", observed.drift());
    for m in five.masters() {
        let view = &observed.node(&m.name).expect("observed").view;
        assert_eq!(view.slots, m.slots, "slots of {}", m.name);
    }
    let missing = missing_keys(&state, Some(&pw), KEYS).await;
    assert!(
        missing.is_empty(),
        "{} keys lost scaling out",
        missing.len()
    );

    // 5 -> 3 shards.
    let mut steps = slot_moves(&five, &three);
    for s in [3, 4] {
        steps.push(Step::RemoveNode {
            node: replica_name(s, 0),
        });
        steps.push(Step::RemoveNode {
            node: master_name(s),
        });
    }
    let removed: Vec<_> = state
        .nodes
        .iter()
        .filter(|n| n.shard >= 3)
        .map(|n| n.handle.clone())
        .collect();
    op.update(&fx.request, &three, &steps, &mut state)
        .await
        .expect("scale in");
    assert_eq!(state.nodes.len(), 6);
    for h in &removed {
        assert!(h.pid.is_none_or(|p| !pid_alive(p)), "{} still runs", h.name);
        assert!(
            !h.data_dir.as_ref().expect("dir").exists(),
            "{} data left",
            h.name
        );
    }
    let missing = missing_keys(&state, Some(&pw), KEYS).await;
    assert!(missing.is_empty(), "{} keys lost scaling in", missing.len());

    // One more replica per shard.
    let two_replicas = placement(3, 2);
    let steps: Vec<Step> = (0..3)
        .flat_map(|s| {
            let n = two_replicas
                .node(&replica_name(s, 1))
                .expect("new replica")
                .clone();
            [
                Step::AddNode {
                    node: n.name.clone(),
                    shard: s,
                    host: n.host,
                    zone: n.zone,
                },
                Step::AttachReplica {
                    node: n.name.clone(),
                    master: master_name(s),
                },
                Step::WaitSync { node: n.name },
            ]
        })
        .collect();
    op.update(&fx.request, &two_replicas, &steps, &mut state)
        .await
        .expect("add replicas");
    let observed = op.observe(&state).await;
    assert!(observed.drift().is_empty(), "{:?}", observed.drift());
    for s in 0..3 {
        let r = observed.node(&replica_name(s, 1)).expect("observed");
        assert_eq!(r.view.role, Some(Role::Replica));
        assert_eq!(r.master_name.as_deref(), Some(master_name(s).as_str()));
        assert_eq!(r.view.link_status.as_deref(), Some("up"));
    }

    // Destroy: every process gone (by pid), every directory removed.
    let handles: Vec<_> = state.nodes.iter().map(|n| n.handle.clone()).collect();
    op.destroy(&mut state).await.expect("destroy");
    assert!(state.nodes.is_empty() && state.hosts.is_empty());
    for h in &handles {
        let pid = h.pid.expect("pid recorded");
        assert!(!pid_alive(pid), "{} (pid {pid}) still runs", h.name);
        assert_eq!(fx.driver_inspect(h).await, ProcessState::Stopped);
    }
    assert!(!fx.data_dir().exists(), "data dir left behind");
}

trait Inspect {
    async fn driver_inspect(&self, h: &redisha_cluster::NodeHandle) -> ProcessState;
}

impl Inspect for Fixture {
    async fn driver_inspect(&self, h: &redisha_cluster::NodeHandle) -> ProcessState {
        use redisha_cluster::Driver;
        self.driver.inspect_node(h).await.expect("inspect")
    }
}
