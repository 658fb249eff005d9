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
