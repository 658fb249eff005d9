//! `sio-relay monitor`: subscribes to the adapter's broadcast channels and prints every packet,
//! decoded (namespace, rooms, except, flags, event, arguments), one line each, as text or JSON.
//! Packets that a server could not decode are shown too, in hex: those are the ones that crash
//! Socket.IO servers, whoever published them.
//!
//! The classic adapter's channels are watched all at once, by pattern (`<key>#*`). Shard channels
//! have no patterns, so for the sharded adapter the monitor subscribes to the channel of each
//! namespace it is given, which every server's broadcasts on it reach (single-room broadcasts of
//! servers in a `dynamic` mode go to room channels, which it does not see). To not be counted as a
//! server there, it also subscribes to a channel of its own (see [`crate::servers`]) and names its
//! connection [`MONITOR_CLIENT_NAME`]. For the streams adapter it reads the servers' stream, as
//! they do, from the moment it starts. python-socketio's servers share one channel for every
//! namespace: the monitor subscribes to it, and to a channel of its own likewise.

use std::io::Write;

use futures_util::StreamExt;

use super::{printable, streams_named};
use crate::config::Config;
use crate::connection;
use crate::exit::{Failure, EXIT_FAILURE};
use crate::fault::LinkError;
use crate::packet::{self, Adapter, Decoded, Target, Unreadable};
use crate::servers::MONITOR_CLIENT_NAME;

/// Packets waiting to be printed.
const QUEUE: usize = 256;

/// Prints packets of `nsps` (every namespace, for the classic adapter) to `out` until `count` were
/// seen (forever when `None`).
pub async fn run(
    cfg: &Config,
    nsps: &[String],
    json: bool,
    count: Option<usize>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let target = cfg.target();
    let unreachable = |e: LinkError| crate::admin::unreachable(cfg, e);
    let (tx, mut packets) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(QUEUE);
    match target.adapter {
        Adapter::Classic => {
            // Classic Pub/Sub reaches every node of a cluster: the stream's node will do.
            let client = connection::client(cfg).await.map_err(unreachable)?;
            let mut pubsub = client.get_async_pubsub().await?;
            // Broadcasts, and the requests of joins, leaves, disconnects and server-side emits.
            let patterns = [
                format!("{}#*", target.key),
                format!("{}*", target.servers_prefix()),
            ];
            pubsub.psubscribe(&patterns).await?;
            eprintln!("monitoring {} (Ctrl-C to stop)", patterns.join(" "));
            tokio::spawn(pubsub_messages(pubsub, tx));
        }
        Adapter::PythonSocketio => {
            let channel = target.namespace_channel("/");
            let own = target
                .monitor_channel("/")
                .expect("a python-socketio target");
            let client = connection::client(cfg).await.map_err(unreachable)?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&[&own, &channel]).await?;
            eprintln!("monitoring {} (Ctrl-C to stop)", printable(&channel));
            tokio::spawn(pubsub_messages(pubsub, tx));
        }
        Adapter::Sharded => {
            let mut channels = Vec::new();
            for nsp in nsps {
                let channel = target.namespace_channel(nsp);
                let own = target.monitor_channel(nsp).expect("a sharded target");
                // A connection per namespace, to the node that serves its channel in a cluster;
                // its two channels share a slot, so one SSUBSCRIBE takes both.
                let client = connection::client_for(cfg, &channel)
                    .await
                    .map_err(unreachable)?;
                let mut con = client.get_connection_with_timeout(cfg.redis.connect_timeout)?;
                redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(MONITOR_CLIENT_NAME)
                    .exec(&mut con)?;
                redis::cmd("SSUBSCRIBE")
                    .arg(&own)
                    .arg(&channel)
                    .exec(&mut con)?;
                channels.push(channel);
                // A thread of its own, not `spawn_blocking`: the runtime would wait for it at exit.
                let tx = tx.clone();
                std::thread::spawn(move || shard_messages(con, tx));
            }
            drop(tx);
            eprintln!(
                "monitoring {} (Ctrl-C to stop)",
                printable(&channels.join(" "))
            );
        }
        Adapter::Streams => {
            // One connection per stream: in a cluster, the servers' streams lie in different slots.
            let streams = target.streams.names();
            for stream in &streams {
                let client = connection::client_for(cfg, stream)
                    .await
                    .map_err(unreachable)?;
                let mut con = client.get_connection_with_timeout(cfg.redis.connect_timeout)?;
                // From the last entry now, not `$` at the first read: what is appended once the
                // monitor says it watches is seen.
                let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                    .arg(stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query(&mut con)?;
                let after = newest
                    .ids
                    .first()
                    .map_or("0-0".to_owned(), |e| e.id.clone());
                let (stream, tx) = (stream.clone(), tx.clone());
                std::thread::spawn(move || stream_entries(con, &stream, after, tx));
            }
            drop(tx);
            eprintln!("monitoring {} (Ctrl-C to stop)", streams_named(&streams));
        }
    }
    let mut seen = 0;
    while count.is_none_or(|n| seen < n) {
        let Some((channel, payload)) = packets.recv().await else {
            return Err(Failure {
                code: EXIT_FAILURE,
                message: "the connection to Redis closed".into(),
            });
        };
        let line = describe(&target, &channel, &payload, json);
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader went away (`sio-relay monitor | head`): a normal end for a tool.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => {
                return Err(Failure {
                    code: EXIT_FAILURE,
                    message: format!("cannot write: {e}"),
                })
            }
        }
        seen += 1;
    }
    Ok(())
}

