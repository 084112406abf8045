//! The user's own certificate (`tls { ca_cert_pem, cert_pem, key_pem }`) on the aws driver,
//! through the operator as the provider drives it:
//! - a certificate that does not name one instance's address: the create fails naming that
//!   address and the fix once the instances run, with no node certificate stored, no start
//!   sent and no node listening; the instances stay;
//! - the next create (a new driver and an empty state, as a new provider process) with a
//!   certificate naming every instance resumes on the same instances: the cluster forms, every
//!   node presents the supplied certificate, a TLS client verifying with the supplied CA
//!   works, plain text is refused, and `tls_ca_cert_pem` is the supplied CA;
//! - a renewed certificate rolls every node onto it with a TLS writer using WAIT running:
//!   no acknowledged write lost, and a second roll restarts nothing;
//! - the key is in no tag, user data, Run Command text, log line or error, and only in
//!   SecureString parameters; destroy leaves no parameter.
//!
//! EC2 and SSM are moto's; the test-only SSM runner first-boots each instance and runs every
//! Run Command the driver sends, with the nodes bound to loopback stand-ins 127.242.Z.1 (the
//! test-only address map): those are the addresses the driver sees for the instances, so the
//! test certificates name them.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Fixture, FixtureConfig, Moto, ZONES};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use redisha_aws::testing::ssm_runner::{ReportOnFailure, SsmRunner};
use redisha_aws::testing::{free_base_port, map_hosts, one_host_per_zone, user_data};
use redisha_aws::{secrets, AwsClients, AwsDriver, AwsDriverConfig};
use redisha_cluster::tls::TlsMode;
use redisha_cluster::tls_supplied::SuppliedCert;
use redisha_cluster::{ClusterState, Driver, Operator, Options, Password};

const CLUSTER: &str = "awscert";
const CLUSTER_ID: &str = "00000000000000c8";
const PASSWORD: &str = "aws-cert-Cluster-pw-61";

fn stand_ins() -> Vec<String> {
    common::stand_ins("127.242")
}

/// The team's own authority.
struct Pki {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn authority() -> Pki {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "awscert test PKI");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let key = KeyPair::generate().expect("key");
    Pki {
        cert: p.self_signed(&key).expect("CA"),
        key,
    }
}

/// A certificate of `pki` naming `ips` (IP SANs), good as server and client, valid until
/// `year`, with a key of its own.
fn issue(pki: &Pki, ips: &[String], year: i32) -> SuppliedCert {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "awscert nodes");
    p.distinguished_name = dn;
    p.subject_alt_names = ips
        .iter()
        .map(|ip| SanType::IpAddress(ip.parse().expect("ip")))
        .collect();
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(year, 1, 1);
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &pki.cert, &pki.key).expect("leaf");
    SuppliedCert {
        ca_cert_pem: pki.cert.pem(),
        cert_pem: cert.pem(),
        key_pem: Password::new(key.serialize_pem()),
    }
}

/// The lines of a PEM key's body: what a leak of it would show.
fn key_lines(cert: &SuppliedCert) -> Vec<String> {
    cert.key_pem
        .expose()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

/// Everything the tracing subscriber wrote during the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// The logs of redisha's crates at debug, captured (the test's only subscriber).
fn capture_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,redisha_aws=debug,redisha_cluster=debug",
        ))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    captured
}

/// Prints the captured logs when the test fails.
struct LogsOnFailure<'a>(&'a Captured);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.0.text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "logs (last 200 lines):\n{}",
                lines[lines.len().saturating_sub(200)..].join("\n")
            );
        }
    }
}

/// (name, type, value) of every parameter of the cluster.
async fn typed_parameters(client: &AwsClients) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let answer = client
            .ssm
            .get_parameters_by_path()
            .path(secrets::parameter_prefix(CLUSTER, CLUSTER_ID))
            .recursive(true)
            .with_decryption(true)
            .set_next_token(next.clone())
            .send()
            .await
            .expect("GetParametersByPath");
        for p in answer.parameters() {
            out.push((
                p.name().unwrap_or_default().to_string(),
                p.r#type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                p.value().unwrap_or_default().to_string(),
            ));
        }
        next = answer.next_token().map(str::to_string);
        if next.is_none() {
            return out;
        }
    }
}

/// The text of every Run Command sent to moto (comment and script).
async fn run_command_texts(client: &AwsClients) -> Vec<String> {
    let answer = client
        .ssm
        .list_commands()
        .send()
        .await
        .expect("ListCommands");
    answer
        .commands()
        .iter()
        .map(|c| {
            let script = c
                .parameters()
                .and_then(|p| p.get("commands"))
                .map(|lines| lines.join("\n"))
                .unwrap_or_default();
            format!("{}\n{script}", c.comment().unwrap_or_default())
        })
        .collect()
}

/// Every tag of every EC2 resource (instances, volumes, the security group), as `key=value`.
async fn all_tags(client: &AwsClients) -> Vec<String> {
    let answer = client.describe_tags().send().await.expect("DescribeTags");
    answer
        .tags()
        .iter()
        .map(|t| {
            format!(
                "{}={}",
                t.key().unwrap_or_default(),
                t.value().unwrap_or_default()
            )
        })
        .collect()
}

