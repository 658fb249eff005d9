//! `@socket.io/redis-emitter`'s own test suite (test/index.ts and test/custom-parser.ts of
//! socketio/socket.io-redis-emitter 5.1.0), case by case, as stream entries through the relay, on
//! each stack the emitter's cases pass on: the classic adapter on node-redis and on ioredis, the
//! classic adapter with a JSON parser, and the sharded adapter. Real servers, real clients; what
//! each client receives is compared whole, after an end marker. The cases other tests already
//! cover, and where, are mapped in docs/09-tests.md ("The emitter's suite").

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn the_emitters_suite_on_classic_servers() {
    emitter_suite(Adapter::Classic);
}

#[test]
fn the_emitters_suite_on_classic_servers_on_ioredis() {
    emitter_suite(Adapter::ClassicIoredis);
}

/// The custom-parser case: JSON cannot carry bytes, so those entries are dead-lettered instead.
#[test]
fn the_emitters_suite_on_servers_with_a_json_parser() {
    emitter_suite(Adapter::ClassicJson);
}

#[test]
fn the_emitters_suite_on_sharded_servers() {
    emitter_suite(Adapter::Sharded("dynamic"));
}

/// `[[...[1]...]]`, `depth` levels.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn emitter_suite(adapter: Adapter) {
    let bytes = !matches!(adapter, Adapter::ClassicJson);
    let redis = RedisServer::start();
    let a = SocketIoServer::start_with(&redis.url(), &adapter);
    let b = SocketIoServer::start_with(&redis.url(), &adapter);
    wait_adapter_servers(&redis, &adapter, 2);
    // The emitter's three sockets: the first in room1 and room2, the second in room1, the third
    // in room2 (as its room cases join them), spread over two servers; a fourth in no room.
    let clients = Clients::connect(&[
        ("s0", a.url("/"), &["room1", "room2"]),
        ("s1", b.url("/"), &["room1"]),
        ("s2", a.url("/"), &["room2"]),
        ("s3", b.url("/"), &[]),
        ("custom", b.url("/admin"), &[]),
    ]);
    let (s0, s1) = (clients.socket_id("s0"), clients.socket_id("s1"));
    let _relay = Relay::start(&redis, "relay-1", &adapter.settings());
    let mut con = redis.connection();
    let only = |rooms: &[&str]| serde_json::to_string(rooms).unwrap();
    let deep = nested(200);
    let entries: Vec<Vec<(&str, String)>> = vec![
        // "should be able to emit any kind of data" (and the custom parser's 1, "2", [3]).
        vec![
            ("event", "payload".into()),
            ("args", r#"[1, "2", [3]]"#.into()),
            ("room", s0.clone()),
        ],
        vec![
            ("event", "payload".into()),
            (
                "args",
                r#"[1, "2", [3], {"$binary": "YXNkZmFzZGY="}, {"$binary": "AQIDBA=="}]"#.into(),
            ),
            ("room", s0.clone()),
        ],
        // "should support the toJSON() method": 1n, new Set(["2", 3]), new MyClass() as JSON.
        vec![
            ("event", "tojson".into()),
            ("args", r#"["1", ["2", 3], 4]"#.into()),
            ("room", s0.clone()),
        ],
        // "should support all broadcast modifiers".
        vec![("event", "in".into()), ("rooms", only(&["room1", "room2"]))],
        vec![
            ("event", "except".into()),
            ("except", only(&["room4", "room5"])),
        ],
        vec![("event", "volatile".into()), ("volatile", "true".into())],
        vec![("event", "compress".into()), ("compress", "false".into())],
        vec![("event", "connect".into())],
        // "in namespaces": to every client; to /custom (here /admin, written without its slash).
        vec![
            ("event", "broadcast event".into()),
            ("data", r#""broadcast payload""#.into()),
        ],
        vec![
            ("event", "broadcast event".into()),
            ("data", r#""broadcast payload""#.into()),
            ("nsp", "admin".into()),
        ],
        // "in rooms": to a room, to a socket by ID, all but a socket by ID.
        vec![("event", "room".into()), ("room", "room1".into())],
        vec![("event", "to-id".into()), ("room", s0.clone())],
        vec![("event", "except-id".into()), ("except", only(&[&s1]))],
        // socketsJoin and socketsLeave, in a room and everywhere, each seen by an emit after it.
        vec![("join", only(&["room5"])), ("room", "room1".into())],
        vec![("event", "in-room5".into()), ("room", "room5".into())],
        vec![("leave", only(&["room5"])), ("room", "room2".into())],
        vec![("event", "still-in-room5".into()), ("room", "room5".into())],
        vec![("join", only(&["room6"])), ("all", "true".into())],
        vec![("event", "in-room6".into()), ("room", "room6".into())],
        vec![("leave", only(&["room6"])), ("all", "true".into())],
        vec![
            ("event", "room6-or-room2".into()),
            ("rooms", only(&["room6", "room2"])),
        ],
        // "serverSideEmit sends an event to other server instances".
        vec![
            ("server_emit", "sse".into()),
            ("args", r#"["world", 1, "2"]"#.into()),
        ],
        // JSON nested 200 levels deep, which the emitter sends as it is.
        vec![
            ("event", "deep".into()),
            ("data", deep),
            ("room", s1.clone()),
        ],
    ];
    for fields in &entries {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        xadd(&mut con, &fields);
    }
    end_marker(&mut con, STREAM, &[], &clients, &["s0", "s1", "s2", "s3"]);
    end_marker(
        &mut con,
        STREAM,
        &[("nsp", "/admin")],
        &clients,
        &["custom"],
    );

    // A volatile event may be dropped (the emitter's case only checks that it is accepted): it
    // is compared at most once, then left out.
    let mut received = clients.received();
    for events in received.values_mut() {
        assert!(events.iter().filter(|(e, _)| e == "volatile").count() <= 1);
        events.retain(|(e, _)| e != "volatile" && e != "end");
    }
    let ev = |name: &str, args: Value| (name.to_owned(), args);
    let broadcast = ev("broadcast event", json!(["broadcast payload"]));
    let mut s0_events = vec![ev("payload", json!([1, "2", [3]]))];
    if bytes {
        s0_events.push(ev(
            "payload",
            json!([1, "2", [3], {"$bytes": "6173646661736466"}, {"$bytes": "01020304"}]),
        ));
    }
    s0_events.extend([
        ev("tojson", json!(["1", ["2", 3], 4])),
        ev("in", json!([])),
        ev("except", json!([])),
        ev("compress", json!([])),
        broadcast.clone(),
        ev("room", json!([])),
        ev("to-id", json!([])),
        ev("except-id", json!([])),
        ev("in-room5", json!([])),
        ev("in-room6", json!([])),
        ev("room6-or-room2", json!([])),
    ]);
    let mut expected = BTreeMap::new();
    expected.insert("s0".to_owned(), s0_events);
    expected.insert(
        "s1".to_owned(),
        vec![
            ev("in", json!([])),
            ev("except", json!([])),
            ev("compress", json!([])),
            broadcast.clone(),
            ev("room", json!([])),
            ev("in-room5", json!([])),
            ev("still-in-room5", json!([])),
            ev("in-room6", json!([])),
            ev("deep", json!([{"$nested": 200, "in": 1}])),
        ],
    );
    expected.insert(
        "s2".to_owned(),
        vec![
            ev("in", json!([])),
            ev("except", json!([])),
            ev("compress", json!([])),
            broadcast.clone(),
            ev("except-id", json!([])),
            ev("in-room6", json!([])),
            ev("room6-or-room2", json!([])),
        ],
    );
    expected.insert(
        "s3".to_owned(),
        vec![
            ev("except", json!([])),
            ev("compress", json!([])),
            broadcast.clone(),
            ev("except-id", json!([])),
            ev("in-room6", json!([])),
        ],
    );
    expected.insert("custom".to_owned(), vec![broadcast]);
    assert_eq!(received, expected);
    for server in [&a, &b] {
        assert_eq!(
            server.server_side_emits(),
            [json!(["/", "sse", "world", 1, "2"])]
        );
    }
    let reasons: Vec<String> = dead_letters(&mut con)
        .iter()
        .map(|(_, f)| field(f, "x-dead-error").unwrap().to_owned())
        .collect();
    let mut expected_reasons = vec!["event `connect` is reserved"];
    if !bytes {
        expected_reasons.insert(0, "binary arguments need MessagePack");
    }
    assert_eq!(reasons.len(), expected_reasons.len(), "{reasons:?}");
    for (reason, expected) in reasons.iter().zip(expected_reasons) {
        assert!(
            reason.contains(expected),
            "{reason:?} should say {expected:?}"
        );
    }

    // disconnectSockets(true): in a room, then every socket.
    xadd(
        &mut con,
        &[("disconnect", "true"), ("close", "true"), ("room", "room2")],
    );
    for client in ["s0", "s2"] {
        wait_until(10 * SECOND, &format!("{client} is disconnected"), || {
            !clients.disconnections(client).is_empty()
        });
    }
    end_marker(&mut con, STREAM, &[("room", &s1)], &clients, &["s1"]);
    assert!(clients.disconnections("s1").is_empty());
    assert!(clients.disconnections("s3").is_empty());
    xadd(
        &mut con,
        &[("disconnect", "true"), ("close", "true"), ("all", "true")],
    );
    for client in ["s1", "s3"] {
        wait_until(10 * SECOND, &format!("{client} is disconnected"), || {
            !clients.disconnections(client).is_empty()
        });
    }
    assert!(
        clients.disconnections("custom").is_empty(),
        "another namespace"
    );
}