/// Passes on the messages of a Pub/Sub connection until it closes or nobody wants them any more.
async fn pubsub_messages(
    mut pubsub: redis::aio::PubSub,
    tx: tokio::sync::mpsc::Sender<(String, Vec<u8>)>,
) {
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let packet = (
            message.get_channel_name().to_owned(),
            message.get_payload_bytes().to_vec(),
        );
        if tx.send(packet).await.is_err() {
            break;
        }
    }
}

/// Passes on the messages of a connection in sharded Pub/Sub mode (`smessage`, channel, payload)
/// until it closes or nobody wants them any more. redis-rs reads shard messages off a plain
/// connection only, hence a thread.
fn shard_messages(mut con: redis::Connection, tx: tokio::sync::mpsc::Sender<(String, Vec<u8>)>) {
    while let Ok(reply) = con.recv_response() {
        let Ok((kind, channel, payload)) =
            redis::from_redis_value::<(String, String, Vec<u8>)>(reply)
        else {
            continue; // a subscription's confirmation
        };
        if kind == "smessage" && tx.blocking_send((channel, payload)).is_err() {
            return;
        }
    }
}

/// Passes on the entries appended to the streams adapter's `stream` after the entry `last`, each
/// as the packet that appends it (`<stream> <id>`, and its fields), until the connection fails or
/// nobody wants them any more. A thread, as the servers' own reading: XREAD blocks its connection.
fn stream_entries(
    mut con: redis::Connection,
    stream: &str,
    mut last: String,
    tx: tokio::sync::mpsc::Sender<(String, Vec<u8>)>,
) {
    loop {
        let read: redis::RedisResult<Option<redis::streams::StreamReadReply>> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(5000)
            .arg("STREAMS")
            .arg(stream)
            .arg(&last)
            .query(&mut con);
        let Ok(read) = read else {
            return; // the connection failed: the monitor says so and stops
        };
        for entry in read.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            let fields = entry.map.iter().map(|(name, value)| {
                let value: Vec<u8> = redis::from_redis_value(value.clone()).unwrap_or_default();
                (name.clone().into_bytes(), value)
            });
            let payload = packet::stream_payload(fields);
            if tx
                .blocking_send((format!("{stream} {}", entry.id), payload))
                .is_err()
            {
                return;
            }
            last = entry.id;
        }
    }
}

/// One output line for the packet `payload` seen on `channel`, read as `target`'s servers read it.
pub fn describe(target: &Target, channel: &str, payload: &[u8], json: bool) -> String {
    // The classic adapter's requests (`<key>-request#<nsp>#`) carry their namespace in the
    // channel's name.
    let request_nsp = (target.adapter == Adapter::Classic)
        .then(|| {
            channel
                .strip_prefix(&target.servers_prefix())?
                .strip_suffix('#')
        })
        .flatten();
    let decoded = match request_nsp {
        Some(nsp) => packet::decode_request(payload, target).map(|decoded| Decoded {
            nsp: nsp.to_owned(),
            ..decoded
        }),
        None => packet::decode(payload, target),
    };
    match (decoded, json) {
        (Ok(decoded), true) => {
            serde_json::json!({ "channel": channel, "packet": decoded }).to_string()
        }
        (Ok(decoded), false) => text(channel, &decoded),
        (Err(error), true) => serde_json::json!({
            "channel": channel,
            "error": error.to_string(),
            "hex": packet::hex(payload),
        })
        .to_string(),
        // The servers' own requests to each other (fetchSockets, serverCount's peers...): valid,
        // just not what the relay sends.
        (Err(error @ Unreadable::NotFromTheRelay(_)), false) => {
            format!("{} OTHER ({error})", printable(channel))
        }
        (Err(error), false) => format!(
            "{} UNDECODABLE ({error}) hex={}",
            printable(channel),
            packet::hex(payload)
        ),
    }
}

