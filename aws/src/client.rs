//! Builds the driver's AWS clients (EC2; SSM for the password parameter; IAM for the nodes'
//! instance profile; S3 for backups; Route 53 for the configuration endpoint) from one configuration: the standard credential chain, an optional
//! assumed role, an optional endpoint override, and retries with backoff on throttling.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};

use crate::error::AwsError;
use crate::settings::AwsSettings;

/// Attempts per EC2 call (the first one included). Throttling and transient errors are
/// retried with exponential backoff and jitter; adaptive mode also slows the client down
/// when EC2 throttles it, which matters when a large cluster is launched at once.
pub const MAX_ATTEMPTS: u32 = 8;

/// The clients the driver uses, sharing region, endpoint, credentials and retries. Derefs to
/// the EC2 client, the one most callers (and tests) talk to.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub iam: aws_sdk_iam::Client,
    /// For backups stored in S3 (path-style addressing when an endpoint is set: moto and
    /// other S3-compatible endpoints serve buckets under the path).
    pub s3: aws_sdk_s3::Client,
    /// For the configuration endpoint's records ([`crate::dns_endpoint`]).
    pub route53: aws_sdk_route53::Client,
}

impl std::ops::Deref for AwsClients {
    type Target = aws_sdk_ec2::Client;

    fn deref(&self) -> &aws_sdk_ec2::Client {
        &self.ec2
    }
}

/// The clients for `settings`. Credentials are resolved lazily, on the first call: a missing
/// credential shows up as an error of that call.
pub async fn client(settings: &AwsSettings) -> Result<AwsClients, AwsError> {
    clients_with(settings, None).await
}

/// [`client`], with fixed credentials instead of the chain when given (the tests' moto ones).
pub(crate) async fn clients_with(
    settings: &AwsSettings,
    credentials: Option<Credentials>,
) -> Result<AwsClients, AwsError> {
    settings.validate()?;
    let region = Region::new(settings.region.clone());
    let retry = RetryConfig::adaptive()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(500))
        .with_max_backoff(Duration::from_secs(20));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(60))
        .build();

    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region.clone())
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(endpoint) = &settings.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let mut shared = loader.load().await;
    if let Some(fixed) = credentials {
        shared = shared
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(fixed))
            .build();
    }

    if let Some(role) = &settings.assume_role {
        let mut provider = aws_config::sts::AssumeRoleProvider::builder(role.role_arn.clone())
            .session_name(
                role.session_name
                    .clone()
                    .unwrap_or_else(|| "redisha".to_string()),
            )
            .region(region);
        if let Some(external_id) = &role.external_id {
            provider = provider.external_id(external_id.clone());
        }
        // The base chain's credentials sign the AssumeRole call; STS is always reached at
        // its regional endpoint (the EC2 endpoint override does not apply to it).
        let base = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .load()
            .await;
        let provider = provider.configure(&base).build().await;
        shared = shared
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
    }
    tracing::debug!(
        region = %settings.region,
        endpoint = settings.endpoint.as_deref().unwrap_or("default"),
        assume_role = settings.assume_role.is_some(),
        "AWS clients ready"
    );
    Ok(AwsClients {
        ec2: aws_sdk_ec2::Client::new(&shared),
        ssm: aws_sdk_ssm::Client::new(&shared),
        route53: aws_sdk_route53::Client::new(&shared),
        iam: aws_sdk_iam::Client::new(&shared),
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(settings.endpoint.is_some())
                .build(),
        ),
    })
}
