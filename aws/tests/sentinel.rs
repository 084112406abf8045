//! Sentinel mode on the aws driver, through the cluster crate's sentinel operator: one
//! instance per zone (moto), each running a data node and a sentinel started by SSM Run
//! Command. The test-only SSM runner executes the product's scripts on this machine, in a
//! mount namespace per instance, with real redis-server and Redis Sentinel
//! (`redis-server --sentinel`) bound to the loopback stand-ins 127.190.Z.1, 127.191.Z.1 and
//! 127.196.Z.1 (one octet per test; ports 28500+ for data nodes, 100 above for sentinels).
//!
//! First test: create; the primary's process killed (SIGKILL by the pid the runner's
//! systemctl recorded); the sentinels fail over without losing a WAIT-acknowledged write;
//! repair (the driver cannot see processes: the sentinels' majority counting it down is the
//! proof) brings it back as a replica; the planned primary is put back; both passwords rotate;
//! destroy leaves no instance and no SSM parameter. No password is ever in user data, a Run
//! Command or a tag.
//!
//! Second test: what survives a lost provider and a lost instance. A create cut off mid-way
//! (its future dropped, as a killed provider leaves it) is found again from the instances'
//! tags alone and finished under the same id; the state is rebuilt from the tags after a
//! shape change (a removed replica's record goes with it); the primary's instance is
//! terminated outside redisha: the next repair launches a replacement, starts its data node and
//! sentinel there, and the planned primary is put back with no WAIT-acknowledged write lost.
//!
//! Third test: both faults at once. The primary's instance is terminated and the private
//! state lost; the processes' durable records on the security group (copied back there from
//! the instances' tags first, as for a deployment made before them) let one apply repair it.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Fixture, FixtureConfig, Moto};
use redisha_aws::sentinel_records::PROCESS_TAG_PREFIX;
use redisha_aws::testing::ssm_runner::{ReportOnFailure, SsmRunner};
use redisha_aws::testing::{map_hosts, readable_user_data};
use redisha_aws::{secrets, AwsClients, AwsDriver};
use redisha_cluster::sentinel::Member;
use redisha_cluster::sentinel::{Reshape, SentinelOperator, SentinelSettings, SentinelState};
use redisha_cluster::{HostHandle, NodeConfig, Operator, Options, Password};
use redisha_planner::{HostSpec, Request, Role, SentinelSpec, Spread, ZoneSpec};

/// One test's deployment: its name, id and stand-in octet.
struct Site {
    cluster: &'static str,
    id: &'static str,
    octet: u8,
}

const SITE: Site = Site {
    cluster: "awssent",
    id: "00000000000000f5",
    octet: 190,
};
const LOST_SITE: Site = Site {
    cluster: "awslost",
    id: "00000000000000f6",
    octet: 191,
};
const CLUSTER: &str = SITE.cluster;
const CLUSTER_ID: &str = SITE.id;
const PASSWORD: &str = "aws-sentinel-Data-1";
const SENTINEL_PASSWORD: &str = "aws-sentinel-Own-2";
const ROTATED: &str = "aws-sentinel-Data-3";
const SENTINEL_ROTATED: &str = "aws-sentinel-Own-4";
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const MASTER: &str = "orders";
const KEYS: usize = 200;

/// The stand-in addresses 127.<octet>.Z.1, one a zone.
fn stand_ins(site: &Site) -> Vec<String> {
    (1..=ZONES.len())
        .map(|z| format!("127.{}.{z}.1", site.octet))
        .collect()
}

/// A base port in 28500-28589 free on every stand-in, with the sentinels' 100 above.
fn free_base_port(site: &Site) -> u16 {
    (28500..28590)
        .find(|p| {
            stand_ins(site).iter().all(|ip| {
                [*p, p + 100]
                    .iter()
                    .all(|q| std::net::TcpListener::bind((ip.as_str(), *q)).is_ok())
            })
        })
        .expect("a free port in 28500-28589 on the stand-ins")
}

