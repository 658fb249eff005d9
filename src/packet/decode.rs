//! Reading packets back as the servers' adapters read them: what `sio-relay monitor` shows, and
//! why a payload is not one a server can read (the payloads that crash servers, whoever
//! published them). The inverse of the encoding in the parent module, for every format.

use serde_json::{Number, Value};

use super::classic::{
    BROADCAST_WITH_ACK, REMOTE_DISCONNECT, REMOTE_JOIN, REMOTE_LEAVE, SERVER_SIDE_EMIT,
};
use super::cluster::{
    BROADCAST, CLUSTER_DISCONNECT_SOCKETS, CLUSTER_SERVER_SIDE_EMIT, CLUSTER_SOCKETS_JOIN,
    CLUSTER_SOCKETS_LEAVE,
};
use super::{streams, Adapter, Parser, Target};

/// A packet as a Socket.IO server's adapter reads it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Decoded {
    pub uid: String,
    pub nsp: String,
    /// `emit`, `join`, `leave`, `disconnect` or `server_emit`, as the entry fields name them.
    pub operation: &'static str,
    /// The event and its arguments (an emit or a server-side emit).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub event: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Value>,
    pub rooms: Vec<Value>,
    pub except: Vec<Value>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub flags: serde_json::Map<String, Value>,
    /// The rooms a join or leave adds or removes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target_rooms: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close: Option<bool>,
    /// An emit whose clients' acknowledgements are asked for: the request's ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Why a server could not read a payload as the relay's (see [`decode`]): what `sio-relay
/// monitor` shows for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("not MessagePack: {0}")]
    NotMsgpack(String),
    #[error("{0} trailing bytes after the packet (notepack throws on them)")]
    TrailingBytes(usize),
    #[error("not JSON (JSON.parse throws on it): {0}")]
    NotJson(String),
    #[error("not an array [uid, packet, opts]")]
    NotAnArray,
    #[error("an array of {0} items, not [uid, packet, opts]")]
    ArrayOf(usize),
    #[error("the packet is not a map")]
    PacketNotAMap,
    #[error("a broadcast with acks whose packet is not a map (servers crash on it)")]
    AckPacketNotAMap,
    #[error("a request without a numeric type")]
    NoRequestType,
    /// A type servers send each other, but the relay never does.
    #[error("a message of type {0}, which the relay never sends")]
    NotFromTheRelay(u64),
    #[error("a request without opts (servers treat it as another request)")]
    NoOpts,
    #[error("a {0} without rooms")]
    NoRooms(&'static str),
    #[error("a server-side emit whose data is not [event, ...args]")]
    ServerEmitData,
    #[error("{key} is {value}, not an array (servers crash on it)")]
    NotAList { key: String, value: String },
    #[error("nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("not a ClusterMessage object {{uid, nsp, type, data}}")]
    NotAClusterMessage,
    #[error("type is {0}, not a number: servers drop it")]
    TypeNotANumber(String),
    #[error("no nsp: servers drop it")]
    NoNsp,
    #[error("not a python-socketio message: an object with a method (servers ignore it)")]
    NoMethod,
    #[error("method {0}, which python-socketio servers ignore")]
    UnknownMethod(String),
    #[error("no namespace (python-socketio servers drop it)")]
    NoNamespace,
    #[error("an {0} without {1} (python-socketio servers ignore it or fail on it)")]
    Missing(&'static str, &'static str),
    #[error("a message without data (servers crash on it)")]
    NoData,
    #[error("data.packet is not an object")]
    DataPacketNotAnObject,
    #[error("opts is not a map (servers crash on it)")]
    OptsNotAMap,
    #[error("packet.data is not a non-empty array")]
    NoEvent,
    #[error("the event name is {0}, not a string")]
    EventName(String),
}