/// A driver as a provider process builds it for this configuration: TLS required with
/// `cert`, what SSM keeps loaded (no authority is made for a supplied certificate).
async fn driver_with(
    client: &AwsClients,
    config: &AwsDriverConfig,
    cert: &SuppliedCert,
) -> AwsDriver {
    let driver = AwsDriver::with_client(client.clone(), config.clone()).expect("driver");
    driver.set_tls_mode(Some(TlsMode::Required));
    driver.set_supplied_cert(Some(cert.clone()));
    driver
        .load_security(false, true)
        .await
        .expect("load security");
    driver
}

fn operator(driver: &AwsDriver) -> Operator<'_> {
    Operator::with_options(
        driver,
        common::password_config(PASSWORD),
        Options {
            timeout: Duration::from_secs(180),
            ..Options::default()
        },
    )
}

fn new_state() -> ClusterState {
    let mut state = ClusterState::new("aws");
    state.cluster_id = CLUSTER_ID.into();
    state.name = CLUSTER.into();
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplied_certificate_is_checked_against_the_instances_then_serves_and_rolls() {
    let captured = capture_logs();
    let _logs = LogsOnFailure(&captured);
    let Some(moto) = Moto::start() else { return };
    let client = moto.client().await;
    let fx = Fixture::create(&client, &ZONES).await;
    let runner = SsmRunner::booting(moto.port, CLUSTER);
    let _report = ReportOnFailure(&runner);
    let base = free_base_port(&stand_ins(), 29000..29490);
    let mut config = fx.config_with_id(CLUSTER, CLUSTER_ID);
    map_hosts(&mut config, &ZONES, &stand_ins(), base);
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(900),
        run(&client, &config, &runner, &captured, base),
    )
    .await;
    // Whatever happened: nothing of the cluster left behind.
    let cleanup = AwsDriver::with_client(client.clone(), config).expect("driver");
    let destroyed = cleanup.destroy().await;
    outcome.expect("test timed out");
    destroyed.expect("destroy");
    assert_eq!(
        common::parameters(&client, CLUSTER, CLUSTER_ID).await,
        Vec::new(),
        "destroy leaves no parameter of the cluster"
    );
    eprintln!(
        "supplied certificates on aws: {:?} in all",
        started.elapsed()
    );
}

