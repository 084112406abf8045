//! Redis clients the end-to-end tests share: a PING bounded in time, a cluster client over
//! TLS with the cluster's authority, the keys a cluster no longer has, and one write
//! acknowledged by a replica (`SET` then `WAIT 1` on the same connection) as the WAIT writers
//! count them.

#![allow(dead_code)]

use std::time::Duration;

use redis::{AsyncCommands, TlsCertificates};

/// Trust `ca` (PEM) and present no client certificate.
pub fn ca_certs(ca: &str) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.as_bytes().to_vec()),
    }
}

/// A PING through `client`, within 3 s: the reply, or why there was none.
pub async fn ping_within(client: redis::RedisResult<redis::Client>) -> Result<String, String> {
    let client = client.map_err(|e| e.to_string())?;
    let attempt = async {
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut con)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// A cluster connection seeded with `addresses`, logged in as `user` (`None`: `default`);
/// over TLS (`rediss://`) trusting `ca` when given.
pub async fn cluster_connection(
    addresses: &[String],
    user: Option<&str>,
    password: &str,
    ca: Option<&str>,
) -> redis::cluster_async::ClusterConnection {
    let scheme = if ca.is_some() { "rediss" } else { "redis" };
    let urls: Vec<String> = addresses
        .iter()
        .map(|a| format!("{scheme}://{a}"))
        .collect();
    let mut builder = redis::cluster::ClusterClientBuilder::new(urls)
        .password(password.to_string())
        .connection_timeout(Duration::from_secs(5))
        .response_timeout(Duration::from_secs(5));
    if let Some(user) = user {
        builder = builder.username(user.to_string());
    }
    if let Some(ca) = ca {
        builder = builder.certs(ca_certs(ca));
    }
    builder
        .build()
        .expect("cluster client")
        .get_async_connection()
        .await
        .expect("connect to the cluster")
}

/// [`cluster_connection`] over TLS as `default`, trusting `ca`.
pub async fn tls_cluster(
    addresses: &[String],
    ca: &str,
    password: &str,
) -> redis::cluster_async::ClusterConnection {
    cluster_connection(addresses, None, password, Some(ca)).await
}

/// The keys of `keys` that `con` cannot read (missing, or an error).
pub async fn missing_keys(
    con: &mut redis::cluster_async::ClusterConnection,
    keys: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    for k in keys {
        let v: Option<String> = con.get(k).await.unwrap_or(None);
        if v.is_none() {
            out.push(k.clone());
        }
    }
    out
}

/// What one `SET key value` + `WAIT 1 200` gave.
pub enum Write {
    /// OK, and a replica has it: the write counts as acknowledged.
    Acknowledged,
    /// Written, but no replica acknowledged it in time.
    Unacknowledged,
    /// An error: reconnect, to the node a MOVED or ASK names when there is one.
    Failed { redirect: Option<String> },
    /// No reply within 2 s: reconnect.
    TimedOut,
}

/// `SET key value` then `WAIT 1 200` on `con`, within 2 s.
pub async fn set_and_wait(
    con: &mut redis::aio::MultiplexedConnection,
    key: &str,
    value: usize,
) -> Write {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(key)
        .arg(value)
        .cmd("WAIT")
        .arg(1)
        .arg(200);
    match tokio::time::timeout(
        Duration::from_secs(2),
        pipe.query_async::<(String, i64)>(con),
    )
    .await
    {
        Ok(Ok((ok, acks))) if ok == "OK" && acks >= 1 => Write::Acknowledged,
        Ok(Ok(_)) => Write::Unacknowledged,
        Ok(Err(e)) => Write::Failed {
            redirect: e.redirect_node().map(|(a, _)| a.to_string()),
        },
        Err(_) => Write::TimedOut,
    }
}
