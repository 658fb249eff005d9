//! The servers' answers to a broadcast with acknowledgements: listening for them, and reading them.
//!
//! Each server that receives the relay's request answers once with how many of its sockets it sent
//! the event to, then once per client that acknowledges (docs/08-internals/wire-format.md,
//! "Broadcasts with acknowledgements"). The classic adapter
//! answers on `<key>-response#<nsp>#`, or on `<key>-response#<nsp>#<uid>#` where a server sets
//! `publishOnSpecificResponseChannel`: one pattern subscription, `<key>-response#*`, hears both
//! for every namespace. The relay must never subscribe to the request channel itself, where every
//! subscriber is counted as a server. The sharded adapter answers on the requester's own channel,
//! `<key>#<nsp>#<uid>#`, which sharded Pub/Sub can only subscribe to by name, one per namespace.
//!
//! Other requests' answers (the servers' own `fetchSockets`, their acks) share those channels:
//! only those whose `requestId` this relay made are passed on. Listening belongs to a session: a
//! lost link drops it, and the answers lost meanwhile only make the entries waiting for them wait
//! their timeout and be sent again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use redis::RedisResult;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::connection;
use crate::entry::BINARY_KEY;
use crate::fault::Fault;
use crate::packet::{self, Adapter, Target};

/// Answers waiting for the relay loop; when it falls this far behind, later ones are dropped and
/// the entries they were for wait their timeout and are sent again.
const QUEUE: usize = 10_000;

/// The classic adapter's reply types (`RequestType` in its `lib/index.ts`).
const BROADCAST_CLIENT_COUNT: u64 = 8;
const BROADCAST_ACK: u64 = 9;
/// The sharded adapter's (socket.io-adapter's `MessageType`).
const CLUSTER_BROADCAST_CLIENT_COUNT: u64 = 11;
const CLUSTER_BROADCAST_ACK: u64 = 12;

/// What one server said about one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// How many of its sockets the server sent the event to.
    Count(u64),
    /// One client acknowledged.
    Ack(Acked),
}

/// A client's acknowledgement, with as much of its `ack()`'s first argument as the relay keeps.
#[derive(Clone, Debug, PartialEq)]
pub enum Acked {
    /// `ack()` without an argument.
    Nothing,
    /// The argument; bytes are written `{"$binary": "<base64>"}`, as producers write them.
    With(Value),
    /// An argument nested deeper than serde_json reads (128 levels, which keeps its recursion
    /// within the stack): a client chose it, and its acknowledgement counts all the same; the
    /// argument is not kept.
    TooDeep,
}

/// An answer, with the request it is for and when it arrived.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub request_id: String,
    pub answer: Answer,
    pub at: Instant,
}

/// Reads a payload from a response channel as an answer to a broadcast with acknowledgements;
/// `None` for anything else (other requests' answers, what no server would send).
pub fn decode(adapter: Adapter, payload: &[u8]) -> Option<(String, Answer)> {
    let kinds = match adapter {
        Adapter::Classic => Kinds {
            count: BROADCAST_CLIENT_COUNT,
            ack: BROADCAST_ACK,
        },
        Adapter::Sharded | Adapter::Streams => Kinds {
            count: CLUSTER_BROADCAST_CLIENT_COUNT,
            ack: CLUSTER_BROADCAST_ACK,
        },
        // Its servers answer nothing the relay asks (see `Listener::listen`).
        Adapter::PythonSocketio => return None,
    };
    let value = if payload.first() == Some(&b'{') {
        match serde_json::from_slice(payload) {
            Ok(value) => value,
            Err(_) => return envelope(adapter, payload, kinds),
        }
    } else {
        let mut reader = payload;
        packet::msgpack_to_json(&rmpv::decode::read_value(&mut reader).ok()?, &binary)
    };
    let kind = value.get("type")?.as_u64()?;
    let body = match adapter {
        Adapter::Classic => &value,
        _ => value.get("data")?,
    };
    let request_id = body.get("requestId")?.as_str()?.to_owned();
    let answer = if kind == kinds.count {
        Answer::Count(body.get("clientCount")?.as_u64()?)
    } else if kind == kinds.ack {
        // notepack 2 (adapter 7.x) writes `ack()` without argument as `undefined`: no value.
        Answer::Ack(match body.get("packet").filter(|v| !is_undefined(v)) {
            Some(argument) => Acked::With(argument.clone()),
            None => Acked::Nothing,
        })
    } else {
        return None;
    };
    Some((request_id, answer))
}

