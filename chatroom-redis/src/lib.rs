//! Several chatroom servers sharing their rooms through Redis (7.0 or later, or
//! Valkey).
//!
//! Run your service as several replicas behind a load balancer and give each hub the
//! same Redis: the members of a room see each other whatever node serves them, names
//! are unique across the cluster, event ids are gapless, and a client resumes on any
//! node.
//!
//! ```no_run
//! use chatroom_core::Hub;
//! use chatroom_redis::RedisBackplane;
//!
//! # async fn demo() -> Result<(), chatroom_redis::ConnectError> {
//! let backplane = RedisBackplane::connect("redis://127.0.0.1:6379/").await?;
//! let hub = Hub::builder().backplane(backplane).build();
//! // Serve `hub` with chatroom-axum or chatroom-actix as on one node.
//! # let _ = hub;
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! Redis decides, nodes fan out. A room's state (members, names, tokens, its event
//! counter and its history as a stream) lives only in Redis; every room operation
//! (join, resume, send, rename, leave or kick, disconnect, expiry) is one Lua script
//! that checks and acts atomically, takes the next event id, appends the event to the
//! room's stream and publishes it on the room's channel. Each node subscribes to the
//! rooms its members are in and pushes each event into their queues in id order,
//! repairing any gap from the stream (or closing its members there with 4002 so they
//! resume, when the stream no longer reaches back). Nodes hold leases in Redis; every
//! node reaps the members of a node whose lease ran out (they become away, then
//! leave when their grace period ends) and the away members whose grace ran out.
//!
//! # Hooks in a cluster
//!
//! The join and rename policies and the message filter run on the node that serves
//! the connection. The event observer sees each event at most once in the whole
//! cluster, on the node where it was caused (a node that crashes right after Redis
//! acted never fires it). A member that leaves because its grace period ran out is
//! reported by the node that reaped it: if that is not the node that served it, the
//! hook gets an empty [`ConnectionContext`](chatroom_core::ConnectionContext) (a
//! connection's context stays in the memory of the node that served it).
//! [`Hub::members`](chatroom_core::Hub::members) gives every member of the room, with
//! the context of those this node serves (an empty one for the others), and
//! [`Hub::kick_identity`](chatroom_core::Hub::kick_identity) removes the matching
//! members this node serves.
//!
//! # Redis
//!
//! A `rediss://` URL connects over TLS (rustls), trusting the system's roots; give
//! [`RedisBackplane::connect_with_tls`] your own CA or a client certificate. Every node
//! must have the same room rules ([`RedisBackplane::check_rules`]).
//!
//! A Redis Cluster is found at connect (give the URL of any master): rooms are then
//! spread over 16 partitions, each in one slot, and delivered through sharded pub/sub
//! (see docs/operations.md, "Redis Cluster").
//!
//! Redis 7.0 or later with `maxmemory-policy noeviction` (an evicted room would restart
//! its ids while its names are held); see docs/operations.md for persistence and
//! memory. While Redis cannot be reached, frames that need it are answered
//! `unavailable` and take no effect later; open connections stay open.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod mirror;
mod node;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatroom_core::backplane::{Backplane, BackplaneContext, IntoBackplane};
use redis::aio::ConnectionManagerConfig;

/// Redis did not answer in time, or the connection failed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unreachable;

/// Why [`RedisBackplane::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not a Redis URL (`redis://host:port/`, `rediss://host:port/`,
    /// `unix:///path`).
    #[error("not a Redis URL ({0})")]
    BadUrl(String),
    /// The TLS settings cannot be used: certificates that are not PEM, or certificates
    /// given for a URL without TLS.
    #[error("TLS: {0}")]
    Tls(String),
    /// Redis could not be reached or did not answer.
    #[error("cannot reach Redis: {0}")]
    Unreachable(String),
    /// The server is older than Redis 7.0 (the scripts need 7.0).
    #[error("Redis {version} is too old: chatroom needs Redis 7.0 or later")]
    TooOld {
        /// The version the server reported.
        version: String,
    },
    /// The server may evict keys: a room evicted would restart its ids while its names
    /// are still held.
    #[error(
        "Redis has maxmemory-policy {policy}: chatroom needs noeviction \
         (CONFIG SET maxmemory-policy noeviction)"
    )]
    Eviction {
        /// The policy the server has.
        policy: String,
    },
    /// The nodes already running on this Redis have other room rules (see
    /// [`RedisBackplane::check_rules`]).
    #[error(
        "the cluster on this Redis runs with other room rules: {}; give every node the same \
         limits (or stop the others first)",
        differences.join("; ")
    )]
    RulesDiffer {
        /// Each difference, as `history 50 here, 100 in the cluster`.
        differences: Vec<String>,
    },
}

