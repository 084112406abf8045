//! The aws driver acts only on what carries the cluster's id, in the VPC of its subnets: two
//! clusters of one name (two Terraform states, say staging and prod) never see, keep, start or
//! terminate each other's instances or groups, and a cluster made before ids is claimed for its
//! id and then found by it. Real aws-sdk-ec2 against moto_server on loopback; no test connects to
//! an instance's (invented) private address.

mod common;

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;
use common::{host, Fixture, FixtureConfig, Moto, SUBNET_ZONES};
use redisha_aws::{AwsDriver, HostStatus};
use redisha_cluster::{ClusterRecord, ClusterStatus, Driver, HostHandle, HostPlan, NodeConfig};

const ID_TAG: &str = "redisha:cluster-id";

macro_rules! moto_or_skip {
    () => {
        match Moto::start() {
            Some(moto) => moto,
            None => return,
        }
    };
}

/// What EC2 says about one instance.
#[derive(Debug, Clone)]
struct Seen {
    state: String,
    vpc_id: String,
    tags: BTreeMap<String, String>,
    groups: Vec<String>,
    volumes: Vec<String>,
    client_token: String,
}

async fn describe(client: &aws_sdk_ec2::Client, ids: &[String]) -> BTreeMap<String, Seen> {
    let answer = client
        .describe_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .expect("DescribeInstances");
    let mut out = BTreeMap::new();
    for i in answer.reservations().iter().flat_map(|r| r.instances()) {
        out.insert(
            i.instance_id().unwrap_or_default().to_string(),
            Seen {
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                vpc_id: i.vpc_id().unwrap_or_default().to_string(),
                tags: i
                    .tags()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_string(),
                            t.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
                groups: i
                    .security_groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_string))
                    .collect(),
                volumes: i
                    .block_device_mappings()
                    .iter()
                    .filter_map(|m| m.ebs().and_then(|e| e.volume_id()).map(str::to_string))
                    .collect(),
                client_token: i.client_token().unwrap_or_default().to_string(),
            },
        );
    }
    out
}

/// The `redisha:cluster-id` tag of each volume in `ids` (None: untagged).
async fn volume_ids_tags(
    client: &aws_sdk_ec2::Client,
    ids: &[String],
) -> BTreeMap<String, Option<String>> {
    let answer = client
        .describe_volumes()
        .set_volume_ids(Some(ids.to_vec()))
        .send()
        .await
        .expect("DescribeVolumes");
    answer
        .volumes()
        .iter()
        .map(|v| {
            (
                v.volume_id().unwrap_or_default().to_string(),
                v.tags()
                    .iter()
                    .find(|t| t.key() == Some(ID_TAG))
                    .and_then(|t| t.value())
                    .map(str::to_string),
            )
        })
        .collect()
}

/// The security group `id` as (name, its `redisha:cluster-id` tag), or None when it is gone.
async fn group(client: &aws_sdk_ec2::Client, id: &str) -> Option<(String, Option<String>)> {
    let answer = client
        .describe_security_groups()
        .filters(Filter::builder().name("group-id").values(id).build())
        .send()
        .await
        .expect("DescribeSecurityGroups");
    answer.security_groups().first().map(|g| {
        (
            g.group_name().unwrap_or_default().to_string(),
            g.tags()
                .iter()
                .find(|t| t.key() == Some(ID_TAG))
                .and_then(|t| t.value())
                .map(str::to_string),
        )
    })
}

fn instance_ids(hosts: &[HostHandle]) -> Vec<String> {
    let mut ids: Vec<String> = hosts.iter().filter_map(|h| h.instance_id.clone()).collect();
    ids.sort();
    ids
}

fn group_of(hosts: &[HostHandle]) -> String {
    hosts[0].extra["security_group_id"].clone()
}

fn plans(prefix: &str) -> Vec<HostPlan> {
    vec![
        host(&format!("{prefix}-a-0"), "us-east-1a", 0, 0, 1),
        host(&format!("{prefix}-b-0"), "us-east-1b", 1, 0, 1),
    ]
}

