//! Redis Cluster: six real nodes (three primaries, three replicas), real Socket.IO servers whose
//! node-redis cluster clients subscribe wherever they choose, and real clients. The relay works on
//! the primary of its stream's slot and counts servers on every node; the per-entry ledger tells
//! what a primary killed, a slot resharded, or the relay killed mid-flow costs.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

/// The relay's settings for `stream` on `cluster`, with `extra`.
fn relay_on(cluster: &Cluster, stream: &str, extra: &[(&'static str, &str)]) -> Relay {
    let mut settings = cluster.settings(stream);
    settings.push(("SOURCE__BATCH_SIZE", "64".into()));
    settings.push(("DELIVERY__RETRY_INTERVAL", "100ms".into()));
    settings.push(("REDIS__BACKOFF_MAX", "500ms".into()));
    for (key, value) in extra {
        settings.push((key, value.to_string()));
    }
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let relay = Relay::start(&cluster.nodes[0], "relay-1", &settings);
    relay.wait_ready(30 * SECOND);
    relay
}

fn events(clients: &Clients, name: &str, event: &str) -> usize {
    clients
        .events_of(name)
        .iter()
        .filter(|(e, _)| e == event)
        .count()
}

/// Classic-adapter servers subscribe on whichever primary their client picked, not the stream's:
/// the relay counts them on every node, its PUBLISH crosses the cluster bus to them, and rooms
/// still select. `status` and `send` work through the cluster too.
#[test]
fn classic_servers_anywhere_in_the_cluster_get_every_entry() {
    let cluster = Cluster::start();
    let stream = "sio-relay:{t}";
    let options = json!({"cluster": true});
    let one = SocketIoServer::start_options(&cluster.urls(), &options);
    let two = SocketIoServer::start_options(&cluster.urls(), &options);
    cluster.wait_servers(2);
    let clients = Clients::start_specs(vec![
        json!({"name": "c", "url": one.url("/"), "rooms": ["r1"], "ack": true}),
        json!({"name": "d", "url": two.url("/"), "rooms": []}),
    ]);
    let relay = relay_on(&cluster, stream, &[("DELIVERY__MIN_RECEIVERS", "2")]);

    let mut con = cluster.owner(stream).connection();
    for i in 0..100 {
        let fields = numbered(i);
        redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(&fields)
            .query::<String>(&mut con)
            .unwrap();
    }
    redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg(&[("event", "room"), ("data", "1"), ("room", "r1")])
        .query::<String>(&mut con)
        .unwrap();
    clients.wait_events("c", 101, 20 * SECOND);
    clients.wait_events("d", 100, 20 * SECOND);
    end_marker(&mut con, stream, &[], &clients, &["c", "d"]);
    assert_eq!(events(&clients, "c", "n"), 100);
    assert_eq!(events(&clients, "d", "n"), 100);
    assert_eq!(events(&clients, "c", "room"), 1);
    assert_eq!(events(&clients, "d", "room"), 0, "rooms select");
    assert_eq!(
        delivered(&clients),
        (0..100).collect::<Vec<u64>>(),
        "in order"
    );
    // Delivery confirmed by a client: the answers cross the cluster bus to the relay.
    let asked: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg(&[("event", "asked"), ("room", "r1"), ("ack", "5s")])
        .query(&mut con)
        .unwrap();
    assert_one_ack_result(&mut con, "sio-relay:{t}:acks", &asked);

    let run = |args: &[&str]| {
        let mut cmd = sio_relay();
        cmd.args(args).env("SIO_RELAY_SOURCE__CONSUMER", "cli");
        for (key, value) in cluster.settings(stream) {
            cmd.env(format!("SIO_RELAY_{key}"), value);
        }
        cmd.output().unwrap()
    };
    let status = run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["namespaces"][0]["servers"], 2, "{json}");
    assert_eq!(json["streams"][0]["length"], 103, "{json}");
    let sent = run(&["send", "--direct", "direct", "1"]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    // Its 100 entries, the end marker and the direct one.
    clients.wait_events("d", 102, 10 * SECOND);
    assert_eq!(events(&clients, "d", "direct"), 1);
    drop(relay);
}

/// Sharded-adapter servers on a node-redis cluster client. The stream tagged with the namespace
/// channel `{socket.io#/#}` lets the delivery script SPUBLISH `/` itself, atomically with its
/// journal; `/admin`'s channel hashes to another slot, so the relay publishes it after the script.
/// Both arrive, rooms selected by the packet, not the channel.
#[test]
fn sharded_servers_on_a_cluster_get_their_namespaces_in_and_out_of_the_streams_slot() {
    let cluster = Cluster::start();
    let stream = "sio-relay:{socket.io#/#}";
    let options = json!({"cluster": true, "adapter": "sharded"});
    let one = SocketIoServer::start_options(&cluster.urls(), &options);
    let two = SocketIoServer::start_options(&cluster.urls(), &options);
    wait_until(20 * SECOND, "2 sharded servers listen", || {
        let mut con = cluster.owner("socket.io#/admin#").connection();
        let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg("socket.io#/admin#")
            .query(&mut con)
            .unwrap();
        counts[0].1 == 2
    });
    let clients = Clients::start_specs(vec![
        json!({"name": "c", "url": one.url("/"), "rooms": ["r1"]}),
        json!({"name": "d", "url": two.url("/"), "rooms": []}),
        json!({"name": "a", "url": two.url("/admin"), "rooms": [], "ack": true}),
    ]);
    let relay = relay_on(
        &cluster,
        stream,
        &[
            ("TARGET__ADAPTER", "sharded"),
            ("DELIVERY__MIN_RECEIVERS", "2"),
        ],
    );
    let mut con = cluster.owner(stream).connection();
    let xadd = |con: &mut redis::Connection, fields: &[(&str, &str)]| {
        redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(fields)
            .query::<String>(con)
            .unwrap()
    };
    for i in 0..50 {
        let i = i.to_string();
        xadd(&mut con, &[("event", "n"), ("data", &i)]);
        xadd(&mut con, &[("event", "n"), ("data", &i), ("nsp", "/admin")]);
    }
    xadd(
        &mut con,
        &[("event", "room"), ("data", "1"), ("room", "r1")],
    );
    clients.wait_events("c", 51, 20 * SECOND);
    clients.wait_events("d", 50, 20 * SECOND);
    clients.wait_events("a", 50, 20 * SECOND);
    end_marker(&mut con, stream, &[], &clients, &["c", "d"]);
    end_marker(&mut con, stream, &[("nsp", "/admin")], &clients, &["a"]);
    assert_eq!(events(&clients, "d", "room"), 0, "rooms select");
    assert_eq!(events(&clients, "a", "n"), 50);
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .query(&mut con)
        .unwrap();
    assert_eq!(pending.0, 0, "everything acknowledged");
    // Delivery confirmed by a client of `/admin`, whose answers come on a channel of another
    // slot than the stream's.
    let asked = xadd(
        &mut con,
        &[("event", "asked"), ("nsp", "/admin"), ("ack", "5s")],
    );
    assert_one_ack_result(&mut con, "sio-relay:{socket.io#/#}:acks", &asked);
    drop(relay);
}

/// Streams-adapter servers on a node-redis cluster client: their stream in the relay's slot
/// (`socket.io:{t}` next to `sio-relay:{t}`) is appended to by the delivery script itself, with the
/// acknowledgement; in another slot (`socket.io`, and `socket.io-3`, the stream servers with
/// `streamCount` 4 read `/`'s entries from), by the relay after the script, confirmed next. Every
/// entry arrives once either way, and nothing stays pending.
#[test]
fn streams_servers_on_a_cluster_get_every_entry_in_and_out_of_the_streams_slot() {
    let cluster = Cluster::start();
    let stream = "sio-relay:{t}";
    let mut con = cluster.owner(stream).connection();
    for (servers_stream, count, first) in [
        ("socket.io:{t}", "1", 0),
        ("socket.io", "1", 100),
        ("socket.io", "4", 200),
    ] {
        let options = json!({
            "cluster": true,
            "adapter": "streams",
            "streamName": servers_stream,
            "streamCount": count.parse::<u32>().unwrap(),
        });
        let server = SocketIoServer::start_options(&cluster.urls(), &options);
        wait_until(20 * SECOND, "the server is counted", || {
            cluster.subscribers("socket.io#/#") == 1
        });
        let clients = Clients::connect(&[("c", server.url("/"), &["r1"])]);
        let relay = relay_on(
            &cluster,
            stream,
            &[
                ("TARGET__ADAPTER", "streams"),
                ("TARGET__STREAM", servers_stream),
                ("TARGET__STREAM_COUNT", count),
            ],
        );
        for i in first..first + 100 {
            redis::cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg(numbered(i))
                .query::<String>(&mut con)
                .unwrap();
        }
        clients.wait_events("c", 100, 20 * SECOND);
        wait_until(20 * SECOND, "nothing is pending", || {
            let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
                .arg(stream)
                .arg(GROUP)
                .query(&mut con)
                .unwrap();
            pending.0 == 0
        });
        end_marker(&mut con, stream, &[], &clients, &["c"]);
        assert_eq!(
            delivered(&clients),
            (first as u64..first as u64 + 100).collect::<Vec<u64>>(),
            "{servers_stream} ({count}): each once, in order"
        );
        if count == "4" {
            let appended: usize = redis::cmd("XLEN")
                .arg("socket.io-3")
                .query(&mut cluster.owner("socket.io-3").connection())
                .unwrap();
            assert_eq!(
                appended, 101,
                "/'s entries (and the end marker) go to socket.io-3"
            );
        }
        drop(relay);
    }
}

/// `results` holds one result, for `id`, with one acknowledgement.
fn assert_one_ack_result(con: &mut redis::Connection, results: &str, id: &str) {
    let read = |con: &mut redis::Connection| -> Vec<(String, Vec<(String, String)>)> {
        redis::cmd("XRANGE")
            .arg(results)
            .arg("-")
            .arg("+")
            .query(con)
            .unwrap()
    };
    wait_until(20 * SECOND, "a result", || !read(con).is_empty());
    let results = read(con);
    assert_eq!(results.len(), 1);
    let fields = &results[0].1;
    assert_eq!(field(fields, "id"), Some(id));
    assert_eq!(field(fields, "acks"), Some("1"));
}

/// The primary of the stream's slot is SIGKILLed mid-flow; its replica takes over, and the killed
/// node comes back as a replica (node-redis servers subscribed on it resubscribe only then). Lost
/// stays 0; entries missing from the new primary's stream are only ones the producer never saw
/// replicated; duplicates stay within the batches in flight.
#[test]
fn a_primary_killed_mid_flow_loses_nothing() {
    let mut cluster = Cluster::start();
    let stream = "sio-relay:{t}";
    let server = SocketIoServer::start_options(&cluster.urls(), &json!({"cluster": true}));
    cluster.wait_servers(1);
    let clients = Clients::connect(&[("c", server.url("/"), &[])]);
    let relay = relay_on(&cluster, stream, &[]);

    let total = 3000;
    let ports = cluster.ports();
    let producer = FailoverProducer::start(stream, total, move || {
        owner_connection(&ports, "sio-relay:{t}")
    });
    producer.wait_produced(total / 3, 30 * SECOND);
    let old = cluster.owner(stream).port;
    cluster.fail_over(stream);
    on_port(&mut cluster.nodes, old).restart();
    cluster.wait_healthy();
    producer.wait_done(90 * SECOND);
    cluster.wait_servers(1);

    let mut con = cluster.owner(stream).connection();
    let ledger = producer.settle(&clients, &mut con, stream, &format!("{stream}:dead"), total);
    println!("{}", ledger.summary("cluster failover"));
    assert_eq!(ledger.lost(), 0, "{}", ledger.summary("cluster failover"));
    assert!(
        ledger.duplicated() <= 2 * 64,
        "only the batches in flight may be delivered again: {}",
        ledger.summary("cluster failover")
    );
    relay.assert_logged("Redis is back");
}

/// The stream's slot is moved to another primary with `redis-cli --cluster reshard` mid-flow, and
/// later the relay is SIGKILLed and started again. The relay follows the slot (MOVED/ASK end the
/// session; it reconnects to the new owner). Lost stays 0; a duplicate only for the batch in
/// flight at the migration, whose journal names the old node's Redis process.
#[test]
fn the_streams_slot_resharded_and_the_relay_killed_mid_flow_lose_nothing() {
    let cluster = Cluster::start();
    let stream = format!("sio-relay:{{{}}}", cluster.tag_near_a_range_start());
    let server = SocketIoServer::start_options(&cluster.urls(), &json!({"cluster": true}));
    cluster.wait_servers(1);
    let clients = Clients::connect(&[("c", server.url("/"), &[])]);
    let mut relay = relay_on(&cluster, &stream, &[]);

    let total = 3000;
    let ports = cluster.ports();
    let key = stream.clone();
    let producer = FailoverProducer::start(&stream, total, move || owner_connection(&ports, &key));
    producer.wait_produced(total / 3, 30 * SECOND);
    let before = cluster.owner(&stream).port;
    let after = cluster.reshard(&stream);
    assert_ne!(before, after);
    producer.wait_produced(2 * total / 3, 60 * SECOND);
    relay.restart(); // SIGKILL, then the same consumer again
    producer.wait_done(60 * SECOND);

    let mut con = cluster.owner(&stream).connection();
    let ledger = producer.settle(
        &clients,
        &mut con,
        &stream,
        &format!("{stream}:dead"),
        total,
    );
    println!("{}", ledger.summary("cluster reshard and relay kill"));
    assert_eq!(
        ledger.lost(),
        0,
        "{}",
        ledger.summary("cluster reshard and relay kill")
    );
    assert!(
        ledger.duplicated() <= 64,
        "only the batch in flight at the migration may be delivered again: {}",
        ledger.summary("cluster reshard and relay kill")
    );
    assert!(
        ledger.excused.iter().all(|e| !e),
        "a migration loses no write"
    );
}

/// Three partitions, each tagged to land on another primary, relayed by one relay: each user's
/// entries arrive once and in order, whichever shard their stream is on.
#[test]
fn partitions_on_three_primaries_are_relayed_by_one_relay() {
    let cluster = Cluster::start();
    let streams: Vec<String> = cluster
        .tag_on_each_primary()
        .iter()
        .map(|tag| format!("orders:{{{tag}}}"))
        .collect();
    let owners: std::collections::HashSet<u16> =
        streams.iter().map(|s| cluster.owner(s).port).collect();
    assert_eq!(owners.len(), 3, "one stream per primary");
    let server = SocketIoServer::start_options(&cluster.urls(), &json!({"cluster": true}));
    cluster.wait_servers(1);
    let (rooms, clients) = one_client_per_room(&server.url("/"), 6);
    let mut settings = vec![
        ("REDIS__MODE", "cluster".to_owned()),
        ("REDIS__URLS", cluster.urls()),
        ("SOURCE__STREAMS", streams.join(",")),
    ];
    settings.push(("SOURCE__BATCH_SIZE", "16".into()));
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let relay = Relay::start(&cluster.nodes[0], "relay-1", &settings);
    relay.wait_ready(30 * SECOND);

    let partition_of = |room: &str| -> &str {
        &streams[usize::from(sio_relay::partition::key_slot(room)) % streams.len()]
    };
    let mut connections: std::collections::HashMap<&str, redis::Connection> = Default::default();
    for i in 0..600 {
        let room = &rooms[i % 6];
        let stream = partition_of(room);
        let con = connections
            .entry(stream)
            .or_insert_with(|| cluster.owner(stream).connection());
        let n = i.to_string();
        redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(&[
                ("event", "n"),
                ("data", n.as_str()),
                ("room", room.as_str()),
            ])
            .query::<String>(con)
            .unwrap();
    }
    assert_each_room_in_order(&clients, &rooms, 100, |room, fields| {
        let stream = partition_of(room);
        redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(fields)
            .query::<String>(connections.get_mut(stream).unwrap())
            .unwrap();
    });
    assert!(
        connections.len() > 1,
        "the six rooms spread over several streams"
    );
    drop(relay);
}

/// A cluster of one node, which does not know its own address: CLUSTER SLOTS gives the empty
/// string as every endpoint, which means "the host you sent this command to". The relay finds
/// the stream's primary there, counts the servers there, delivers, and `status` sees them.
#[test]
fn a_one_node_cluster_whose_slots_give_an_empty_endpoint_works() {
    let cluster = Cluster::start_one_node();
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut cluster.nodes[0].connection())
        .unwrap();
    let redis::Value::Array(range) = &slots[0] else {
        panic!("CLUSTER SLOTS: {slots:?}")
    };
    let redis::Value::Array(primary) = &range[2] else {
        panic!("CLUSTER SLOTS: {slots:?}")
    };
    assert_eq!(
        primary[0],
        redis::Value::BulkString(Vec::new()),
        "the endpoint is empty"
    );
    // A plain node-redis client: one node serves every channel.
    let server = SocketIoServer::start_with(&cluster.nodes[0].url(), &Adapter::Classic);
    cluster.wait_servers(1);
    let clients = Clients::connect(&[("c", server.url("/"), &["r1"])]);
    let stream = "sio-relay:{t}";
    let relay = relay_on(&cluster, stream, &[]);
    let mut con = cluster.nodes[0].connection();
    redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg(&[("event", "hello"), ("data", "1"), ("room", "r1")])
        .query::<String>(&mut con)
        .unwrap();
    end_marker(&mut con, stream, &[], &clients, &["c"]);
    assert_eq!(events(&clients, "c", "hello"), 1);

    let mut status = sio_relay();
    status
        .args(["status", "--json"])
        .env("SIO_RELAY_SOURCE__CONSUMER", "cli");
    for (key, value) in cluster.settings(stream) {
        status.env(format!("SIO_RELAY_{key}"), value);
    }
    let status = status.output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&status.stdout)
        .unwrap_or_else(|_| panic!("status --json: {}", String::from_utf8_lossy(&status.stderr)));
    assert_eq!(json["namespaces"][0]["servers"], 1, "{json}");
    drop(relay);
}
