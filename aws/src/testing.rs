//! Test support shared by this crate's tests and the workspace's end-to-end tests (compiled only
//! with the `testing` feature, which only dev-dependencies enable): moto_server on a loopback
//! port (ended by its pid when the guard drops, also when a test fails), an EC2 client against
//! it, and a VPC with subnets in the zones a test asks for.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::Credentials;

use crate::AwsSettings;

pub mod ssm_runner;

pub const REGION: &str = "us-east-1";

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
    /// Starts moto_server via scripts/moto, or returns None (with a message) when .venv has no
    /// moto, so that a machine without it skips instead of failing. CI installs it.
    pub fn start() -> Option<Moto> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/moto");
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

    pub fn endpoint(&self) -> String {
        endpoint_at(self.port)
    }

    pub fn settings(&self) -> AwsSettings {
        settings_at(self.port)
    }

    /// The crate's own client (region, endpoint, retries) with moto's test credentials.
    pub async fn client(&self) -> crate::AwsClients {
        client_at(self.port).await
    }
}

fn endpoint_at(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn settings_at(port: u16) -> AwsSettings {
    AwsSettings {
        region: REGION.into(),
        endpoint: Some(endpoint_at(port)),
        assume_role: None,
    }
}

/// The clients for the moto_server on `port` (usable from another thread than the guard's):
/// the crate's own clients with moto's fixed test credentials instead of the machine's
/// credential chain. They deref to the EC2 client.
pub async fn client_at(port: u16) -> crate::AwsClients {
    let moto = Credentials::new("testing", "testing", None, None, "moto");
    crate::client::clients_with(&settings_at(port), Some(moto))
        .await
        .expect("clients build")
}

/// A small cluster on the aws driver: one host per zone (`<zone>-1`, 2 GB, two nodes), 3
/// shards with one replica spread over the zones (the engine roll's and the aws drill's).
pub fn one_host_per_zone(zones: &[&str]) -> redisha_planner::Request {
    use redisha_planner::{ClusterSpec, HostSpec, Request, Spread, ZoneSpec};
    Request {
        cluster: ClusterSpec {
            shards: 3,
            replicas: 1,
            node_memory_mb: 64,
            spread: Spread::Zone,
            survive: Default::default(),
        },
        zones: zones
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
        sentinel: None,
    }
}

/// A base port in `range` free, with the next one and their bus ports, on every one of
/// `addresses` (the hosts' loopback stand-ins of [`one_host_per_zone`]).
pub fn free_base_port(addresses: &[String], range: std::ops::Range<u16>) -> u16 {
    let (first, last) = (range.start, range.end);
    range
        .into_iter()
        .find(|p| {
            addresses.iter().all(|ip| {
                [*p, p + 1, p + 10000, p + 10001]
                    .iter()
                    .all(|q| std::net::TcpListener::bind((ip.as_str(), *q)).is_ok())
            })
        })
        .unwrap_or_else(|| panic!("no free port in {first}-{last} on {addresses:?}"))
}

/// Maps each zone's host `<zone>-1` to its stand-in (`addresses[i]` for `zones[i]`) at
/// `base`, for two nodes a host, with the long timeouts of a cluster's operations.
pub fn map_hosts(
    config: &mut crate::AwsDriverConfig,
    zones: &[&str],
    addresses: &[String],
    base: u16,
) {
    for (zone, ip) in zones.iter().zip(addresses) {
        config.address_override.insert(
            format!("{zone}-1"),
            crate::AddressOverride {
                ip: ip.parse().expect("a stand-in address"),
                base_port: base,
            },
        );
    }
    config.max_nodes_per_host = 2;
    config.timeouts.create = Duration::from_secs(120);
    config.timeouts.update = Duration::from_secs(120);
    config.timeouts.delete = Duration::from_secs(60);
}

/// A VPC with one subnet per requested zone, and two AMIs moto knows.
pub struct Fixture {
    pub vpc_id: String,
    /// (subnet id, zone), in the order of the zones given to [`Fixture::create`].
    pub subnets: Vec<(String, String)>,
    pub ami: String,
    /// Another of moto's default AMIs: what an engine roll moves the instances to.
    pub other_ami: String,
}

impl Fixture {
    /// Creates the VPC 10.0.0.0/16 and, for the i-th of `zones`, the subnet 10.0.(i+1).0/24 in
    /// that zone (a zone may repeat).
    pub async fn create(client: &aws_sdk_ec2::Client, zones: &[&str]) -> Fixture {
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
        for (i, zone) in zones.iter().enumerate() {
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
        let mut ids = images.images().iter().filter_map(|i| i.image_id());
        let ami = ids.next().expect("moto ships AMIs").to_string();
        let other_ami = ids
            .find(|id| *id != ami)
            .expect("moto ships more than one AMI")
            .to_string();
        Fixture {
            vpc_id,
            subnets,
            ami,
            other_ami,
        }
    }

    pub fn subnet_ids(&self) -> Vec<String> {
        self.subnets.iter().map(|(id, _)| id.clone()).collect()
    }
}

/// An instance's user data (decoded from base64), as anyone allowed
/// `ec2:DescribeInstanceAttribute` reads it.
pub async fn user_data(client: &crate::AwsClients, instance_id: &str) -> Result<String, String> {
    use base64::Engine as _;
    let answer = client
        .describe_instance_attribute()
        .instance_id(instance_id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .map_err(|e| format!("DescribeInstanceAttribute {instance_id}: {e}"))?;
    let encoded = answer
        .user_data()
        .and_then(|u| u.value())
        .ok_or_else(|| format!("{instance_id} has no user data"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("{instance_id}: user data is not base64: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// [`user_data`] with every file it writes decoded as well: what a reader of the user data
/// learns (tests look for the password in it).
pub async fn readable_user_data(client: &crate::AwsClients, instance_id: &str) -> String {
    let document = user_data(client, instance_id)
        .await
        .expect("the instance's user data");
    let files: Vec<String> = crate::user_data::files(&document)
        .into_iter()
        .map(|(_, content)| content)
        .collect();
    format!("{document}\n{}", files.join("\n"))
}

/// A Route 53 hosted zone `name`, private to `vpc_id` when given; its id (without the
/// `/hostedzone/` prefix).
pub async fn hosted_zone(
    client: &crate::AwsClients,
    name: &str,
    private_in: Option<&str>,
) -> String {
    use aws_sdk_route53::types::{HostedZoneConfig, Vpc, VpcRegion};
    let mut req = client
        .route53
        .create_hosted_zone()
        .name(name)
        .caller_reference(format!(
            "redisha-test-{name}-{}",
            private_in.unwrap_or("public")
        ));
    if let Some(vpc) = private_in {
        req = req
            .hosted_zone_config(HostedZoneConfig::builder().private_zone(true).build())
            .vpc(
                Vpc::builder()
                    .vpc_id(vpc)
                    .vpc_region(VpcRegion::UsEast1)
                    .build(),
            );
    }
    req.send()
        .await
        .expect("CreateHostedZone")
        .hosted_zone()
        .map(|z| z.id().trim_start_matches("/hostedzone/").to_string())
        .expect("zone id")
}

/// The values of the record set of type `kind` (`A`, `TXT`...) at `name` (without the final
/// dot) in zone `zone_id`, sorted; empty when there is none.
pub async fn record_values(
    client: &crate::AwsClients,
    zone_id: &str,
    name: &str,
    kind: &str,
) -> Vec<String> {
    let out = client
        .route53
        .list_resource_record_sets()
        .hosted_zone_id(zone_id)
        .send()
        .await
        .expect("ListResourceRecordSets");
    let mut found: Vec<String> = out
        .resource_record_sets()
        .iter()
        .filter(|s| s.name().trim_end_matches('.') == name && s.r#type().as_str() == kind)
        .flat_map(|s| s.resource_records().iter().map(|r| r.value().to_string()))
        .collect();
    found.sort();
    found
}
