//! `target.adapter = "streams"`: servers on `@socket.io/redis-streams-adapter` 0.3 (real Node
//! servers, real `socket.io-client` sockets) get the relay's entries appended to their stream, held
//! while none reads it, never anything they cannot read, and a client that drops for a moment gets
//! what it missed through the servers' connection state recovery.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use redis::Commands;
use serde_json::{json, Value};
use sio_relay::packet::decode_entry;

const SECOND: Duration = Duration::from_secs(1);
/// The servers' stream (their default `streamName`).
const SERVERS_STREAM: &str = "socket.io";

fn settings() -> Vec<(&'static str, &'static str)> {
    Adapter::Streams.settings()
}

/// How many times each of `total` numbered events (`data` = its number) reached `client`.
fn counts(clients: &Clients, client: &str, total: usize) -> Vec<u32> {
    let mut counts = vec![0u32; total];
    for (event, args) in clients.events_of(client) {
        if event == "n" {
            counts[args[0].as_u64().unwrap() as usize] += 1;
        }
    }
    counts
}

fn assert_exactly_once(clients: &Clients, client: &str, total: usize) {
    let counts = counts(clients, client, total);
    let lost = counts.iter().filter(|&&c| c == 0).count();
    let duplicated = counts.iter().filter(|&&c| c > 1).count();
    eprintln!("{client}: produced {total}, lost {lost}, duplicated {duplicated}");
    assert_eq!((lost, duplicated), (0, 0), "{client}");
}

/// Every entry of the servers' stream, as the servers read it.
fn servers_stream(con: &mut redis::Connection) -> Vec<Value> {
    let read: redis::streams::StreamRangeReply = con.xrange_all(SERVERS_STREAM).unwrap();
    read.ids
        .iter()
        .map(|entry| {
            let fields: Vec<(Vec<u8>, Vec<u8>)> = entry
                .map
                .iter()
                .map(|(k, v)| {
                    let v: Vec<u8> = redis::from_redis_value(v.clone()).unwrap();
                    (k.clone().into_bytes(), v)
                })
                .collect();
            let decoded = decode_entry(&fields)
                .unwrap_or_else(|e| panic!("a server cannot read entry {}: {e}", entry.id));
            serde_json::to_value(decoded).unwrap()
        })
        .collect()
}

/// The relay's appends while a client drops for a moment and comes back: the reconnecting client
/// gets what it missed from the servers' stream (`socket.recovered`), so no entry is lost for it,
/// and the client that stayed gets each exactly once.
#[test]
fn a_client_that_drops_for_a_moment_recovers_what_it_missed() {
    let redis = RedisServer::start();
    let options = json!({"adapter": "streams", "recovery": true});
    let server = SocketIoServer::start_options(&redis.url(), &options);
    wait_adapter_servers(&redis, &Adapter::Streams, 1);
    let clients = Clients::start_specs(vec![
        json!({"name": "steady", "url": server.url("/"), "rooms": ["feed"]}),
        json!({"name": "dropper", "url": server.url("/"), "rooms": ["feed"], "dropAfter": 20}),
    ]);
    let _relay = Relay::start(&redis, "relay-1", &settings());
    let total = 600;
    let url = redis.url();
    let producer = std::thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        for chunk in (0..total).collect::<Vec<usize>>().chunks(10) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                let data = i.to_string();
                let fields = [("room", "feed"), ("event", "n"), ("data", data.as_str())];
                pipe.xadd(STREAM, "*", &fields).ignore();
            }
            pipe.exec(&mut con).unwrap();
            // Paces the flow over about 3 s, across the dropped client's reconnection.
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    producer.join().unwrap();
    for client in ["steady", "dropper"] {
        clients.wait_events(client, total, 30 * SECOND);
    }
    let mut con = redis.connection();
    wait_until(10 * SECOND, "nothing is pending", || {
        pending(&mut con).is_empty()
    });
    end_marker(
        &mut con,
        STREAM,
        &[("room", "feed")],
        &clients,
        &["steady", "dropper"],
    );
    assert_eq!(
        clients.recoveries("dropper"),
        [false, true],
        "connected, dropped, and recovered"
    );
    // clients.js closes the connection under the socket, as a network failure would.
    assert_eq!(clients.disconnections("dropper"), ["forced close"]);
    // Recovered events carry the stream entry's ID after their own arguments.
    let last = clients.events_of("dropper").pop().unwrap();
    assert!(
        last.1[1].as_str().is_some_and(|id| id.contains('-')),
        "{last:?}"
    );
    assert_exactly_once(&clients, "steady", total);
    // The servers' recovery is at least once: an entry their XREAD loop dispatches after the
    // recovered socket rejoined its rooms, and which the replay (an XRANGE) also read, comes twice.
    let counts = counts(&clients, "dropper", total);
    let lost = counts.iter().filter(|&&c| c == 0).count();
    let duplicated = counts.iter().filter(|&&c| c > 1).count();
    eprintln!("dropper: produced {total}, lost {lost}, duplicated by the recovery {duplicated}");
    assert_eq!(lost, 0, "the dropped client recovered everything");
}

