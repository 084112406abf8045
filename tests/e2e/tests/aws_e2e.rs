//! `redisha_cluster` with the aws driver, end to end: the real Terraform CLI and the built
//! provider against moto_server (EC2 emulated on loopback), with real redis-server processes
//! standing in for the instances' nodes.
//!
//! moto's instances have invented private addresses that nothing listens on, so each planned
//! host is mapped (REDISHA_AWS_TEST_ADDRESS_MAP, a test-only setting of the driver) to a
//! loopback stand-in address. The instances' nodes are not emulated by the test: the test-only
//! SSM runner (`redisha_aws::testing::ssm_runner`) runs, for real and in a mount namespace per
//! instance, the node setup of each new instance's user data (as cloud-init would) and every
//! Run Command script the provider sends (start, stop, reconfigure, remove), so the nodes bound
//! to the stand-ins are what the product's own text set up. Everything else (planning,
//! launching, forming, drift, repair, destroy) is the product's code.
//!
//! Scenarios: create a 3-zone cluster (3 shards, 1 replica, one node per instance), check
//! EC2 and Redis, terminate a master's instance, see the drift in a plan, apply (the instance
//! is replaced in its zone and its node rejoins), destroy (no instance, no security group); a
//! create killed midway and resumed; and on running instances (three nodes per instance), a
//! rolling `redis_config` change, a killed node repaired, nodes added to and removed from
//! existing instances, all through SSM Run Command; and `terraform import` of a running
//! cluster by its id and one node's address, then adopted.

mod common;
#[path = "common/moto.rs"]
mod moto;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{crash, TfDir};
use moto::{instances, Fixture, Moto, SeenInstance, ZONES};
use redisha_aws::testing::readable_user_data;
use redisha_aws::testing::ssm_runner::SsmRunner;
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
/// zones use exactly two per zone. Stand-in addresses are `<prefix><zone>.<n>` (127.0.9Z.N for
/// the prefix 127.0.9): each test of this file has its own prefix, so they run side by side.
fn hosts(prefix: &str) -> Vec<Host> {
    let mut out = Vec::new();
    for (zi, zone) in ZONES.iter().enumerate() {
        for h in 1..=HOSTS_PER_ZONE {
            out.push(Host {
                name: format!("{zone}-{h}"),
                zone: zone.to_string(),
                ip: format!("{prefix}{}.{h}", zi + 1),
            });
        }
    }
    out
}

/// A base port in `range` that is free, with the next `width - 1` ports and all their cluster
/// bus ports, on every stand-in address.
fn free_port(hosts: &[Host], range: std::ops::Range<u16>, width: u16) -> u16 {
    range
        .into_iter()
        .find(|p| {
            hosts.iter().all(|h| {
                (*p..p + width).all(|q| {
                    TcpListener::bind((h.ip.as_str(), q)).is_ok()
                        && TcpListener::bind((h.ip.as_str(), q + 10000)).is_ok()
                })
            })
        })
        .expect("a free port on the stand-in addresses")
}

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

/// What differs between the scenarios' configurations.
#[derive(Debug, Clone)]
struct Shape {
    replicas: u32,
    nodes_per_instance: u32,
    /// The body of `redis_config = { ... }`, or empty for none.
    redis_config: &'static str,
    /// A `configuration_endpoint` in the scenario's private hosted zone ([`ENDPOINT_NAME`]).
    endpoint: bool,
}

/// The configuration endpoint's name, in the private hosted zone `internal.example` of the
/// fixture's VPC.
const ENDPOINT_NAME: &str = "cache.internal.example";

const ONE_PER_INSTANCE: Shape = Shape {
    replicas: 1,
    nodes_per_instance: 1,
    redis_config: "",
    endpoint: true,
};

/// Six nodes, two on each of three instances (room for a third).
const THREE_PER_INSTANCE: Shape = Shape {
    replicas: 1,
    nodes_per_instance: 3,
    redis_config: "",
    endpoint: false,
};

