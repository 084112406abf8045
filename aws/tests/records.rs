//! The cluster's records live on EC2 (tags), so a provider that lost Terraform's private state
//! finds the cluster from its id alone: every node (name, shard, role, host, zone) from its
//! instance, and the cluster's create status and owner from its security group. Another
//! cluster of the same name, in another VPC, is never found. Real aws-sdk-ec2 against
//! moto_server on loopback; nothing connects to an instance's (invented) private address.

mod common;

use common::{Fixture, FixtureConfig, Moto, SUBNET_ZONES};
use redisha_aws::AwsDriver;
use redisha_cluster::identity::NodeRecord;
use redisha_cluster::{
    ClusterRecord, ClusterStatus, Driver, HostPlan, NodeConfig, NodeHandle, NodePlan,
};
use redisha_planner::Role;

fn plan(name: &str, zone: &str, zone_index: u32, nodes: &[(&str, u32, Role)]) -> HostPlan {
    HostPlan {
        name: name.into(),
        zone: zone.into(),
        zone_index,
        host_index: 0,
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, (node, shard, role))| NodePlan {
                name: node.to_string(),
                index_on_host: i as u16,
                shard: *shard,
                role: *role,
            })
            .collect(),
    }
}

fn plans() -> Vec<HostPlan> {
    vec![
        plan(
            "a-0",
            "us-east-1a",
            0,
            &[("s0-m", 0, Role::Master), ("s1-r0", 1, Role::Replica)],
        ),
        plan(
            "b-0",
            "us-east-1b",
            1,
            &[("s1-m", 1, Role::Master), ("s0-r0", 0, Role::Replica)],
        ),
    ]
}

/// (name, shard, role, host, zone, index on host) of every discovered node, sorted.
fn summary(found: &[(NodeHandle, NodeRecord)]) -> Vec<(String, u32, Role, String, String, u16)> {
    let mut out: Vec<_> = found
        .iter()
        .map(|(h, r)| {
            assert_eq!(h.name, r.name);
            assert_eq!(h.host, r.host);
            assert_eq!(h.index_on_host, r.index_on_host);
            (
                r.name.clone(),
                r.shard,
                r.role,
                r.host.clone(),
                r.zone.clone(),
                r.index_on_host,
            )
        })
        .collect();
    out.sort();
    out
}

