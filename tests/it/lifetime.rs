//! Entries with a lifetime (`ttl`), through real Socket.IO servers and socket.io-client sockets:
//! past its `ttl` (or `delivery.max_age`, whichever ends first), measured from the time in its ID
//! on Redis's clock, an entry is dead-lettered as `expired` instead of delivered: when it is read,
//! while it is held for servers (across a relay's restart too), and while it waits for its
//! clients' acknowledgements. Counted per entry: delivered to every client of its room exactly
//! once, or dead-lettered once and received by nobody; nothing lost, nothing pending.

use std::time::Duration;

use serde_json::json;

use crate::client_acks::results;
use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

/// What must become of one numbered entry.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    Delivered,
    /// Dead-lettered as `expired`, its error ending with this lifetime (`its ttl 2s`,
    /// `delivery.max_age = 2m`).
    Expired(&'static str),
}

/// Fields added to a numbered entry.
type Extra = &'static [(&'static str, &'static str)];

/// Redis's clock, in milliseconds: entry IDs are Redis time.
fn redis_now_ms(con: &mut redis::Connection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
    secs * 1000 + micros / 1000
}

/// Numbered entry `n` for `room`, with `extra` fields, under `id` (`*`: Redis's).
fn add(con: &mut redis::Connection, id: &str, n: usize, room: &str, extra: &[(&str, &str)]) {
    let fields = entry(n, room);
    let mut fields: Vec<(&str, &str)> = fields.iter().map(|(f, v)| (*f, v.as_str())).collect();
    fields.extend_from_slice(extra);
    xadd_id(con, id, &fields);
}

/// The dead letter of numbered entry `n`.
fn dead_letter_of(con: &mut redis::Connection, n: usize) -> Vec<(String, String)> {
    let mut found: Vec<Vec<(String, String)>> = dead_letters(con)
        .into_iter()
        .map(|(_, fields)| fields)
        .filter(|fields| field(fields, "x-seq") == Some(n.to_string().as_str()))
        .collect();
    assert_eq!(found.len(), 1, "dead letters of entry {n}");
    found.remove(0)
}

/// How old the dead letter says its entry was: the start of `x-dead-error`, `<age> old, ...`.
fn age_when_expired(fields: &[(String, String)]) -> Duration {
    let error = field(fields, "x-dead-error").unwrap();
    let (age, _) = error.split_once(" old,").expect("an expiry's error");
    humantime::parse_duration(age).unwrap()
}

/// Checks each numbered entry's fate per client and per dead letter, and prints the scenario's
/// line.
fn assert_fates(
    ledger: &ClientLedger,
    fates: &[Fate],
    con: &mut redis::Connection,
    scenario: &str,
) {
    eprintln!("{}", ledger.summary(scenario));
    assert_eq!(ledger.produced, fates.len());
    for (n, fate) in fates.iter().enumerate() {
        let received = &ledger.received[n];
        match fate {
            Fate::Delivered => {
                assert!(
                    received.values().all(|&t| t == 1),
                    "entry {n}: every member once, got {received:?}"
                );
                assert_eq!(ledger.dead[n], 0, "entry {n} dead-lettered");
            }
            Fate::Expired(lifetime) => {
                assert!(
                    received.values().all(|&t| t == 0),
                    "entry {n} expired, yet delivered: {received:?}"
                );
                let dead = dead_letter_of(con, n);
                assert_eq!(field(&dead, "x-dead-reason"), Some("expired"), "entry {n}");
                let error = field(&dead, "x-dead-error").unwrap();
                assert!(
                    error.ends_with(&format!("old, older than {lifetime}")),
                    "entry {n}: {error}"
                );
            }
        }
        assert_eq!(
            ledger.strays[n], 0,
            "entry {n} reached a client outside its room"
        );
    }
    assert!(ledger.lost().is_empty(), "lost {:?}", ledger.lost());
    assert!(
        ledger.duplicated().is_empty(),
        "duplicated {:?}",
        ledger.duplicated()
    );
}

/// One server and one client in each of `rooms`.
fn server_and_clients(redis: &RedisServer, rooms: &[&str]) -> (SocketIoServer, Clients, Fanout) {
    let server = SocketIoServer::start(redis);
    wait_servers(redis, 1);
    let specs = rooms
        .iter()
        .map(|room| json!({"name": room, "url": server.url("/"), "rooms": [room]}))
        .collect();
    let clients = Clients::start_specs(specs);
    for room in rooms {
        wait_until(10 * SECOND, &format!("{room} joined"), || {
            clients.joins(room) >= 1
        });
    }
    let members = rooms
        .iter()
        .map(|room| (room.to_string(), vec![room.to_string()]))
        .collect();
    (
        server,
        clients,
        Fanout {
            rooms: Vec::new(),
            members,
        },
    )
}

