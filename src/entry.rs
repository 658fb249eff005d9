//! Stream entries: the producers' contract.
//!
//! A [`RawEntry`] is what Redis handed us: an ID and its field/value pairs, in the producer's order,
//! unchecked. [`Entry::parse`] is the only way to build an [`Entry`], so holding one proves that every
//! rule of the contract (docs/01-entry-contract.md) holds. Anything else is a [`Malformed`] that names
//! the field and the problem; the relay dead-letters it and never publishes it, because a single bad
//! packet on the adapter channels can crash or disconnect every Socket.IO server and client.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The ID Redis gave a stream entry: `<milliseconds>-<sequence>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// Unix time in milliseconds at which the entry was added (unless the producer chose the ID).
    pub ms: u64,
    pub seq: u64,
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}` is not a stream entry ID (expected <ms>-<seq>)"))?;
        let number = |part: &str| {
            part.parse::<u64>()
                .map_err(|_| format!("`{s}` is not a stream entry ID (expected <ms>-<seq>)"))
        };
        Ok(EntryId {
            ms: number(ms)?,
            seq: number(seq)?,
        })
    }
}

/// An entry as read from the stream, before validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub id: EntryId,
    /// Field/value pairs in stream order; duplicates are kept so validation can refuse them.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RawEntry {
    /// The bytes of its field names and values.
    pub fn byte_len(&self) -> usize {
        self.fields.iter().map(|(f, v)| f.len() + v.len()).sum()
    }
}

/// Event names that Socket.IO clients treat as protocol events: publishing one makes every
/// receiving client drop its connection (docs/08-internals/wire-format.md, "Reserved event names").
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The most binary values one event may carry: socket.io-parser 4.2.6 and later refuse a packet
/// with more attachments, and the client disconnects (docs/08-internals/wire-format.md, "Bytes").
pub const MAX_BINARY_ARGS: usize = 10;

/// The key that marks bytes in a JSON argument: `{"$binary": "<base64>"}`, the only key.
pub const BINARY_KEY: &str = "$binary";

/// What `limits.max_json_depth` may be set to. The servers' and clients' decoders recurse, and what
/// throws in a server's Redis message callback ends the server: the least any of them survives is
/// 2,238 levels (socket.io-parser with bytes at the bottom, Node 20's default stack; measured by
/// `scripts/json-depth`, docs/08-internals/wire-format.md, "How deep JSON may nest"), so the most
/// allowed is under a quarter of that. It also bounds what the relay itself recurses through
/// (parsing, checking, encoding, dropping): serde_json takes about 4 KiB of stack per level in a
/// debug build, so 512 levels need a little over 2 MiB of the relay's main thread (8 MiB), on which
/// its loop runs.
pub const JSON_DEPTHS: std::ops::RangeInclusive<usize> = 1..=512;

fn reserved_event_message(field: &str, event: &str) -> String {
    if field == "event" {
        format!("event `{event}` is reserved by Socket.IO: publishing it would disconnect every receiving client")
    } else {
        format!("`{field}` event `{event}` is reserved by the Socket.IO namespace or Node's EventEmitter: servers would refuse it or crash")
    }
}

/// Largest integer magnitude that JavaScript numbers (and so notepack's decoder) hold exactly.
pub const MAX_SAFE_MAGNITUDE: u64 = 1 << 53;

/// The longest `ack` wait: one attempt's wait for the clients' acknowledgements. Longer waits are
/// retries (`acks.retry_interval`) until `acks.max_age`, which keep nothing open in between.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(600);

/// The longest `ttl`. A lifetime is for what stops being true ("your driver is here"): minutes or
/// hours. Past a week, an entry is a backlog to keep, which is the stream's retention and
/// `delivery.max_age`, not a notification's lifetime; and a `30d` typed for `30s` is caught.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The shortest `ack` wait and `ttl`: entry IDs, and Redis's clock they are measured on, count
/// milliseconds.
pub const MIN_DURATION: Duration = Duration::from_millis(1);

/// Why an entry cannot be published. The text is what operators read in the dead-letter stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the `event` field is missing (or, for the other operations, `join`, `leave`, `disconnect` or `server_emit`)")]
    MissingEvent,
    #[error("`{0}` and `{1}` cannot both be present: an entry is one operation")]
    TwoOperations(&'static str, &'static str),
    #[error("`{field}` does not apply to `{operation}` entries")]
    DoesNotApply {
        field: &'static str,
        operation: &'static str,
    },
    #[error("a `{0}` entry needs `room` or `rooms`, or `all` = `true` for every socket of the namespace")]
    NoSelection(&'static str),
    #[error("`all` and `room`/`rooms` cannot both be present")]
    AllAndRooms,
    #[error("the `{0}` field is empty")]
    EmptyEvent(&'static str),
    #[error("{}", reserved_event_message(field, event))]
    ReservedEvent { field: &'static str, event: String },
    #[error("field name {0:?} is not valid UTF-8")]
    FieldNameNotUtf8(String),
    #[error("the value of `{0}` is not valid UTF-8")]
    ValueNotUtf8(String),
    #[error("field `{0}` appears more than once")]
    DuplicateField(String),
    #[error("unknown field `{0}` (known: event, join, leave, disconnect, server_emit, data, args, room, rooms, all, except, nsp, volatile, compress, close, ack, append_id, ttl, traceparent; prefix your own metadata with `x-`)")]
    UnknownField(String),
    #[error("`{field}` is not valid JSON: {error}")]
    InvalidJson { field: &'static str, error: String },
    #[error("`{field}` is nested deeper than limits.max_json_depth = {limit} levels (`[[1]]` is 2): the servers' decoders recurse, and one that runs out of stack ends the server")]
    TooDeep { field: &'static str, limit: usize },
    #[error("`{field}` must be {expected}")]
    WrongShape {
        field: &'static str,
        expected: &'static str,
    },
    #[error("`data` and `args` cannot both be present: use `data` for one argument or `args` for several")]
    DataAndArgs,
    #[error("`room` and `rooms` cannot both be present: put every room in `rooms`")]
    RoomAndRooms,
    #[error("`{0}` contains an empty room name")]
    EmptyRoom(&'static str),
    #[error("namespace `{nsp}` contains `{character}`, which {why}")]
    NamespaceCharacter {
        nsp: String,
        character: char,
        why: &'static str,
    },
    #[error("`{field}` holds the integer {literal}, outside ±2^53: JavaScript would round it; send it as a string")]
    UnsafeInteger {
        field: &'static str,
        literal: String,
    },
    #[error("`{field}` holds {{\"$binary\": ...}} whose value is not base64 bytes: {problem}")]
    BadBinary {
        field: &'static str,
        problem: String,
    },
    #[error("binary arguments need MessagePack, and the servers' adapter uses a JSON parser (target.parser = \"json\"), which cannot carry bytes")]
    BinaryNeedsMsgpack,
    #[error("`{field}` holds {blobs} binary values, more than {MAX_BINARY_ARGS}: Socket.IO clients disconnect on a packet with more attachments")]
    TooManyBinaries { field: &'static str, blobs: usize },
    #[error("`{field}` holds the number {literal}, which is not a finite double")]
    NumberOutOfRange {
        field: &'static str,
        literal: String,
    },
    #[error("`{field}` must be `true` or `false`, not {value:?}")]
    BadFlag { field: &'static str, value: String },
    #[error(
        "`ack` must be a duration between 1ms and {}, such as \"10s\", or `none`, not {value:?}",
        humantime::format_duration(MAX_ACK_TIMEOUT)
    )]
    BadAck { value: String },
    #[error(
        "`ttl` must be a duration between 1ms and {}, such as \"30s\", not {value:?}",
        humantime::format_duration(MAX_TTL)
    )]
    BadTtl { value: String },
    #[error("`ack` and `volatile` cannot both be present: a volatile event may be dropped, an acknowledged one is sent again until a client acknowledges it")]
    AckAndVolatile,
    #[error("the entry holds {bytes} bytes of field names and values, more than limits.max_entry_bytes = {limit}")]
    TooLarge { bytes: u64, limit: usize },
    #[error("the entry has {fields} fields, more than limits.max_fields = {limit}")]
    TooManyFields { fields: u64, limit: usize },
    #[error("`{field}` names {rooms} rooms, more than limits.max_rooms = {limit}")]
    TooManyRooms {
        field: &'static str,
        rooms: usize,
        limit: usize,
    },
}

/// What one entry may hold. Past a limit an entry is dead-lettered as malformed with the limit
/// named, without ever being held whole in the relay's memory (see `reader.rs`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Field names and values together, in bytes.
    pub max_entry_bytes: usize,
    /// Fields, `x-` metadata included.
    pub max_fields: usize,
    /// Rooms in `rooms`, and in `except`.
    pub max_rooms: usize,
    /// Levels of nesting of a JSON field (`[[1]]` is two; `args` counts its own array), within
    /// [`JSON_DEPTHS`].
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry_bytes: 1 << 20,
            max_fields: 64,
            max_rooms: 10_000,
            max_json_depth: 256,
        }
    }
}

/// A validated entry: everything needed to build the adapter packet, nothing that could hurt a server.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    operation: Operation,
    /// The sockets it applies to: those in any of `rooms` (every socket when empty) but in none of
    /// `except`. Empty for [`Operation::ServerEmit`], which reaches servers, not sockets.
    rooms: Vec<Room>,
    except: Vec<Room>,
    nsp: String,
    /// `ttl`: how long after its ID's time the entry may still be delivered.
    ttl: Option<Ttl>,
}

/// An entry's own lifetime (`ttl`), from [`MIN_DURATION`] to [`MAX_TTL`]: past it, measured from
/// the time in the entry's ID on Redis's clock, the entry is dead-lettered as `expired` instead of
/// delivered, wherever it is (read, held, or waiting for its clients' acknowledgements).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl(Duration);

impl Ttl {
    pub fn get(self) -> Duration {
        self.0
    }
}

/// What an entry makes the servers do: the operations of `@socket.io/redis-emitter`.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    /// `event`: emit to the selected sockets (`emit`).
    Emit {
        message: Message,
        volatile: bool,
        /// `None` when the producer did not say, so the servers keep their own default.
        compress: Option<bool>,
        /// `ack`: whether, and how long per attempt, to wait for the clients' acknowledgements.
        /// An entry that waits is sent as a broadcast with acknowledgements and stays pending until
        /// a client acknowledges it (see [`crate::awaiting`]).
        ack: Ack,
        /// `append_id`: the stream entry ID is appended to the arguments, for clients to tell an
        /// entry sent again from a new one.
        append_id: bool,
    },
    /// `join`: the selected sockets join these rooms (`socketsJoin`).
    Join(Vec<Room>),
    /// `leave`: the selected sockets leave these rooms (`socketsLeave`).
    Leave(Vec<Room>),
    /// `disconnect`: the selected sockets are disconnected (`disconnectSockets`); `close` also
    /// closes their underlying connection.
    Disconnect { close: bool },
    /// `server_emit`: the namespace's `serverSideEmit` listeners run on every server.
    ServerEmit(Message),
}

/// What an emit says about its clients' acknowledgements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// No `ack` field: the stream's default (`acks.default`) applies.
    Unsaid,
    /// `ack none`: not waited for, whatever the default.
    Off,
    /// `ack <duration>`: waited for this long per attempt.
    Within(Duration),
}

/// An event name and its arguments. An argument may hold bytes as `{"$binary": "<base64>"}`
/// (checked to decode; see [`binary`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub event: String,
    pub args: Vec<Value>,
    /// How many binary values the arguments hold, counted once when they were validated.
    binaries: usize,
}

impl Message {
    /// Whether any argument holds bytes.
    pub fn has_binary(&self) -> bool {
        self.binaries > 0
    }
}

/// A room as the servers hold it. Socket.IO rooms are whatever `socket.join` was given, and a room
/// joined as the number 42 is not the room "42": producers name such rooms with JSON numbers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Room {
    Name(String),
    Number(serde_json::Number),
}

impl Room {
    /// The room's name as text: a number as written.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Room::Name(name) => name.as_str().into(),
            Room::Number(number) => number.to_string().into(),
        }
    }
}

impl serde::Serialize for Room {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Room::Name(name) => serializer.serialize_str(name),
            Room::Number(number) => number.serialize(serializer),
        }
    }
}

impl From<&str> for Room {
    fn from(name: &str) -> Room {
        Room::Name(name.to_owned())
    }
}

impl PartialEq<&str> for Room {
    fn eq(&self, other: &&str) -> bool {
        matches!(self, Room::Name(name) if name == other)
    }
}

impl Entry {
    /// Validates the fields of a stream entry against the producers' contract, with the default
    /// limits.
    pub fn parse(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Entry, Malformed> {
        Entry::parse_within(fields, &Limits::default())
    }

    /// A valid entry of text fields, for tests.
    #[cfg(test)]
    pub(crate) fn of(pairs: &[(&str, &str)]) -> Entry {
        let fields: Vec<_> = pairs
            .iter()
            .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        Entry::parse(&fields).unwrap()
    }

    /// Validates the fields of a stream entry against the producers' contract and `limits`.
    pub fn parse_within(
        fields: &[(Vec<u8>, Vec<u8>)],
        limits: &Limits,
    ) -> Result<Entry, Malformed> {
        if fields.len() > limits.max_fields {
            return Err(Malformed::TooManyFields {
                fields: fields.len() as u64,
                limit: limits.max_fields,
            });
        }
        let bytes: usize = fields.iter().map(|(f, v)| f.len() + v.len()).sum();
        if bytes > limits.max_entry_bytes {
            return Err(Malformed::TooLarge {
                bytes: bytes as u64,
                limit: limits.max_entry_bytes,
            });
        }
        let mut seen = Fields::default();
        for (name, value) in fields {
            let name = std::str::from_utf8(name)
                .map_err(|_| Malformed::FieldNameNotUtf8(String::from_utf8_lossy(name).into()))?;
            if name.starts_with("x-") {
                continue;
            }
            let slot = seen
                .slot(name)
                .ok_or_else(|| Malformed::UnknownField(name.to_owned()))?;
            if slot.is_some() {
                return Err(Malformed::DuplicateField(name.to_owned()));
            }
            let text =
                std::str::from_utf8(value).map_err(|_| Malformed::ValueNotUtf8(name.to_owned()))?;
            *slot = Some(text);
        }
        seen.validate(limits)
    }

    pub fn operation(&self) -> &Operation {
        &self.operation
    }

    /// The event and arguments of an emit or a server-side emit.
    pub fn message(&self) -> Option<&Message> {
        match &self.operation {
            Operation::Emit { message, .. } | Operation::ServerEmit(message) => Some(message),
            _ => None,
        }
    }

    /// How long to wait for the clients' acknowledgements, when the entry asks for them or, saying
    /// nothing, when the stream waits `default` for every emit that is not volatile.
    pub fn ack(&self, default: Option<Duration>) -> Option<Duration> {
        match &self.operation {
            Operation::Emit {
                ack: Ack::Within(wait),
                ..
            } => Some(*wait),
            Operation::Emit {
                ack: Ack::Unsaid,
                volatile: false,
                ..
            } => default,
            _ => None,
        }
    }

    /// Appends `id` to the arguments when the entry asked for it (`append_id`): the entry ID is
    /// known once the entry is read, not when its fields are validated.
    pub fn append_id(&mut self, id: EntryId) {
        if let Operation::Emit {
            message,
            append_id: true,
            ..
        } = &mut self.operation
        {
            message.args.push(Value::String(id.to_string()));
        }
    }

    pub fn rooms(&self) -> &[Room] {
        &self.rooms
    }

    pub fn except(&self) -> &[Room] {
        &self.except
    }

    pub fn nsp(&self) -> &str {
        &self.nsp
    }

    pub fn ttl(&self) -> Option<Ttl> {
        self.ttl
    }
}

/// The known fields of one entry, as text, while they are being collected.
#[derive(Default)]
struct Fields<'a> {
    event: Option<&'a str>,
    join: Option<&'a str>,
    leave: Option<&'a str>,
    disconnect: Option<&'a str>,
    server_emit: Option<&'a str>,
    data: Option<&'a str>,
    args: Option<&'a str>,
    room: Option<&'a str>,
    rooms: Option<&'a str>,
    all: Option<&'a str>,
    except: Option<&'a str>,
    nsp: Option<&'a str>,
    volatile: Option<&'a str>,
    compress: Option<&'a str>,
    close: Option<&'a str>,
    ack: Option<&'a str>,
    append_id: Option<&'a str>,
    ttl: Option<&'a str>,
    /// The producer's W3C trace context: read by the traces (`relay/spans.rs`), nothing here.
    traceparent: Option<&'a str>,
}

/// The fields that choose the operation: an entry has exactly one.
const OPERATION_FIELDS: [&str; 5] = ["event", "join", "leave", "disconnect", "server_emit"];

impl<'a> Fields<'a> {
    fn slot(&mut self, name: &str) -> Option<&mut Option<&'a str>> {
        Some(match name {
            "event" => &mut self.event,
            "join" => &mut self.join,
            "leave" => &mut self.leave,
            "disconnect" => &mut self.disconnect,
            "server_emit" => &mut self.server_emit,
            "data" => &mut self.data,
            "args" => &mut self.args,
            "room" => &mut self.room,
            "rooms" => &mut self.rooms,
            "all" => &mut self.all,
            "except" => &mut self.except,
            "nsp" => &mut self.nsp,
            "volatile" => &mut self.volatile,
            "compress" => &mut self.compress,
            "close" => &mut self.close,
            "ack" => &mut self.ack,
            "append_id" => &mut self.append_id,
            "ttl" => &mut self.ttl,
            "traceparent" => &mut self.traceparent,
            _ => return None,
        })
    }

    fn validate(self, limits: &Limits) -> Result<Entry, Malformed> {
        let chosen: Vec<&'static str> = OPERATION_FIELDS
            .into_iter()
            .zip([
                self.event,
                self.join,
                self.leave,
                self.disconnect,
                self.server_emit,
            ])
            .filter_map(|(name, value)| value.map(|_| name))
            .collect();
        let operation = match chosen[..] {
            [] => return Err(Malformed::MissingEvent),
            [name] => name,
            [first, second, ..] => return Err(Malformed::TwoOperations(first, second)),
        };
        let nsp = match self.nsp {
            None => "/".to_owned(),
            Some(nsp) => namespace(nsp)?,
        };
        // Fields that mean nothing for this operation are refused rather than ignored: a producer
        // who wrote them expected an effect.
        let applies = |field: &'static str| -> bool {
            match field {
                "data" | "args" => matches!(operation, "event" | "server_emit"),
                "volatile" | "compress" | "ack" | "append_id" => operation == "event",
                "close" => operation == "disconnect",
                "room" | "rooms" | "all" | "except" => operation != "server_emit",
                _ => true,
            }
        };
        for (field, value) in [
            ("data", self.data),
            ("args", self.args),
            ("volatile", self.volatile),
            ("compress", self.compress),
            ("close", self.close),
            ("ack", self.ack),
            ("append_id", self.append_id),
            ("room", self.room),
            ("rooms", self.rooms),
            ("all", self.all),
            ("except", self.except),
        ] {
            if value.is_some() && !applies(field) {
                return Err(Malformed::DoesNotApply { field, operation });
            }
        }
        let rooms = match (self.room, self.rooms) {
            (Some(_), Some(_)) => return Err(Malformed::RoomAndRooms),
            (Some(""), None) => return Err(Malformed::EmptyRoom("room")),
            (Some(room), None) => vec![Room::Name(room.to_owned())],
            (None, Some(rooms)) => room_list("rooms", rooms, limits)?,
            (None, None) => Vec::new(),
        };
        let all = flag("all", self.all)?;
        match all {
            // Present at all, even `rooms` = `[]`: the error says so, and so does the schema.
            Some(true) if self.room.is_some() || self.rooms.is_some() => {
                return Err(Malformed::AllAndRooms)
            }
            Some(false) => {
                return Err(Malformed::BadFlag {
                    field: "all",
                    value: "false".into(),
                })
            }
            // Everything but an emit acts on every socket of the namespace only when asked:
            // a forgotten or misspelt `room` must not disconnect everyone.
            None if rooms.is_empty() && matches!(operation, "join" | "leave" | "disconnect") => {
                return Err(Malformed::NoSelection(operation))
            }
            _ => {}
        }
        let except = match self.except {
            Some(except) => room_list("except", except, limits)?,
            None => Vec::new(),
        };
        let operation = match operation {
            "event" => Operation::Emit {
                message: message(
                    "event",
                    self.event.unwrap_or_default(),
                    self.data,
                    self.args,
                    limits.max_json_depth,
                )?,
                volatile: flag("volatile", self.volatile)?.unwrap_or(false),
                compress: flag("compress", self.compress)?,
                ack: self.ack.map_or(Ok(Ack::Unsaid), ack)?,
                append_id: flag("append_id", self.append_id)?.unwrap_or(false),
            },
            "server_emit" => Operation::ServerEmit(message(
                "server_emit",
                self.server_emit.unwrap_or_default(),
                self.data,
                self.args,
                limits.max_json_depth,
            )?),
            "join" => Operation::Join(target_rooms("join", self.join, limits)?),
            "leave" => Operation::Leave(target_rooms("leave", self.leave, limits)?),
            _ => {
                if self.disconnect != Some("true") {
                    return Err(Malformed::BadFlag {
                        field: "disconnect",
                        value: self.disconnect.unwrap_or_default().to_owned(),
                    });
                }
                Operation::Disconnect {
                    close: flag("close", self.close)?.unwrap_or(false),
                }
            }
        };
        if let Operation::Emit {
            volatile: true,
            ack: Ack::Within(_),
            ..
        } = operation
        {
            return Err(Malformed::AckAndVolatile);
        }
        let ttl = match self.ttl {
            None => None,
            Some(text) => Some(Ttl(duration(text, MAX_TTL).ok_or_else(|| {
                Malformed::BadTtl {
                    value: text.to_owned(),
                }
            })?)),
        };
        Ok(Entry {
            operation,
            rooms,
            except,
            nsp,
            ttl,
        })
    }
}

/// Event names that a namespace's `serverSideEmit` refuses (socket.io's `Namespace`
/// `RESERVED_EVENTS`), and those Node's `EventEmitter` gives a meaning of its own.
pub const RESERVED_SERVER_EVENTS: [&str; 6] = [
    "connect",
    "connection",
    "new_namespace",
    "error",
    "newListener",
    "removeListener",
];

/// The event named in `field` and its arguments from `data` or `args`.
fn message(
    field: &'static str,
    event: &str,
    data: Option<&str>,
    args: Option<&str>,
    max_depth: usize,
) -> Result<Message, Malformed> {
    let reserved: &[&str] = if field == "event" {
        &RESERVED_EVENTS
    } else {
        &RESERVED_SERVER_EVENTS
    };
    let event = match event {
        "" => return Err(Malformed::EmptyEvent(field)),
        name if reserved.contains(&name) => {
            return Err(Malformed::ReservedEvent {
                field,
                event: name.to_owned(),
            })
        }
        name => name.to_owned(),
    };
    let args = match (data, args) {
        (Some(_), Some(_)) => return Err(Malformed::DataAndArgs),
        (Some(data), None) => vec![json("data", data, max_depth)?],
        (None, Some(args)) => match json("args", args, max_depth)? {
            Value::Array(args) => args,
            _ => {
                return Err(Malformed::WrongShape {
                    field: "args",
                    expected: "a JSON array of arguments",
                })
            }
        },
        (None, None) => Vec::new(),
    };
    let field = if data.is_some() { "data" } else { "args" };
    let mut blobs = 0;
    for arg in &args {
        blobs += binaries(field, arg)?;
    }
    if blobs > MAX_BINARY_ARGS {
        return Err(Malformed::TooManyBinaries { field, blobs });
    }
    Ok(Message {
        event,
        args,
        binaries: blobs,
    })
}

/// The rooms a `join` or `leave` names: a JSON array, not empty.
fn target_rooms(
    field: &'static str,
    text: Option<&str>,
    limits: &Limits,
) -> Result<Vec<Room>, Malformed> {
    let rooms = room_list(field, text.unwrap_or_default(), limits)?;
    if rooms.is_empty() {
        return Err(Malformed::WrongShape {
            field,
            expected: "a JSON array of at least one room",
        });
    }
    Ok(rooms)
}

/// Characters that change what a channel name means to the adapter: `#` ends the namespace part of
/// `<key>#<nsp>#<room>#`, so the channel of `/a#x` is read by the servers of `/a` as room `x` of
/// their own namespace (and dropped); `[` and `\` are glob syntax in each server's own
/// `<key>#<nsp>#*` pattern, so a server of `/a[1]` or `/a\b` never matches its own namespace's
/// channel. Either way Redis would count servers and the entry would reach no client.
const CHANNEL_CHARACTERS: [(char, &str); 3] = [
    (
        '#',
        "separates the namespace from the room in the adapter's channel names",
    ),
    (
        '[',
        "is glob syntax in the servers' channel pattern, so no server would receive it",
    ),
    (
        '\\',
        "is glob syntax in the servers' channel pattern, so no server would receive it",
    ),
];