/// One host per zone (`<zone>-1`), a primary with two replicas spread over the zones, and
/// three sentinels.
fn request() -> Request {
    request_with(2)
}

fn request_with(replicas: u32) -> Request {
    Request {
        cluster: redisha_planner::ClusterSpec {
            shards: 1,
            replicas,
            node_memory_mb: 64,
            spread: Spread::Zone,
            survive: Default::default(),
        },
        zones: ZONES
            .iter()
            .map(|z| ZoneSpec {
                name: z.to_string(),
                hosts: vec![HostSpec {
                    name: format!("{z}-1"),
                    memory_mb: 2048,
                    max_nodes: 2,
                    rack: None,
                }],
            })
            .collect(),
        partitions: Vec::new(),
        sentinel: Some(SentinelSpec::default()),
    }
}

fn settings() -> SentinelSettings {
    SentinelSettings {
        master_name: MASTER.into(),
        quorum: 2,
        // Short, so the test's failover is quick; production keeps 5 s.
        down_after_ms: 1500,
        failover_timeout_ms: 10_000,
        ..SentinelSettings::default()
    }
}

fn config(password: &str) -> NodeConfig {
    NodeConfig {
        password: Some(Password::new(password)),
        ..NodeConfig::default()
    }
}

fn driver(client: &AwsClients, fx: &Fixture, base: u16) -> AwsDriver {
    driver_of(&SITE, client, fx, base)
}

/// A driver that knows nothing yet (as a new provider process): everything it finds, it
/// finds by the site's id.
fn driver_of(site: &Site, client: &AwsClients, fx: &Fixture, base: u16) -> AwsDriver {
    let mut c = fx.config_with_id(site.cluster, site.id);
    map_hosts(&mut c, &ZONES, &stand_ins(site), base);
    AwsDriver::with_client(client.clone(), c)
        .expect("driver")
        .for_sentinel_mode()
}

fn operator<'a>(
    driver: &'a AwsDriver,
    password: &str,
    sentinel_password: &str,
) -> SentinelOperator<'a> {
    operator_of(&SITE, driver, password, sentinel_password)
}

fn operator_of<'a>(
    site: &Site,
    driver: &'a AwsDriver,
    password: &str,
    sentinel_password: &str,
) -> SentinelOperator<'a> {
    let op = Operator::with_options(
        driver,
        config(password),
        Options {
            timeout: Duration::from_secs(120),
            ..Options::default()
        },
    );
    SentinelOperator::new(op, settings(), site.id)
        .with_sentinel_password(Some(Password::new(sentinel_password)))
}

async fn redis_login(
    address: &str,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(format!("redis://:{password}@{address}/"))?
        .get_multiplexed_async_connection()
        .await
}

/// What a sentinel at `address` names as the primary, logged in with `password`.
async fn sentinel_primary(address: &str, password: &str) -> Result<String, String> {
    let mut con = redis_login(address, password)
        .await
        .map_err(|e| e.to_string())?;
    let reply: Vec<String> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(MASTER)
        .query_async(&mut con)
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply.join(":"))
}

async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The SSM parameter's value, `None` when it does not exist.
async fn parameter(client: &AwsClients, name: &str) -> Option<String> {
    let out = client
        .ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .ok()?;
    out.parameter().and_then(|p| p.value()).map(str::to_string)
}

/// Every text the product sent or left where others read it: the Run Command scripts, the
/// instances' user data and tags.
async fn public_texts(client: &AwsClients) -> Vec<String> {
    let mut out = Vec::new();
    let commands = client
        .ssm
        .list_commands()
        .send()
        .await
        .expect("ListCommands");
    for c in commands.commands() {
        if let Some(lines) = c.parameters().and_then(|p| p.get("commands")) {
            out.push(lines.join("\n"));
        }
    }
    for i in common::instances_in(client, CLUSTER, &["pending", "running"]).await {
        let id = i.instance_id().unwrap_or_default();
        out.push(readable_user_data(client, id).await);
        for t in i.tags() {
            out.push(format!("{:?}={:?}", t.key(), t.value()));
        }
    }
    out
}

