//! End to end: two real Node Socket.IO servers (`socket.io` 4 + `@socket.io/redis-adapter` 8,
//! installed from `tests/e2e/package-lock.json`) with real `socket.io-client` sockets, fed by XADD
//! through the relay binary.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use redis::Commands;
use serde_json::{json, Value};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn rooms_namespaces_and_except_reach_exactly_the_right_clients() {
    rooms_namespaces_and_except(Adapter::Classic);
}

/// The classic adapter with `parser: { encode: JSON.stringify, decode: JSON.parse }`: MessagePack
/// would crash these servers.
#[test]
fn servers_with_a_json_parser_get_json() {
    rooms_namespaces_and_except(Adapter::ClassicJson);
}

/// `createShardedAdapter` in each subscription mode: SPUBLISH of the JSON ClusterMessage, on the
/// room's channel in the dynamic modes.
#[test]
fn sharded_adapter_servers_in_dynamic_mode() {
    rooms_namespaces_and_except(Adapter::Sharded("dynamic"));
}

#[test]
fn sharded_adapter_servers_in_dynamic_private_mode() {
    rooms_namespaces_and_except(Adapter::Sharded("dynamic-private"));
}

#[test]
fn sharded_adapter_servers_in_static_mode() {
    rooms_namespaces_and_except(Adapter::Sharded("static"));
}

/// `@socket.io/redis-streams-adapter`: entries appended to the servers' stream.
#[test]
fn streams_adapter_servers() {
    rooms_namespaces_and_except(Adapter::Streams);
}