async fn ensure(driver: &AwsDriver, plans: &[HostPlan]) -> Vec<HostHandle> {
    let report = driver.ensure_hosts(plans, &NodeConfig::default()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    report.ready
}

#[tokio::test]
async fn two_clusters_of_one_name_in_two_vpcs_never_touch_each_other() {
    let moto = moto_or_skip!();
    let client = moto.client().await;
    let staging = Fixture::create(&client, &SUBNET_ZONES).await;
    let prod = Fixture::create(&client, &SUBNET_ZONES).await;
    assert_ne!(staging.vpc_id, prod.vpc_id);
    let (staging_id, prod_id) = ("5a5a5a5a5a5a5a5a", "9f9f9f9f9f9f9f9f");
    let with_volume = |mut c: redisha_aws::AwsDriverConfig| {
        c.data_volume = Some(redisha_aws::DataVolume {
            size_gib: 10,
            encrypted: true,
            kms_key_id: None,
        });
        c
    };
    let s = AwsDriver::with_client(
        client.clone(),
        with_volume(staging.config_with_id("cache", staging_id)),
    )
    .unwrap();
    let p = AwsDriver::with_client(
        client.clone(),
        with_volume(prod.config_with_id("cache", prod_id)),
    )
    .unwrap();
    // Same cluster name, same host names, same zones.
    let plans = plans("cache");

    let s_hosts = ensure(&s, &plans).await;
    let p_hosts = ensure(&p, &plans).await;
    let s_ids = instance_ids(&s_hosts);
    let p_ids = instance_ids(&p_hosts);
    assert_eq!(s_ids.len(), 2);
    assert_eq!(p_ids.len(), 2);
    assert!(
        s_ids.iter().all(|i| !p_ids.contains(i)),
        "prod got its own instances, not staging's: {s_ids:?} {p_ids:?}"
    );

    // Each instance carries its cluster's id and runs in its cluster's VPC and group; its
    // volumes carry the id too.
    let s_group = group_of(&s_hosts);
    let p_group = group_of(&p_hosts);
    assert_ne!(s_group, p_group);
    for (ids, id, vpc, grp) in [
        (&s_ids, staging_id, &staging.vpc_id, &s_group),
        (&p_ids, prod_id, &prod.vpc_id, &p_group),
    ] {
        let seen = describe(&client, ids).await;
        for (instance, i) in &seen {
            assert_eq!(
                i.tags.get("redisha:cluster").map(String::as_str),
                Some("cache")
            );
            assert_eq!(
                i.tags.get(ID_TAG).map(String::as_str),
                Some(id),
                "{instance}"
            );
            assert_eq!(&i.vpc_id, vpc, "{instance}");
            assert_eq!(&i.groups, &vec![grp.clone()], "{instance}");
            assert!(!i.volumes.is_empty(), "{instance} has volumes");
            let volumes = volume_ids_tags(&client, &i.volumes).await;
            assert!(
                volumes.values().all(|v| v.as_deref() == Some(id)),
                "volumes of {instance} carry the id: {volumes:?}"
            );
        }
        // The group's name carries the id (names are unique per VPC), and so does its tag.
        let (name, tag) = group(&client, grp).await.expect("the group exists");
        assert_eq!(name, format!("redisha-cache-{id}"));
        assert_eq!(tag.as_deref(), Some(id));
    }

    // The client tokens RunInstances got differ for the same host and generation: one
    // cluster's launch can never be answered with the other's instance.
    let token_of = |hosts: &[HostHandle], seen: &BTreeMap<String, Seen>| {
        let id = hosts
            .iter()
            .find(|h| h.name == "cache-a-0")
            .and_then(|h| h.instance_id.clone())
            .unwrap();
        seen[&id].client_token.clone()
    };
    let s_token = token_of(&s_hosts, &describe(&client, &s_ids).await);
    let p_token = token_of(&p_hosts, &describe(&client, &p_ids).await);
    assert_eq!(
        s_token,
        redisha_aws::instances::client_token("cache", Some(staging_id), "cache-a-0", 0)
    );
    assert_eq!(
        p_token,
        redisha_aws::instances::client_token("cache", Some(prod_id), "cache-a-0", 0)
    );
    assert_ne!(s_token, p_token);

    // Another apply of prod keeps exactly its instances; staging's keep running.
    let again = ensure(&p, &plans).await;
    assert_eq!(instance_ids(&again), p_ids);
    let mut unknown: Vec<String> = p
        .unknown_hosts(&[])
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    unknown.sort();
    assert_eq!(unknown, p_ids, "prod sees only its instances");
    let all: Vec<String> = s_ids.iter().chain(&p_ids).cloned().collect();
    assert!(describe(&client, &all)
        .await
        .values()
        .all(|i| i.state == "running"));

    // Staging loses an instance: its next apply replaces it with its own, never taking over
    // prod's live instance of the same host name and zone.
    let lost = s_hosts[0].instance_id.clone().unwrap();
    client
        .terminate_instances()
        .instance_ids(&lost)
        .send()
        .await
        .unwrap();
    let status = s.read_hosts(&s_hosts).await.unwrap();
    assert!(
        matches!(&status[0], HostStatus::Missing { name, .. } if name == "cache-a-0"),
        "staging's lost host is missing, not found as prod's: {status:?}"
    );
    let replaced = s
        .ensure_host(&plans[0], &NodeConfig::default())
        .await
        .unwrap();
    let new_id = replaced.instance_id.clone().unwrap();
    assert_ne!(new_id, lost);
    assert!(
        !p_ids.contains(&new_id),
        "staging took over prod's instance"
    );
    let seen = describe(&client, std::slice::from_ref(&new_id)).await;
    assert_eq!(seen[&new_id].vpc_id, staging.vpc_id);
    assert!(describe(&client, &p_ids)
        .await
        .values()
        .all(|i| i.state == "running"));

    // Destroying staging terminates exactly staging's instances and deletes its group only.
    s.remember_hosts(&[replaced]).await;
    let destroyed = s.destroy().await.unwrap();
    let mut expected = vec![new_id, s_hosts[1].instance_id.clone().unwrap()];
    expected.sort();
    let mut terminated = destroyed.terminated.clone();
    terminated.sort();
    assert_eq!(terminated, expected);
    assert!(destroyed.security_group_deleted);
    assert!(group(&client, &s_group).await.is_none());
    let prod_after = describe(&client, &p_ids).await;
    assert!(
        prod_after.values().all(|i| i.state == "running"),
        "prod untouched: {prod_after:?}"
    );
    assert!(
        group(&client, &p_group).await.is_some(),
        "prod's group kept"
    );

    let destroyed = p.destroy().await.unwrap();
    let mut terminated = destroyed.terminated.clone();
    terminated.sort();
    assert_eq!(terminated, p_ids);
    assert!(destroyed.security_group_deleted);
}

#[tokio::test]
async fn two_clusters_of_one_name_in_one_vpc_get_their_own_groups() {
    let moto = moto_or_skip!();
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let a = AwsDriver::with_client(
        client.clone(),
        fx.config_with_id("cache", "00000000000000aa"),
    )
    .unwrap();
    let b = AwsDriver::with_client(
        client.clone(),
        fx.config_with_id("cache", "00000000000000bb"),
    )
    .unwrap();
    let plans = plans("cache");
    let a_hosts = ensure(&a, &plans).await;
    let b_hosts = ensure(&b, &plans).await;
    let (a_ids, b_ids) = (instance_ids(&a_hosts), instance_ids(&b_hosts));
    assert!(a_ids.iter().all(|i| !b_ids.contains(i)));
    assert_ne!(group_of(&a_hosts), group_of(&b_hosts));

    let destroyed = a.destroy().await.unwrap();
    let mut terminated = destroyed.terminated.clone();
    terminated.sort();
    assert_eq!(terminated, a_ids);
    assert!(describe(&client, &b_ids)
        .await
        .values()
        .all(|i| i.state == "running"));
    assert!(group(&client, &group_of(&b_hosts)).await.is_some());
}

#[tokio::test]
async fn a_cluster_made_before_ids_is_claimed_and_then_found_by_its_id() {
    let moto = moto_or_skip!();
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let elsewhere = Fixture::create(&client, &SUBNET_ZONES).await;
    let plans = plans("old");

    // What an older provider made: instances and a group tagged by name only.
    let legacy = AwsDriver::with_client(client.clone(), fx.config("old")).unwrap();
    let state_hosts = ensure(&legacy, &plans).await;
    let ids = instance_ids(&state_hosts);
    let legacy_group = group_of(&state_hosts);
    assert_eq!(
        group(&client, &legacy_group).await,
        Some(("redisha-old".to_string(), None))
    );
    // The same, by another Terraform state, in another VPC.
    let neighbour = AwsDriver::with_client(client.clone(), elsewhere.config("old")).unwrap();
    let neighbour_hosts = ensure(&neighbour, &plans[..1]).await;
    let neighbour_ids = instance_ids(&neighbour_hosts);
    let neighbour_group = group_of(&neighbour_hosts);

    // A new cluster of that name in the same VPC claims nothing when it records itself at
    // create: nothing is in its state.
    let fresh = AwsDriver::with_client(client.clone(), fx.config("old"))
        .unwrap()
        .with_cluster_id("0000000000000f00", "old")
        .unwrap();
    fresh
        .record_cluster(&ClusterRecord::new(
            "0000000000000f00",
            "old",
            ClusterStatus::Creating,
        ))
        .await
        .unwrap();
    assert_eq!(group(&client, &legacy_group).await.unwrap().1, None);
    assert!(describe(&client, &ids)
        .await
        .values()
        .all(|i| !i.tags.contains_key(ID_TAG)));

    // The provider gives the legacy cluster its id: the driver knows the hosts in state.
    let id = "0123456789abcdef";
    let driver = AwsDriver::with_client(client.clone(), fx.config("old")).unwrap();
    driver.remember_hosts(&state_hosts).await;
    let driver = driver.with_cluster_id(id, "old").unwrap();
    let record = ClusterRecord::new(id, "old", ClusterStatus::Ready);
    driver.record_cluster(&record).await.unwrap();

    let seen = describe(&client, &ids).await;
    for (instance, i) in &seen {
        assert_eq!(
            i.tags.get(ID_TAG).map(String::as_str),
            Some(id),
            "{instance}"
        );
        let volumes = volume_ids_tags(&client, &i.volumes).await;
        assert!(
            volumes.values().all(|v| v.as_deref() == Some(id)),
            "volumes of {instance}: {volumes:?}"
        );
    }
    assert_eq!(
        group(&client, &legacy_group).await,
        Some(("redisha-old".to_string(), Some(id.to_string()))),
        "the legacy group keeps its name and carries the id"
    );
    // The other state's cluster of the same name is not claimed.
    assert!(describe(&client, &neighbour_ids)
        .await
        .values()
        .all(|i| !i.tags.contains_key(ID_TAG)));
    assert_eq!(group(&client, &neighbour_group).await.unwrap().1, None);

    // Claiming again changes nothing.
    assert_eq!(
        driver.claim(&record).await.unwrap(),
        redisha_aws::ClaimReport::default()
    );

    // Found by the id: the hosts are present, an apply keeps the same instances in the
    // claimed group and launches nothing.
    let status = driver.read_hosts(&state_hosts).await.unwrap();
    for (st, h) in status.iter().zip(&state_hosts) {
        assert!(
            matches!(st, HostStatus::Present { handle } if handle.instance_id == h.instance_id),
            "{st:?}"
        );
    }
    let again = ensure(&driver, &plans).await;
    assert_eq!(instance_ids(&again), ids);
    assert_eq!(group_of(&again), legacy_group);
    assert_eq!(common::live_instances(&client, "old").await.len(), 3);

    // Another id's claim of those instances (named in its state) is refused, and tags nothing.
    let other = AwsDriver::with_client(client.clone(), fx.config("old")).unwrap();
    // Its state names one claimed instance (old-b-0) and one that carries no id (old-a-0, the
    // neighbour's, which replaces the claimed old-a-0 in the driver's memory).
    other.remember_hosts(&state_hosts).await;
    other.remember_hosts(&neighbour_hosts).await;
    let other = other.with_cluster_id("00000000000000ff", "old").unwrap();
    let err = other
        .record_cluster(&ClusterRecord::new(
            "00000000000000ff",
            "old",
            ClusterStatus::Ready,
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("carries cluster id {id}")), "{err}");
    assert!(describe(&client, &neighbour_ids)
        .await
        .values()
        .all(|i| !i.tags.contains_key(ID_TAG)));

    // Destroy terminates exactly the claimed instances and deletes the claimed group.
    let destroyed = driver.destroy().await.unwrap();
    let mut terminated = destroyed.terminated.clone();
    terminated.sort();
    assert_eq!(terminated, ids);
    assert!(destroyed.security_group_deleted);
    assert!(group(&client, &legacy_group).await.is_none());
    let neighbour_after = describe(&client, &neighbour_ids).await;
    assert!(neighbour_after.values().all(|i| i.state == "running"));
    assert!(group(&client, &neighbour_group).await.is_some());
}

#[tokio::test]
async fn a_group_two_clusters_made_before_ids_shared_stays_while_the_other_uses_it() {
    let moto = moto_or_skip!();
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    // Two older states named their cluster `dup` in one VPC: both used the group redisha-dup.
    let first = AwsDriver::with_client(client.clone(), fx.config("dup")).unwrap();
    let first_hosts = ensure(&first, &[host("dup-a-0", "us-east-1a", 0, 0, 1)]).await;
    let second = AwsDriver::with_client(client.clone(), fx.config("dup")).unwrap();
    let second_hosts = ensure(&second, &[host("dup-b-0", "us-east-1b", 1, 0, 1)]).await;
    let shared = group_of(&first_hosts);
    assert_eq!(group_of(&second_hosts), shared);

    // The first gets its id (claiming the group its state names) and is destroyed.
    let id = "00000000000d0001";
    let driver = AwsDriver::with_client(client.clone(), fx.config("dup")).unwrap();
    driver.remember_hosts(&first_hosts).await;
    let driver = driver.with_cluster_id(id, "dup").unwrap();
    driver
        .record_cluster(&ClusterRecord::new(id, "dup", ClusterStatus::Ready))
        .await
        .unwrap();
    let destroyed = driver.destroy().await.unwrap();
    assert_eq!(destroyed.terminated, instance_ids(&first_hosts));
    assert!(
        !destroyed.security_group_deleted,
        "the other cluster's instance still runs in the group"
    );
    let second_ids = instance_ids(&second_hosts);
    assert!(describe(&client, &second_ids)
        .await
        .values()
        .all(|i| i.state == "running"));
    assert!(group(&client, &shared).await.is_some());
}
