//! `redisha_cluster` with the aws driver, end to end: the real Terraform CLI and the built
//! provider against moto_server (EC2 emulated on loopback), with real redis-server processes
//! standing in for the instances' nodes.
//!
//! moto's instances have invented private addresses that nothing listens on, so each planned
//! host is mapped (REDISHA_AWS_TEST_ADDRESS_MAP, a test-only setting of the driver) to a
//! loopback stand-in 127.0.9Z.H started the way the instance's cloud-init configures its node:
//! cluster mode, the shared settings file with the password, its own `cluster-announce-ip`.
//! Everything else (planning, launching, forming, drift, repair, destroy) is the product's code.
//!
//! One scenario: create a 3-zone cluster (3 shards, 1 replica, one node per instance), check
//! EC2 and Redis, terminate a master's instance, see the drift in a plan, apply (the instance
//! is replaced in its zone and its node rejoins), destroy (no instance, no security group).

mod common;
#[path = "common/moto.rs"]
mod moto;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{crash, TfDir};
use moto::{instances, Fixture, Moto, ZONES};
use redisha_cluster::{NodeConfig, Password};
use serde_json::Value as Json;

const CLUSTER: &str = "e2e-aws";
const PASSWORD: &str = "aws-e2e-Secret-41";
const HOSTS_PER_ZONE: usize = 2;

/// A planned host and its loopback stand-in address.
#[derive(Debug, Clone)]
struct Host {
    name: String,
    zone: String,
    ip: String,
}

/// The candidates the provider names `<zone>-<n>`: with one node per instance, 6 nodes over 3
/// zones use exactly two per zone. Stand-in addresses are 127.0.<decade><zone>.<n>: each test
/// of this file has its own decade, so they run side by side.
fn hosts(decade: u8) -> Vec<Host> {
    let mut out = Vec::new();
    for (zi, zone) in ZONES.iter().enumerate() {
        for h in 1..=HOSTS_PER_ZONE {
            out.push(Host {
                name: format!("{zone}-{h}"),
                zone: zone.to_string(),
                ip: format!("127.0.{decade}{}.{h}", zi + 1),
            });
        }
    }
    out
}

/// A port that is free, with its cluster bus port, on every stand-in address.
fn free_port(hosts: &[Host]) -> u16 {
    (7710..7790)
        .find(|p| {
            hosts.iter().all(|h| {
                TcpListener::bind((h.ip.as_str(), *p)).is_ok()
                    && TcpListener::bind((h.ip.as_str(), p + 10000)).is_ok()
            })
        })
        .expect("a free port on the stand-in addresses")
}

/// A redis-server standing in for one instance's node, ended by pid on drop.
struct StandIn {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl StandIn {
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Starts a fresh node for `host` as the instance's cloud-init would (see aws/src/user_data.rs):
/// a node config with cluster mode, the cluster bus port and the announce address, including a
/// mode-0600 shared file with the password (never on the command line).
fn start_standin(host: &Host, port: u16) -> StandIn {
    let dir = tempfile::Builder::new()
        .prefix("redisha-aws-standin")
        .tempdir()
        .expect("temp dir");
    let shared = dir.path().join("shared.conf");
    let config = NodeConfig {
        password: Some(Password::new(PASSWORD)),
        redis_config: BTreeMap::new(),
    };
    let node_conf = dir.path().join("node.conf");
    std::fs::write(&shared, config.render_shared_lines()).expect("write shared.conf");
    std::fs::write(
        &node_conf,
        format!(
            "port {port}\nbind {ip}\nprotected-mode no\ndaemonize no\ndir {dir}\ncluster-enabled yes\n\
             cluster-config-file nodes.conf\ncluster-port {bus}\ncluster-announce-ip {ip}\nsave \"\"\n\
             appendonly no\ninclude {shared}\n",
            ip = host.ip,
            dir = dir.path().display(),
            bus = port + 10000,
            shared = shared.display(),
        ),
    )
    .expect("write node.conf");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [&shared, &node_conf] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600))
                .expect("chmod 0600");
        }
    }
    let child = Command::new("redis-server")
        .arg(&node_conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    StandIn { child, _dir: dir }
}

type StandIns = Arc<Mutex<BTreeMap<String, StandIn>>>;

