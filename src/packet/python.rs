//! python-socketio's Redis manager (`pubsub_manager.py`, 5.15.1 and later): the messages its
//! servers publish to each other on their one channel, which every server of every namespace
//! subscribes to. An emit is `{"method": "emit", "event", "data": [args], "binary", "namespace",
//! "room", "skip_sid", "callback": null, "host_id"}`; the other methods act on one socket, named by
//! its sid (`enter_room`, `leave_room`, `disconnect`), or on one room (`close_room`).
//!
//! What the relay's entries can say and these messages cannot is [`Unsupported`]: no server-side
//! emit, no client acknowledgement from outside, one socket or one room per message, no closing of
//! the connection, and an emit whose only argument is `null` (python-socketio sends it with none).
//! `volatile` and `compress` are left out: python-socketio has neither, and a volatile emit
//! delivered, or one compressed by the transport, is still what its producer asked for.

use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Decoded, Unreadable, Unsupported};
use crate::entry::{self, Entry, Message, Operation, Room};

/// Encodes `entry` as the message a python-socketio server publishes for the same operation,
/// `host_id` naming the sender (servers skip the messages carrying their own, a uuid4 hex).
pub(super) fn message(entry: &Entry, host_id: &str) -> Result<Vec<u8>, Unsupported> {
    let namespace = entry.nsp();
    let value = match entry.operation() {
        Operation::Emit { message, .. } => {
            if message.args == [Value::Null] {
                return Err(Unsupported::OnlyNull);
            }
            let (data, binary) = data(message);
            serde_json::to_vec(&Emit {
                method: "emit",
                event: &message.event,
                data,
                binary,
                namespace,
                room: OneOrMany(entry.rooms()),
                skip_sid: OneOrMany(entry.except()),
                callback: None,
                host_id,
            })
        }
        Operation::Join(rooms) => serde_json::to_vec(&SocketRoom {
            method: "enter_room",
            sid: sid(entry, "join", "")?,
            room: one_room(rooms, "join")?,
            namespace,
            host_id,
        }),
        // io.socketsLeave(room) on every socket of the namespace is python-socketio's
        // close_room(room).
        Operation::Leave(rooms) if entry.rooms().is_empty() && entry.except().is_empty() => {
            serde_json::to_vec(&CloseRoom {
                method: "close_room",
                room: one_room(rooms, "leave")?,
                namespace,
                host_id,
            })
        }
        Operation::Leave(rooms) => serde_json::to_vec(&SocketRoom {
            method: "leave_room",
            sid: sid(
                entry,
                "leave",
                " (a `leave` with `all true` closes the room)",
            )?,
            room: one_room(rooms, "leave")?,
            namespace,
            host_id,
        }),
        Operation::Disconnect { close: true } => return Err(Unsupported::Close),
        Operation::Disconnect { close: false } => serde_json::to_vec(&Disconnect {
            method: "disconnect",
            sid: sid(entry, "disconnect", "")?,
            namespace,
            host_id,
        }),
        Operation::ServerEmit(_) => return Err(Unsupported::ServerEmit),
    };
    Ok(value.expect("a message serializes"))
}

/// The one room a join or leave names: python-socketio's take one per message.
fn one_room<'a>(rooms: &'a [Room], operation: &'static str) -> Result<&'a Room, Unsupported> {
    match rooms {
        [room] => Ok(room),
        _ => Err(Unsupported::Rooms {
            operation,
            rooms: rooms.len(),
        }),
    }
}

/// The one socket a join, leave or disconnect selects: `room <sid>`, alone.
fn sid<'a>(
    entry: &'a Entry,
    operation: &'static str,
    hint: &'static str,
) -> Result<&'a str, Unsupported> {
    match (entry.rooms(), entry.except()) {
        ([Room::Name(sid)], []) => Ok(sid),
        _ => Err(Unsupported::Selection(operation, hint)),
    }
}

/// The arguments as `data`, a list (one argument per item, since 5.15.1), and whether they hold
/// bytes: then `[args with {"_placeholder": true, "num": n} for the n-th bytes, base64 of bytes 0,
/// of bytes 1, ...]`, as `Packet.deconstruct_binary` writes them and `reconstruct_binary` reads
/// them back.
fn data(message: &Message) -> (Value, bool) {
    if !message.has_binary() {
        return (Value::Array(message.args.clone()), false);
    }
    let mut attachments = Vec::new();
    let args = message
        .args
        .iter()
        .map(|arg| placeholders(arg, &mut attachments))
        .collect();
    let mut data = vec![Value::Array(args)];
    data.extend(attachments);
    (Value::Array(data), true)
}

