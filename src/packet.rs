//! Packet encoding: a validated [`Entry`] becomes the channel and bytes that the servers' adapter
//! reads for the same emit, in the format of the adapter the servers use (`target.adapter`).
//!
//! - The classic adapter (`createAdapter`) with its default parser: MessagePack
//!   `[uid, {type: 2, data: [event, ...args], nsp}, {rooms, flags, except}]`, written with the same
//!   marker choices as notepack.io 3 (the adapter's codec), key for key in the emitter's order, so the
//!   bytes match `@socket.io/redis-emitter` 5.x (docs/08-internals/wire-format.md: "Layout of a
//!   broadcast", "Captured bytes", "MessagePack as notepack.io writes and reads it"). It is written
//!   with `rmp` directly: one pass into one buffer, no intermediate value tree.
//! - The classic adapter with a JSON parser (`parser: { encode: JSON.stringify, decode: JSON.parse }`):
//!   the same array as JSON text.
//! - The sharded adapter (`createShardedAdapter`): the JSON `ClusterMessage`
//!   `{uid, nsp, type: 3, data: {packet, opts}}` its servers send each other, published with
//!   SPUBLISH (docs/08-internals/wire-format.md, "The sharded adapter").
//! - python-socketio's Redis manager (`RedisManager`, `AsyncRedisManager`, Flask-SocketIO's
//!   `message_queue`): the JSON message `{method, event, data, namespace, room, skip_sid, ...}` its
//!   servers publish to each other on one channel (docs/08-internals/wire-format.md,
//!   "python-socketio"). What it has no message for is [`Unsupported`].
//!
//! - The streams adapter (`@socket.io/redis-streams-adapter`): an entry of the servers' own stream,
//!   `uid nsp type data`, whose `data` is the sharded adapter's (`streams.rs`).
//!
//! This module picks the format and the channel; each format is written in a module of its own:
//! `classic.rs` (the classic adapter's broadcasts and requests), `cluster.rs` (the sharded
//! adapter's `ClusterMessage`, whose `data` the streams adapter keeps too), `streams.rs` (the
//! streams adapter's entries) and `python.rs` (python-socketio's messages), with `msgpack.rs`
//! writing MessagePack as notepack.io does. [`decode`] reads any of them back, for `sio-relay
//! monitor`, and says why when a payload is not one a server can read (`decode.rs`).

use serde::{Deserialize, Serialize};

use crate::entry::{Entry, Malformed, Message, Operation, Room};

mod classic;
mod cluster;

mod streams;
pub use streams::{decode_entry, stream_payload, StreamsOptions, MAX_STREAM_COUNT};

mod python;

mod decode;
pub use decode::{decode, decode_request, hex, msgpack_to_json, Decoded, Unreadable};

mod msgpack;
use msgpack::{array_len, map_len, str, write_event, write_opts, write_packet};

/// Socket.IO's EVENT packet type. Always 2, even for binary arguments: the receiving server converts.
const EVENT: u8 = 2;

/// The room and event of [`Target::confirm_request`]: a room name no socket has (not 20
/// characters, so never a socket's own room), in the relay's own `sio-relay:` namespace of names.
pub const CONFIRM_ROOM: &str = "sio-relay:confirm";
const CONFIRM_EVENT: &str = "sio-relay:confirm";

/// Which Redis adapter the Socket.IO servers use.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Adapter {
    /// `createAdapter`: Pub/Sub (PUBLISH, PSUBSCRIBE).
    #[default]
    Classic,
    /// `createShardedAdapter`: sharded Pub/Sub (SPUBLISH, SSUBSCRIBE), Redis 7 and later.
    Sharded,
    /// `@socket.io/redis-streams-adapter`: entries appended to the servers' own stream (XADD),
    /// which every server reads with XREAD (see [`streams`]).
    Streams,
    /// python-socketio's `RedisManager` / `AsyncRedisManager` (5.15.1 and later): JSON on one
    /// plain channel (PUBLISH, SUBSCRIBE), whatever the namespace.
    #[serde(rename = "python-socketio")]
    PythonSocketio,
}

impl Adapter {
    /// The adapters of Node servers, which share the channel prefix `target.key`: servers of one
    /// can be found when the relay is set up for another.
    pub const NODE: [Adapter; 3] = [Adapter::Classic, Adapter::Sharded, Adapter::Streams];

    /// As `target.adapter` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Adapter::Classic => "classic",
            Adapter::Sharded => "sharded",
            Adapter::Streams => "streams",
            Adapter::PythonSocketio => "python-socketio",
        }
    }

    /// How its servers are set up and listen, for the operator who must tell them apart.
    pub fn servers_setup(self) -> &'static str {
        match self {
            Adapter::Classic => "createAdapter, PSUBSCRIBE",
            Adapter::Sharded => "createShardedAdapter, SSUBSCRIBE",
            Adapter::Streams => "@socket.io/redis-streams-adapter, XREAD",
            Adapter::PythonSocketio => "python-socketio's RedisManager, SUBSCRIBE",
        }
    }
}

/// The classic adapter's `parser` option.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Parser {
    /// notepack.io, the adapter's default.
    #[default]
    Msgpack,
    /// `{ encode: JSON.stringify, decode: JSON.parse }`.
    Json,
}

