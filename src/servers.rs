//! Counting Socket.IO servers as their adapter's own `serverCount()` does, from outside the delivery
//! script: for namespaces with held entries, for `status` and `send --direct`, and, in a cluster,
//! around every batch (a script sees one node only; redis-rs sums PUBSUB NUMSUB and SHARDNUMSUB
//! over every node).
//!
//! The classic adapter's servers are the subscribers of `<key>-request#<nsp>#`, which nothing but a
//! server subscribes to; the sharded adapter's, the subscribers of the namespace channel
//! `<key>#<nsp>#`, minus the `sio-relay monitor`s that watch it (they also subscribe to a channel
//! of their own, [`Target::monitor_channel`]); the streams adapter's, the subscribers of that same
//! channel by SUBSCRIBE (NUMSUB), or by SSUBSCRIBE with `useShardedPubSub` (SHARDNUMSUB). python-socketio's servers are the subscribers of its one
//! channel, minus the monitors likewise, the same count for every namespace (and only servers
//! with a client: they subscribe when their first one connects). The same rule is in
//! `lua/servers.lua`.

use std::collections::HashMap;

use redis::aio::ConnectionLike;
use redis::RedisResult;

use crate::packet::Target;

/// The client name of a `sio-relay monitor`'s connection: flow control leaves it out.
pub const MONITOR_CLIENT_NAME: &str = "sio-relay-monitor";

/// Namespaces per PUBSUB call.
const CHUNK: usize = 500;

/// The servers listening on each of `nsps`, in order.
pub async fn count(
    con: &mut (impl ConnectionLike + Send),
    target: &Target,
    nsps: &[String],
) -> RedisResult<Vec<u64>> {
    let mut counts = Vec::with_capacity(nsps.len());
    for chunk in nsps.chunks(CHUNK) {
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg(target.servers_command());
        for nsp in chunk {
            cmd.arg(target.servers_channel(nsp));
        }
        for nsp in chunk {
            if let Some(monitor) = target.monitor_channel(nsp) {
                cmd.arg(monitor);
            }
        }
        // By name: a cluster's answers, merged over its nodes, come in no particular order.
        let replies: Vec<(String, u64)> = cmd.query_async(con).await?;
        let subscribers: HashMap<String, u64> = replies.into_iter().collect();
        let of = |channel: &str| subscribers.get(channel).copied().unwrap_or(0);
        counts.extend(chunk.iter().map(|nsp| {
            let monitors = target.monitor_channel(nsp).map_or(0, |m| of(&m));
            of(&target.servers_channel(nsp)).saturating_sub(monitors)
        }));
    }
    Ok(counts)
}

/// The servers listening on each distinct namespace of `nsps`, by name.
pub async fn count_each<'a>(
    con: &mut (impl ConnectionLike + Send),
    target: &Target,
    nsps: impl IntoIterator<Item = &'a str>,
) -> RedisResult<Vec<(String, u64)>> {
    let mut unique: Vec<String> = nsps.into_iter().map(str::to_owned).collect();
    unique.sort();
    unique.dedup();
    let counts = count(con, target, &unique).await?;
    Ok(unique.into_iter().zip(counts).collect())
}

/// When no server of `target`'s adapter listens on `nsp`: whether servers of another setup do,
/// said so that the operator knows which `target.adapter` (and options) they need.
pub async fn other_adapter(
    con: &mut (impl ConnectionLike + Send),
    target: &Target,
    nsp: &str,
) -> RedisResult<Option<String>> {
    for other in target.other_setups() {
        let servers = count(con, &other, &[nsp.to_owned()]).await?[0];
        if servers > 0 {
            let (name, (how, settings)) = (other.adapter.name(), other.setup());
            return Ok(Some(format!(
                "{servers} Socket.IO server(s) listen on namespace {nsp:?} with the {name} adapter ({how}), which this relay does not publish to: set {settings}"
            )));
        }
    }
    Ok(None)
}

/// What [`namespaces`] names python-socketio's one row: its servers, for every namespace.
pub const EVERY_NAMESPACE: &str = "*";

/// Every namespace some server of `target`'s adapter listens on, with its servers, by name; for
/// python-socketio, whose channel tells no namespace, one row [`EVERY_NAMESPACE`] (none without
/// servers).
pub async fn namespaces(
    con: &mut (impl ConnectionLike + Send),
    target: &Target,
) -> RedisResult<Vec<(String, u64)>> {
    if !target.servers_per_namespace() {
        let servers = count(con, target, &[EVERY_NAMESPACE.to_owned()]).await?[0];
        return Ok((servers > 0)
            .then(|| (EVERY_NAMESPACE.to_owned(), servers))
            .into_iter()
            .collect());
    }
    let prefix = target.servers_prefix();
    let list = match target.sharded_pubsub() {
        true => "SHARDCHANNELS",
        false => "CHANNELS",
    };
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg(list)
        .arg(format!("{prefix}*"))
        .query_async(con)
        .await?;
    // `<prefix><nsp>#`; a sharded server's room and response channels go on after the `#`.
    let mut nsps: Vec<String> = channels
        .iter()
        .filter_map(|channel| channel.strip_prefix(&prefix)?.strip_suffix('#'))
        .filter(|nsp| !nsp.contains('#'))
        .map(str::to_owned)
        .collect();
    nsps.sort();
    nsps.dedup();
    let counts = count(con, target, &nsps).await?;
    Ok(nsps.into_iter().zip(counts).collect())
}
