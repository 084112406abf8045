//! moto_server for the aws end-to-end test (adapted from aws/tests/common): started through
//! scripts/moto on a free loopback port, ended by its pid when dropped (also when a test
//! fails), an EC2 client against it, and a VPC with one subnet in each of three zones.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::Credentials;
use redisha_aws::AwsSettings;

pub const REGION: &str = "us-east-1";
pub const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// moto_server, ended by its pid on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Child::kill signals this child's pid only (scripts/moto execs moto_server).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto_server, or returns None (after printing why) when .venv has no moto.
    pub fn start() -> Option<Moto> {
        let mut child =
            Command::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/moto"))
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

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The aws crate's client (region, endpoint, retries) with moto's test credentials.
    pub async fn client(&self) -> aws_sdk_ec2::Client {
        client_at(self.port).await
    }
}

/// An EC2 client for the moto_server on `port` (usable from another thread than the guard's).
pub async fn client_at(port: u16) -> aws_sdk_ec2::Client {
    let settings = AwsSettings {
        region: REGION.into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        assume_role: None,
    };
    let client = redisha_aws::client(&settings).await.expect("client builds");
    let config = client
        .config()
        .to_builder()
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// A VPC with one subnet in each of `ZONES`, and an AMI moto knows.
pub struct Fixture {
    pub vpc_id: String,
    /// (subnet id, zone), in `ZONES` order.
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
        for (i, zone) in ZONES.iter().enumerate() {
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
}

/// One EC2 instance as the test checks it.
#[derive(Debug, Clone)]
pub struct SeenInstance {
    pub id: String,
    pub state: String,
    pub zone: String,
    pub subnet_id: String,
    pub security_groups: Vec<String>,
    pub tags: std::collections::BTreeMap<String, String>,
}

impl SeenInstance {
    pub fn host(&self) -> &str {
        self.tags
            .get("redisha:host")
            .map(String::as_str)
            .unwrap_or_default()
    }
    pub fn is_live(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
    }
}

/// Every instance tagged with `cluster`, whatever its state.
pub async fn instances(client: &aws_sdk_ec2::Client, cluster: &str) -> Vec<SeenInstance> {
    let answer = client
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:redisha:cluster")
                .values(cluster)
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    let mut out = Vec::new();
    for r in answer.reservations() {
        for i in r.instances() {
            out.push(SeenInstance {
                id: i.instance_id().unwrap_or_default().to_string(),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                zone: i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .unwrap_or_default()
                    .to_string(),
                subnet_id: i.subnet_id().unwrap_or_default().to_string(),
                security_groups: i
                    .security_groups()
                    .iter()
                    .filter_map(|g| g.group_id())
                    .map(str::to_string)
                    .collect(),
                tags: i
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect(),
            });
        }
    }
    out.sort_by(|a, b| (a.host(), &a.id).cmp(&(b.host(), &b.id)));
    out
}
