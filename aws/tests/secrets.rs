//! The password never travels in user data: it is a SecureString in SSM Parameter Store, named
//! from the cluster's name and id, read by the instances through the instance profile the
//! driver makes; a rotation overwrites it; destroy deletes it and the profile, and nothing of
//! another cluster of the same name. Real aws-sdk-ec2/ssm/iam against moto_server on loopback.

mod common;

use common::{host, Fixture, FixtureConfig, Moto, SUBNET_ZONES};
use redisha_aws::testing::readable_user_data;
use redisha_aws::{instance_profile, secrets, AwsClients, AwsDriver};
use redisha_cluster::{Driver, NodeConfig, NodeHandle, Password};

const PASSWORD: &str = "correct-horse-battery-staple";
const ROTATED: &str = "tr0ub4dor-and-3";

fn with_password(password: &str) -> NodeConfig {
    NodeConfig {
        password: Some(Password::new(password)),
        ..Default::default()
    }
}

async fn parameter(client: &AwsClients, name: &str) -> Option<(String, String)> {
    let answer = client
        .ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .ok()?;
    let p = answer.parameter()?;
    Some((
        p.r#type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        p.value().unwrap_or_default().to_string(),
    ))
}

async fn role_exists(client: &AwsClients, name: &str) -> bool {
    client.iam.get_role().role_name(name).send().await.is_ok()
}

#[tokio::test]
async fn the_password_is_in_ssm_not_in_user_data_and_goes_with_its_cluster() {
    let moto = Moto::start().expect("moto_server (scripts/setup installs it into .venv)");
    let client = moto.client().await;
    let fx = Fixture::create(&client, &SUBNET_ZONES).await;
    let other_vpc = Fixture::create(&client, &SUBNET_ZONES).await;
    let (id, other_id) = ("00000000000000a1", "00000000000000b2");
    let driver = AwsDriver::with_client(client.clone(), fx.config_with_id("cache", id)).unwrap();
    let other = AwsDriver::with_client(client.clone(), other_vpc.config_with_id("cache", other_id))
        .unwrap();
    let plans = [host("a-0", "us-east-1a", 0, 0, 2)];

    // The aws driver refuses a cluster without a password, naming the setting.
    let refused = driver
        .preflight(&plans, &[], &NodeConfig::default())
        .await
        .expect_err("no password");
    assert!(refused.to_string().contains("password"), "{refused}");

    let report = driver.ensure_hosts(&plans, &with_password(PASSWORD)).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let report = other.ensure_hosts(&plans, &with_password("other")).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let instance_id = report_instance(&driver, &plans[0].name).await;

    let user_data = readable_user_data(&client, &instance_id).await;
    assert!(
        !user_data.contains(PASSWORD),
        "the password is readable in user data"
    );
    let name = secrets::parameter_name("cache", id);
    assert!(user_data.contains(&name), "the instance reads {name}");
    assert_eq!(
        parameter(&client, &name).await,
        Some(("SecureString".into(), PASSWORD.into()))
    );

    // The instance runs with the cluster's own profile, whose role may read that parameter.
    let role = instance_profile::role_name(id);
    let described = client
        .describe_instances()
        .instance_ids(&instance_id)
        .send()
        .await
        .expect("DescribeInstances");
    let arn = described.reservations()[0].instances()[0]
        .iam_instance_profile()
        .and_then(|p| p.arn())
        .unwrap_or_default()
        .to_string();
    assert!(arn.ends_with(&format!("/{role}")), "profile {arn:?}");
    let policy = client
        .iam
        .get_role_policy()
        .role_name(&role)
        .policy_name(instance_profile::POLICY_NAME)
        .send()
        .await
        .expect("GetRolePolicy");
    let document = policy.policy_document();
    let document = percent_decode(document);
    assert!(
        document.contains(&format!("parameter/redisha/cache/{id}/password\"")),
        "{document}"
    );
    assert!(
        document.contains(&format!("parameter/redisha/cache/{id}/node/*")),
        "{document}"
    );
    // Not the TLS authority nor the operator user's parameter: the provider's alone.
    assert!(!document.contains(&format!("{id}/*")), "{document}");

    // A rotation writes the parameter once (whatever the number of nodes).
    let node = NodeHandle {
        name: "a-0-n0".into(),
        host: "a-0".into(),
        ip: "127.0.0.1".into(),
        port: 6379,
        index_on_host: 0,
        pid: None,
        data_dir: None,
        config_file: None,
    };
    driver
        .write_node_config(&node, &with_password(ROTATED))
        .await
        .expect("write_node_config");
    assert_eq!(
        parameter(&client, &name).await.map(|p| p.1).as_deref(),
        Some(ROTATED)
    );

    // Destroy takes the parameter and the role, and nothing of the other cluster "cache".
    let destroyed = driver.destroy().await.expect("destroy");
    assert!(destroyed.password_parameter_deleted);
    assert!(destroyed.instance_profile_deleted);
    assert_eq!(parameter(&client, &name).await, None);
    assert!(!role_exists(&client, &role).await);
    assert_eq!(
        parameter(&client, &secrets::parameter_name("cache", other_id))
            .await
            .map(|p| p.1)
            .as_deref(),
        Some("other")
    );
    assert!(role_exists(&client, &instance_profile::role_name(other_id)).await);
    // Twice is fine (a destroy retried after a failure).
    let again = driver.destroy().await.expect("destroy again");
    assert!(!again.password_parameter_deleted && !again.instance_profile_deleted);
    other.destroy().await.expect("destroy the other");
}

/// The instance id of a host, as the driver found it.
async fn report_instance(driver: &AwsDriver, host: &str) -> String {
    let found = driver.unknown_hosts(&[]).await.expect("instances");
    found
        .iter()
        .find(|i| i.host == host)
        .map(|i| i.instance_id.clone())
        .expect("the host's instance")
}

/// IAM returns policy documents URL-encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