fn text(channel: &str, p: &Decoded) -> String {
    let list = |items: &[serde_json::Value]| serde_json::Value::from(items.to_vec());
    let selection = format!(
        "{} nsp={} rooms={} except={}",
        printable(channel),
        printable(&p.nsp),
        list(&p.rooms),
        list(&p.except),
    );
    match p.operation {
        "emit" => format!(
            "{selection} flags={} event={} args={}{}",
            serde_json::Value::Object(p.flags.clone()),
            printable(&p.event),
            list(&p.args),
            p.request_id
                .as_ref()
                .map_or_else(String::new, |id| format!(" ack_request={}", printable(id))),
        ),
        "server_emit" => format!(
            "{} nsp={} server_emit={} args={}",
            printable(channel),
            printable(&p.nsp),
            printable(&p.event),
            list(&p.args),
        ),
        "disconnect" => format!("{selection} disconnect close={}", p.close.unwrap_or(false)),
        operation => format!("{selection} {operation}={}", list(&p.target_rooms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Entry;

    #[test]
    fn lines_show_the_packet_or_why_it_is_undecodable() {
        let fields = vec![
            (b"event".to_vec(), b"chat".to_vec()),
            (b"data".to_vec(), br#"{"text":"hi"}"#.to_vec()),
            (b"room".to_vec(), b"lobby".to_vec()),
        ];
        let target = Config::default().target();
        let packet = target.encode(&Entry::parse(&fields).unwrap()).unwrap();
        assert_eq!(
            describe(&target, &packet.channel, &packet.payload, false),
            r#"socket.io#/#lobby# nsp=/ rooms=["lobby"] except=[] flags={} event=chat args=[{"text":"hi"}]"#
        );
        let mut with_ack = fields.clone();
        with_ack.push((b"ack".to_vec(), b"5s".to_vec()));
        let request = target
            .ack_request(&Entry::parse(&with_ack).unwrap(), "sio-relay:n:1-0:1")
            .unwrap();
        assert_eq!(
            describe(&target, &request.channel, &request.payload, false),
            r#"socket.io-request#/# nsp=/ rooms=["lobby"] except=[] flags={} event=chat args=[{"text":"hi"}] ack_request=sio-relay:n:1-0:1"#
        );
        let json: serde_json::Value =
            serde_json::from_str(&describe(&target, &packet.channel, &packet.payload, true))
                .unwrap();
        assert_eq!(json["packet"]["event"], "chat");
        assert_eq!(json["packet"]["rooms"][0], "lobby");

        assert_eq!(
            describe(&target, "socket.io#/#", b"{}", false),
            "socket.io#/# UNDECODABLE (1 trailing bytes after the packet (notepack throws on them)) hex=7b7d"
        );
        let json: serde_json::Value =
            serde_json::from_str(&describe(&target, "socket.io#/#", b"{}", true)).unwrap();
        assert_eq!(json["hex"], "7b7d");
    }

    /// Joins, leaves, disconnects and server-side emits, on the request channel (classic) or the
    /// namespace's (sharded), with the namespace of the classic request taken from its channel.
    #[test]
    fn requests_are_shown_as_their_operation() {
        let line = |target: &Target, pairs: &[(&str, &str)]| {
            let fields: Vec<_> = pairs
                .iter()
                .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            let packet = target.encode(&Entry::parse(&fields).unwrap()).unwrap();
            describe(target, &packet.channel, &packet.payload, false)
        };
        let classic = Config::default().target();
        assert_eq!(
            line(
                &classic,
                &[
                    ("join", r#"["game:7"]"#),
                    ("room", "user:42"),
                    ("nsp", "/admin")
                ]
            ),
            r#"socket.io-request#/admin# nsp=/admin rooms=["user:42"] except=[] join=["game:7"]"#
        );
        assert_eq!(
            line(
                &classic,
                &[("disconnect", "true"), ("all", "true"), ("close", "true")]
            ),
            "socket.io-request#/# nsp=/ rooms=[] except=[] disconnect close=true"
        );
        let sharded = Target {
            adapter: Adapter::Sharded,
            ..classic.clone()
        };
        assert_eq!(
            line(&sharded, &[("server_emit", "flush"), ("data", "1")]),
            "socket.io#/# nsp=/ server_emit=flush args=[1]"
        );
        assert_eq!(
            line(&sharded, &[("leave", "[7]"), ("rooms", r#"["a"]"#)]),
            r#"socket.io#/# nsp=/ rooms=["a"] except=[] leave=[7]"#
        );
        assert_eq!(
            describe(
                &classic,
                "socket.io-request#/#",
                br#"{"type":0,"requestId":"x"}"#,
                false
            ),
            "socket.io-request#/# OTHER (a message of type 0, which the relay never sends)"
        );
    }
}
