//! The Redis half of the aws driver through the cluster crate's `Driver` trait: instances come
//! from moto, their nodes are real redis-server processes on loopback reached through
//! `address_override` (moto's private addresses are never contacted).

mod common;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{host, Fixture, FixtureConfig, Moto, SUBNET_ZONES};
use redisha_aws::{AddressOverride, AwsDriver};
use redisha_cluster::{Driver, NodeConfig, Password};

/// A redis-server on 127.0.0.1, ended by pid on drop. The password is in a 0600 config file,
/// not in the process arguments.
struct StandIn {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start_redis(password: &str) -> Option<StandIn> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: redis-server not installed (apt-get install redis-server)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("redis.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\ncluster-enabled yes\ncluster-config-file nodes.conf\ncluster-announce-ip 127.0.0.1\nrequirepass {password}\nmasterauth {password}\nsave \"\"\nappendonly no\n",
            dir.path().display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let child = Command::new("redis-server")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    Some(StandIn {
        child,
        port,
        _dir: dir,
    })
}

#[tokio::test]
async fn nodes_of_instances_are_reached_through_their_loopback_stand_ins() {
    let Some(moto) = Moto::start() else { return };
    let password = "stand-in-secret";
    let Some(redis) = start_redis(password) else {
        return;
    };
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let mut config = fx.config("standin");
    config.address_override.insert(
        "standin-a-0".into(),
        AddressOverride {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: redis.port,
        },
    );
    config.timeouts.create = Duration::from_secs(20);
    let driver = AwsDriver::with_client(client.clone(), config).unwrap();
    let node_config = NodeConfig {
        password: Some(Password::new(password)),
        ..Default::default()
    };
    let plan = host("standin-a-0", "us-east-1a", 0, 0, 1);
    let plans = vec![plan.clone()];

    driver.preflight(&plans, &[], &node_config).await.unwrap();
    let handle = driver.provision_host(&plan, &node_config).await.unwrap();
    assert_eq!(
        handle.address, "127.0.0.1",
        "the stand-in, not the private address"
    );
    assert!(handle.extra["private_ip"].starts_with("10."));
    let node = driver
        .start_node(&handle, &plan.nodes[0], &node_config)
        .await
        .unwrap();
    assert_eq!((node.ip.as_str(), node.port), ("127.0.0.1", redis.port));

    // The cluster crate's connections work against the handle (PING with the password).
    let url = format!("redis://:{password}@127.0.0.1:{}/", redis.port);
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_tokio_connection()
        .await
        .unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    drop(conn);

    // A host without a stand-in is refused instead of reaching for the instance's address.
    let other = host("standin-b-0", "us-east-1b", 1, 0, 1);
    let other_handle = driver.provision_host(&other, &node_config).await.unwrap();
    let err = driver
        .start_node(&other_handle, &other.nodes[0], &node_config)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no entry for host standin-b-0"),
        "{err}"
    );

    // Stopping, restarting and removing nodes goes through SSM Run Command: tests/run_command.rs.
    drop(redis);

    driver.remove_host(&handle).await.unwrap();
    driver.remove_host(&other_handle).await.unwrap();
    let report = driver.destroy().await.unwrap();
    assert!(report.terminated.is_empty(), "hosts already removed");
    assert!(report.security_group_deleted);
}
