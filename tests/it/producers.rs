//! The producer snippets of `examples/producers/` and the entry contract's JSON Schema.
//!
//! The Node (node-redis, ioredis) and Python (redis-py) snippets run as a user would run them,
//! against a relay and a real Socket.IO client, which must receive what they append. The schema
//! and the relay judge one corpus of entries, and must agree on each, except on the checks that
//! only the relay makes (the schema's description lists them).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use sio_relay::entry::{Entry, Malformed};

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

fn producers_dir(language: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/producers")
        .join(language)
}

/// Runs a snippet with `REDIS_URL` and `STREAM` pointing at the test's Redis; returns what it
/// printed (the entry ID).
fn run_snippet(mut command: Command, redis: &RedisServer) -> String {
    let output = command
        .env("REDIS_URL", redis.url())
        .env("STREAM", STREAM)
        .stdin(Stdio::null())
        .output()
        .expect("run the snippet");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A virtualenv with examples/producers/python/requirements.txt installed; its python.
fn python_with_requirements() -> PathBuf {
    let python = require("python3", "apt-get install python3 python3-venv");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("producers-venv");
    let requirements = producers_dir("python").join("requirements.txt");
    let stamp = venv.join("requirements.txt");
    let wanted = std::fs::read(&requirements).unwrap();
    if std::fs::read(&stamp).ok().as_ref() != Some(&wanted) {
        let created = Command::new(&python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .expect("run python3 -m venv");
        assert!(
            created.success(),
            "python3 -m venv failed: apt-get install python3-venv"
        );
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "-r"])
            .arg(&requirements)
            .status()
            .expect("run pip");
        assert!(
            installed.success(),
            "pip install failed: the tests need PyPI"
        );
        std::fs::write(&stamp, wanted).unwrap();
    }
    venv.join("bin/python")
}

#[test]
fn the_node_and_python_snippets_reach_a_real_client() {
    let node_dir = producers_dir("node");
    npm_install(&node_dir);
    let python = python_with_requirements();

    let redis = RedisServer::start();
    let server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let clients = Clients::connect(&[
        ("user-42", server.url("/"), &["user:42"]),
        ("other", server.url("/"), &["user:7"]),
    ]);
    let _relay = Relay::start(&redis, "relay-1", &[]);

    let snippets: Vec<(&str, Command)> = vec![
        ("node-redis", {
            let mut c = Command::new("node");
            c.arg("node-redis.js").current_dir(&node_dir);
            c
        }),
        ("ioredis", {
            let mut c = Command::new("node");
            c.arg("ioredis.js").current_dir(&node_dir);
            c
        }),
        ("redis-py", {
            let mut c = Command::new(&python);
            c.arg("produce.py").current_dir(producers_dir("python"));
            c
        }),
    ];
    let mut ids = Vec::new();
    for (name, command) in snippets {
        let id = run_snippet(command, &redis);
        assert!(
            id.split_once('-')
                .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok()),
            "{name} printed {id:?}, not an entry ID"
        );
        ids.push(id);
    }
    clients.wait_events("user-42", 3, 20 * SECOND);
    let shipped = (
        "order:shipped".to_owned(),
        json!([{"orderId": "A-1001", "carrier": "UPS"}]),
    );
    assert_eq!(
        clients.events_of("user-42"),
        vec![shipped.clone(), shipped.clone(), shipped]
    );
    let mut con = redis.connection();
    wait_until(10 * SECOND, "the three entries are acknowledged", || {
        pending(&mut con).is_empty()
    });
    assert!(clients.events_of("other").is_empty());
    assert_eq!(dead_letters(&mut con).len(), 0);
}

/// Checks only the relay makes, each with an entry that shows it: the schema accepts the entry,
/// the relay refuses it.
const RELAY_ONLY: [&str; 9] = [
    "total bytes of the entry",
    "number of fields",
    "number of rooms",
    "JSON nesting depth",
    "integers beyond ±2^53",
    "numbers that are not finite doubles",
    "more than 10 binary values",
    "the range of ack",
    "a field given twice",
];

