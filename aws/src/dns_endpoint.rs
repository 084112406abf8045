//! The configuration endpoint: one DNS name in a Route 53 private hosted zone whose A record
//! lists every instance of the cluster, as ElastiCache's configuration endpoint does. A
//! cluster-aware client connects to `name:6379` (every instance runs its first node there),
//! reads the slot map and then talks to the nodes directly, so the record only needs to hold
//! instances that are up; it follows instances replaced by repair at every apply.
//!
//! Route 53 records carry no tags, so ownership is proven by a TXT record at the same name
//! holding `redisha-cluster-id=<id>`, written in the same change batch as the A record. An A
//! record at the name without that proof is someone else's: it is never overwritten nor
//! deleted. Every change is an UPSERT of the whole set, so an interrupted apply is finished
//! by the next one.

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};

use crate::error::{api, AwsError, Field};

/// Default TTL of the records, seconds: short, so clients see a replaced instance soon.
pub const DEFAULT_TTL: i64 = 60;

/// Where the endpoint is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub hosted_zone_id: String,
    /// A name inside the zone, e.g. `cache.internal.example.com` (a final dot is optional).
    pub name: String,
    pub ttl: i64,
}

impl EndpointSpec {
    /// `name` as Route 53 stores it: lower case, with the final dot.
    pub fn fqdn(&self) -> String {
        fqdn(&self.name)
    }

    /// Checks what can be checked without AWS: a DNS name and a TTL Route 53 takes.
    pub fn validate(&self) -> Result<(), AwsError> {
        let name = self.name.trim_end_matches('.');
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(AwsError::config(
                Field::EndpointName,
                format!(
                    "{:?} is not a DNS name: use labels of letters, digits and '-' separated by dots, e.g. cache.internal.example.com",
                    self.name
                ),
            ));
        }
        if self.hosted_zone_id.trim().is_empty() {
            return Err(AwsError::config(
                Field::EndpointZone,
                "give the id of a Route 53 private hosted zone (e.g. aws_route53_zone.x.zone_id)",
            ));
        }
        if !(0..=172_800).contains(&self.ttl) {
            return Err(AwsError::config(
                Field::EndpointTtl,
                format!(
                    "{} is not a TTL Route 53 takes: use 0 to 172800 seconds",
                    self.ttl
                ),
            ));
        }
        Ok(())
    }
}

