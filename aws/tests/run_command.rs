//! Nodes on running instances, through SSM Run Command, for real: moto records the commands
//! the driver sends, and the test-only runner (`redisha_aws::testing::ssm_runner`) executes
//! each one's script text on this machine, inside a throwaway mount namespace per instance,
//! with `systemctl` a shim that starts redis-server by pid file. First boot runs the node
//! setup of the instance's user data the same way. Nodes bind to loopback stand-ins
//! 127.131.Z.1 (the address map); moto's private addresses are never contacted.
//!
//! The password reaches the nodes through SSM only: the runner's stand-in for
//! `redisha-password` reads the cluster's parameter from moto's SSM (the product's helper signs
//! with instance-profile credentials from the metadata service, which does not exist here) and
//! writes auth.conf before every start, as the product's does.

mod common;

use std::net::{IpAddr, TcpListener};
use std::time::Duration;

use common::{host, Fixture, FixtureConfig, Moto, SUBNET_ZONES};
use redisha_aws::testing::ssm_runner::SsmRunner;
use redisha_aws::{AddressOverride, AwsClients, AwsDriver, AwsDriverConfig};
use redisha_cluster::{Driver, HostHandle, NodeConfig, NodePlan, Password};

const PASSWORD: &str = "run-command-Secret-7";
const ROTATED: &str = "run-command-Rotated-8";
const SETTLE: Duration = Duration::from_secs(30);

fn config(password: &str, redis_config: &[(&str, &str)]) -> NodeConfig {
    NodeConfig {
        password: Some(Password::new(password)),
        redis_config: redis_config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        acl: Default::default(),
    }
}

/// A base port of 9500-9598 free (with its next port and their bus ports) on `ip`.
fn free_base_port(ip: &str) -> u16 {
    (9500..9598)
        .find(|p| {
            [*p, p + 1, p + 10000, p + 10001]
                .iter()
                .all(|q| TcpListener::bind((ip, *q)).is_ok())
        })
        .expect("a free port in 9500-9598")
}

/// The driver for cluster `cluster`, with host `host` mapped to `ip:base`.
fn driver(
    client: &AwsClients,
    fx: &Fixture,
    cluster: &str,
    host: &str,
    ip: &str,
    base: u16,
) -> AwsDriver {
    let mut c: AwsDriverConfig = fx.config_with_id(cluster, "00000000000000c3");
    c.address_override.insert(
        host.to_string(),
        AddressOverride {
            ip: ip.parse::<IpAddr>().expect("ip"),
            base_port: base,
        },
    );
    c.max_nodes_per_host = 2;
    c.timeouts.update = Duration::from_secs(60);
    AwsDriver::with_client(client.clone(), c).expect("driver")
}

fn redis_with(password: &str, ip: &str, port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://:{password}@{ip}:{port}/"))?
        .get_connection_with_timeout(Duration::from_secs(3))
}

fn config_get(password: &str, ip: &str, port: u16, key: &str) -> String {
    let mut conn = redis_with(password, ip, port).expect("the node answers with the password");
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(key)
        .query(&mut conn)
        .expect("CONFIG GET");
    reply.get(1).cloned().unwrap_or_default()
}

/// Every script the runner ran exited 0.
fn assert_all_ran_ok(runner: &SsmRunner) {
    assert!(runner.trouble().is_empty(), "{:?}", runner.trouble());
    for ran in runner.ran() {
        assert_eq!(
            ran.code, 0,
            "{} on {}: {}",
            ran.comment, ran.instance_id, ran.stderr
        );
    }
}

/// The commands moto holds: (instance ids, script text).
async fn sent_commands(client: &AwsClients) -> Vec<(Vec<String>, String)> {
    let out = client
        .ssm
        .list_commands()
        .send()
        .await
        .expect("ListCommands");
    out.commands()
        .iter()
        .map(|c| {
            let text = c
                .parameters()
                .and_then(|p| p.get("commands"))
                .map(|l| l.join("\n"))
                .unwrap_or_default();
            (c.instance_ids().to_vec(), text)
        })
        .collect()
}

struct Setup {
    moto: Moto,
    client: AwsClients,
    driver: AwsDriver,
    runner: SsmRunner,
    handle: HostHandle,
    plan: redisha_cluster::HostPlan,
    ip: String,
    base: u16,
}

