//! The emitter's other operations (join, leave, disconnect, server-side emit), bytes, numeric rooms
//! and namespaces without their slash, end to end: entries XADDed, relayed, and checked by what
//! real Socket.IO clients and servers observe, on each adapter.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn classic_servers_observe_every_operation() {
    every_operation(Adapter::Classic);
}

/// The JSON parser cannot carry bytes: those entries are dead-lettered, the rest arrives.
#[test]
fn servers_with_a_json_parser_observe_every_operation_but_bytes() {
    every_operation(Adapter::ClassicJson);
}

/// The same servers on ioredis: bytes arrive as bytes there too.
#[test]
fn classic_servers_on_ioredis_observe_every_operation() {
    every_operation(Adapter::ClassicIoredis);
}

/// An older stack: socket.io 4.5 with `@socket.io/redis-adapter` 7.2 (notepack 2).
#[test]
fn socket_io_4_5_with_adapter_7_2_observes_every_operation() {
    every_operation(Adapter::Classic72);
}

#[test]
fn sharded_servers_observe_every_operation() {
    every_operation(Adapter::Sharded("dynamic"));
}

/// `@socket.io/redis-streams-adapter`: every operation appended to the servers' stream, bytes as
/// base64 of MessagePack.
#[test]
fn streams_adapter_servers_observe_every_operation() {
    every_operation(Adapter::Streams);
}

fn every_operation(adapter: Adapter) {
    let binary = !matches!(adapter, Adapter::ClassicJson);
    let redis = RedisServer::start();
    let a = SocketIoServer::start_with(&redis.url(), &adapter);
    let b = SocketIoServer::start_with(&redis.url(), &adapter);
    wait_adapter_servers(&redis, &adapter, 2);
    let clients = Clients::connect(&[
        ("u1-a", a.url("/"), &["user:1"]),
        ("u1-b", b.url("/"), &["user:1"]),
        ("u2", a.url("/"), &["user:2"]),
        ("u3", b.url("/"), &["user:3"]),
        ("n42", b.url("/"), &["#42"]),
        ("s42", a.url("/"), &["42"]),
        ("admin", a.url("/admin"), &[]),
    ]);
    let _relay = Relay::start(&redis, "relay-1", &adapter.settings());
    let mut con = redis.connection();
    let entries: &[&[(&str, &str)]] = &[
        // User 1's two sockets, on two servers, join game:7: they alone get game:7's emit.
        &[("join", r#"["game:7"]"#), ("room", "user:1")],
        &[("event", "g1"), ("room", "game:7")],
        // User 3 joins, user 1 leaves: only user 3 is left in game:7.
        &[("join", r#"["game:7"]"#), ("room", "user:3")],
        &[("leave", r#"["game:7"]"#), ("rooms", r#"["user:1"]"#)],
        &[("event", "g2"), ("room", "game:7")],
        // The room joined as the number 42, and the room "42".
        &[("event", "num"), ("rooms", "[42]")],
        &[("event", "str"), ("room", "42")],
        // `admin` is `/admin`, as with the emitter.
        &[("event", "adm"), ("nsp", "admin")],
        &[
            ("event", "file"),
            (
                "args",
                r#"[{"$binary":"3q2+7w=="}, {"name":"f","body":{"$binary":"AAE="}}]"#,
            ),
            ("room", "user:2"),
        ],
        &[("server_emit", "sse"), ("args", r#"["x", 1]"#)],
        // Would crash every server (EventEmitter throws on an unhandled "error").
        &[("server_emit", "error"), ("data", r#""boom""#)],
        &[
            ("server_emit", "cache:flush"),
            ("nsp", "admin"),
            ("data", r#"{"$binary":"AQ=="}"#),
        ],
        // A typo, or a forgotten room, must not disconnect everyone.
        &[("disconnect", "true"), ("rom", "user:2")],
        &[("disconnect", "true")],
        &[("disconnect", "true"), ("room", "user:2")],
        &[("event", "done"), ("all", "true")],
        &[("event", "done"), ("nsp", "/admin")],
    ];
    for fields in entries {
        xadd(&mut con, fields);
    }
    for client in ["u1-a", "u1-b", "u3", "n42", "s42", "admin"] {
        wait_until(20 * SECOND, &format!("{client} gets `done`"), || {
            clients.events_of(client).iter().any(|(e, _)| e == "done")
        });
    }
    wait_until(10 * SECOND, "u2 is disconnected", || {
        !clients.disconnections("u2").is_empty()
    });
    // Nothing more comes: every entry is acknowledged (so none is published again), and `done`,
    // the last one, reached every client after what was published before it.
    wait_until(10 * SECOND, "every entry is acknowledged", || {
        pending(&mut con).is_empty()
    });

    let ev = |name: &str, args: Value| (name.to_owned(), args);
    let done = ev("done", json!([]));
    let mut expected = BTreeMap::new();
    for user1 in ["u1-a", "u1-b"] {
        expected.insert(user1.to_owned(), vec![ev("g1", json!([])), done.clone()]);
    }
    expected.insert("u3".to_owned(), vec![ev("g2", json!([])), done.clone()]);
    expected.insert("n42".to_owned(), vec![ev("num", json!([])), done.clone()]);
    expected.insert("s42".to_owned(), vec![ev("str", json!([])), done.clone()]);
    expected.insert("admin".to_owned(), vec![ev("adm", json!([])), done]);
    if binary {
        expected.insert(
            "u2".to_owned(),
            vec![ev(
                "file",
                json!([{"$bytes": "deadbeef"}, {"name": "f", "body": {"$bytes": "0001"}}]),
            )],
        );
    }
    assert_eq!(clients.received(), expected);
    assert_eq!(clients.disconnections("u2"), ["io server disconnect"]);
    for user in ["u1-a", "u1-b", "u3", "n42", "s42", "admin"] {
        assert!(clients.disconnections(user).is_empty(), "{user}");
    }

    for server in [&a, &b] {
        let mut expected = vec![json!(["/", "sse", "x", 1])];
        if binary {
            expected.push(json!(["/admin", "cache:flush", {"$bytes": "01"}]));
        }
        wait_until(
            10 * SECOND,
            "the server prints its serverSideEmit calls",
            || server.server_side_emits().len() >= expected.len(),
        );
        assert_eq!(server.server_side_emits(), expected);
    }

    let dead = dead_letters(&mut con);
    let reasons: Vec<String> = dead
        .iter()
        .map(|(_, f)| field(f, "x-dead-error").unwrap().to_owned())
        .collect();
    let mut expected_reasons = vec![
        "`server_emit` event `error` is reserved",
        "unknown field `rom`",
        "a `disconnect` entry needs `room` or `rooms`, or `all` = `true`",
    ];
    if !binary {
        expected_reasons.insert(0, "binary arguments need MessagePack");
        expected_reasons.insert(2, "binary arguments need MessagePack");
    }
    assert_eq!(reasons.len(), expected_reasons.len(), "{reasons:?}");
    for (reason, expected) in reasons.iter().zip(expected_reasons) {
        assert!(
            reason.contains(expected),
            "{reason:?} should say {expected:?}"
        );
    }
}
