//! The configuration endpoint: a Route 53 private hosted zone record listing the cluster's
//! instances. Checked at plan against the subnets' VPC; published and updated as instances
//! change; never written over nor deleted when the name holds records that are not the
//! cluster's (a TXT record proves ownership); withdrawn at destroy. Real aws-sdk-route53
//! against moto_server on loopback; the addresses are only DNS data, never contacted.

mod common;

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use common::{Fixture, FixtureConfig, Moto, SUBNET_ZONES};
use redisha_aws::dns_endpoint::{EndpointSpec, DEFAULT_TTL};
use redisha_aws::error::Field;
use redisha_aws::testing::{hosted_zone as zone, record_values};
use redisha_aws::{AwsClients, AwsDriver};

/// The values of the record set of `kind` at `name`, sorted.
async fn values(client: &AwsClients, zone_id: &str, name: &str, kind: RrType) -> Vec<String> {
    record_values(client, zone_id, name, kind.as_str()).await
}
use redisha_cluster::HostHandle;

fn hosts(addresses: &[&str]) -> Vec<HostHandle> {
    addresses
        .iter()
        .enumerate()
        .map(|(i, a)| HostHandle {
            name: format!("h-{i}"),
            zone: "us-east-1a".into(),
            address: a.to_string(),
            instance_id: Some(format!("i-{i:017}")),
            extra: Default::default(),
        })
        .collect()
}

fn spec(zone_id: &str, name: &str) -> EndpointSpec {
    EndpointSpec {
        hosted_zone_id: zone_id.into(),
        name: name.into(),
        ttl: DEFAULT_TTL,
    }
}

#[tokio::test]
async fn the_endpoint_lists_the_instances_and_touches_only_its_own_records() {
    let moto = Moto::start().expect("moto_server (scripts/setup installs it into .venv)");
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let elsewhere = Fixture::create(&client, &SUBNET_ZONES).await;
    let private = zone(&client, "internal.example", Some(&fx.vpc_id)).await;
    let public = zone(&client, "public.example", None).await;
    let driver = AwsDriver::with_client(
        client.clone(),
        fx.config_with_id("cache", "00000000000000a1"),
    )
    .unwrap();
    let other_vpc = AwsDriver::with_client(
        client.clone(),
        elsewhere.config_with_id("cache", "00000000000000c3"),
    )
    .unwrap();
    let name = "cache.internal.example";

    // At plan: the zone must be private, associated with the subnets' VPC, and hold the name.
    driver
        .check_endpoint(&spec(&private, name))
        .await
        .expect("a private zone of the VPC");
    for (bad, field, words) in [
        (
            spec(&public, "cache.public.example"),
            Field::EndpointZone,
            "public",
        ),
        (
            spec(&private, "cache.elsewhere.example"),
            Field::EndpointName,
            "not in hosted zone",
        ),
        (spec("ZNOSUCHZONE", name), Field::EndpointZone, "not found"),
    ] {
        let e = driver.check_endpoint(&bad).await.expect_err(&bad.name);
        assert_eq!(e.field(), Some(field), "{e}");
        assert!(e.to_string().contains(words), "{e}");
    }
    let e = other_vpc
        .check_endpoint(&spec(&private, name))
        .await
        .expect_err("another VPC's cluster");
    assert!(e.to_string().contains("not associated"), "{e}");

    // Published: every instance, and the TXT record that makes the name the cluster's.
    let endpoint = spec(&private, name);
    driver
        .publish_endpoint(&endpoint, &hosts(&["10.0.1.5", "10.0.2.6", "10.0.3.7"]))
        .await
        .expect("publish");
    assert_eq!(
        values(&client, &private, name, RrType::A).await,
        ["10.0.1.5", "10.0.2.6", "10.0.3.7"]
    );
    assert_eq!(
        values(&client, &private, name, RrType::Txt).await,
        ["\"redisha-cluster-id=00000000000000a1\""]
    );
    // An instance replaced: the record follows (an upsert; run twice, the same).
    for _ in 0..2 {
        driver
            .publish_endpoint(&endpoint, &hosts(&["10.0.1.5", "10.0.3.7", "10.0.2.99"]))
            .await
            .expect("publish again");
    }
    assert_eq!(
        values(&client, &private, name, RrType::A).await,
        ["10.0.1.5", "10.0.2.99", "10.0.3.7"]
    );

    // Another cluster (another id) cannot take the name, and leaves the records as they are.
    let rival = AwsDriver::with_client(
        client.clone(),
        fx.config_with_id("cache", "00000000000000b2"),
    )
    .unwrap();
    let e = rival
        .publish_endpoint(&endpoint, &hosts(&["10.0.9.9"]))
        .await
        .expect_err("the name is another cluster's");
    assert_eq!(e.field(), Some(Field::EndpointName), "{e}");
    assert!(!rival.withdraw_endpoint(&endpoint).await.expect("withdraw"));
    assert_eq!(values(&client, &private, name, RrType::A).await.len(), 3);

    // A record someone made by hand: never overwritten, never deleted.
    let theirs = "app.internal.example";
    let hand_made = ResourceRecordSet::builder()
        .name(theirs)
        .r#type(RrType::A)
        .ttl(300)
        .resource_records(ResourceRecord::builder().value("10.0.7.7").build().unwrap())
        .build()
        .unwrap();
    client
        .route53
        .change_resource_record_sets()
        .hosted_zone_id(&private)
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    Change::builder()
                        .action(ChangeAction::Create)
                        .resource_record_set(hand_made)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("a hand-made record");
    let e = driver
        .publish_endpoint(&spec(&private, theirs), &hosts(&["10.0.1.5"]))
        .await
        .expect_err("someone else's record");
    assert!(e.to_string().contains("not this cluster's"), "{e}");
    assert!(!driver
        .withdraw_endpoint(&spec(&private, theirs))
        .await
        .expect("withdraw"));
    assert_eq!(
        values(&client, &private, theirs, RrType::A).await,
        ["10.0.7.7"]
    );

    // Destroy withdraws both records; a second withdraw finds nothing of ours.
    assert!(driver.withdraw_endpoint(&endpoint).await.expect("withdraw"));
    assert!(values(&client, &private, name, RrType::A).await.is_empty());
    assert!(values(&client, &private, name, RrType::Txt)
        .await
        .is_empty());
    assert!(!driver.withdraw_endpoint(&endpoint).await.expect("again"));
    assert_eq!(
        values(&client, &private, theirs, RrType::A).await,
        ["10.0.7.7"],
        "the hand-made record stays"
    );
}