/// One instance of a cluster, launched by the driver and first-booted by the runner.
async fn launched(cluster: &str, ip: &str) -> Option<Setup> {
    let moto = Moto::start()?;
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let host_name = format!("{cluster}-a-0");
    let base = free_base_port(ip);
    let driver = driver(&client, &fx, cluster, &host_name, ip, base);
    let runner = SsmRunner::booting(moto.port, cluster);
    let plan = host(&host_name, "us-east-1a", 0, 0, 1);
    let cfg = config(PASSWORD, &[]);
    driver
        .preflight(std::slice::from_ref(&plan), &[], &cfg)
        .await
        .expect("preflight");
    let handle = driver.provision_host(&plan, &cfg).await.expect("provision");
    Some(Setup {
        moto,
        client,
        driver,
        runner,
        handle,
        plan,
        ip: ip.to_string(),
        base,
    })
}

/// The "run the node-setup part for real": the first boot's node setup (from the
/// instance's user data) starts the node on its stand-in, cluster-enabled, with the password
/// from SSM; the driver's start then only finds it answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_boot_node_setup_runs_for_real_in_a_mount_namespace() {
    let Some(s) = launched("rcboot", "127.131.1.1").await else {
        return;
    };
    // No start command: the first boot alone starts the node.
    let deadline = std::time::Instant::now() + SETTLE;
    while redis_with(PASSWORD, &s.ip, s.base).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first boot did not start the node: {:?} {:?}",
            s.runner.ran(),
            s.runner.trouble()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sent_commands(&s.client).await.is_empty(),
        "nothing but the first boot ran"
    );
    // The driver's start finds it answering and sends nothing.
    let node = s
        .driver
        .start_node(&s.handle, &s.plan.nodes[0], &config(PASSWORD, &[]))
        .await
        .expect("the first-booted node answers");
    assert_eq!((node.ip.as_str(), node.port), (s.ip.as_str(), s.base));
    assert!(sent_commands(&s.client).await.is_empty());
    assert_all_ran_ok(&s.runner);
    assert_eq!(
        config_get(PASSWORD, &s.ip, s.base, "cluster-enabled"),
        "yes"
    );
    assert_eq!(config_get(PASSWORD, &s.ip, s.base, "bind"), s.ip);
    assert_eq!(
        config_get(PASSWORD, &s.ip, s.base, "cluster-announce-ip"),
        s.ip
    );
    assert!(
        redis_with("not-the-password", &s.ip, s.base)
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err(),
        "the node requires the password"
    );
    let instance = s.handle.instance_id.clone().expect("instance id");
    let machine = s.runner.machine(&instance).expect("the instance's machine");
    let unit = format!("redisha-node@{}", s.base);
    assert!(machine.exists(&format!(
        "/etc/systemd/system/multi-user.target.wants/{unit}.service"
    )));
    let node_conf = machine.read(&format!("/etc/redisha/node-{}.conf", s.base));
    assert!(!node_conf.contains(PASSWORD), "{node_conf}");
    assert!(
        node_conf.contains("include /etc/redisha/auth.conf"),
        "{node_conf}"
    );
    assert!(machine.read("/etc/redisha/auth.conf").contains(PASSWORD));
    assert!(machine.pid_of(&unit).is_some());

    // At boot every node unit and exporter runs the password helper at the same moment (a CI
    // drill once lost a node to two runs sharing one `.new` file): many at once all succeed and
    // leave the file whole.
    let many = (0..12)
        .map(|_| "/usr/local/sbin/redisha-password & pids=\"$pids $!\"\n".to_string())
        .collect::<String>();
    let out = machine
        .run(&format!(
            "pids=''\n{many}failed=0\nfor p in $pids; do wait $p || failed=$((failed + 1)); done\necho \"failed=$failed\"\n"
        ))
        .expect("run the helper concurrently");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("failed=0"),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let auth = machine.read("/etc/redisha/auth.conf");
    assert!(
        auth.contains(&format!("requirepass \"{PASSWORD}\"")),
        "{auth}"
    );
    drop(s.runner);
    s.driver.destroy().await.expect("destroy");
    drop(s.moto);
}

