//! Partitioned streams (`source.streams`): producers spread entries over several streams by the
//! documented rule, one relay process relays them all side by side, and order holds per room.
//! Real Redis, a real Socket.IO server and real clients, one per room.

use std::time::Duration;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);
const STREAMS: [&str; 3] = ["orders:{a}", "orders:{b}", "orders:{c}"];

/// The producers' rule (docs/04-scaling-out.md, "Partitioned streams"): KEYSLOT of the first room, modulo the
/// number of streams.
fn partition_of(room: &str) -> &'static str {
    STREAMS[usize::from(sio_relay::partition::key_slot(room)) % STREAMS.len()]
}

/// 600 entries for six users spread over three streams by the rule, the relay SIGKILLed halfway and
/// started again: every user gets exactly its 100 entries, in order. `send` picks the same stream
/// as the rule, `status` shows each stream, and a malformed entry is dead-lettered to its own
/// partition's dead-letter stream, listed and replayed back there.
#[test]
fn entries_spread_over_partitions_arrive_once_and_in_order_per_room() {
    let redis = RedisServer::start();
    let server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let (rooms, clients) = one_client_per_room(&server.url("/"), 6);
    let streams = STREAMS.join(",");
    let settings = [
        ("SOURCE__STREAMS", streams.as_str()),
        ("SOURCE__BATCH_SIZE", "16"),
    ];
    let mut relay = Relay::start(&redis, "relay-1", &settings);
    relay.wait_ready(20 * SECOND);
    let used: std::collections::HashSet<&str> = rooms.iter().map(|r| partition_of(r)).collect();
    assert!(used.len() > 1, "the six rooms spread over several streams");

    let mut con = redis.connection();
    for i in 0..600 {
        let room = &rooms[i % 6];
        let n = i.to_string();
        redis::cmd("XADD")
            .arg(partition_of(room))
            .arg("*")
            .arg(&[
                ("event", "n"),
                ("data", n.as_str()),
                ("room", room.as_str()),
            ])
            .query::<String>(&mut con)
            .unwrap();
        if i == 300 {
            relay.restart(); // SIGKILL, then the same consumer again
        }
    }
    assert_each_room_in_order(&clients, &rooms, 100, |room, fields| {
        redis::cmd("XADD")
            .arg(partition_of(room))
            .arg("*")
            .arg(fields)
            .query::<String>(&mut con)
            .unwrap();
    });

    let run = |args: &[&str]| {
        sio_relay()
            .args(args)
            .env("SIO_RELAY_REDIS__URL", redis.url())
            .env("SIO_RELAY_SOURCE__STREAMS", &streams)
            .env("SIO_RELAY_SOURCE__CONSUMER", "cli")
            .output()
            .unwrap()
    };
    let length = |con: &mut redis::Connection, stream: &str| -> u64 {
        redis::cmd("XLEN").arg(stream).query(con).unwrap()
    };
    let before = length(&mut con, partition_of("user:4"));
    let sent = run(&["send", "--room", "user:4", "hello", "1"]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(
        length(&mut con, partition_of("user:4")),
        before + 1,
        "send follows the rule"
    );
    clients.wait_events("user:4", 101, 10 * SECOND);

    redis::cmd("XADD")
        .arg("orders:{b}")
        .arg("*")
        .arg(&[("data", "no event")])
        .query::<String>(&mut con)
        .unwrap();
    wait_until(10 * SECOND, "dead-lettered to its partition's", || {
        length(&mut con, "orders:{b}:dead") == 1
    });
    let listed = run(&["dead", "list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("malformed"), "{text}");
    let replayed = run(&["dead", "replay", "--all"]);
    let text = String::from_utf8_lossy(&replayed.stdout);
    assert!(
        text.contains("-> orders:{b} "),
        "back to its own stream: {text}"
    );

    let status = run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let names: Vec<&str> = json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, STREAMS, "{json}");
    let pending: u64 = json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["group"]["pending"].as_u64().unwrap())
        .sum();
    assert_eq!(pending, 0, "{json}");
}

/// Two partitions, each counted in its own series (`stream` label): every entry of a stream moves
/// that stream's counters and gauges only, the other's stay as its own entries leave them.
/// Orders:{a} gets 7 valid entries; orders:{b} 3 valid, 2 malformed and 1 for a namespace no
/// server listens on (held). A real Socket.IO server and a client per room show what was
/// delivered.
#[test]
fn each_partition_counts_its_own_entries() {
    let redis = RedisServer::start();
    let server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let (rooms, clients) = one_client_per_room(&server.url("/"), 2);
    let [a, b] = ["orders:{a}", "orders:{b}"];
    let streams = format!("{a},{b}");
    let relay = Relay::start(&redis, "relay-1", &[("SOURCE__STREAMS", streams.as_str())]);
    relay.wait_ready(20 * SECOND);

    let mut con = redis.connection();
    let mut add = |stream: &str, fields: &[(&str, &str)]| {
        redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(fields)
            .query::<String>(&mut con)
            .unwrap();
    };
    for _ in 0..7 {
        add(a, &[("event", "n"), ("room", rooms[0].as_str())]);
    }
    for _ in 0..3 {
        add(b, &[("event", "n"), ("room", rooms[1].as_str())]);
    }
    add(b, &[("data", "no event")]);
    add(b, &[("event", "connect")]);
    add(b, &[("event", "n"), ("nsp", "/nobody")]);

    let of = |name: &str, stream: &str| format!("{name}{{stream=\"{stream}\"}}");
    relay.wait_metric(&of("acknowledged_total", a), 20 * SECOND, |n| n == 7.0);
    relay.wait_metric(&of("acknowledged_total", b), 20 * SECOND, |n| n == 5.0);
    relay.wait_metric(&of("held_entries", b), 20 * SECOND, |n| n == 1.0);
    // Refreshed every 5 s from XINFO GROUPS, each stream's own group.
    relay.wait_metric(&of("group_pending", b), 20 * SECOND, |n| n == 1.0);
    relay.wait_metric(&of("group_pending", a), 20 * SECOND, |n| n == 0.0);
    clients.wait_events(&rooms[0], 7, 10 * SECOND);
    clients.wait_events(&rooms[1], 3, 10 * SECOND);

    let body = http_get(relay.http_port(), "/metrics").1;
    let value = |series: String| reading(&body, &series).unwrap_or_else(|| panic!("{series}"));
    for (name, in_a, in_b) in [
        ("entries_read_total", 7.0, 6.0),
        ("published_total", 7.0, 3.0),
        ("acknowledged_total", 7.0, 5.0),
        ("end_to_end_latency_seconds", 7.0, 3.0),
        ("publish_receivers", 7.0, 3.0),
        ("held_total", 0.0, 1.0),
        ("held_entries", 0.0, 1.0),
        ("dead_lettered_total", 0.0, 2.0),
    ] {
        assert_eq!(value(of(name, a)), in_a, "{name} of {a}\n{body}");
        assert_eq!(value(of(name, b)), in_b, "{name} of {b}\n{body}");
    }
    let malformed = format!("dead_lettered_total{{stream=\"{b}\",reason=\"malformed\"}}");
    assert_eq!(value(malformed), 2.0, "{body}");
    let connected = format!("redis_connected{{stream=\"{a}\",connection=\"writer\"}}");
    assert_eq!(value(connected), 1.0, "{body}");
    // Nothing twice: each client got its room's entries once.
    assert_eq!(clients.events_of(&rooms[0]).len(), 7);
    assert_eq!(clients.events_of(&rooms[1]).len(), 3);
}
