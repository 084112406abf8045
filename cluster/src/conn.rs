//! Connections to single nodes (not cluster-routed: operations address one node each) and
//! parsers for the replies the cluster code reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, RedisConnectionInfo,
    TlsCertificates,
};
use redisha_planner::SlotRange;
use tokio::sync::Mutex;

use crate::error::{ClusterError, Result};
use crate::secret::Password;
use crate::tls::ClientTls;

/// A node to talk to: a display name (planner name or node id) and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub ip: String,
    pub port: u16,
}

impl Target {
    pub fn new(name: impl Into<String>, ip: impl Into<String>, port: u16) -> Self {
        Target {
            name: name.into(),
            ip: ip.into(),
            port,
        }
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub(crate) fn err(&self, action: impl Into<String>, source: redis::RedisError) -> ClusterError {
        ClusterError::Redis {
            node: self.name.clone(),
            address: self.address(),
            action: action.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn protocol(
        &self,
        action: impl Into<String>,
        detail: impl Into<String>,
    ) -> ClusterError {
        ClusterError::Protocol {
            node: self.name.clone(),
            address: self.address(),
            action: action.into(),
            detail: detail.into(),
        }
    }
}

/// Splits "host:port" (the last colon separates the port).
pub fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    Some((host.trim_matches(['[', ']']).to_string(), port))
}

/// Who a connection logs in as: a user (`None`: `default`) and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub user: Option<String>,
    pub password: Option<Password>,
}

impl Credential {
    /// The `default` user with the cluster password (or none).
    pub fn default_user(password: Option<Password>) -> Self {
        Credential {
            user: None,
            password,
        }
    }

    /// The user name as AUTH2 and `AUTH user pw` need it.
    pub fn user_name(&self) -> &str {
        self.user.as_deref().unwrap_or("default")
    }
}

/// A cache of multiplexed connections by address, shared by concurrent tasks.
///
/// It knows every credential the nodes may accept: the operator user's first (when the
/// cluster has one; a node made before it, or not yet given it, refuses it), then `default`
/// with the configured password, then with others: while a password rotation is under way (or
/// was cut short by a killed provider) some nodes accept only the old one. A connection
/// authenticates with the first that works and remembers it per node.
///
/// Connections carry no response timeout of their own: every call applies its own bound
/// (`query`/`pipe` the default command timeout, `query_within`/`pipe_within` a longer one for
/// commands such as MIGRATE whose reply legitimately takes longer), so one connection serves
/// both kinds.
#[derive(Clone)]
pub struct Conns {
    /// The operator user's candidate passwords, the current one first (empty: none).
    operator: Vec<Password>,
    /// The `default` user's candidate passwords, the configured one first.
    passwords: Vec<Option<Password>>,
    /// Who logs in with `passwords`: `None` is `default`; a declared user for tools that work
    /// as one (a backup, a drill's clients) when `default` is off.
    user: Option<String>,
    connect_timeout: Duration,
    response_timeout: Duration,
    cache: Arc<Mutex<HashMap<String, MultiplexedConnection>>>,
    /// The index into `credentials()` each node (by address) accepted last.
    accepted: Arc<Mutex<HashMap<String, usize>>>,
    /// TLS to every node (verified against the cluster's authority), when the nodes have it.
    tls: Option<Arc<ClientTls>>,
}

impl Conns {
    pub fn new(
        password: Option<Password>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        Conns {
            operator: Vec::new(),
            passwords: vec![password],
            user: None,
            connect_timeout,
            response_timeout,
            cache: Default::default(),
            accepted: Default::default(),
            tls: None,
        }
    }

    /// Speaks TLS to every node (`Some`), verifying it against the authority's certificate, or
    /// plain text (`None`). Cached connections are dropped.
    pub fn set_tls(&mut self, tls: Option<ClientTls>) {
        self.tls = tls.map(Arc::new);
        self.cache = Default::default();
    }

    /// Whether connections speak TLS.
    pub fn tls(&self) -> Option<&ClientTls> {
        self.tls.as_deref()
    }

    /// The configured password (the one new nodes and config files get).
    pub fn password(&self) -> Option<&Password> {
        self.passwords.first().and_then(Option::as_ref)
    }

