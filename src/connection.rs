//! Redis connections and the backoff between attempts to (re)open them.
//!
//! The relay keeps three connections. The blocking XREADGROUP gets its own, with a response timeout
//! well above the BLOCK time: Redis reads nothing else from a blocked client
//! (docs/08-internals/loop.md, "Connections").
//! Entries read by ID (own pending, reclaimed, held) come through a second one; both are
//! [`Reader`]s, which keep entries within the configured limits whatever producers put in them.
//! Everything else (the delivery script, claims by ID, group setup) shares the writer. None
//! reconnects by itself: on any error the relay drops them all and opens new ones after a
//! [`Backoff`] delay, which also aborts a read left blocked.
//!
//! All three go to the Redis that holds the stream: `redis.url`, the master the sentinels name, or
//! the primary that serves the stream's slot in a cluster, looked up again at every connection. In
//! a cluster a fourth, [`AllNodes`], reaches every node for what concerns them all (counting
//! servers, publishing on another shard's channel).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::io::tcp::TcpSettings;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, ConnectionAddr, ConnectionInfo,
    IntoConnectionInfo, RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};

use crate::config::{Config, RedisMode};
use crate::fault::LinkError;
use crate::reader::Reader;

/// The relay's connections.
pub struct Connections {
    /// New entries, with a blocking read.
    pub reader: Reader,
    /// Entries by ID.
    pub fetcher: Reader,
    pub writer: MultiplexedConnection,
    /// What concerns every node of a cluster; the writer otherwise.
    pub all_nodes: AllNodes,
    /// The `run_id` of the Redis process both are connected to: it changes when Redis restarts.
    pub run_id: String,
    /// Redis's clock minus this host's, in milliseconds, as measured when connecting.
    pub clock_offset_ms: i64,
}

/// `redis.url` with the password from `redis.password_file` and Nagle off: the relay sends small
/// batches and waits for them.
pub fn connection_info(cfg: &Config) -> Result<redis::ConnectionInfo, LinkError> {
    let mut info = cfg
        .redis
        .url
        .as_str()
        .into_connection_info()?
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    if !cfg.redis.password_file.is_empty() {
        let password = read("redis.password_file", &cfg.redis.password_file)?;
        let password = String::from_utf8_lossy(&password).trim_end().to_owned();
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    Ok(info)
}

/// The client of the Redis that holds the stream: `redis.url` itself, the master that the
/// sentinels name at this moment, or the primary that serves the stream's slot in a cluster (asked
/// anew at every connection, which is how a failover or a slot migration is followed: redis-rs
/// does not watch for one on a plain connection).
pub async fn client(cfg: &Config) -> Result<Client, LinkError> {
    client_for(cfg, &cfg.source.stream).await
}

/// [`client`] for the Redis that serves `key`: in a cluster, the primary of its slot.
pub async fn client_for(cfg: &Config, key: &str) -> Result<Client, LinkError> {
    // A trait object: redis-rs's connecting futures, nested in the console's, are deeper than
    // rustc looks when it proves the console's future Send.
    let locating: Pin<Box<dyn Future<Output = Located> + Send + '_>> = Box::pin(locate(cfg, key));
    Ok(locating.await?.0)
}

/// The client of the Redis that serves a key, and in a cluster the connection to every node.
type Located = Result<(Client, Option<AllNodes>), LinkError>;

/// The client of the Redis that serves `key`, and in a cluster the connection to every node that
/// told where it is.
async fn locate(cfg: &Config, key: &str) -> Located {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let info = connection_info(cfg)?;
    // Each node asked may take up to connect_timeout, and then the one found.
    let patience = cfg.redis.connect_timeout * (cfg.redis.urls.len() as u32 + 1);
    let within = |what: &'static str| {
        move |_| LinkError::NoAnswer {
            what,
            within: patience,
        }
    };
    match cfg.redis.mode {
        RedisMode::Standalone => Ok((with_certificates(cfg, info)?, None)),
        RedisMode::Sentinel => {
            let master = tokio::time::timeout(patience, master(cfg, info.redis_settings()))
                .await
                .map_err(within("timed out asking the sentinels for the master"))??;
            Ok((master, None))
        }
        RedisMode::Cluster => {
            let owner = async {
                let mut con = cluster(cfg).await?;
                let ranges = slot_ranges(&mut con, &seeds(cfg)?).await?;
                let (host, port) = owner_of(&ranges, key)?;
                let nodes = node_list(&ranges);
                let client = with_certificates(cfg, at(&info, host, port))?;
                Ok((client, Some(AllNodes::Cluster { con, nodes })))
            };
            tokio::time::timeout(patience, owner).await.map_err(within(
                "timed out asking the cluster which node serves the stream",
            ))?
        }
    }
}