/// Start, stop, restart (a hung node too), reconfigure, rotate, add and remove nodes on a
/// running instance, each through a Run Command the runner executes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_added_restarted_reconfigured_and_removed_through_run_command() {
    let Some(s) = launched("rclife", "127.131.2.1").await else {
        return;
    };
    let (ip, base) = (s.ip.as_str(), s.base);
    let instance = s.handle.instance_id.clone().expect("instance id");
    let cfg = config(PASSWORD, &[]);
    let n0 = s
        .driver
        .start_node(&s.handle, &s.plan.nodes[0], &cfg)
        .await
        .expect("first node");

    // Add a node on the running instance: its config, unit and start come by Run Command.
    let added_plan = NodePlan {
        name: format!("{}-n1", s.plan.name),
        index_on_host: 1,
        shard: 0,
        role: redisha_planner::Role::Replica,
    };
    let n1 = s
        .driver
        .start_node(&s.handle, &added_plan, &cfg)
        .await
        .expect("the added node starts");
    assert_eq!(n1.port, base + 1);
    s.runner.settle(s.moto.port, SETTLE);
    let machine = s.runner.machine(&instance).expect("machine");
    let unit1 = format!("redisha-node@{}", base + 1);
    assert!(machine.exists(&format!("/etc/redisha/node-{}.conf", base + 1)));
    assert!(machine.exists(&format!(
        "/etc/systemd/system/multi-user.target.wants/{unit1}.service"
    )));
    assert_eq!(config_get(PASSWORD, ip, base + 1, "cluster-enabled"), "yes");

    // Stop: the unit stops (stays enabled), the node no longer answers.
    s.driver.stop_node(&n1).await.expect("stop");
    assert!(
        machine.pid_of(&unit1).is_none(),
        "the node's process is gone"
    );
    assert!(machine.exists(&format!(
        "/etc/systemd/system/multi-user.target.wants/{unit1}.service"
    )));
    s.driver
        .start_node(&s.handle, &added_plan, &cfg)
        .await
        .expect("restart");
    assert!(
        !machine.exists(&format!("/run/redisha/start-now-{}", base + 1)),
        "the start's no-delay mark is cleared"
    );

    // A hung node (SIGSTOP: it takes connections but never answers) is ended by the stop.
    let unit0 = format!("redisha-node@{base}");
    let hung = machine.pid_of(&unit0).expect("n0 runs");
    let status = std::process::Command::new("kill")
        .args(["-STOP", &hung.to_string()])
        .status()
        .expect("kill -STOP");
    assert!(status.success());
    s.driver.stop_node(&n0).await.expect("the hung node stops");
    s.driver
        .start_node(&s.handle, &s.plan.nodes[0], &cfg)
        .await
        .expect("and starts again");
    assert_ne!(machine.pid_of(&unit0), Some(hung), "a new process");

    // Reconfigure: the shared settings are written for the next start (no password in them),
    // and a restart runs with them.
    let tuned = config(PASSWORD, &[("maxmemory-policy", "allkeys-lru")]);
    s.driver
        .write_node_config(&n0, &tuned)
        .await
        .expect("reconfigure");
    s.runner.settle(s.moto.port, SETTLE);
    let shared = machine.read("/etc/redisha/shared.conf");
    assert!(shared.contains("maxmemory-policy allkeys-lru"), "{shared}");
    assert!(!shared.contains(PASSWORD), "{shared}");
    s.driver.stop_node(&n0).await.expect("stop");
    s.driver
        .start_node(&s.handle, &s.plan.nodes[0], &tuned)
        .await
        .expect("start");
    assert_eq!(
        config_get(PASSWORD, ip, base, "maxmemory-policy"),
        "allkeys-lru"
    );

    // A rotation goes to SSM only; a node started afterwards reads the new password there.
    let rotated = config(ROTATED, &[("maxmemory-policy", "allkeys-lru")]);
    s.driver
        .write_node_config(&n1, &rotated)
        .await
        .expect("rotate");
    s.driver.stop_node(&n1).await.expect("stop");
    s.driver
        .start_node(&s.handle, &added_plan, &rotated)
        .await
        .expect("start");
    assert_eq!(config_get(ROTATED, ip, base + 1, "cluster-enabled"), "yes");

    // Remove: stopped, unit disabled, config and data deleted (a reboot does not bring it back).
    s.driver.wipe_node(&n1).await.expect("remove");
    s.runner.settle(s.moto.port, SETTLE);
    assert!(machine.pid_of(&unit1).is_none());
    assert!(!machine.exists(&format!(
        "/etc/systemd/system/multi-user.target.wants/{unit1}.service"
    )));
    assert!(!machine.exists(&format!("/etc/redisha/node-{}.conf", base + 1)));
    assert!(!machine.exists(&format!("/var/lib/redisha/node-{}", base + 1)));
    assert!(
        machine.exists("/etc/systemd/system/redisha-node@.service"),
        "the template stays for the other node"
    );
    assert!(machine.pid_of(&unit0).is_some(), "the other node runs on");

    // Every command went to this cluster's instance (moto lists every instance of the region
    // on each command; the script names the one it was for), and none carried a password.
    let sent = sent_commands(&s.client).await;
    assert!(sent.len() >= 10, "{sent:?}");
    for (ids, text) in &sent {
        assert!(ids.contains(&instance), "{text}");
        assert_eq!(
            redisha_aws::node_commands::addressed_to(text),
            Some(instance.as_str()),
            "{text}"
        );
        assert!(
            !text.contains(PASSWORD) && !text.contains(ROTATED),
            "{text}"
        );
    }
    assert_all_ran_ok(&s.runner);
    drop(s.runner);
    s.driver.destroy().await.expect("destroy");
    drop(s.moto);
}
