//! Test harness: moto_server on a loopback port (ended by pid when the guard drops, also when
//! a test fails), an EC2 client against it, and a VPC with subnets in three zones.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::Credentials;
use aws_sdk_ec2::types::Filter;
use redisha_aws::{AwsDriverConfig, AwsSettings};
use redisha_cluster::{HostPlan, NodePlan};

pub const REGION: &str = "us-east-1";

/// moto_server, ended by its pid on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Child::kill signals this child's pid only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto_server via scripts/moto, or returns None (with a message) when .venv has no
    /// moto, so that a machine without it skips instead of failing. CI installs it.
    pub fn start() -> Option<Moto> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/moto");
        let mut child = Command::new(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("scripts/moto runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let port: u16 = match line.trim().parse() {
            Ok(port) => port,
            Err(_) => {
                let status = child.wait().expect("scripts/moto exits");
                if status.code() == Some(3) {
                    eprintln!("SKIPPED: moto_server is not installed in .venv; run scripts/setup (or .venv/bin/pip install 'moto[server]')");
                    return None;
                }
                panic!("scripts/moto printed no port (exit {status})");
            }
        };
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    pub fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: REGION.into(),
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            assume_role: None,
        }
    }

    /// The crate's own client (region, endpoint, retries), with moto's fixed test
    /// credentials instead of the machine's credential chain.
    pub async fn client(&self) -> aws_sdk_ec2::Client {
        let client = redisha_aws::client(&self.settings())
            .await
            .expect("client builds");
        let config = client
            .config()
            .to_builder()
            .credentials_provider(Credentials::for_tests())
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }
}

/// A VPC with subnets in us-east-1a (two), us-east-1b and us-east-1c.
pub struct Fixture {
    pub vpc_id: String,
    /// (subnet id, zone), in creation order: a, b, c, a.
    pub subnets: Vec<(String, String)>,
    pub ami: String,
}

impl Fixture {
    pub async fn create(client: &aws_sdk_ec2::Client) -> Fixture {
        let vpc = client
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .send()
            .await
            .expect("CreateVpc");
        let vpc_id = vpc
            .vpc()
            .and_then(|v| v.vpc_id())
            .expect("vpc id")
            .to_string();
        let mut subnets = Vec::new();
        for (i, zone) in ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1a"]
            .iter()
            .enumerate()
        {
            let subnet = client
                .create_subnet()
                .vpc_id(&vpc_id)
                .cidr_block(format!("10.0.{}.0/24", i + 1))
                .availability_zone(*zone)
                .send()
                .await
                .expect("CreateSubnet");
            let id = subnet
                .subnet()
                .and_then(|s| s.subnet_id())
                .expect("subnet id")
                .to_string();
            subnets.push((id, zone.to_string()));
        }
        let images = client
            .describe_images()
            .owners("amazon")
            .send()
            .await
            .expect("DescribeImages");
        let ami = images
            .images()
            .iter()
            .filter_map(|i| i.image_id())
            .next()
            .expect("moto ships AMIs")
            .to_string();
        Fixture {
            vpc_id,
            subnets,
            ami,
        }
    }

    pub fn subnet_ids(&self) -> Vec<String> {
        self.subnets.iter().map(|(id, _)| id.clone()).collect()
    }

    pub fn config(&self, cluster: &str) -> AwsDriverConfig {
        let mut config =
            AwsDriverConfig::new(cluster, self.subnet_ids(), "t3.small", self.ami.clone());
        config.poll_interval = Duration::from_millis(200);
        config.timeouts.create = Duration::from_secs(60);
        config.timeouts.delete = Duration::from_secs(60);
        config
    }
}

/// A host plan: `nodes` nodes named `<host>-n<i>`.
pub fn host(name: &str, zone: &str, zone_index: u32, host_index: u32, nodes: u16) -> HostPlan {
    HostPlan {
        name: name.into(),
        zone: zone.into(),
        zone_index,
        host_index,
        nodes: (0..nodes)
            .map(|i| NodePlan {
                name: format!("{name}-n{i}"),
                index_on_host: i,
            })
            .collect(),
    }
}

/// The cluster's instances that are not terminated, as (host tag, zone, instance id).
pub async fn live_instances(
    client: &aws_sdk_ec2::Client,
    cluster: &str,
) -> Vec<(String, String, String)> {
    let answer = client
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:redisha:cluster")
                .values(cluster)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    let mut out = Vec::new();
    for r in answer.reservations() {
        for i in r.instances() {
            let host = i
                .tags()
                .iter()
                .find(|t| t.key() == Some("redisha:host"))
                .and_then(|t| t.value())
                .unwrap_or_default()
                .to_string();
            let zone = i
                .placement()
                .and_then(|p| p.availability_zone())
                .unwrap_or_default()
                .to_string();
            out.push((host, zone, i.instance_id().unwrap_or_default().to_string()));
        }
    }
    out.sort();
    out
}
