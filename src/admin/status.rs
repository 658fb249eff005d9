//! The status report: Redis reachable (and its version), Socket.IO servers listening per namespace,
//! each stream, its group's lag and pending entries, its consumers, and the dead letters. Looking
//! never fails: what cannot be read is a problem in the report.

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamInfoConsumersReply, StreamInfoGroupsReply};
use redis::AsyncCommands;
use serde::Serialize;

use super::{connect, connect_all_nodes};
use crate::config::Config;
use crate::connection::AllNodes;
use crate::delivery::Keys;
use crate::exit::Failure;
use crate::packet::Adapter;
use crate::servers;

/// Why a look stopped short; said in the report as a problem.
#[derive(Debug, thiserror::Error)]
enum LookError {
    #[error("{0}")]
    Connect(Failure),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl From<Failure> for LookError {
    fn from(f: Failure) -> Self {
        LookError::Connect(f)
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub redis: RedisStatus,
    /// The servers' stack the relay publishes for (`target.adapter`), and the channel (python-socketio)
    /// or channel prefix (the Node adapters) it publishes on.
    pub target: TargetStatus,
    /// Socket.IO servers per namespace, as the adapter counts them (`PUBSUB NUMSUB`, or
    /// `SHARDNUMSUB` for the sharded adapter); for python-socketio one row, `*`, the servers on
    /// its channel, for every namespace.
    pub namespaces: Vec<Namespace>,
    /// `source.stream`, or each of `source.streams`.
    pub streams: Vec<StreamStatus>,
    pub healthy: bool,
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RedisStatus {
    pub url: String,
    pub reachable: bool,
    pub version: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TargetStatus {
    pub adapter: &'static str,
    /// The channel (python-socketio) or channel prefix (the Node adapters) its servers listen on.
    pub channel: String,
    /// The streams adapter's streams (one, or `target.stream_count`), which the relay appends to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Namespace {
    pub nsp: String,
    pub servers: u64,
}

#[derive(Debug, Serialize)]
pub struct StreamStatus {
    pub name: String,
    pub length: u64,
    pub group: Option<GroupStatus>,
    pub dead_letter_stream: String,
    pub dead_letters: u64,
}

#[derive(Debug, Serialize)]
pub struct GroupStatus {
    pub name: String,
    /// Entries not yet read by the group; `None` when Redis cannot tell.
    pub lag: Option<u64>,
    pub pending: u64,
    pub consumers: Vec<Consumer>,
    /// Entries delivered that the servers sent to no client, counted by relays with
    /// `delivery.confirm = "clients"`; `None` when no relay counted any.
    pub reached_no_client: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Consumer {
    pub name: String,
    pub pending: u64,
    pub idle_ms: u64,
}

/// Looks at everything; never fails: what cannot be read is reported as a problem.
pub async fn gather(cfg: &Config) -> Status {
    gather_over(cfg, &mut None).await
}

/// The connections a look uses, kept by a caller that looks again and again (the console), so
/// that each look costs its commands and not a connection (and TLS handshake) per Redis.
pub struct Links {
    /// To the Redis that holds the stream (the first partition's, in a cluster).
    main: MultiplexedConnection,
    /// For counting servers on every node.
    all_nodes: AllNodes,
    /// One per partition, to the Redis that holds its stream.
    partitions: Vec<(Config, MultiplexedConnection)>,
}

impl Links {
    async fn open(cfg: &Config) -> Result<Links, LookError> {
        let main = connect(cfg).await?;
        let all_nodes = connect_all_nodes(cfg).await?;
        let mut partitions = Vec::new();
        for partition in cfg.partitions() {
            let con = connect(&partition).await?;
            partitions.push((partition, con));
        }
        Ok(Links {
            main,
            all_nodes,
            partitions,
        })
    }
}

/// [`gather`] over `links`, opened when `None` and dropped after a failure (so that the next look
/// connects again, to wherever the Redis now is).
pub async fn gather_over(cfg: &Config, links: &mut Option<Links>) -> Status {
    let mut status = Status {
        redis: RedisStatus {
            url: cfg.redis.describe(),
            reachable: false,
            version: None,
        },
        target: TargetStatus {
            adapter: cfg.target.adapter.name(),
            channel: cfg.target().key,
            streams: match cfg.target.adapter {
                Adapter::Streams => cfg.target().streams.names(),
                _ => Vec::new(),
            },
        },
        namespaces: Vec::new(),
        streams: Vec::new(),
        healthy: false,
        problems: Vec::new(),
    };
    let looked = match links {
        Some(open) => fill(cfg, open, &mut status).await,
        None => match Links::open(cfg).await {
            Ok(open) => fill(cfg, links.insert(open), &mut status).await,
            Err(problem) => Err(problem),
        },
    };
    if let Err(problem) = looked {
        *links = None;
        status.problems.push(problem.to_string());
    }
    status.healthy = status.problems.is_empty();
    status
}

async fn fill(cfg: &Config, links: &mut Links, status: &mut Status) -> Result<(), LookError> {
    let info: redis::InfoDict = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut links.main)
        .await?;
    status.redis.reachable = true;
    status.redis.version = info.get("redis_version");

    let target = cfg.target();
    let con = &mut links.all_nodes;
    for (nsp, servers) in servers::namespaces(con, &target).await? {
        status.namespaces.push(Namespace { nsp, servers });
    }
    if status.namespaces.iter().all(|n| n.servers == 0) {
        let mut hint = String::new();
        'look: for other in target.other_setups() {
            let others = servers::namespaces(con, &other).await?;
            for (nsp, _) in others.iter().filter(|(_, servers)| *servers > 0) {
                if let Some(other) = servers::other_adapter(con, &target, nsp).await? {
                    hint = format!(": {other}");
                    break 'look;
                }
            }
        }
        let counted_on = match target.servers_per_namespace() {
            true => format!("{}<nsp>#", target.servers_prefix()),
            false => format!(
                "{}; python-socketio servers subscribe once their first client connects",
                target.servers_prefix()
            ),
        };
        status.problems.push(format!(
            "no Socket.IO server listens (no subscriber on {counted_on}): entries wait{hint}"
        ));
    }

    for (partition, con) in &mut links.partitions {
        let stream = look_at_stream(partition, con, &mut status.problems).await?;
        status.streams.push(stream);
    }
    Ok(())
}

/// The stream of `cfg`, its group and its dead letters, on the Redis that holds them.
async fn look_at_stream(
    cfg: &Config,
    con: &mut MultiplexedConnection,
    problems: &mut Vec<String>,
) -> Result<StreamStatus, LookError> {
    let stream = &cfg.source.stream;
    let length: u64 = con.xlen(stream).await?;
    let groups: Option<StreamInfoGroupsReply> = match con.xinfo_groups(stream).await {
        Ok(groups) => Some(groups),
        Err(e) if e.to_string().contains("no such key") => None,
        Err(e) => return Err(e.into()),
    };
    let group = groups
        .into_iter()
        .flat_map(|g| g.groups)
        .find(|g| g.name == cfg.source.group);
    let group = match group {
        Some(group) => {
            let consumers: StreamInfoConsumersReply =
                con.xinfo_consumers(stream, &cfg.source.group).await?;
            let reached_no_client: Option<u64> =
                con.hget(Keys::new(cfg).stats, "reached_no_client").await?;
            Some(GroupStatus {
                reached_no_client,
                name: group.name,
                lag: group.lag.map(|l| l as u64),
                pending: group.pending as u64,
                consumers: consumers
                    .consumers
                    .into_iter()
                    .map(|c| Consumer {
                        name: c.name,
                        pending: c.pending as u64,
                        idle_ms: c.idle as u64,
                    })
                    .collect(),
            })
        }
        None => {
            problems.push(format!(
                "consumer group {} does not exist on stream {stream}: no relay has started yet",
                cfg.source.group
            ));
            None
        }
    };
    Ok(StreamStatus {
        name: stream.clone(),
        length,
        group,
        dead_letter_stream: cfg.dead_letter.stream.clone(),
        dead_letters: con.xlen(&cfg.dead_letter.stream).await?,
    })
}