fn main_tf(endpoint: &str, fx: &Fixture, app_group: &str, zone_id: &str, shape: &Shape) -> String {
    let subnets: Vec<String> = fx.subnet_ids().iter().map(|s| format!("{s:?}")).collect();
    let redis_config = if shape.redis_config.is_empty() {
        String::new()
    } else {
        format!("  redis_config   = {{ {} }}\n", shape.redis_config)
    };
    let configuration_endpoint = if shape.endpoint {
        format!(
            "  configuration_endpoint {{\n    hosted_zone_id = \"{zone_id}\"\n    name           = \"{ENDPOINT_NAME}\"\n  }}\n"
        )
    } else {
        String::new()
    };
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
  replicas       = {replicas}
  node_memory_mb = 256
  password       = "{PASSWORD}"
{redis_config}{configuration_endpoint}
  aws {{
    subnet_ids             = [{subnets}]
    instance_type          = "t3.small"
    ami                    = "{ami}"
    max_nodes_per_instance = {nodes_per_instance}
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

output "configuration_endpoint" {{
  value = redisha_cluster.shop.configuration_endpoint_address
}}

output "zone_names" {{
  value = data.redisha_aws_topology.vpc.zone_names
}}
"#,
        vpc = fx.vpc_id,
        subnets = subnets.join(", "),
        ami = fx.ami,
        replicas = shape.replicas,
        nodes_per_instance = shape.nodes_per_instance,
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
    assert_node_count(nodes, 6, when);
}

/// [`assert_nodes`] for `count` nodes.
fn assert_node_count(nodes: &[Json], count: usize, when: &str) {
    assert_eq!(nodes.len(), count, "{when}: {nodes:?}");
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

/// What every scenario of this file starts from: moto with a 3-zone VPC, the SSM runner that
/// boots the cluster's instances and runs the commands sent to them, and a Terraform directory
/// whose provider maps hosts to their stand-in addresses.
struct Scenario {
    rt: tokio::runtime::Runtime,
    // Dropped first (fields drop in order): the runner ends its nodes while moto still runs.
    runner: SsmRunner,
    tf: TfDir,
    client: redisha_aws::AwsClients,
    fx: Fixture,
    app_group: String,
    /// The private hosted zone `internal.example` of the fixture's VPC.
    zone_id: String,
    hosts: Vec<Host>,
    port: u16,
    moto: Moto,
}

impl Scenario {
    /// Rewrites main.tf with `shape`.
    fn reshape(&self, shape: &Shape) {
        std::fs::write(
            self.tf.path().join("main.tf"),
            main_tf(
                &self.moto.endpoint(),
                &self.fx,
                &self.app_group,
                &self.zone_id,
                shape,
            ),
        )
        .expect("write main.tf");
    }

    /// Every script the SSM runner ran exited 0.
    fn assert_commands_ran_ok(&self, when: &str) {
        assert!(
            self.runner.trouble().is_empty(),
            "{when}: {:?}",
            self.runner.trouble()
        );
        for ran in self.runner.ran() {
            assert_eq!(
                ran.code, 0,
                "{when}: {} on {} failed: {}",
                ran.comment, ran.instance_id, ran.stderr
            );
        }
    }

    /// `terraform apply`, which must succeed; on failure what the SSM runner ran is shown too.
    fn apply(&self, what: &str) {
        let started = Instant::now();
        let out = run(&self.tf, &["apply", "-auto-approve", "-no-color"]);
        eprintln!("{what}: {:?}", started.elapsed());
        if !out.success() {
            eprintln!("SSM runner, after {what}:\n{}", self.runner.report());
        }
        out.assert_success(what);
    }

    /// Creates the cluster of [`THREE_PER_INSTANCE`]: its instances' ids and its nodes.
    fn create_on_three_instances(&self) -> (Vec<String>, Vec<Json>) {
        self.apply("terraform apply (create)");
        let launched = live_ids(&self.rt, &self.client);
        assert_eq!(launched.len(), 3, "one instance per zone holds two nodes");
        let created = nodes(&self.tf);
        assert_nodes(&created, "after create");
        (launched, created)
    }

    /// How many commands the runner ran whose comment contains `what` (e.g. "start node"),
    /// once every command sent so far has run: moto reports a command done at once, and a
    /// node can answer before the script that started it has finished, so an uncounted start
    /// would be counted later, as if a later step had sent it.
    fn ran_count(&self, what: &str) -> usize {
        self.runner.settle(self.moto.port, Duration::from_secs(60));
        self.runner
            .ran()
            .iter()
            .filter(|r| r.comment.contains(what))
            .count()
    }
}

/// `None` (the test is skipped, saying why) without redis-server or moto_server. Stand-ins at
/// `<prefix><zone>.<n>`, nodes on a base port of `ports` (and `shape.nodes_per_instance` above).
fn scenario(prefix: &str, ports: std::ops::Range<u16>, shape: &Shape) -> Option<Scenario> {
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

    let hosts = hosts(prefix);
    let width = u16::try_from(shape.nodes_per_instance).unwrap_or(1);
    let port = free_port(&hosts, ports, width);
    let address_map: Vec<String> = hosts
        .iter()
        .map(|h| format!("{}={}:{port}", h.name, h.ip))
        .collect();
    let runner = SsmRunner::booting(moto.port, CLUSTER);

    // The private hosted zone a configuration endpoint goes into.
    let zone_id = rt.block_on(redisha_aws::testing::hosted_zone(
        &client,
        "internal.example",
        Some(&fx.vpc_id),
    ));
    let mut tf = TfDir::dev(&main_tf(&moto.endpoint(), &fx, &app_group, &zone_id, shape));
    tf.env = moto::provider_env(tf.path(), &address_map);
    Some(Scenario {
        rt,
        runner,
        tf,
        client,
        fx,
        app_group,
        zone_id,
        hosts,
        port,
        moto,
    })
}

/// The addresses the configuration endpoint's A record lists now, sorted.
async fn endpoint_addresses(client: &redisha_aws::AwsClients, zone_id: &str) -> Vec<String> {
    redisha_aws::testing::record_values(client, zone_id, ENDPOINT_NAME, "A").await
}

/// The private addresses of the cluster's live instances, sorted.
fn live_addresses(seen: &[SeenInstance]) -> Vec<String> {
    let mut out: Vec<String> = seen
        .iter()
        .filter(|i| i.is_live())
        .map(|i| i.private_ip.clone())
        .collect();
    out.sort();
    out
}

#[test]
fn aws_cluster_is_created_repaired_after_a_lost_instance_and_destroyed() {
    let Some(sc) = scenario("127.0.9", 7710..7790, &ONE_PER_INSTANCE) else {
        return;
    };
    let Scenario {
        rt,
        tf,
        client,
        fx,
        app_group,
        hosts,
        port,
        ..
    } = &sc;
    let (hosts, port) = (hosts.as_slice(), *port);

    // Create.
    run(tf, &["apply", "-auto-approve", "-no-color"]).assert_success("terraform apply (create)");
    let outputs = tf.output_json();
    assert_eq!(
        outputs["zone_names"],
        serde_json::json!(ZONES),
        "redisha_aws_topology lists the subnets' zones"
    );
    assert_eq!(
        outputs["configuration_endpoint"],
        serde_json::json!(format!("{ENDPOINT_NAME}:6379"))
    );
    let zone_id = &sc.zone_id;
    let created = live_addresses(&rt.block_on(instances(client, CLUSTER)));
    assert_eq!(created.len(), 6, "{created:?}");
    assert_eq!(
        rt.block_on(endpoint_addresses(client, zone_id)),
        created,
        "the configuration endpoint lists every instance"
    );

    // EC2: one instance per planned host, in the host's zone and its subnet, tagged, in the
    // cluster's security group.
    let seen = rt.block_on(instances(client, CLUSTER));
    let live: Vec<_> = seen.iter().filter(|i| i.is_live()).collect();
    let live_hosts: BTreeSet<&str> = live.iter().map(|i| i.host()).collect();
    let expected: BTreeSet<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        live_hosts, expected,
        "one instance per planned host: {seen:?}"
    );
    assert_eq!(live.len(), 6, "{seen:?}");
    let groups = rt.block_on(cluster_groups(client));
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
        let text = rt.block_on(readable_user_data(client, id));
        assert!(
            !text.contains(PASSWORD),
            "the password is in the user data of {id}"
        );
    }
    assert_eq!(
        rt.block_on(cluster_parameters(client)),
        vec![("SecureString".to_string(), PASSWORD.to_string())],
        "one SecureString parameter holds the password"
    );

    // Redis: the cluster formed through the stand-ins, as planned.
    assert_cluster_ok(hosts, port, "after create");
    let before = nodes(tf);
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
    // The runner ends the terminated instance's node (by its pid) when moto shows it gone.

    let plan = run(tf, &["plan", "-no-color", "-detailed-exitcode"]);
    assert_eq!(
        plan.code,
        Some(2),
        "a terminated instance is drift:\n{}",
        plan.all()
    );

    // The replacement instance's first boot (run by the SSM runner) starts a fresh node on
    // it; the repair's stop and start of the lost node are Run Commands to it.
    let apply = run(tf, &["apply", "-auto-approve", "-no-color"]);
    apply.assert_success("terraform apply (repair)");

    let seen = rt.block_on(instances(client, CLUSTER));
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
    assert_eq!(
        rt.block_on(endpoint_addresses(client, zone_id)),
        live_addresses(&seen),
        "the configuration endpoint follows the replacement instance"
    );
    assert!(!rt.block_on(endpoint_addresses(client, zone_id)).contains(
        &seen
            .iter()
            .find(|i| i.id == lost)
            .expect("the lost instance")
            .private_ip
    ));
    assert_cluster_ok(hosts, port, "after repair");
    let after = nodes(tf);
    assert_nodes(&after, "after repair");
    sc.assert_commands_ran_ok("after repair");
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
    let again = run(tf, &["plan", "-no-color", "-detailed-exitcode"]);
    assert_eq!(
        again.code,
        Some(0),
        "the repaired cluster plans no change:\n{}",
        again.all()
    );

    // Destroy: no instance, no security group left.
    run(tf, &["destroy", "-auto-approve", "-no-color"]).assert_success("terraform destroy");
    let seen = rt.block_on(instances(client, CLUSTER));
    assert!(
        seen.iter().all(|i| !i.is_live()),
        "live instances after destroy: {seen:?}"
    );
    let groups = rt.block_on(cluster_groups(client));
    assert!(
        groups.security_groups().is_empty(),
        "the security group is deleted: {groups:?}"
    );
    assert_eq!(
        rt.block_on(cluster_parameters(client)),
        vec![],
        "the password parameter is deleted"
    );
    assert_eq!(
        rt.block_on(endpoint_addresses(client, zone_id)),
        Vec::<String>::new(),
        "the configuration endpoint's records are deleted"
    );
}

/// The node port of an address `ip:port`.
fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

/// The ports of the nodes on each host, from the nodes output.
fn ports_by_host(nodes: &[Json]) -> std::collections::BTreeMap<String, BTreeSet<u16>> {
    let mut out = std::collections::BTreeMap::<String, BTreeSet<u16>>::new();
    for n in nodes {
        out.entry(s(n, "host").to_string())
            .or_default()
            .insert(port_of(s(n, "address")));
    }
    out
}

/// Waits (bounded) for every node of the nodes output to report cluster_state ok.
fn nodes_ok(nodes: &[Json], when: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in nodes {
        let (ip, port) = s(n, "address").rsplit_once(':').expect("address");
        let port: u16 = port.parse().expect("port");
        while cluster_state(ip, port) != "ok" {
            assert!(Instant::now() < deadline, "{when}: {n} is not ok");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Waits (bounded) until a plan shows drift (exit code 2).
/// Waits (bounded) until a node other than `id` flags node `id` as failed (`fail`, agreed by
/// the masters, not only `fail?`).
fn wait_until_flagged_failed(nodes: &[Json], id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for n in nodes.iter().filter(|n| s(n, "id") != id) {
            let address = s(n, "address");
            let Some((ip, port)) = address.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let Ok(client) = redis::Client::open(format!("redis://:{PASSWORD}@{ip}:{port}/"))
            else {
                continue;
            };
            let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
                continue;
            };
            let view: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut conn)
                .unwrap_or_default();
            let flagged = view.lines().any(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.first() == Some(&id)
                    && fields
                        .get(2)
                        .is_some_and(|f| f.split(',').any(|flag| flag == "fail"))
            });
            if flagged {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {id} was never flagged failed by the cluster"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_for_drift(tf: &TfDir, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let plan = run(tf, &["plan", "-no-color", "-detailed-exitcode"]);
        if plan.code == Some(2) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never showed as drift:\n{}",
            plan.all()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Nodes managed on running instances, three per instance, through SSM Run Command (executed
/// for real by the test's SSM runner): a rolling `redis_config` change (a setting Redis cannot
/// change live, so every node restarts, replicas first), a killed node repaired by apply, nodes
/// added to the existing instances (replicas 1 -> 2) and removed again (2 -> 1: unit, config and
/// data gone from the instance). No instance is launched or terminated after the create.
#[test]
fn aws_nodes_are_rolled_repaired_added_and_removed_on_running_instances() {
    let mut shape = THREE_PER_INSTANCE;
    let Some(sc) = scenario("127.132.", 9500..9590, &shape) else {
        return;
    };
    let (rt, client, tf) = (&sc.rt, &sc.client, &sc.tf);

    let (launched, _) = sc.create_on_three_instances();
    for id in &launched {
        let text = rt.block_on(readable_user_data(client, id));
        assert!(
            !text.contains(PASSWORD),
            "the password is in the user data of {id}"
        );
    }
    // Three nodes per instance: client ports 6379-6381 from the group, the CIDR and the
    // application's group; the bus ports 16379-16381 from the group alone.
    let groups = rt.block_on(cluster_groups(client));
    let group = groups
        .security_groups()
        .first()
        .expect("the cluster's group");
    let group_id = group.group_id().unwrap_or_default();
    for (from, to, client_port) in [(6379, 6381, true), (16379, 16381, false)] {
        let rule = group
            .ip_permissions()
            .iter()
            .find(|p| p.from_port() == Some(from))
            .unwrap_or_else(|| panic!("no rule from port {from}: {group:?}"));
        assert_eq!(rule.to_port(), Some(to), "{rule:?}");
        let pairs: Vec<&str> = rule
            .user_id_group_pairs()
            .iter()
            .filter_map(|g| g.group_id())
            .collect();
        assert!(pairs.contains(&group_id), "{rule:?}");
        assert_eq!(
            pairs.contains(&sc.app_group.as_str()),
            client_port,
            "{rule:?}"
        );
        assert_eq!(!rule.ip_ranges().is_empty(), client_port, "{rule:?}");
    }
    sc.assert_commands_ran_ok("after create");

    // A rolling redis_config change: `databases` cannot change live, so every node restarts
    // (stop and start by Run Command) and comes back with the setting from its instance's
    // shared config; `maxmemory-policy` rides along.
    shape.redis_config = r#"databases = "4", "maxmemory-policy" = "allkeys-lru""#;
    sc.reshape(&shape);
    let (stops, starts) = (sc.ran_count("stop node"), sc.ran_count("start node"));
    sc.apply("apply (redis_config)");
    sc.runner.settle(sc.moto.port, Duration::from_secs(60));
    assert!(
        sc.ran_count("stop node") >= stops + 6,
        "{:?}",
        sc.runner.ran()
    );
    assert!(
        sc.ran_count("start node") >= starts + 6,
        "{:?}",
        sc.runner.ran()
    );
    for n in &nodes(tf) {
        let (ip, port) = s(n, "address").rsplit_once(':').expect("address");
        let port: u16 = port.parse().expect("port");
        let mut conn = redis_conn(ip, port);
        for (key, want) in [("databases", "4"), ("maxmemory-policy", "allkeys-lru")] {
            let got: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(key)
                .query(&mut conn)
                .expect("CONFIG GET");
            assert_eq!(got.get(1).map(String::as_str), Some(want), "{n}");
        }
    }
    for id in &launched {
        let machine = sc.runner.machine(id).expect("the instance's machine");
        let shared = machine.read("/etc/redisha/shared.conf");
        assert!(shared.contains("databases 4"), "{id}: {shared}");
        assert!(!shared.contains(PASSWORD), "{id}: {shared}");
    }
    let plan = run(tf, &["plan", "-no-color", "-detailed-exitcode"]);
    assert_eq!(plan.code, Some(0), "after the roll:\n{}", plan.all());

    // A node killed on its instance (its process gone, its unit not restarted): the cluster
    // flags it, the plan shows it, and apply restarts it through Run Command.
    let victim = nodes(tf)
        .into_iter()
        .find(|n| s(n, "role") == "replica")
        .expect("a replica");
    let victim_port = port_of(s(&victim, "address"));
    let victim_instance = rt
        .block_on(instances(client, CLUSTER))
        .into_iter()
        .find(|i| i.is_live() && i.host() == s(&victim, "host"))
        .expect("the replica's instance")
        .id;
    let machine = sc.runner.machine(&victim_instance).expect("its machine");
    let unit = format!("redisha-node@{victim_port}");
    let pid = machine.pid_of(&unit).expect("the replica runs");
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_for_drift(tf, "the killed node");
    // Apply repairs only a node the cluster flags failed (after cluster-node-timeout and the
    // masters' agreement); before that it refuses and touches nothing, as it must.
    wait_until_flagged_failed(&nodes(tf), s(&victim, "id"));
    let starts = sc.ran_count(&format!("start node {}", s(&victim, "name")));
    sc.apply("apply (repair)");
    assert!(
        sc.ran_count(&format!("start node {}", s(&victim, "name"))) > starts,
        "the node was started by Run Command: {:?}",
        sc.runner.ran()
    );
    assert!(machine.pid_of(&unit).is_some_and(|p| p != pid));
    nodes_ok(&nodes(tf), "after the repair of the killed node");
    assert_nodes(&nodes(tf), "after the repair of the killed node");

    // Nodes added on the existing instances: each gets a third node, set up by Run Command.
    shape.replicas = 2;
    sc.reshape(&shape);
    sc.apply("apply (replicas 2)");
    assert_eq!(live_ids(rt, client), launched, "no instance launched");
    let grown = nodes(tf);
    assert_node_count(&grown, 9, "after adding replicas");
    sc.runner.settle(sc.moto.port, Duration::from_secs(60));
    for (host, ports) in ports_by_host(&grown) {
        assert_eq!(ports.len(), 3, "{host}: {ports:?}");
    }
    for id in &launched {
        let machine = sc.runner.machine(id).expect("machine");
        assert!(
            machine.exists(&format!("/etc/redisha/node-{}.conf", sc.port + 2)),
            "{id}"
        );
    }

    // And removed again: their units, configs and data are gone from the instances.
    shape.replicas = 1;
    sc.reshape(&shape);
    sc.apply("apply (replicas 1)");
    assert_eq!(live_ids(rt, client), launched, "no instance terminated");
    let shrunk = nodes(tf);
    assert_nodes(&shrunk, "after removing replicas");
    sc.runner.settle(sc.moto.port, Duration::from_secs(60));
    let by_host = ports_by_host(&shrunk);
    let seen = rt.block_on(instances(client, CLUSTER));
    for instance in seen.iter().filter(|i| i.is_live()) {
        let machine = sc.runner.machine(&instance.id).expect("machine");
        let kept = by_host.get(instance.host()).cloned().unwrap_or_default();
        for port in sc.port..sc.port + 3 {
            let conf = machine.exists(&format!("/etc/redisha/node-{port}.conf"));
            let enabled = machine.exists(&format!(
                "/etc/systemd/system/multi-user.target.wants/redisha-node@{port}.service"
            ));
            let data = machine.exists(&format!("/var/lib/redisha/node-{port}"));
            let runs = machine.pid_of(&format!("redisha-node@{port}")).is_some();
            let wanted = kept.contains(&port);
            assert_eq!(
                (conf, enabled, data, runs),
                (wanted, wanted, wanted, wanted),
                "{} port {port}: config, unit, data and process follow the plan",
                instance.host()
            );
        }
    }
    nodes_ok(&shrunk, "after removing replicas");
    sc.assert_commands_ran_ok("after removing replicas");

    run(tf, &["destroy", "-auto-approve", "-no-color"]).assert_success("terraform destroy");
    assert_eq!(live_ids(rt, client), Vec::<String>::new());
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
    let Some(sc) = scenario("127.0.8", 7710..7790, &ONE_PER_INSTANCE) else {
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
    sc.apply("apply resumes the create");
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
    sc.apply("apply without private state");
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

/// A failed terraform command whose output says `says`.
fn assert_refused(out: &common::TfOutput, says: &str, what: &str) {
    assert!(
        !out.success() && out.all().contains(says),
        "{what}: expected a failure saying {says:?}:\n{}",
        out.all()
    );
}

/// The cluster id every live instance of the cluster carries (one id, else the test fails).
fn live_cluster_id(rt: &tokio::runtime::Runtime, client: &aws_sdk_ec2::Client) -> String {
    let ids: BTreeSet<String> = rt
        .block_on(instances(client, CLUSTER))
        .into_iter()
        .filter(|i| i.is_live())
        .filter_map(|i| i.tags.get("redisha:cluster-id").cloned())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "one cluster id on the live instances: {ids:?}"
    );
    ids.into_iter().next().unwrap_or_default()
}

/// A cluster-aware connection through the nodes of the nodes output.
fn cluster_conn(nodes: &[Json]) -> redis::cluster::ClusterConnection {
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("redis://{}/", s(n, "address")))
        .collect();
    redis::cluster::ClusterClient::builder(urls)
        .password(PASSWORD.to_string())
        .connection_timeout(Duration::from_secs(5))
        .response_timeout(Duration::from_secs(5))
        .build()
        .expect("cluster client")
        .get_connection()
        .expect("a connection to the cluster")
}

/// Node name -> node id, from the nodes output.
fn node_ids(nodes: &[Json]) -> std::collections::BTreeMap<String, String> {
    nodes
        .iter()
        .map(|n| (s(n, "name").to_string(), s(n, "id").to_string()))
        .collect()
}

/// `terraform import` of an aws cluster by CLUSTER_ID@ADDRESS (its id and one node's address):
/// after `terraform state rm`, a wrong id is refused at plan naming it, and so is a
/// configuration naming the cluster otherwise, with no instance terminated and no node
/// stopped; with its own id and name the cluster is adopted as it runs (same instances, same
/// node ids, the keys written before still there, no node restarted), plans no change, and
/// destroy terminates every instance as for a cluster the provider created.
#[test]
fn aws_cluster_is_imported_by_its_id_and_one_node_address() {
    let shape = THREE_PER_INSTANCE;
    let Some(mut sc) = scenario("127.133.", 9600..9690, &shape) else {
        return;
    };
    // The password of an imported cluster comes from the environment, never the command line.
    sc.tf
        .env
        .push(("REDISHA_PASSWORD".into(), PASSWORD.to_string()));
    let (rt, client, tf) = (&sc.rt, &sc.client, &sc.tf);

    let (launched, created) = sc.create_on_three_instances();
    let mut conn = cluster_conn(&created);
    for i in 0..200 {
        let () = redis::cmd("SET")
            .arg(format!("import-key-{i}"))
            .arg(format!("value-{i}"))
            .query(&mut conn)
            .expect("SET");
    }
    drop(conn);
    let cluster_id = live_cluster_id(rt, client);
    let address = s(&created[0], "address").to_string();
    let (stops, starts) = (sc.ran_count("stop node"), sc.ran_count("start node"));

    // Terraform forgets the cluster; it keeps running.
    run(tf, &["state", "rm", "-no-color", "redisha_cluster.shop"])
        .assert_success("terraform state rm");

    // A wrong id: the import reads the running cluster, the plan finds no instance with it.
    let wrong = if cluster_id == "0123456789abcdef" {
        "fedcba9876543210"
    } else {
        "0123456789abcdef"
    };
    let import = |id: &str| {
        let id_at = format!("{id}@{address}");
        run(tf, &["import", "-no-color", "redisha_cluster.shop", &id_at])
    };
    import(wrong).assert_success("terraform import (wrong id)");
    let refusal = format!("No instance carries cluster id {wrong}");
    let plan = run(tf, &["plan", "-no-color"]);
    assert_refused(&plan, &refusal, "a wrong id is refused at plan, naming it");
    // Destroy plans first, so the same refusal stops it before anything is terminated.
    let destroy = run(tf, &["destroy", "-auto-approve", "-no-color"]);
    assert_refused(&destroy, &refusal, "an import not adopted is not destroyed");
    assert_eq!(live_ids(rt, client), launched, "nothing terminated");
    run(tf, &["state", "rm", "-no-color", "redisha_cluster.shop"])
        .assert_success("terraform state rm (wrong id)");

    // The right id under another name in the configuration: refused, naming the right name.
    import(&cluster_id).assert_success("terraform import");
    let main_tf = std::fs::read_to_string(tf.path().join("main.tf")).expect("main.tf");
    let renamed = main_tf.replace(&format!("{CLUSTER:?}"), "\"e2e-renamed\"");
    assert_ne!(renamed, main_tf, "main.tf names the cluster");
    std::fs::write(tf.path().join("main.tf"), renamed).expect("write main.tf");
    let plan = run(tf, &["plan", "-no-color"]);
    assert_refused(
        &plan,
        "The imported cluster has another name",
        "another name is refused at plan",
    );
    assert!(
        plan.all().contains(&format!("{CLUSTER:?}")),
        "{}",
        plan.all()
    );
    sc.reshape(&shape);

    // Adoption: the plan changes attributes in place only, and apply touches no node.
    let plan = run(tf, &["plan", "-no-color"]);
    plan.assert_success("terraform plan after import");
    assert!(
        plan.all().contains("0 to add") && plan.all().contains("0 to destroy"),
        "adoption adds and destroys nothing:\n{}",
        plan.all()
    );
    sc.apply("terraform apply (adopt)");
    assert_eq!(live_ids(rt, client), launched, "the same instances");
    let adopted = nodes(tf);
    assert_nodes(&adopted, "after adoption");
    assert_eq!(node_ids(&adopted), node_ids(&created), "the same nodes");
    assert_eq!(
        (sc.ran_count("stop node"), sc.ran_count("start node")),
        (stops, starts),
        "adoption stopped or started no node: {:?}",
        sc.runner.ran()
    );
    let mut conn = cluster_conn(&adopted);
    for i in 0..200 {
        let got: Option<String> = redis::cmd("GET")
            .arg(format!("import-key-{i}"))
            .query(&mut conn)
            .expect("GET");
        assert_eq!(got, Some(format!("value-{i}")), "import-key-{i}");
    }
    drop(conn);
    let state = run(tf, &["state", "show", "-no-color", "redisha_cluster.shop"]);
    assert!(
        state.stdout.contains(&cluster_id),
        "the adopted cluster keeps its id ({cluster_id}):\n{}",
        state.stdout
    );
    let plan = run(tf, &["plan", "-no-color", "-detailed-exitcode"]);
    assert_eq!(
        plan.code,
        Some(0),
        "the adopted cluster matches its configuration:\n{}",
        plan.all()
    );

    run(tf, &["destroy", "-auto-approve", "-no-color"]).assert_success("terraform destroy");
    assert_eq!(live_ids(rt, client), Vec::<String>::new());
}
