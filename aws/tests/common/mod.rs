//! Test harness: the shared moto_server guard, EC2 client and VPC fixture
//! (`redisha_aws::testing`), plus what only the driver's tests use: the fixture's subnets, a
//! driver config for it, host plans and the cluster's live instances.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use redisha_aws::AwsDriverConfig;
use redisha_cluster::{ClusterState, HostPlan, NodePlan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use redisha_aws::testing::{Fixture, Moto};

/// The fixture's subnets, in creation order: us-east-1a (two), us-east-1b and us-east-1c.
pub const SUBNET_ZONES: [&str; 4] = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1a"];

/// A driver config over all of the fixture's subnets, with short polls and timeouts.
pub trait FixtureConfig {
    /// Without a cluster id: what a cluster made before ids looks like.
    fn config(&self, cluster: &str) -> AwsDriverConfig;

    /// With the cluster id the provider gives every cluster at create.
    fn config_with_id(&self, cluster: &str, cluster_id: &str) -> AwsDriverConfig {
        let mut config = self.config(cluster);
        config.cluster_id = Some(cluster_id.to_string());
        config
    }
}

impl FixtureConfig for Fixture {
    fn config(&self, cluster: &str) -> AwsDriverConfig {
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
                shard: 0,
                role: redisha_planner::Role::Master,
            })
            .collect(),
    }
}

/// The cluster's instances in one of `states` (instance-state-name values).
pub async fn instances_in(
    client: &aws_sdk_ec2::Client,
    cluster: &str,
    states: &[&str],
) -> Vec<aws_sdk_ec2::types::Instance> {
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
                .set_values(Some(states.iter().map(|s| s.to_string()).collect()))
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    answer
        .reservations()
        .iter()
        .flat_map(|r| r.instances().iter().cloned())
        .collect()
}

/// The cluster's instances that are not terminated, as (host tag, zone, instance id).
pub async fn live_instances(
    client: &aws_sdk_ec2::Client,
    cluster: &str,
) -> Vec<(String, String, String)> {
    let live = ["pending", "running", "stopping", "stopped"];
    let mut out = Vec::new();
    for i in instances_in(client, cluster, &live).await {
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
    out.sort();
    out
}

/// The test's logs (`RUST_LOG`, default info) in its captured output.
pub fn log_to_test() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A cluster-aware client of the cluster's nodes, logging in as `user` (`None`: `default`).
pub fn cluster_client(
    state: &ClusterState,
    user: Option<&str>,
    password: &str,
) -> redis::cluster::ClusterClient {
    client_of(state, user, password, None)
}

/// [`cluster_client`] over TLS (`rediss://`) as `default`, verifying the nodes with `ca`.
pub fn tls_cluster_client(
    state: &ClusterState,
    password: &str,
    ca: &str,
) -> redis::cluster::ClusterClient {
    client_of(state, None, password, Some(ca))
}

/// Short timeouts: a writer during a roll must not hang on a restarting node.
fn client_of(
    state: &ClusterState,
    user: Option<&str>,
    password: &str,
    ca: Option<&str>,
) -> redis::cluster::ClusterClient {
    let scheme = if ca.is_some() { "rediss" } else { "redis" };
    let mut builder = redis::cluster::ClusterClientBuilder::new(
        state
            .nodes
            .iter()
            .map(|n| format!("{scheme}://{}/", n.address()))
            .collect::<Vec<_>>(),
    )
    .password(password.into());
    if let Some(user) = user {
        builder = builder.username(user.into());
    }
    if let Some(ca) = ca {
        redisha_cluster::conn::install_crypto_provider();
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.as_bytes().to_vec()),
        });
    }
    builder
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(2))
        .build()
        .expect("cluster client")
}

/// Three zones, one instance each in the tests that run a cluster on stand-ins.
pub const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// The stand-in addresses `<net>.Z.1`, one for each of [`ZONES`].
pub fn stand_ins(net: &str) -> Vec<String> {
    (1..=ZONES.len()).map(|z| format!("{net}.{z}.1")).collect()
}