/// Reads a payload published on a broadcast channel as the servers of `target` do; `Err` says why
/// a server could not read it as a broadcast (or, on the sharded adapter's channels, as one of the
/// requests the relay sends).
pub fn decode(payload: &[u8], target: &Target) -> Result<Decoded, Unreadable> {
    match (target.adapter, target.parser) {
        (Adapter::PythonSocketio, _) => super::python::decode(&json(payload)?),
        (Adapter::Classic, Parser::Msgpack) => classic(&msgpack(payload)?),
        (Adapter::Classic, Parser::Json) => classic(&json(payload)?),
        // The sharded adapter parses JSON when the first byte is `{`, notepack otherwise.
        (Adapter::Sharded, _) if payload.first() == Some(&b'{') => sharded(&json(payload)?),
        (Adapter::Sharded, _) => sharded(&msgpack(payload)?),
        (Adapter::Streams, _) => streams::decode_payload(payload),
    }
}

pub(super) fn msgpack(payload: &[u8]) -> Result<Value, Unreadable> {
    let mut reader = payload;
    // rmpv counts two steps per level of nesting: the value, then its array or map.
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, 2 * MAX_DECODE_DEPTH)
        .map_err(|e| Unreadable::NotMsgpack(e.to_string()))?;
    if !reader.is_empty() {
        return Err(Unreadable::TrailingBytes(reader.len()));
    }
    Ok(to_json(&value))
}

pub(super) fn json(payload: &[u8]) -> Result<Value, Unreadable> {
    crate::entry::json_within(payload, MAX_DECODE_DEPTH)
        .ok_or(Unreadable::TooDeep(MAX_DECODE_DEPTH))?
        .map_err(|e| Unreadable::NotJson(e.to_string()))
}

/// How deep a payload may nest for [`decode`]: past the deepest packet the relay publishes
/// (`limits.max_json_depth` at its most, in a packet's few levels), and bounded, so that decoding
/// recurses no deeper whatever is published on the channels.
const MAX_DECODE_DEPTH: usize = *crate::entry::JSON_DEPTHS.end() + 8;

/// Reads a payload published on the classic adapter's request channel (`<key>-request#<nsp>#`),
/// as its servers do: JSON when the first byte is `{`, else with their parser. Its namespace is in
/// the channel's name, so `nsp` is left empty.
pub fn decode_request(payload: &[u8], target: &Target) -> Result<Decoded, Unreadable> {
    let value = match target.parser {
        _ if payload.first() == Some(&b'{') => json(payload)?,
        Parser::Msgpack => msgpack(payload)?,
        Parser::Json => json(payload)?,
    };
    classic_request(&value)
}

/// `[uid, packet, opts]`.
fn classic(value: &Value) -> Result<Decoded, Unreadable> {
    let Value::Array(parts) = value else {
        return Err(Unreadable::NotAnArray);
    };
    let [uid, packet, opts] = parts.as_slice() else {
        return Err(Unreadable::ArrayOf(parts.len()));
    };
    if !packet.is_object() {
        return Err(Unreadable::PacketNotAMap);
    }
    let nsp = packet.get("nsp").and_then(Value::as_str).unwrap_or("/");
    broadcast(uid, nsp, packet, opts)
}

/// `{type, opts, rooms}`, `{type, opts, close}` or `{uid, type, data}`.
fn classic_request(value: &Value) -> Result<Decoded, Unreadable> {
    let uid = value.get("uid").cloned().unwrap_or(Value::Null);
    match value.get("type").and_then(Value::as_u64) {
        Some(kind) if kind == u64::from(SERVER_SIDE_EMIT) => {
            server_emit(&uid, "", value.get("data").unwrap_or(&Value::Null))
        }
        Some(kind) if kind == u64::from(BROADCAST_WITH_ACK) => {
            let packet = value.get("packet").filter(|p| p.is_object());
            let packet = packet.ok_or(Unreadable::AckPacketNotAMap)?;
            let mut decoded =
                broadcast(&uid, "", packet, value.get("opts").unwrap_or(&Value::Null))?;
            decoded.request_id = Some(request_id(value));
            Ok(decoded)
        }
        Some(kind) => selection(&uid, "", request_kind(kind, REQUESTS)?, value),
        None => Err(Unreadable::NoRequestType),
    }
}

