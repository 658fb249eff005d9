//! Delivery confirmed by the clients: entries with `ack` sent as broadcasts with acknowledgements to
//! real Socket.IO servers, acknowledged (or not) by real socket.io-client sockets, and counted per
//! entry: a result in the results stream, a dead letter, or still pending; and what each client
//! received, how often.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::ops::{documented_metrics, ACK_METRICS};
use serde_json::{json, Value};

const SECOND: Duration = Duration::from_secs(1);

/// Settings that keep the tests short: attempts 300 ms apart.
const FAST_RETRIES: (&str, &str) = ("ACKS__RETRY_INTERVAL", "300ms");

/// The results stream's entries, by the source entry ID they are for.
pub(crate) fn results(con: &mut redis::Connection) -> BTreeMap<String, BTreeMap<String, String>> {
    let entries: Vec<(String, Vec<(String, String)>)> = {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg("sio-relay:acks")
            .arg("-")
            .arg("+")
            .query(con)
            .unwrap();
        reply
            .ids
            .into_iter()
            .map(|entry| {
                let fields = entry
                    .map
                    .into_iter()
                    .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap()))
                    .collect();
                (entry.id, fields)
            })
            .collect()
    };
    let mut by_source = BTreeMap::new();
    for (_, fields) in entries {
        let fields: BTreeMap<String, String> = fields.into_iter().collect();
        let id = fields["id"].clone();
        assert!(
            by_source.insert(id.clone(), fields).is_none(),
            "two results for {id}"
        );
    }
    by_source
}

fn wait_results(con: &mut redis::Connection, n: usize, timeout: Duration) {
    wait_until(timeout, &format!("{n} results"), || results(con).len() >= n);
}

fn answers(result: &BTreeMap<String, String>) -> Vec<Value> {
    let mut answers: Vec<Value> = serde_json::from_str(&result["answers"]).unwrap();
    answers.sort_by_key(|a| a.to_string());
    answers
}

/// How many times `client` received an event whose last argument is the entry ID `id`.
fn times_received(clients: &Clients, client: &str, id: &str) -> usize {
    clients
        .events_of(client)
        .iter()
        .filter(|(_, args)| args.as_array().and_then(|a| a.last()) == Some(&json!(id)))
        .count()
}

#[test]
fn classic_clients_confirm_delivery() {
    clients_confirm_delivery(Adapter::Classic);
}

/// socket.io 4.5 with `@socket.io/redis-adapter` 7.2, whose notepack 2 writes `ack()` without an
/// argument differently.
#[test]
fn clients_of_socket_io_4_5_with_adapter_7_2_confirm_delivery() {
    clients_confirm_delivery(Adapter::Classic72);
}

#[test]
fn sharded_clients_confirm_delivery() {
    clients_confirm_delivery(Adapter::Sharded("dynamic"));
}