/// Entries produced long ago (IDs on Redis's clock, XADDed with them) are read: each expires by
/// the earlier of its `ttl` and `delivery.max_age`, the dead letter naming which; the others are
/// delivered.
#[test]
fn an_entry_read_after_its_ttl_is_dead_lettered_as_expired() {
    let redis = RedisServer::start();
    let (_server, clients, mut fanout) = server_and_clients(&redis, &["user:1"]);
    let mut con = redis.connection();
    let now = redis_now_ms(&mut con);
    let ago = |secs: u64, n: u64| format!("{}-{n}", now - secs * 1000);
    let room = "user:1";
    let produced: [(String, Extra, Fate); 6] = [
        (
            ago(150, 0),
            &[("ttl", "1h")],
            Fate::Expired("delivery.max_age = 2m"),
        ),
        (
            ago(100, 0),
            &[("ttl", "90s")],
            Fate::Expired("its ttl 1m 30s"),
        ),
        (ago(100, 1), &[("ttl", "5m")], Fate::Delivered),
        (ago(60, 0), &[], Fate::Delivered),
        (ago(60, 1), &[("ttl", "59s")], Fate::Expired("its ttl 59s")),
        ("*".to_owned(), &[("ttl", "30s")], Fate::Delivered),
    ];
    for (n, (id, extra, _)) in produced.iter().enumerate() {
        add(&mut con, id, n, room, extra);
        fanout.rooms.push(room.to_owned());
    }
    let _relay = Relay::start(&redis, "relay-1", &[("DELIVERY__MAX_AGE", "2m")]);
    let ledger = settle(&redis, &clients, &fanout, 1, &|_| room.to_owned());
    let fates: Vec<Fate> = produced.iter().map(|(_, _, fate)| *fate).collect();
    assert_fates(&ledger, &fates, &mut con, "ttl, entries read late");
}

/// With every server down, entries are held; the one with a short `ttl` is dead-lettered while
/// held (no server came back: nothing else could have moved it), close to when its lifetime
/// ended, not at a retry; the others are delivered once the server is back.
#[test]
fn an_entry_held_while_no_server_listens_expires_while_held() {
    let redis = RedisServer::start();
    let (mut server, clients, mut fanout) = server_and_clients(&redis, &["user:1", "user:2"]);
    // Retries 5 s apart: an expiry found by a retry would come seconds late.
    let _relay = Relay::start(&redis, "relay-1", &[("DELIVERY__RETRY_INTERVAL", "5s")]);
    server.kill();
    wait_servers(&redis, 0);
    let mut con = redis.connection();
    let produced: [(&str, Extra, Fate); 4] = [
        ("user:1", &[("ttl", "1h")], Fate::Delivered),
        ("user:1", &[("ttl", "1s")], Fate::Expired("its ttl 1s")),
        ("user:2", &[], Fate::Delivered),
        ("user:1", &[], Fate::Delivered),
    ];
    for (n, (room, extra, _)) in produced.iter().enumerate() {
        add(&mut con, "*", n, room, extra);
        fanout.rooms.push(room.to_string());
    }
    wait_until(
        10 * SECOND,
        "the short-lived entry is dead-lettered",
        || !dead_letters(&mut con).is_empty(),
    );
    assert_eq!(held_record(&mut con), 3, "the others are still held");
    let dead = dead_letter_of(&mut con, 1);
    assert_eq!(
        field(&dead, "x-dead-deliveries"),
        Some("1"),
        "waiting spends no attempt"
    );
    let age = age_when_expired(&dead);
    assert!(age < 3 * SECOND, "expired {age:?} after it was produced");

    server.restart();
    let ledger = settle(&redis, &clients, &fanout, 2, &|n| produced[n].0.to_owned());
    let fates: Vec<Fate> = produced.iter().map(|(_, _, fate)| *fate).collect();
    assert_fates(
        &ledger,
        &fates,
        &mut con,
        "ttl, entries held while no server listens",
    );
}

/// A relay killed (`kill -9`) while it holds an entry with a `ttl`, and started again: the new
/// one reads the held entry's fields back, so it still expires it when its lifetime ends, not
/// later; the entry without one is delivered once a server is back.
#[test]
fn a_relay_restarted_while_an_entry_with_ttl_is_held_still_expires_it_on_time() {
    let redis = RedisServer::start();
    let (mut server, clients, mut fanout) = server_and_clients(&redis, &["user:1"]);
    let mut relay = Relay::start(&redis, "relay-1", &[("DELIVERY__RETRY_INTERVAL", "5s")]);
    server.kill();
    wait_servers(&redis, 0);
    let mut con = redis.connection();
    let room = "user:1";
    add(&mut con, "*", 0, room, &[("ttl", "3s")]);
    add(&mut con, "*", 1, room, &[]);
    fanout.rooms = vec![room.to_owned(); 2];
    wait_held(&mut con, 2);
    relay.restart();
    relay.wait_ready(10 * SECOND);
    wait_until(10 * SECOND, "the held entry is dead-lettered", || {
        !dead_letters(&mut con).is_empty()
    });
    let dead = dead_letter_of(&mut con, 0);
    let age = age_when_expired(&dead);
    assert!(
        age > 3 * SECOND && age < 5 * SECOND,
        "expired {age:?} after it was produced"
    );
    assert_eq!(field(&dead, "x-dead-deliveries"), Some("1"));
    assert_eq!(held_record(&mut con), 1);

    server.restart();
    let ledger = settle(&redis, &clients, &fanout, 2, &|_| room.to_owned());
    assert_fates(
        &ledger,
        &[Fate::Expired("its ttl 3s"), Fate::Delivered],
        &mut con,
        "ttl, a relay killed and restarted while it holds the entry",
    );
}