/// The sharded adapter's `subscriptionMode` option: which room channels its servers subscribe to.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriptionMode {
    /// A channel per public room (not the rooms named after a socket id); the adapter's default.
    #[default]
    Dynamic,
    /// A channel per room, private ones included.
    DynamicPrivate,
    /// No room channels: everything goes through the namespace's channel.
    Static,
}

/// Where and how packets are published: must match the servers' adapter and its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Channel prefix: the classic adapter's `key`, the sharded adapter's `channelPrefix`;
    /// `socket.io` unless the servers set another. For python-socketio, the channel itself
    /// (`target.channel`, `socketio` unless the servers set another).
    pub key: String,
    /// Sender id in the packet; servers drop packets carrying their own uid, so it must never be a
    /// server's (6 characters for the classic adapter, 16 for the sharded one, a 32-digit hex
    /// `host_id` for python-socketio).
    pub uid: String,
    pub adapter: Adapter,
    /// The classic adapter's parser.
    pub parser: Parser,
    /// The streams adapter's options: where it appends, and how its servers are counted.
    pub streams: StreamsOptions,
}

/// What the target's servers have no message for (dead-lettered as `unsupported`): valid entries
/// their stack cannot carry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("python-socketio has no server-side emit (`server_emit`)")]
    ServerEmit,
    #[error("python-socketio's Redis manager cannot carry the clients' acknowledgements of an emit from outside (`ack`, acks.default)")]
    Acks,
    #[error("python-socketio sends an emit whose only argument is null with no argument at all: send it as `args '[null, ...]'` with another argument, or without it")]
    OnlyNull,
    #[error("python-socketio's {0} acts on one socket, named by its sid: give `room <sid>`, without `rooms`, `except` or `all`{1}")]
    Selection(&'static str, &'static str),
    #[error(
        "python-socketio's {operation} takes one room per message, not {rooms}: one entry per room"
    )]
    Rooms {
        operation: &'static str,
        rooms: usize,
    },
    #[error("python-socketio's disconnect only leaves the namespace: it cannot close the connection (`close true`)")]
    Close,
    #[error("the relay cannot ask the streams adapter's servers for their clients' acknowledgements (`ack`, acks.default): send it without `ack`")]
    StreamsAcks,
}

/// Why an entry cannot go to the target's servers: dead-lettered with the reason it names (`malformed`
/// or `unsupported`, see [`crate::dead_letter::Reason`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Unsendable {
    /// Bytes through a JSON parser: the producers' contract says so (`malformed`).
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// Valid, but the servers' stack has no message for it (`unsupported`).
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
}

/// One encoded Socket.IO broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub channel: String,
    pub payload: Vec<u8>,
}

impl Target {
    /// A target for the classic adapter's defaults: MessagePack, `socket.io`, `emitter`.
    pub fn classic(key: &str, uid: &str) -> Target {
        Target {
            key: key.to_owned(),
            uid: uid.to_owned(),
            adapter: Adapter::Classic,
            parser: Parser::Msgpack,
            streams: StreamsOptions::default(),
        }
    }

    /// One target per wire format (classic MessagePack, classic JSON, sharded, streams), for
    /// checks that must hold whatever the servers run: the fuzzers'.
    pub fn every_format(key: &str, uid: &str) -> [Target; 4] {
        let classic = Target::classic(key, uid);
        [
            Target {
                parser: Parser::Json,
                ..classic.clone()
            },
            Target {
                adapter: Adapter::Sharded,
                ..classic.clone()
            },
            Target {
                adapter: Adapter::Streams,
                ..classic.clone()
            },
            classic,
        ]
    }

    /// The channel every server of `nsp` listens on: through its `<key>#<nsp>#*` pattern (classic),
    /// or subscribed to as it is (sharded, in every subscription mode; python-socketio's one
    /// channel, for every namespace).
    pub fn namespace_channel(&self, nsp: &str) -> String {
        match self.adapter {
            Adapter::PythonSocketio => self.key.clone(),
            Adapter::Classic | Adapter::Sharded | Adapter::Streams => {
                format!("{}#{}#", self.key, nsp)
            }
        }
    }

    /// Where the servers of `nsp` take what the relay sends them: the namespace's channel, or the
    /// streams adapter's stream.
    pub fn destination(&self, nsp: &str) -> String {
        match self.adapter {
            Adapter::Streams => self.streams.stream_of(nsp),
            Adapter::Classic | Adapter::Sharded | Adapter::PythonSocketio => {
                self.namespace_channel(nsp)
            }
        }
    }