    /// Every credential to try, in order.
    fn credentials(&self) -> Vec<Credential> {
        let operator = self.operator.iter().map(|p| Credential {
            user: Some(crate::acl::OPERATOR_USER.to_string()),
            password: Some(p.clone()),
        });
        let default = self.passwords.iter().cloned().map(|password| Credential {
            user: self.user.clone(),
            password,
        });
        operator.chain(default).collect()
    }

    /// The credential `target` accepted when last connected (the first candidate if unknown):
    /// what MIGRATE's AUTH2 and a snapshot fetch must send to it.
    pub async fn credential_for(&self, target: &Target) -> Credential {
        let i = self
            .accepted
            .lock()
            .await
            .get(&target.address())
            .copied()
            .unwrap_or(0);
        let all = self.credentials();
        all.get(i)
            .or(all.first())
            .cloned()
            .unwrap_or_else(|| Credential::default_user(None))
    }

    /// Logs in as `user` (`None`: `default`) with the passwords, instead of `default`.
    pub fn set_user(&mut self, user: Option<String>) {
        self.user = user;
        self.forget();
    }

    /// Connections that log in as `credential` (after the operator user, if it is set).
    pub fn logging_in_as(mut self, credential: &Credential) -> Self {
        self.set_passwords(vec![credential.password.clone()]);
        self.set_user(credential.user.clone());
        self
    }

    pub fn set_password(&mut self, password: Option<Password>) {
        self.set_passwords(vec![password]);
    }

    /// Every password nodes may accept for `default`, the configured one first; duplicates
    /// are dropped.
    pub fn set_passwords(&mut self, candidates: Vec<Option<Password>>) {
        let mut passwords: Vec<Option<Password>> = Vec::new();
        for c in candidates {
            if !passwords.contains(&c) {
                passwords.push(c);
            }
        }
        if passwords.is_empty() {
            passwords.push(None);
        }
        self.passwords = passwords;
        self.forget();
    }

    /// The operator user's passwords nodes may accept, the current one first (empty: the
    /// cluster has no operator user; redisha works as `default`).
    pub fn set_operator_passwords(&mut self, candidates: Vec<Password>) {
        let mut out: Vec<Password> = Vec::new();
        for c in candidates {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        self.operator = out;
        self.forget();
    }

    /// Drops every cached connection and what each node accepted: the next connections log in
    /// with the first credential that works now.
    pub fn forget(&mut self) {
        self.cache = Default::default();
        self.accepted = Default::default();
    }

    /// Forgets a cached connection (after an error, or when a node restarted).
    pub async fn drop_conn(&self, target: &Target) {
        self.cache.lock().await.remove(&target.address());
    }

    /// The default bound of one command's (or pipeline's) reply.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    pub async fn get(&self, target: &Target) -> Result<MultiplexedConnection> {
        let key = target.address();
        if let Some(c) = self.cache.lock().await.get(&key) {
            return Ok(c.clone());
        }
        let con = self.open(target).await?;
        self.cache.lock().await.insert(key, con.clone());
        Ok(con)
    }

    /// A new connection that nobody else uses: for per-connection state such as WATCH.
    pub async fn dedicated(&self, target: &Target) -> Result<MultiplexedConnection> {
        self.open(target).await
    }

