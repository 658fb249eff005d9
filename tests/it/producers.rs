//! The producer snippets of `examples/producers/` and the entry contract's JSON Schema.
//!
//! The Node (node-redis, ioredis) and Python (redis-py) snippets run as a user would run them,
//! against a relay and a real Socket.IO client, which must receive what they append. The Go and
//! Java snippets are not run: no Go toolchain or module proxy, no Maven Central here.
//!
//! The schema (through examples/producers/node/validate.js) and the relay's parser judge one
//! corpus of entries, covering every field and every [`Malformed`] variant, and must agree on each
//! entry, except on the checks that only the relay makes ([`RELAY_ONLY`], which the schema's
//! description lists): an entry that shows one is valid for the schema and refused by the relay.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use redis::Commands;
use serde_json::{json, Value};
use sio_relay::entry::Limits;
use sio_relay::entry::{
    Entry, Malformed, MAX_ACK_TIMEOUT, MAX_BINARY_ARGS, MAX_TTL, RESERVED_EVENTS,
    RESERVED_SERVER_EVENTS,
};
use sio_relay::packet::{Parser, Target};

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

fn producers_dir(language: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/producers")
        .join(language)
}

/// examples/producers/node, installed from its lockfile once: two tests use it, and two `npm ci`
/// at once in one directory would trip over each other.
fn node_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = producers_dir("node");
        npm_install(&dir);
        dir
    })
}

fn schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/entry.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the schema is JSON")
}

/// A virtualenv with examples/producers/python/requirements.txt installed; its python.
fn python_with_requirements() -> PathBuf {
    python_venv(
        "producers-venv",
        &producers_dir("python").join("requirements.txt"),
    )
}