/// The namespace, with a leading `/` added when missing as the emitter's `of()` does (`chat` is
/// `/chat`).
fn namespace(nsp: &str) -> Result<String, Malformed> {
    let nsp = if nsp.starts_with('/') {
        nsp.to_owned()
    } else {
        format!("/{nsp}")
    };
    for (character, why) in CHANNEL_CHARACTERS {
        if nsp.contains(character) {
            return Err(Malformed::NamespaceCharacter {
                nsp,
                character,
                why,
            });
        }
    }
    Ok(nsp)
}

fn json(field: &'static str, text: &str, max_depth: usize) -> Result<Value, Malformed> {
    let value = json_within(text.as_bytes(), max_depth)
        .ok_or(Malformed::TooDeep {
            field,
            limit: max_depth,
        })?
        .map_err(|e| Malformed::InvalidJson {
            field,
            error: json_error(text, &e),
        })?;
    check_numbers(field, &value)?;
    Ok(value)
}

/// Parses JSON `text` that nests at most `max_depth` levels; `None` when it nests deeper. The depth
/// is measured first by a scan that does not recurse, so that serde_json, its own guard (128
/// levels) lifted, recurses at most `max_depth` levels however deep a producer nests: up to the
/// first error serde_json meets, it reads strings and brackets where the scan does.
pub fn json_within(text: &[u8], max_depth: usize) -> Option<Result<Value, serde_json::Error>> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in text {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'[' | b'{' if !in_string => {
                depth += 1;
                if depth > max_depth {
                    return None;
                }
            }
            b']' | b'}' if !in_string => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let mut parser = serde_json::Deserializer::from_slice(text);
    parser.disable_recursion_limit();
    let parsed = Value::deserialize(&mut parser).and_then(|value| parser.end().map(|()| value));
    Some(parsed)
}

