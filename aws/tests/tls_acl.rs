//! TLS and ACL users on the aws driver: a cluster made with `tls { mode = "required" }`, a
//! declared user and `default` switched off, through the operator, as the provider makes it.
//! Its nodes refuse plain text; a TLS client verifying with the cluster's authority works;
//! the user's rules hold and `default` is refused; no secret is in any user data or Run
//! Command; destroy leaves no SSM parameter of the cluster behind.
//!
//! EC2 and SSM are moto's; the test-only SSM runner first-boots each instance (the node setup
//! of its user data, the product's `redisha-password` reading moto's SSM) on this machine,
//! with the nodes bound to loopback stand-ins 127.185.Z.1 and run by Debian's redis-server
//! (built with TLS).

mod common;

use std::time::Duration;

use common::{Fixture, FixtureConfig, Moto, ReportOnFailure};
use redis::{Client, ConnectionAddr, ConnectionInfo, RedisConnectionInfo, TlsCertificates};
use redisha_aws::testing::ssm_runner::SsmRunner;
use redisha_aws::testing::{free_base_port, map_hosts, readable_user_data};
use redisha_aws::{secrets, AwsClients, AwsDriver};
use redisha_cluster::acl::{AclConfig, AclUser};
use redisha_cluster::tls::TlsMode;
use redisha_cluster::{Driver, NodeConfig, Password};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLUSTER: &str = "awssec";
const CLUSTER_ID: &str = "00000000000000f3";
const PASSWORD: &str = "aws-sec-Cluster-pw-31";
const USER: &str = "app";
const USER_PASSWORD: &str = "aws-sec-App-pw-47";
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

fn stand_ins() -> Vec<String> {
    (1..=ZONES.len())
        .map(|z| format!("127.185.{z}.1"))
        .collect()
}

fn node_config() -> NodeConfig {
    NodeConfig {
        password: Some(Password::new(PASSWORD)),
        redis_config: Default::default(),
        acl: AclConfig {
            users: vec![AclUser {
                name: USER.into(),
                password: Password::new(USER_PASSWORD),
                rules: vec![
                    "~app:*".into(),
                    "+@read".into(),
                    "+@write".into(),
                    "-@dangerous".into(),
                ],
            }],
            default_user_disabled: true,
            operator_password: None,
            operator_password_retiring: None,
        },
    }
}

/// A connection to one node over TLS, verified with `ca`, as `user`.
async fn tls_connection(
    ca: &str,
    address: (&str, u16),
    user: Option<&str>,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redisha_cluster::conn::install_crypto_provider();
    let info = ConnectionInfo {
        addr: ConnectionAddr::TcpTls {
            host: address.0.to_string(),
            port: address.1,
            insecure: false,
            tls_params: None,
        },
        redis: RedisConnectionInfo {
            db: 0,
            username: user.map(str::to_string),
            password: Some(password.to_string()),
            ..Default::default()
        },
    };
    let client = Client::build_with_tls(
        info,
        TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.as_bytes().to_vec()),
        },
    )?;
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| redis::RedisError::from(std::io::Error::other("timed out")))?
}

/// What a node says to a plain-text PING: its first bytes, or nothing (the connection closed
/// or no answer within 3 s).
async fn plain_text_answer(ip: &str, port: u16) -> Vec<u8> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await?;
        s.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await?;
        buf.truncate(n);
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(bytes)) => bytes,
        _ => Vec::new(),
    }
}

