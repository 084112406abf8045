//! The aws driver's TLS material in SSM Parameter Store: the cluster's authority (certificate
//! and key in one SecureString, read by the provider only), and per node a certificate naming
//! the node's address with its key (a SecureString its instance reads) and what redisha
//! records about it (a plain parameter: address, authority, expiry).
//!
//! Why SSM and not Terraform state for the authority's key: the same reasons as the local
//! driver's file beside the cluster record (docs/ARCHITECTURE.md, "Where the TLS keys live"):
//! it is needed before the first node starts, and a create killed after that never returns a
//! state. Named from the cluster id, it is found again by the id like everything else.

use redisha_cluster::tls::{CertAuthority, CertSource, NodeCert, NodeCertInfo};
use redisha_cluster::Password;

use crate::error::AwsError;
use crate::node_secrets::Names;
use crate::secrets::{self, Kind, Owner};

const CERT_END: &str = "-----END CERTIFICATE-----";

/// The authority kept for the cluster, if there is one.
pub async fn read_authority(
    ssm: &aws_sdk_ssm::Client,
    names: &Names,
    cluster_id: &str,
) -> Result<Option<CertAuthority>, AwsError> {
    let Some(text) = secrets::get_parameter(ssm, &names.authority()).await? else {
        return Ok(None);
    };
    let Some(end) = text.find(CERT_END) else {
        return Err(AwsError::Shared(format!(
            "tls: SSM parameter {} holds no certificate; delete it only together with the cluster",
            names.authority()
        )));
    };
    let split = end + CERT_END.len();
    let (cert, key) = text.split_at(split);
    CertAuthority::from_pem(cluster_id, cert.trim(), Password::new(key.trim()))
        .map(Some)
        .map_err(|e| AwsError::Shared(format!("{}: {e}", names.authority())))
}

/// Makes the cluster's authority and keeps it (certificate, then key) as a SecureString.
pub async fn write_authority(
    ssm: &aws_sdk_ssm::Client,
    names: &Names,
    owner: Owner<'_>,
) -> Result<CertAuthority, AwsError> {
    let authority =
        CertAuthority::generate(owner.cluster_id).map_err(|e| AwsError::Shared(e.to_string()))?;
    let value = format!(
        "{}\n{}",
        authority.cert_pem().trim(),
        authority.key_pem().expose().trim()
    );
    secrets::put_parameter(
        ssm,
        owner,
        &names.authority(),
        &value,
        Kind::Secret,
        "the TLS certificate authority (certificate and key); the provider's only",
    )
    .await?;
    tracing::info!(cluster_id = owner.cluster_id, "certificate authority made");
    Ok(authority)
}

/// What redisha recorded about each node's certificate: (host, port) -> info.
pub async fn read_cert_infos(
    ssm: &aws_sdk_ssm::Client,
    names: &Names,
) -> Result<Vec<((String, u16), NodeCertInfo)>, AwsError> {
    let path = names.cert_info_path();
    let mut out = Vec::new();
    for (name, value) in secrets::parameters_under(ssm, &path).await? {
        let Some(rest) = name.strip_prefix(&format!("{path}/")) else {
            continue;
        };
        let Some((host, port)) = rest.rsplit_once('/') else {
            continue;
        };
        let (Ok(port), Ok(info)) = (
            port.parse::<u16>(),
            serde_json::from_str::<NodeCertInfo>(&value),
        ) else {
            tracing::warn!(
                parameter = name,
                "unreadable certificate record; it is reissued"
            );
            continue;
        };
        out.push(((host.to_string(), port), info));
    }
    Ok(out)
}

/// Issues node `port` of `host` a certificate for `address` from `source` and stores it: the
/// certificate and key first (what the node reads), then the record (what decides whether it
/// still fits), so a record never describes a certificate SSM does not hold.
pub async fn issue_node_cert(
    ssm: &aws_sdk_ssm::Client,
    names: &Names,
    owner: Owner<'_>,
    source: &CertSource,
    host: &str,
    port: u16,
    address: &str,
) -> Result<NodeCertInfo, AwsError> {
    let NodeCert {
        cert_pem,
        key_pem,
        info,
    } = source
        .node_cert(address)
        .map_err(|e| AwsError::Shared(e.to_string()))?;
    let pem = Password::new(format!(
        "{}\n{}\n",
        cert_pem.trim(),
        key_pem.expose().trim()
    ));
    secrets::put_parameter(
        ssm,
        owner,
        &names.node_cert(host, port),
        pem.expose(),
        Kind::Secret,
        &format!("TLS certificate and key of the node on port {port} of host {host}"),
    )
    .await?;
    let record = serde_json::to_string(&info)
        .map_err(|e| AwsError::Shared(format!("cannot encode a certificate record: {e}")))?;
    secrets::put_parameter(
        ssm,
        owner,
        &names.cert_info(host, port),
        &record,
        Kind::Plain,
        &format!("what redisha knows of the certificate of the node on port {port} of host {host}"),
    )
    .await?;
    tracing::info!(
        host,
        port,
        address,
        days = info.days_left(),
        "node certificate issued"
    );
    Ok(info)
}