/// Tunables of a node; the defaults suit a Redis on the same network.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// How long a call to Redis may take before the frame is answered `unavailable`.
    pub(crate) call_timeout: Duration,
    /// The node's lease: a node that has not renewed it for this long is dead.
    pub(crate) lease: Duration,
    /// How often each mirrored room's position is checked against Redis.
    pub(crate) check_interval: Duration,
    /// How long Redis may be unreachable before connections close with 1013.
    pub(crate) outage_limit: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            call_timeout: Duration::from_millis(500),
            lease: Duration::from_millis(6000),
            check_interval: Duration::from_secs(2),
            outage_limit: Duration::from_secs(30),
        }
    }
}

/// A connection to Redis, ready to become a hub's backplane: give it to
/// [`HubBuilder::backplane`](chatroom_core::HubBuilder::backplane).
///
/// Each hub it is given to is one node of the cluster, with its own random node id.
pub struct RedisBackplane {
    crashed: tokio_util::sync::CancellationToken,
    subscriber: Subscriber,
    con: store::Con,
    layout: store::Layout,
    /// The data-set id of each partition (see `cr:{cr.N}:instance`).
    instances: Vec<String>,
    offset_ms: i64,
    options: Options,
}

/// Where a node's pub/sub connection comes from.
pub(crate) enum Subscriber {
    /// A single Redis: a RESP2 pub/sub connection, made anew after each loss.
    Single(Box<redis::Client>),
    /// A Redis Cluster, from these seed nodes: one RESP3 cluster connection with
    /// sharded subscriptions, which the client restores after a loss by itself.
    Cluster(Vec<redis::ConnectionInfo>),
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("options", &self.options)
            .field("cluster", &self.layout.sharded)
            .finish_non_exhaustive()
    }
}

/// What a `rediss://` connection trusts and presents, for
/// [`RedisBackplane::connect_with_tls`]. By default (and with
/// [`RedisBackplane::connect`]) the server's certificate must chain to one of the
/// system's root certificates, and no client certificate is sent.
#[derive(Clone, Default)]
pub struct TlsCertificates {
    root: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsCertificates")
            .field("root", &self.root.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl TlsCertificates {
    /// The system's roots, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the certificate authority `pem` (PEM-encoded) instead of the system's
    /// roots: for a Redis whose certificate your own CA issued.
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root = Some(pem.into());
        self
    }

    /// Presents this client certificate and its private key (both PEM-encoded), for a
    /// Redis that requires them (`tls-auth-clients yes`).
    pub fn client_certificate(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client = Some((cert_pem.into(), key_pem.into()));
        self
    }
}

impl RedisBackplane {
    /// Connects to the Redis at `url` (`redis://[user:password@]host:port/[db]`,
    /// `rediss://...` for TLS, checked against the system's root certificates, or
    /// `unix:///path/to/redis.sock`) and checks that it can serve as a backplane:
    /// version 7.0 or later and `maxmemory-policy noeviction`.
    pub async fn connect(url: &str) -> Result<RedisBackplane, ConnectError> {
        Self::connect_inner(url, None).await
    }

    /// [`RedisBackplane::connect`] to a `rediss://` URL with certificates of your own:
    /// a root certificate to trust, a client certificate to present.
    pub async fn connect_with_tls(
        url: &str,
        tls: TlsCertificates,
    ) -> Result<RedisBackplane, ConnectError> {
        if !url.starts_with("rediss://") {
            return Err(ConnectError::Tls(
                "certificates given for a URL without TLS (use rediss://)".to_owned(),
            ));
        }
        Self::connect_inner(url, Some(tls)).await
    }