    /// PUBLISH, SPUBLISH, or XADD (whose arguments after the key are the packet's payload, see
    /// [`Target::send`]).
    pub fn publish_command(&self) -> &'static str {
        match self.adapter {
            Adapter::Classic | Adapter::PythonSocketio => "PUBLISH",
            Adapter::Sharded => "SPUBLISH",
            Adapter::Streams => "XADD",
        }
    }

    /// The command that hands `packet` to the servers: PUBLISH or SPUBLISH of its payload on its
    /// channel, or XADD of the entry it encodes to the servers' stream.
    pub fn send(&self, packet: &Packet) -> redis::Cmd {
        let mut cmd = redis::cmd(self.publish_command());
        cmd.arg(&packet.channel);
        match self.adapter {
            Adapter::Streams => {
                for arg in streams::xadd_args(&packet.payload) {
                    cmd.arg(arg);
                }
            }
            Adapter::Classic | Adapter::Sharded | Adapter::PythonSocketio => {
                cmd.arg(&packet.payload);
            }
        }
        cmd
    }

    /// How servers are counted, as their adapter's `serverCount()` does: PUBSUB `<command>` of
    /// `<servers prefix><nsp>#`. The classic adapter's servers subscribe to `<key>-request#<nsp>#`
    /// (and nothing else does, unlike the broadcast patterns a monitor subscribes to); the sharded
    /// adapter's to the namespace channel itself, and so do the streams adapter's (with SUBSCRIBE:
    /// they hear each other's ephemeral messages there; the classic adapter's servers only
    /// PSUBSCRIBE to that name, which NUMSUB does not count).
    ///
    /// python-socketio's servers all subscribe to the one channel, whatever their namespaces, and
    /// only once their first client has connected: its subscribers are the servers that have
    /// clients, counted alike for every namespace ([`Target::servers_per_namespace`] is false).
    pub fn servers_command(&self) -> &'static str {
        match self.sharded_pubsub() {
            true => "SHARDNUMSUB",
            false => "NUMSUB",
        }
    }

    /// Whether the servers listen with sharded Pub/Sub (SSUBSCRIBE): the sharded adapter's, and the
    /// streams adapter's with `useShardedPubSub`.
    pub fn sharded_pubsub(&self) -> bool {
        match self.adapter {
            Adapter::Sharded => true,
            Adapter::Streams => self.streams.sharded_pubsub,
            Adapter::Classic | Adapter::PythonSocketio => false,
        }
    }

    /// See [`Target::servers_command`]: python-socketio's channel itself.
    pub fn servers_prefix(&self) -> String {
        match self.adapter {
            Adapter::Classic => format!("{}-request#", self.key),
            Adapter::Sharded | Adapter::Streams => format!("{}#", self.key),
            Adapter::PythonSocketio => self.key.clone(),
        }
    }

    /// Whether each namespace has a servers channel of its own, `<servers prefix><nsp>#`; if not,
    /// the servers prefix is the one channel of every namespace (python-socketio).
    pub fn servers_per_namespace(&self) -> bool {
        self.adapter != Adapter::PythonSocketio
    }

    /// The channel whose subscribers are the servers of `nsp`.
    pub fn servers_channel(&self, nsp: &str) -> String {
        match self.servers_per_namespace() {
            true => format!("{}{nsp}#", self.servers_prefix()),
            false => self.servers_prefix(),
        }
    }

    /// The start of the channel `sio-relay monitor` also subscribes to while it watches a sharded
    /// namespace (`sio-relay:monitor:{<key>#<nsp>#}`) or python-socketio's channel
    /// (`sio-relay:monitor:{<channel>}`), so that its subscription to the channel servers are
    /// counted on is not counted as a server; empty for the classic adapter, whose count never
    /// includes a monitor. The hash tag puts it in the counted channel's slot.
    pub fn monitor_prefix(&self) -> &'static str {
        match self.adapter {
            // A monitor of the streams adapter reads the stream: it subscribes to nothing.
            Adapter::Classic | Adapter::Streams => "",
            Adapter::Sharded | Adapter::PythonSocketio => "sio-relay:monitor:{",
        }
    }

    /// See [`Target::monitor_prefix`]; `None` for the classic adapter.
    pub fn monitor_channel(&self, nsp: &str) -> Option<String> {
        let prefix = self.monitor_prefix();
        (!prefix.is_empty()).then(|| format!("{prefix}{}}}", self.servers_channel(nsp)))
    }

    /// How the relay hears the servers' answers to its requests on `nsp` (the command, and its
    /// channel or pattern): the classic adapter answers on `<key>-response#<nsp>#`, or on
    /// `<key>-response#<nsp>#<uid>#` for servers with `publishOnSpecificResponseChannel`, which one
    /// pattern covers for every namespace; the sharded adapter on the requester's own channel,
    /// `<key>#<nsp>#<uid>#`, which sharded Pub/Sub subscribes to by name only; the streams
    /// adapter's servers answer on that same channel with PUBLISH. python-socketio's servers send
    /// their callbacks on their one channel, but never for a message from outside: the relay asks
    /// them nothing (`delivery.confirm = "published"` only).
    pub fn answers_subscription(&self, nsp: &str) -> (&'static str, String) {
        match self.adapter {
            Adapter::Classic => ("PSUBSCRIBE", format!("{}-response#*", self.key)),
            Adapter::Streams => (
                "SUBSCRIBE",
                format!("{}{}#", self.namespace_channel(nsp), self.uid),
            ),
            Adapter::Sharded => (
                "SSUBSCRIBE",
                format!("{}{}#", self.namespace_channel(nsp), self.uid),
            ),
            Adapter::PythonSocketio => ("SUBSCRIBE", self.key.clone()),
        }
    }

    /// The same target for each other setup of Node servers, to tell an operator which one the
    /// servers use: the streams adapter with the other `useShardedPubSub` first when the relay is
    /// set up for the streams adapter (its sharded servers listen on the sharded adapter's own
    /// channel, so they would be taken for the sharded adapter's), then each other adapter; none
    /// for python-socketio, whose servers share no channel with them.
    pub fn other_setups(&self) -> Vec<Target> {
        let with = |adapter, sharded_pubsub| Target {
            adapter,
            streams: StreamsOptions {
                sharded_pubsub,
                ..self.streams.clone()
            },
            ..self.clone()
        };
        let mut setups = Vec::new();
        match self.adapter {
            Adapter::PythonSocketio => return setups,
            Adapter::Streams => setups.push(with(Adapter::Streams, !self.streams.sharded_pubsub)),
            Adapter::Classic | Adapter::Sharded => {}
        }
        let others = Adapter::NODE.into_iter().filter(|a| *a != self.adapter);
        setups.extend(others.map(|adapter| with(adapter, false)));
        setups
    }

    /// How this setup's servers are set up and listen, and the relay's settings for them, for the
    /// operator who must tell setups apart.
    pub fn setup(&self) -> (&'static str, String) {
        let adapter = format!("target.adapter = \"{}\"", self.adapter.name());
        match (self.adapter, self.streams.sharded_pubsub) {
            (Adapter::Streams, true) => (
                "@socket.io/redis-streams-adapter with useShardedPubSub, SSUBSCRIBE",
                format!("{adapter} and target.use_sharded_pubsub = true"),
            ),
            _ => (self.adapter.servers_setup(), adapter),
        }
    }

    /// Whether the servers' format can carry `entry`: `Err` for bytes through a JSON parser; else
    /// whether it holds bytes. What [`Target::encode`] and [`Target::ack_request`] refuse, checked
    /// without encoding anything.
    pub fn carries(&self, entry: &Entry) -> Result<bool, Malformed> {
        let binary = entry.message().is_some_and(Message::has_binary);
        if binary && self.adapter == Adapter::Classic && self.parser == Parser::Json {
            return Err(Malformed::BinaryNeedsMsgpack);
        }
        Ok(binary)
    }

    /// Encodes `entry` as the servers' adapter expects it: an emit as a broadcast, the other
    /// operations as the requests the adapter's servers send each other
    /// (docs/08-internals/wire-format.md: "Requests: join, leave, disconnect, server-side emit",
    /// "The sharded adapter"). `Err` when the servers' format cannot carry it: bytes through a JSON
    /// parser; what python-socketio has no message for.
    pub fn encode(&self, entry: &Entry) -> Result<Packet, Unsendable> {
        let binary = self.carries(entry)?;
        Ok(match self.adapter {
            Adapter::Classic => self.classic_packet(entry, binary),
            // Sharded servers get everything on the namespace's channel. In their `dynamic` modes
            // they also subscribe to a room's channel, but only once a socket has joined it,
            // asynchronously: a packet sent there right after a join (the relay's own `join`, or a
            // client joining as it connects) found no subscriber and was lost, acknowledged. The
            // namespace's channel is subscribed from the start, and the servers filter by `opts`.
            Adapter::Sharded => Packet {
                channel: self.namespace_channel(entry.nsp()),
                payload: self.cluster_message(entry, binary),
            },
            Adapter::Streams => {
                let (kind, data) = self.cluster_data(entry, binary);
                streams::entry(self, entry.nsp(), kind, &data, binary)
            }
            Adapter::PythonSocketio => Packet {
                channel: self.key.clone(),
                payload: python::message(entry, &self.uid)?,
            },
        })
    }

    /// Encodes an emit as a broadcast whose clients' acknowledgements come back, tagged
    /// `request_id` (docs/08-internals/wire-format.md, "Broadcasts with acknowledgements"): the
    /// classic adapter's request of type 7 on the request channel (JSON, or MessagePack when it
    /// carries bytes), the sharded adapter's broadcast with a `requestId` on the namespace's
    /// channel. Every field a server reads without checking is written, since a request missing
    /// one crashes every server that receives it. `Err` as for [`Target::encode`], and for
    /// python-socketio, which cannot carry a client's acknowledgement from outside.
    pub fn ack_request(&self, entry: &Entry, request_id: &str) -> Result<Packet, Unsendable> {
        let Operation::Emit {
            message,
            volatile,
            compress,
            ..
        } = entry.operation()
        else {
            unreachable!("only an emit asks for acknowledgements")
        };
        let binary = self.carries(entry)?;
        let opts = Opts::of(entry, Flags(*volatile, *compress));
        let out = match self.adapter {
            Adapter::Classic => self.classic_ack_request(entry, message, opts, binary, request_id),
            Adapter::Sharded => self.cluster_ack_request(entry, message, opts, binary, request_id),
            Adapter::Streams => return Err(Unsupported::StreamsAcks.into()),
            Adapter::PythonSocketio => return Err(Unsupported::Acks.into()),
        };
        Ok(Packet {
            channel: self.servers_channel(entry.nsp()),
            payload: out,
        })
    }

    /// The request that follows a batch to confirm it (see [`crate::confirming`]): a broadcast
    /// with acknowledgements to [`CONFIRM_ROOM`], which no socket is in, so that no client sees
    /// anything and no server keeps a callback, and every server of `nsp` answers it (with a count
    /// of 0) once it has processed what came before it on its subscription. It goes where the
    /// servers read everything the relay publishes to `nsp` in order: the classic adapter's request
    /// channel is subscribed on the same connection as its broadcast pattern; the sharded adapter
    /// takes everything on the namespace's channel. `None` for the servers the relay hears
    /// nothing from (the streams adapter's, python-socketio's: see `Listener::listen`).
    pub fn confirm_request(&self, nsp: &str, request_id: &str) -> Option<Packet> {
        let packet = serde_json::json!({"type": EVENT, "data": [CONFIRM_EVENT], "nsp": nsp});
        let opts = serde_json::json!({"rooms": [CONFIRM_ROOM], "except": [], "flags": {}});
        let payload = match self.adapter {
            Adapter::Classic => self.classic_confirm_request(request_id, packet, opts),
            Adapter::Sharded => self.cluster_confirm_request(nsp, request_id, packet, opts),
            Adapter::Streams | Adapter::PythonSocketio => return None,
        };
        Some(Packet {
            channel: self.servers_channel(nsp),
            payload: payload.to_string().into_bytes(),
        })
    }
}

