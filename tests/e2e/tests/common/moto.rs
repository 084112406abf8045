//! moto_server for the aws end-to-end test: the shared guard, EC2 client and VPC fixture
//! (`redisha_aws::testing`, started through scripts/moto on a free loopback port, ended by its
//! pid when dropped, also when a test fails), with one subnet in each of three zones, and the
//! instances as this test checks them.

#![allow(dead_code)]

pub use redisha_aws::testing::{Fixture, Moto};

/// The fixture's zones: one subnet in each.
pub const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// One EC2 instance as the test checks it.
#[derive(Debug, Clone)]
pub struct SeenInstance {
    pub id: String,
    pub state: String,
    pub zone: String,
    pub subnet_id: String,
    /// The private address moto invented (never contacted: DNS data only).
    pub private_ip: String,
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
                private_ip: i.private_ip_address().unwrap_or_default().to_string(),
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

/// The stand-in of each fixture zone's one instance, `<zone>-1`: `127.<octet>.<zone>.1`.
pub fn zone_stand_ins(octet: u8) -> Vec<(String, String)> {
    ZONES
        .iter()
        .enumerate()
        .map(|(i, z)| (format!("{z}-1"), format!("127.{octet}.{}.1", i + 1)))
        .collect()
}

/// The environment Terraform's provider (and the drill) run in against moto: its test
/// credentials, never the machine's chain or files, and `address_map` (`host=ip:port`
/// entries), the test-only setting that points the driver at the stand-ins.
pub fn provider_env(dir: &std::path::Path, address_map: &[String]) -> Vec<(String, String)> {
    let no_file = dir.join("no-such-aws-file").display().to_string();
    vec![
        ("REDISHA_AWS_TEST_ADDRESS_MAP".into(), address_map.join(",")),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("AWS_CONFIG_FILE".into(), no_file.clone()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), no_file),
    ]
}

/// `provider_env` for stand-ins that all take nodes from `port` up, with the password in
/// `TF_VAR_password`.
pub fn provider_env_at(
    dir: &std::path::Path,
    stand_ins: &[(String, String)],
    port: u16,
    password: &str,
) -> Vec<(String, String)> {
    let map: Vec<String> = stand_ins
        .iter()
        .map(|(host, ip)| format!("{host}={ip}:{port}"))
        .collect();
    let mut env = provider_env(dir, &map);
    env.push(("TF_VAR_password".into(), password.into()));
    env
}
