//! Kill a master (by pid): observe shows it, repair brings back the planned master; a node
//! that lost its data rejoins as a replica and gets its shard back; the password changes
//! rolling; the password never reaches process arguments and the config file is 0600.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use redisha_cluster::{health, import, ClusterState, NodeConfig, Operator, Password, ProcessState};
use redisha_planner::Role;

const KEYS: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_restores_planned_masters_and_password_changes_rolling() {
    let fx = Fixture::new(22, 7200);
    tokio::time::timeout(Duration::from_secs(300), run(&fx))
        .await
        .expect("test timed out");
}

fn config(password: &str) -> NodeConfig {
    let mut c = NodeConfig {
        password: Some(Password::new(password)),
        ..NodeConfig::default()
    };
    // Fail over fast so the test sees a promoted replica quickly.
    c.redis_config
        .insert("cluster-node-timeout".into(), "2000".into());
    c
}

async fn run(fx: &Fixture) {
    // Stage marks with times: shown when the test fails, to tell where it got stuck.
    let t0 = std::time::Instant::now();
    let mut op = Operator::with_options(&fx.driver, config("first-secret"), options());
    let plan = placement(3, 1);
    let mut state = ClusterState::default();
    op.create(&fx.request, &plan, &mut state)
        .await
        .expect("create");

    // The password is only in the 0600 config file, never in a process's arguments.
    for n in &state.nodes {
        let conf = n.handle.config_file.as_ref().expect("config file");
        let mode = std::fs::metadata(conf).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", conf.display());
        let pid = n.handle.pid.expect("pid");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        assert!(!String::from_utf8_lossy(&cmdline).contains("first-secret"));
    }
    let pw = Password::new("first-secret");
    eprintln!("stage: write keys at {:?}", t0.elapsed());
    let con = cluster_client(&state, Some(&pw)).await;
    write_keys(&con, KEYS).await;

    // Kill shard 0's master: observe reports it, its replica takes over.
    let victim = state.node(&master_name(0)).expect("s0-m").clone();
    kill9(victim.handle.pid.expect("pid"));
    let seen = op.observe(&state).await;
    let obs = seen.node(&victim.name).expect("observed");
    assert!(!obs.view.alive);
    assert_eq!(obs.process, ProcessState::Stopped);
    assert!(seen.drift().iter().any(|d| d.contains("s0-m is down")));
    let replica = replica_name(0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = op.observe(&state).await;
        if seen.node(&replica).and_then(|n| n.view.role) == Some(Role::Master) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica never promoted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    eprintln!("stage: repair after kill at {:?}", t0.elapsed());
    let report = op.repair(&fx.request, &mut state).await.expect("repair");
    assert!(!report.actions.is_empty());
    let seen = op.observe(&state).await;
    assert!(seen.drift().is_empty(), "{:?}", seen.drift());
    assert_eq!(
        seen.node(&victim.name).and_then(|n| n.view.role),
        Some(Role::Master)
    );

    // Shard 1's master loses its data: it comes back empty, its replica keeps the keys, and
    // once synced the planned master serves again.
    let lost = state.node(&master_name(1)).expect("s1-m").clone();
    kill9(lost.handle.pid.expect("pid"));
    std::fs::remove_dir_all(lost.handle.data_dir.as_ref().expect("dir")).expect("wipe");
    eprintln!("stage: repair after data loss at {:?}", t0.elapsed());
    op.repair(&fx.request, &mut state)
        .await
        .expect("repair after data loss");
    let seen = op.observe(&state).await;
    assert!(seen.drift().is_empty(), "{:?}", seen.drift());
    assert_ne!(state.node(&lost.name).expect("s1-m").node_id, lost.node_id);
    eprintln!("stage: read keys after data loss at {:?}", t0.elapsed());
    let missing = missing_keys(&state, Some(&pw), KEYS).await;
    assert!(missing.is_empty(), "{} keys lost", missing.len());

    eprintln!("stage: password change at {:?}", t0.elapsed());
    // Rolling password change.
    op.reconfigure(&state, config("second-secret"))
        .await
        .expect("password change");
    let addresses = state.endpoints();
    let new_pw = Password::new("second-secret");
    let h = health(&addresses, Some(&new_pw), &options())
        .await
        .expect("health");
    assert!(h.healthy(), "{h:?}");
    assert!(h
        .nodes
        .iter()
        .all(|n| n.alive && n.cluster_state.as_deref() == Some("ok")));
    assert!(
        health(&addresses, Some(&pw), &options()).await.is_err(),
        "old password still works"
    );
    for n in &state.nodes {
        let text =
            std::fs::read_to_string(n.handle.config_file.as_ref().expect("conf")).expect("read");
        assert!(text.contains("second-secret") && !text.contains("first-secret"));
    }
    let missing = missing_keys(&state, Some(&new_pw), KEYS).await;
    assert!(missing.is_empty(), "{} keys lost", missing.len());

    eprintln!("stage: redis_config at {:?}", t0.elapsed());
    // redis_config: a setting redis takes live, then one that needs a rolling restart.
    let mut live = config("second-secret");
    live.redis_config
        .insert("maxmemory-policy".into(), "allkeys-lru".into());
    op.reconfigure(&state, live.clone())
        .await
        .expect("live setting");
    let mut restart = live.clone();
    restart.redis_config.insert("io-threads".into(), "2".into());
    op.reconfigure(&state, restart)
        .await
        .expect("rolling restart");
    let seen = op.observe(&state).await;
    assert!(seen.drift().is_empty(), "{:?}", seen.drift());
    for n in &state.nodes {
        let text =
            std::fs::read_to_string(n.handle.config_file.as_ref().expect("conf")).expect("read");
        assert!(text.contains("maxmemory-policy allkeys-lru") && text.contains("io-threads 2"));
    }
    let missing = missing_keys(&state, Some(&new_pw), KEYS).await;
    assert!(
        missing.is_empty(),
        "{} keys lost in the rolling restart",
        missing.len()
    );

    eprintln!("stage: import at {:?}", t0.elapsed());
    // Import adopts the same cluster from one address.
    let imported = import(&addresses[0], Some(&new_pw), &options())
        .await
        .expect("import");
    // Import reports the cluster as it is (roles as the nodes report them).
    let seen = op.observe(&state).await;
    assert_eq!(imported.nodes.len(), state.nodes.len());
    for n in &imported.nodes {
        let ours = state.by_id(&n.node_id).expect("imported node is ours");
        assert_eq!(ours.address(), n.address());
        let real = seen.node(&ours.name).and_then(|o| o.view.role);
        assert_eq!(real, Some(n.role), "{} imported as {:?}", ours.name, n.role);
    }

    op.destroy(&mut state).await.expect("destroy");
    assert!(!fx.data_dir().exists());
}