/// The parser's error in the producer's terms. serde_json reports a lone UTF-16 surrogate escape
/// (`"\ud800"`, half of an emoji's pair) as "unexpected end of hex escape", which sends people
/// looking for a typo in the hex digits.
fn json_error(text: &str, e: &serde_json::Error) -> String {
    let message = e.to_string();
    if !message.contains("hex escape") {
        return message;
    }
    match lone_surrogate(text) {
        Some(escape) => format!(
            "`{escape}` is half of a UTF-16 surrogate pair, not a character (line {} column {}): send the character itself, or both halves of the pair",
            e.line(),
            e.column()
        ),
        None => message,
    }
}

/// The first `\uD800`-`\uDFFF` escape in `text` that is not half of a proper pair.
fn lone_surrogate(text: &str) -> Option<String> {
    let escape_at = |i: usize| -> Option<u16> {
        let hex = text.get(i + 2..i + 6)?;
        (text.get(i..i + 2)? == "\\u")
            .then(|| u16::from_str_radix(hex, 16).ok())
            .flatten()
    };
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(unit) = escape_at(i) {
                match unit {
                    0xD800..=0xDBFF => match escape_at(i + 6) {
                        Some(0xDC00..=0xDFFF) => i += 12,
                        _ => return Some(text[i..i + 6].to_owned()),
                    },
                    0xDC00..=0xDFFF => return Some(text[i..i + 6].to_owned()),
                    _ => i += 6,
                }
                continue;
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    None
}

/// Refuses numbers that would arrive in JavaScript as a different number than the producer wrote.
fn check_numbers(field: &'static str, value: &Value) -> Result<(), Malformed> {
    match value {
        Value::Number(number) => {
            let literal = number.to_string();
            let is_integer_literal = !literal.contains(['.', 'e', 'E']);
            if is_integer_literal {
                let safe = number
                    .as_i64()
                    .is_some_and(|n| n.unsigned_abs() <= MAX_SAFE_MAGNITUDE);
                if !safe {
                    return Err(Malformed::UnsafeInteger { field, literal });
                }
            } else if !number.as_f64().is_some_and(f64::is_finite) {
                return Err(Malformed::NumberOutOfRange { field, literal });
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_numbers(field, v)),
        Value::Object(map) => map.values().try_for_each(|v| check_numbers(field, v)),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

/// A JSON array of rooms (non-empty strings, or numbers for rooms joined as numbers), without
/// repeats (the emitter keeps rooms in a `Set`, where 42 and "42" are two rooms).
fn room_list(field: &'static str, text: &str, limits: &Limits) -> Result<Vec<Room>, Malformed> {
    let shape = Malformed::WrongShape {
        field,
        expected: "a JSON array of room names (strings, or numbers for rooms joined as numbers)",
    };
    let Value::Array(items) = json(field, text, limits.max_json_depth)? else {
        return Err(shape);
    };
    let limit = limits.max_rooms;
    if items.len() > limit {
        return Err(Malformed::TooManyRooms {
            field,
            rooms: items.len(),
            limit,
        });
    }
    let mut rooms = Vec::with_capacity(items.len());
    // Repeats dropped in linear time: 80,000 rooms must not take seconds.
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for item in items {
        let room = match item {
            Value::String(room) if room.is_empty() => return Err(Malformed::EmptyRoom(field)),
            Value::String(room) => Room::Name(room),
            Value::Number(number) => Room::Number(number),
            _ => return Err(shape),
        };
        if seen.insert((matches!(room, Room::Number(_)), room.text().into_owned())) {
            rooms.push(room);
        }
    }
    Ok(rooms)
}

/// The base64 of a `{"$binary": "<base64>"}` argument, or `None` for any other value.
pub fn binary(value: &Value) -> Option<&Value> {
    match value {
        Value::Object(map) if map.len() == 1 => map.get(BINARY_KEY),
        _ => None,
    }
}

/// Decodes the bytes of a binary argument that [`Entry::parse`] accepted.
pub fn binary_bytes(base64: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(base64.as_str().unwrap_or_default())
        .expect("validated when the entry was parsed")
}

/// How many binary values `value` holds, each checked to be standard base64 (padded, as
/// `Buffer.toString("base64")`, `base64.b64encode` and `base64 -w0` write it).
fn binaries(field: &'static str, value: &Value) -> Result<usize, Malformed> {
    use base64::Engine as _;
    if let Some(encoded) = binary(value) {
        let Value::String(text) = encoded else {
            return Err(Malformed::BadBinary {
                field,
                problem: format!("{encoded} is not a string"),
            });
        };
        return base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(|_| 1)
            .map_err(|e| Malformed::BadBinary {
                field,
                problem: e.to_string(),
            });
    }
    match value {
        Value::Array(items) => items.iter().map(|v| binaries(field, v)).sum(),
        Value::Object(map) => map.values().map(|v| binaries(field, v)).sum(),
        _ => Ok(0),
    }
}

/// The `ack` field: `none`, or a duration such as `10s`, at least a millisecond and at most
/// [`MAX_ACK_TIMEOUT`].
fn ack(text: &str) -> Result<Ack, Malformed> {
    if text == "none" {
        return Ok(Ack::Off);
    }
    duration(text, MAX_ACK_TIMEOUT)
        .map(Ack::Within)
        .ok_or_else(|| Malformed::BadAck {
            value: text.to_owned(),
        })
}

/// A duration field (`ack`, `ttl`): humantime's grammar, whitespace around it allowed, from
/// [`MIN_DURATION`] to `max`.
fn duration(text: &str, max: Duration) -> Option<Duration> {
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|d| (MIN_DURATION..=max).contains(d))
}

fn flag(field: &'static str, text: Option<&str>) -> Result<Option<bool>, Malformed> {
    match text {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(Malformed::BadFlag {
            field,
            value: other.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An emit's message, `volatile` and `compress`.
    fn emit(entry: &Entry) -> (&Message, bool, Option<bool>) {
        match entry.operation() {
            Operation::Emit {
                message,
                volatile,
                compress,
                ..
            } => (message, *volatile, *compress),
            other => panic!("not an emit: {other:?}"),
        }
    }

    #[test]
    fn an_emit_may_ask_for_acknowledgements_and_its_id() {
        let mut entry = parse(&[
            ("event", "paid"),
            ("data", "1"),
            ("ack", "1m 30s"),
            ("append_id", "true"),
        ])
        .unwrap();
        assert_eq!(entry.ack(None), Some(Duration::from_secs(90)));
        entry.append_id(EntryId { ms: 5, seq: 1 });
        assert_eq!(emit(&entry).0.args, [json!(1), json!("5-1")]);
        // Without `append_id`, the arguments stay as produced.
        let mut plain = parse(&[("event", "paid"), ("data", "1")]).unwrap();
        assert_eq!(plain.ack(None), None);
        plain.append_id(EntryId { ms: 5, seq: 1 });
        assert_eq!(emit(&plain).0.args, [json!(1)]);
    }

    #[test]
    fn the_streams_default_ack_applies_to_emits_that_say_nothing() {
        let default = Some(Duration::from_secs(10));
        let unsaid = parse(&[("event", "paid")]).unwrap();
        assert_eq!(unsaid.ack(default), default);
        let own = parse(&[("event", "paid"), ("ack", "2s")]).unwrap();
        assert_eq!(own.ack(default), Some(Duration::from_secs(2)));
        let off = parse(&[("event", "typing"), ("ack", "none")]).unwrap();
        assert_eq!(off.ack(default), None);
        let volatile = parse(&[("event", "typing"), ("volatile", "true")]).unwrap();
        assert_eq!(
            volatile.ack(default),
            None,
            "a volatile event may be dropped"
        );
        let off_volatile = parse(&[("event", "t"), ("ack", "none"), ("volatile", "true")]);
        assert!(off_volatile.is_ok());
        let join = parse(&[("join", r#"["r"]"#), ("room", "a")]).unwrap();
        assert_eq!(join.ack(default), None, "only emits are acknowledged");
    }

    #[test]
    fn any_operation_may_have_a_lifetime_from_a_millisecond_to_a_week() {
        for (fields, ttl) in [
            (
                &[("event", "e"), ("ttl", "30s")][..],
                Duration::from_secs(30),
            ),
            (
                &[("server_emit", "e"), ("ttl", " 1.5s ")],
                Duration::from_millis(1500),
            ),
            (
                &[("join", r#"["g"]"#), ("all", "true"), ("ttl", "1ms")],
                MIN_DURATION,
            ),
            (
                &[("disconnect", "true"), ("all", "true"), ("ttl", "7days")],
                MAX_TTL,
            ),
        ] {
            assert_eq!(
                parse(fields).unwrap().ttl().map(Ttl::get),
                Some(ttl),
                "{fields:?}"
            );
        }
        assert_eq!(parse(&[("event", "e")]).unwrap().ttl(), None);
        for bad in [
            "0s",
            "999us",
            "7days 1ms",
            "30",
            "soon",
            "none",
            "-1s",
            "1.5ns",
        ] {
            assert_eq!(
                parse(&[("event", "e"), ("ttl", bad)]),
                Err(Malformed::BadTtl { value: bad.into() }),
                "{bad}"
            );
        }
        assert_eq!(
            Malformed::BadTtl { value: "0s".into() }.to_string(),
            "`ttl` must be a duration between 1ms and 7days, such as \"30s\", not \"0s\""
        );
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Entry, Malformed> {
        let fields: Vec<_> = pairs
            .iter()
            .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        Entry::parse(&fields)
    }

    #[test]
    fn minimal_entry_broadcasts_to_the_root_namespace() {
        let entry = parse(&[("event", "chat")]).unwrap();
        assert_eq!(emit(&entry).0.event, "chat");
        assert!(emit(&entry).0.args.is_empty());
        assert!(entry.rooms().is_empty());
        assert_eq!(entry.nsp(), "/");
        assert!(!emit(&entry).1);
        assert_eq!(emit(&entry).2, None);
    }

    #[test]
    fn full_entry_keeps_every_field() {
        let entry = parse(&[
            ("event", "chat"),
            ("args", r#"[1, "two", {"three": 3.5}]"#),
            ("rooms", r#"["a", "b", "a"]"#),
            ("except", r#"["c"]"#),
            ("nsp", "/admin"),
            ("volatile", "true"),
            ("compress", "false"),
            ("x-trace-id", "abc"),
        ])
        .unwrap();
        assert_eq!(
            emit(&entry).0.args,
            &[json!(1), json!("two"), json!({"three": 3.5})]
        );
        assert_eq!(entry.rooms(), &["a", "b"]);
        assert_eq!(entry.except(), &["c"]);
        assert_eq!(entry.nsp(), "/admin");
        assert!(emit(&entry).1);
        assert_eq!(emit(&entry).2, Some(false));
    }

    #[test]
    fn data_is_one_argument_even_when_it_is_an_array() {
        let entry = parse(&[("event", "e"), ("data", "[1,2]"), ("room", "r")]).unwrap();
        assert_eq!(emit(&entry).0.args, [json!([1, 2])]);
        assert_eq!(entry.rooms(), &["r"]);
    }

    #[test]
    fn every_rule_names_its_problem() {
        let cases: &[(&[(&str, &str)], Malformed)] = &[
            (&[("data", "1")], Malformed::MissingEvent),
            (&[("event", "")], Malformed::EmptyEvent("event")),
            (
                &[("event", "connect")],
                Malformed::ReservedEvent {
                    field: "event",
                    event: "connect".into(),
                },
            ),
            (
                &[("event", "e"), ("rom", "r")],
                Malformed::UnknownField("rom".into()),
            ),
            (
                &[("event", "e"), ("event", "f")],
                Malformed::DuplicateField("event".into()),
            ),
            (
                &[("event", "e"), ("data", "1"), ("args", "[]")],
                Malformed::DataAndArgs,
            ),
            (
                &[("event", "e"), ("room", "a"), ("rooms", "[]")],
                Malformed::RoomAndRooms,
            ),
            (
                &[("event", "e"), ("room", "")],
                Malformed::EmptyRoom("room"),
            ),
            (
                &[("event", "e"), ("rooms", r#"["a",""]"#)],
                Malformed::EmptyRoom("rooms"),
            ),
            (
                &[("event", "e"), ("nsp", "/a#x")],
                Malformed::NamespaceCharacter {
                    nsp: "/a#x".into(),
                    character: '#',
                    why: CHANNEL_CHARACTERS[0].1,
                },
            ),
            (
                &[("event", "e"), ("nsp", "/a[1]")],
                Malformed::NamespaceCharacter {
                    nsp: "/a[1]".into(),
                    character: '[',
                    why: CHANNEL_CHARACTERS[1].1,
                },
            ),
            (
                &[("event", "e"), ("args", "{}")],
                Malformed::WrongShape {
                    field: "args",
                    expected: "a JSON array of arguments",
                },
            ),
            (
                &[("event", "e"), ("rooms", "[true]")],
                Malformed::WrongShape {
                    field: "rooms",
                    expected: "a JSON array of room names (strings, or numbers for rooms joined as numbers)",
                },
            ),
            (
                &[("event", "e"), ("except", r#""a""#)],
                Malformed::WrongShape {
                    field: "except",
                    expected: "a JSON array of room names (strings, or numbers for rooms joined as numbers)",
                },
            ),
            (
                &[("event", "e"), ("volatile", "yes")],
                Malformed::BadFlag {
                    field: "volatile",
                    value: "yes".into(),
                },
            ),
            (
                &[("event", "e"), ("ack", "0s")],
                Malformed::BadAck { value: "0s".into() },
            ),
            (
                &[("event", "e"), ("ack", "11m")],
                Malformed::BadAck {
                    value: "11m".into(),
                },
            ),
            (
                &[("event", "e"), ("ack", "1s"), ("volatile", "true")],
                Malformed::AckAndVolatile,
            ),
            (
                &[("server_emit", "e"), ("ack", "1s")],
                Malformed::DoesNotApply {
                    field: "ack",
                    operation: "server_emit",
                },
            ),
            (
                &[("event", "e"), ("data", "9007199254740993")],
                Malformed::UnsafeInteger {
                    field: "data",
                    literal: "9007199254740993".into(),
                },
            ),
            (
                &[
                    ("event", "e"),
                    ("args", r#"[{"n": -100000000000000000000}]"#),
                ],
                Malformed::UnsafeInteger {
                    field: "args",
                    literal: "-100000000000000000000".into(),
                },
            ),
            (
                &[("event", "e"), ("data", "1e400")],
                Malformed::NumberOutOfRange {
                    field: "data",
                    literal: "1e+400".into(),
                },
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(parse(fields).as_ref(), Err(expected), "{fields:?}");
        }
    }

    #[test]
    fn invalid_json_reports_the_parser_position() {
        let err = parse(&[("event", "e"), ("data", "{text: 1}")]).unwrap_err();
        assert!(
            matches!(err, Malformed::InvalidJson { field: "data", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("line 1 column 2"), "{err}");
    }

    #[test]
    fn a_lone_surrogate_is_named_as_such() {
        for (rooms, escape) in [
            (r#"["\ud800"]"#, r"\ud800"),
            (r#"["a", "\udc00"]"#, r"\udc00"),
            (r#"["\\ud800", "\ud83dx"]"#, r"\ud83d"),
        ] {
            let err = parse(&[("event", "e"), ("rooms", rooms)]).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!("`{escape}` is half of a UTF-16 surrogate pair")),
                "{rooms}: {text}"
            );
        }
        let pair = parse(&[("event", "e"), ("rooms", r#"["\ud83d\ude00"]"#)]).unwrap();
        assert_eq!(pair.rooms(), ["\u{1f600}"]);
    }

    #[test]
    fn integers_up_to_two_to_the_53_are_accepted() {
        let entry = parse(&[
            ("event", "e"),
            ("args", "[9007199254740992, -9007199254740992, 1e20]"),
        ]);
        assert!(entry.is_ok(), "{entry:?}");
    }

    #[test]
    fn non_utf8_is_refused_with_the_field_named() {
        let fields = vec![(b"event".to_vec(), b"\xff".to_vec())];
        assert_eq!(
            Entry::parse(&fields),
            Err(Malformed::ValueNotUtf8("event".into()))
        );
        let fields = vec![(b"ev\xffent".to_vec(), b"x".to_vec())];
        assert!(matches!(
            Entry::parse(&fields),
            Err(Malformed::FieldNameNotUtf8(_))
        ));
    }

    #[test]
    fn entry_ids_round_trip() {
        let id: EntryId = "1700000000000-7".parse().unwrap();
        assert_eq!(
            id,
            EntryId {
                ms: 1_700_000_000_000,
                seq: 7
            }
        );
        assert_eq!(id.to_string(), "1700000000000-7");
        assert!("17".parse::<EntryId>().is_err());
        assert!("a-1".parse::<EntryId>().is_err());
    }

    #[test]
    fn every_emitter_operation_is_an_entry() {
        let join = parse(&[("join", r#"["game:7"]"#), ("room", "user:42")]).unwrap();
        assert_eq!(join.operation(), &Operation::Join(vec!["game:7".into()]));
        assert_eq!(join.rooms(), &["user:42"]);
        let leave = parse(&[("leave", r#"["game:7", 7]"#), ("all", "true")]).unwrap();
        assert_eq!(
            leave.operation(),
            &Operation::Leave(vec!["game:7".into(), Room::Number(7.into())])
        );
        assert!(leave.rooms().is_empty());
        let disconnect = parse(&[
            ("disconnect", "true"),
            ("rooms", r#"["user:42"]"#),
            ("except", r#"["admins"]"#),
            ("close", "true"),
        ])
        .unwrap();
        assert_eq!(
            disconnect.operation(),
            &Operation::Disconnect { close: true }
        );
        assert_eq!(disconnect.except(), &["admins"]);
        let server = parse(&[("server_emit", "flush"), ("args", r#"["k", 1]"#)]).unwrap();
        assert_eq!(
            server.message(),
            Some(&Message {
                event: "flush".into(),
                args: vec![json!("k"), json!(1)],
                binaries: 0,
            })
        );
        let everyone = parse(&[("event", "e"), ("all", "true")]).unwrap();
        assert!(everyone.rooms().is_empty());
    }

    /// A forgotten or misspelt selection must never turn a join, leave or disconnect into one for
    /// every socket; fields that mean nothing for an operation are refused, not ignored.
    #[test]
    fn operations_refuse_what_would_surprise() {
        let cases: &[(&[(&str, &str)], Malformed)] = &[
            (
                &[("disconnect", "true")],
                Malformed::NoSelection("disconnect"),
            ),
            (
                &[("join", r#"["g"]"#), ("except", r#"["a"]"#)],
                Malformed::NoSelection("join"),
            ),
            (
                &[("disconnect", "true"), ("rom", "user:42")],
                Malformed::UnknownField("rom".into()),
            ),
            (
                &[("join", r#"["g"]"#), ("room", "r"), ("all", "true")],
                Malformed::AllAndRooms,
            ),
            (
                &[("event", "e"), ("rooms", "[]"), ("all", "true")],
                Malformed::AllAndRooms,
            ),
            (
                &[("event", "e"), ("join", r#"["g"]"#), ("room", "r")],
                Malformed::TwoOperations("event", "join"),
            ),
            (
                &[("join", r#"["g"]"#), ("room", "r"), ("data", "1")],
                Malformed::DoesNotApply {
                    field: "data",
                    operation: "join",
                },
            ),
            (
                &[("server_emit", "e"), ("room", "r")],
                Malformed::DoesNotApply {
                    field: "room",
                    operation: "server_emit",
                },
            ),
            (
                &[("event", "e"), ("close", "true")],
                Malformed::DoesNotApply {
                    field: "close",
                    operation: "event",
                },
            ),
            (
                &[("disconnect", "false"), ("room", "r")],
                Malformed::BadFlag {
                    field: "disconnect",
                    value: "false".into(),
                },
            ),
            (
                &[("join", "[]"), ("room", "r")],
                Malformed::WrongShape {
                    field: "join",
                    expected: "a JSON array of at least one room",
                },
            ),
            (
                &[("join", "game:7"), ("room", "r")],
                Malformed::InvalidJson {
                    field: "join",
                    error: "expected value at line 1 column 1".into(),
                },
            ),
            (
                &[("server_emit", "connection")],
                Malformed::ReservedEvent {
                    field: "server_emit",
                    event: "connection".into(),
                },
            ),
            (
                &[("server_emit", "error")],
                Malformed::ReservedEvent {
                    field: "server_emit",
                    event: "error".into(),
                },
            ),
            (
                &[("event", "e"), ("all", "false")],
                Malformed::BadFlag {
                    field: "all",
                    value: "false".into(),
                },
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(parse(fields).as_ref(), Err(expected), "{fields:?}");
        }
    }

    #[test]
    fn a_namespace_without_its_slash_gets_one() {
        assert_eq!(
            parse(&[("event", "e"), ("nsp", "chat")]).unwrap().nsp(),
            "/chat"
        );
        assert_eq!(parse(&[("event", "e"), ("nsp", "")]).unwrap().nsp(), "/");
        assert!(matches!(
            parse(&[("event", "e"), ("nsp", "a#b")]),
            Err(Malformed::NamespaceCharacter { nsp, .. }) if nsp == "/a#b"
        ));
    }

    /// socket.io 4 keeps rooms as given to `join`: 42 and "42" are two rooms.
    #[test]
    fn rooms_may_be_numbers() {
        let entry = parse(&[
            ("event", "e"),
            ("rooms", r#"[42, "42", 42, 1.5]"#),
            ("except", "[7]"),
        ])
        .unwrap();
        assert_eq!(
            entry.rooms(),
            &[
                Room::Number(42.into()),
                "42".into(),
                Room::Number(serde_json::Number::from_f64(1.5).unwrap())
            ]
        );
        assert_eq!(entry.except(), &[Room::Number(7.into())]);
        assert!(matches!(
            parse(&[("event", "e"), ("rooms", "[9007199254740993]")]),
            Err(Malformed::UnsafeInteger { field: "rooms", .. })
        ));
    }

    /// `[[...[1]...]]`, `depth` levels.
    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn json_deeper_than_the_limit_says_so() {
        let limits = Limits::default();
        let err =
            parse(&[("event", "e"), ("data", &nested(limits.max_json_depth + 1))]).unwrap_err();
        assert_eq!(
            err,
            Malformed::TooDeep {
                field: "data",
                limit: 256
            }
        );
        assert!(
            err.to_string()
                .starts_with("`data` is nested deeper than limits.max_json_depth = 256 levels"),
            "{err}"
        );
        // 200 levels, as the emitter sends them, past serde_json's own 128.
        assert!(parse(&[("event", "e"), ("data", &nested(200))]).is_ok());
        assert!(parse(&[("event", "e"), ("data", &nested(limits.max_json_depth))]).is_ok());
        // `args` counts its own array.
        let args = format!("[{}]", nested(limits.max_json_depth));
        assert!(matches!(
            parse(&[("event", "e"), ("args", &args)]),
            Err(Malformed::TooDeep { field: "args", .. })
        ));
        // Brackets inside strings, escaped quotes included, are text, not nesting.
        let text = format!(r#"["\"{}", {{"a":"]]]"}}]"#, "[".repeat(300));
        assert!(parse(&[("event", "e"), ("data", &text)]).is_ok());
        let three = Limits {
            max_json_depth: 3,
            ..Limits::default()
        };
        let fields = |data: &str| {
            [
                (b"event".to_vec(), b"e".to_vec()),
                (b"data".to_vec(), data.as_bytes().to_vec()),
            ]
        };
        assert!(Entry::parse_within(&fields(r#"[{"a":[1]}]"#), &three).is_ok());
        assert!(Entry::parse_within(&fields(r#"[{"a":[[1]]}]"#), &three).is_err());
    }

    /// However deep a producer nests, nothing recurses past the limit: 100,000 levels are refused
    /// by the scan, and the deepest limit allowed parses, encodes and decodes in every format, in
    /// a debug build, on a thread with the stack of the main thread the relay's loop runs on.
    #[test]
    fn json_parsing_stays_within_a_small_stack_at_any_depth() {
        let deepest = Limits {
            max_json_depth: *JSON_DEPTHS.end(),
            ..Limits::default()
        };
        std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || {
                let fields = |data: String| {
                    [
                        (b"event".to_vec(), b"e".to_vec()),
                        (b"data".to_vec(), data.into_bytes()),
                    ]
                };
                assert!(matches!(
                    Entry::parse_within(&fields(nested(100_000)), &deepest),
                    Err(Malformed::TooDeep { .. })
                ));
                let entry = Entry::parse_within(&fields(nested(deepest.max_json_depth)), &deepest)
                    .expect("the deepest allowed");
                for target in crate::packet::Target::every_format("socket.io", "emitter") {
                    let packet = target.encode(&entry).expect("encodes");
                    crate::packet::decode(&packet.payload, &target).expect("decodes");
                }
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
    }

    #[test]
    fn binary_arguments_are_base64_checked_and_counted() {
        let entry = parse(&[
            ("event", "file"),
            (
                "args",
                r#"[{"$binary": "3q2+7w=="}, {"nested": {"$binary": ""}}]"#,
            ),
        ])
        .unwrap();
        let message = entry.message().unwrap();
        assert!(message.has_binary());
        assert_eq!(
            binary_bytes(binary(&message.args[0]).unwrap()),
            [0xde, 0xad, 0xbe, 0xef]
        );
        // Not the only key: an ordinary object.
        let plain = parse(&[("event", "e"), ("data", r#"{"$binary": "x", "k": 1}"#)]).unwrap();
        assert!(!plain.message().unwrap().has_binary());
        assert!(matches!(
            parse(&[("event", "e"), ("data", r#"{"$binary": "not base64!"}"#)]),
            Err(Malformed::BadBinary { field: "data", .. })
        ));
        assert!(matches!(
            parse(&[("event", "e"), ("data", r#"{"$binary": 12}"#)]),
            Err(Malformed::BadBinary { field: "data", .. })
        ));
        let eleven = format!("[{}]", [r#"{"$binary":"AA=="}"#; 11].join(","));
        assert_eq!(
            parse(&[("event", "e"), ("args", &eleven)]),
            Err(Malformed::TooManyBinaries {
                field: "args",
                blobs: 11
            })
        );
    }
}