/// (name, fields, expected): `Ok(())` valid for both; `Err(None)` invalid for both;
/// `Err(Some(check))` valid for the schema, refused by the relay, for a check of [`RELAY_ONLY`].
type Case = (
    &'static str,
    Vec<(String, String)>,
    Result<(), Option<&'static str>>,
);

fn case(
    name: &'static str,
    fields: &[(&str, &str)],
    expected: Result<(), Option<&'static str>>,
) -> Case {
    let fields = fields
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
    (name, fields, expected)
}

const VALID: Result<(), Option<&str>> = Ok(());
const INVALID: Result<(), Option<&str>> = Err(None);

fn corpus() -> Vec<Case> {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let many_binaries = format!("[{}]", [r#"{"$binary":"AA=="}"#; 11].join(","));
    let many_rooms =
        serde_json::to_string(&(0..20_000).map(|i| format!("r{i}")).collect::<Vec<_>>()).unwrap();
    let big = "x".repeat(2 * 1024 * 1024);
    let mut many_fields: Vec<(String, String)> =
        (0..100).map(|i| (format!("x-{i}"), "v".into())).collect();
    many_fields.push(("event".into(), "e".into()));
    let owned = |name, fields: &[(&str, &str)], expected| case(name, fields, expected);
    let mut cases = vec![
        // Emits.
        owned("an event alone", &[("event", "e")], VALID),
        owned(
            "room, event and data",
            &[("room", "r"), ("event", "e"), ("data", r#"{"a":1}"#)],
            VALID,
        ),
        owned(
            "data a string",
            &[("event", "e"), ("data", r#""hello""#)],
            VALID,
        ),
        owned(
            "args",
            &[("event", "e"), ("args", r#"[1,"two",null]"#)],
            VALID,
        ),
        owned(
            "rooms with a number",
            &[("rooms", r#"["a",42]"#), ("event", "e")],
            VALID,
        ),
        owned(
            "empty rooms on an emit",
            &[("rooms", "[]"), ("event", "e")],
            VALID,
        ),
        owned(
            "except",
            &[("event", "e"), ("except", r#"["banned"]"#)],
            VALID,
        ),
        owned(
            "nsp without a slash",
            &[("nsp", "chat"), ("event", "e")],
            VALID,
        ),
        owned(
            "flags",
            &[("event", "e"), ("volatile", "true"), ("compress", "false")],
            VALID,
        ),
        owned("ack", &[("event", "e"), ("ack", "10s")], VALID),
        owned(
            "ack with volatile false",
            &[("event", "e"), ("ack", "1m 30s"), ("volatile", "false")],
            VALID,
        ),
        owned("append_id", &[("event", "e"), ("append_id", "true")], VALID),
        owned(
            "bytes",
            &[("event", "e"), ("data", r#"{"b":{"$binary":"3q2+7w=="}}"#)],
            VALID,
        ),
        owned("x- metadata", &[("event", "e"), ("x-trace", "abc")], VALID),
        owned(
            "$binary with another key is JSON",
            &[("event", "e"), ("data", r#"{"$binary":1,"k":2}"#)],
            VALID,
        ),
        owned("all on an emit", &[("event", "e"), ("all", "true")], VALID),
        // The other operations.
        owned("join", &[("join", r#"["g"]"#), ("room", "r")], VALID),
        owned(
            "leave with all",
            &[("leave", r#"["g"]"#), ("all", "true")],
            VALID,
        ),
        owned(
            "disconnect",
            &[
                ("disconnect", "true"),
                ("rooms", r#"["r"]"#),
                ("close", "true"),
            ],
            VALID,
        ),
        owned(
            "server_emit",
            &[("server_emit", "ping"), ("args", "[1]")],
            VALID,
        ),
        // Refused by both.
        owned("no operation", &[("room", "r")], INVALID),
        owned(
            "two operations",
            &[("event", "e"), ("join", r#"["g"]"#), ("room", "r")],
            INVALID,
        ),
        owned("empty event", &[("event", "")], INVALID),
        owned("reserved event", &[("event", "connect")], INVALID),
        owned(
            "reserved server event",
            &[("server_emit", "connection")],
            INVALID,
        ),
        owned("unknown field", &[("event", "e"), ("rom", "r")], INVALID),
        owned("data not JSON", &[("event", "e"), ("data", "{")], INVALID),
        owned(
            "args not an array",
            &[("event", "e"), ("args", r#"{"a":1}"#)],
            INVALID,
        ),
        owned(
            "data and args",
            &[("event", "e"), ("data", "1"), ("args", "[1]")],
            INVALID,
        ),
        owned(
            "room and rooms",
            &[("event", "e"), ("room", "a"), ("rooms", r#"["b"]"#)],
            INVALID,
        ),
        owned("empty room", &[("event", "e"), ("room", "")], INVALID),
        owned(
            "empty room in rooms",
            &[("event", "e"), ("rooms", r#"["a",""]"#)],
            INVALID,
        ),
        owned(
            "rooms not an array",
            &[("event", "e"), ("rooms", r#""a""#)],
            INVALID,
        ),
        owned(
            "rooms with an object",
            &[("event", "e"), ("rooms", r#"[{"a":1}]"#)],
            INVALID,
        ),
        owned(
            "except not JSON",
            &[("event", "e"), ("except", "banned")],
            INVALID,
        ),
        owned("nsp with #", &[("nsp", "/a#b"), ("event", "e")], INVALID),
        owned("nsp with [", &[("nsp", "/a[1]"), ("event", "e")], INVALID),
        owned(
            "nsp with a backslash",
            &[("nsp", r"/a\b"), ("event", "e")],
            INVALID,
        ),
        owned(
            "flag not a boolean",
            &[("event", "e"), ("volatile", "yes")],
            INVALID,
        ),
        owned(
            "ack not a duration",
            &[("event", "e"), ("ack", "soon")],
            INVALID,
        ),
        owned(
            "ack and volatile",
            &[("event", "e"), ("ack", "10s"), ("volatile", "true")],
            INVALID,
        ),
        owned(
            "ack on a join",
            &[("join", r#"["g"]"#), ("room", "r"), ("ack", "10s")],
            INVALID,
        ),
        owned(
            "data on a join",
            &[("join", r#"["g"]"#), ("room", "r"), ("data", "1")],
            INVALID,
        ),
        owned(
            "close on an emit",
            &[("event", "e"), ("close", "true")],
            INVALID,
        ),
        owned(
            "room on a server_emit",
            &[("server_emit", "s"), ("room", "r")],
            INVALID,
        ),
        owned("join without a selection", &[("join", r#"["g"]"#)], INVALID),
        owned(
            "join with empty rooms",
            &[("join", r#"["g"]"#), ("rooms", " [ ] ")],
            INVALID,
        ),
        owned("join of no room", &[("join", "[]"), ("room", "r")], INVALID),
        owned(
            "disconnect false",
            &[("disconnect", "false"), ("room", "r")],
            INVALID,
        ),
        owned("all false", &[("event", "e"), ("all", "false")], INVALID),
        owned(
            "all with room",
            &[("disconnect", "true"), ("all", "true"), ("room", "r")],
            INVALID,
        ),
        owned(
            "all with empty rooms",
            &[("event", "e"), ("all", "true"), ("rooms", "[]")],
            INVALID,
        ),
        owned(
            "bytes not base64",
            &[("event", "e"), ("data", r#"{"$binary":"!!"}"#)],
            INVALID,
        ),
        owned(
            "bytes not a string",
            &[("event", "e"), ("args", r#"[{"$binary":5}]"#)],
            INVALID,
        ),
        // Only the relay can tell.
        owned(
            "a 2 MiB entry",
            &[("event", "e"), ("data", &format!("\"{big}\""))],
            Err(Some(RELAY_ONLY[0])),
        ),
        owned(
            "20,000 rooms",
            &[("event", "e"), ("rooms", &many_rooms)],
            Err(Some(RELAY_ONLY[2])),
        ),
        owned(
            "200 levels deep",
            &[("event", "e"), ("data", &deep)],
            Err(Some(RELAY_ONLY[3])),
        ),
        owned(
            "2^53 + 1",
            &[("event", "e"), ("data", "9007199254740993")],
            Err(Some(RELAY_ONLY[4])),
        ),
        owned(
            "1e400",
            &[("event", "e"), ("data", "1e400")],
            Err(Some(RELAY_ONLY[5])),
        ),
        owned(
            "11 binary values",
            &[("event", "e"), ("args", &many_binaries)],
            Err(Some(RELAY_ONLY[6])),
        ),
        owned(
            "ack of a day",
            &[("event", "e"), ("ack", "1d")],
            Err(Some(RELAY_ONLY[7])),
        ),
        owned(
            "event twice",
            &[("event", "e"), ("event", "f")],
            Err(Some(RELAY_ONLY[8])),
        ),
    ];
    cases.push(("101 fields", many_fields, Err(Some(RELAY_ONLY[1]))));
    cases
}

/// What validate.js says of each entry (fields given twice: the last one, as an object keeps).
fn schema_verdicts(cases: &[Case]) -> Vec<(bool, Vec<String>)> {
    let node_dir = producers_dir("node");
    npm_install(&node_dir);
    let entries: Vec<Value> = cases
        .iter()
        .map(|(_, fields, _)| {
            Value::Object(
                fields
                    .iter()
                    .map(|(f, v)| (f.clone(), Value::String(v.clone())))
                    .collect(),
            )
        })
        .collect();
    let mut child = Command::new("node")
        .arg("validate.js")
        .current_dir(&node_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run validate.js");
    let input = Value::Array(entries).to_string();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(input.as_bytes()).unwrap();
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "validate.js failed");
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
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

#[test]
fn the_schema_and_the_relay_agree_on_every_entry_of_the_corpus() {
    let cases = corpus();
    let verdicts = schema_verdicts(&cases);
    let mut relay_only_seen = Vec::new();
    for ((name, fields, expected), (schema_valid, errors)) in cases.iter().zip(&verdicts) {
        let raw: Vec<(Vec<u8>, Vec<u8>)> = fields
            .iter()
            .map(|(f, v)| (f.clone().into_bytes(), v.clone().into_bytes()))
            .collect();
        let relay: Result<Entry, Malformed> = Entry::parse(&raw);
        match expected {
            Ok(()) => {
                assert!(*schema_valid, "{name}: the schema refuses it: {errors:?}");
                assert!(relay.is_ok(), "{name}: the relay refuses it: {relay:?}");
            }
            Err(None) => {
                assert!(!schema_valid, "{name}: the schema accepts it");
                assert!(relay.is_err(), "{name}: the relay accepts it");
            }
            Err(Some(check)) => {
                assert!(
                    *schema_valid,
                    "{name} ({check}): the schema refuses it: {errors:?}"
                );
                assert!(relay.is_err(), "{name} ({check}): the relay accepts it");
                relay_only_seen.push(*check);
            }
        }
    }
    // Each relay-only check is shown by an entry, and the schema's description names each.
    relay_only_seen.sort();
    let mut listed = RELAY_ONLY.to_vec();
    listed.sort();
    assert_eq!(relay_only_seen, listed);
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/entry.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let description = schema["description"].as_str().unwrap();
    for (check, words) in RELAY_ONLY.iter().zip([
        "total bytes",
        "number of fields",
        "rooms (limits.max_rooms)",
        "nested deeper",
        "±2^53",
        "not finite doubles",
        "10 binary values",
        "range of ack",
        "a field given twice",
    ]) {
        assert!(
            description.contains(words),
            "the schema's description does not name {check:?} ({words:?})"
        );
    }
}

/// Every field the relay knows is described in the schema, and the schema knows no other.
#[test]
fn the_schema_describes_every_field_the_relay_knows() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/entry.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
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
    for (field, property) in properties {
        assert!(
            property["description"].is_string(),
            "{field} has no description"
        );
        let parsed = [
            &["data", "args"][..],
            &["join", "leave", "rooms", "except"][..],
        ]
        .concat()
        .contains(&field.as_str());
        assert_eq!(
            property.get("contentSchema").is_some(),
            parsed,
            "{field}: contentSchema exactly on the JSON fields"
        );
    }
    // Each one is accepted by the relay in an entry.
    for field in relay_fields {
        assert!(
            corpus()
                .iter()
                .any(|(_, fields, expected)| expected.is_ok()
                    && fields.iter().any(|(f, _)| f == field)),
            "no valid entry of the corpus has {field}"
        );
    }
}