fn rooms_namespaces_and_except(adapter: Adapter) {
    let redis = RedisServer::start();
    let a = SocketIoServer::start_with(&redis.url(), &adapter);
    let b = SocketIoServer::start_with(&redis.url(), &adapter);
    wait_adapter_servers(&redis, &adapter, 2);
    let clients = Clients::connect(&[
        ("a-lobby", a.url("/"), &["lobby"]),
        ("b-lobby-vip", b.url("/"), &["lobby", "vip"]),
        ("a-none", a.url("/"), &[]),
        ("b-admin-lobby", b.url("/admin"), &["lobby"]),
        ("a-admin", a.url("/admin"), &[]),
    ]);
    let _relay = Relay::start(&redis, "relay-1", &adapter.settings());
    let mut con = redis.connection();
    let entries: &[&[(&str, &str)]] = &[
        &[
            ("room", "lobby"),
            ("event", "chat"),
            ("data", r#"{"text":"Welcome!"}"#),
        ],
        &[
            ("event", "news"),
            ("args", r#"[1, "two", null, {"deep": [true]}]"#),
        ],
        &[
            ("rooms", r#"["lobby","vip"]"#),
            ("except", r#"["vip"]"#),
            ("event", "promo"),
        ],
        &[
            ("nsp", "/admin"),
            ("event", "alert"),
            ("data", "3.5"),
            ("volatile", "false"),
        ],
        &[
            ("nsp", "/admin"),
            ("room", "lobby"),
            ("event", "admin-lobby"),
            ("compress", "true"),
        ],
        // Malformed: would disconnect every client in the room; must be dead-lettered instead.
        &[("room", "lobby"), ("event", "connect")],
        &[("room", "lobby"), ("event", "chat"), ("dat", "typo")],
        &[("event", "done"), ("x-trace", "ignored")],
        &[("nsp", "/admin"), ("event", "done")],
    ];
    for fields in entries {
        xadd(&mut con, fields);
    }
    // Each namespace's last entry: once a client has it, it has everything meant for it.
    for client in [
        "a-lobby",
        "b-lobby-vip",
        "a-none",
        "b-admin-lobby",
        "a-admin",
    ] {
        wait_until(20 * SECOND, &format!("{client} gets `done`"), || {
            clients.events_of(client).iter().any(|(e, _)| e == "done")
        });
    }

    let ev = |name: &str, args: Value| (name.to_owned(), args);
    let news = ev("news", json!([1, "two", null, {"deep": [true]}]));
    let chat = ev("chat", json!([{"text": "Welcome!"}]));
    let done = ev("done", json!([]));
    let mut expected = BTreeMap::new();
    expected.insert(
        "a-lobby".to_owned(),
        vec![
            chat.clone(),
            news.clone(),
            ev("promo", json!([])),
            done.clone(),
        ],
    );
    expected.insert(
        "b-lobby-vip".to_owned(),
        vec![chat, news.clone(), done.clone()],
    );
    expected.insert("a-none".to_owned(), vec![news, done.clone()]);
    expected.insert(
        "b-admin-lobby".to_owned(),
        vec![
            ev("alert", json!([3.5])),
            ev("admin-lobby", json!([])),
            done.clone(),
        ],
    );
    expected.insert("a-admin".to_owned(), vec![ev("alert", json!([3.5])), done]);
    assert_eq!(clients.received(), expected);

    let dead = dead_letters(&mut con);
    let reasons: Vec<_> = dead
        .iter()
        .map(|(_, f)| field(f, "x-dead-error").unwrap().to_owned())
        .collect();
    assert_eq!(dead.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("reserved"), "{reasons:?}");
    assert!(reasons[1].contains("unknown field `dat`"), "{reasons:?}");
}

/// `kill -9` of the relay, again and again, during a flow of thousands of entries to a room spread
/// over two servers: every member gets every entry exactly once, a non-member gets nothing.
#[test]
fn relay_kill_9_during_a_flow_loses_and_duplicates_nothing() {
    relay_kill_9_during_a_flow(Adapter::Classic);
}

/// The same with the streams adapter, whose entries are appended and acknowledged in one step.
#[test]
fn streams_adapter_relay_kill_9_during_a_flow_loses_and_duplicates_nothing() {
    relay_kill_9_during_a_flow(Adapter::Streams);
}

fn relay_kill_9_during_a_flow(adapter: Adapter) {
    let redis = RedisServer::start();
    let a = SocketIoServer::start_with(&redis.url(), &adapter);
    let b = SocketIoServer::start_with(&redis.url(), &adapter);
    wait_adapter_servers(&redis, &adapter, 2);
    let clients = Clients::connect(&[
        ("a-member", a.url("/"), &["orders"]),
        ("b-member", b.url("/"), &["orders"]),
        ("a-outsider", a.url("/"), &[]),
    ]);
    let mut settings = adapter.settings();
    settings.push(("SOURCE__BATCH_SIZE", "64"));
    let mut relay = Relay::start(&redis, "relay-1", &settings);
    let total: usize = 3000;
    let producer = produce_in_background(&redis, total, Duration::from_millis(30), |i| {
        vec![
            ("room", "orders".into()),
            ("event", "shipped".into()),
            ("data", format!(r#"{{"seq":{i}}}"#)),
        ]
    });
    for _ in 0..4 {
        // Random moments within the flow (pacing the faults); the end marker below waits on state.
        std::thread::sleep(Duration::from_millis(150 + fastrand::u64(0..300)));
        relay.restart(); // SIGKILL, then the same consumer starts again
    }
    producer.join().unwrap();
    for client in ["a-member", "b-member"] {
        clients.wait_events(client, total, 60 * SECOND);
    }
    // Nothing pending any more (no late reclaim can add a duplicate), then one last entry: once
    // a member has it, it has everything before it.
    let mut con = redis.connection();
    wait_until(30 * SECOND, "nothing is pending", || {
        pending(&mut con).is_empty()
    });
    end_marker(
        &mut con,
        STREAM,
        &[("room", "orders")],
        &clients,
        &["a-member", "b-member"],
    );
    for client in ["a-member", "b-member"] {
        let mut counts = vec![0u32; total];
        for (event, args) in clients.events_of(client) {
            if event == "end" {
                continue;
            }
            assert_eq!(event, "shipped");
            counts[args[0]["seq"].as_u64().unwrap() as usize] += 1;
        }
        let lost = counts.iter().filter(|&&c| c == 0).count();
        let duplicated = counts.iter().filter(|&&c| c > 1).count();
        eprintln!("{client}: produced {total}, lost {lost}, duplicated {duplicated}");
        assert_eq!((lost, duplicated), (0, 0), "{client}");
    }
    assert!(clients.events_of("a-outsider").is_empty());
    assert!(pending(&mut con).is_empty());
    let dead: usize = con.xlen(DEAD).unwrap();
    assert_eq!(dead, 0);
}

/// With every Socket.IO server down, entries wait; they arrive in order when servers are back, and
/// again after all servers restart.
#[test]
fn entries_wait_while_every_server_is_down() {
    let redis = RedisServer::start();
    let _relay = Relay::start(&redis, "relay-1", &[("DELIVERY__RETRY_INTERVAL", "200ms")]);
    let mut con = redis.connection();
    for i in 0..5 {
        xadd(&mut con, &[("event", "queued"), ("data", &i.to_string())]);
    }
    wait_until(10 * SECOND, "the entries are held", || {
        pending(&mut con).len() == 5
    });

    // The relay counts servers, not clients: hold its writes while the client connects, or the
    // server could get (and drop) the entries before its first client joins.
    let (server, clients) = with_writes_paused(&redis, || {
        let server = SocketIoServer::start(&redis);
        let clients = Clients::connect(&[("c", server.url("/"), &[])]);
        (server, clients)
    });
    clients.wait_events("c", 5, 20 * SECOND);
    let args: Vec<Value> = clients
        .events_of("c")
        .into_iter()
        .map(|(_, a)| a[0].clone())
        .collect();
    assert_eq!(args, [0, 1, 2, 3, 4]);

    // Every server goes away, entries keep coming, servers and clients come back.
    drop(clients);
    drop(server);
    wait_servers_gone(&redis);
    for i in 5..8 {
        xadd(&mut con, &[("event", "queued"), ("data", &i.to_string())]);
    }
    wait_until(10 * SECOND, "the new entries are held", || {
        pending(&mut con).len() == 3
    });
    let (_server, clients) = with_writes_paused(&redis, || {
        let server = SocketIoServer::start(&redis);
        let clients = Clients::connect(&[("c", server.url("/"), &[])]);
        (server, clients)
    });
    clients.wait_events("c", 3, 20 * SECOND);
    let args: Vec<Value> = clients
        .events_of("c")
        .into_iter()
        .map(|(_, a)| a[0].clone())
        .collect();
    assert_eq!(args, [5, 6, 7]);
    wait_until(5 * SECOND, "all acknowledged", || {
        pending(&mut con).is_empty()
    });
}

fn wait_servers_gone(redis: &RedisServer) {
    let mut con = redis.connection();
    wait_until(10 * SECOND, "no server listens", || {
        // Servers, as the relay counts them (the relay's own pattern listens for their answers).
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("socket.io-request#/#")
            .query(&mut con)
            .unwrap();
        counts[0].1 == 0
    });
}