async fn parameters(client: &AwsClients) -> Vec<(String, String)> {
    secrets::parameters_under(&client.ssm, &secrets::parameter_prefix(CLUSTER, CLUSTER_ID))
        .await
        .expect("GetParametersByPath")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_with_acl_users_and_default_off_keeps_its_secrets_in_ssm() {
    common::init_tracing();
    let Some(moto) = Moto::start() else { return };
    let client = moto.client().await;
    let fx = Fixture::create(&client, &ZONES).await;
    let runner = SsmRunner::booting(moto.port, CLUSTER);
    let _report = ReportOnFailure(&runner);
    let base = free_base_port(&stand_ins(), 28000..28490);
    let mut config = fx.config_with_id(CLUSTER, CLUSTER_ID);
    map_hosts(&mut config, &ZONES, &stand_ins(), base);
    let driver = AwsDriver::with_client(client.clone(), config).expect("driver");
    let outcome = tokio::time::timeout(Duration::from_secs(600), run(&client, &driver, base)).await;
    let started = runner.running();
    // Whatever happened: nothing of the cluster left behind (instances, parameters).
    let destroyed = driver.destroy().await;
    outcome.expect("test timed out");
    destroyed.expect("destroy");
    assert_eq!(
        parameters(&client).await,
        Vec::new(),
        "destroy leaves no parameter of the cluster"
    );
    // Nor any process: the nodes and, where the package is installed, their metrics
    // exporters end with their instances.
    let exporters = started
        .iter()
        .filter(|(_, unit, _)| unit.starts_with("redisha-exporter-"))
        .count();
    if std::path::Path::new("/usr/bin/prometheus-redis-exporter").exists() {
        assert_eq!(exporters, 6, "an exporter per node: {started:?}");
    }
    let still_running = || -> Vec<&(String, String, u32)> {
        started.iter().filter(|(_, _, pid)| runs(*pid)).collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !still_running().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        still_running(),
        Vec::<&(String, String, u32)>::new(),
        "left running after destroy"
    );
}

/// Whether the metrics exporter at `address` reports its node up (`redis_up 1`); `None` when
/// it does not answer.
async fn exporter_says_up(address: &str) -> Option<bool> {
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

/// Whether `pid` runs (a zombie, ended and not yet reaped, does not).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

async fn run(client: &AwsClients, driver: &AwsDriver, base: u16) {
    // As the provider's create: TLS wanted, then the operator user and the authority made.
    driver.set_tls_mode(Some(TlsMode::Required));
    driver
        .load_security(true, true)
        .await
        .expect("load security");
    let operator_password = driver.operator_password().expect("an operator user");
    let ca = driver.client_tls().expect("client TLS").ca_cert_pem;

    let (_op, state) =
        common::create_one_host_per_zone(driver, node_config(), (CLUSTER, CLUSTER_ID), &ZONES)
            .await;
    assert_eq!(state.nodes.len(), 6);
    assert_eq!(state.nodes[0].handle.ip, "127.185.1.1");
    assert!(state.nodes.iter().all(|n| n.handle.port >= base));

    for n in &state.nodes {
        let (ip, port) = (n.handle.ip.as_str(), n.handle.port);
        // Plain text is refused: no RESP answer on the node's port.
        let plain = plain_text_answer(ip, port).await;
        assert!(
            !plain.starts_with(b"+") && !plain.starts_with(b"-"),
            "{}: answered plain text: {:?}",
            n.name,
            String::from_utf8_lossy(&plain)
        );
        // Each node has its own certificate, recorded with a year to run.
        let info = driver.cert_info(&n.handle).expect("a certificate record");
        assert_eq!(info.address, ip);
        assert!((360..=366).contains(&info.days_left()), "{info:?}");
        assert!(!driver.cert_due(&n.handle));
    }

    let first = &state.nodes[0].handle;
    let address = (first.ip.as_str(), first.port);
    // The declared user over TLS: its keys, not the others', and no dangerous command.
    let mut con = tls_connection(&ca, address, Some(USER), USER_PASSWORD)
        .await
        .expect("the user logs in over TLS with the authority's certificate");
    let allowed: redis::RedisResult<()> = redis::cmd("SET")
        .arg("app:1")
        .arg("x")
        .query_async(&mut con)
        .await;
    assert!(
        allowed.is_ok() || allowed.as_ref().is_err_and(|e| e.code() == Some("MOVED")),
        "SET app:1: {allowed:?}"
    );
    for refused in [
        redis::cmd("SET").arg("other:1").arg("x").clone(),
        redis::cmd("FLUSHALL").clone(),
        redis::cmd("CONFIG").arg("GET").arg("requirepass").clone(),
    ] {
        let r: redis::RedisResult<redis::Value> = refused.query_async(&mut con).await;
        assert_eq!(
            r.as_ref().err().and_then(|e| e.code()),
            Some("NOPERM"),
            "{r:?}"
        );
    }
    // `default` is off: the cluster password alone logs in no more.
    let default = tls_connection(&ca, address, None, PASSWORD).await;
    assert!(default.is_err(), "default logged in");
    // The operator user works, and replicas replicate as it.
    let mut op_con = tls_connection(
        &ca,
        address,
        Some("redisha-operator"),
        operator_password.expose(),
    )
    .await
    .expect("the operator user logs in");
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut op_con)
        .await
        .expect("INFO");
    assert!(
        info.contains("connected_slaves:1") || info.contains("master_link_status:up"),
        "{info}"
    );

    // The metrics exporters (where the package is installed) log in as redisha-exporter with
    // `default` off, over TLS: each reports its node up.
    if std::path::Path::new("/usr/bin/prometheus-redis-exporter").exists() {
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

    // Where the secrets are: SSM, as SecureStrings; never in user data.
    let params = parameters(client).await;
    let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let prefix = secrets::parameter_prefix(CLUSTER, CLUSTER_ID);
    for wanted in [
        "password",
        "operator-password",
        "tls-authority",
        "node/auth",
        "node/users",
        "node/tls-ca",
    ] {
        assert!(
            names.contains(&format!("{prefix}/{wanted}").as_str()),
            "{wanted} in {names:?}"
        );
    }
    assert_eq!(
        names.iter().filter(|n| n.contains("/node/tls/")).count(),
        6,
        "a certificate per node: {names:?}"
    );
    let users = params
        .iter()
        .find(|(n, _)| n.ends_with("/node/users"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(
        !users.contains(USER_PASSWORD) && users.contains("user app "),
        "{users}"
    );
    let found = driver.unknown_hosts(&[]).await.expect("instances");
    assert_eq!(found.len(), 3);
    for instance in found {
        let text = readable_user_data(client, &instance.instance_id).await;
        for secret in [
            PASSWORD,
            USER_PASSWORD,
            operator_password.expose(),
            "PRIVATE KEY",
            "BEGIN CERTIFICATE",
        ] {
            assert!(
                !text.contains(secret),
                "user data of {} holds a secret",
                instance.instance_id
            );
        }
    }
}