async fn run(
    client: &AwsClients,
    config: &AwsDriverConfig,
    runner: &SsmRunner,
    captured: &Captured,
    base: u16,
) {
    let pki = authority();
    let addresses = stand_ins();
    let missing = addresses[2].clone();
    let partial = issue(&pki, &addresses[..2], 2040);
    let good = issue(&pki, &addresses, 2040);
    let renewed = issue(&pki, &addresses, 2041);
    let request = one_host_per_zone(&ZONES);
    let plan = redisha_planner::plan(&request, None).expect("plan");

    // (a) A certificate missing the third instance's address: refused once the instances
    // run, before any node starts.
    let refused = {
        let driver = driver_with(client, config, &partial).await;
        let op = operator(&driver);
        let mut state = new_state();
        let e = op
            .create(&request, &plan.placement, &mut state)
            .await
            .expect_err("a certificate missing an instance's address is refused");
        e.to_string()
    };
    assert!(refused.contains("tls.cert_pem"), "{refused}");
    assert!(
        refused.contains(&format!("{missing} (instance of host us-east-1c-1)")),
        "names the missing address: {refused}"
    );
    for named in &addresses[..2] {
        assert!(
            !refused.contains(&format!("{named} (instance of host")),
            "{named} is named by the certificate: {refused}"
        );
    }
    assert!(
        refused.contains("IP subject alternative names"),
        "{refused}"
    );
    assert!(
        refused.contains("remove tls.ca_cert_pem, tls.cert_pem and tls.key_pem"),
        "{refused}"
    );
    let instances = common::live_instances(client, CLUSTER).await;
    assert_eq!(instances.len(), 3, "the instances stay: {instances:?}");
    let params = common::parameters(client, CLUSTER, CLUSTER_ID).await;
    assert!(
        params.iter().all(|(n, _)| !n.contains("/node/tls/")),
        "no node certificate stored: {params:?}"
    );
    assert!(
        params.iter().all(|(n, _)| !n.ends_with("/tls-authority")),
        "no authority made for a supplied certificate: {params:?}"
    );
    let commands = run_command_texts(client).await;
    assert!(
        commands.iter().all(|c| !c.contains(" start node ")),
        "no start sent: {commands:?}"
    );
    for ip in &addresses {
        for port in [base, base + 1] {
            let listening = tokio::net::TcpStream::connect((ip.as_str(), port))
                .await
                .is_ok();
            assert!(!listening, "a node listens on {ip}:{port}");
        }
    }

    // (b) The next apply, with a certificate naming every instance: a new provider process
    // (a new driver, an empty state) resumes the create on the same instances.
    let driver = driver_with(client, config, &good).await;
    let op = operator(&driver);
    let mut state = new_state();
    op.create(&request, &plan.placement, &mut state)
        .await
        .expect("the create resumes with a certificate naming every instance");
    assert_eq!(state.nodes.len(), 6);
    assert_eq!(
        common::live_instances(client, CLUSTER).await,
        instances,
        "the same instances"
    );
    let ca = driver.client_tls().expect("client TLS").ca_cert_pem;
    assert_eq!(ca, pki.cert.pem(), "tls_ca_cert_pem is the supplied CA");
    let found = driver.unknown_hosts(&[]).await.expect("instances");
    let pem_of = |host: &str, port: u16| {
        let instance = found
            .iter()
            .find(|i| i.host == host)
            .expect("the node's instance");
        runner
            .machine(&instance.instance_id)
            .expect("the instance's machine")
            .read(&redisha_aws::node_secrets::node_pem_file(port))
    };
    for n in &state.nodes {
        let (ip, port) = (n.handle.ip.as_str(), n.handle.port);
        assert!(
            common::tls_ping(&ca, ip, port, PASSWORD).await,
            "{}: TLS with the supplied CA",
            n.name
        );
        let plain = common::plain_text_answer(ip, port, PASSWORD).await;
        assert!(
            !plain.starts_with(b"+") && !plain.starts_with(b"-"),
            "{}: answered plain text: {:?}",
            n.name,
            String::from_utf8_lossy(&plain)
        );
        assert!(
            pem_of(&n.host, port).contains(good.cert_pem.trim()),
            "{}: presents the supplied certificate",
            n.name
        );
        assert!(!driver.cert_due(&n.handle), "{}", n.name);
    }
    let cluster = common::tls_cluster_client(&state, PASSWORD, &ca);
    let mut con = cluster.get_async_connection().await.expect("TLS cluster");
    let before = common::acknowledged_keys(&mut con, "before", 50).await;

    // (c) A renewed certificate (same authority): every node rolls onto it, replicas first,
    // with a writer using WAIT going throughout.
    driver.set_supplied_cert(Some(renewed.clone()));
    assert_eq!(op.certs_due(&state).len(), 6, "every node is due");
    let ran_before = runner.ran().len();
    let roll_started = std::time::Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(common::writer(
        common::tls_cluster_client(&state, PASSWORD, &ca),
        "renewal:",
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    op.rotate_certs(&state)
        .await
        .expect("roll onto the renewed certificate");
    let rolled_in = roll_started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let written = writing.await.expect("writer");
    let restarts = runner.ran().len() - ran_before;
    assert!(
        restarts >= 12,
        "{restarts} Run Commands for 6 nodes (stop and start each)"
    );
    common::assert_none_lost(&cluster, &before, &written, "renewal roll").await;
    eprintln!("renewal roll: {restarts} Run Commands, {rolled_in:?}");
    for n in &state.nodes {
        assert!(
            pem_of(&n.host, n.handle.port).contains(renewed.cert_pem.trim()),
            "{}: presents the renewed certificate",
            n.name
        );
        assert!(
            common::tls_ping(&ca, &n.handle.ip, n.handle.port, PASSWORD).await,
            "{}: TLS after the roll",
            n.name
        );
    }
    assert!(op.certs_due(&state).is_empty());
    let ran = runner.ran().len();
    op.rotate_certs(&state).await.expect("second roll");
    assert_eq!(runner.ran().len(), ran, "a second roll restarts nothing");

    // (d) The keys: only in SecureString parameters; in no tag, user data, Run Command, log
    // line or error.
    let secrets_lines: Vec<String> = [&partial, &good, &renewed]
        .iter()
        .flat_map(|c| key_lines(c))
        .collect();
    assert!(secrets_lines.len() >= 6, "{secrets_lines:?}");
    let leaks = |what: &str, text: &str| {
        for line in &secrets_lines {
            assert!(
                !text.contains(line.as_str()),
                "a private key line in {what}"
            );
        }
        assert!(!text.contains("PRIVATE KEY"), "a private key in {what}");
    };
    for (name, kind, value) in typed_parameters(client).await {
        if value.contains("PRIVATE KEY") {
            assert_eq!(kind, "SecureString", "{name} holds a key");
            assert!(name.contains("/node/tls/"), "{name} holds a key");
        }
    }
    for tag in all_tags(client).await {
        leaks("a tag", &tag);
    }
    for instance in &found {
        let text = user_data(client, &instance.instance_id)
            .await
            .expect("user data");
        leaks("user data", &text);
        let readable =
            redisha_aws::testing::readable_user_data(client, &instance.instance_id).await;
        leaks("user data's files", &readable);
    }
    let commands = run_command_texts(client).await;
    assert!(commands.len() >= 12, "{} Run Commands", commands.len());
    for text in &commands {
        leaks("a Run Command", text);
    }
    leaks("the refusal", &refused);
    let logs = captured.text();
    assert!(
        logs.contains("no node starts"),
        "the refusal is logged (and the logs are captured)"
    );
    leaks("the logs", &logs);
    eprintln!(
        "leak check: {} key lines, {} log bytes, {} Run Commands, {} instances' user data",
        secrets_lines.len(),
        logs.len(),
        commands.len(),
        found.len()
    );
}