fn with_certificates(cfg: &Config, info: ConnectionInfo) -> Result<Client, LinkError> {
    Ok(match certificates(cfg)? {
        None => Client::open(info)?,
        Some(certificates) => Client::build_with_tls(info, certificates)?,
    })
}

/// `base` (scheme, TLS, credentials) at another host and port.
fn at(base: &ConnectionInfo, host: String, port: u16) -> ConnectionInfo {
    let addr = match base.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    base.clone().set_addr(addr)
}

/// Every node of the cluster behind `redis.urls`, as one connection: redis-rs routes each command
/// by its key or channel, follows MOVED and ASK, and sums PUBSUB NUMSUB and SHARDNUMSUB over all
/// nodes. The relay uses it for what concerns the whole cluster (counting servers, SPUBLISH to
/// another shard), never for what must run exactly once: it re-sends a request whose connection
/// broke.
pub async fn cluster(cfg: &Config) -> Result<ClusterConnection, LinkError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let info = connection_info(cfg)?;
    let seeds = seeds(cfg)?
        .into_iter()
        .map(|(host, port)| at(&info, host, port));
    let settings = info.redis_settings();
    let mut builder = ClusterClientBuilder::new(seeds)
        .connection_timeout(cfg.redis.connect_timeout)
        .response_timeout(cfg.redis.command_timeout)
        .retries(3)
        .tcp_settings(TcpSettings::default().set_nodelay(true));
    if let Some(user) = settings.username() {
        builder = builder.username(user);
    }
    if let Some(password) = settings.password() {
        builder = builder.password(password);
    }
    if cfg.redis.url.starts_with("rediss://") {
        builder = builder.tls(TlsMode::Secure);
        if let Some(certificates) = certificates(cfg)? {
            builder = builder.certs(certificates);
        }
    }
    Ok(builder.build()?.get_async_connection().await?)
}

/// The host and port of each node of `redis.urls`, the cluster's seeds.
fn seeds(cfg: &Config) -> Result<Vec<(String, u16)>, LinkError> {
    let mut seeds = Vec::new();
    for url in &cfg.redis.urls {
        let seed = url.as_str().into_connection_info()?;
        match seed.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                seeds.push((host.clone(), *port))
            }
            other => {
                return Err(LinkError::Address {
                    why: "a cluster node must be reached over TCP",
                    address: other.to_string(),
                })
            }
        }
    }
    Ok(seeds)
}

/// A range of slots: start, end, and where its primary then each replica is; `None` for a node
/// whose endpoint is unknown (`?`).
type SlotRange = (u16, u16, Vec<Option<(String, u16)>>);

/// The slot ranges of the cluster as CLUSTER SLOTS says now, asked of the first node of `ask`
/// that answers (any node if none does).
///
/// A node that does not know its own address (alone in its cluster, or not yet joined) gives its
/// endpoint as the empty string, or NULL, which Redis documents as "the same endpoint the client
/// used to send the command", and `?` as an unknown endpoint (the CLUSTER SLOTS and CLUSTER
/// SHARDS reference pages). So the relay asks a node it names: redis-rs resolves such endpoints
/// alike for its own routing, but the plain CLUSTER SLOTS it answers the relay leaves them as
/// they are, and the empty host used to end in "failed to lookup address information". redis-rs
/// names a node by the address it reached it at, which is how the relay named it in `ask` (its
/// last list, resolved the same way, or the seeds), so asking by name finds it.
async fn slot_ranges(
    nodes: &mut ClusterConnection,
    ask: &[(String, u16)],
) -> Result<Vec<SlotRange>, LinkError> {
    let cmd = || {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        cmd
    };
    for (host, port) in ask {
        let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        });
        // A node it does not know, or cannot reach now: the next one.
        if let Ok(reply) = nodes.route_command(cmd(), node).await {
            return parse_slots(&value::<Vec<Vec<Value>>>(&reply)?, Some(host));
        }
    }
    let reply: Vec<Vec<Value>> = cmd().query_async(nodes).await?;
    parse_slots(&reply, None)
}

