//! The aws driver with the real aws-sdk-ec2 against moto_server on loopback. No test connects
//! to an instance's (invented) private address.

mod common;

use base64::Engine as _;
use common::{host, live_instances, Fixture, FixtureConfig, Moto, SUBNET_ZONES};
use redisha_aws::{AwsDriver, AwsError, HostStatus};
use redisha_cluster::{NodeConfig, Password};

macro_rules! moto_or_skip {
    () => {
        match Moto::start() {
            Some(moto) => moto,
            None => return,
        }
    };
}

fn password_config() -> NodeConfig {
    NodeConfig {
        password: Some(Password::new("correct-horse-battery")),
        ..Default::default()
    }
}

#[tokio::test]
async fn topology_lists_the_zones_and_subnets_of_a_vpc() {
    let moto = moto_or_skip!();
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;

    let topo = redisha_aws::topology(&client, &fx.vpc_id).await.unwrap();
    let names: Vec<&str> = topo.zones.iter().map(|z| z.name.as_str()).collect();
    assert_eq!(names, ["us-east-1a", "us-east-1b", "us-east-1c"]);
    let a = &topo.zones[0];
    assert!(!a.id.is_empty(), "zone id present");
    assert_eq!(a.subnets.len(), 2, "two subnets share zone a");
    let mut cidrs: Vec<&str> = a.subnets.iter().map(|s| s.cidr.as_str()).collect();
    cidrs.sort();
    assert_eq!(cidrs, ["10.0.1.0/24", "10.0.4.0/24"]);
    assert!(a.subnets.iter().all(|s| s.available_ips > 200));

    let err = redisha_aws::topology(&client, "vpc-00000000")
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::VpcNotFound { .. }), "{err}");
    assert!(err
        .to_string()
        .starts_with("vpc_id: VPC vpc-00000000 not found in region us-east-1"));
}

