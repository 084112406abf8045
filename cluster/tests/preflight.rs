//! Preflight names the setting and the fix for a missing redis-server, a taken port and an
//! unwritable data dir, before anything is started.

mod common;

use common::*;
use redisha_cluster::{
    ClusterError, ClusterState, DriverError, LocalConfig, LocalDriver, NodeConfig, Operator,
};

#[tokio::test]
async fn preflight_reports_binary_port_and_data_dir_problems() {
    let fx = Fixture::new(23, 7300);
    let plan = placement(3, 1);
    let empty = ClusterState::default();

    let mut cfg = fx.driver.config().clone();
    cfg.redis_server = "/nonexistent/redis-server".into();
    let driver = LocalDriver::new(cfg);
    let err = Operator::new(&driver, NodeConfig::default())
        .preflight(&fx.request, &plan, &empty)
        .await
        .expect_err("missing binary");
    assert!(matches!(
        err,
        ClusterError::Driver(DriverError::RedisServerNotFound { .. })
    ));
    assert!(err.to_string().starts_with("redis_server:"), "{err}");

    let blocker = std::net::TcpListener::bind("127.23.1.1:7300").expect("bind blocker");
    let err = Operator::new(&fx.driver, NodeConfig::default())
        .preflight(&fx.request, &plan, &empty)
        .await
        .expect_err("port taken");
    assert!(
        err.to_string().contains("base_port") && err.to_string().contains("127.23.1.1:7300"),
        "{err}"
    );
    drop(blocker);

    let file = fx.dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let driver = LocalDriver::new(LocalConfig {
        data_dir: file.join("sub"),
        ..fx.driver.config().clone()
    });
    let err = Operator::new(&driver, NodeConfig::default())
        .preflight(&fx.request, &plan, &empty)
        .await
        .expect_err("unwritable data dir");
    assert!(err.to_string().starts_with("data_dir:"), "{err}");

    let mut bad = NodeConfig::default();
    bad.redis_config.insert("requirepass".into(), "x".into());
    let err = Operator::new(&fx.driver, bad)
        .preflight(&fx.request, &plan, &empty)
        .await
        .expect_err("reserved setting");
    assert!(
        err.to_string().starts_with("redis_config.requirepass"),
        "{err}"
    );

    Operator::new(&fx.driver, NodeConfig::default())
        .preflight(&fx.request, &plan, &empty)
        .await
        .expect("a free loopback range passes");
}