/// The reply types of an adapter's answers.
#[derive(Clone, Copy)]
struct Kinds {
    count: u64,
    ack: u64,
}

/// A JSON answer serde_json could not read whole (or no answer at all), read again without the
/// client's argument, which serde_json skips without recursing, however deep: an acknowledgement
/// whose argument is nested too deep to read still counts ([`Acked::TooDeep`]).
fn envelope(adapter: Adapter, payload: &[u8], kinds: Kinds) -> Option<(String, Answer)> {
    use serde::de::IgnoredAny;
    /// An answer's body: the classic adapter's whole answer (with its `type`), the others' `data`.
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "type")]
        kind: Option<u64>,
        #[serde(rename = "requestId")]
        request_id: String,
        #[serde(rename = "clientCount")]
        client_count: Option<u64>,
        packet: Option<IgnoredAny>,
    }
    /// The sharded and the streams adapters' answer: the body in `data`.
    #[derive(serde::Deserialize)]
    struct Cluster {
        #[serde(rename = "type")]
        kind: u64,
        data: Body,
    }
    let (kind, body) = match adapter {
        Adapter::Classic => {
            let body: Body = serde_json::from_slice(payload).ok()?;
            (body.kind?, body)
        }
        _ => {
            let answer: Cluster = serde_json::from_slice(payload).ok()?;
            (answer.kind, answer.data)
        }
    };
    let answer = if kind == kinds.count {
        Answer::Count(body.client_count?)
    } else if kind == kinds.ack {
        Answer::Ack(match body.packet {
            Some(_) => Acked::TooDeep,
            None => Acked::Nothing,
        })
    } else {
        return None;
    };
    Some((body.request_id, answer))
}

/// notepack 2's `undefined`: the extension type 0 with one zero byte.
fn is_undefined(value: &Value) -> bool {
    value.get("$ext") == Some(&Value::from(0)) && value.get("data") == Some(&Value::from("00"))
}

/// Bytes in an answer, as producers write them: `{"$binary": "<base64>"}`.
fn binary(bytes: &[u8]) -> Value {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    Value::Object(Map::from_iter([(
        BINARY_KEY.to_owned(),
        Value::String(text),
    )]))
}

/// The subscriptions of one session, and the answers they heard for this relay's requests.
pub struct Listener {
    target: Target,
    /// Only answers to request IDs that start with this are passed on.
    prefix: String,
    tx: mpsc::Sender<Reply>,
    rx: mpsc::Receiver<Reply>,
    /// The classic adapter's one pattern subscription.
    classic: Option<JoinHandle<()>>,
    /// The sharded adapter's subscriptions, by namespace: set to stop their threads.
    sharded: HashMap<String, Arc<AtomicBool>>,
    /// Answers dropped because the loop fell [`QUEUE`] behind.
    dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Told of every answer passed on, so that the loop does not sleep through it.
    heard: Arc<Notify>,
}

impl Listener {
    pub fn new(target: Target, prefix: String) -> Listener {
        let (tx, rx) = mpsc::channel(QUEUE);
        Listener {
            target,
            prefix,
            tx,
            rx,
            classic: None,
            sharded: HashMap::new(),
            dropped: Default::default(),
            heard: Default::default(),
        }
    }

