//! The sharded adapter's `ClusterMessage` (`createShardedAdapter`): `{uid, nsp, type, data}`, the
//! message its servers send each other, in JSON, or in MessagePack when it carries bytes, as they
//! write it (docs/08-internals/wire-format.md, "The sharded adapter"). Its `data` is also what the
//! streams adapter's servers keep in their stream (`streams.rs`).

use rmp::encode;
use serde::Serialize;

use super::{
    map_len, str, write_event, write_opts, write_packet, EventData, Flags, JsonPacket, Opts,
    Selection, Target,
};
use crate::entry::{Entry, Message, Operation, Room};

/// The `ClusterMessage` types of the sharded adapter (socket.io-adapter's `MessageType`).
pub(super) const BROADCAST: u8 = 3;
pub(super) const CLUSTER_SOCKETS_JOIN: u8 = 4;
pub(super) const CLUSTER_SOCKETS_LEAVE: u8 = 5;
pub(super) const CLUSTER_DISCONNECT_SOCKETS: u8 = 6;
pub(super) const CLUSTER_SERVER_SIDE_EMIT: u8 = 9;

impl Target {
    /// The message the servers of the sharded adapter send each other for `entry`:
    /// `{uid, nsp, type, data}`, in JSON, or in MessagePack when it carries bytes, as they write it.
    pub(super) fn cluster_message(&self, entry: &Entry, binary: bool) -> Vec<u8> {
        let (kind, data) = self.cluster_data(entry, binary);
        let mut out = Vec::with_capacity(data.len() + 48 + entry.nsp().len());
        if binary {
            self.cluster_header(&mut out, entry, kind);
            out.extend_from_slice(&data);
        } else {
            // What serde writes for `ClusterMessage`, with `data` already serialized.
            out.extend_from_slice(b"{\"uid\":");
            serde_json::to_writer(&mut out, &self.uid).expect("a string serializes");
            out.extend_from_slice(b",\"nsp\":");
            serde_json::to_writer(&mut out, entry.nsp()).expect("a string serializes");
            out.extend_from_slice(format!(",\"type\":{kind},\"data\":").as_bytes());
            out.extend_from_slice(&data);
            out.push(b'}');
        }
        out
    }

    /// The type and the `data` of the message servers of the sharded and the streams adapter send
    /// each other for `entry` (socket.io-adapter's `ClusterMessage`): JSON, or MessagePack when it
    /// carries bytes.
    pub(super) fn cluster_data(&self, entry: &Entry, binary: bool) -> (u8, Vec<u8>) {
        let selection = Selection {
            rooms: entry.rooms(),
            except: entry.except(),
        };
        let mut out = Vec::with_capacity(64);
        fn json(out: &mut Vec<u8>, value: &impl Serialize) {
            serde_json::to_writer(out, value).expect("an entry serializes")
        }
        let kind = match entry.operation() {
            Operation::Emit {
                message,
                volatile,
                compress,
                ..
            } => {
                let opts = Opts::of(entry, Flags(*volatile, *compress));
                if binary {
                    map_len(&mut out, 2);
                    str(&mut out, "packet");
                    write_packet(&mut out, message, None);
                    str(&mut out, "opts");
                    write_opts(&mut out, &opts);
                } else {
                    let packet = JsonPacket::of(entry, message);
                    json(&mut out, &Broadcast { packet, opts });
                }
                BROADCAST
            }
            Operation::ServerEmit(message) => {
                if binary {
                    map_len(&mut out, 1);
                    str(&mut out, "packet");
                    write_event(&mut out, message);
                } else {
                    json(
                        &mut out,
                        &ClusterData::ServerEmit {
                            packet: EventData(message),
                        },
                    );
                }
                CLUSTER_SERVER_SIDE_EMIT
            }
            Operation::Join(rooms) => {
                let opts = selection;
                json(&mut out, &ClusterData::Rooms { opts, rooms });
                CLUSTER_SOCKETS_JOIN
            }
            Operation::Leave(rooms) => {
                let opts = selection;
                json(&mut out, &ClusterData::Rooms { opts, rooms });
                CLUSTER_SOCKETS_LEAVE
            }
            Operation::Disconnect { close } => {
                let opts = selection;
                let close = *close;
                json(&mut out, &ClusterData::Disconnect { opts, close });
                CLUSTER_DISCONNECT_SOCKETS
            }
        };
        (kind, out)
    }

    /// `{uid, nsp, type, data: ` in MessagePack: the sharded adapter's message up to its data.
    fn cluster_header(&self, out: &mut Vec<u8>, entry: &Entry, kind: u8) {
        map_len(out, 4);
        str(out, "uid");
        str(out, &self.uid);
        str(out, "nsp");
        str(out, entry.nsp());
        str(out, "type");
        encode::write_pfix(out, kind).expect("writing to a Vec cannot fail");
        str(out, "data");
    }

    /// The sharded adapter's broadcast with acknowledgements: its message with a `requestId` in
    /// its `data` (see [`Target::ack_request`]).
    pub(super) fn cluster_ack_request(
        &self,
        entry: &Entry,
        message: &Message,
        opts: Opts,
        binary: bool,
        request_id: &str,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + message.event.len());
        if binary {
            self.cluster_header(&mut out, entry, BROADCAST);
            map_len(&mut out, 3);
            str(&mut out, "requestId");
            str(&mut out, request_id);
            str(&mut out, "packet");
            write_packet(&mut out, message, None);
            str(&mut out, "opts");
            write_opts(&mut out, &opts);
        } else {
            serde_json::to_writer(
                &mut out,
                &ClusterMessage {
                    uid: &self.uid,
                    nsp: entry.nsp(),
                    kind: BROADCAST,
                    data: AckBroadcast {
                        request_id,
                        packet: JsonPacket::of(entry, message),
                        opts,
                    },
                },
            )
            .expect("an entry serializes");
        }
        out
    }

    /// The sharded adapter's [`Target::confirm_request`]: its broadcast with a `requestId`.
    pub(super) fn cluster_confirm_request(
        &self,
        nsp: &str,
        request_id: &str,
        packet: serde_json::Value,
        opts: serde_json::Value,
    ) -> serde_json::Value {
        serde_json::json!({
        "uid": self.uid,
        "nsp": nsp,
        "type": BROADCAST,
        "data": {"requestId": request_id, "packet": packet, "opts": opts},
        })
    }
}

/// The sharded adapter's message: `{uid, nsp, type, data}`.
#[derive(Serialize)]
struct ClusterMessage<'a, D> {
    uid: &'a str,
    nsp: &'a str,
    #[serde(rename = "type")]
    kind: u8,
    data: D,
}

#[derive(Serialize)]
struct Broadcast<'a> {
    packet: JsonPacket<'a>,
    opts: Opts<'a>,
}

/// The sharded adapter's broadcast with acknowledgements: its `data` has a `requestId`.
#[derive(Serialize)]
struct AckBroadcast<'a> {
    #[serde(rename = "requestId")]
    request_id: &'a str,
    packet: JsonPacket<'a>,
    opts: Opts<'a>,
}

/// The `data` of the sharded adapter's other messages (docs/08-internals/wire-format.md, "The
/// sharded adapter").
#[derive(Serialize)]
#[serde(untagged)]
enum ClusterData<'a> {
    Rooms {
        opts: Selection<'a>,
        rooms: &'a [Room],
    },
    Disconnect {
        opts: Selection<'a>,
        close: bool,
    },
    ServerEmit {
        packet: EventData<'a>,
    },
}