fn expected() -> Vec<(String, u32, Role, String, String, u16)> {
    let mut out: Vec<_> = plans()
        .iter()
        .flat_map(|h| {
            h.nodes.iter().map(|n| {
                (
                    n.name.clone(),
                    n.shard,
                    n.role,
                    h.name.clone(),
                    h.zone.clone(),
                    n.index_on_host,
                )
            })
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_cluster_is_found_again_from_its_id_alone() {
    let moto = Moto::start().expect("moto_server (scripts/setup installs it into .venv)");
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let other_vpc = Fixture::create(&client, &SUBNET_ZONES).await;
    let id = "1234567890abcdef";
    let driver = AwsDriver::with_client(client.clone(), fx.config_with_id("cache", id)).unwrap();

    // The record comes first: the group exists and says "creating", owned by this process.
    let creating = ClusterRecord::new(id, "cache", ClusterStatus::Creating);
    driver.record_cluster(&creating).await.expect("record");
    // A driver that knows neither the id nor any state (a create being planned) finds it.
    let looking = AwsDriver::with_client(client.clone(), fx.config("cache")).unwrap();
    let found = looking.find_clusters().await.expect("find_clusters");
    assert_eq!(found, vec![creating.clone()], "the record reads back whole");
    assert!(found[0].is_mine(), "this process on this machine owns it");
    assert!(
        found[0].lease_until.is_some(),
        "with a lease for other machines"
    );
    // From the other VPC, nothing: same name, another place.
    let elsewhere = AwsDriver::with_client(client.clone(), other_vpc.config("cache")).unwrap();
    assert_eq!(elsewhere.find_clusters().await.expect("find"), vec![]);

    let report = driver.ensure_hosts(&plans(), &NodeConfig::default()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    // A fresh driver for the id, with nothing from state, finds every node as planned.
    let fresh = || AwsDriver::with_client(client.clone(), fx.config_with_id("cache", id)).unwrap();
    let found = fresh()
        .discover(id)
        .await
        .expect("discover")
        .expect("supported");
    assert_eq!(summary(&found), expected());
    for (handle, record) in &found {
        assert_eq!(record.cluster_id, id);
        assert_eq!(record.cluster_name, "cache");
        assert_eq!(handle.port, 6379 + handle.index_on_host);
        assert_eq!(record.address, handle.ip);
    }
    // Asking for another id is refused, not answered with this cluster's nodes.
    assert!(fresh().discover("ffffffffffffffff").await.is_err());

    // A failover changed the planned roles: the records follow.
    let (s0m, mut rec) = found
        .iter()
        .find(|(h, _)| h.name == "s0-m")
        .cloned()
        .expect("s0-m");
    rec.role = Role::Replica;
    fresh().record_node(&s0m, &rec).await.expect("record_node");
    let again = fresh().discover(id).await.unwrap().unwrap();
    let role = again
        .iter()
        .find(|(h, _)| h.name == "s0-m")
        .map(|(_, r)| r.role);
    assert_eq!(role, Some(Role::Replica));
    assert_eq!(again.len(), 4, "rewriting a record adds no node");

    // A record for another cluster's id is refused.
    let mut foreign = rec.clone();
    foreign.cluster_id = "ffffffffffffffff".into();
    assert!(fresh().record_node(&s0m, &foreign).await.is_err());

    // The create finishes: the record says so and names no owner.
    let ready = ClusterRecord::new(id, "cache", ClusterStatus::Ready);
    driver.record_cluster(&ready).await.expect("record ready");
    assert_eq!(looking.find_clusters().await.unwrap(), vec![ready]);

    // Same name in the other VPC: its own nodes only.
    let other_id = "fedcba0987654321";
    let other = AwsDriver::with_client(client.clone(), other_vpc.config_with_id("cache", other_id))
        .unwrap();
    let report = other
        .ensure_hosts(&plans()[..1], &NodeConfig::default())
        .await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let theirs = other.discover(other_id).await.unwrap().unwrap();
    assert_eq!(theirs.len(), 2);
    assert_eq!(fresh().discover(id).await.unwrap().unwrap().len(), 4);
}

#[tokio::test]
async fn instances_without_node_records_are_named_not_guessed() {
    let moto = Moto::start().expect("moto_server (scripts/setup installs it into .venv)");
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let id = "00112233aabbccdd";
    let driver = AwsDriver::with_client(client.clone(), fx.config_with_id("old", id)).unwrap();
    let hosts = driver
        .ensure_hosts(&plans()[..1], &NodeConfig::default())
        .await
        .ready;
    let instance = hosts[0].instance_id.clone().expect("instance id");
    // As an instance launched by an older redisha: no node tags.
    client
        .delete_tags()
        .resources(&instance)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("redisha:node:0")
                .build(),
        )
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("redisha:node:1")
                .build(),
        )
        .send()
        .await
        .expect("DeleteTags");
    let err = driver.discover(id).await.expect_err("untagged instance");
    let text = err.to_string();
    assert!(text.contains(&instance), "{text}");
    assert!(text.contains("private state"), "{text}");

    // With the state's nodes (what an apply with private state does), the records come back.
    for n in &plans()[0].nodes {
        let handle = NodeHandle {
            name: n.name.clone(),
            host: "a-0".into(),
            ip: "10.0.1.10".into(),
            port: 6379 + n.index_on_host,
            index_on_host: n.index_on_host,
            pid: None,
            data_dir: None,
            config_file: None,
        };
        let record = NodeRecord {
            format: 1,
            cluster_id: id.into(),
            cluster_name: "old".into(),
            name: n.name.clone(),
            shard: n.shard,
            role: n.role,
            zone: "us-east-1a".into(),
            host: "a-0".into(),
            address: "10.0.1.10".into(),
            index_on_host: n.index_on_host,
        };
        driver
            .record_node(&handle, &record)
            .await
            .expect("record_node");
    }
    let found = driver.discover(id).await.expect("discover").expect("some");
    let mut names: Vec<String> = found.iter().map(|(h, _)| h.name.clone()).collect();
    names.sort();
    assert_eq!(names, vec!["s0-m".to_string(), "s1-r0".to_string()]);
}