    async fn connect_inner(
        url: &str,
        tls: Option<TlsCertificates>,
    ) -> Result<RedisBackplane, ConnectError> {
        if url.starts_with("rediss://") {
            // rustls needs a process-wide crypto provider; keep the host's if it chose
            // one already.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let custom_tls = tls.is_some();
        let client = match tls {
            None => redis::Client::open(url).map_err(|e| ConnectError::BadUrl(e.to_string()))?,
            Some(TlsCertificates { root, client }) => {
                if let Some(root) = &root {
                    pem_certificates(root, "the root certificate")?;
                }
                if let Some((cert, key)) = &client {
                    pem_certificates(cert, "the client certificate")?;
                    use rustls::pki_types::pem::PemObject as _;
                    rustls::pki_types::PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                        ConnectError::Tls(format!("the client key is not a PEM private key: {e}"))
                    })?;
                }
                let info = redis::IntoConnectionInfo::into_connection_info(url)
                    .map_err(|e| ConnectError::BadUrl(e.to_string()))?;
                let certificates = redis::TlsCertificates {
                    client_tls: client.map(|(client_cert, client_key)| redis::ClientTlsConfig {
                        client_cert,
                        client_key,
                    }),
                    root_cert: root,
                };
                redis::Client::build_with_tls(info, certificates)
                    .map_err(|e| ConnectError::Tls(e.to_string()))?
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let mut con = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| ConnectError::Unreachable("no answer within 5 s".to_owned()))?
        .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        check_server(&mut con).await?;
        // A Redis Cluster: every call goes through a cluster connection, which routes it
        // to the master of its keys' slot; rooms spread over the partitions.
        let cluster_info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut con)
            .await
            .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        let clustered = cluster_info
            .lines()
            .any(|l| l.trim() == "cluster_enabled:1");
        let (con, layout, subscriber) = if clustered {
            if custom_tls {
                return Err(ConnectError::Tls(
                    "certificates of one's own are not supported with a Redis Cluster yet \
                     (a rediss:// URL with the system's roots is)"
                        .to_owned(),
                ));
            }
            let seeds = vec![client.get_connection_info().clone()];
            // Every master must be able to serve (version, eviction), not only the seed.
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut con)
                .await
                .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
            for (host, port) in cluster_masters(&nodes) {
                let addr = match client.get_connection_info().addr() {
                    redis::ConnectionAddr::TcpTls {
                        insecure,
                        tls_params,
                        ..
                    } => redis::ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port,
                        insecure: *insecure,
                        tls_params: tls_params.clone(),
                    },
                    _ => redis::ConnectionAddr::Tcp(host.clone(), port),
                };
                let info = client.get_connection_info().clone().set_addr(addr);
                let master =
                    redis::Client::open(info).map_err(|e| ConnectError::BadUrl(e.to_string()))?;
                let mut master_con = tokio::time::timeout(
                    Duration::from_secs(5),
                    master.get_multiplexed_async_connection(),
                )
                .await
                .map_err(|_| {
                    ConnectError::Unreachable(format!("master {host}:{port}: no answer within 5 s"))
                })?
                .map_err(|e| ConnectError::Unreachable(format!("master {host}:{port}: {e}")))?;
                check_server(&mut master_con).await?;
            }
            let cluster = redis::cluster::ClusterClient::builder(seeds.clone())
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(Duration::from_secs(2))
                // Never sent twice by the client: a script whose reply was lost may
                // have run (the node settles such calls itself, fenced by link).
                .retries(0)
                .build()
                .map_err(|e| ConnectError::BadUrl(e.to_string()))?;
            let con = tokio::time::timeout(Duration::from_secs(5), cluster.get_async_connection())
                .await
                .map_err(|_| ConnectError::Unreachable("no answer within 5 s".to_owned()))?
                .map_err(|e| ConnectError::Unreachable(format!("the Redis Cluster: {e}")))?;
            tracing::info!(
                partitions = store::CLUSTER_PARTITIONS,
                "a Redis Cluster: rooms are spread over its masters by partition"
            );
            (
                store::Con::Cluster(con),
                store::Layout::CLUSTER,
                Subscriber::Cluster(seeds),
            )
        } else {
            (
                store::Con::Single(con),
                store::Layout::SINGLE,
                Subscriber::Single(Box::new(client)),
            )
        };
        let mut con = con;
        // Loaded now, the scripts' first calls are one round trip each; a script error
        // (an incompatible server) shows here, not at the first join. (On a cluster, a
        // master that restarts loses them: each call loads its script again then.)
        store::Scripts::new(layout)
            .load(&mut con)
            .await
            .map_err(|e| ConnectError::Unreachable(format!("loading the scripts: {e}")))?;
        // The instance id of each partition tells a node that Redis lost its data.
        let mut instances = Vec::new();
        for partition in layout.all() {
            let key = store::PartitionKeys(partition).instance();
            let _: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(random_hex())
                .arg("NX")
                .query_async(&mut con)
                .await
                .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
            let instance: String = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut con)
                .await
                .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
            instances.push(instance);
        }
        let sent = SystemTime::now();
        let (secs, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut con)
            .await
            .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        let redis_ms = (secs * 1000 + micros / 1000) as i64;
        let local_ms = sent
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(RedisBackplane {
            crashed: tokio_util::sync::CancellationToken::new(),
            subscriber,
            con,
            layout,
            instances,
            offset_ms: redis_ms - local_ms,
            options: Options::default(),
        })
    }

    /// How long a node's lease lasts (default 6 s): a node that has not renewed it for
    /// this long is dead, and its members become away. It is renewed every third of it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.options.lease = lease.max(Duration::from_millis(300));
        self
    }

    /// How long Redis may stay unreachable (default 30 s) before this node closes its
    /// connections with 1013 ("try again later"); until then they stay open and frames
    /// that need Redis are answered `unavailable`.
    pub fn outage_limit(mut self, limit: Duration) -> Self {
        self.options.outage_limit = limit;
        self
    }

    /// Checks that the nodes already running on this Redis have the same room rules as
    /// `limits` (the ones a hub's [`Limits`](chatroom_core::Limits) give: `history`,
    /// `resume_grace`, `max_members`, `max_rooms` and the length limits of names,
    /// rooms and messages). Every node of a cluster must share them: members of one
    /// room would otherwise get different histories, grace periods and caps depending
    /// on their node.
    ///
    /// A hub whose rules differ is refused by the cluster anyway (at its first
    /// heartbeat it stops serving, and its store health is `lost`); call this at start,
    /// with the limits you give the hub, to fail early with a clear error instead. The
    /// rules are the cluster's as long as one node runs: to change them, stop every
    /// node (or wait out their leases), then start the nodes with the new ones.
    pub async fn check_rules(&self, limits: &chatroom_core::Limits) -> Result<(), ConnectError> {
        let mine = store::rules(limits, self.layout);
        let scripts = store::Scripts::new(self.layout);
        for partition in self.layout.all() {
            let partition = store::PartitionKeys(partition);
            let mut call = scripts.check_rules.prepare_invoke();
            call.key(partition.nodes())
                .key(partition.rules())
                .arg(&mine);
            let mut con = self.con.clone();
            let value = tokio::time::timeout(
                Duration::from_secs(5),
                call.invoke_async::<redis::Value>(&mut con),
            )
            .await
            .map_err(|_| ConnectError::Unreachable("no answer within 5 s".to_owned()))?
            .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
            let reply = store::Reply::new(value);
            if let Some(theirs) = reply.text(1).filter(|_| reply.status() == "rules") {
                return Err(ConnectError::RulesDiffer {
                    differences: store::rules_diff(&mine, &theirs),
                });
            }
        }
        Ok(())
    }

    /// Whether this backplane is on a Redis Cluster (found at connect): rooms are then
    /// spread over 16 partitions by a hash of their name, each partition in one slot,
    /// and delivered through sharded pub/sub.
    pub fn is_cluster(&self) -> bool {
        self.layout.sharded
    }

    /// For tests of faults: a switch that makes this node "crash" (it stops calling
    /// Redis, renewing its lease and delivering, and drops its connections' queues,
    /// as a killed process would) while the test process goes on.
    #[doc(hidden)]
    pub fn crash_switch(&self) -> CrashSwitch {
        CrashSwitch(self.crashed.clone())
    }

    /// How long a call to Redis may take (default 500 ms) before its frame is answered
    /// `unavailable` (the call then takes no effect later).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.options.call_timeout = timeout.max(Duration::from_millis(10));
        self
    }
}

