//! `provider "redisha" { region, endpoint, assume_role { ... } }`: the EC2 connection used by
//! the aws driver of `redisha_cluster` and by `data "redisha_aws_topology"`.
//!
//! Everything is optional: a configuration with only the local driver and the planner data
//! sources needs no AWS at all. The region falls back to `AWS_REGION`, then
//! `AWS_DEFAULT_REGION`; a missing region is only an error where EC2 is needed (see
//! [`aws_settings`]). Credentials come from the standard AWS chain (environment, shared
//! profile, SSO, container or instance role), never from this block.

use std::sync::Arc;

use async_trait::async_trait;
use redisha_aws::{AssumeRole, AwsError, AwsSettings};

use crate::aws_errors;
use crate::model;
use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::framework::{Attr, Context, Model, ProviderConfig, ProviderData};
use crate::tfplugin::schema::Schema;
use crate::tfplugin::value::Value;

pub struct RedishaProviderConfig;

model! {
    pub struct AssumeRoleModel(
        "A role to assume through STS with the credentials of the standard AWS chain."
    ) {
        pub role_arn: Attr<String> = required("ARN of the role, `arn:aws:iam::ACCOUNT:role/NAME`."),
        pub session_name: Attr<String> = optional("Session name shown in CloudTrail. Default `redisha`."),
        pub external_id: Attr<String> = optional("External id the role's trust policy requires, if any."),
    }
}

model! {
    pub struct ProviderModel(
        "redisha: Redis Cluster across availability zones. The settings below are only needed for \
         the aws driver and `redisha_aws_topology`; credentials come from the standard AWS chain."
    ) {
        pub region: Attr<String> = optional(
            "AWS region, e.g. `eu-west-1`. Default: `AWS_REGION`, then `AWS_DEFAULT_REGION`. Required \
             (here or in the environment) when the aws driver or `redisha_aws_topology` is used.",
        ),
        pub endpoint: Attr<String> = optional(
            "URL replacing EC2's public endpoint: a VPC interface endpoint, or an EC2 emulator in tests.",
        ),
        pub assume_role: Attr<AssumeRoleModel> = single_block(),
    }
}

pub fn schema() -> Schema {
    Schema::new(0, ProviderModel::block())
}

/// The region from the environment, as the AWS SDK reads it.
fn region_from_env() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty())
}

/// What the block says; unknown values count as unset (they can only be unknown during a plan
/// whose provider config depends on resources not created yet).
struct Decoded {
    region: Option<String>,
    endpoint: Option<String>,
    assume_role: Option<AssumeRole>,
}

fn decode(config: &Value) -> (Decoded, Diagnostics) {
    let (m, diags) = ProviderModel::from_value_lenient(config);
    let assume_role = m.assume_role.value().and_then(|role| {
        Some(AssumeRole {
            role_arn: role.role_arn.value()?.clone(),
            session_name: role.session_name.value().cloned(),
            external_id: role.external_id.value().cloned(),
        })
    });
    let decoded = Decoded {
        region: m.region.known(),
        endpoint: m.endpoint.known(),
        assume_role,
    };
    (decoded, diags)
}

/// Checks what is set; `region` only when given (it may come from the environment later).
fn check(decoded: &Decoded) -> Diagnostics {
    // Validate with a placeholder region when none is written, so endpoint and role are
    // checked anyway; the region itself is checked when it is given.
    let settings = AwsSettings {
        region: decoded.region.clone().unwrap_or_else(|| "us-east-1".into()),
        endpoint: decoded.endpoint.clone(),
        assume_role: decoded.assume_role.clone(),
    };
    match settings.validate() {
        Ok(()) => Diagnostics::new(),
        Err(e @ AwsError::Config { .. }) => {
            let path = e.field().as_ref().and_then(aws_errors::hcl);
            let name = path.as_ref().map(ToString::to_string).unwrap_or_default();
            Diagnostic::error(format!("Invalid provider {name}"), aws_errors::detail(&e))
                .at(path.unwrap_or_default())
                .into()
        }
        Err(e) => Diagnostic::error("Invalid provider configuration", e.to_string()).into(),
    }
}

#[async_trait]
impl ProviderConfig for RedishaProviderConfig {
    fn schema(&self) -> Schema {
        schema()
    }

    async fn validate(&self, config: &Value) -> Diagnostics {
        let (decoded, mut diags) = decode(config);
        if diags.has_errors() {
            return diags;
        }
        diags.extend(check(&decoded));
        diags
    }