/// Writes `KEYS` keys `<prefix><i>` (each its own name as value) on `primary`, each followed
/// by `WAIT 1`; returns those a replica acknowledged (more than half, or the test fails).
async fn write_acked(primary: &str, prefix: &str) -> Vec<String> {
    let mut con = redis_login(primary, PASSWORD).await.expect("connect");
    let mut acked = Vec::new();
    for i in 0..KEYS {
        let key = format!("{prefix}{i}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(&key)
            .query_async(&mut con)
            .await
            .expect("SET");
        let n: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(1000)
            .query_async(&mut con)
            .await
            .expect("WAIT");
        if n >= 1 {
            acked.push(key);
        }
    }
    assert!(acked.len() > KEYS / 2, "only {} acknowledged", acked.len());
    acked
}

/// Every key of `acked` reads back from `primary` with its value.
async fn assert_none_lost(primary: &str, acked: &[String]) {
    let mut con = redis_login(primary, PASSWORD).await.expect("connect");
    let mut lost = 0;
    for key in acked {
        let v: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("GET");
        lost += usize::from(v.as_deref() != Some(key.as_str()));
    }
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged writes lost",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mode_on_instances_fails_over_repairs_restores_rotates_and_goes() {
    common::log_to_test();
    let Some(moto) = Moto::start() else { return };
    let client = moto.client().await;
    let fx = Fixture::create(&client, &ZONES).await;
    let runner = SsmRunner::booting(moto.port, CLUSTER);
    let _report = ReportOnFailure(&runner);
    tokio::time::timeout(Duration::from_secs(600), run(&client, &fx, &runner))
        .await
        .expect("test timed out");
}

async fn run(client: &AwsClients, fx: &Fixture, runner: &SsmRunner) {
    let base = free_base_port(&SITE);
    let req = request();
    let plan = redisha_planner::plan(&req, None).expect("plan");
    let sentinels = plan.sentinel.clone().expect("sentinel plan").sentinels;
    let driver = driver(client, fx, base);
    let sop = operator(&driver, PASSWORD, SENTINEL_PASSWORD);
    let mut state = SentinelState::default();
    sop.create(&req, &plan.placement, &sentinels, &mut state)
        .await
        .expect("create");

    // One instance per host of the plan, each carrying the cluster id; a data node and a
    // sentinel on each, at the stand-ins.
    let instances = common::instances_in(client, CLUSTER, &["running"]).await;
    assert_eq!(instances.len(), 3);
    for i in &instances {
        assert!(
            i.tags()
                .iter()
                .any(|t| t.key() == Some("redisha:cluster-id") && t.value() == Some(CLUSTER_ID)),
            "{:?} carries the cluster id",
            i.instance_id()
        );
    }
    assert_eq!(state.data.len(), 3);
    assert_eq!(state.sentinels.len(), 3);
    let planned = state.planned_primary().cloned().expect("planned primary");
    let view = sop.observe(&state).await;
    assert_eq!(view.primary.as_deref(), Some(planned.address().as_str()));
    for m in &state.sentinels {
        assert_eq!(m.handle.port, base + 100, "{}", m.handle.name);
        assert_eq!(
            sentinel_primary(&m.address(), SENTINEL_PASSWORD).await,
            Ok(planned.address())
        );
        let refused = sentinel_primary(&m.address(), PASSWORD).await;
        assert!(refused.is_err(), "the sentinel takes the data password");
    }
    // The write guard: an isolated primary stops taking writes.
    let mut con = redis_login(&planned.address(), PASSWORD)
        .await
        .expect("connect");
    let guard: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("min-replicas-to-write")
        .query_async(&mut con)
        .await
        .expect("CONFIG GET");
    assert_eq!(guard.get(1).map(String::as_str), Some("1"));
    // The passwords travel through SSM only.
    assert_eq!(
        parameter(client, &secrets::parameter_name(CLUSTER, CLUSTER_ID)).await,
        Some(PASSWORD.to_string())
    );
    assert_eq!(
        parameter(
            client,
            &secrets::sentinel_parameter_name(CLUSTER, CLUSTER_ID)
        )
        .await,
        Some(SENTINEL_PASSWORD.to_string())
    );
    for text in public_texts(client).await {
        assert!(!text.contains(PASSWORD), "a password in {text}");
        assert!(!text.contains(SENTINEL_PASSWORD), "a password in {text}");
    }

    drop(con);
    // Writes a replica acknowledged (WAIT 1) before the primary dies.
    let acked = write_acked(&planned.address(), "k").await;

    // The primary's process dies (SIGKILL of the pid the runner's systemctl recorded).
    let host = state.host(&planned.handle.host).expect("host").clone();
    let machine = runner
        .machine(host.instance_id.as_deref().expect("instance id"))
        .expect("the primary's machine");
    let pid = machine
        .pid_of(&format!("redisha-node@{}", planned.handle.port))
        .expect("the primary runs");
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let new_primary = wait_for(
        "the sentinels to promote a replica",
        Duration::from_secs(60),
        || async {
            let v = sop.observe(&state).await;
            v.primary.filter(|p| *p != planned.address())
        },
    )
    .await;
    assert_none_lost(&new_primary, &acked).await;

    // Repair: the driver cannot see the process, so it waits for the sentinels' proof (a
    // majority counts it down), then stops and restarts it as a replica of the new primary.
    wait_for(
        "a majority of sentinels to count the old primary down",
        Duration::from_secs(30),
        || async {
            let v = sop.observe(&state).await;
            v.counted_down(&planned.address(), state.sentinels.len())
                .then_some(())
        },
    )
    .await;
    let report = sop.repair(&mut state).await.expect("repair");
    assert_eq!(
        report.actions,
        vec![format!(
            "restarted {} as a replica of {new_primary}",
            planned.handle.name
        )]
    );
    let view = sop.observe(&state).await;
    let old = view
        .data
        .iter()
        .find(|d| d.name == planned.handle.name)
        .expect("the old primary");
    assert_eq!((old.role.as_str(), old.link_up), ("replica", true));
    // Nothing else is proven failed: a second repair does nothing.
    let again = sop.repair(&mut state).await.expect("repair again");
    assert!(again.actions.is_empty(), "{:?}", again.actions);

    // The planned primary is put back by Sentinel itself.
    assert!(sop.restore_primary(&state).await.expect("restore"));
    assert_eq!(
        sop.observe(&state).await.primary.as_deref(),
        Some(planned.address().as_str())
    );

    // Both passwords rotate; the old ones work nowhere, SSM holds the new ones.
    let mut rotated = operator(&driver, ROTATED, SENTINEL_ROTATED);
    rotated.also_accept_on_sentinels([Some(Password::new(SENTINEL_PASSWORD))]);
    rotated
        .rotate_password(&state, Some(Password::new(PASSWORD)))
        .await
        .expect("rotate");
    rotated
        .rotate_sentinel_password(&state)
        .await
        .expect("rotate the sentinels' password");
    for m in &state.data {
        assert!(
            redis_login(&m.address(), ROTATED).await.is_ok(),
            "{}",
            m.handle.name
        );
        let mut old = redis_login(&m.address(), PASSWORD).await;
        if let Ok(con) = old.as_mut() {
            let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(con).await;
            assert!(
                ping.is_err(),
                "{} still takes the old password",
                m.handle.name
            );
        }
    }
    for m in &state.sentinels {
        assert_eq!(
            sentinel_primary(&m.address(), SENTINEL_ROTATED).await,
            Ok(planned.address())
        );
        assert!(sentinel_primary(&m.address(), SENTINEL_PASSWORD)
            .await
            .is_err());
    }
    assert_eq!(
        parameter(client, &secrets::parameter_name(CLUSTER, CLUSTER_ID)).await,
        Some(ROTATED.to_string())
    );
    assert_eq!(
        parameter(
            client,
            &secrets::sentinel_parameter_name(CLUSTER, CLUSTER_ID)
        )
        .await,
        Some(SENTINEL_ROTATED.to_string())
    );
    for text in public_texts(client).await {
        for secret in [PASSWORD, SENTINEL_PASSWORD, ROTATED, SENTINEL_ROTATED] {
            assert!(!text.contains(secret), "a password in {text}");
        }
    }

    // Destroy: no instance, no parameter, no process left.
    let report = driver.destroy().await.expect("destroy");
    assert_eq!(report.terminated.len(), 3);
    assert!(report.security_group_deleted);
    assert!(common::live_instances(client, CLUSTER).await.is_empty());
    assert_eq!(
        parameter(client, &secrets::parameter_name(CLUSTER, CLUSTER_ID)).await,
        None
    );
    assert_eq!(
        parameter(
            client,
            &secrets::sentinel_parameter_name(CLUSTER, CLUSTER_ID)
        )
        .await,
        None
    );
    wait_for(
        "every process to end with its instance",
        Duration::from_secs(20),
        || async {
            let mut any = false;
            for m in state.data.iter().chain(&state.sentinels) {
                any |= tokio::net::TcpStream::connect(m.address()).await.is_ok();
            }
            (!any).then_some(())
        },
    )
    .await;
}

/// What a state says of every process (name, host, address, planned primary, config file):
/// the same whether it came from the apply that made them or from the instances' tags.
fn processes_of(
    state: &SentinelState,
) -> BTreeSet<(String, String, String, bool, Option<PathBuf>)> {
    state
        .data
        .iter()
        .chain(&state.sentinels)
        .map(|m| {
            (
                m.handle.name.clone(),
                m.handle.host.clone(),
                m.address(),
                m.planned_primary,
                m.handle.config_file.clone(),
            )
        })
        .collect()
}

/// The state a new provider process rebuilds from the instances' tags alone.
async fn rebuilt(site: &Site, client: &AwsClients, fx: &Fixture, base: u16) -> SentinelState {
    let fresh = driver_of(site, client, fx, base);
    let sop = operator_of(site, &fresh, PASSWORD, SENTINEL_PASSWORD);
    let mut state = SentinelState::default();
    sop.recover(&mut state)
        .await
        .expect("recover from the tags");
    state
}

/// Runs `body` against moto with the SSM runner booting `site`'s instances, within 15 minutes.
async fn on_moto<F>(site: &Site, body: F)
where
    F: for<'a> AsyncFnOnce(&'a AwsClients, &'a Fixture),
{
    common::log_to_test();
    let Some(moto) = Moto::start() else { return };
    let client = moto.client().await;
    let fx = Fixture::create(&client, &ZONES).await;
    let runner = SsmRunner::booting(moto.port, site.cluster);
    let _report = ReportOnFailure(&runner);
    tokio::time::timeout(Duration::from_secs(900), body(&client, &fx))
        .await
        .expect("test timed out");
}

/// Terminates `host`'s instance outside redisha and waits until `primary` (which ran there)
/// no longer answers; returns the instance's id.
async fn terminate_host(client: &AwsClients, host: &HostHandle, primary: &Member) -> String {
    let old_instance = host.instance_id.clone().expect("instance id");
    client
        .terminate_instances()
        .instance_ids(&old_instance)
        .send()
        .await
        .expect("TerminateInstances");
    wait_for(
        "the terminated instance's primary to stop answering",
        Duration::from_secs(30),
        || async {
            tokio::net::TcpStream::connect(primary.address())
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    old_instance
}

/// Replaces the lost `host` and repairs its processes (a data node and a sentinel) on the new
/// instance, whose id differs from `old_instance`.
async fn replace_and_repair(
    sop: &SentinelOperator<'_>,
    req: &Request,
    state: &mut SentinelState,
    host: &str,
    old_instance: &str,
) {
    let replaced = sop
        .replace_lost_hosts(req, state)
        .await
        .expect("replace the lost host");
    let on_host: BTreeSet<String> = state
        .data
        .iter()
        .chain(&state.sentinels)
        .filter(|m| m.handle.host == host)
        .map(|m| m.handle.name.clone())
        .collect();
    assert_eq!(on_host.len(), 2, "a data node and a sentinel: {on_host:?}");
    assert_eq!(replaced, on_host);
    let new_instance = state
        .host(host)
        .and_then(|h| h.instance_id.clone())
        .expect("the replacement's id");
    assert_ne!(new_instance, old_instance);
    let report = sop
        .repair_replaced(state, &replaced)
        .await
        .expect("repair on the new instance");
    assert_eq!(report.actions.len(), 2, "{:?}", report.actions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mode_on_instances_is_found_by_its_tags_and_replaces_a_terminated_instance() {
    on_moto(&LOST_SITE, run_lost).await;
}

async fn run_lost(client: &AwsClients, fx: &Fixture) {
    let site = &LOST_SITE;
    let base = free_base_port(site);
    let req = request();
    let plan = redisha_planner::plan(&req, None).expect("plan");
    let sentinels = plan.sentinel.clone().expect("sentinel plan").sentinels;
    let planned_name = plan
        .placement
        .nodes
        .iter()
        .find(|n| n.role == Role::Master)
        .map(|n| n.name.clone())
        .expect("a planned primary");

    // A create cut off once its data nodes answer: its future is dropped mid-way, as a killed
    // provider leaves it, and nothing of its state is kept.
    {
        let first = driver_of(site, client, fx, base);
        let sop = operator_of(site, &first, PASSWORD, SENTINEL_PASSWORD);
        let mut dropped = SentinelState::default();
        let data: Vec<String> = stand_ins(site)
            .iter()
            .map(|ip| format!("{ip}:{base}"))
            .collect();
        let all_answer = wait_for(
            "every data node to answer",
            Duration::from_secs(180),
            || async {
                for address in &data {
                    tokio::net::TcpStream::connect(address).await.ok()?;
                }
                Some(())
            },
        );
        tokio::select! {
            done = sop.create(&req, &plan.placement, &sentinels, &mut dropped) => {
                panic!("the create finished before it was cut off: {done:?}")
            }
            () = all_answer => {}
        }
    }

    // A new provider process: the instances' tags alone find the data nodes and the planned
    // primary among them, and the create finishes under the same id on the same instances.
    let driver = driver_of(site, client, fx, base);
    let sop = operator_of(site, &driver, PASSWORD, SENTINEL_PASSWORD);
    let mut state = SentinelState::default();
    let notes = sop.recover(&mut state).await.expect("recover");
    assert_eq!(state.data.len(), 3, "{notes:?}");
    assert_eq!(
        state.planned_primary().map(|m| m.handle.name.clone()),
        Some(planned_name.clone()),
        "{notes:?}"
    );
    let instances_before = common::live_instances(client, site.cluster).await;
    sop.create(&req, &plan.placement, &sentinels, &mut state)
        .await
        .expect("the create, resumed");
    assert_eq!(
        common::live_instances(client, site.cluster).await,
        instances_before,
        "the resumed create launched no instance"
    );
    assert_eq!((state.data.len(), state.sentinels.len()), (3, 3));
    assert_eq!(
        processes_of(&rebuilt(site, client, fx, base).await),
        processes_of(&state)
    );
    let primary = state.planned_primary().cloned().expect("planned primary");
    let acked = write_acked(&primary.address(), "before-").await;

    // One replica fewer: the removed process and its record go; a state rebuilt from the
    // tags has exactly what runs.
    let smaller = request_with(1);
    let shrunk = redisha_planner::plan_with_sentinels(
        &smaller,
        Some(&state.placement()),
        &state.placed_sentinels(),
    )
    .expect("plan");
    let change = Reshape::between(
        &state,
        &shrunk.placement,
        &shrunk.sentinel.as_ref().expect("sentinels").sentinels,
    );
    assert_eq!(
        (change.remove_data.len(), change.add_data.len()),
        (1, 0),
        "{change:?}"
    );
    sop.reshape(&smaller, &change, &mut state)
        .await
        .expect("reshape");
    sop.settle(&state).await.expect("settle");
    assert_eq!(state.data.len(), 2);
    assert_eq!(
        processes_of(&rebuilt(site, client, fx, base).await),
        processes_of(&state)
    );

    // The primary's instance is terminated outside redisha; its processes die with it.
    let host = state.host(&primary.handle.host).cloned().expect("host");
    let old_instance = terminate_host(client, &host, &primary).await;
    // The driver proves the host lost: a replacement instance runs the same processes under
    // their names; Sentinel fails over meanwhile, and the planned primary comes back.
    replace_and_repair(&sop, &smaller, &mut state, &host.name, &old_instance).await;
    assert!(sop.restore_primary(&state).await.expect("restore"));
    sop.settle(&state).await.expect("settle");
    assert_eq!(
        sop.observe(&state).await.primary,
        Some(primary.address()),
        "the planned primary is back"
    );
    assert_none_lost(&primary.address(), &acked).await;
    assert_eq!(
        processes_of(&rebuilt(site, client, fx, base).await),
        processes_of(&state)
    );

    let report = driver.destroy().await.expect("destroy");
    assert!(report.security_group_deleted);
    assert!(common::live_instances(client, site.cluster)
        .await
        .is_empty());
    assert_eq!(
        parameter(client, &secrets::parameter_name(site.cluster, site.id)).await,
        None
    );
}

const GONE_SITE: Site = Site {
    cluster: "awsgone",
    id: "00000000000000f7",
    octet: 196,
};

/// The site's security groups (by its id tag).
async fn groups_of(client: &AwsClients, site: &Site) -> Vec<aws_sdk_ec2::types::SecurityGroup> {
    client
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:redisha:cluster-id")
                .values(site.id)
                .build(),
        )
        .send()
        .await
        .expect("DescribeSecurityGroups")
        .security_groups()
        .to_vec()
}

/// The process records (`redisha:process:*` tags) on the site's security group.
async fn group_records(client: &AwsClients, site: &Site) -> BTreeSet<(String, String)> {
    groups_of(client, site)
        .await
        .iter()
        .flat_map(|g| g.tags())
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .filter(|(k, _)| k.starts_with(PROCESS_TAG_PREFIX))
        .collect()
}

/// Third test: two faults at once (issue 17's last gap). The primary's instance is terminated
/// AND the provider's private state is lost; the state rebuilt from the deployment's id alone
/// still knows the lost instance's processes (their durable records on the security group),
/// so one apply, in the provider's order, repairs the host (after Sentinel's failover) instead
/// of seeing a shape change. Before that, the group's records are deleted, as on a deployment
/// made before them, and the first discovery copies them back from the instances' tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mode_on_instances_repairs_a_lost_primary_instance_without_private_state() {
    on_moto(&GONE_SITE, run_gone).await;
}

async fn run_gone(client: &AwsClients, fx: &Fixture) {
    let site = &GONE_SITE;
    let base = free_base_port(site);
    let req = request();
    let plan = redisha_planner::plan(&req, None).expect("plan");
    let sentinels = plan.sentinel.clone().expect("sentinel plan").sentinels;
    let first = driver_of(site, client, fx, base);
    let sop = operator_of(site, &first, PASSWORD, SENTINEL_PASSWORD);
    let mut made = SentinelState::default();
    sop.create(&req, &plan.placement, &sentinels, &mut made)
        .await
        .expect("create");
    let processes = processes_of(&made);
    assert_eq!(processes.len(), 6);
    // Every process has its durable record on the group.
    let records = group_records(client, site).await;
    assert_eq!(records.len(), 6, "{records:?}");

    // The upgrade path: a deployment made before the durable records has only the instances'
    // tags. A discovery copies them onto the group.
    let group = groups_of(client, site)
        .await
        .first()
        .and_then(|g| g.group_id().map(str::to_string))
        .expect("the deployment's group");
    let mut delete = client.delete_tags().resources(&group);
    for (k, v) in &records {
        delete = delete.tags(aws_sdk_ec2::types::Tag::builder().key(k).value(v).build());
    }
    delete.send().await.expect("DeleteTags");
    assert!(group_records(client, site).await.is_empty());
    assert_eq!(
        processes_of(&rebuilt(site, client, fx, base).await),
        processes
    );
    assert_eq!(group_records(client, site).await, records, "copied back");

    let primary = made.planned_primary().cloned().expect("planned primary");
    let acked = write_acked(&primary.address(), "gone-").await;
    eprintln!("{} of {KEYS} writes acknowledged by WAIT", acked.len());

    // The primary's instance is terminated outside redisha, and the provider's private state
    // is lost with the provider (a new driver, an empty state).
    let host = made.host(&primary.handle.host).cloned().expect("host");
    let old_instance = terminate_host(client, &host, &primary).await;
    drop(sop);
    drop(first);
    let started = Instant::now();
    let driver = driver_of(site, client, fx, base);
    let op = operator_of(site, &driver, PASSWORD, SENTINEL_PASSWORD);
    let mut state = SentinelState::default();
    let notes = op.recover(&mut state).await.expect("recover");
    // The lost instance's processes are known, under their names, with the planned primary.
    assert_eq!(processes_of(&state), processes, "{notes:?}");

    // One apply, in the provider's order: lost hosts, repair (waiting for Sentinel's
    // failover), shape (nothing to change), planned primary, settle.
    replace_and_repair(&op, &req, &mut state, &host.name, &old_instance).await;
    let replan = redisha_planner::plan_with_sentinels(
        &req,
        Some(&state.placement()),
        &state.placed_sentinels(),
    )
    .expect("plan");
    let change = Reshape::between(
        &state,
        &replan.placement,
        &replan.sentinel.as_ref().expect("sentinels").sentinels,
    );
    assert!(
        change.is_empty(),
        "a repair, not a shape change: {change:?}"
    );
    op.reshape(&req, &change, &mut state)
        .await
        .expect("reshape");
    assert!(op.restore_primary(&state).await.expect("restore"));
    op.settle(&state).await.expect("settle");
    eprintln!(
        "one apply without private state repaired the lost primary's instance in {:?}",
        started.elapsed()
    );

    assert_eq!(processes_of(&state), processes, "the planned shape");
    assert_eq!(
        op.observe(&state).await.primary,
        Some(primary.address()),
        "the planned primary is back"
    );
    for s in &state.sentinels {
        assert_eq!(
            sentinel_primary(&s.address(), SENTINEL_PASSWORD).await,
            Ok(primary.address()),
            "sentinel {}",
            s.handle.name
        );
    }
    assert_none_lost(&primary.address(), &acked).await;
    assert_eq!(
        processes_of(&rebuilt(site, client, fx, base).await),
        processes
    );
    assert_eq!(group_records(client, site).await.len(), 6);

    let report = driver.destroy().await.expect("destroy");
    assert!(report.security_group_deleted);
    assert!(common::live_instances(client, site.cluster)
        .await
        .is_empty());
    assert!(
        groups_of(client, site).await.is_empty(),
        "no group, so no record"
    );
    for name in [
        secrets::parameter_name(site.cluster, site.id),
        secrets::sentinel_parameter_name(site.cluster, site.id),
    ] {
        assert_eq!(parameter(client, &name).await, None, "{name}");
    }
}