    /// A connection authenticated with the first known credential the node accepts.
    async fn open(&self, target: &Target) -> Result<MultiplexedConnection> {
        let key = target.address();
        let all = self.credentials();
        let first = self.accepted.lock().await.get(&key).copied().unwrap_or(0);
        let order = std::iter::once(first).chain((0..all.len()).filter(|i| *i != first));
        let mut last_error = None;
        for i in order {
            let Some(credential) = all.get(i) else {
                continue;
            };
            match self.connect(target, credential).await {
                Ok(con) => {
                    self.accepted.lock().await.insert(key, i);
                    return Ok(con);
                }
                // Another known credential may be the one this node accepts.
                Err(e) if is_auth_error(&e) => last_error = Some(e),
                Err(e) => return Err(target.err("connect", e)),
            }
        }
        Err(target.err(
            "connect",
            last_error.unwrap_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::AuthenticationFailed,
                    "no password to try",
                ))
            }),
        ))
    }

    /// One connection with `credential`; a PING proves it when there is no password (a node
    /// that requires one answers NOAUTH to a connection made without).
    async fn connect(
        &self,
        target: &Target,
        credential: &Credential,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let password = credential.password.as_ref();
        let redis = RedisConnectionInfo {
            db: 0,
            username: credential.user.clone(),
            password: password.map(|p| p.expose().to_string()),
            ..Default::default()
        };
        let client = match &self.tls {
            None => Client::open(ConnectionInfo {
                addr: ConnectionAddr::Tcp(target.ip.clone(), target.port),
                redis,
            })?,
            Some(tls) => tls_client(tls, target, redis)?,
        };
        let config = AsyncConnectionConfig::new().set_connection_timeout(self.connect_timeout);
        let mut con = tokio::time::timeout(
            self.connect_timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| timed_out(self.connect_timeout))??;
        if password.is_none() {
            tokio::time::timeout(
                self.response_timeout,
                redis::cmd("PING").query_async::<()>(&mut con),
            )
            .await
            .map_err(|_| timed_out(self.response_timeout))??;
        }
        Ok(con)
    }

    /// Runs one command on a node within the default response timeout; a failed connection
    /// is dropped from the cache.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        target: &Target,
        cmd: &redis::Cmd,
        action: &str,
    ) -> Result<T> {
        self.query_within(target, cmd, action, self.response_timeout)
            .await
    }

    /// Runs one command whose reply may take up to `timeout`.
    pub async fn query_within<T: redis::FromRedisValue>(
        &self,
        target: &Target,
        cmd: &redis::Cmd,
        action: &str,
        timeout: Duration,
    ) -> Result<T> {
        let mut con = self.get(target).await?;
        let reply = tokio::time::timeout(timeout, cmd.query_async(&mut con)).await;
        self.settle(target, action, timeout, reply).await
    }

    /// [`Conns::query`] for a command that may run twice (a read, `CONFIG SET`, `ACL
    /// SETUSER`): when the cached connection turns out closed by the server, it runs once
    /// more on a new one. Sentinel closes every normal client of a data node it reconfigures
    /// (`CLIENT KILL TYPE normal` after `REPLICAOF`), so a connection cached before a
    /// failover is dead after it; without the second try every such node would fail the
    /// operation.
    pub async fn query_idempotent<T: redis::FromRedisValue>(
        &self,
        target: &Target,
        cmd: &redis::Cmd,
        action: &str,
    ) -> Result<T> {
        let cached = self.cache.lock().await.contains_key(&target.address());
        let mut con = self.get(target).await?;
        let reply = tokio::time::timeout(self.response_timeout, cmd.query_async(&mut con)).await;
        match reply {
            Ok(Err(e)) if cached && (e.is_connection_dropped() || e.is_io_error()) => {
                self.drop_conn(target).await;
                self.query(target, cmd, action).await
            }
            other => {
                self.settle(target, action, self.response_timeout, other)
                    .await
            }
        }
    }

    /// Runs a pipeline on a node (one round trip) within the default response timeout.
    pub async fn pipe<T: redis::FromRedisValue>(
        &self,
        target: &Target,
        pipe: &redis::Pipeline,
        action: &str,
    ) -> Result<T> {
        self.pipe_within(target, pipe, action, self.response_timeout)
            .await
    }

    /// Runs a pipeline whose last reply may take up to `timeout`.
    pub async fn pipe_within<T: redis::FromRedisValue>(
        &self,
        target: &Target,
        pipe: &redis::Pipeline,
        action: &str,
        timeout: Duration,
    ) -> Result<T> {
        let mut con = self.get(target).await?;
        let reply = tokio::time::timeout(timeout, pipe.query_async(&mut con)).await;
        self.settle(target, action, timeout, reply).await
    }

    async fn settle<T>(
        &self,
        target: &Target,
        action: &str,
        timeout: Duration,
        reply: std::result::Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T> {
        let e = match reply {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => timed_out(timeout),
        };
        // The connection may still owe a reply or be broken: never reuse it.
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
            self.drop_conn(target).await;
        }
        Err(target.err(action, e))
    }

    pub async fn info(&self, target: &Target, section: &str) -> Result<HashMap<String, String>> {
        let text: String = self
            .query_idempotent(target, redis::cmd("INFO").arg(section), "INFO")
            .await?;
        Ok(parse_info(&text))
    }

    pub async fn cluster_info(&self, target: &Target) -> Result<HashMap<String, String>> {
        let text: String = self
            .query(target, redis::cmd("CLUSTER").arg("INFO"), "CLUSTER INFO")
            .await?;
        Ok(parse_info(&text))
    }

    pub async fn cluster_nodes(&self, target: &Target) -> Result<Vec<NodeLine>> {
        let text: String = self
            .query(target, redis::cmd("CLUSTER").arg("NODES"), "CLUSTER NODES")
            .await?;
        parse_cluster_nodes(&text).map_err(|d| target.protocol("CLUSTER NODES", d))
    }
}