/// Creates cluster `name` (id `cluster_id`) through the operator on one host per zone, as the
/// provider's create does once the driver's security is loaded.
pub async fn create_one_host_per_zone<'a>(
    driver: &'a redisha_aws::AwsDriver,
    config: redisha_cluster::NodeConfig,
    (name, cluster_id): (&str, &str),
    zones: &[&str],
) -> (redisha_cluster::Operator<'a>, redisha_cluster::ClusterState) {
    let request = redisha_aws::testing::one_host_per_zone(zones);
    let plan = redisha_planner::plan(&request, None).expect("plan");
    let op = redisha_cluster::Operator::with_options(
        driver,
        config,
        redisha_cluster::Options {
            timeout: Duration::from_secs(180),
            ..Default::default()
        },
    );
    let mut state = redisha_cluster::ClusterState::new("aws");
    state.cluster_id = cluster_id.into();
    state.name = name.into();
    op.create(&request, &plan.placement, &mut state)
        .await
        .expect("create");
    (op, state)
}

/// `SET key value` then `WAIT 1` on the key's master (a pipeline is routed by its first key):
/// whether a replica acknowledged the write.
pub async fn set_acknowledged(
    con: &mut redis::cluster_async::ClusterConnection,
    key: &str,
    value: usize,
) -> Result<bool, String> {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(key)
        .arg(value)
        .cmd("WAIT")
        .arg(1)
        .arg(200);
    match tokio::time::timeout(Duration::from_secs(3), pipe.query_async(con)).await {
        Ok(Ok((ok, acks))) => {
            let (ok, acks): (String, i64) = (ok, acks);
            Ok(ok == "OK" && acks >= 1)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// What a writer running during a change saw.
#[derive(Debug, Default)]
pub struct Written {
    /// (key, value) a replica acknowledged: these must survive.
    pub acknowledged: Vec<(String, usize)>,
    /// Writes refused, failed or not acknowledged in time.
    pub other: usize,
}

/// Writes `<prefix>:<i>` keys over every shard until `stop`, as a cluster-aware client does
/// (redirections followed by the client, a fresh connection after a timeout).
pub async fn writer(
    client: redis::cluster::ClusterClient,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> Written {
    let mut out = Written::default();
    let mut con = None;
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        if con.is_none() {
            con = tokio::time::timeout(Duration::from_secs(3), client.get_async_connection())
                .await
                .ok()
                .and_then(Result::ok);
            if con.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let Some(c) = con.as_mut() else { continue };
        let key = format!("{prefix}:{i}");
        match set_acknowledged(c, &key, i).await {
            Ok(true) => out.acknowledged.push((key, i)),
            Ok(false) => out.other += 1,
            Err(e) => {
                out.other += 1;
                if e.contains("timed out") {
                    con = None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        i += 1;
    }
    out
}

/// Whether the metrics exporter at `address` reports its node up (`redis_up 1`); `None` when
/// it does not answer.
pub async fn exporter_says_up(address: &str) -> Option<bool> {
    let scrape = async {
        let mut s = tokio::net::TcpStream::connect(address).await?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(10), scrape)
        .await
        .ok()?
        .ok()?;
    let value = text.lines().find_map(|l| l.strip_prefix("redis_up "))?;
    Some(value.trim() == "1")
}

/// The three zones of the ACL tests, one host each.
pub const ACL_ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// The loopback stand-ins `<net>.Z.1`, one per zone of [`ACL_ZONES`].
pub fn acl_stand_ins(net: &str) -> Vec<String> {
    (1..=ACL_ZONES.len())
        .map(|z| format!("{net}.{z}.1"))
        .collect()
}

/// A cluster with the cluster password, one declared user with `rules` and `default` off:
/// redisha works as its operator user, whose password the driver keeps.
pub fn acl_node_config(
    password: &str,
    user: &str,
    user_password: &str,
    rules: &[&str],
) -> redisha_cluster::NodeConfig {
    use redisha_cluster::acl::{AclConfig, AclUser};
    use redisha_cluster::Password;
    redisha_cluster::NodeConfig {
        password: Some(Password::new(password)),
        redis_config: Default::default(),
        acl: AclConfig {
            users: vec![AclUser {
                name: user.into(),
                password: Password::new(user_password),
                rules: rules.iter().map(|r| r.to_string()).collect(),
            }],
            default_user_disabled: true,
            operator_password: None,
            operator_password_retiring: None,
        },
    }
}

/// The keys of `written` whose value is not (or no longer) the one written.
pub async fn lost_keys(
    client: &redis::cluster::ClusterClient,
    written: impl IntoIterator<Item = &(String, usize)>,
) -> Vec<String> {
    let mut con = client.get_async_connection().await.expect("cluster");
    let mut lost = Vec::new();
    for (key, value) in written {
        let got: Option<usize> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("GET");
        if got != Some(*value) {
            lost.push(key.clone());
        }
    }
    lost
}

/// Where the package is installed (no exporter runs otherwise): every node's metrics exporter
/// reports its node up (`redis_up 1`) within 30 s.
pub async fn assert_exporters_up(state: &ClusterState) {
    if !std::path::Path::new("/usr/bin/prometheus-redis-exporter").exists() {
        return;
    }
    for n in &state.nodes {
        let at = format!(
            "{}:{}",
            n.handle.ip,
            n.handle.port + redisha_aws::settings::EXPORTER_PORT_OFFSET
        );
        let mut up = None;
        for _ in 0..60 {
            up = exporter_says_up(&at).await;
            if up == Some(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(
            up,
            Some(true),
            "{}: the exporter at {at} reports redis_up 1",
            n.name
        );
    }
}

/// A connection to the node at `address` as `user`.
pub async fn connect(
    address: (&str, u16),
    user: &str,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp(address.0.to_string(), address.1),
        redis: redis::RedisConnectionInfo {
            db: 0,
            username: Some(user.to_string()),
            password: Some(password.to_string()),
            ..Default::default()
        },
    };
    let client = redis::Client::open(info)?;
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| redis::RedisError::from(std::io::Error::other("timed out")))?
}

/// Waits (at most 90 s) until the replica at `address` has its link to its master up, as the
/// operator user with `password` sees it; the last complaint otherwise.
pub async fn replica_linked(
    address: (&str, u16),
    password: &redisha_cluster::Password,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let why = match connect(
            address,
            redisha_cluster::acl::OPERATOR_USER,
            password.expose(),
        )
        .await
        {
            Ok(mut con) => {
                let info: redis::RedisResult<String> = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut con)
                    .await;
                match info {
                    Ok(text) if text.contains("master_link_status:up") => return Ok(()),
                    Ok(text) => text,
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        if std::time::Instant::now() > deadline {
            return Err(why);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Restarts a replica's unit on its instance (its start reads auth.conf from SSM again) and
/// returns its address.
pub fn restart_replica(
    runner: &redisha_aws::testing::ssm_runner::SsmRunner,
    state: &ClusterState,
    which: usize,
) -> (String, u16) {
    let n = state
        .nodes
        .iter()
        .filter(|n| n.role == redisha_planner::Role::Replica)
        .nth(which)
        .expect("a replica");
    let instance = state
        .hosts
        .iter()
        .find(|h| h.name == n.handle.host)
        .and_then(|h| h.instance_id.clone())
        .expect("the replica's instance");
    let machine = runner.machine(&instance).expect("the instance's machine");
    let out = machine
        .run(&format!("systemctl restart redisha-node@{}", n.handle.port))
        .expect("run");
    assert!(out.status.success(), "restart {}: {out:?}", n.name);
    (n.handle.ip.clone(), n.handle.port)
}

/// What a node says to a plain-text `AUTH` + `PING` at `port`: its first bytes, or nothing
/// (refused, closed, or no answer within 3 s).
pub async fn plain_text_answer(ip: &str, port: u16, password: &str) -> Vec<u8> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await?;
        let auth = format!(
            "*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n",
            password.len()
        );
        s.write_all(auth.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 64];
        // Both replies: `+OK\r\n+PONG\r\n`.
        while !buf.ends_with(b"PONG\r\n") {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(bytes)) => bytes,
        _ => Vec::new(),
    }
}

/// Whether the node at `ip:port` answers `PING` over TLS, verified with `ca`, with the
/// cluster password.
pub async fn tls_ping(ca: &str, ip: &str, port: u16, password: &str) -> bool {
    redisha_cluster::conn::install_crypto_provider();
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::TcpTls {
            host: ip.to_string(),
            port,
            insecure: false,
            tls_params: None,
        },
        redis: redis::RedisConnectionInfo {
            password: Some(password.to_string()),
            ..Default::default()
        },
    };
    let Ok(client) = redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.as_bytes().to_vec()),
        },
    ) else {
        return false;
    };
    let attempt = async {
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut con).await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), attempt).await,
        Ok(Ok(pong)) if pong == "PONG"
    )
}

/// A cluster with `password` and nothing else set.
pub fn password_config(password: &str) -> redisha_cluster::NodeConfig {
    redisha_cluster::NodeConfig {
        password: Some(redisha_cluster::Password::new(password)),
        ..Default::default()
    }
}

/// Every parameter under the cluster's path in SSM, (name, value).
pub async fn parameters(
    client: &redisha_aws::AwsClients,
    cluster: &str,
    cluster_id: &str,
) -> Vec<(String, String)> {
    use redisha_aws::secrets;
    secrets::parameters_under(&client.ssm, &secrets::parameter_prefix(cluster, cluster_id))
        .await
        .expect("GetParametersByPath")
}

/// `n` keys `<prefix>:<i>` a replica acknowledged (`WAIT`), written before a change.
pub async fn acknowledged_keys(
    con: &mut redis::cluster_async::ClusterConnection,
    prefix: &str,
    n: usize,
) -> Vec<(String, usize)> {
    let keys: Vec<(String, usize)> = (0..n).map(|i| (format!("{prefix}:{i}"), i)).collect();
    for (key, value) in &keys {
        assert_eq!(
            set_acknowledged(con, key, *value).await,
            Ok(true),
            "{key} acknowledged"
        );
    }
    keys
}

/// Asserts that the writer running during `change` got writes acknowledged and that none of
/// them, nor of `before`, was lost; prints the figures.
pub async fn assert_none_lost(
    cluster: &redis::cluster::ClusterClient,
    before: &[(String, usize)],
    written: &Written,
    change: &str,
) {
    assert!(
        !written.acknowledged.is_empty(),
        "the writer got writes acknowledged during the {change} ({} others)",
        written.other
    );
    let lost = lost_keys(cluster, before.iter().chain(&written.acknowledged)).await;
    assert_eq!(
        lost,
        Vec::<String>::new(),
        "{} of {} acknowledged keys lost",
        lost.len(),
        before.len() + written.acknowledged.len()
    );
    eprintln!(
        "{change}: {} writes acknowledged during it, {} not, 0 lost; {} acknowledged before",
        written.acknowledged.len(),
        written.other,
        before.len()
    );
}

/// A new provider process for a test cluster on the [`ACL_ZONES`] stand-ins `<net>.Z.1`
/// (ports from `base`): a driver that knows only what SSM keeps.
pub async fn fresh_acl_driver(
    client: &redisha_aws::AwsClients,
    fx: &Fixture,
    (cluster, cluster_id): (&str, &str),
    net: &str,
    base: u16,
) -> redisha_aws::AwsDriver {
    let mut config = fx.config_with_id(cluster, cluster_id);
    redisha_aws::testing::map_hosts(&mut config, &ACL_ZONES, &acl_stand_ins(net), base);
    let driver = redisha_aws::AwsDriver::with_client(client.clone(), config).expect("driver");
    driver
        .load_security(false, false)
        .await
        .expect("load security");
    driver
}