/// Two sockets of one user on two servers both acknowledge (and are both counted); a client that
/// never acknowledges gets the entry again until `acks.max_age`, then it is dead-lettered; an entry
/// without `ack` is delivered as before; nothing stays pending.
fn clients_confirm_delivery(adapter: Adapter) {
    let redis = RedisServer::start();
    let a = SocketIoServer::start_with(&redis.url(), &adapter);
    let b = SocketIoServer::start_with(&redis.url(), &adapter);
    wait_adapter_servers(&redis, &adapter, 2);
    let clients = Clients::start_specs(vec![
        json!({"name": "u1-a", "url": a.url("/"), "rooms": ["user:1"], "ack": true}),
        json!({"name": "u1-b", "url": b.url("/"), "rooms": ["user:1"], "ack": true}),
        json!({"name": "u2", "url": a.url("/"), "rooms": ["user:2"]}),
        json!({"name": "u3", "url": b.url("/"), "rooms": ["user:3"], "ack": true}),
    ]);
    let mut settings = adapter.settings();
    settings.extend([FAST_RETRIES, ("ACKS__MAX_AGE", "3s")]);
    let relay = Relay::start(&redis, "relay-1", &settings);
    let port = relay.http_port();
    let mut con = redis.connection();
    let paid = xadd(
        &mut con,
        &[
            ("event", "paid"),
            ("room", "user:1"),
            ("data", r#"{"order":7}"#),
            ("ack", "5s"),
            ("append_id", "true"),
        ],
    );
    let ignored = xadd(
        &mut con,
        &[
            ("event", "notice"),
            ("room", "user:2"),
            ("ack", "500ms"),
            ("append_id", "true"),
        ],
    );
    let plain = xadd(
        &mut con,
        &[
            ("event", "plain"),
            ("room", "user:3"),
            ("append_id", "true"),
        ],
    );
    let asked = xadd(
        &mut con,
        &[
            ("event", "ask"),
            ("room", "user:3"),
            ("data", r#""q""#),
            ("ack", "5s"),
            ("append_id", "true"),
        ],
    );
    // The ignored entry waits for seconds: it shows in the gauge meanwhile.
    wait_until(10 * SECOND, "entries wait for acknowledgements", || {
        reading(&http_get(port, "/metrics").1, "acks_waiting").is_some_and(|n| n >= 1.0)
    });
    wait_results(&mut con, 2, 20 * SECOND);
    wait_until(20 * SECOND, "the ignored entry is dead-lettered", || {
        !dead_letters(&mut con).is_empty()
    });
    wait_until(10 * SECOND, "nothing pending", || {
        pending(&mut con).is_empty()
    });
    // The relay records what its scripts did once their replies are back: a moment after Redis.
    wait_until(10 * SECOND, "the relay shows nothing waiting", || {
        reading(&http_get(port, "/metrics").1, "acks_waiting") == Some(0.0)
    });
    // Every metric of acknowledgements the docs list (docs/03-operating.md) moved.
    let metrics = http_get(port, "/metrics").1;
    for name in ACK_METRICS {
        // The docs name the reasons of dead_lettered_total in their text.
        let listed = name.contains('{') || documented_metrics().iter().any(|n| n == name);
        assert!(listed, "{name} is not in docs/03-operating.md");
        let value = reading(&metrics, name).unwrap_or_else(|| panic!("no {name} in {metrics}"));
        match name {
            "acks_waiting" => assert_eq!(value, 0.0, "{name}"),
            "ack_requests_total" => assert!(value >= 4.0, "{name} {value}"),
            "client_acks_total" => assert_eq!(value, 3.0, "{name}"),
            "ack_latency_seconds" => assert_eq!(value, 3.0, "{name} (its count)"),
            "acked_by_clients_total" => assert_eq!(value, 2.0, "{name}"),
            _ => assert_eq!(value, 1.0, "{name}"),
        }
    }

    let results = results(&mut con);
    assert_eq!(
        results.keys().collect::<Vec<_>>(),
        [&paid, &asked],
        "one result per acknowledged entry"
    );
    let paid_result = &results[&paid];
    assert_eq!(paid_result["nsp"], "/");
    assert_eq!(paid_result["servers"], "2");
    assert_eq!(paid_result["clients"], "2", "both sockets counted");
    assert_eq!(paid_result["acks"], "2");
    assert_eq!(paid_result["attempts"], "1");
    assert_eq!(
        answers(paid_result),
        [json!({"who": "u1-a"}), json!({"who": "u1-b"})]
    );
    assert_eq!(results[&asked]["clients"], "1");
    assert_eq!(answers(&results[&asked]), [json!({"who": "u3"})]);

    // Each socket of user 1 got the entry once, with its ID last, and knew it could acknowledge.
    for client in ["u1-a", "u1-b"] {
        assert_eq!(times_received(&clients, client, &paid), 1, "{client}");
        let (event, args) = &clients.events_of(client)[0];
        assert_eq!(event, "paid");
        assert_eq!(args, &json!([{"order": 7}, paid]));
    }
    for (client, acked) in [
        ("u1-a", &["paid"][..]),
        ("u1-b", &["paid"]),
        ("u2", &[]),
        ("u3", &["ask"]),
    ] {
        assert_eq!(clients.acked_by(client), acked, "{client}");
    }
    // The entry without `ack` arrived once, as before.
    assert_eq!(times_received(&clients, "u3", &plain), 1);
    assert_eq!(times_received(&clients, "u3", &asked), 1);

    // Sent again while no client acknowledged, then dead-lettered with the reason.
    assert!(
        times_received(&clients, "u2", &ignored) >= 2,
        "u2 got {:?}",
        clients.events_of("u2")
    );
    let dead = dead_letters(&mut con);
    assert_eq!(dead.len(), 1);
    let fields = &dead[0].1;
    assert_eq!(field(fields, "x-dead-id"), Some(ignored.as_str()));
    assert_eq!(field(fields, "x-dead-reason"), Some("unacknowledged"));
    let error = field(fields, "x-dead-error").unwrap();
    assert!(
        error.starts_with("no client acknowledged it in ") && error.contains("acks.max_age = 3s"),
        "{error}"
    );
    assert!(
        error.ends_with("the last attempt reached 1 clients"),
        "{error}"
    );
}

/// A user offline when entries were produced receives, on connecting, exactly those younger than
/// `acks.max_age`; the older ones are dead-lettered as `unacknowledged` without reaching anyone.
/// A client acknowledges with an argument nested past what serde_json reads (the sharded
/// adapter's answers are JSON): the acknowledgement counts, once, its argument is counted as not
/// kept, and the entry is not sent again.
#[test]
fn an_acknowledgement_too_deep_to_read_still_counts() {
    let adapter = Adapter::Sharded("dynamic");
    let redis = RedisServer::start();
    let server = SocketIoServer::start_with(&redis.url(), &adapter);
    wait_adapter_servers(&redis, &adapter, 1);
    let clients = Clients::start_specs(vec![json!({
        "name": "deep", "url": server.url("/"), "rooms": ["user:1"], "ack": true, "ackDepth": 300
    })]);
    let mut settings = adapter.settings();
    settings.push(FAST_RETRIES);
    let _relay = Relay::start(&redis, "relay-1", &settings);
    let mut con = redis.connection();
    let id = xadd(
        &mut con,
        &[
            ("event", "paid"),
            ("room", "user:1"),
            ("ack", "5s"),
            ("append_id", "true"),
        ],
    );
    wait_results(&mut con, 1, 20 * SECOND);
    let result = &results(&mut con)[&id];
    assert_eq!(result["acks"], "1", "{result:?}");
    assert_eq!(result["answers_dropped"], "1", "{result:?}");
    wait_until(10 * SECOND, "nothing is pending", || {
        pending(&mut con).is_empty()
    });
    assert_eq!(times_received(&clients, "deep", &id), 1, "not sent again");
}

#[test]
fn an_offline_user_gets_what_was_sent_within_max_age() {
    let redis = RedisServer::start();
    let server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let _relay = Relay::start(&redis, "relay-1", &[FAST_RETRIES, ("ACKS__MAX_AGE", "4s")]);
    let mut con = redis.connection();
    let ask = |con: &mut redis::Connection, n: u32| {
        xadd(
            con,
            &[
                ("event", "inbox"),
                ("room", "user:9"),
                ("data", &json!({ "n": n }).to_string()),
                ("ack", "500ms"),
                ("append_id", "true"),
            ],
        )
    };
    let started = Instant::now();
    let old = [ask(&mut con, 1), ask(&mut con, 2)];
    // The recent entries come once the old ones are past acks.max_age, given up on.
    wait_until(10 * SECOND, "the old entries are dead-lettered", || {
        dead_letters(&mut con).len() == 2
    });
    let recent = [ask(&mut con, 3), ask(&mut con, 4)];
    let clients = Clients::start_specs(vec![
        json!({"name": "user9", "url": server.url("/"), "rooms": ["user:9"], "ack": true}),
    ]);
    wait_results(&mut con, 2, 10 * SECOND);
    assert!(
        started.elapsed() < 9 * SECOND,
        "the recent entries were still within acks.max_age when they were acknowledged"
    );
    wait_until(5 * SECOND, "nothing pending", || {
        pending(&mut con).is_empty()
    });
    let results = results(&mut con);
    assert_eq!(results.keys().cloned().collect::<Vec<_>>(), recent.to_vec());
    for id in &recent {
        assert_eq!(times_received(&clients, "user9", id), 1);
        assert!(results[id]["attempts"].parse::<u32>().unwrap() >= 2);
    }
    for id in &old {
        assert_eq!(times_received(&clients, "user9", id), 0);
    }
    let mut dead: Vec<String> = dead_letters(&mut con)
        .iter()
        .map(|(_, fields)| {
            assert_eq!(field(fields, "x-dead-reason"), Some("unacknowledged"));
            assert!(field(fields, "x-dead-error")
                .unwrap()
                .ends_with("reached 0 clients"));
            field(fields, "x-dead-id").unwrap().to_owned()
        })
        .collect();
    // Attempts rest a jittered time, so entries read apart may give up in either order.
    dead.sort();
    assert_eq!(dead, old.to_vec());
}

/// The relay `kill -9`'d while clients are about to acknowledge: nothing is lost, each entry gets
/// exactly one result, and the only duplicates are the entries that were waiting, sent again by
/// the next relay with the same ID for the client to tell.
#[test]
fn a_relay_killed_while_waiting_for_acks_loses_nothing() {
    const ENTRIES: usize = 30;
    let redis = RedisServer::start();
    let server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let clients = Clients::start_specs(vec![json!({
        "name": "slow", "url": server.url("/"), "rooms": ["user:5"], "ack": true, "ackDelay": 1500
    })]);
    let mut relay = Relay::start(&redis, "relay-1", &[FAST_RETRIES]);
    let mut con = redis.connection();
    let ids: Vec<String> = (0..ENTRIES)
        .map(|n| {
            xadd(
                &mut con,
                &[
                    ("event", "e"),
                    ("room", "user:5"),
                    ("data", &n.to_string()),
                    ("ack", "10s"),
                    ("append_id", "true"),
                ],
            )
        })
        .collect();
    clients.wait_events("slow", ENTRIES, 10 * SECOND);
    // Received, not yet acknowledged: the relay dies with every entry waiting.
    relay.kill();
    assert!(results(&mut con).is_empty());
    relay.restart();
    wait_results(&mut con, ENTRIES, 30 * SECOND);
    wait_until(5 * SECOND, "nothing pending", || {
        pending(&mut con).is_empty()
    });
    // Nothing more comes to the client: a later entry reaches it after anything sent before.
    end_marker(&mut con, STREAM, &[("room", "user:5")], &clients, &["slow"]);

    let results = results(&mut con);
    let (mut delivered, mut duplicated, mut lost) = (0, 0, 0);
    for id in &ids {
        assert!(results.contains_key(id), "no result for {id}");
        match times_received(&clients, "slow", id) {
            0 => lost += 1,
            1 => delivered += 1,
            _ => duplicated += 1,
        }
    }
    assert_eq!(results.len(), ENTRIES, "one result per entry");
    assert!(dead_letters(&mut con).is_empty());
    assert_eq!(lost, 0);
    // Every entry was waiting at the kill: the next relay sent each again.
    assert_eq!((delivered, duplicated), (0, ENTRIES));
    for id in &ids {
        assert_eq!(times_received(&clients, "slow", id), 2, "{id}");
    }
}

/// After an outage of every Socket.IO server, entries with `ack` are not flushed as soon as a
/// server is back, before its clients reconnect: they wait until a client acknowledges them.
#[test]
fn after_an_outage_of_every_server_entries_wait_for_the_clients() {
    const ENTRIES: usize = 5;
    let redis = RedisServer::start();
    let mut server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let clients = Clients::start_specs(vec![
        json!({"name": "u7", "url": server.url("/"), "rooms": ["user:7"], "ack": true}),
    ]);
    let _relay = Relay::start(&redis, "relay-1", &[FAST_RETRIES]);
    server.kill();
    wait_servers(&redis, 0);
    let mut con = redis.connection();
    let ids: Vec<String> = (0..ENTRIES)
        .map(|n| {
            xadd(
                &mut con,
                &[
                    ("event", "e"),
                    ("room", "user:7"),
                    ("data", &n.to_string()),
                    ("ack", "1s"),
                    ("append_id", "true"),
                ],
            )
        })
        .collect();
    // The relay has read them with no server to take them.
    wait_until(10 * SECOND, "the entries are read and pending", || {
        pending(&mut con).len() == ENTRIES
    });
    server.restart();
    wait_results(&mut con, ENTRIES, 30 * SECOND);
    wait_until(5 * SECOND, "nothing pending", || {
        pending(&mut con).is_empty()
    });
    let results = results(&mut con);
    for id in &ids {
        assert!(
            times_received(&clients, "u7", id) >= 1,
            "{id} never reached u7"
        );
        assert_eq!(results[id]["acks"], "1");
        assert!(
            results[id]["attempts"].parse::<u32>().unwrap() >= 2,
            "{:?}",
            results[id]
        );
    }
    assert!(dead_letters(&mut con).is_empty());
    assert!(
        clients.disconnections("u7").len() == 1,
        "u7 lost its server once: {:?}",
        clients.disconnections("u7")
    );
}

/// `acks.default`: every event entry that says nothing waits for a client's acknowledgement, as if
/// it had `ack`; `ack none` and volatile entries do not.
#[test]
fn the_streams_default_makes_every_entry_wait_for_its_clients() {
    let redis = RedisServer::start();
    let server = SocketIoServer::start(&redis);
    wait_adapter_servers(&redis, &Adapter::Classic, 1);
    let clients = Clients::start_specs(vec![
        json!({"name": "u1", "url": server.url("/"), "rooms": ["user:1"], "ack": true}),
    ]);
    let _relay = Relay::start(&redis, "relay-1", &[("ACKS__DEFAULT", "2s")]);
    let mut con = redis.connection();
    let entry = |con: &mut redis::Connection, event: &str, extra: &[(&str, &str)]| {
        let mut fields = vec![("event", event), ("room", "user:1"), ("append_id", "true")];
        fields.extend_from_slice(extra);
        xadd(con, &fields)
    };
    let unsaid = entry(&mut con, "paid", &[]);
    let off = entry(&mut con, "typing", &[("ack", "none")]);
    let volatile = entry(&mut con, "cursor", &[("volatile", "true")]);
    wait_results(&mut con, 1, 20 * SECOND);
    wait_until(10 * SECOND, "nothing pending", || {
        pending(&mut con).is_empty()
    });
    // The volatile entry was delivered and acknowledged without waiting for the client (which,
    // volatile, it may not have received at all); the others are in the client's hands.
    clients.wait_events("u1", 2, 10 * SECOND);
    let results = results(&mut con);
    assert_eq!(results.keys().collect::<Vec<_>>(), [&unsaid]);
    assert_eq!(results[&unsaid]["clients"], "1");
    let ackable: Vec<(String, bool)> = clients
        .events_of("u1")
        .iter()
        .filter(|(event, _)| event != "cursor")
        .map(|(event, _)| (event.clone(), clients.acked_by("u1").contains(event)))
        .collect();
    assert_eq!(
        ackable,
        [("paid".to_owned(), true), ("typing".to_owned(), false)]
    );
    for id in [&unsaid, &off] {
        assert_eq!(times_received(&clients, "u1", id), 1, "{id}");
    }
    assert!(times_received(&clients, "u1", &volatile) <= 1);
}
