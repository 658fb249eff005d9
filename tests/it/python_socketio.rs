//! `target.adapter = "python-socketio"` against real python-socketio servers (5.18.1, pinned in
//! examples/python-socketio/requirements.txt): `AsyncServer` with `AsyncRedisManager` under uvicorn, and
//! Flask-SocketIO with a Redis `message_queue`, side by side on one Redis, with real
//! `socket.io-client` sockets. Per-entry ledgers count who got what: delivery with rooms, except
//! (python-socketio's `skip_sid`: socket IDs) and namespaces; holding while no server has a client
//! (the count is per channel: a server subscribes once its first client connects); dead letters
//! for what python-socketio cannot carry; join, leave, close_room and disconnect by socket ID; a
//! relay `kill -9` mid-flow.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Commands;
use serde_json::Value;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

/// The relay's settings for python-socketio servers; `release_wait` short, the clients of these
/// tests being back within it.
const PYTHON: [(&str, &str); 3] = [
    ("TARGET__ADAPTER", "python-socketio"),
    ("DELIVERY__CONFIRM", "published"),
    ("DELIVERY__RELEASE_WAIT", "3s"),
];

/// Entry `n`: event `n` with the arguments `n` and its tag, and `x-seq` `n`, selecting with
/// `selection` (room, rooms, except, nsp).
fn numbered_with(n: usize, selection: &[(&str, String)]) -> Vec<(String, String)> {
    let mut fields = vec![
        ("event".to_owned(), "n".to_owned()),
        ("args".to_owned(), format!(r#"[{n},"{}"]"#, tag(n))),
        ("x-seq".to_owned(), n.to_string()),
    ];
    fields.extend(selection.iter().map(|(k, v)| (k.to_string(), v.clone())));
    fields
}

fn add(con: &mut redis::Connection, fields: &[(String, String)]) {
    let _: String = con.xadd(STREAM, "*", fields).unwrap();
}

/// Waits until nothing is pending, then sends an `end` marker to everyone of each namespace and
/// waits for it: whatever was published before has arrived too.
fn settle(redis: &RedisServer, clients: &Clients, per_nsp: &[(&str, &[&str])]) {
    let mut con = redis.connection();
    wait_until(30 * SECOND, "nothing is pending nor held", || {
        pending(&mut con).is_empty() && held_record(&mut con) == 0
    });
    for (nsp, names) in per_nsp {
        end_marker(&mut con, STREAM, &[("nsp", nsp)], clients, names);
    }
}

/// Rooms, several rooms (union), numeric rooms, except by socket ID, namespaces and bytes, on an
/// async server and a Flask-SocketIO one at once: every member of each entry's selection gets it
/// once, in order, and no one else.
#[test]
fn python_socketio_rooms_except_and_namespaces_on_both_stacks() {
    let redis = RedisServer::start();
    let a = PythonServer::start(&redis, PythonStack::Async);
    let b = PythonServer::start(&redis, PythonStack::Flask);
    let clients = Clients::connect(&[
        ("a1", a.url("/"), &["lobby"]),
        ("a2", a.url("/"), &["vip", "#42"]),
        ("b1", b.url("/"), &["lobby", "vip"]),
        ("b2", b.url("/admin"), &["lobby"]),
    ]);
    wait_python_servers(&redis, 2);
    let _relay = Relay::start(&redis, "relay-1", &PYTHON);
    let b1 = clients.socket_id("b1");
    // (label, selection, who must get it)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        ("lobby", vec![("room", "lobby".into())], &["a1", "b1"]),
        (
            "vip+42",
            vec![("rooms", r#"["vip",42]"#.into())],
            &["a2", "b1"],
        ),
        ("everyone", vec![], &["a1", "a2", "b1"]),
        (
            "lobby but b1",
            vec![("room", "lobby".into()), ("except", format!(r#"["{b1}"]"#))],
            &["a1"],
        ),
        (
            "admin lobby",
            vec![("room", "lobby".into()), ("nsp", "/admin".into())],
            &["b2"],
        ),
        ("b1 alone", vec![("room", b1.clone())], &["b1"]),
    ];
    let mut fanout = Fanout {
        rooms: Vec::new(),
        members: BTreeMap::new(),
    };
    let mut con = redis.connection();
    for _ in 0..5 {
        for (label, selection, members) in &cases {
            let n = fanout.rooms.len();
            add(&mut con, &numbered_with(n, selection));
            fanout.rooms.push(label.to_string());
            fanout.members.insert(
                label.to_string(),
                members.iter().map(|m| m.to_string()).collect(),
            );
        }
    }
    settle(
        &redis,
        &clients,
        &[("/", &["a1", "a2", "b1"]), ("/admin", &["b2"])],
    );
    let ledger = ClientLedger::count(&clients, &fanout, &|n| fanout.rooms[n].clone(), &mut con);
    println!(
        "{}",
        ledger.summary("python-socketio rooms, except, namespaces")
    );
    ledger.assert_each_member_once_in_order();

    // Bytes, nested too, arrive as bytes on both stacks.
    add(
        &mut con,
        &[
            ("event".into(), "file".into()),
            (
                "args".into(),
                r#"[{"$binary":"AQID"},{"in":{"$binary":"BA=="}}]"#.into(),
            ),
            ("room".into(), "lobby".into()),
        ],
    );
    for client in ["a1", "b1"] {
        wait_until(10 * SECOND, &format!("{client} gets the bytes"), || {
            clients.events_of(client).iter().any(|(event, args)| {
                event == "file"
                    && args == &serde_json::json!([{"$bytes": "010203"}, {"in": {"$bytes": "04"}}])
            })
        });
    }
}

/// No server, then a server without clients: python-socketio servers subscribe only once their
/// first client connects, so entries wait until then (a monitor watching the channel is not
/// counted), and then reach that client in order, once each.
#[test]
fn python_socketio_entries_wait_for_a_server_with_a_client() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let (monitor, said) = start_monitor(&redis, 7, &PYTHON);
    assert!(said.starts_with("monitoring socketio"), "{said}");
    let _relay = Relay::start(&redis, "relay-1", &PYTHON);
    for n in 0..5 {
        add(&mut con, &numbered_with(n, &[("room", "lobby".into())]));
    }
    wait_held(&mut con, 5);

    let server = PythonServer::start(&redis, PythonStack::Async);
    let before = servers_counted(&mut con);
    wait_attempts(&mut con, before, 3);
    assert_eq!(
        held_record(&mut con),
        5,
        "a server without a client listens to nothing"
    );

    let clients = Clients::connect(&[("c", server.url("/"), &["lobby"])]);
    settle(&redis, &clients, &[("/", &["c"])]);
    let fanout = Fanout {
        rooms: vec!["lobby".into(); 5],
        members: BTreeMap::from([("lobby".into(), vec!["c".into()])]),
    };
    let ledger = ClientLedger::count(&clients, &fanout, &|_| "lobby".into(), &mut con);
    println!(
        "{}",
        ledger.summary("python-socketio held until a server has a client")
    );
    ledger.assert_each_member_once_in_order();

    // The monitor saw the five entries and the end marker as python-socketio servers read them,
    // and the server's own emit of "joined" (python-socketio publishes every emit).
    let output = monitor.wait_with_output().unwrap();
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (relays, servers): (Vec<&Value>, Vec<&Value>) =
        lines.iter().partition(|l| l["packet"]["uid"] == "emitter");
    assert_eq!(servers.len(), 1, "the server's own emit: {servers:?}");
    assert_eq!(servers[0]["packet"]["event"], "joined");
    let args: Vec<Value> = relays
        .iter()
        .map(|l| l["packet"]["args"][0].clone())
        .collect();
    assert_eq!(args[..5], [0, 1, 2, 3, 4].map(Value::from));
    assert_eq!(relays[0]["channel"], "socketio");
    assert_eq!(relays[0]["packet"]["nsp"], "/");
    assert_eq!(relays[0]["packet"]["rooms"], serde_json::json!(["lobby"]));
}

/// What python-socketio has no message for is dead-lettered as `unsupported`, with the reason;
/// the valid entries around it are delivered.
#[test]
fn python_socketio_dead_letters_what_it_cannot_carry() {
    let redis = RedisServer::start();
    let server = PythonServer::start(&redis, PythonStack::Flask);
    let clients = Clients::connect(&[("c", server.url("/"), &[])]);
    wait_python_servers(&redis, 1);
    let relay = Relay::start(&redis, "relay-1", &PYTHON);
    let mut con = redis.connection();
    let refused: [(&[(&str, &str)], &str); 6] = [
        (&[("server_emit", "flush")], "no server-side emit"),
        (&[("event", "e"), ("ack", "5s")], "acknowledgements"),
        (&[("event", "e"), ("data", "null")], "only argument is null"),
        (
            &[("disconnect", "true"), ("room", "s"), ("close", "true")],
            "cannot close",
        ),
        (
            &[("join", r#"["g"]"#), ("all", "true")],
            "one socket, named by its sid",
        ),
        (
            &[("join", r#"["g","h"]"#), ("room", "s")],
            "one room per message, not 2",
        ),
    ];
    for (i, (fields, _)) in refused.iter().enumerate() {
        let mut fields = fields.to_vec();
        let seq = i.to_string();
        fields.push(("x-seq", &seq));
        xadd(&mut con, &fields);
        xadd(&mut con, &[("event", "ok"), ("data", &seq)]);
    }
    clients.wait_events("c", refused.len(), 20 * SECOND);
    let oks: Vec<Value> = clients
        .events_of("c")
        .into_iter()
        .filter(|(event, _)| event == "ok")
        .map(|(_, args)| args[0].clone())
        .collect();
    assert_eq!(oks, (0..refused.len()).map(Value::from).collect::<Vec<_>>());
    let dead = dead_letters(&mut con);
    assert_eq!(dead.len(), refused.len(), "{dead:?}");
    for (i, (_, why)) in refused.iter().enumerate() {
        let fields = &dead
            .iter()
            .find(|(_, f)| field(f, "x-seq") == Some(&i.to_string()))
            .unwrap_or_else(|| panic!("entry {i} dead-lettered"))
            .1;
        assert_eq!(field(fields, "x-dead-reason"), Some("unsupported"));
        let error = field(fields, "x-dead-error").unwrap();
        assert!(error.contains(why), "{i}: {error}");
    }
    relay.wait_metric(
        "dead_lettered_total{reason=\"unsupported\"}",
        10 * SECOND,
        |v| v == refused.len() as f64,
    );
}

/// Join and leave by socket ID on either server, close_room (`leave` with `all true`), and
/// disconnect, each seen through the emits that follow it in the stream.
#[test]
fn python_socketio_join_leave_close_room_and_disconnect() {
    let redis = RedisServer::start();
    let a = PythonServer::start(&redis, PythonStack::Async);
    let b = PythonServer::start(&redis, PythonStack::Flask);
    let clients = Clients::connect(&[("x", a.url("/"), &[]), ("y", b.url("/"), &[])]);
    wait_python_servers(&redis, 2);
    let _relay = Relay::start(&redis, "relay-1", &PYTHON);
    let mut con = redis.connection();
    let (x, y) = (clients.socket_id("x"), clients.socket_id("y"));
    let to_game = |con: &mut redis::Connection, step: &str| {
        xadd(
            con,
            &[
                ("event", "game"),
                ("room", "game"),
                ("data", &format!(r#""{step}""#)),
            ],
        );
    };
    xadd(&mut con, &[("join", r#"["game"]"#), ("room", &x)]);
    to_game(&mut con, "x joined");
    xadd(&mut con, &[("join", r#"["game"]"#), ("room", &y)]);
    to_game(&mut con, "both joined");
    xadd(&mut con, &[("leave", r#"["game"]"#), ("room", &x)]);
    to_game(&mut con, "x left");
    xadd(&mut con, &[("leave", r#"["game"]"#), ("all", "true")]);
    to_game(&mut con, "closed");
    settle(&redis, &clients, &[("/", &["x", "y"])]);
    let games = |client: &str| -> Vec<Value> {
        clients
            .events_of(client)
            .into_iter()
            .filter(|(event, _)| event == "game")
            .map(|(_, args)| args[0].clone())
            .collect()
    };
    assert_eq!(games("x"), ["x joined", "both joined"]);
    assert_eq!(games("y"), ["both joined", "x left"]);

    xadd(&mut con, &[("disconnect", "true"), ("room", &y)]);
    wait_until(10 * SECOND, "y is disconnected by its server", || {
        clients.disconnections("y") == ["io server disconnect"]
    });
    assert!(clients.disconnections("x").is_empty());
    assert!(dead_letters(&mut con).is_empty());
}

/// A relay killed (`kill -9`) while entries flow: the restarted relay finishes its entries, and
/// every client gets each of its room's entries once, in order.
#[test]
fn python_socketio_relay_kill_9_mid_flow_loses_nothing() {
    const TOTAL: usize = 600;
    let redis = RedisServer::start();
    let a = PythonServer::start(&redis, PythonStack::Async);
    let b = PythonServer::start(&redis, PythonStack::Flask);
    let (rooms, clients) = {
        let rooms: Vec<String> = (0..4).map(|u| format!("user:{u}")).collect();
        let spec: Vec<(&str, String, &[&str])> = vec![
            ("user:0", a.url("/"), &["user:0"]),
            ("user:1", b.url("/"), &["user:1"]),
            ("user:2", a.url("/"), &["user:2"]),
            ("user:3", b.url("/"), &["user:3"]),
        ];
        (rooms, Clients::connect(&spec))
    };
    wait_python_servers(&redis, 2);
    let mut relay = Relay::start(&redis, "relay-1", &PYTHON);
    let producer = produce_in_background(&redis, TOTAL, Duration::from_millis(20), |n| {
        entry(n, &format!("user:{}", n % 4))
    });
    clients.wait_events("user:0", 20, 20 * SECOND);
    relay.kill();
    relay.restart();
    producer.join().unwrap();
    let fanout = Fanout {
        rooms: (0..TOTAL).map(|n| rooms[n % 4].clone()).collect(),
        members: rooms.iter().map(|r| (r.clone(), vec![r.clone()])).collect(),
    };
    let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
    settle(&redis, &clients, &[("/", &names)]);
    let mut con = redis.connection();
    let ledger = ClientLedger::count(&clients, &fanout, &|n| fanout.rooms[n].clone(), &mut con);
    println!(
        "{}",
        ledger.summary("python-socketio relay kill -9 mid-flow")
    );
    ledger.assert_each_member_once_in_order();
}

/// `send --direct` publishes python-socketio's message and counts its servers on the channel;
/// `status` names the target and counts the servers for every namespace at once (`*`).
#[test]
fn python_socketio_send_direct_and_status() {
    let redis = RedisServer::start();
    let cli = |args: &[&str]| {
        let mut command = sio_relay();
        command.args(args).env("SIO_RELAY_REDIS__URL", redis.url());
        for (key, value) in PYTHON {
            command.env(format!("SIO_RELAY_{key}"), value);
        }
        command.output().expect("run sio-relay")
    };
    let server = PythonServer::start(&redis, PythonStack::Async);
    let out = cli(&["send", "--direct", "hello"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a server without a client listens to nothing"
    );
    let status = String::from_utf8(cli(&["status"]).stdout).unwrap();
    assert!(status.contains("python-socketio on socketio"), "{status}");
    assert!(status.contains("no server listens"), "{status}");

    let clients = Clients::connect(&[("c", server.url("/admin"), &["lobby"])]);
    wait_python_servers(&redis, 1);
    let out = cli(&[
        "send", "--direct", "--nsp", "/admin", "--room", "lobby", "hello", "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "published to 1 Socket.IO server(s)\n"
    );
    clients.wait_events("c", 1, 10 * SECOND);
    assert_eq!(
        clients.events_of("c"),
        [("hello".to_owned(), serde_json::json!([1]))]
    );
    let json: Value = serde_json::from_slice(&cli(&["status", "--json"]).stdout).unwrap();
    assert_eq!(
        json["target"],
        serde_json::json!({"adapter": "python-socketio", "channel": "socketio"})
    );
    assert_eq!(
        json["namespaces"],
        serde_json::json!([{"nsp": "*", "servers": 1}])
    );
}