impl IntoBackplane for RedisBackplane {
    fn into_backplane(self, context: BackplaneContext) -> Box<dyn Backplane> {
        let shared = node::Shared::new(self, context);
        Box::new(node::Node::start(shared))
    }
}

/// Makes a node crash, for tests (see [`RedisBackplane::crash_switch`]).
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct CrashSwitch(tokio_util::sync::CancellationToken);

impl CrashSwitch {
    /// The node stops at once, as if its process were killed.
    pub fn crash(&self) {
        self.0.cancel();
    }
}

/// Checks that a Redis server can serve as a backplane: version 7.0 or later, and
/// `maxmemory-policy noeviction` (when it lets `CONFIG` be read).
async fn check_server(con: &mut impl redis::aio::ConnectionLike) -> Result<(), ConnectError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(con)
        .await
        .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(ConnectError::TooOld { version });
    }
    // A managed Redis may refuse CONFIG: then the policy cannot be checked here.
    let policy: Result<Vec<String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(con)
        .await;
    match policy {
        Ok(p) => {
            if let Some(policy) = p.get(1).filter(|p| p.as_str() != "noeviction") {
                return Err(ConnectError::Eviction {
                    policy: policy.clone(),
                });
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read maxmemory-policy; make sure it is noeviction")
        }
    }
    Ok(())
}