/// A reply's value as `T`, or why not.
fn value<T: redis::FromRedisValue>(reply: &Value) -> Result<T, LinkError> {
    redis::from_redis_value_ref(reply).map_err(|e| LinkError::Redis(e.into()))
}

/// CLUSTER SLOTS's reply, as answered by the node at `asked` (when the relay knows which).
fn parse_slots(ranges: &[Vec<Value>], asked: Option<&str>) -> Result<Vec<SlotRange>, LinkError> {
    let mut found = Vec::new();
    for range in ranges {
        let [start, end, served_by @ ..] = range.as_slice() else {
            continue;
        };
        let mut addrs = Vec::new();
        for node in served_by {
            // [endpoint, port, id, ...]
            addrs.push(match node {
                Value::Array(node) => endpoint(node, asked)?,
                _ => None,
            });
        }
        found.push((value(start)?, value(end)?, addrs));
    }
    Ok(found)
}

/// Where one node of a slot range is: its endpoint, the node asked's host when empty or NULL,
/// `None` when unknown (`?`).
fn endpoint(node: &[Value], asked: Option<&str>) -> Result<Option<(String, u16)>, LinkError> {
    let [host, port, ..] = node else {
        return Ok(None);
    };
    let port: u16 = value(port)?;
    let host: Option<String> = value(host)?;
    match host.as_deref() {
        Some("?") => Ok(None),
        None | Some("") => match asked {
            Some(asked) => Ok(Some((asked.to_owned(), port))),
            None => Err(LinkError::EmptyEndpoint { port }),
        },
        Some(_) => Ok(host.map(|host| (host, port))),
    }
}

/// The host and port of the primary that serves `key`'s slot among `ranges`.
fn owner_of(ranges: &[SlotRange], key: &str) -> Result<(String, u16), LinkError> {
    let slot = crate::partition::key_slot(key);
    ranges
        .iter()
        .find(|(start, end, _)| (*start..=*end).contains(&slot))
        .and_then(|(_, _, addrs)| addrs.first().cloned().flatten())
        .ok_or_else(|| LinkError::NoSlotOwner {
            key: key.to_owned(),
            slot,
        })
}

/// Every node `ranges` name, primaries and replicas, sorted.
fn node_list(ranges: &[SlotRange]) -> Vec<(String, u16)> {
    let mut all: Vec<(String, u16)> = ranges
        .iter()
        .flat_map(|(_, _, addrs)| addrs.iter().flatten().cloned())
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Where the relay asks what concerns every node: how many Socket.IO servers listen, and SPUBLISH
/// on a channel of another shard. Outside a cluster that is the one Redis, through the writer.
#[derive(Clone)]
pub enum AllNodes {
    One(MultiplexedConnection),
    Cluster {
        con: ClusterConnection,
        /// The nodes the cluster listed when `con` was made.
        nodes: Vec<(String, u16)>,
    },
}

impl AllNodes {
    pub async fn cluster(cfg: &Config) -> Result<AllNodes, LinkError> {
        let mut con = cluster(cfg).await?;
        let nodes = node_list(&slot_ranges(&mut con, &seeds(cfg)?).await?);
        Ok(AllNodes::Cluster { con, nodes })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, AllNodes::Cluster { .. })
    }

    /// Connects anew when the cluster lists other nodes than it did: redis-rs learns of a node
    /// (a failed primary back as a replica, with servers subscribed to it) only when a redirection
    /// makes it look, and a node it does not know is a node whose servers are not counted.
    /// Returns whether it did.
    pub async fn follow(&mut self, cfg: &Config) -> Result<bool, LinkError> {
        let AllNodes::Cluster { con, nodes } = self else {
            return Ok(false);
        };
        let ask = [nodes.clone(), seeds(cfg)?].concat();
        if node_list(&slot_ranges(con, &ask).await?) == *nodes {
            return Ok(false);
        }
        *self = AllNodes::cluster(cfg).await?;
        Ok(true)
    }
}