/// Entries with `ack` that no client acknowledges are sent again until their `ttl` ends, then
/// dead-lettered as `expired` (not `unacknowledged`, at `acks.max_age`), also in the middle of an
/// attempt's wait; an entry a client acknowledges gets its result. Per entry: one result or one
/// dead letter, nothing pending.
#[test]
fn an_entry_waiting_for_acknowledgements_expires_while_waiting() {
    let redis = RedisServer::start();
    let server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let clients = Clients::start_specs(vec![
        json!({"name": "silent", "url": server.url("/"), "rooms": ["user:1"]}),
        json!({"name": "acks", "url": server.url("/"), "rooms": ["user:2"], "ack": true}),
    ]);
    for client in ["silent", "acks"] {
        wait_until(10 * SECOND, &format!("{client} joined"), || {
            clients.joins(client) >= 1
        });
    }
    let _relay = Relay::start(&redis, "relay-1", &[("ACKS__RETRY_INTERVAL", "300ms")]);
    let mut con = redis.connection();
    let entry = |con: &mut redis::Connection, room: &str, ack: &str, ttl: Option<&str>| {
        let mut fields = vec![
            ("event", "e"),
            ("room", room),
            ("ack", ack),
            ("append_id", "true"),
        ];
        fields.extend(ttl.map(|ttl| ("ttl", ttl)));
        xadd(con, &fields)
    };
    // Sent again every 300 ms or so until its ttl ends.
    let retried = entry(&mut con, "user:1", "500ms", Some("3s"));
    // Its one attempt waits a minute, its ttl 2 s.
    let cut_short = entry(&mut con, "user:1", "1m", Some("2s"));
    let acknowledged = entry(&mut con, "user:2", "5s", Some("1h"));
    wait_until(20 * SECOND, "both silent entries are dead-lettered", || {
        dead_letters(&mut con).len() == 2
    });
    wait_until(10 * SECOND, "the acknowledged entry has its result", || {
        results(&mut con).len() == 1
    });
    wait_until(10 * SECOND, "nothing pending", || {
        pending(&mut con).is_empty()
    });

    let dead: Vec<(String, Vec<(String, String)>)> = dead_letters(&mut con)
        .into_iter()
        .map(|(_, fields)| (field(&fields, "x-dead-id").unwrap().to_owned(), fields))
        .collect();
    for (id, ttl, most) in [(&retried, "3s", 5 * SECOND), (&cut_short, "2s", 4 * SECOND)] {
        let (_, fields) = dead
            .iter()
            .find(|(dead_id, _)| dead_id == id)
            .unwrap_or_else(|| panic!("no dead letter for {id}"));
        assert_eq!(field(fields, "x-dead-reason"), Some("expired"), "{id}");
        let error = field(fields, "x-dead-error").unwrap();
        assert!(
            error.ends_with(&format!("older than its ttl {ttl}")),
            "{error}"
        );
        let age = age_when_expired(fields);
        assert!(age < most, "{id} expired {age:?} after it was produced");
    }
    let results = results(&mut con);
    assert_eq!(results.keys().collect::<Vec<_>>(), [&acknowledged]);
    assert_eq!(results[&acknowledged]["acks"], "1");

    // Per entry, what the clients got: the silent client got its entries (and the retried one
    // several times: each attempt is the same entry, told apart by its ID), the other nothing of
    // them; the acknowledged entry reached its client once.
    let times = |client: &str, id: &str| {
        clients
            .events_of(client)
            .iter()
            .filter(|(_, args)| args.as_array().and_then(|a| a.last()) == Some(&json!(id)))
            .count()
    };
    assert!(
        times("silent", &retried) >= 2,
        "{:?}",
        clients.events_of("silent")
    );
    assert_eq!(times("silent", &cut_short), 1, "one attempt, cut short");
    assert_eq!(times("acks", &acknowledged), 1);
    assert_eq!(times("acks", &retried) + times("acks", &cut_short), 0);
    assert_eq!(times("silent", &acknowledged), 0);
    eprintln!(
        "ttl, entries waiting for acknowledgements: produced 3, acknowledged 1, dead-lettered 2 (expired), lost 0, pending 0"
    );
}