/// An emit's `volatile` and `compress`.
#[derive(Clone, Copy)]
struct Flags(bool, Option<bool>);

/// The sockets a request applies to: `{rooms, except}`.
#[derive(Serialize)]
struct Selection<'a> {
    rooms: &'a [Room],
    except: &'a [Room],
}

/// `{type: 2, data: [event, ...args], nsp}`. Arguments keep the producer's JSON text: numbers as
/// written (validation bounds them), object keys in order.
#[derive(Serialize)]
struct JsonPacket<'a> {
    #[serde(rename = "type")]
    kind: u8,
    data: EventData<'a>,
    nsp: &'a str,
}

impl<'a> JsonPacket<'a> {
    fn of(entry: &'a Entry, message: &'a Message) -> Self {
        JsonPacket {
            kind: EVENT,
            data: EventData(message),
            nsp: entry.nsp(),
        }
    }
}

/// `[event, ...args]`.
struct EventData<'a>(&'a Message);

impl Serialize for EventData<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(1 + self.0.args.len()))?;
        seq.serialize_element(&self.0.event)?;
        for arg in &self.0.args {
            seq.serialize_element(arg)?;
        }
        seq.end()
    }
}

/// `{rooms, flags, except}`, flags only when set, as the emitter writes them.
#[derive(Serialize)]
struct Opts<'a> {
    rooms: &'a [Room],
    flags: OptsFlags,
    except: &'a [Room],
}