impl ConnectionLike for AllNodes {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            AllNodes::One(con) => con.req_packed_command(cmd),
            AllNodes::Cluster { con, .. } => con.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            AllNodes::One(con) => con.req_packed_commands(pipeline, offset, count),
            AllNodes::Cluster { con, .. } => con.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AllNodes::One(con) => con.get_db(),
            AllNodes::Cluster { con, .. } => con.get_db(),
        }
    }
}

/// Asks the sentinels of `redis.urls` in turn for the master `redis.sentinel_master` (one that
/// they do not consider down and that answers ROLE as a master), reached with `node`'s
/// credentials and database and the TLS files.
async fn master(cfg: &Config, node: &redis::RedisConnectionInfo) -> Result<Client, LinkError> {
    let mut sentinels = Vec::new();
    for url in &cfg.redis.urls {
        sentinels.push(url.as_str().into_connection_info()?);
    }
    let access = sentinels[0].redis_settings().clone();
    let tls = |addr: &ConnectionAddr| matches!(addr, ConnectionAddr::TcpTls { .. });
    let mut builder = SentinelClientBuilder::new(
        sentinels.iter().map(|s| s.addr().clone()),
        &cfg.redis.sentinel_master,
        SentinelServerType::Master,
    )?
    .set_client_to_redis_db(node.db())
    .set_client_to_redis_tcp_settings(TcpSettings::default().set_nodelay(true));
    if let Some(user) = node.username() {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = node.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(user) = access.username() {
        builder = builder.set_client_to_sentinel_username(user);
    }
    if let Some(password) = access.password() {
        builder = builder.set_client_to_sentinel_password(password);
    }
    if cfg.redis.url.starts_with("rediss://") {
        builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(certificates) = certificates(cfg)? {
            builder = builder.set_client_to_redis_certificates(certificates);
        }
    }
    if tls(sentinels[0].addr()) {
        builder = builder.set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(certificates) = certificates(cfg)? {
            builder = builder.set_client_to_sentinel_certificates(certificates);
        }
    }
    Ok(builder.build()?.async_get_client().await?)
}

/// The CA and client certificate of the TLS files, if any is set.
fn certificates(cfg: &Config) -> Result<Option<TlsCertificates>, LinkError> {
    let (ca, cert, key) = (
        &cfg.redis.tls_ca_file,
        &cfg.redis.tls_cert_file,
        &cfg.redis.tls_key_file,
    );
    if ca.is_empty() && cert.is_empty() {
        return Ok(None);
    }
    let root_cert = match ca.is_empty() {
        true => None,
        false => Some(read("redis.tls_ca_file", ca)?),
    };
    let client_tls = match cert.is_empty() {
        true => None,
        false => Some(ClientTlsConfig {
            client_cert: read("redis.tls_cert_file", cert)?,
            client_key: read("redis.tls_key_file", key)?,
        }),
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path).map_err(|source| LinkError::File {
        key,
        path: path.to_owned(),
        source,
    })
}

/// How long the reader waits for a reply: the BLOCK time plus a real margin, because Redis can
/// block past BLOCK when a woken read loses its entry to another consumer (redis/redis#12998).
pub fn read_timeout(block: Duration) -> Duration {
    block + block.max(Duration::from_secs(5))
}

/// Opens the connections. The client is built anew each time, so files it reads (a rotated
/// password) are read again.
pub async fn connect(cfg: &Config) -> Result<Connections, LinkError> {
    let (client, cluster) = locate(cfg, &cfg.source.stream).await?;
    let base = AsyncConnectionConfig::new().set_connection_timeout(Some(cfg.redis.connect_timeout));
    let mut writer = client
        .get_multiplexed_async_connection_with_config(
            &base.set_response_timeout(Some(cfg.redis.command_timeout)),
        )
        .await?;
    let node = client.get_connection_info();
    let reader = Reader::connect(cfg, node, read_timeout(cfg.source.block)).await?;
    let fetcher = Reader::connect(cfg, node, cfg.redis.command_timeout).await?;
    let info: redis::InfoDict = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut writer)
        .await?;
    let run_id = info.get::<String>("run_id").ok_or(LinkError::NoRunId)?;
    let clock_offset_ms = clock_offset(&mut writer).await?;
    let all_nodes = cluster.unwrap_or_else(|| AllNodes::One(writer.clone()));
    Ok(Connections {
        reader,
        fetcher,
        writer,
        all_nodes,
        run_id,
        clock_offset_ms,
    })
}