/// The other masters (host, port) that `CLUSTER NODES` lists as serving slots, for
/// their checks: not the node asked (`myself`, checked already), not one failing or
/// being added. A node's hostname is used when it announces one.
fn cluster_masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, flags) = (fields.get(1)?, fields.get(2)?);
            let flags: Vec<&str> = flags.split(',').collect();
            let serving = flags.contains(&"master")
                && !flags.iter().any(|f| {
                    matches!(*f, "myself" | "fail" | "fail?" | "noaddr" | "handshake")
                })
                // Fields 9 on are its slots: a master with none serves nothing.
                && fields.len() > 8;
            if !serving {
                return None;
            }
            let (endpoint, hostname) = match address.split_once(',') {
                Some((endpoint, hostname)) => (endpoint, Some(hostname)),
                None => (*address, None),
            };
            let (ip, port) = endpoint.split('@').next()?.rsplit_once(':')?;
            let host = match hostname.filter(|h| !h.is_empty()) {
                Some(hostname) => hostname,
                None => ip.trim_start_matches('[').trim_end_matches(']'),
            };
            if host.is_empty() {
                return None;
            }
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

/// Checks that `pem` holds at least one PEM certificate (the redis crate would ignore
/// anything else, and fail later with a vaguer error).
fn pem_certificates(pem: &[u8], what: &str) -> Result<(), ConnectError> {
    use rustls::pki_types::pem::PemObject as _;
    let certificates: Result<Vec<_>, _> =
        rustls::pki_types::CertificateDer::pem_slice_iter(pem).collect();
    match certificates {
        Ok(c) if !c.is_empty() => Ok(()),
        Ok(_) => Err(ConnectError::Tls(format!(
            "{what} holds no PEM certificate"
        ))),
        Err(e) => Err(ConnectError::Tls(format!("{what} is not PEM: {e}"))),
    }
}

/// 128 random bits in hex (node and instance ids).
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = now.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::cluster_masters;

    #[test]
    fn the_serving_masters_of_cluster_nodes() {
        let nodes = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host1 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail - 0 1426238318243 3 connected 10923-16383
392f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30005@31005 master,fail? - 0 1426238318243 3 connected 16000
a92f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30006@31006 master - 0 1426238318243 3 connected
b92f8b365bb7edb5e285caf0b7e6ddc7265d2f4f [::1]:30007@31007 master - 0 1426238318243 3 connected 1-2
c92f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 10.0.0.9:30008@31008,redis-8.example master - 0 1 3 connected 3-4
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :30001@31001 myself,master - 0 0 1 connected 0-5460
";
        assert_eq!(
            cluster_masters(nodes),
            [
                ("127.0.0.1".to_owned(), 30002),
                ("::1".to_owned(), 30007),
                ("redis-8.example".to_owned(), 30008)
            ]
        );
    }
}