#[tokio::test]
async fn apply_creates_planned_instances_with_tags_rules_user_data_and_volumes() {
    let moto = moto_or_skip!();
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let mut config = fx.config("shop");
    config.allowed_cidrs = vec!["10.9.0.0/16".into()];
    config.tags.insert("team".into(), "payments".into());
    config.data_volume = Some(redisha_aws::DataVolume {
        size_gib: 20,
        encrypted: true,
        kms_key_id: None,
    });
    let driver = AwsDriver::with_client(client.clone(), config).unwrap();
    assert_eq!(
        driver.host_memory_mib().await.unwrap(),
        2048,
        "t3.small has 2 GiB"
    );
    assert_eq!(
        driver.zones().await.unwrap(),
        ["us-east-1a", "us-east-1b", "us-east-1c"]
    );

    let plans = vec![
        host("shop-a-0", "us-east-1a", 0, 0, 2),
        host("shop-b-0", "us-east-1b", 1, 0, 2),
        host("shop-c-0", "us-east-1c", 2, 0, 2),
        host("shop-a-1", "us-east-1a", 0, 1, 1),
    ];
    let report = driver.ensure_hosts(&plans, &password_config()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.ready.len(), 4);

    let live = live_instances(&client, "shop").await;
    assert_eq!(live.len(), 4);
    for plan in &plans {
        let (_, zone, _) = live.iter().find(|(h, _, _)| h == &plan.name).unwrap();
        assert_eq!(zone, &plan.zone, "{} in its planned zone", plan.name);
    }
    // The two hosts of zone a are spread over its two subnets.
    let subnets_a: std::collections::BTreeSet<&String> = report
        .ready
        .iter()
        .filter(|h| h.zone == "us-east-1a")
        .map(|h| &h.extra["subnet_id"])
        .collect();
    assert_eq!(subnets_a.len(), 2);

    let handle = &report.ready[0];
    let instance_id = handle.instance_id.clone().unwrap();
    let described = client
        .describe_instances()
        .instance_ids(&instance_id)
        .send()
        .await
        .unwrap();
    let instance = &described.reservations()[0].instances()[0];
    let tag = |k: &str| {
        instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    assert_eq!(tag("redisha:cluster").as_deref(), Some("shop"));
    assert_eq!(tag("redisha:host").as_deref(), Some("shop-a-0"));
    assert_eq!(tag("redisha:zone").as_deref(), Some("us-east-1a"));
    assert_eq!(tag("team").as_deref(), Some("payments"));
    assert_eq!(tag("Name").as_deref(), Some("redisha-shop-shop-a-0"));
    assert_eq!(handle.address, instance.private_ip_address().unwrap());

    // Security group: node ports from the group itself and the allowed CIDR; bus ports (no
    // authentication on the bus) from the group alone.
    let group_id = instance.security_groups()[0]
        .group_id()
        .unwrap()
        .to_string();
    let groups = client
        .describe_security_groups()
        .group_ids(&group_id)
        .send()
        .await
        .unwrap();
    let group = &groups.security_groups()[0];
    assert_eq!(group.group_name(), Some("redisha-shop"));
    let mut rules = Vec::new();
    for p in group.ip_permissions() {
        for pair in p.user_id_group_pairs() {
            rules.push((
                p.from_port(),
                p.to_port(),
                pair.group_id().unwrap().to_string(),
            ));
        }
        for r in p.ip_ranges() {
            rules.push((p.from_port(), p.to_port(), r.cidr_ip().unwrap().to_string()));
        }
    }
    rules.sort();
    assert_eq!(
        rules,
        vec![
            (Some(6379), Some(6380), "10.9.0.0/16".to_string()),
            (Some(6379), Some(6380), group_id.clone()),
            (Some(16379), Some(16380), group_id.clone()),
        ]
    );

    // User data: cloud-config starting both nodes; the password is not in clear.
    let attr = client
        .describe_instance_attribute()
        .instance_id(&instance_id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = attr.user_data().and_then(|u| u.value()).unwrap();
    let doc = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    assert!(doc.starts_with("#cloud-config\n"), "{doc}");
    assert!(doc.contains("runs redis-server on ports 6379, 6380"));
    assert!(!doc.contains("correct-horse-battery"));

    // Data volume: gp3, 20 GiB, encrypted, tagged, deleted with the instance.
    let volumes = client
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(&instance_id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let data = volumes
        .volumes()
        .iter()
        .find(|v| {
            v.attachments()
                .iter()
                .any(|a| a.device() == Some("/dev/sdf"))
        })
        .expect("data volume attached as /dev/sdf");
    assert_eq!(data.size(), Some(20));
    assert_eq!(data.encrypted(), Some(true));
    assert_eq!(
        data.volume_type(),
        Some(&aws_sdk_ec2::types::VolumeType::Gp3)
    );

    // A second apply changes nothing.
    let again = driver.ensure_hosts(&plans, &password_config()).await;
    assert!(again.failed.is_empty());
    assert_eq!(live_instances(&client, "shop").await, live);
    let ids = |r: &[redisha_cluster::HostHandle]| {
        r.iter().map(|h| h.instance_id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&again.ready), ids(&report.ready));
}

#[tokio::test]
async fn a_terminated_instance_is_drift_and_is_replaced_in_its_zone() {
    let moto = moto_or_skip!();
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let driver = AwsDriver::with_client(client.clone(), fx.config("drift")).unwrap();
    let plans = vec![
        host("drift-a-0", "us-east-1a", 0, 0, 1),
        host("drift-b-0", "us-east-1b", 1, 0, 1),
    ];
    let first = driver.ensure_hosts(&plans, &NodeConfig::default()).await;
    assert!(first.failed.is_empty(), "{:?}", first.failed);
    let victim = first.ready[1].clone();
    assert_eq!(victim.name, "drift-b-0");

    client
        .terminate_instances()
        .instance_ids(victim.instance_id.clone().unwrap())
        .send()
        .await
        .unwrap();

    let status = driver.read_hosts(&first.ready).await.unwrap();
    assert!(
        matches!(&status[0], HostStatus::Present { handle } if handle.instance_id == first.ready[0].instance_id)
    );
    assert_eq!(
        status[1],
        HostStatus::Missing {
            name: "drift-b-0".into(),
            zone: "us-east-1b".into()
        }
    );

    let second = driver.ensure_hosts(&plans, &NodeConfig::default()).await;
    assert!(second.failed.is_empty(), "{:?}", second.failed);
    assert_eq!(
        second.ready[0].instance_id, first.ready[0].instance_id,
        "untouched host kept"
    );
    let replacement = &second.ready[1];
    assert_ne!(replacement.instance_id, victim.instance_id);
    assert_eq!(
        replacement.zone, "us-east-1b",
        "replaced in the planned zone"
    );
    assert_eq!(replacement.extra["generation"], "1");
    let live = live_instances(&client, "drift").await;
    assert_eq!(live.len(), 2, "{live:?}");
}

#[tokio::test]
async fn a_failed_apply_converges_on_the_next_one_without_duplicates() {
    let moto = moto_or_skip!();
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let plans = vec![
        host("conv-a-0", "us-east-1a", 0, 0, 1),
        host("conv-b-0", "us-east-1b", 1, 0, 1),
        host("conv-c-0", "us-east-1c", 2, 0, 1),
    ];

    // A bad subnet id is named with its index before anything is created.
    let mut bad = fx.config("conv");
    bad.subnet_ids[2] = "subnet-deadbeef".into();
    let driver = AwsDriver::with_client(client.clone(), bad).unwrap();
    let report = driver.ensure_hosts(&plans, &NodeConfig::default()).await;
    assert!(report.ready.is_empty());
    let message = report.failed[0].1.to_string();
    assert!(
        message.contains("aws.subnet_ids[2]: subnet subnet-deadbeef not found in region us-east-1"),
        "{message}"
    );
    assert!(live_instances(&client, "conv").await.is_empty());

    // Zone c has no subnet configured: hosts a and b come up, c fails, naming the fix.
    let mut partial = fx.config("conv");
    partial.subnet_ids = vec![fx.subnets[0].0.clone(), fx.subnets[1].0.clone()];
    let driver = AwsDriver::with_client(client.clone(), partial).unwrap();
    let report = driver.ensure_hosts(&plans, &NodeConfig::default()).await;
    let ready: Vec<&str> = report.ready.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(ready, ["conv-a-0", "conv-b-0"]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, "conv-c-0");
    assert!(report.failed[0]
        .1
        .to_string()
        .starts_with("aws.subnet_ids: no subnet in zone us-east-1c"));

    // The next apply, fixed, finds a and b by tag and launches only c.
    let driver = AwsDriver::with_client(client.clone(), fx.config("conv")).unwrap();
    let report2 = driver.ensure_hosts(&plans, &NodeConfig::default()).await;
    assert!(report2.failed.is_empty(), "{:?}", report2.failed);
    assert_eq!(report2.ready[0].instance_id, report.ready[0].instance_id);
    assert_eq!(report2.ready[1].instance_id, report.ready[1].instance_id);
    let live = live_instances(&client, "conv").await;
    let hosts: Vec<&str> = live.iter().map(|(h, _, _)| h.as_str()).collect();
    assert_eq!(hosts, ["conv-a-0", "conv-b-0", "conv-c-0"], "no duplicates");

    // A duplicate left by an interrupted launch (same host tag) is terminated, keeping one.
    let scope = redisha_aws::instances::Scope {
        cluster: "conv",
        cluster_id: None,
        vpc_id: &fx.vpc_id,
    };
    let prepared = redisha_aws::instances::find_instances(&client, &scope, Some("conv-a-0"))
        .await
        .unwrap();
    let group = prepared[0].security_groups[0].clone();
    let config = fx.config("conv");
    redisha_aws::instances::launch(
        &client,
        &redisha_aws::instances::LaunchSpec {
            config: &config,
            host: "conv-a-0",
            zone: "us-east-1a",
            subnet_id: &fx.subnets[0].0,
            security_group_id: &group,
            generation: 0,
            user_data: "",
            nodes: &[],
            instance_profile: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(live_instances(&client, "conv").await.len(), 4);
    let report3 = driver.ensure_hosts(&plans, &NodeConfig::default()).await;
    assert!(report3.failed.is_empty());
    assert_eq!(report3.ready[0].instance_id, report.ready[0].instance_id);
    assert_eq!(live_instances(&client, "conv").await.len(), 3);
}

#[tokio::test]
async fn destroy_leaves_no_instance_and_no_group() {
    let moto = moto_or_skip!();
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let driver = AwsDriver::with_client(client.clone(), fx.config("gone")).unwrap();
    let plans = vec![
        host("gone-a-0", "us-east-1a", 0, 0, 1),
        host("gone-c-0", "us-east-1c", 2, 0, 1),
    ];
    let report = driver.ensure_hosts(&plans, &NodeConfig::default()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    // Another cluster in the same VPC is left alone.
    let other = AwsDriver::with_client(client.clone(), fx.config("keep")).unwrap();
    let kept = other
        .ensure_hosts(
            &[host("keep-b-0", "us-east-1b", 1, 0, 1)],
            &NodeConfig::default(),
        )
        .await;
    assert!(kept.failed.is_empty());

    let destroyed = driver.destroy().await.unwrap();
    assert_eq!(destroyed.terminated.len(), 2);
    assert!(destroyed.security_group_deleted);
    assert!(live_instances(&client, "gone").await.is_empty());
    let groups = client
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values("redisha-gone")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(groups.security_groups().is_empty());
    assert_eq!(live_instances(&client, "keep").await.len(), 1);

    // Destroying again is a no-op.
    let again = driver.destroy().await.unwrap();
    assert!(again.terminated.is_empty());
    assert!(!again.security_group_deleted);
}

/// The cluster bus has no authentication: an older redisha opened it to `allowed_cidrs` like
/// the client ports. The next apply closes it to everything but the cluster's own group, and
/// leaves the client ports open to the CIDR.
#[tokio::test]
async fn a_bus_open_to_client_networks_is_closed_by_the_next_apply() {
    let moto = moto_or_skip!();
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let mut config = fx.config("bus");
    config.allowed_cidrs = vec!["10.9.0.0/16".into()];
    let plans = vec![host("bus-a-0", "us-east-1a", 0, 0, 1)];
    let first = AwsDriver::with_client(client.clone(), config.clone()).unwrap();
    let report = first.ensure_hosts(&plans, &password_config()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let group_id = report.ready[0].extra["security_group_id"].clone();
    client
        .authorize_security_group_ingress()
        .group_id(&group_id)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(16379)
                .to_port(16379)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("10.9.0.0/16")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("AuthorizeSecurityGroupIngress");

    let next = AwsDriver::with_client(client.clone(), config).unwrap();
    let report = next.ensure_hosts(&plans, &password_config()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let groups = client
        .describe_security_groups()
        .group_ids(&group_id)
        .send()
        .await
        .unwrap();
    let open_to_cidr: Vec<i32> = groups.security_groups()[0]
        .ip_permissions()
        .iter()
        .filter(|p| {
            p.ip_ranges()
                .iter()
                .any(|r| r.cidr_ip() == Some("10.9.0.0/16"))
        })
        .filter_map(|p| p.from_port())
        .collect();
    assert_eq!(
        open_to_cidr,
        vec![6379],
        "only the client port stays open to the CIDR"
    );
}