    async fn configure(
        &self,
        _terraform_version: &str,
        config: &Value,
    ) -> Result<ProviderData, Diagnostics> {
        let (decoded, mut diags) = decode(config);
        if !diags.has_errors() {
            diags.extend(check(&decoded));
        }
        if diags.has_errors() {
            return Err(diags);
        }
        let region = decoded.region.clone().or_else(region_from_env);
        let aws = region.map(|region| AwsSettings {
            region,
            endpoint: decoded.endpoint,
            assume_role: decoded.assume_role,
        });
        if let Some(settings) = &aws {
            // A region from the environment is checked here: the provider block did not have it.
            if let Err(e) = settings.validate() {
                return Err(Diagnostic::error(
                    "Invalid AWS region from the environment",
                    format!("{e} (AWS_REGION or AWS_DEFAULT_REGION); set `region` in the provider block or fix the variable"),
                )
                .at(AttrPath::attr("region"))
                .into());
            }
        }
        Ok(Arc::new(ProviderSettings { aws }))
    }
}

/// What ConfigureProvider made of the provider block, for every later call
/// (`Context::provider_data`).
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings {
    /// The EC2 connection (`region`, `endpoint`, `assume_role`); `None` when no region is
    /// set anywhere (provider block, AWS_REGION, AWS_DEFAULT_REGION). Only the aws driver and
    /// the aws topology data source need it: see [`aws_settings`].
    pub aws: Option<AwsSettings>,
}

/// The EC2 settings for a call that needs them, or an error naming `region` and the fix.
pub fn aws_settings(ctx: &Context, needed_by: &str) -> Result<AwsSettings, Diagnostic> {
    let provider = ctx.provider_data::<ProviderSettings>()?;
    provider.aws.clone().ok_or_else(|| {
        Diagnostic::error(
            "No AWS region",
            format!(
                "{needed_by} talks to EC2, which needs a region: set `region` in the provider block \
                 (provider \"redisha\" {{ region = \"eu-west-1\" }}) or the AWS_REGION environment variable."
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(region: Option<&str>, endpoint: Option<&str>, role_arn: Option<&str>) -> Value {
        let s = |v: Option<&str>| v.map(Value::from).unwrap_or(Value::Null);
        let role = match role_arn {
            Some(arn) => Value::object([
                ("role_arn", Value::from(arn)),
                ("session_name", Value::Null),
                ("external_id", Value::from("ext")),
            ]),
            None => Value::Null,
        };
        Value::Map(BTreeMap::from([
            ("region".to_string(), s(region)),
            ("endpoint".to_string(), s(endpoint)),
            ("assume_role".to_string(), role),
        ]))
    }

    #[tokio::test]
    async fn settings_are_decoded_with_the_role() {
        let state = RedishaProviderConfig
            .configure(
                "1.15.5",
                &config(
                    Some("eu-west-1"),
                    Some("http://127.0.0.1:5000"),
                    Some("arn:aws:iam::1:role/r"),
                ),
            )
            .await
            .expect("valid");
        let state = state
            .downcast::<ProviderSettings>()
            .expect("the provider's settings");
        let aws = state.aws.clone().expect("aws settings");
        assert_eq!(aws.region, "eu-west-1");
        assert_eq!(aws.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        let role = aws.assume_role.clone().expect("role");
        assert_eq!(role.external_id.as_deref(), Some("ext"));
    }

    #[tokio::test]
    async fn bad_values_name_their_attribute() {
        let diags = RedishaProviderConfig
            .validate(&config(Some("EU West"), None, None))
            .await;
        assert!(diags.has_errors());
        assert_eq!(
            diags.iter().next().map(|d| d.path.clone()),
            Some(Some(AttrPath::attr("region")))
        );
        let diags = RedishaProviderConfig
            .validate(&config(None, None, Some("admin")))
            .await;
        assert_eq!(
            diags.iter().next().map(|d| d.path.clone()),
            Some(Some(AttrPath::attr("assume_role").then("role_arn")))
        );
        let diags = RedishaProviderConfig
            .validate(&config(None, Some("localhost:5000"), None))
            .await;
        assert!(diags.has_errors());
    }

    #[test]
    fn a_missing_region_names_region_and_the_fix() {
        let ctx = Context {
            provider: Some(Arc::new(crate::tfplugin::framework::ProviderState {
                data: Arc::new(ProviderSettings::default()),
                ..Default::default()
            })),
            stop: Default::default(),
        };
        let err = aws_settings(&ctx, "data \"redisha_aws_topology\"").expect_err("no region");
        assert!(
            err.detail.contains("`region`") && err.detail.contains("AWS_REGION"),
            "{}",
            err.detail
        );
    }
}