/// A client that speaks TLS to `target` and accepts only a certificate the cluster's
/// authority issued for the target's address.
fn tls_client(
    tls: &ClientTls,
    target: &Target,
    redis: RedisConnectionInfo,
) -> redis::RedisResult<Client> {
    install_crypto_provider();
    let info = ConnectionInfo {
        addr: ConnectionAddr::TcpTls {
            host: target.ip.clone(),
            port: target.port,
            insecure: false,
            tls_params: None,
        },
        redis,
    };
    Client::build_with_tls(
        info,
        TlsCertificates {
            client_tls: None,
            root_cert: Some(tls.ca_cert_pem.as_bytes().to_vec()),
        },
    )
}

/// rustls needs one process-wide crypto provider when several are compiled in (the aws SDK
/// brings another): ring, as the provider's own TLS uses.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Someone else's choice, made first, stands.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Whether a node at `ip:port` answers PING within `within`, over TLS verified with `tls`
/// when given (a NOAUTH or WRONGPASS answer counts: the node is up, logging in is someone
/// else's business). For drivers waiting on a node they started on a machine of their own.
pub async fn answers_ping(ip: &str, port: u16, tls: Option<&ClientTls>, within: Duration) -> bool {
    let target = Target::new("probe", ip, port);
    let client = match tls {
        None => Client::open(ConnectionInfo {
            addr: ConnectionAddr::Tcp(ip.to_string(), port),
            redis: RedisConnectionInfo::default(),
        }),
        Some(tls) => tls_client(tls, &target, RedisConnectionInfo::default()),
    };
    let Ok(client) = client else {
        return false;
    };
    let attempt = async {
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<()>(&mut con).await
    };
    match tokio::time::timeout(within, attempt).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => is_auth_error(&e) && e.code().is_some(),
        Err(_) => false,
    }
}

/// Whether redis refused the credentials (as opposed to being unreachable or busy).
pub fn is_auth_error(e: &redis::RedisError) -> bool {
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return true;
    }
    matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
}

fn timed_out(after: Duration) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no reply within {after:?}"),
    ))
}

/// `key:value` lines of INFO / CLUSTER INFO.
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One line of CLUSTER NODES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    pub id: String,
    /// `ip:port` (without the bus port).
    pub address: String,
    pub flags: Vec<String>,
    /// The master's id, for replicas.
    pub master_id: Option<String>,
    pub config_epoch: u64,
    /// When the viewing node last received a pong from this node (its own clock, unix ms; 0:
    /// never since it started).
    pub pong_recv_ms: u64,
    pub link_connected: bool,
    pub slots: Vec<SlotRange>,
    /// `[slot->-id]`: slots this node hands to node `id` (only on the myself line).
    pub migrating: Vec<SlotMark>,
    /// `[slot-<-id]`: slots this node takes from node `id` (only on the myself line).
    pub importing: Vec<SlotMark>,
}

/// A half-moved slot as one side of the move records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMark {
    pub slot: u16,
    /// The other side: the destination of a migrating slot, the source of an importing one.
    pub node_id: String,
}

impl NodeLine {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    pub fn is_myself(&self) -> bool {
        self.has_flag("myself")
    }
    pub fn is_master(&self) -> bool {
        self.has_flag("master")
    }
    pub fn is_failed(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }
    pub fn in_handshake(&self) -> bool {
        self.has_flag("handshake") || self.has_flag("noaddr")
    }
    pub fn slot_count(&self) -> u32 {
        self.slots.iter().map(|r| r.len()).sum()
    }
}