impl<'a> Opts<'a> {
    fn of(entry: &'a Entry, Flags(volatile, compress): Flags) -> Self {
        Opts {
            rooms: entry.rooms(),
            flags: OptsFlags {
                volatile: volatile.then_some(true),
                compress,
            },
            except: entry.except(),
        }
    }
}

#[derive(Clone, Copy, Serialize)]
struct OptsFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    volatile: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compress: Option<bool>,
}
#[cfg(test)]
mod tests {
    use super::msgpack::value;
    use super::*;

    fn target() -> Target {
        Target::classic("socket.io", "emitter")
    }

    fn entry(pairs: &[(&str, &str)]) -> Entry {
        Entry::of(pairs)
    }

    fn encode(pairs: &[(&str, &str)]) -> Packet {
        target().encode(&entry(pairs)).unwrap()
    }

    fn sharded() -> Target {
        Target {
            adapter: Adapter::Sharded,
            ..target()
        }
    }

    /// docs/08-internals/wire-format.md, "Broadcasts with acknowledgements": the request the
    /// servers answered, with every field a server reads unchecked.
    #[test]
    fn a_broadcast_with_acks_is_the_request_servers_answer() {
        let e = entry(&[
            ("event", "ev"),
            ("data", r#"{"n":"r1"}"#),
            ("room", "r1"),
            ("ack", "5s"),
        ]);
        let packet = target().ack_request(&e, "sio-relay:x:1-0:1").unwrap();
        assert_eq!(packet.channel, "socket.io-request#/#");
        assert_eq!(
            String::from_utf8(packet.payload.clone()).unwrap(),
            r#"{"uid":"emitter","requestId":"sio-relay:x:1-0:1","type":7,"packet":{"type":2,"data":["ev",{"n":"r1"}],"nsp":"/"},"opts":{"rooms":["r1"],"flags":{},"except":[]}}"#
        );
        let decoded = decode_request(&packet.payload, &target()).unwrap();
        assert_eq!(decoded.request_id.as_deref(), Some("sio-relay:x:1-0:1"));
        assert_eq!((decoded.operation, decoded.event.as_str()), ("emit", "ev"));

        // Bytes: MessagePack, which servers read with their parser.
        let bytes = entry(&[
            ("event", "ev"),
            ("data", r#"{"$binary":"AQ=="}"#),
            ("ack", "5s"),
        ]);
        let packet = target().ack_request(&bytes, "id").unwrap();
        assert_eq!(packet.payload[0], 0x85, "a map of 5");
        let decoded = decode_request(&packet.payload, &target()).unwrap();
        assert_eq!(decoded.request_id.as_deref(), Some("id"));
        assert_eq!(decoded.args, [serde_json::json!({"$binary": "01"})]);
        let json = Target {
            parser: Parser::Json,
            ..target()
        };
        assert_eq!(
            json.ack_request(&bytes, "id"),
            Err(Malformed::BinaryNeedsMsgpack.into())
        );

        // The sharded adapter's broadcast, with `requestId` in its data.
        let packet = sharded().ack_request(&e, "sio-relay:x:1-0:1").unwrap();
        assert_eq!(packet.channel, "socket.io#/#");
        assert_eq!(
            String::from_utf8(packet.payload.clone()).unwrap(),
            r#"{"uid":"emitter","nsp":"/","type":3,"data":{"requestId":"sio-relay:x:1-0:1","packet":{"type":2,"data":["ev",{"n":"r1"}],"nsp":"/"},"opts":{"rooms":["r1"],"flags":{},"except":[]}}}"#
        );
        let decoded = decode(&packet.payload, &sharded()).unwrap();
        assert_eq!(decoded.request_id.as_deref(), Some("sio-relay:x:1-0:1"));
        let packet = sharded().ack_request(&bytes, "id").unwrap();
        assert_eq!(
            decode(&packet.payload, &sharded())
                .unwrap()
                .request_id
                .as_deref(),
            Some("id")
        );
    }

    /// docs/08-internals/wire-format.md, "Captured bytes": `io.emit("hello", "world")`, as captured
    /// from `@socket.io/redis-emitter` 5.1.0.
    #[test]
    fn broadcast_matches_the_emitter_bytes() {
        let packet = encode(&[("event", "hello"), ("data", r#""world""#)]);
        assert_eq!(packet.channel, "socket.io#/#");
        assert_eq!(
            hex(&packet.payload),
            "93a7656d697474657283a47479706502a46461746192a568656c6c6fa5776f726c64a36e7370a12f83a5726f6f6d7390a5666c61677380a665786365707490"
        );
    }

    /// docs/08-internals/wire-format.md, "Captured bytes":
    /// `io.to(['a','b']).except('c').volatile.emit('multi',{k:true})`.
    #[test]
    fn rooms_except_and_flags_match_the_emitter_bytes() {
        let packet = encode(&[
            ("event", "multi"),
            ("data", r#"{"k":true}"#),
            ("rooms", r#"["a","b"]"#),
            ("except", r#"["c"]"#),
            ("volatile", "true"),
        ]);
        assert_eq!(
            packet.channel, "socket.io#/#",
            "two rooms go to the namespace channel"
        );
        assert_eq!(
            hex(&packet.payload),
            "93a7656d697474657283a47479706502a46461746192a56d756c746981a16bc3a36e7370a12f83a5726f6f6d7392a161a162a5666c61677381a8766f6c6174696c65c3a665786365707491a163"
        );
    }

    /// docs/08-internals/wire-format.md, "Captured bytes": `io.to("room1").emit("hello", 1)`, in
    /// the emitter's key order.
    #[test]
    fn one_room_uses_the_room_channel() {
        let packet = encode(&[("event", "hello"), ("data", "1"), ("room", "room1")]);
        assert_eq!(packet.channel, "socket.io#/#room1#");
        assert_eq!(
            hex(&packet.payload),
            "93a7656d697474657283a47479706502a46461746192a568656c6c6f01a36e7370a12f83a5726f6f6d7391a5726f6f6d31a5666c61677380a665786365707490"
        );
    }

    /// docs/08-internals/wire-format.md, "Captured bytes": `/admin`, volatile, in the emitter's key
    /// order.
    #[test]
    fn namespace_and_volatile() {
        let packet = encode(&[
            ("event", "hello"),
            ("data", r#""world""#),
            ("nsp", "/admin"),
            ("volatile", "true"),
        ]);
        assert_eq!(packet.channel, "socket.io#/admin#");
        assert_eq!(
            hex(&packet.payload),
            "93a7656d697474657283a47479706502a46461746192a568656c6c6fa5776f726c64a36e7370a62f61646d696e83a5726f6f6d7390a5666c61677381a8766f6c6174696c65c3a665786365707490"
        );
    }

    #[test]
    fn numbers_use_notepacks_formats() {
        let cases = [
            ("1", "01"),
            ("1.0", "01"),
            ("1e3", "cd03e8"),
            ("-1", "ff"),
            ("-33", "d0df"),
            ("200", "ccc8"),
            ("4294967296", "cf0000000100000000"),
            ("-2147483649", "d3ffffffff7fffffff"),
            ("0.5", "cb3fe0000000000000"),
            ("1e20", "cb4415af1d78b58c40"),
        ];
        for (json, expected) in cases {
            let mut out = Vec::new();
            value(&mut out, &serde_json::from_str(json).unwrap());
            assert_eq!(hex(&out), expected, "{json}");
        }
    }

    #[test]
    fn object_keys_keep_the_producers_order() {
        let mut out = Vec::new();
        value(
            &mut out,
            &serde_json::from_str(r#"{"b":1,"a":null}"#).unwrap(),
        );
        assert_eq!(hex(&out), "82a16201a161c0");
    }

    #[test]
    fn compress_false_is_passed_on() {
        let packet = encode(&[("event", "e"), ("compress", "false")]);
        assert!(
            hex(&packet.payload).ends_with("a5666c61677381a8636f6d7072657373c2a665786365707490")
        );
    }

    #[test]
    fn decode_reads_back_what_encode_wrote() {
        let packet = encode(&[
            ("event", "multi"),
            ("args", r#"[{"k":true}, 2]"#),
            ("rooms", r#"["a","b"]"#),
            ("except", r#"["c"]"#),
            ("nsp", "/admin"),
            ("volatile", "true"),
        ]);
        let decoded = decode(&packet.payload, &target()).unwrap();
        assert_eq!(decoded.uid, "emitter");
        assert_eq!(decoded.nsp, "/admin");
        assert_eq!(decoded.event, "multi");
        assert_eq!(
            decoded.args,
            [serde_json::json!({"k": true}), serde_json::json!(2)]
        );
        assert_eq!(decoded.rooms, ["a", "b"]);
        assert_eq!(decoded.except, ["c"]);
        assert_eq!(decoded.flags["volatile"], true);
    }

    #[test]
    fn decode_names_what_would_crash_a_server() {
        let decode = |payload: &[u8]| decode(payload, &target());
        assert!(decode(b"[\"json\"]")
            .unwrap_err()
            .to_string()
            .contains("trailing bytes"));
        assert!(decode(&[0xc1]).is_err());
        assert!(decode(&[0x93, 0xc1])
            .unwrap_err()
            .to_string()
            .contains("not MessagePack"));
        let no_opts = [0x92, 0xa1, b'u', 0x80];
        assert!(decode(&no_opts)
            .unwrap_err()
            .to_string()
            .contains("[uid, packet, opts]"));
        let nil_opts = [
            0x93, 0xa1, b'u', 0x81, 0xa4, b'd', b'a', b't', b'a', 0x91, 0xa1, b'e', 0xc0,
        ];
        assert!(decode(&nil_opts)
            .unwrap_err()
            .to_string()
            .contains("opts is not a map"));
    }

    #[test]
    fn key_and_uid_come_from_the_target() {
        let target = Target::classic("app", "relay-1");
        let entry = Entry::parse(&[(b"event".to_vec(), b"e".to_vec())]).unwrap();
        let packet = target.encode(&entry).unwrap();
        assert_eq!(packet.channel, "app#/#");
        assert_eq!(&packet.payload[..9], b"\x93\xa7relay-1");
    }

    /// The JSON parser's form: the same array, as `JSON.stringify` writes it.
    #[test]
    fn the_json_parser_gets_the_array_as_json() {
        let target = Target {
            parser: Parser::Json,
            ..target()
        };
        let entry = entry(&[
            ("event", "multi"),
            ("args", r#"[{"k":true}, 1e21, -0.5]"#),
            ("room", "a"),
            ("volatile", "true"),
        ]);
        let packet = target.encode(&entry).unwrap();
        assert_eq!(packet.channel, "socket.io#/#a#");
        assert_eq!(
            String::from_utf8(packet.payload.clone()).unwrap(),
            r#"["emitter",{"type":2,"data":["multi",{"k":true},1e+21,-0.5],"nsp":"/"},{"rooms":["a"],"flags":{"volatile":true},"except":[]}]"#
        );
        let decoded = decode(&packet.payload, &target).unwrap();
        assert_eq!(decoded.event, "multi");
        assert_eq!(decoded.rooms, ["a"]);
        assert!(decode(&encode(&[("event", "e")]).payload, &target)
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
    }

    /// docs/08-internals/wire-format.md, "The sharded adapter": the `ClusterMessage` its servers
    /// accept.
    #[test]
    fn the_sharded_adapter_gets_a_cluster_message() {
        let target = sharded();
        let entry = entry(&[
            ("event", "payment"),
            ("args", r#"["cleared", 1999]"#),
            ("room", "user:42"),
        ]);
        let packet = target.encode(&entry).unwrap();
        assert_eq!(packet.channel, "socket.io#/#");
        assert_eq!(
            String::from_utf8(packet.payload.clone()).unwrap(),
            r#"{"uid":"emitter","nsp":"/","type":3,"data":{"packet":{"type":2,"data":["payment","cleared",1999],"nsp":"/"},"opts":{"rooms":["user:42"],"flags":{},"except":[]}}}"#
        );
        let decoded = decode(&packet.payload, &target).unwrap();
        assert_eq!(
            (decoded.uid.as_str(), decoded.nsp.as_str()),
            ("emitter", "/")
        );
        assert_eq!(
            decoded.args,
            [serde_json::json!("cleared"), serde_json::json!(1999)]
        );
        assert!(decode(br#"{"uid":"x","nsp":"/","type":3}"#, &target)
            .unwrap_err()
            .to_string()
            .contains("crash"));
        assert!(
            decode(br#"{"uid":"x","nsp":"/","type":"3","data":{}}"#, &target)
                .unwrap_err()
                .to_string()
                .contains("not a number")
        );
        assert!(decode(
            br#"{"uid":"x","nsp":"/","type":7,"data":{"opts":{}}}"#,
            &target
        )
        .unwrap_err()
        .to_string()
        .contains("type 7, which the relay never sends"));
    }

    /// Sharded servers subscribe to a room's channel only after a socket joined the room: every
    /// packet goes to the namespace's channel, which they subscribe to from the start.
    #[test]
    fn sharded_packets_go_to_the_namespace_channel() {
        for room in ["r", "aaaaaaaaaaaaaaaaaaaa"] {
            let packet = sharded().encode(&entry(&[("event", "e"), ("room", room)]));
            assert_eq!(packet.unwrap().channel, "socket.io#/#");
        }
        assert_eq!(
            encode(&[("event", "e"), ("room", "r")]).channel,
            "socket.io#/#r#"
        );
    }

    #[test]
    fn servers_are_counted_on_the_adapters_own_channel() {
        let classic = target();
        assert_eq!(classic.servers_channel("/a"), "socket.io-request#/a#");
        assert_eq!(classic.monitor_channel("/a"), None);
        let sharded = sharded();
        assert_eq!(sharded.servers_channel("/a"), "socket.io#/a#");
        assert_eq!(
            sharded.monitor_channel("/a").unwrap(),
            "sio-relay:monitor:{socket.io#/a#}"
        );
        assert_eq!(sharded.publish_command(), "SPUBLISH");
        assert_eq!(sharded.servers_command(), "SHARDNUMSUB");
    }

    /// docs/08-internals/wire-format.md, "Requests: join, leave, disconnect, server-side emit": the
    /// requests `@socket.io/redis-emitter` sends, captured byte for byte.
    #[test]
    fn requests_match_the_emitter_bytes() {
        let request = |pairs: &[(&str, &str)]| {
            let packet = encode(pairs);
            assert_eq!(packet.channel, "socket.io-request#/#");
            String::from_utf8(packet.payload).unwrap()
        };
        assert_eq!(
            request(&[("join", r#"["r2"]"#), ("all", "true")]),
            r#"{"type":2,"opts":{"rooms":[],"except":[]},"rooms":["r2"]}"#
        );
        assert_eq!(
            request(&[("leave", r#"["room1"]"#), ("room", "room1")]),
            r#"{"type":3,"opts":{"rooms":["room1"],"except":[]},"rooms":["room1"]}"#
        );
        assert_eq!(
            request(&[("disconnect", "true"), ("all", "true"), ("close", "true")]),
            r#"{"type":4,"opts":{"rooms":[],"except":[]},"close":true}"#
        );
        assert_eq!(
            request(&[("server_emit", "sse"), ("data", "1")]),
            r#"{"uid":"emitter","type":6,"data":["sse",1]}"#
        );
        let admin = encode(&[
            ("join", "[42]"),
            ("rooms", r#"[7, "x"]"#),
            ("nsp", "/admin"),
        ]);
        assert_eq!(admin.channel, "socket.io-request#/admin#");
        let decoded = decode_request(&admin.payload, &target()).unwrap();
        assert_eq!(decoded.operation, "join");
        assert_eq!(
            decoded.rooms,
            [serde_json::json!(7), serde_json::json!("x")]
        );
        assert_eq!(decoded.target_rooms, [serde_json::json!(42)]);
    }

    /// docs/08-internals/wire-format.md, "The sharded adapter": the same operations as the sharded
    /// adapter's messages, on the namespace's channel.
    #[test]
    fn the_sharded_adapter_gets_its_own_requests() {
        let target = sharded();
        let packet = target
            .encode(&entry(&[("join", r#"["joined"]"#), ("all", "true")]))
            .unwrap();
        assert_eq!(packet.channel, "socket.io#/#");
        assert_eq!(
            String::from_utf8(packet.payload.clone()).unwrap(),
            r#"{"uid":"emitter","nsp":"/","type":4,"data":{"opts":{"rooms":[],"except":[]},"rooms":["joined"]}}"#
        );
        let disconnect = target
            .encode(&entry(&[("disconnect", "true"), ("room", "user:1")]))
            .unwrap();
        assert_eq!(
            String::from_utf8(disconnect.payload.clone()).unwrap(),
            r#"{"uid":"emitter","nsp":"/","type":6,"data":{"opts":{"rooms":["user:1"],"except":[]},"close":false}}"#
        );
        let server = target
            .encode(&entry(&[("server_emit", "sse"), ("data", "1")]))
            .unwrap();
        assert_eq!(
            String::from_utf8(server.payload.clone()).unwrap(),
            r#"{"uid":"emitter","nsp":"/","type":9,"data":{"packet":["sse",1]}}"#
        );
        for packet in [packet, disconnect, server] {
            decode(&packet.payload, &target).unwrap();
        }
    }

    /// Bytes travel as MessagePack `bin`, which servers hand to clients as binary; the JSON
    /// parser cannot carry them.
    #[test]
    fn binary_arguments_are_messagepack_bin() {
        let file = [("event", "file"), ("data", r#"{"$binary":"3q2+7w=="}"#)];
        assert_eq!(
            hex(&encode(&file).payload),
            "93a7656d697474657283a47479706502a46461746192a466696c65c404deadbeefa36e7370a12f83a5726f6f6d7390a5666c61677380a665786365707490"
        );
        let sharded = sharded().encode(&entry(&file)).unwrap();
        assert_eq!(sharded.payload[0], 0x84, "a MessagePack map, not JSON");
        let decoded = decode(&sharded.payload, &self::sharded()).unwrap();
        assert_eq!(decoded.args, [serde_json::json!({"$binary": "deadbeef"})]);
        let json = Target {
            parser: Parser::Json,
            ..target()
        };
        assert_eq!(
            json.encode(&entry(&file)),
            Err(Malformed::BinaryNeedsMsgpack.into())
        );
        let server = target()
            .encode(&entry(&[
                ("server_emit", "f"),
                ("data", r#"{"$binary":"AQ=="}"#),
            ]))
            .unwrap();
        assert_eq!(server.payload[0], 0x83, "a MessagePack request");
        let decoded = decode_request(&server.payload, &target()).unwrap();
        assert_eq!(decoded.args, [serde_json::json!({"$binary": "01"})]);
    }

    /// A room joined as a number has no channel of its own: servers look a channel's room up as
    /// a string.
    #[test]
    fn numeric_rooms_go_to_the_namespace_channel() {
        let packet = encode(&[("event", "e"), ("rooms", "[42]")]);
        assert_eq!(packet.channel, "socket.io#/#");
        assert_eq!(
            decode(&packet.payload, &target()).unwrap().rooms,
            [serde_json::json!(42)]
        );
    }
}