fn fqdn(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

/// The TXT value that proves the name is the cluster's (quoted, as TXT values are).
pub fn ownership_value(cluster_id: &str) -> String {
    format!("\"redisha-cluster-id={cluster_id}\"")
}

/// The zone exists, is private, is associated with `vpc_id` and holds the name. Run at plan,
/// so a wrong zone fails before any instance is launched.
pub async fn check_zone(
    r53: &aws_sdk_route53::Client,
    spec: &EndpointSpec,
    vpc_id: &str,
) -> Result<(), AwsError> {
    spec.validate()?;
    let zone_id = zone_id(&spec.hosted_zone_id);
    let out = match r53.get_hosted_zone().id(zone_id).send().await {
        Ok(out) => out,
        Err(e) => {
            let err = api("route53:GetHostedZone")(e);
            if err.code() == Some("NoSuchHostedZone") {
                return Err(AwsError::config(
                    Field::EndpointZone,
                    format!("hosted zone {zone_id} not found; give the id of a private hosted zone of the cluster's VPC"),
                ));
            }
            return Err(err);
        }
    };
    let Some(zone) = out.hosted_zone() else {
        return Err(AwsError::config(
            Field::EndpointZone,
            format!("hosted zone {zone_id}: Route 53 returned no zone"),
        ));
    };
    let private = zone.config().is_some_and(|c| c.private_zone());
    if !private {
        return Err(AwsError::config(
            Field::EndpointZone,
            format!(
                "hosted zone {zone_id} ({}) is public: the endpoint lists private addresses, so use a private hosted zone associated with VPC {vpc_id}",
                zone.name()
            ),
        ));
    }
    let associated = out.vpcs().iter().any(|v| v.vpc_id() == Some(vpc_id));
    if !associated {
        return Err(AwsError::config(
            Field::EndpointZone,
            format!(
                "hosted zone {zone_id} ({}) is not associated with the cluster's VPC {vpc_id}: clients there would not resolve the name; associate it (aws_route53_zone vpc block) or use another zone",
                zone.name()
            ),
        ));
    }
    let zone_name = fqdn(zone.name());
    let name = spec.fqdn();
    if name != zone_name && !name.ends_with(&format!(".{zone_name}")) {
        return Err(AwsError::config(
            Field::EndpointName,
            format!("{name} is not in hosted zone {zone_id} ({zone_name}); use a name ending in .{zone_name}"),
        ));
    }
    Ok(())
}

/// The A and TXT record sets at the name, as they are now.
struct AtName {
    a: Option<ResourceRecordSet>,
    txt: Option<ResourceRecordSet>,
}

impl AtName {
    fn owned_by(&self, cluster_id: &str) -> bool {
        let proof = ownership_value(cluster_id);
        self.txt
            .as_ref()
            .is_some_and(|t| t.resource_records().iter().any(|r| r.value() == proof))
    }
}

async fn records_at(
    r53: &aws_sdk_route53::Client,
    spec: &EndpointSpec,
) -> Result<AtName, AwsError> {
    let name = spec.fqdn();
    let mut at = AtName { a: None, txt: None };
    // Route 53 lists from the start name on, in its own order, so the name's sets come first;
    // pages are followed until they are past it (a name missed here would be overwritten).
    let mut start: Option<(String, RrType)> = None;
    let mut seen = false;
    for _ in 0..MAX_PAGES {
        let (start_name, start_type) = match &start {
            Some((n, t)) => (n.clone(), Some(t.clone())),
            None => (name.clone(), None),
        };
        let out = r53
            .list_resource_record_sets()
            .hosted_zone_id(zone_id(&spec.hosted_zone_id))
            .start_record_name(start_name)
            .set_start_record_type(start_type)
            .max_items(100)
            .send()
            .await
            .map_err(api("route53:ListResourceRecordSets"))?;
        for set in out.resource_record_sets() {
            if fqdn(set.name()) != name {
                if seen {
                    return Ok(at);
                }
                continue;
            }
            seen = true;
            match set.r#type() {
                RrType::A => at.a = Some(set.clone()),
                RrType::Txt => at.txt = Some(set.clone()),
                _ => {}
            }
        }
        match (
            out.is_truncated(),
            out.next_record_name(),
            out.next_record_type(),
        ) {
            (true, Some(n), Some(t)) => start = Some((n.to_string(), t.clone())),
            _ => return Ok(at),
        }
    }
    Err(AwsError::config(
        Field::EndpointZone,
        format!(
            "hosted zone {}: more than {MAX_PAGES} pages of records to read before {name}; use a zone with fewer records",
            spec.hosted_zone_id
        ),
    ))
}

/// Pages of 100 record sets read looking for the endpoint's name.
const MAX_PAGES: usize = 100;

fn record_set(
    name: &str,
    kind: RrType,
    ttl: i64,
    values: &[String],
) -> Result<ResourceRecordSet, AwsError> {
    let mut set = ResourceRecordSet::builder()
        .name(name)
        .r#type(kind)
        .ttl(ttl);
    for v in values {
        set = set.resource_records(
            ResourceRecord::builder()
                .value(v)
                .build()
                .map_err(|e| AwsError::Shared(format!("route53 record {name}: {e}")))?,
        );
    }
    set.build()
        .map_err(|e| AwsError::Shared(format!("route53 record set {name}: {e}")))
}

fn change(action: ChangeAction, set: ResourceRecordSet) -> Result<Change, AwsError> {
    Change::builder()
        .action(action)
        .resource_record_set(set)
        .build()
        .map_err(|e| AwsError::Shared(format!("route53 change: {e}")))
}

async fn apply(
    r53: &aws_sdk_route53::Client,
    spec: &EndpointSpec,
    changes: Vec<Change>,
    comment: String,
) -> Result<(), AwsError> {
    let batch = ChangeBatch::builder()
        .set_changes(Some(changes))
        .comment(comment)
        .build()
        .map_err(|e| AwsError::Shared(format!("route53 change batch: {e}")))?;
    r53.change_resource_record_sets()
        .hosted_zone_id(zone_id(&spec.hosted_zone_id))
        .change_batch(batch)
        .send()
        .await
        .map_err(api("route53:ChangeResourceRecordSets"))?;
    Ok(())
}