    /// Resolves once an answer was passed on since the last time it resolved (at once if one was
    /// meanwhile); borrows nothing, so the loop can wait on it beside its connections.
    pub fn heard(&self) -> impl std::future::Future<Output = ()> + 'static {
        let heard = self.heard.clone();
        async move { heard.notified().await }
    }

    /// Makes sure the answers to a request on `nsp` will be heard: subscribes, and waits for the
    /// subscription to be confirmed, before the request is sent. A subscription whose connection
    /// closed is made again.
    pub async fn listen(&mut self, cfg: &Config, nsp: &str) -> Result<(), Fault> {
        match self.target.adapter {
            Adapter::Classic => {
                if self
                    .classic
                    .as_ref()
                    .is_some_and(|task| !task.is_finished())
                {
                    return Ok(());
                }
                // Classic Pub/Sub reaches every node of a cluster: the stream's node will do.
                let client = connection::client(cfg).await?;
                let mut pubsub = client.get_async_pubsub().await?;
                let (_, pattern) = self.target.answers_subscription(nsp);
                pubsub.psubscribe(pattern).await?;
                let forward = self.forwarder();
                self.classic = Some(tokio::spawn(async move {
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        if !forward.pass(message.get_payload_bytes()) {
                            break;
                        }
                    }
                }));
            }
            // The relay asks these servers nothing (the configuration allows only
            // delivery.confirm = "published", and entries with `ack` are dead-lettered): nothing
            // to hear.
            Adapter::Streams | Adapter::PythonSocketio => {}
            Adapter::Sharded => {
                if self
                    .sharded
                    .get(nsp)
                    .is_some_and(|stop| !stop.load(Ordering::Relaxed))
                {
                    return Ok(());
                }
                let (_, channel) = self.target.answers_subscription(nsp);
                let client = connection::client_for(cfg, &channel).await?;
                let timeout = cfg.redis.connect_timeout;
                let con = tokio::task::spawn_blocking(move || -> RedisResult<_> {
                    let mut con = client.get_connection_with_timeout(timeout)?;
                    redis::cmd("SSUBSCRIBE").arg(&channel).exec(&mut con)?;
                    Ok(con)
                })
                .await
                .map_err(|e| Fault::bug(format!("the subscription task failed: {e}")))??;
                let stop = Arc::new(AtomicBool::new(false));
                self.sharded.insert(nsp.to_owned(), stop.clone());
                let forward = self.forwarder();
                // A thread of its own: redis-rs reads shard messages off a plain connection only.
                std::thread::spawn(move || shard_messages(con, forward, &stop));
            }
        }
        Ok(())
    }

    /// Every answer heard since the last call.
    pub fn drain(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        while let Ok(reply) = self.rx.try_recv() {
            replies.push(reply);
        }
        replies
    }

    /// How many answers were dropped since the last call because the loop fell behind.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    fn forwarder(&self) -> Forward {
        Forward {
            adapter: self.target.adapter,
            prefix: self.prefix.clone(),
            tx: self.tx.clone(),
            dropped: self.dropped.clone(),
            heard: self.heard.clone(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self.classic.take() {
            task.abort();
        }
        for stop in self.sharded.values() {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Passes this relay's answers on to the loop.
struct Forward {
    adapter: Adapter,
    prefix: String,
    tx: mpsc::Sender<Reply>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    heard: Arc<Notify>,
}

impl Forward {
    /// False once nobody listens any more.
    fn pass(&self, payload: &[u8]) -> bool {
        let Some((request_id, answer)) = decode(self.adapter, payload) else {
            return true;
        };
        if !request_id.starts_with(&self.prefix) {
            return true;
        }
        let reply = Reply {
            request_id,
            answer,
            at: Instant::now(),
        };
        match self.tx.try_send(reply) {
            Ok(()) => {
                self.heard.notify_one();
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Reads a connection in sharded Pub/Sub mode (`smessage`, channel, payload) until it fails, or
/// until a message comes after `stop` was set (no read timeout: redis-rs would then skip the next
/// message as a late reply); sets `stop` when it ends, so that the next request subscribes again.
fn shard_messages(mut con: redis::Connection, forward: Forward, stop: &AtomicBool) {
    while let Ok(reply) = con.recv_response() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok((kind, _channel, payload)) =
            redis::from_redis_value::<(String, String, Vec<u8>)>(reply)
        else {
            continue; // a subscription's confirmation
        };
        if kind == "smessage" && !forward.pass(&payload) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The replies captured from live servers, as docs/08-internals/wire-format.md ("Broadcasts
    /// with acknowledgements") gives them.
    #[test]
    fn reads_the_answers_servers_sent() {
        let classic = |payload: &[u8]| decode(Adapter::Classic, payload);
        assert_eq!(
            classic(br#"{"type":8,"requestId":"r2-req","clientCount":3}"#),
            Some(("r2-req".into(), Answer::Count(3)))
        );
        let ack = hex("83a47479706509a9726571756573744964a672322d726571a67061636b657482a47365656ec3a377686fa26131");
        assert_eq!(
            classic(&ack),
            Some((
                "r2-req".into(),
                Answer::Ack(Acked::With(serde_json::json!({"seen": true, "who": "a1"})))
            ))
        );
        let no_value = hex("82a47479706509a9726571756573744964a672322d726571");
        assert_eq!(
            classic(&no_value),
            Some(("r2-req".into(), Answer::Ack(Acked::Nothing)))
        );
        let undefined = hex("83a47479706509a9726571756573744964a26f31a67061636b6574d40000");
        assert_eq!(
            classic(&undefined),
            Some(("o1".into(), Answer::Ack(Acked::Nothing)))
        );
        let bytes =
            hex("83a47479706509a9726571756573744964a672322d726571a67061636b6574c404deadbeef");
        assert_eq!(
            classic(&bytes),
            Some((
                "r2-req".into(),
                Answer::Ack(Acked::With(serde_json::json!({"$binary": "3q2+7w=="})))
            ))
        );
        let sharded = |payload: &[u8]| decode(Adapter::Sharded, payload);
        assert_eq!(
            sharded(br#"{"type":11,"data":{"requestId":"sr1","clientCount":3},"uid":"bf10aded24816047","nsp":"/"}"#),
            Some(("sr1".into(), Answer::Count(3)))
        );
        assert_eq!(
            sharded(
                br#"{"type":12,"data":{"requestId":"sr1"},"uid":"bf10aded24816047","nsp":"/"}"#
            ),
            Some(("sr1".into(), Answer::Ack(Acked::Nothing)))
        );
        let sharded_bytes = hex("84a4747970650ca46461746182a9726571756573744964a3737231a67061636b6574c404deadbeefa3756964b062663130616465643234383136303437a36e7370a12f");
        assert_eq!(
            sharded(&sharded_bytes),
            Some((
                "sr1".into(),
                Answer::Ack(Acked::With(serde_json::json!({"$binary": "3q2+7w=="})))
            ))
        );
    }

    /// A client may acknowledge with an argument nested deeper than serde_json reads: the
    /// acknowledgement is read all the same, without the argument.
    #[test]
    fn an_argument_too_deep_to_read_still_acknowledges() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(
            serde_json::from_str::<Value>(&deep).is_err(),
            "past serde_json's depth"
        );
        let classic = format!(r#"{{"type":9,"requestId":"r1","packet":{deep}}}"#);
        assert_eq!(
            decode(Adapter::Classic, classic.as_bytes()),
            Some(("r1".into(), Answer::Ack(Acked::TooDeep)))
        );
        let sharded = format!(
            r#"{{"type":12,"data":{{"requestId":"sr1","packet":{deep}}},"uid":"u","nsp":"/"}}"#
        );
        assert_eq!(
            decode(Adapter::Sharded, sharded.as_bytes()),
            Some(("sr1".into(), Answer::Ack(Acked::TooDeep)))
        );
        // Not an answer, however deep: still nothing.
        let other = format!(r#"{{"type":5,"requestId":"r1","sockets":{deep}}}"#);
        assert_eq!(decode(Adapter::Classic, other.as_bytes()), None);
        let broken = format!(r#"{{"type":9,"requestId":"r1","packet":{deep}"#);
        assert_eq!(decode(Adapter::Classic, broken.as_bytes()), None);
    }

    #[test]
    fn ignores_what_is_not_an_answer_to_a_broadcast_with_acks() {
        for payload in [
            &br#"{"type":8,"clientCount":3}"#[..],
            br#"{"type":8,"requestId":"r","clientCount":-1}"#,
            br#"{"type":5,"requestId":"r","sockets":[]}"#,
            br#"{"type":"8","requestId":"r","clientCount":1}"#,
            b"{not json",
            b"",
            b"\x93\x01\x02\x03",
        ] {
            assert_eq!(decode(Adapter::Classic, payload), None, "{payload:?}");
        }
        assert_eq!(
            decode(
                Adapter::Sharded,
                br#"{"type":8,"requestId":"r","clientCount":1}"#
            ),
            None
        );
    }
}