/// `value` with its bytes replaced by placeholders, their base64 (canonical, as the entry contract
/// requires it) pushed to `attachments`.
fn placeholders(value: &Value, attachments: &mut Vec<Value>) -> Value {
    if let Some(base64) = entry::binary(value) {
        let num = attachments.len();
        attachments.push(base64.clone());
        return serde_json::json!({"_placeholder": true, "num": num});
    }
    match value {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| placeholders(item, attachments))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, item)| (k.clone(), placeholders(item, attachments)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[derive(Serialize)]
struct Emit<'a> {
    method: &'static str,
    event: &'a str,
    data: Value,
    binary: bool,
    namespace: &'a str,
    room: OneOrMany<'a>,
    skip_sid: OneOrMany<'a>,
    /// Always null: a callback names a room, namespace and ID on the sending server.
    callback: Option<()>,
    host_id: &'a str,
}

#[derive(Serialize)]
struct SocketRoom<'a> {
    method: &'static str,
    sid: &'a str,
    room: &'a Room,
    namespace: &'a str,
    host_id: &'a str,
}

#[derive(Serialize)]
struct CloseRoom<'a> {
    method: &'static str,
    room: &'a Room,
    namespace: &'a str,
    host_id: &'a str,
}

#[derive(Serialize)]
struct Disconnect<'a> {
    method: &'static str,
    sid: &'a str,
    namespace: &'a str,
    host_id: &'a str,
}

/// `room` and `skip_sid`: null for none (a server reads an empty list's first item, and fails),
/// one room as it is, several as a list.
struct OneOrMany<'a>(&'a [Room]);

impl Serialize for OneOrMany<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            [] => serializer.serialize_none(),
            [one] => one.serialize(serializer),
            many => {
                let mut seq = serializer.serialize_seq(Some(many.len()))?;
                for room in many {
                    seq.serialize_element(room)?;
                }
                seq.end()
            }
        }
    }
}

/// Reads a message published on python-socketio's channel as its servers do, for `sio-relay
/// monitor`: the relay's, and those the servers publish themselves.
pub(super) fn decode(value: &Value) -> Result<Decoded, Unreadable> {
    let method = value
        .get("method")
        .and_then(Value::as_str)
        .ok_or(Unreadable::NoMethod)?;
    let namespace = value.get("namespace").and_then(Value::as_str);
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let sid = || value.get("sid").cloned().into_iter().collect::<Vec<_>>();
    let mut decoded = Decoded {
        uid: text("host_id").unwrap_or_default(),
        nsp: namespace.unwrap_or_default().to_owned(),
        operation: "emit",
        event: String::new(),
        args: Vec::new(),
        rooms: Vec::new(),
        except: Vec::new(),
        flags: Map::new(),
        target_rooms: Vec::new(),
        close: None,
        request_id: None,
    };
    let needs_namespace = method != "callback";
    if needs_namespace && namespace.is_none() {
        return Err(Unreadable::NoNamespace);
    }
    let room = |of: &'static str| {
        value
            .get("room")
            .cloned()
            .ok_or(Unreadable::Missing(of, "room"))
    };
    match method {
        "emit" => {
            decoded.event = text("event").ok_or(Unreadable::Missing("emit", "event"))?;
            let data = value
                .get("data")
                .ok_or(Unreadable::Missing("emit", "data"))?;
            decoded.args = match (data, value.get("binary") == Some(&Value::Bool(true))) {
                (Value::Array(parts), true) => match parts.split_first() {
                    Some((Value::Array(args), attachments)) => {
                        args.iter().map(|arg| restored(arg, attachments)).collect()
                    }
                    _ => {
                        return Err(Unreadable::Missing(
                            "emit",
                            "its arguments before the bytes",
                        ))
                    }
                },
                (Value::Array(args), false) => args.clone(),
                (Value::Null, _) => Vec::new(),
                (one, _) => vec![one.clone()],
            };
            decoded.rooms = one_or_many(value.get("room"));
            decoded.except = one_or_many(value.get("skip_sid"));
        }
        "enter_room" | "leave_room" => {
            decoded.operation = if method == "enter_room" {
                "join"
            } else {
                "leave"
            };
            decoded.rooms = sid();
            decoded.target_rooms = vec![room("enter_room or leave_room")?];
        }
        "close_room" => {
            decoded.operation = "leave";
            decoded.target_rooms = vec![room("close_room")?];
        }
        "disconnect" => {
            decoded.operation = "disconnect";
            decoded.rooms = sid();
            decoded.close = Some(false);
        }
        "callback" => decoded.operation = "callback",
        other => return Err(Unreadable::UnknownMethod(other.to_owned())),
    }
    Ok(decoded)
}