pub fn parse_cluster_nodes(text: &str) -> std::result::Result<Vec<NodeLine>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return Err(format!("short line {line:?}"));
        }
        let address = fields[1]
            .split(['@', ','])
            .next()
            .unwrap_or_default()
            .to_string();
        let mut slots = Vec::new();
        let mut migrating = Vec::new();
        let mut importing = Vec::new();
        for s in &fields[8..] {
            if let Some(mark) = s.strip_prefix('[') {
                let mark = mark
                    .strip_suffix(']')
                    .ok_or_else(|| format!("bad slot marker {s:?}"))?;
                let (slot, list, id) = if let Some((slot, id)) = mark.split_once("->-") {
                    (slot, &mut migrating, id)
                } else if let Some((slot, id)) = mark.split_once("-<-") {
                    (slot, &mut importing, id)
                } else {
                    return Err(format!("bad slot marker {s:?}"));
                };
                let slot = slot
                    .parse::<u16>()
                    .ok()
                    .filter(|s| u32::from(*s) < redisha_planner::SLOT_COUNT)
                    .ok_or_else(|| format!("bad slot marker {s:?}"))?;
                if id.is_empty() {
                    return Err(format!("bad slot marker {s:?}"));
                }
                list.push(SlotMark {
                    slot,
                    node_id: id.to_string(),
                });
                continue;
            }
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(start), Ok(end)) if start <= end => slots.push(SlotRange { start, end }),
                _ => return Err(format!("bad slot range {s:?}")),
            }
        }
        out.push(NodeLine {
            id: fields[0].to_string(),
            address,
            flags: fields[2].split(',').map(str::to_string).collect(),
            master_id: (fields[3] != "-").then(|| fields[3].to_string()),
            config_epoch: fields[6].parse().unwrap_or(0),
            pong_recv_ms: fields[5].parse().unwrap_or(0),
            link_connected: fields[7] == "connected",
            slots,
            migrating,
            importing,
        });
    }
    Ok(out)
}

/// Merges sorted single slots into ranges.
pub fn slots_to_ranges(mut slots: Vec<u16>) -> Vec<SlotRange> {
    slots.sort_unstable();
    slots.dedup();
    let mut out: Vec<SlotRange> = Vec::new();
    for s in slots {
        match out.last_mut() {
            Some(r) if u32::from(r.end) + 1 == u32::from(s) => r.end = s,
            _ => out.push(SlotRange { start: s, end: s }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes_lines() {
        let text = "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,hostname4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected\n\
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 5462 [5461->-abc]\n";
        let nodes = parse_cluster_nodes(text).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].address, "127.0.0.1:30004");
        assert_eq!(
            nodes[0].master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert!(nodes[1].is_myself() && nodes[1].is_master());
        assert_eq!(nodes[1].slot_count(), 5462);
        assert_eq!(
            nodes[1].migrating,
            vec![SlotMark {
                slot: 5461,
                node_id: "abc".into()
            }]
        );
        assert!(nodes[1].importing.is_empty() && nodes[0].migrating.is_empty());
        assert!(parse_cluster_nodes("garbage").is_err());
    }

    #[test]
    fn parses_importing_and_migrating_markers() {
        let line = "e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-10 [11-<-src1] [16383->-dst2] [12-<-src1]\n";
        let me = &parse_cluster_nodes(line).unwrap()[0];
        assert_eq!(me.slots, vec![SlotRange { start: 0, end: 10 }]);
        let mark = |slot, id: &str| SlotMark {
            slot,
            node_id: id.into(),
        };
        assert_eq!(me.importing, vec![mark(11, "src1"), mark(12, "src1")]);
        assert_eq!(me.migrating, vec![mark(16383, "dst2")]);
        for bad in ["[16384-<-a]", "[5->-]", "[5=>-a]", "[x->-a]", "[5->-a"] {
            let line = format!("e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected {bad}");
            assert!(parse_cluster_nodes(&line).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn merges_slots() {
        assert_eq!(
            slots_to_ranges(vec![3, 1, 2, 7]),
            vec![
                SlotRange { start: 1, end: 3 },
                SlotRange { start: 7, end: 7 }
            ]
        );
    }
}