/// The operations the relay sends, by their request type in each adapter.
const REQUESTS: [(u8, &str); 3] = [
    (REMOTE_JOIN, "join"),
    (REMOTE_LEAVE, "leave"),
    (REMOTE_DISCONNECT, "disconnect"),
];
const CLUSTER_REQUESTS: [(u8, &str); 3] = [
    (CLUSTER_SOCKETS_JOIN, "join"),
    (CLUSTER_SOCKETS_LEAVE, "leave"),
    (CLUSTER_DISCONNECT_SOCKETS, "disconnect"),
];

fn request_kind(kind: u64, known: [(u8, &'static str); 3]) -> Result<&'static str, Unreadable> {
    known
        .iter()
        .find(|(k, _)| u64::from(*k) == kind)
        .map(|(_, name)| *name)
        .ok_or(Unreadable::NotFromTheRelay(kind))
}

/// A join, leave or disconnect: `{opts: {rooms, except}, rooms | close}`.
fn selection(
    uid: &Value,
    nsp: &str,
    operation: &'static str,
    body: &Value,
) -> Result<Decoded, Unreadable> {
    let Some(opts) = body.get("opts").filter(|o| o.is_object()) else {
        return Err(Unreadable::NoOpts);
    };
    let target_rooms = list(body, "rooms")?;
    if operation != "disconnect" && target_rooms.is_empty() {
        return Err(Unreadable::NoRooms(operation));
    }
    Ok(Decoded {
        uid: uid.as_str().map_or_else(|| uid.to_string(), str::to_owned),
        nsp: nsp.to_owned(),
        operation,
        event: String::new(),
        args: Vec::new(),
        rooms: list(opts, "rooms")?,
        except: list(opts, "except")?,
        flags: serde_json::Map::new(),
        target_rooms,
        close: body.get("close").and_then(Value::as_bool),
        request_id: None,
    })
}

/// `[event, ...args]` of a server-side emit.
fn server_emit(uid: &Value, nsp: &str, data: &Value) -> Result<Decoded, Unreadable> {
    let Some((event, args)) = data.as_array().and_then(|d| d.split_first()) else {
        return Err(Unreadable::ServerEmitData);
    };
    Ok(Decoded {
        uid: uid.as_str().map_or_else(|| uid.to_string(), str::to_owned),
        nsp: nsp.to_owned(),
        operation: "server_emit",
        event: event
            .as_str()
            .map_or_else(|| event.to_string(), str::to_owned),
        args: args.to_vec(),
        rooms: Vec::new(),
        except: Vec::new(),
        flags: serde_json::Map::new(),
        target_rooms: Vec::new(),
        close: None,
        request_id: None,
    })
}

/// The array at `key`, empty when absent; anything else is what crashes servers.
fn list(value: &Value, key: &str) -> Result<Vec<Value>, Unreadable> {
    match value.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(other) => Err(Unreadable::NotAList {
            key: key.to_owned(),
            value: other.to_string(),
        }),
    }
}

/// `{uid, nsp, type, data}`: a broadcast, or one of the other messages the relay sends.
pub(super) fn sharded(value: &Value) -> Result<Decoded, Unreadable> {
    if !value.is_object() {
        return Err(Unreadable::NotAClusterMessage);
    }
    let Some(kind) = value.get("type").and_then(Value::as_u64) else {
        let kind = value.get("type").map_or("missing".into(), Value::to_string);
        return Err(Unreadable::TypeNotANumber(kind));
    };
    let Some(nsp) = value.get("nsp").and_then(Value::as_str) else {
        return Err(Unreadable::NoNsp);
    };
    let Some(data) = value.get("data").filter(|d| d.is_object()) else {
        return Err(Unreadable::NoData);
    };
    let uid = value.get("uid").cloned().unwrap_or(Value::Null);
    if kind == u64::from(CLUSTER_SERVER_SIDE_EMIT) {
        return server_emit(&uid, nsp, data.get("packet").unwrap_or(&Value::Null));
    }
    if kind != u64::from(BROADCAST) {
        return selection(&uid, nsp, request_kind(kind, CLUSTER_REQUESTS)?, data);
    }
    let packet = data.get("packet").cloned().unwrap_or(Value::Null);
    if !packet.is_object() {
        return Err(Unreadable::DataPacketNotAnObject);
    }
    let mut decoded = broadcast(&uid, nsp, &packet, data.get("opts").unwrap_or(&Value::Null))?;
    if data.get("requestId").is_some() {
        decoded.request_id = Some(request_id(data));
    }
    Ok(decoded)
}

/// The `requestId` of a request, as text.
fn request_id(value: &Value) -> String {
    match value.get("requestId") {
        Some(Value::String(id)) => id.clone(),
        Some(other) => other.to_string(),
        None => "missing".into(),
    }
}

/// The packet and options of a broadcast, in either format.
fn broadcast(uid: &Value, nsp: &str, packet: &Value, opts: &Value) -> Result<Decoded, Unreadable> {
    if !opts.is_object() {
        return Err(Unreadable::OptsNotAMap);
    }
    let data = match packet.get("data") {
        Some(Value::Array(data)) if !data.is_empty() => data,
        _ => return Err(Unreadable::NoEvent),
    };
    let event = match &data[0] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => return Err(Unreadable::EventName(other.to_string())),
    };
    let flags = match opts.get("flags") {
        Some(Value::Object(flags)) => flags.clone(),
        _ => serde_json::Map::new(),
    };
    Ok(Decoded {
        uid: uid.as_str().map_or_else(|| uid.to_string(), str::to_owned),
        nsp: nsp.to_owned(),
        operation: "emit",
        event,
        args: data[1..].to_vec(),
        rooms: list(opts, "rooms")?,
        except: list(opts, "except")?,
        flags,
        target_rooms: Vec::new(),
        close: None,
        request_id: None,
    })
}

/// MessagePack to JSON for display; binary becomes `{"$binary": "<hex>"}`.
fn to_json(v: &rmpv::Value) -> Value {
    msgpack_to_json(v, &|bytes| serde_json::json!({ "$binary": hex(bytes) }))
}

/// MessagePack to JSON, binary values written by `bytes`; extension values as
/// `{"$ext": type, "data": "<hex>"}`, integers JSON cannot hold as `null`.
pub fn msgpack_to_json(v: &rmpv::Value, bytes: &dyn Fn(&[u8]) -> Value) -> Value {
    let convert = |v| msgpack_to_json(v, bytes);
    match v {
        rmpv::Value::Nil => Value::Null,
        rmpv::Value::Boolean(b) => Value::Bool(*b),
        rmpv::Value::Integer(i) => i
            .as_i64()
            .map(Value::from)
            .or_else(|| i.as_u64().map(Value::from))
            .unwrap_or(Value::Null),
        rmpv::Value::F32(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        rmpv::Value::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        rmpv::Value::String(s) => Value::String(s.as_str().unwrap_or_default().to_owned()),
        rmpv::Value::Binary(b) => bytes(b),
        rmpv::Value::Array(items) => Value::Array(items.iter().map(convert).collect()),
        rmpv::Value::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().map_or_else(|| k.to_string(), str::to_owned),
                        convert(v),
                    )
                })
                .collect(),
        ),
        rmpv::Value::Ext(kind, data) => serde_json::json!({ "$ext": kind, "data": hex(data) }),
    }
}

/// Lowercase hex, for bytes shown to people.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