/// null, one room, or a list of them.
fn one_or_many(value: Option<&Value>) -> Vec<Value> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(one) => vec![one.clone()],
    }
}

/// An argument with its placeholders replaced by the bytes, shown as `{"$binary": "<hex>"}`.
fn restored(value: &Value, attachments: &[Value]) -> Value {
    match value {
        Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => {
            let bytes = map
                .get("num")
                .and_then(Value::as_u64)
                .and_then(|n| attachments.get(usize::try_from(n).ok()?))
                .map(entry::binary_bytes);
            match bytes {
                Some(bytes) => serde_json::json!({ "$binary": super::hex(&bytes) }),
                None => value.clone(),
            }
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| restored(v, attachments)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), restored(v, attachments)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::packet::{Adapter, Target, Unsendable};

    fn target() -> Target {
        Target {
            key: "socketio".into(),
            adapter: Adapter::PythonSocketio,
            ..Target::classic("socket.io", "emitter")
        }
    }

    fn entry(pairs: &[(&str, &str)]) -> Entry {
        Entry::of(pairs)
    }

    fn encoded(pairs: &[(&str, &str)]) -> Result<Value, Unsendable> {
        let packet = target().encode(&entry(pairs))?;
        assert_eq!(
            packet.channel, "socketio",
            "one channel for every namespace"
        );
        let decoded = crate::packet::decode(&packet.payload, &target());
        assert!(decoded.is_ok(), "the monitor reads it: {decoded:?}");
        Ok(serde_json::from_slice(&packet.payload).unwrap())
    }

    fn unsupported(pairs: &[(&str, &str)]) -> Unsupported {
        match encoded(pairs) {
            Err(Unsendable::Unsupported(problem)) => problem,
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    /// The message python-socketio's own servers publish for `emit` (docs/08-internals/wire-format.md,
    /// "python-socketio"), key for key; no room is null, one room is itself, several a list.
    #[test]
    fn an_emit_is_the_message_python_socketio_servers_publish() {
        assert_eq!(
            encoded(&[("event", "chat"), ("args", r#"["a",1]"#), ("nsp", "/chat")]).unwrap(),
            json!({"method": "emit", "event": "chat", "data": ["a", 1], "binary": false,
                "namespace": "/chat", "room": null, "skip_sid": null, "callback": null,
                "host_id": "emitter"})
        );
        let one = encoded(&[("event", "e"), ("room", "r1"), ("except", r#"["s1"]"#)]).unwrap();
        assert_eq!(
            (&one["room"], &one["skip_sid"]),
            (&json!("r1"), &json!("s1"))
        );
        let many = encoded(&[
            ("event", "e"),
            ("rooms", r#"["a",42]"#),
            ("except", r#"["s1","s2"]"#),
        ]);
        let many = many.unwrap();
        assert_eq!(
            (&many["room"], &many["skip_sid"]),
            (&json!(["a", 42]), &json!(["s1", "s2"]))
        );
        assert_eq!(encoded(&[("event", "e")]).unwrap()["data"], json!([]));
        assert_eq!(
            encoded(&[("event", "e"), ("data", "[1,2]")]).unwrap()["data"],
            json!([[1, 2]]),
            "one list argument stays one"
        );
        let flags = encoded(&[("event", "e"), ("volatile", "true"), ("compress", "false")]);
        assert!(
            flags.unwrap().get("flags").is_none(),
            "python-socketio has no flags"
        );
    }

    /// Bytes as `Packet.deconstruct_binary` leaves them: placeholders numbered depth first, the
    /// attachments in base64 after the arguments.
    #[test]
    fn bytes_become_placeholders_and_attachments() {
        let message = encoded(&[
            ("event", "file"),
            ("args", r#"[{"$binary":"AQID"},{"a":[{"$binary":"BA=="}]}]"#),
        ])
        .unwrap();
        assert_eq!(message["binary"], json!(true));
        assert_eq!(
            message["data"],
            json!([[{"_placeholder": true, "num": 0}, {"a": [{"_placeholder": true, "num": 1}]}], "AQID", "BA=="])
        );
        let packet = target()
            .encode(&entry(&[
                ("event", "file"),
                ("data", r#"{"$binary":"AQID"}"#),
            ]))
            .unwrap();
        let decoded = crate::packet::decode(&packet.payload, &target()).unwrap();
        assert_eq!(decoded.args, vec![json!({"$binary": "010203"})]);
    }

    #[test]
    fn operations_act_on_one_socket_or_close_a_room() {
        assert_eq!(
            encoded(&[("join", r#"["game"]"#), ("room", "sid1")]).unwrap(),
            json!({"method": "enter_room", "sid": "sid1", "room": "game", "namespace": "/", "host_id": "emitter"})
        );
        assert_eq!(
            encoded(&[("leave", "[7]"), ("room", "sid1"), ("nsp", "/a")]).unwrap(),
            json!({"method": "leave_room", "sid": "sid1", "room": 7, "namespace": "/a", "host_id": "emitter"})
        );
        assert_eq!(
            encoded(&[("leave", r#"["game"]"#), ("all", "true")]).unwrap(),
            json!({"method": "close_room", "room": "game", "namespace": "/", "host_id": "emitter"})
        );
        assert_eq!(
            encoded(&[("disconnect", "true"), ("room", "sid1")]).unwrap(),
            json!({"method": "disconnect", "sid": "sid1", "namespace": "/", "host_id": "emitter"})
        );
    }

    #[test]
    fn what_python_socketio_cannot_carry_is_unsupported() {
        use Unsupported::*;
        let cases: [(&[(&str, &str)], Unsupported); 8] = [
            (&[("server_emit", "flush")], ServerEmit),
            (&[("event", "e"), ("data", "null")], OnlyNull),
            (
                &[("disconnect", "true"), ("room", "sid1"), ("close", "true")],
                Close,
            ),
            (
                &[("disconnect", "true"), ("all", "true")],
                Selection("disconnect", ""),
            ),
            (
                &[("join", r#"["g"]"#), ("all", "true")],
                Selection("join", ""),
            ),
            (
                &[("leave", r#"["g"]"#), ("rooms", r#"["a","b"]"#)],
                Selection("leave", " (a `leave` with `all true` closes the room)"),
            ),
            (
                &[("join", r#"["g"]"#), ("room", "s"), ("except", r#"["x"]"#)],
                Selection("join", ""),
            ),
            (
                &[("join", r#"["a","b"]"#), ("room", "s")],
                Rooms {
                    operation: "join",
                    rooms: 2,
                },
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(unsupported(pairs), expected, "{pairs:?}");
        }
        let with_ack = entry(&[("event", "e"), ("ack", "5s")]);
        assert_eq!(
            target().ack_request(&with_ack, "r").unwrap_err(),
            Unsendable::Unsupported(Acks)
        );
        assert!(encoded(&[("event", "e"), ("args", "[null, 1]")]).is_ok());
    }

    #[test]
    fn the_monitor_reads_what_servers_publish_and_says_what_they_ignore() {
        let read = |v: Value| super::decode(&v);
        let own = read(
            json!({"method": "emit", "event": "e", "data": "x", "namespace": "/",
            "room": null, "skip_sid": "s", "callback": null, "host_id": "abc"}),
        )
        .unwrap();
        assert_eq!(
            (own.args, own.except, own.uid),
            (vec![json!("x")], vec![json!("s")], "abc".into())
        );
        assert_eq!(read(json!({"event": "e"})), Err(Unreadable::NoMethod));
        assert_eq!(
            read(json!({"method": "emit", "event": "e", "data": []})),
            Err(Unreadable::NoNamespace)
        );
        assert_eq!(
            read(json!({"method": "fetch", "namespace": "/"})),
            Err(Unreadable::UnknownMethod("fetch".into()))
        );
    }
}
