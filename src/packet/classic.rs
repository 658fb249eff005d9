//! The classic adapter's packets (`createAdapter`): an emit as the `[uid, packet, opts]` broadcast
//! `@socket.io/redis-emitter` publishes, in MessagePack as notepack.io writes it or in JSON with
//! the JSON parser, on the room's or the namespace's channel; the other operations, broadcasts with
//! acknowledgements and confirmations as the requests its servers send each other, on the request
//! channel (docs/08-internals/wire-format.md: "Layout of a broadcast", "Requests: join, leave,
//! disconnect, server-side emit", "Broadcasts with acknowledgements").

use rmp::encode;
use serde::Serialize;

use super::{
    array_len, map_len, str, write_event, write_opts, write_packet, EventData, Flags, JsonPacket,
    Opts, Packet, Parser, Selection, Target,
};
use crate::entry::{Entry, Message, Operation, Room};

/// The classic adapter's request types (`RequestType` in its `lib/index.ts`).
pub(super) const REMOTE_JOIN: u8 = 2;
pub(super) const REMOTE_LEAVE: u8 = 3;
pub(super) const REMOTE_DISCONNECT: u8 = 4;
pub(super) const SERVER_SIDE_EMIT: u8 = 6;
/// A broadcast whose clients' acknowledgements the servers send back
/// (docs/08-internals/wire-format.md, "Broadcasts with acknowledgements").
pub(super) const BROADCAST_WITH_ACK: u8 = 7;

impl Target {
    /// The classic adapter's packet for `entry`: an emit as a broadcast; the other operations as
    /// the requests its servers send each other, on the request channel, in JSON (which the adapter
    /// reads whatever its parser), or in MessagePack for a server-side emit with bytes.
    pub(super) fn classic_packet(&self, entry: &Entry, binary: bool) -> Packet {
        let opts = Selection {
            rooms: entry.rooms(),
            except: entry.except(),
        };
        fn json(value: &impl Serialize) -> Vec<u8> {
            serde_json::to_vec(value).expect("a request serializes")
        }
        let payload = match entry.operation() {
            Operation::Emit {
                message,
                volatile,
                compress,
                ..
            } => {
                return Packet {
                    channel: self.classic_channel(entry),
                    payload: self.classic_broadcast(entry, message, Flags(*volatile, *compress)),
                }
            }
            Operation::Join(rooms) => json(&RoomsRequest {
                kind: REMOTE_JOIN,
                opts,
                rooms,
            }),
            Operation::Leave(rooms) => json(&RoomsRequest {
                kind: REMOTE_LEAVE,
                opts,
                rooms,
            }),
            Operation::Disconnect { close } => json(&DisconnectRequest {
                kind: REMOTE_DISCONNECT,
                opts,
                close: *close,
            }),
            Operation::ServerEmit(message) if binary => {
                let mut out = Vec::with_capacity(64);
                map_len(&mut out, 3);
                str(&mut out, "uid");
                str(&mut out, &self.uid);
                str(&mut out, "type");
                encode::write_pfix(&mut out, SERVER_SIDE_EMIT)
                    .expect("writing to a Vec cannot fail");
                str(&mut out, "data");
                write_event(&mut out, message);
                out
            }
            Operation::ServerEmit(message) => json(&ServerEmitRequest {
                uid: &self.uid,
                kind: SERVER_SIDE_EMIT,
                data: EventData(message),
            }),
        };
        Packet {
            channel: self.servers_channel(entry.nsp()),
            payload,
        }
    }

    /// A single-room broadcast to classic servers goes to the room's channel, as the emitter's
    /// does (the servers' pattern covers it); with several rooms it goes to the namespace's channel,
    /// which would otherwise lose the servers that hold only the other rooms
    /// (docs/08-internals/wire-format.md, "Rooms in the channel name").
    /// So does a room named by a number: servers look a room channel's name up as a string.
    fn classic_channel(&self, entry: &Entry) -> String {
        let mut channel = self.namespace_channel(entry.nsp());
        if let [Room::Name(room)] = entry.rooms() {
            channel.push_str(room);
            channel.push('#');
        }
        channel
    }

    /// `[uid, packet, opts]`, in MessagePack or with the JSON parser in JSON.
    fn classic_broadcast(&self, entry: &Entry, message: &Message, flags: Flags) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + message.event.len());
        let opts = Opts::of(entry, flags);
        match self.parser {
            Parser::Msgpack => {
                array_len(&mut out, 3);
                str(&mut out, &self.uid);
                write_packet(&mut out, message, Some(entry.nsp()));
                write_opts(&mut out, &opts);
            }
            Parser::Json => {
                let packet = JsonPacket::of(entry, message);
                serde_json::to_writer(&mut out, &(&self.uid, packet, opts))
                    .expect("an entry serializes")
            }
        }
        out
    }

    /// The classic adapter's broadcast with acknowledgements: JSON, or MessagePack when it carries
    /// bytes (see [`Target::ack_request`]).
    pub(super) fn classic_ack_request(
        &self,
        entry: &Entry,
        message: &Message,
        opts: Opts,
        binary: bool,
        request_id: &str,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + message.event.len());
        if binary {
            map_len(&mut out, 5);
            str(&mut out, "uid");
            str(&mut out, &self.uid);
            str(&mut out, "requestId");
            str(&mut out, request_id);
            str(&mut out, "type");
            encode::write_pfix(&mut out, BROADCAST_WITH_ACK).expect("writing to a Vec cannot fail");
            str(&mut out, "packet");
            write_packet(&mut out, message, Some(entry.nsp()));
            str(&mut out, "opts");
            write_opts(&mut out, &opts);
        } else {
            serde_json::to_writer(
                &mut out,
                &AckRequest {
                    uid: &self.uid,
                    request_id,
                    kind: BROADCAST_WITH_ACK,
                    packet: JsonPacket::of(entry, message),
                    opts,
                },
            )
            .expect("an entry serializes");
        }
        out
    }

    /// The classic adapter's [`Target::confirm_request`]: a broadcast with acknowledgements.
    pub(super) fn classic_confirm_request(
        &self,
        request_id: &str,
        packet: serde_json::Value,
        opts: serde_json::Value,
    ) -> serde_json::Value {
        serde_json::json!({
        "uid": self.uid,
        "requestId": request_id,
        "type": BROADCAST_WITH_ACK,
        "packet": packet,
        "opts": opts,
        })
    }
}

/// The classic adapter's broadcast with acknowledgements: `{uid, requestId, type: 7, packet, opts}`.
#[derive(Serialize)]
struct AckRequest<'a> {
    uid: &'a str,
    #[serde(rename = "requestId")]
    request_id: &'a str,
    #[serde(rename = "type")]
    kind: u8,
    packet: JsonPacket<'a>,
    opts: Opts<'a>,
}

/// The classic adapter's join and leave requests: `{type, opts, rooms}`.
#[derive(Serialize)]
struct RoomsRequest<'a> {
    #[serde(rename = "type")]
    kind: u8,
    opts: Selection<'a>,
    rooms: &'a [Room],
}

/// `{type: 4, opts, close}`.
#[derive(Serialize)]
struct DisconnectRequest<'a> {
    #[serde(rename = "type")]
    kind: u8,
    opts: Selection<'a>,
    close: bool,
}

/// `{uid, type: 6, data: [event, ...args]}`.
#[derive(Serialize)]
struct ServerEmitRequest<'a> {
    uid: &'a str,
    #[serde(rename = "type")]
    kind: u8,
    data: EventData<'a>,
}