/// Points the name at `addresses` (the instances' private addresses), with the ownership
/// record, in one change batch. Refused when the name holds an A record that is not this
/// cluster's. With no address (every instance gone) the records are withdrawn instead:
/// Route 53 takes no empty A record.
pub async fn publish(
    r53: &aws_sdk_route53::Client,
    spec: &EndpointSpec,
    cluster_id: &str,
    addresses: &[String],
) -> Result<(), AwsError> {
    spec.validate()?;
    if addresses.is_empty() {
        withdraw(r53, spec, cluster_id).await?;
        return Ok(());
    }
    let at = records_at(r53, spec).await?;
    let name = spec.fqdn();
    if (at.a.is_some() || at.txt.is_some()) && !at.owned_by(cluster_id) {
        return Err(AwsError::config(
            Field::EndpointName,
            format!(
                "{name} already has records in hosted zone {} that are not this cluster's (no TXT record {}): redisha leaves them alone; choose another name or remove them",
                spec.hosted_zone_id,
                ownership_value(cluster_id)
            ),
        ));
    }
    let mut values: Vec<String> = addresses.to_vec();
    values.sort();
    values.dedup();
    let changes = vec![
        change(
            ChangeAction::Upsert,
            record_set(&name, RrType::Txt, spec.ttl, &[ownership_value(cluster_id)])?,
        )?,
        change(
            ChangeAction::Upsert,
            record_set(&name, RrType::A, spec.ttl, &values)?,
        )?,
    ];
    apply(
        r53,
        spec,
        changes,
        format!("redisha cluster {cluster_id}: configuration endpoint"),
    )
    .await?;
    tracing::info!(endpoint = %name, addresses = values.len(), "configuration endpoint published");
    Ok(())
}

/// Deletes the name's A and TXT records when the TXT record proves them this cluster's;
/// anything else at the name is left alone. `Ok(false)` when there was nothing of ours.
pub async fn withdraw(
    r53: &aws_sdk_route53::Client,
    spec: &EndpointSpec,
    cluster_id: &str,
) -> Result<bool, AwsError> {
    let at = records_at(r53, spec).await?;
    if !at.owned_by(cluster_id) {
        if at.a.is_some() {
            tracing::warn!(endpoint = %spec.fqdn(), "the endpoint's name holds records that are not this cluster's; leaving them");
        }
        return Ok(false);
    }
    // A DELETE names the record set exactly as it is.
    let mut changes = Vec::new();
    if let Some(a) = at.a {
        changes.push(change(ChangeAction::Delete, a)?);
    }
    if let Some(txt) = at.txt {
        changes.push(change(ChangeAction::Delete, txt)?);
    }
    apply(
        r53,
        spec,
        changes,
        format!("redisha cluster {cluster_id}: configuration endpoint withdrawn"),
    )
    .await?;
    tracing::info!(endpoint = %spec.fqdn(), "configuration endpoint withdrawn");
    Ok(true)
}

/// The zone id without the `/hostedzone/` prefix some APIs return.
fn zone_id(id: &str) -> &str {
    id.trim().trim_start_matches("/hostedzone/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> EndpointSpec {
        EndpointSpec {
            hosted_zone_id: "Z123".into(),
            name: name.into(),
            ttl: DEFAULT_TTL,
        }
    }

    #[test]
    fn names_are_compared_as_route53_stores_them() {
        assert_eq!(
            spec("Cache.Internal.Example").fqdn(),
            "cache.internal.example."
        );
        assert_eq!(spec("cache.internal.").fqdn(), "cache.internal.");
        assert_eq!(zone_id("/hostedzone/Z123"), "Z123");
    }

    #[test]
    fn bad_names_and_ttls_name_their_field() {
        for bad in ["", "-cache.internal", "cache..internal", "cache_1.internal"] {
            let e = spec(bad).validate().expect_err(bad);
            assert_eq!(e.field(), Some(Field::EndpointName), "{bad}: {e}");
        }
        let mut s = spec("cache.internal");
        s.ttl = -1;
        assert_eq!(s.validate().unwrap_err().field(), Some(Field::EndpointTtl));
        s.ttl = 60;
        s.hosted_zone_id = " ".into();
        assert_eq!(s.validate().unwrap_err().field(), Some(Field::EndpointZone));
        assert!(spec("cache.internal.example.com").validate().is_ok());
    }
}