/// Runs a snippet with `REDIS_URL` and `STREAM` pointing at the test's Redis; returns what it
/// printed (the entry ID).
fn run_snippet(name: &str, mut command: Command, redis: &RedisServer) -> String {
    let output = command
        .env("REDIS_URL", redis.url())
        .env("STREAM", STREAM)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{name}: run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{name}: {command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// What validate.js says of each entry: (valid, errors).
fn validate_js(entries: &[Value]) -> Vec<(bool, Vec<String>)> {
    let mut child = Command::new("node")
        .arg("validate.js")
        .current_dir(node_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run validate.js");
    let input = Value::Array(entries.to_vec()).to_string();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(input.as_bytes()).unwrap();
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "validate.js failed");
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results.len(), entries.len(), "one verdict per entry");
    results
        .iter()
        .map(|r| {
            let errors = r["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_owned())
                .collect();
            (r["valid"].as_bool().unwrap(), errors)
        })
        .collect()
}

/// Fields as a validator sees them: an object of text (a field given twice: the last one, as an
/// object keeps; bytes that are not UTF-8: replaced, as a language's string would hold them).
fn as_object(fields: &[(Vec<u8>, Vec<u8>)]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(f, v)| {
                (
                    String::from_utf8_lossy(f).into_owned(),
                    Value::String(String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect(),
    )
}

#[test]
fn the_node_and_python_snippets_reach_a_real_client() {
    let node_dir = node_dir();
    let python = python_with_requirements();

    let redis = RedisServer::start();
    let server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let clients = Clients::connect(&[
        ("user-42", server.url("/"), &["user:42"]),
        ("other", server.url("/"), &["user:7"]),
    ]);
    let _relay = Relay::start(&redis, "relay-1", &[]);
    let mut con = redis.connection();

    let node = |script: &str| {
        let mut c = Command::new("node");
        c.arg(script).current_dir(node_dir);
        c
    };
    let mut python_snippet = Command::new(&python);
    python_snippet
        .arg("produce.py")
        .current_dir(producers_dir("python"));
    let snippets = [
        ("node-redis", node("node-redis.js")),
        ("ioredis", node("ioredis.js")),
        ("redis-py", python_snippet),
    ];
    // What every snippet appends, and what the client in room user:42 must get of it.
    let data = json!({"orderId": "A-1001", "carrier": "UPS"});
    let shipped = ("order:shipped".to_owned(), json!([data]));
    let mut appended = Vec::new();
    for (i, (name, command)) in snippets.into_iter().enumerate() {
        let id = run_snippet(name, command, &redis);
        let stored: Vec<(String, RawFields)> = con.xrange(STREAM, &id, &id).unwrap();
        assert_eq!(
            stored.len(),
            1,
            "{name} printed {id:?}, not the ID of an entry it appended"
        );
        let fields: Vec<(String, String)> = stored[0]
            .1
            .iter()
            .map(|(f, v)| {
                (
                    String::from_utf8(f.clone()).unwrap(),
                    String::from_utf8(v.clone()).unwrap(),
                )
            })
            .collect();
        let parsed_data: Option<Value> = fields
            .iter()
            .find(|(f, _)| f == "data")
            .map(|(_, v)| serde_json::from_str(v).unwrap());
        let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["room", "event", "data"], "{name}: {fields:?}");
        assert_eq!(parsed_data.as_ref(), Some(&data), "{name}: {fields:?}");
        appended.push(as_object(&stored[0].1));
        clients.wait_events("user-42", i + 1, 20 * SECOND);
        assert_eq!(
            clients.events_of("user-42").last(),
            Some(&shipped),
            "{name}: what the client received"
        );
    }
    // What the snippets append is what the schema accepts.
    for ((valid, errors), entry) in validate_js(&appended).iter().zip(&appended) {
        assert!(valid, "the schema refuses {entry}: {errors:?}");
    }
    wait_until(10 * SECOND, "the three entries are acknowledged", || {
        pending(&mut con).is_empty()
    });
    assert_eq!(clients.events_of("user-42").len(), 3, "each entry once");
    assert!(clients.events_of("other").is_empty());
    assert_eq!(dead_letters(&mut con).len(), 0);
}

/// Checks only the relay makes: (name, words of the schema's description that name it). Each is
/// shown by at least one entry of the corpus, which the schema accepts and the relay refuses.
const RELAY_ONLY: [(&str, &str); 13] = [
    ("entry bytes", "total bytes of field names and values"),
    ("fields", "number of fields"),
    ("rooms", "number of rooms"),
    ("nesting depth", "JSON nested deeper than"),
    ("unsafe integers", "integer literals beyond ±2^53"),
    ("infinite numbers", "numbers that are not finite doubles"),
    ("binary values", "more than 10 binary values"),
    ("JSON parser", "bytes with a JSON-parser adapter"),
    ("ack range", "the range of ack (1ms to 10m)"),
    ("ttl range", "the range of ttl (1ms to 7days)"),
    (
        "duration fractions",
        "ack and ttl fractions that are not a whole number of nanoseconds",
    ),
    ("UTF-8", "not UTF-8"),
    ("duplicate fields", "a field given twice"),
];

/// Every [`Malformed`] variant, by name: the corpus has an entry refused with each.
const VARIANTS: [&str; 30] = [
    "MissingEvent",
    "TwoOperations",
    "DoesNotApply",
    "NoSelection",
    "AllAndRooms",
    "EmptyEvent",
    "ReservedEvent",
    "FieldNameNotUtf8",
    "ValueNotUtf8",
    "DuplicateField",
    "UnknownField",
    "InvalidJson",
    "TooDeep",
    "WrongShape",
    "DataAndArgs",
    "RoomAndRooms",
    "EmptyRoom",
    "NamespaceCharacter",
    "UnsafeInteger",
    "BadBinary",
    "BinaryNeedsMsgpack",
    "TooManyBinaries",
    "NumberOutOfRange",
    "BadFlag",
    "BadAck",
    "BadTtl",
    "AckAndVolatile",
    "TooLarge",
    "TooManyFields",
    "TooManyRooms",
];

/// The variant's name. No wildcard: a new variant does not compile until it is named here, and
/// then [`VARIANTS`] and the corpus must have it too.
fn variant(malformed: &Malformed) -> &'static str {
    use Malformed::*;
    match malformed {
        MissingEvent => "MissingEvent",
        TwoOperations(..) => "TwoOperations",
        DoesNotApply { .. } => "DoesNotApply",
        NoSelection(_) => "NoSelection",
        AllAndRooms => "AllAndRooms",
        EmptyEvent(_) => "EmptyEvent",
        ReservedEvent { .. } => "ReservedEvent",
        FieldNameNotUtf8(_) => "FieldNameNotUtf8",
        ValueNotUtf8(_) => "ValueNotUtf8",
        DuplicateField(_) => "DuplicateField",
        UnknownField(_) => "UnknownField",
        InvalidJson { .. } => "InvalidJson",
        TooDeep { .. } => "TooDeep",
        WrongShape { .. } => "WrongShape",
        DataAndArgs => "DataAndArgs",
        RoomAndRooms => "RoomAndRooms",
        EmptyRoom(_) => "EmptyRoom",
        NamespaceCharacter { .. } => "NamespaceCharacter",
        UnsafeInteger { .. } => "UnsafeInteger",
        BadBinary { .. } => "BadBinary",
        BinaryNeedsMsgpack => "BinaryNeedsMsgpack",
        TooManyBinaries { .. } => "TooManyBinaries",
        NumberOutOfRange { .. } => "NumberOutOfRange",
        BadFlag { .. } => "BadFlag",
        BadAck { .. } => "BadAck",
        BadTtl { .. } => "BadTtl",
        AckAndVolatile => "AckAndVolatile",
        TooLarge { .. } => "TooLarge",
        TooManyFields { .. } => "TooManyFields",
        TooManyRooms { .. } => "TooManyRooms",
    }
}

#[derive(Debug)]
enum Expect {
    /// Both accept it.
    Valid,
    /// Both refuse it; the relay with this [`Malformed`] variant.
    Invalid(&'static str),
    /// The schema accepts it; the relay refuses it with the variant, for this check of
    /// [`RELAY_ONLY`].
    RelayOnly(&'static str, &'static str),
}

struct Case {
    name: String,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    expect: Expect,
    /// What the servers run, which decides what their format can carry.
    servers: Servers,
}

#[derive(Clone, Copy)]
enum Servers {
    /// The classic adapter with its default parser, MessagePack.
    Classic,
    /// The classic adapter with a JSON parser (`target.parser = "json"`).
    JsonParser,
}

fn raw(name: &str, fields: Vec<(Vec<u8>, Vec<u8>)>, expect: Expect) -> Case {
    Case {
        name: name.to_owned(),
        fields,
        expect,
        servers: Servers::Classic,
    }
}

fn case(name: &str, fields: &[(&str, &str)], expect: Expect) -> Case {
    let fields = fields
        .iter()
        .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    raw(name, fields, expect)
}

fn valid(name: &str, fields: &[(&str, &str)]) -> Case {
    case(name, fields, Expect::Valid)
}

fn invalid(name: &str, fields: &[(&str, &str)], variant: &'static str) -> Case {
    case(name, fields, Expect::Invalid(variant))
}

fn relay_only(name: &str, fields: &[(&str, &str)], check: &str, variant: &'static str) -> Case {
    let check = RELAY_ONLY
        .iter()
        .find(|(c, _)| *c == check)
        .unwrap_or_else(|| panic!("{check} is not in RELAY_ONLY"))
        .0;
    case(name, fields, Expect::RelayOnly(check, variant))
}

/// `n` `x-` fields and an `event`.
fn with_metadata(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields: Vec<_> = (0..n)
        .map(|i| (format!("x-{i}").into_bytes(), b"v".to_vec()))
        .collect();
    fields.push((b"event".to_vec(), b"e".to_vec()));
    fields
}

fn corpus() -> Vec<Case> {
    let limits = Limits::default();
    let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    let binaries = |n: usize| format!("[{}]", vec![r#"{"$binary":"AA=="}"#; n].join(","));
    let rooms = |n: usize| {
        serde_json::to_string(&(0..n).map(|i| format!("r{i}")).collect::<Vec<_>>()).unwrap()
    };
    let too_large = format!("\"{}\"", "x".repeat(limits.max_entry_bytes));
    let (fits, too_deep) = (
        nested(limits.max_json_depth),
        nested(limits.max_json_depth + 1),
    );
    let (ten_binaries, eleven_binaries) =
        (binaries(MAX_BINARY_ARGS), binaries(MAX_BINARY_ARGS + 1));
    let (max_rooms, too_many_rooms) = (rooms(limits.max_rooms), rooms(limits.max_rooms + 1));
    let g = r#"["g"]"#;
    let mut cases = vec![
        // Emits.
        valid("an event alone", &[("event", "e")]),
        valid(
            "room, event and data",
            &[("room", "user:42"), ("event", "e"), ("data", r#"{"a":1}"#)],
        ),
        valid("data a string", &[("event", "e"), ("data", r#""hello""#)]),
        valid("data null", &[("event", "e"), ("data", "null")]),
        valid("data an array", &[("event", "e"), ("data", "[1,2]")]),
        valid(
            "data with whitespace and numbers",
            &[("event", "e"), ("data", " {\"a\": [1, 2.5, -0, 1e20]}\n")],
        ),
        valid(
            "data an escaped emoji",
            &[("event", "e"), ("data", r#""\ud83d\ude00""#)],
        ),
        valid("args", &[("event", "e"), ("args", r#"[1,"two",null]"#)]),
        valid("args empty", &[("event", "e"), ("args", "[]")]),
        valid(
            "integers at ±2^53",
            &[
                ("event", "e"),
                ("args", "[9007199254740992,-9007199254740992]"),
            ],
        ),
        valid(
            "rooms with numbers",
            &[("rooms", r#"["a",42,1.5]"#), ("event", "e")],
        ),
        valid(
            "rooms repeated",
            &[("rooms", r#"["a","a"]"#), ("event", "e")],
        ),
        valid("rooms empty on an emit", &[("rooms", "[]"), ("event", "e")]),
        valid(
            "except",
            &[
                ("event", "e"),
                ("room", "lobby"),
                ("except", r#"["banned",7]"#),
            ],
        ),
        valid("nsp without a slash", &[("nsp", "chat"), ("event", "e")]),
        valid("nsp empty", &[("nsp", ""), ("event", "e")]),
        valid("nsp /admin", &[("nsp", "/admin"), ("event", "e")]),
        valid(
            "volatile and compress",
            &[("event", "e"), ("volatile", "true"), ("compress", "false")],
        ),
        valid("ack", &[("event", "e"), ("ack", "10s")]),
        valid(
            "ack with volatile false",
            &[("event", "e"), ("ack", "1m 30s"), ("volatile", "false")],
        ),
        valid("ack with a fraction", &[("event", "e"), ("ack", "1.5s")]),
        valid("ack in mins", &[("event", "e"), ("ack", "2mins")]),
        valid("ack with spaces", &[("event", "e"), ("ack", " 1 0 s ")]),
        valid("ack in µs", &[("event", "e"), ("ack", "1s 500000µs")]),
        valid(
            "ack with Unicode spaces",
            &[("event", "e"), ("ack", "1\u{a0}s\u{2003}")],
        ),
        valid("ack of 10m", &[("event", "e"), ("ack", "10m")]),
        valid("ack none", &[("event", "e"), ("ack", "none")]),
        valid(
            "ack none on a volatile event",
            &[("event", "e"), ("ack", "none"), ("volatile", "true")],
        ),
        valid("append_id", &[("event", "e"), ("append_id", "true")]),
        valid("ttl", &[("event", "e"), ("ttl", "30s")]),
        valid("ttl of 1ms", &[("event", "e"), ("ttl", "1ms")]),
        valid("ttl of 7days", &[("event", "e"), ("ttl", "7days")]),
        valid("ttl with spaces", &[("event", "e"), ("ttl", " 1h 30m ")]),
        valid(
            "ttl with ack",
            &[("event", "e"), ("ack", "10s"), ("ttl", "2m")],
        ),
        valid(
            "ttl on a volatile event",
            &[("event", "e"), ("volatile", "true"), ("ttl", "5s")],
        ),
        valid(
            "ttl on a server_emit",
            &[("server_emit", "e"), ("ttl", "1.5s")],
        ),
        valid(
            "ttl on a disconnect",
            &[("disconnect", "true"), ("all", "true"), ("ttl", "1m")],
        ),
        valid(
            "traceparent",
            &[
                ("event", "e"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
        ),
        valid(
            "traceparent on a join",
            &[
                ("join", r#"["g"]"#),
                ("room", "r"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
        ),
        valid(
            "a traceparent that is no trace context (ignored)",
            &[("event", "e"), ("traceparent", "not-a-trace-context")],
        ),
        valid(
            "bytes",
            &[("event", "e"), ("data", r#"{"b":{"$binary":"3q2+7w=="}}"#)],
        ),
        valid(
            "bytes of every length",
            &[
                ("event", "e"),
                (
                    "args",
                    r#"[{"$binary":""},{"$binary":"AQ=="},{"$binary":"AAE="}]"#,
                ),
            ],
        ),
        valid(
            "$binary with another key is JSON",
            &[("event", "e"), ("data", r#"{"$binary":"!","k":2}"#)],
        ),
        valid(
            "10 binary values",
            &[("event", "e"), ("args", &ten_binaries)],
        ),
        valid("256 levels deep", &[("event", "e"), ("data", &fits)]),
        valid("10,000 rooms", &[("event", "e"), ("rooms", &max_rooms)]),
        valid("x- metadata", &[("event", "e"), ("x-trace", "abc")]),
        valid("all on an emit", &[("event", "e"), ("all", "true")]),
        valid(
            "event error (reserved for server_emit only)",
            &[("event", "error")],
        ),
        // The other operations.
        valid("join", &[("join", g), ("room", "r")]),
        valid(
            "join of numbers",
            &[("join", r#"["g",7]"#), ("rooms", r#"["r"]"#)],
        ),
        valid(
            "leave with all and except",
            &[("leave", g), ("all", "true"), ("except", r#"["a"]"#)],
        ),
        valid(
            "disconnect with close",
            &[
                ("disconnect", "true"),
                ("rooms", r#"["r"]"#),
                ("close", "true"),
            ],
        ),
        valid(
            "disconnect of all",
            &[("disconnect", "true"), ("all", "true"), ("close", "false")],
        ),
        valid("server_emit", &[("server_emit", "ping"), ("args", "[1]")]),
        valid(
            "server_emit disconnect (reserved for event only)",
            &[
                ("server_emit", "disconnect"),
                ("data", r#""x""#),
                ("nsp", "admin"),
            ],
        ),
        // Refused by both.
        invalid("no operation", &[("room", "r")], "MissingEvent"),
        invalid("no field", &[], "MissingEvent"),
        invalid(
            "event and join",
            &[("event", "e"), ("join", g), ("room", "r")],
            "TwoOperations",
        ),
        invalid(
            "disconnect and server_emit",
            &[("disconnect", "true"), ("server_emit", "s")],
            "TwoOperations",
        ),
        invalid("empty event", &[("event", "")], "EmptyEvent"),
        invalid("empty server_emit", &[("server_emit", "")], "EmptyEvent"),
        invalid("reserved event", &[("event", "connect")], "ReservedEvent"),
        invalid(
            "reserved event newListener",
            &[("event", "newListener")],
            "ReservedEvent",
        ),
        invalid(
            "reserved server event",
            &[("server_emit", "connection")],
            "ReservedEvent",
        ),
        invalid(
            "reserved server event error",
            &[("server_emit", "error")],
            "ReservedEvent",
        ),
        invalid(
            "unknown field",
            &[("event", "e"), ("rom", "r")],
            "UnknownField",
        ),
        invalid(
            "field names are case-sensitive",
            &[("Event", "e")],
            "UnknownField",
        ),
        invalid(
            "empty field name",
            &[("event", "e"), ("", "v")],
            "UnknownField",
        ),
        invalid(
            "data not JSON",
            &[("event", "e"), ("data", "{")],
            "InvalidJson",
        ),
        invalid(
            "data not JSON text",
            &[("event", "e"), ("data", "hello")],
            "InvalidJson",
        ),
        invalid(
            "a lone surrogate in data",
            &[("event", "e"), ("data", r#""\ud800""#)],
            "InvalidJson",
        ),
        invalid(
            "a lone surrogate in a key",
            &[("event", "e"), ("args", r#"[{"\udc00":1}]"#)],
            "InvalidJson",
        ),
        invalid(
            "a lone surrogate in rooms",
            &[("event", "e"), ("rooms", r#"["a\ud83d"]"#)],
            "InvalidJson",
        ),
        invalid(
            "except not JSON",
            &[("event", "e"), ("except", "banned")],
            "InvalidJson",
        ),
        invalid(
            "leave not JSON",
            &[("leave", "g"), ("all", "true")],
            "InvalidJson",
        ),
        invalid(
            "args not an array",
            &[("event", "e"), ("args", r#"{"a":1}"#)],
            "WrongShape",
        ),
        invalid(
            "rooms not an array",
            &[("event", "e"), ("rooms", r#""a""#)],
            "WrongShape",
        ),
        invalid(
            "rooms with an object",
            &[("event", "e"), ("rooms", r#"[{"a":1}]"#)],
            "WrongShape",
        ),
        invalid(
            "except with a boolean",
            &[("event", "e"), ("except", "[true]")],
            "WrongShape",
        ),
        invalid(
            "join of no room",
            &[("join", "[]"), ("room", "r")],
            "WrongShape",
        ),
        invalid(
            "data and args",
            &[("event", "e"), ("data", "1"), ("args", "[1]")],
            "DataAndArgs",
        ),
        invalid(
            "room and rooms",
            &[("event", "e"), ("room", "a"), ("rooms", r#"["b"]"#)],
            "RoomAndRooms",
        ),
        invalid("empty room", &[("event", "e"), ("room", "")], "EmptyRoom"),
        invalid(
            "empty room in rooms",
            &[("event", "e"), ("rooms", r#"["a",""]"#)],
            "EmptyRoom",
        ),
        invalid(
            "empty room to join",
            &[("join", r#"[""]"#), ("room", "r")],
            "EmptyRoom",
        ),
        invalid(
            "nsp with #",
            &[("nsp", "/a#b"), ("event", "e")],
            "NamespaceCharacter",
        ),
        invalid(
            "nsp with [",
            &[("nsp", "a[1]"), ("event", "e")],
            "NamespaceCharacter",
        ),
        invalid(
            "nsp with a backslash",
            &[("nsp", r"/a\b"), ("event", "e")],
            "NamespaceCharacter",
        ),
        invalid(
            "volatile yes",
            &[("event", "e"), ("volatile", "yes")],
            "BadFlag",
        ),
        invalid(
            "compress TRUE",
            &[("event", "e"), ("compress", "TRUE")],
            "BadFlag",
        ),
        invalid(
            "append_id 1",
            &[("event", "e"), ("append_id", "1")],
            "BadFlag",
        ),
        invalid(
            "close empty",
            &[("disconnect", "true"), ("room", "r"), ("close", "")],
            "BadFlag",
        ),
        invalid("all false", &[("event", "e"), ("all", "false")], "BadFlag"),
        invalid(
            "disconnect false",
            &[("disconnect", "false"), ("room", "r")],
            "BadFlag",
        ),
        invalid(
            "ack not a duration",
            &[("event", "e"), ("ack", "soon")],
            "BadAck",
        ),
        invalid(
            "ack without a unit",
            &[("event", "e"), ("ack", "10")],
            "BadAck",
        ),
        invalid(
            "ack of an unknown unit",
            &[("event", "e"), ("ack", "10 sex")],
            "BadAck",
        ),
        invalid(
            "ack with a bare dot",
            &[("event", "e"), ("ack", "1.s")],
            "BadAck",
        ),
        invalid("ack negative", &[("event", "e"), ("ack", "-1s")], "BadAck"),
        invalid(
            "ack with a BOM (not a space to the relay)",
            &[("event", "e"), ("ack", "10s\u{feff}")],
            "BadAck",
        ),
        invalid("ttl none", &[("event", "e"), ("ttl", "none")], "BadTtl"),
        invalid(
            "ttl without a unit",
            &[("event", "e"), ("ttl", "30")],
            "BadTtl",
        ),
        invalid("ttl negative", &[("event", "e"), ("ttl", "-1s")], "BadTtl"),
        invalid("ttl empty", &[("event", "e"), ("ttl", "")], "BadTtl"),
        invalid(
            "ack and volatile",
            &[("event", "e"), ("ack", "10s"), ("volatile", "true")],
            "AckAndVolatile",
        ),
        invalid(
            "ack on a join",
            &[("join", g), ("room", "r"), ("ack", "10s")],
            "DoesNotApply",
        ),
        invalid(
            "data on a join",
            &[("join", g), ("room", "r"), ("data", "1")],
            "DoesNotApply",
        ),
        invalid(
            "args on a disconnect",
            &[("disconnect", "true"), ("room", "r"), ("args", "[]")],
            "DoesNotApply",
        ),
        invalid(
            "volatile on a disconnect",
            &[("disconnect", "true"), ("room", "r"), ("volatile", "false")],
            "DoesNotApply",
        ),
        invalid(
            "append_id on a leave",
            &[("leave", g), ("room", "r"), ("append_id", "true")],
            "DoesNotApply",
        ),
        invalid(
            "close on an emit",
            &[("event", "e"), ("close", "true")],
            "DoesNotApply",
        ),
        invalid(
            "compress on a server_emit",
            &[("server_emit", "s"), ("compress", "true")],
            "DoesNotApply",
        ),
        invalid(
            "room on a server_emit",
            &[("server_emit", "s"), ("room", "r")],
            "DoesNotApply",
        ),
        invalid(
            "rooms on a server_emit",
            &[("server_emit", "s"), ("rooms", "[]")],
            "DoesNotApply",
        ),
        invalid(
            "all on a server_emit",
            &[("server_emit", "s"), ("all", "true")],
            "DoesNotApply",
        ),
        invalid(
            "except on a server_emit",
            &[("server_emit", "s"), ("except", "[]")],
            "DoesNotApply",
        ),
        invalid("join without a selection", &[("join", g)], "NoSelection"),
        invalid(
            "disconnect with except only",
            &[("disconnect", "true"), ("except", r#"["a"]"#)],
            "NoSelection",
        ),
        invalid(
            "leave with empty rooms",
            &[("leave", g), ("rooms", " [\n] ")],
            "NoSelection",
        ),
        invalid(
            "all with room",
            &[("disconnect", "true"), ("all", "true"), ("room", "r")],
            "AllAndRooms",
        ),
        invalid(
            "all with empty rooms",
            &[("event", "e"), ("all", "true"), ("rooms", "[]")],
            "AllAndRooms",
        ),
        invalid(
            "bytes not base64",
            &[("event", "e"), ("data", r#"{"$binary":"!!"}"#)],
            "BadBinary",
        ),
        invalid(
            "bytes not a string",
            &[("event", "e"), ("args", r#"[{"$binary":5}]"#)],
            "BadBinary",
        ),
        invalid(
            "bytes unpadded",
            &[("event", "e"), ("data", r#"{"$binary":"AA"}"#)],
            "BadBinary",
        ),
        invalid(
            "bytes with trailing bits (AB==)",
            &[("event", "e"), ("data", r#"[{"$binary":"AB=="}]"#)],
            "BadBinary",
        ),
        invalid(
            "bytes with trailing bits (AAB=)",
            &[("event", "e"), ("data", r#"{"k":{"$binary":"AAB="}}"#)],
            "BadBinary",
        ),
        // Only the relay can tell.
        relay_only(
            "an entry past 1 MiB",
            &[("event", "e"), ("data", &too_large)],
            "entry bytes",
            "TooLarge",
        ),
        relay_only(
            "10,001 rooms",
            &[("event", "e"), ("rooms", &too_many_rooms)],
            "rooms",
            "TooManyRooms",
        ),
        relay_only(
            "257 levels deep",
            &[("event", "e"), ("data", &too_deep)],
            "nesting depth",
            "TooDeep",
        ),
        relay_only(
            "2^53 + 1",
            &[("event", "e"), ("data", "9007199254740993")],
            "unsafe integers",
            "UnsafeInteger",
        ),
        relay_only(
            "-(2^53 + 1) as a room",
            &[("event", "e"), ("except", "[-9007199254740993]")],
            "unsafe integers",
            "UnsafeInteger",
        ),
        relay_only(
            "1e400",
            &[("event", "e"), ("args", "[1e400]")],
            "infinite numbers",
            "NumberOutOfRange",
        ),
        relay_only(
            "11 binary values",
            &[("event", "e"), ("args", &eleven_binaries)],
            "binary values",
            "TooManyBinaries",
        ),
        relay_only(
            "ack of 0s",
            &[("event", "e"), ("ack", "0s")],
            "ack range",
            "BadAck",
        ),
        relay_only(
            "ack of 10m 1ms",
            &[("event", "e"), ("ack", "10m 1ms")],
            "ack range",
            "BadAck",
        ),
        relay_only(
            "ack of a fraction of a nanosecond",
            &[("event", "e"), ("ack", "1.5ns")],
            "duration fractions",
            "BadAck",
        ),
        relay_only(
            "ack of a fraction of a second in hours",
            &[("event", "e"), ("ack", "0.0001h")],
            "duration fractions",
            "BadAck",
        ),
        relay_only(
            "ttl of 0s",
            &[("event", "e"), ("ttl", "0s")],
            "ttl range",
            "BadTtl",
        ),
        relay_only(
            "ttl of 7days 1ms",
            &[("event", "e"), ("ttl", "7days 1ms")],
            "ttl range",
            "BadTtl",
        ),
        relay_only(
            "ttl of a fraction of a nanosecond",
            &[("event", "e"), ("ttl", "0.5ns")],
            "duration fractions",
            "BadTtl",
        ),
        relay_only(
            "event twice",
            &[("event", "e"), ("event", "f")],
            "duplicate fields",
            "DuplicateField",
        ),
    ];
    let mut json_parser = relay_only(
        "bytes for a JSON parser",
        &[("event", "e"), ("data", r#"{"$binary":"AA=="}"#)],
        "JSON parser",
        "BinaryNeedsMsgpack",
    );
    json_parser.servers = Servers::JsonParser;
    cases.push(json_parser);
    let mut no_bytes = valid(
        "no bytes for a JSON parser",
        &[("event", "e"), ("data", "1")],
    );
    no_bytes.servers = Servers::JsonParser;
    cases.push(no_bytes);

    cases.push(raw(
        "64 fields",
        with_metadata(limits.max_fields - 1),
        Expect::Valid,
    ));
    cases.push(raw(
        "65 fields",
        with_metadata(limits.max_fields),
        Expect::RelayOnly("fields", "TooManyFields"),
    ));
    cases.push(raw(
        "an event not UTF-8",
        vec![(b"event".to_vec(), b"e\xff".to_vec())],
        Expect::RelayOnly("UTF-8", "ValueNotUtf8"),
    ));
    cases.push(raw(
        "x- metadata not UTF-8",
        vec![
            (b"event".to_vec(), b"e".to_vec()),
            (b"x-blob".to_vec(), b"\xff\xfe".to_vec()),
        ],
        Expect::Valid,
    ));
    cases.push(raw(
        "a field name not UTF-8",
        vec![(b"ev\xffent".to_vec(), b"e".to_vec())],
        Expect::Invalid("FieldNameNotUtf8"),
    ));
    cases
}

/// The relay's verdict: the entry's fields, and what the servers' format can carry.
fn relay_verdict(case: &Case) -> Result<(), Malformed> {
    let entry = Entry::parse(&case.fields)?;
    let mut target = Target::classic("socket.io", "emittr");
    match case.servers {
        Servers::Classic => {}
        Servers::JsonParser => target.parser = Parser::Json,
    }
    target.carries(&entry).map(|_| ())
}

#[test]
fn the_schema_and_the_relay_agree_on_every_entry_of_the_corpus() {
    let cases = corpus();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        cases.len(),
        "two entries of the corpus have one name"
    );
    let entries: Vec<Value> = cases.iter().map(|c| as_object(&c.fields)).collect();
    let verdicts = validate_js(&entries);
    let mut disagreements = Vec::new();
    let mut variants_seen = std::collections::BTreeSet::new();
    let mut relay_only_seen = std::collections::BTreeSet::new();
    for (case, (schema_valid, errors)) in cases.iter().zip(&verdicts) {
        let name = &case.name;
        let relay = relay_verdict(case);
        if let Err(malformed) = &relay {
            variants_seen.insert(variant(malformed));
        }
        let problem = match (&case.expect, *schema_valid, &relay) {
            (Expect::Valid, true, Ok(())) => None,
            (Expect::Valid, _, _) => Some(format!(
                "valid, but the schema says {errors:?} and the relay {relay:?}"
            )),
            (Expect::Invalid(expected), false, Err(m)) if variant(m) == *expected => None,
            (Expect::Invalid(expected), _, _) => Some(format!(
                "invalid ({expected}), but the schema says valid = {schema_valid} and the relay {relay:?}"
            )),
            (Expect::RelayOnly(check, expected), true, Err(m)) if variant(m) == *expected => {
                relay_only_seen.insert(*check);
                None
            }
            (Expect::RelayOnly(check, expected), _, _) => Some(format!(
                "relay-only ({check}, {expected}), but the schema says {errors:?} and the relay {relay:?}"
            )),
        };
        if let Some(problem) = problem {
            disagreements.push(format!("{name}: {problem}"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} entries:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
    let missing: Vec<_> = VARIANTS
        .iter()
        .filter(|v| !variants_seen.contains(*v))
        .collect();
    assert!(
        missing.is_empty(),
        "no entry of the corpus is refused with {missing:?}"
    );
    assert_eq!(
        variants_seen.len(),
        VARIANTS.len(),
        "variants not in VARIANTS: {variants_seen:?}"
    );
    let unshown: Vec<_> = RELAY_ONLY
        .iter()
        .filter(|(check, _)| !relay_only_seen.contains(check))
        .collect();
    assert!(
        unshown.is_empty(),
        "no entry of the corpus shows {unshown:?}"
    );
}

/// The schema's description names each check of [`RELAY_ONLY`], with the relay's numbers.
#[test]
fn the_schema_lists_what_only_the_relay_checks() {
    let schema = schema();
    let description = schema["description"].as_str().unwrap();
    for (check, words) in RELAY_ONLY {
        assert!(
            description.contains(words),
            "the schema's description does not name {check:?} ({words:?})"
        );
    }
    let limits = Limits::default();
    for (limit, words) in [
        (limits.max_entry_bytes == 1 << 20, "1 MiB by default"),
        (limits.max_fields == 64, "limits.max_fields, 64"),
        (limits.max_rooms == 10_000, "(limits.max_rooms), 10,000"),
        (
            limits.max_json_depth == 256,
            "256 levels (limits.max_json_depth",
        ),
        (MAX_BINARY_ARGS == 10, "more than 10 binary values"),
        (MAX_ACK_TIMEOUT == 10 * 60 * SECOND, "(1ms to 10m)"),
        (MAX_TTL == 7 * 24 * 3600 * SECOND, "(1ms to 7days)"),
    ] {
        assert!(
            limit && description.contains(words),
            "{words:?}: the relay's number changed, or the description's"
        );
    }
}

/// Every field the relay knows is described in the schema, and the schema knows no other; the
/// reserved event names are the relay's; each field appears in a valid entry of the corpus.
#[test]
fn the_schema_describes_every_field_the_relay_knows() {
    let schema = schema();
    let properties = schema["properties"].as_object().unwrap();
    // The relay's own list, from the message that names the known fields.
    let message = Malformed::UnknownField("?".into()).to_string();
    let known = message
        .split_once("(known: ")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map(|(list, _)| list)
        .expect("the unknown-field message lists the known fields");
    let mut relay_fields: Vec<&str> = known.split(", ").collect();
    relay_fields.sort();
    let mut schema_fields: Vec<&str> = properties.keys().map(String::as_str).collect();
    schema_fields.sort();
    assert_eq!(schema_fields, relay_fields);
    // Each of them, alone in an entry, is refused for another reason than being unknown.
    for field in &relay_fields {
        let fields = [(field.as_bytes().to_vec(), b"?".to_vec())];
        assert!(
            !matches!(Entry::parse(&fields), Err(Malformed::UnknownField(_))),
            "the relay does not know {field}"
        );
    }
    let json_fields = ["args", "data", "except", "join", "leave", "rooms"];
    for (field, property) in properties {
        assert!(
            property["description"].is_string(),
            "{field} has no description"
        );
        // contentSchema counts only beside contentMediaType, in the same schema object.
        let is_json = property["contentMediaType"] == "application/json";
        assert_eq!(
            is_json,
            json_fields.contains(&field.as_str()),
            "{field}: contentMediaType application/json exactly on the JSON fields"
        );
        assert_eq!(
            property.get("contentSchema").is_some(),
            is_json,
            "{field}: a contentSchema exactly beside contentMediaType"
        );
    }
    assert_eq!(
        properties["event"]["not"]["enum"],
        json!(RESERVED_EVENTS),
        "the reserved events"
    );
    assert_eq!(
        properties["server_emit"]["not"]["enum"],
        json!(RESERVED_SERVER_EVENTS),
        "the reserved server-side events"
    );
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(schema["$id"].is_string() && schema["title"].is_string());
    let corpus = corpus();
    for field in relay_fields.iter().copied().chain(["x-trace"]) {
        assert!(
            corpus.iter().any(|c| matches!(c.expect, Expect::Valid)
                && c.fields.iter().any(|(f, _)| f == field.as_bytes())),
            "no valid entry of the corpus has {field}"
        );
    }
}