/// With no server of the streams adapter running, entries are held (nothing is appended that no
/// server would read); once a server and its client are up, they arrive in order.
#[test]
fn entries_wait_while_no_server_reads_the_stream() {
    let redis = RedisServer::start();
    let _relay = Relay::start(&redis, "relay-1", &settings());
    let mut con = redis.connection();
    for i in 0..5 {
        xadd(&mut con, &[("event", "n"), ("data", &i.to_string())]);
    }
    wait_until(10 * SECOND, "the entries are held", || {
        held_record(&mut con) == 5
    });
    let appended: usize = con.xlen(SERVERS_STREAM).unwrap();
    assert_eq!(appended, 0, "nothing appended while no server reads");
    let (_server, clients) = with_writes_paused(&redis, || {
        let server = SocketIoServer::start_with(&redis.url(), &Adapter::Streams);
        let clients = Clients::connect(&[("c", server.url("/"), &[])]);
        (server, clients)
    });
    clients.wait_events("c", 5, 30 * SECOND);
    let got: Vec<Value> = clients
        .events_of("c")
        .into_iter()
        .map(|(_, args)| args[0].clone())
        .collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    wait_until(10 * SECOND, "all acknowledged", || {
        pending(&mut con).is_empty()
    });
}

/// Only what every server can read reaches their stream: each broadcast with `rooms` and `except`
/// arrays (connection state recovery needs them), `volatile` only when set; an entry asking for
/// its clients' acknowledgements, which the relay cannot ask these servers for, and a malformed
/// one are dead-lettered with their reason, and the entries behind them flow.
#[test]
fn what_servers_cannot_read_never_reaches_their_stream() {
    let redis = RedisServer::start();
    let server = SocketIoServer::start_with(&redis.url(), &Adapter::Streams);
    wait_adapter_servers(&redis, &Adapter::Streams, 1);
    let clients = Clients::connect(&[("c", server.url("/"), &["lobby"])]);
    let _relay = Relay::start(&redis, "relay-1", &settings());
    let mut con = redis.connection();
    let entries: &[&[(&str, &str)]] = &[
        &[("event", "plain"), ("data", "1")],
        &[("event", "asks"), ("ack", "5s")],
        &[("event", "connect")],
        &[
            ("event", "fleeting"),
            ("volatile", "true"),
            ("room", "lobby"),
        ],
        &[
            ("event", "kept"),
            ("volatile", "false"),
            ("except", r#"["x"]"#),
        ],
    ];
    for fields in entries {
        xadd(&mut con, fields);
    }
    end_marker(&mut con, STREAM, &[], &clients, &["c"]);
    // A volatile emit may be dropped by the server while the connection is busy: not awaited.
    let events: Vec<String> = clients
        .events_of("c")
        .into_iter()
        .map(|(e, _)| e)
        .filter(|e| e != "fleeting")
        .collect();
    assert_eq!(events, ["plain", "kept", "end"]);

    let appended = servers_stream(&mut con);
    assert_eq!(appended.len(), 4, "{appended:#?}");
    for entry in &appended {
        assert_eq!(entry["uid"], "emitter");
        assert!(
            entry["rooms"].is_array() && entry["except"].is_array(),
            "{entry}"
        );
    }
    let flags: BTreeMap<String, Value> = appended
        .iter()
        .map(|e| (e["event"].as_str().unwrap().to_owned(), e["flags"].clone()))
        .collect();
    assert_eq!(flags["fleeting"], json!({"volatile": true}));
    assert_eq!(flags["kept"], Value::Null, "no volatile: false");

    let reasons: Vec<(String, String)> = dead_letters(&mut con)
        .iter()
        .map(|(_, f)| {
            let said = |name| field(f, name).unwrap().to_owned();
            (said("x-dead-reason"), said("x-dead-error"))
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "unsupported", "{reasons:?}");
    assert!(reasons[0].1.contains("streams adapter"), "{reasons:?}");
    assert_eq!(reasons[1].0, "malformed", "{reasons:?}");
    assert!(reasons[1].1.contains("reserved"), "{reasons:?}");
}

fn cli(redis: &RedisServer, args: &[&str]) -> std::process::Output {
    cli_with(redis, &Adapter::Streams, args)
}

/// `sio-relay <args>` set up for servers with `adapter`.
fn cli_with(redis: &RedisServer, adapter: &Adapter, args: &[&str]) -> std::process::Output {
    let mut cmd = sio_relay();
    cmd.args(args)
        .env("SIO_RELAY_REDIS__URL", redis.url())
        .env("SIO_RELAY_SOURCE__CONSUMER", "cli");
    for (key, value) in adapter.settings() {
        cmd.env(format!("SIO_RELAY_{key}"), value);
    }
    cmd.output().expect("run sio-relay")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `send --direct`, `status` and `monitor` speak the streams adapter: they count its servers,
/// append what they read, name the adapter servers really use, and read back what was appended.
#[test]
fn the_operators_commands_speak_the_streams_adapter() {
    let redis = RedisServer::start();
    let classic = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let hint = "with the classic adapter (createAdapter, PSUBSCRIBE), which this relay does not publish to: set target.adapter = \"classic\"";
    let out = cli(&redis, &["send", "--direct", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(hint), "{}", text(&out.stderr));
    let out = cli(&redis, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains(hint), "{}", text(&out.stdout));
    drop(classic);

    let server = SocketIoServer::start_with(&redis.url(), &Adapter::Streams);
    wait_adapter_servers(&redis, &Adapter::Streams, 1);
    let clients = Clients::connect(&[("lobby", server.url("/"), &["lobby"])]);
    let (monitor, ready) = start_monitor(&redis, 1, &settings());
    assert!(ready.contains("monitoring stream socket.io"), "{ready}");
    let out = cli(
        &redis,
        &["send", "--direct", "--room", "lobby", "hello", r#""world""#],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "published to 1 Socket.IO server(s)\n");
    clients.wait_events("lobby", 1, 10 * SECOND);
    assert_eq!(
        clients.events_of("lobby"),
        [("hello".to_owned(), json!(["world"]))]
    );
    let seen = monitor.wait_with_output().unwrap();
    let line: Value = serde_json::from_slice(&seen.stdout).unwrap();
    assert!(
        line["channel"].as_str().unwrap().starts_with("socket.io "),
        "{line}"
    );
    assert_eq!(line["packet"]["event"], "hello");
    assert_eq!(line["packet"]["rooms"], json!(["lobby"]));
    let out = cli(&redis, &["status"]);
    let said = text(&out.stdout);
    assert!(said.contains("/: 1 server(s)"), "{said}");
    assert!(
        said.contains("streams to stream socket.io (servers counted on socket.io)"),
        "{said}"
    );
}

/// `examples/streams-server`, started with its own script, gets what the relay appends.
#[test]
fn the_example_server_gets_the_relays_entries() {
    let redis = RedisServer::start();
    let port = free_port();
    let mut command = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/streams-server/start"
    ));
    command
        .env("PORT", port.to_string())
        .env("REDIS_URL", redis.url());
    let server = Node::spawn(command);
    // The first start runs `npm ci` from the example's lockfile.
    server.wait_line(
        &format!("streams-adapter server on port {port}"),
        120 * SECOND,
    );
    let clients = Clients::start_specs(vec![json!({
        "name": "c", "url": format!("http://127.0.0.1:{port}/"), "rooms": [], "readyOnConnect": true
    })]);
    let mut con = redis.connection();
    wait_until(20 * SECOND, "the server is counted", || {
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("socket.io#/#")
            .query(&mut con)
            .unwrap();
        counts[0].1 == 1
    });
    let _relay = Relay::start(&redis, "relay-1", &settings());
    xadd(&mut con, &[("event", "order"), ("data", r#""shipped""#)]);
    clients.wait_events("c", 1, 20 * SECOND);
    let (event, args) = clients.events_of("c").remove(0);
    assert_eq!((event.as_str(), &args[0]), ("order", &json!("shipped")));
    // Its connection state recovery adds the entry's ID in the servers' stream.
    let appended: redis::streams::StreamRangeReply = con.xrange_all("socket.io").unwrap();
    assert_eq!(args[1], json!(appended.ids[0].id), "{args}");
}

/// Servers with `streamCount` 4 read `socket.io-0` .. `socket.io-3`: with `target.stream_count`
/// the relay appends each namespace's entries, in order, to the stream its servers pick for it, and
/// `/notifications`, whose hash is negative (the servers' own appends go to `socket.io--3`, which
/// none reads), to one they read. Per entry: each client gets each of its namespace's once.
#[test]
fn servers_with_several_streams_get_each_namespace_in_order() {
    let redis = RedisServer::start();
    let four = Adapter::StreamsFour;
    let nsps = ["/", "/admin", "/notifications"];
    let mut options = four.options();
    options["namespaces"] = json!(nsps);
    let servers: Vec<SocketIoServer> = (0..2)
        .map(|_| SocketIoServer::start_options(&redis.url(), &options))
        .collect();
    wait_namespace_servers(&redis, &four, &nsps, 2);
    let clients = Clients::start_specs(
        nsps.iter()
            .enumerate()
            .map(|(i, nsp)| json!({"name": nsp, "url": servers[i % 2].url(nsp), "rooms": []}))
            .collect(),
    );
    let total = 50;
    let (monitor, ready) = start_monitor(&redis, nsps.len() * total, &four.settings());
    assert!(
        ready.contains("monitoring streams socket.io-0 .. socket.io-3 (4)"),
        "{ready}"
    );
    let _relay = Relay::start(&redis, "relay-1", &four.settings());
    let mut con = redis.connection();
    for i in 0..total {
        for nsp in nsps {
            xadd(
                &mut con,
                &[("nsp", nsp), ("event", "n"), ("data", &i.to_string())],
            );
        }
    }
    for nsp in nsps {
        clients.wait_events(nsp, total, 30 * SECOND);
        let got: Vec<Value> = clients
            .events_of(nsp)
            .into_iter()
            .map(|(_, args)| args[0].clone())
            .collect();
        assert_eq!(
            got,
            (0..total).map(Value::from).collect::<Vec<_>>(),
            "{nsp}"
        );
    }
    wait_until(10 * SECOND, "nothing is pending", || {
        pending(&mut con).is_empty()
    });
    // The monitor reads every stream: each namespace's entries, from its stream.
    let output = monitor.wait_with_output().unwrap();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for line in text(&output.stdout).lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        let stream = line["channel"].as_str().unwrap().split(' ').next().unwrap();
        let nsp = line["packet"]["nsp"].as_str().unwrap();
        *seen.entry((nsp.to_owned(), stream.to_owned())).or_default() += 1;
    }
    assert_eq!(
        seen,
        BTreeMap::from(
            [
                ("/", "socket.io-3"),
                ("/admin", "socket.io-0"),
                ("/notifications", "socket.io-1")
            ]
            .map(|(nsp, stream)| ((nsp.to_owned(), stream.to_owned()), total))
        )
    );
    let lengths: BTreeMap<String, usize> = [
        "socket.io",
        "socket.io-0",
        "socket.io-1",
        "socket.io-2",
        "socket.io-3",
        "socket.io--3",
    ]
    .into_iter()
    .map(|stream| (stream.to_owned(), con.xlen(stream).unwrap()))
    .collect();
    assert_eq!(
        lengths,
        BTreeMap::from([
            ("socket.io".to_owned(), 0),
            ("socket.io-0".to_owned(), total), // /admin
            ("socket.io-1".to_owned(), total), // /notifications
            ("socket.io-2".to_owned(), 0),
            ("socket.io-3".to_owned(), total), // /
            ("socket.io--3".to_owned(), 0),
        ])
    );
    let status = cli_with(&redis, &four, &["status"]);
    assert!(
        text(&status.stdout).contains("streams to streams socket.io-0 .. socket.io-3 (4)"),
        "{}",
        text(&status.stdout)
    );
}

/// Servers with `useShardedPubSub` SSUBSCRIBE their namespace's channel: a relay set up without
/// `target.use_sharded_pubsub` counts none and says which setting they need; with it, they get
/// the entries.
#[test]
fn servers_on_sharded_pubsub_are_counted_as_they_listen() {
    let redis = RedisServer::start();
    let sharded = Adapter::StreamsShardedPubsub;
    let server = SocketIoServer::start_with(&redis.url(), &sharded);
    wait_adapter_servers(&redis, &sharded, 1);
    let clients = Clients::connect(&[("lobby", server.url("/"), &["lobby"])]);
    let out = cli(&redis, &["send", "--direct", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    let hint = "with the streams adapter (@socket.io/redis-streams-adapter with useShardedPubSub, SSUBSCRIBE), which this relay does not publish to: set target.adapter = \"streams\" and target.use_sharded_pubsub = true";
    assert!(text(&out.stderr).contains(hint), "{}", text(&out.stderr));

    let out = cli_with(
        &redis,
        &sharded,
        &["send", "--direct", "--room", "lobby", "direct"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "published to 1 Socket.IO server(s)\n");
    let _relay = Relay::start(&redis, "relay-1", &sharded.settings());
    let mut con = redis.connection();
    xadd(&mut con, &[("room", "lobby"), ("event", "relayed")]);
    clients.wait_events("lobby", 2, 20 * SECOND);
    let events: Vec<String> = clients
        .events_of("lobby")
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    assert_eq!(events, ["direct", "relayed"]);
    wait_until(10 * SECOND, "nothing is pending", || {
        pending(&mut con).is_empty()
    });
}