fn redis_conn(ip: &str, port: u16) -> redis::Connection {
    let client =
        redis::Client::open(format!("redis://:{PASSWORD}@{ip}:{port}/")).expect("redis url");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.get_connection_with_timeout(Duration::from_secs(2)) {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => {
                panic!("cannot reach the stand-in on {ip}:{port}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn cluster_state(ip: &str, port: u16) -> String {
    let mut conn = redis_conn(ip, port);
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut conn)
        .expect("CLUSTER INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("cluster_state:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Waits (bounded) for every node to report cluster_state ok.
fn assert_cluster_ok(hosts: &[Host], port: u16, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for h in hosts {
        loop {
            let state = cluster_state(&h.ip, port);
            if state == "ok" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{when}: node on {} reports cluster_state {state:?}",
                h.ip
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn main_tf(endpoint: &str, fx: &Fixture, app_group: &str) -> String {
    let subnets: Vec<String> = fx.subnet_ids().iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"
terraform {{
  required_providers {{
    redisha = {{ source = "redisha/redisha" }}
  }}
}}

provider "redisha" {{
  region   = "us-east-1"
  endpoint = "{endpoint}"
}}

data "redisha_aws_topology" "vpc" {{
  vpc_id = "{vpc}"
}}

resource "redisha_cluster" "shop" {{
  name           = "{CLUSTER}"
  shards         = 3
  replicas       = 1
  node_memory_mb = 256
  password       = "{PASSWORD}"

  aws {{
    subnet_ids             = [{subnets}]
    instance_type          = "t3.small"
    ami                    = "{ami}"
    max_nodes_per_instance = 1
    allowed_cidrs          = ["10.0.0.0/16"]
    allowed_security_group_ids = ["{app_group}"]
    tags                   = {{ team = "sre" }}
    data_volume {{
      size_gb = 10
    }}
  }}

  timeouts {{
    create = "2m"
    update = "4m"
    delete = "2m"
  }}
}}

output "nodes" {{
  value = redisha_cluster.shop.nodes
}}

output "zone_names" {{
  value = data.redisha_aws_topology.vpc.zone_names
}}
"#,
        vpc = fx.vpc_id,
        subnets = subnets.join(", "),
        ami = fx.ami,
    )
}

fn run(tf: &TfDir, args: &[&str]) -> common::TfOutput {
    let out = tf.run(args);
    assert!(
        !out.all().contains(PASSWORD),
        "the password appeared in the output of terraform {args:?}"
    );
    out
}

fn nodes(tf: &TfDir) -> Vec<Json> {
    tf.output_json()["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn s<'a>(v: &'a Json, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// Checks the nodes output: all up, 3 masters, each node in its host's zone, no shard with two
/// copies in one zone.
fn assert_nodes(nodes: &[Json], when: &str) {
    assert_eq!(nodes.len(), 6, "{when}: {nodes:?}");
    for n in nodes {
        assert_eq!(s(n, "status"), "up", "{when}: {n}");
        assert!(
            s(n, "host").starts_with(s(n, "zone")),
            "{when}: node on a host of another zone: {n}"
        );
    }
    let masters = nodes.iter().filter(|n| s(n, "role") == "master").count();
    assert_eq!(masters, 3, "{when}: {nodes:?}");
    let mut seen = BTreeSet::new();
    for n in nodes {
        assert!(
            seen.insert((n["shard"].as_u64(), s(n, "zone").to_string())),
            "{when}: two copies of a shard in one zone: {nodes:?}"
        );
    }
}

/// What every scenario of this file starts from: moto with a 3-zone VPC, a stand-in node per
/// planned host, and a Terraform directory whose provider maps hosts to the stand-ins.
struct Scenario {
    rt: tokio::runtime::Runtime,
    // Dropped after the stand-ins and the Terraform directory (fields drop in order).
    standins: StandIns,
    tf: TfDir,
    client: redisha_aws::AwsClients,
    fx: Fixture,
    app_group: String,
    hosts: Vec<Host>,
    port: u16,
    moto: Moto,
}

/// `None` (the test is skipped, saying why) without redis-server or moto_server.
fn scenario(decade: u8) -> Option<Scenario> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: redis-server not installed (apt-get install redis-server)");
        return None;
    }
    let moto = Moto::start()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(moto.client());
    let fx = rt.block_on(Fixture::create(&client, &ZONES));
    // The application's group, allowed to the client ports (never to the bus).
    let app_group = rt
        .block_on(
            client
                .create_security_group()
                .group_name("e2e-app")
                .description("the application")
                .vpc_id(&fx.vpc_id)
                .send(),
        )
        .expect("CreateSecurityGroup")
        .group_id()
        .expect("group id")
        .to_string();

    let hosts = hosts(decade);
    let port = free_port(&hosts);
    let standins: StandIns = Arc::new(Mutex::new(
        hosts
            .iter()
            .map(|h| (h.name.clone(), start_standin(h, port)))
            .collect(),
    ));
    let address_map: Vec<String> = hosts
        .iter()
        .map(|h| format!("{}={}:{port}", h.name, h.ip))
        .collect();

    let mut tf = TfDir::dev(&main_tf(&moto.endpoint(), &fx, &app_group));
    let no_file = tf.path().join("no-such-aws-file").display().to_string();
    tf.env = vec![
        ("REDISHA_AWS_TEST_ADDRESS_MAP".into(), address_map.join(",")),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("AWS_CONFIG_FILE".into(), no_file.clone()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), no_file),
    ];
    Some(Scenario {
        rt,
        standins,
        tf,
        client,
        fx,
        app_group,
        hosts,
        port,
        moto,
    })
}

#[test]
fn aws_cluster_is_created_repaired_after_a_lost_instance_and_destroyed() {
    let Some(Scenario {
        rt,
        standins,
        tf,
        client,
        fx,
        app_group,
        hosts,
        port,
        moto,
    }) = scenario(9)
    else {
        return;
    };

    // Create.
    run(&tf, &["apply", "-auto-approve", "-no-color"]).assert_success("terraform apply (create)");
    let outputs = tf.output_json();
    assert_eq!(
        outputs["zone_names"],
        serde_json::json!(ZONES),
        "redisha_aws_topology lists the subnets' zones"
    );

    // EC2: one instance per planned host, in the host's zone and its subnet, tagged, in the
    // cluster's security group.
    let seen = rt.block_on(instances(&client, CLUSTER));
    let live: Vec<_> = seen.iter().filter(|i| i.is_live()).collect();
    let live_hosts: BTreeSet<&str> = live.iter().map(|i| i.host()).collect();
    let expected: BTreeSet<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        live_hosts, expected,
        "one instance per planned host: {seen:?}"
    );
    assert_eq!(live.len(), 6, "{seen:?}");
    let groups = rt.block_on(cluster_groups(&client));
    let group = groups
        .security_groups()
        .first()
        .expect("the cluster's security group")
        .clone();
    let group_id = group.group_id().unwrap_or_default().to_string();
    for i in &live {
        let zone = i
            .host()
            .rsplit_once('-')
            .map(|(z, _)| z)
            .unwrap_or_default();
        assert_eq!(i.zone, zone, "instance of {} in its planned zone", i.host());
        let subnet = fx
            .subnets
            .iter()
            .find(|(_, z)| z == zone)
            .map(|(id, _)| id.as_str());
        assert_eq!(
            Some(i.subnet_id.as_str()),
            subnet,
            "instance of {} in its zone's subnet",
            i.host()
        );
        assert_eq!(
            i.tags.get("redisha:cluster").map(String::as_str),
            Some(CLUSTER)
        );
        assert_eq!(
            i.tags.get("team").map(String::as_str),
            Some("sre"),
            "user tags on {}",
            i.id
        );
        assert!(
            i.security_groups.contains(&group_id),
            "{} in the cluster's group",
            i.id
        );
    }
    // Group rules: the node port from the group itself, the allowed CIDR and the allowed
    // application group; its bus port
    // (unauthenticated gossip) from the group alone.
    let rule = |port: i32| {
        group
            .ip_permissions()
            .iter()
            .find(|p| p.from_port() == Some(port))
            .cloned()
            .unwrap_or_else(|| panic!("no rule for port {port}: {group:?}"))
    };
    for p in [6379, 16379] {
        let r = rule(p);
        assert_eq!(
            r.to_port(),
            Some(p),
            "one node per instance opens one port: {r:?}"
        );
        assert!(
            r.user_id_group_pairs()
                .iter()
                .any(|g| g.group_id() == Some(group_id.as_str())),
            "{r:?}"
        );
        let from_cidr = r
            .ip_ranges()
            .iter()
            .any(|c| c.cidr_ip() == Some("10.0.0.0/16"));
        assert_eq!(from_cidr, p == 6379, "port {p}: {r:?}");
        let from_app = r
            .user_id_group_pairs()
            .iter()
            .any(|g| g.group_id() == Some(app_group.as_str()));
        assert_eq!(from_app, p == 6379, "port {p}: {r:?}");
    }
    // Data volumes: a 10 GiB encrypted volume on every instance.
    let ids: Vec<String> = live.iter().map(|i| i.id.clone()).collect();
    let volumes = rt
        .block_on(
            client
                .describe_volumes()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("attachment.instance-id")
                        .set_values(Some(ids.clone()))
                        .build(),
                )
                .send(),
        )
        .expect("DescribeVolumes");
    for id in &ids {
        assert!(
            volumes.volumes().iter().any(|v| v.size() == Some(10)
                && v.encrypted() == Some(true)
                && v.attachments()
                    .iter()
                    .any(|a| a.instance_id() == Some(id.as_str()))),
            "no 10 GiB encrypted data volume on {id}: {volumes:?}"
        );
    }

    // Secrets: the password is in no instance's user data as anyone allowed
    // ec2:DescribeInstanceAttribute reads it; it is the cluster's SecureString parameter.
    for id in &ids {
        let text = rt.block_on(readable_user_data(&client, id));
        assert!(
            !text.contains(PASSWORD),
            "the password is in the user data of {id}"
        );
    }
    assert_eq!(
        rt.block_on(cluster_parameters(&client)),
        vec![("SecureString".to_string(), PASSWORD.to_string())],
        "one SecureString parameter holds the password"
    );

    // Redis: the cluster formed through the stand-ins, as planned.
    assert_cluster_ok(&hosts, port, "after create");
    let before = nodes(&tf);
    assert_nodes(&before, "after create");

    // Lose a master's instance: terminate it; its node dies with it.
    let master = before
        .iter()
        .find(|n| s(n, "role") == "master")
        .expect("a master")
        .clone();
    let lost_host = hosts
        .iter()
        .find(|h| h.name == s(&master, "host"))
        .expect("the master's host")
        .clone();
    let lost = live
        .iter()
        .find(|i| i.host() == lost_host.name)
        .expect("the master's instance")
        .id
        .clone();
    rt.block_on(client.terminate_instances().instance_ids(&lost).send())
        .expect("TerminateInstances");
    drop(standins.lock().expect("stand-ins").remove(&lost_host.name));

    let plan = run(&tf, &["plan", "-no-color", "-detailed-exitcode"]);
    assert_eq!(
        plan.code,
        Some(2),
        "a terminated instance is drift:\n{}",
        plan.all()
    );

    // The replacement instance's cloud-init starts a fresh node on it: emulate that by starting
    // a fresh stand-in once a new live instance for the host exists, while terraform apply
    // waits for the node to answer. It is started again if it stops: with the address map the
    // old and the new node share one address, so the repair's SHUTDOWN of the dead node (sent
    // to the old instance's address, which on EC2 is a different one) can reach the fresh
    // stand-in when it is already up.
    let stop = Arc::new(AtomicBool::new(false));
    let emulator = {
        let stop = stop.clone();
        let standins = standins.clone();
        let host = lost_host.clone();
        let endpoint_port = moto.port;
        let lost = lost.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let client = rt.block_on(moto::client_at(endpoint_port));
            while !stop.load(Ordering::SeqCst) {
                let replaced = rt
                    .block_on(instances(&client, CLUSTER))
                    .iter()
                    .any(|i| i.host() == host.name && i.id != lost && i.is_live());
                if replaced {
                    let mut map = standins.lock().expect("stand-ins");
                    let running = map.get_mut(&host.name).is_some_and(StandIn::running);
                    if !running {
                        map.insert(host.name.clone(), start_standin(&host, port));
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let apply = run(&tf, &["apply", "-auto-approve", "-no-color"]);
    stop.store(true, Ordering::SeqCst);
    let _ = emulator.join();
    apply.assert_success("terraform apply (repair)");

    let seen = rt.block_on(instances(&client, CLUSTER));
    let replacement: Vec<_> = seen
        .iter()
        .filter(|i| i.host() == lost_host.name && i.is_live())
        .collect();
    assert_eq!(
        replacement.len(),
        1,
        "one live instance for {}: {seen:?}",
        lost_host.name
    );
    assert_ne!(
        replacement[0].id, lost,
        "the terminated instance was replaced"
    );
    assert_eq!(
        replacement[0].zone, lost_host.zone,
        "the replacement is in the same zone"
    );
    assert_eq!(seen.iter().filter(|i| i.is_live()).count(), 6, "{seen:?}");
    assert_cluster_ok(&hosts, port, "after repair");
    let after = nodes(&tf);
    assert_nodes(&after, "after repair");
    let role_of = |ns: &[Json], name: &str| {
        ns.iter()
            .find(|n| s(n, "name") == name)
            .map(|n| s(n, "role").to_string())
    };
    for n in &before {
        assert_eq!(
            role_of(&after, s(n, "name")),
            Some(s(n, "role").to_string()),
            "planned roles are restored"
        );
    }
    let replaced_node = after
        .iter()
        .find(|n| s(n, "name") == s(&master, "name"))
        .expect("the lost master's node");
    assert_ne!(
        s(replaced_node, "id"),
        s(&master, "id"),
        "the replacement node joined with a new id"
    );
    let again = run(&tf, &["plan", "-no-color", "-detailed-exitcode"]);
    assert_eq!(
        again.code,
        Some(0),
        "the repaired cluster plans no change:\n{}",
        again.all()
    );

    // Destroy: no instance, no security group left.
    run(&tf, &["destroy", "-auto-approve", "-no-color"]).assert_success("terraform destroy");
    let seen = rt.block_on(instances(&client, CLUSTER));
    assert!(
        seen.iter().all(|i| !i.is_live()),
        "live instances after destroy: {seen:?}"
    );
    let groups = rt.block_on(cluster_groups(&client));
    assert!(
        groups.security_groups().is_empty(),
        "the security group is deleted: {groups:?}"
    );
    assert_eq!(
        rt.block_on(cluster_parameters(&client)),
        vec![],
        "the password parameter is deleted"
    );
}

/// An instance's user data as `ec2:DescribeInstanceAttribute` shows it, decoded, with each of
/// its base64 files decoded too.
async fn readable_user_data(client: &redisha_aws::AwsClients, instance_id: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let answer = client
        .describe_instance_attribute()
        .instance_id(instance_id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .expect("DescribeInstanceAttribute");
    let encoded = answer
        .user_data()
        .and_then(|u| u.value())
        .expect("user data");
    let document = String::from_utf8(b64.decode(encoded).expect("base64")).expect("utf-8");
    let files: Vec<String> = document
        .lines()
        .filter_map(|l| l.trim().strip_prefix("content: "))
        .map(|c| String::from_utf8_lossy(&b64.decode(c).expect("base64 file")).into_owned())
        .collect();
    format!("{document}\n{}", files.join("\n"))
}

/// (type, decrypted value) of every SSM parameter under the cluster's name.
async fn cluster_parameters(client: &redisha_aws::AwsClients) -> Vec<(String, String)> {
    let answer = client
        .ssm
        .get_parameters_by_path()
        .path(format!("/redisha/{CLUSTER}"))
        .recursive(true)
        .with_decryption(true)
        .send()
        .await
        .expect("GetParametersByPath");
    answer
        .parameters()
        .iter()
        .map(|p| {
            (
                p.r#type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                p.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The cluster's security groups, as EC2 (moto) lists them: by the cluster's name tag (a new
/// group's name also carries the cluster id, `redisha-<name>-<id>`).
async fn cluster_groups(
    client: &aws_sdk_ec2::Client,
) -> aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput {
    client
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:redisha:cluster")
                .values(CLUSTER)
                .build(),
        )
        .send()
        .await
        .expect("DescribeSecurityGroups")
}

/// Live instance ids of the cluster, sorted.
fn live_ids(rt: &tokio::runtime::Runtime, client: &aws_sdk_ec2::Client) -> Vec<String> {
    let mut ids: Vec<String> = rt
        .block_on(instances(client, CLUSTER))
        .into_iter()
        .filter(|i| i.is_live())
        .map(|i| i.id)
        .collect();
    ids.sort();
    ids
}

/// The provider killed mid-create on aws, and later Terraform's private state lost: neither
/// leaves anything behind or launches anything twice. The next plan says the create resumes,
/// the apply finishes it with the instances already launched (found by the cluster id on
/// them, recorded before the kill), and with the private state gone the cluster is found again
/// from its id alone (nodes recorded on their instances) and plans no change.
#[test]
fn aws_create_killed_midway_resumes_and_lost_private_state_is_rebuilt() {
    let Some(sc) = scenario(8) else {
        return;
    };
    let (rt, client, tf) = (&sc.rt, &sc.client, &sc.tf);

    let mut cmd = tf.command(&["apply", "-auto-approve", "-no-color"]);
    let log = tf.path().join("provider-killed.log");
    cmd.env("TF_LOG_PROVIDER", "debug").env("TF_LOG_PATH", &log);
    let killed = crash::run_killed_at(cmd, &log, crash::Kill::at("create.hosts_provisioned", 1));
    assert!(
        !killed.output.all().contains(PASSWORD),
        "the password appeared in the killed apply's output"
    );
    let launched = live_ids(rt, client);
    assert_eq!(
        launched.len(),
        6,
        "every host's instance was launched before the kill"
    );
    let group = rt.block_on(cluster_groups(client));
    let group = group
        .security_groups()
        .first()
        .expect("the cluster's security group exists from the start of the create");
    let tag = |key: &str| {
        group
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(tag("redisha:status"), "creating", "{group:?}");
    let cluster_id = tag("redisha:cluster-id");
    assert_eq!(cluster_id.len(), 16, "{group:?}");

    let plan = run(tf, &["plan", "-no-color"]);
    plan.assert_success("terraform plan after the killed create");
    assert!(
        plan.all().contains("Resuming an interrupted create"),
        "the plan says the create resumes:\n{}",
        plan.all()
    );
    run(tf, &["apply", "-auto-approve", "-no-color"]).assert_success("apply resumes the create");
    assert_eq!(
        live_ids(rt, client),
        launched,
        "the resumed create used the instances already launched: none twice, none terminated"
    );
    let outputs = tf.output_json();
    let state = tf.run(&["state", "show", "-no-color", "redisha_cluster.shop"]);
    assert!(
        state.stdout.contains(&cluster_id),
        "the resumed cluster keeps the id its instances carry ({cluster_id}):\n{}",
        state.stdout
    );
    assert_cluster_ok(&sc.hosts, sc.port, "after the resumed create");
    assert_nodes(
        outputs["nodes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
        "after the resumed create",
    );
    let group = rt.block_on(cluster_groups(client));
    let ready = group.security_groups().first().is_some_and(|g| {
        g.tags()
            .iter()
            .any(|t| t.key() == Some("redisha:status") && t.value() == Some("ready"))
    });
    assert!(
        ready,
        "the finished create says so on its record: {group:?}"
    );

    // Terraform loses the private state (a provider killed mid-update, a restored state file).
    assert!(
        crash::drop_private_state(tf.path()),
        "there was private state to lose"
    );
    let plan = run(tf, &["plan", "-no-color", "-detailed-exitcode"]);
    assert_eq!(
        plan.code,
        Some(0),
        "found again from its id alone, the cluster plans no change:\n{}",
        plan.all()
    );
    run(tf, &["apply", "-auto-approve", "-no-color"]).assert_success("apply without private state");
    assert_eq!(
        live_ids(rt, client),
        launched,
        "nothing launched or terminated"
    );
    assert_nodes(&nodes(tf), "after the apply without private state");

    run(tf, &["destroy", "-auto-approve", "-no-color"]).assert_success("terraform destroy");
    assert_eq!(
        live_ids(rt, client),
        Vec::<String>::new(),
        "every instance terminated"
    );
    assert!(
        rt.block_on(cluster_groups(client))
            .security_groups()
            .is_empty(),
        "the security group (and the record on it) is deleted"
    );
}