/// Redis's clock minus this host's, in milliseconds. Entry IDs carry Redis's time, so the age of an
/// entry (`delivery.max_age`, the end-to-end latency) is measured on Redis's clock: a relay host
/// whose clock runs ahead would otherwise expire every entry. Taken at the middle of a TIME round
/// trip; one per connection is plenty.
async fn clock_offset(con: &mut MultiplexedConnection) -> RedisResult<i64> {
    let before = now_ms();
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(con).await?;
    let after = now_ms();
    Ok(secs * 1000 + micros / 1000 - (before + after) / 2)
}

/// This host's clock, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Capped exponential backoff with jitter, so that relays restarted together do not reconnect in
/// lockstep.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt: a random point in the upper half of the current step.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Called after a success: the next failure starts again from the minimum.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One CLUSTER SLOTS range of every slot, its primary at `endpoint`:7000, a replica at
    /// 10.0.0.2:7001.
    fn one_range(endpoint: Value) -> Vec<Vec<Value>> {
        let node = |endpoint: Value, port: i64| {
            Value::Array(vec![
                endpoint,
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        vec![vec![
            Value::Int(0),
            Value::Int(16383),
            node(endpoint, 7000),
            node(Value::BulkString(b"10.0.0.2".to_vec()), 7001),
        ]]
    }

    #[test]
    fn an_empty_or_null_endpoint_is_the_node_asked_and_a_question_mark_is_unknown() {
        for empty in [Value::BulkString(Vec::new()), Value::Nil] {
            let ranges = parse_slots(&one_range(empty), Some("127.0.0.1")).unwrap();
            assert_eq!(
                owner_of(&ranges, "s").unwrap(),
                ("127.0.0.1".to_owned(), 7000)
            );
            assert_eq!(
                node_list(&ranges),
                [
                    ("10.0.0.2".to_owned(), 7001),
                    ("127.0.0.1".to_owned(), 7000)
                ]
            );
        }
        let unknown = parse_slots(&one_range(Value::BulkString(b"?".to_vec())), Some("h")).unwrap();
        assert!(matches!(
            owner_of(&unknown, "s"),
            Err(LinkError::NoSlotOwner { .. })
        ));
        assert_eq!(node_list(&unknown), [("10.0.0.2".to_owned(), 7001)]);
        let named = parse_slots(&one_range(Value::BulkString(b"10.0.0.1".to_vec())), None).unwrap();
        assert_eq!(
            owner_of(&named, "s").unwrap(),
            ("10.0.0.1".to_owned(), 7000)
        );
        assert!(matches!(
            parse_slots(&one_range(Value::BulkString(Vec::new())), None),
            Err(LinkError::EmptyEndpoint { port: 7000 })
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<Duration> = (0..5).map(|_| backoff.next_delay()).collect();
        let steps = [100, 200, 400, 400, 400];
        for (delay, step) in delays.iter().zip(steps) {
            let step = Duration::from_millis(step);
            assert!(
                *delay >= step / 2 && *delay <= step,
                "{delay:?} for step {step:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn reads_wait_well_past_block() {
        assert_eq!(read_timeout(Duration::from_secs(2)), Duration::from_secs(7));
        assert_eq!(
            read_timeout(Duration::from_secs(30)),
            Duration::from_secs(60)
        );
    }
}
