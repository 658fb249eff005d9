//! Issue 21, "delivered" means a user got it: black-box tests, with real parts only (a
//! `redis-server` of the test's own, Node Socket.IO servers with `@socket.io/redis-adapter`,
//! `socket.io-client` sockets), of what the relay must do so that an entry it acknowledges has
//! reached the clients of its room, not only Redis or a server:
//!
//! - after an outage of every Socket.IO server, held entries wait for the clients of their rooms to
//!   reconnect (up to `delivery.release_wait`, default 10 s, left at its default here) instead of
//!   going out the moment the first server's adapter subscribes, to no client at all;
//! - a server that dies with packets unread in its socket gets them again once it is back;
//! - a relay frozen while another one completed its `ack` entries does not send them again;
//! - answers forged on the response channel with absurd client counts neither crash the relay nor
//!   end up in the results.
//!
//! Each test counts, per entry, which client got it how many times (or that it was dead-lettered),
//! and prints one `chaos ...` line as the chaos suite does. Each fails against the relay as it was
//! when it was written (f3ebcf3); its comment says how.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::{json, Value};

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

/// Produces entry `n` to `fanout.rooms[n]` for every `n`, one at a time, each read by a relay
/// before the next is added (so that several relays each read their share); returns their IDs.
fn produce_one_by_one(con: &mut redis::Connection, fanout: &Fanout) -> Vec<String> {
    let mut ids = Vec::new();
    for (n, room) in fanout.rooms.iter().enumerate() {
        let fields = entry(n, room);
        let id: String = con.xadd(STREAM, "*", &fields).unwrap();
        ids.push(id);
        wait_until(10 * SECOND, &format!("a relay reads entry {n}"), || {
            pending(con).len() > n
        });
    }
    ids
}

// ---------------------------------------------------------------------------------------------
// 1. Every server down, then back: held entries wait for the clients of their rooms.
// ---------------------------------------------------------------------------------------------

const OUTAGE_SERVERS: usize = 3;
const OUTAGE_USERS: usize = 12;
const OUTAGE_PER_ROOM: usize = 4;

/// Every Socket.IO server is killed; entries for every room are produced while none runs and the
/// relay holds them; every server is restarted on its port, and the clients reconnect by
/// themselves, with socket.io-client's default delays (1 s doubling to 5 s, ±50 %). Each member
/// of each room must get each of its room's entries exactly once, in order.
///
/// Fails on f3ebcf3: the relay publishes its held backlog as soon as the first restarted server's
/// adapter subscribes, before any client is back, and acknowledges it; the clients get nothing of
/// it (lost: every entry).
#[test]
fn every_server_down_then_back_reaches_clients() {
    every_server_down_then_back(Adapter::Classic, 1);
}

/// As [`every_server_down_then_back_reaches_clients`], with the sharded adapter.
#[test]
fn every_server_down_then_back_reaches_clients_sharded() {
    every_server_down_then_back(Adapter::Sharded("dynamic"), 1);
}

/// As [`every_server_down_then_back_reaches_clients`], with two relays in the group, each holding
/// the share of the entries it read while the servers were down.
#[test]
fn every_server_down_then_back_reaches_clients_with_two_relays() {
    every_server_down_then_back(Adapter::Classic, 2);
}

/// Three servers with `adapter`; the client of room `user:<i>` (named `u<i>`) on server `i % 3`,
/// and room `pair` with one client on server 0 (`pair-0`) and one on server 1 (`pair-1`); `relays`
/// relays with default settings.
fn every_server_down_then_back(adapter: Adapter, relays: usize) {
    let redis = RedisServer::start();
    let mut servers: Vec<SocketIoServer> = (0..OUTAGE_SERVERS)
        .map(|_| SocketIoServer::start_with(&redis.url(), &adapter))
        .collect();
    wait_adapter_servers(&redis, &adapter, OUTAGE_SERVERS as i64);
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut specs = Vec::new();
    for u in 0..OUTAGE_USERS {
        let (name, room) = (format!("u{u}"), format!("user:{u}"));
        let url = servers[u % OUTAGE_SERVERS].url("/");
        specs.push(json!({"name": name, "url": url, "rooms": [room]}));
        members.insert(room, vec![name]);
    }
    for (s, server) in servers.iter().take(2).enumerate() {
        let name = format!("pair-{s}");
        specs.push(json!({"name": name, "url": server.url("/"), "rooms": ["pair"]}));
        members.entry("pair".into()).or_default().push(name);
    }
    let clients = Clients::start_specs(specs);
    let relays: Vec<Relay> = (1..=relays)
        .map(|r| Relay::start(&redis, &format!("relay-{r}"), &adapter.settings()))
        .collect();
    for relay in &relays {
        relay.wait_ready(10 * SECOND);
    }
    let room_names: Vec<String> = members.keys().cloned().collect();
    let fanout = Fanout {
        rooms: (0..room_names.len() * OUTAGE_PER_ROOM)
            .map(|n| room_names[n % room_names.len()].clone())
            .collect(),
        members,
    };

    for server in &mut servers {
        server.kill();
    }
    wait_adapter_servers(&redis, &adapter, 0);
    let mut con = redis.connection();
    let ids = produce_one_by_one(&mut con, &fanout);
    let total = ids.len();
    wait_held(&mut con, total);
    // Which relay holds which entry: each relay's share must arrive in order.
    let holder: BTreeMap<String, String> = pending(&mut con)
        .into_iter()
        .map(|(id, consumer, _)| (id, consumer))
        .collect();
    let relay_of: Vec<String> = ids.iter().map(|id| holder[id].clone()).collect();
    let mut shares: BTreeMap<&str, usize> = BTreeMap::new();
    for consumer in &relay_of {
        *shares.entry(consumer).or_default() += 1;
    }
    assert_eq!(
        shares.len(),
        relays.len(),
        "every relay holds a share: {shares:?}"
    );

    for server in &mut servers {
        server.restart();
    }
    let lane = |n: usize| format!("{} {}", fanout.rooms[n], relay_of[n]);
    let ledger = settle(&redis, &clients, &fanout, 2, &lane);
    eprintln!(
        "{}",
        ledger.summary(&format!(
            "every Socket.IO server down then back, clients reconnecting ({adapter:?}, {} relay(s), shares {shares:?})",
            relays.len()
        ))
    );
    ledger.assert_each_member_once_in_order();
}

// ---------------------------------------------------------------------------------------------
// 2. A server that dies with packets unread gets them again.
// ---------------------------------------------------------------------------------------------

const UNREAD_ENTRIES: usize = 20;

/// Server S1 is frozen (SIGSTOP: still subscribed, reading nothing) while entries for room `r`,
/// whose only client `c1` is on S1, are produced; the relay publishes them (S2 reads and drops
/// them, S1's socket holds them), then S1 is SIGKILLed and a server restarted on its port, where
/// `c1` reconnects by itself. `c1` must get every entry, once, in order.
///
/// Fails on f3ebcf3: the relay acknowledges once Redis wrote the packets to S1's socket, S1 still
/// being subscribed; they die with S1 and `c1` never gets them (lost: every entry).
#[test]
fn a_server_that_dies_with_packets_unread_gets_them_again() {
    a_server_dies_with_packets_unread(2);
}

/// As [`a_server_that_dies_with_packets_unread_gets_them_again`], with S1 the only server.
#[test]
fn the_only_server_dies_with_packets_unread_and_gets_them_again() {
    a_server_dies_with_packets_unread(1);
}

fn a_server_dies_with_packets_unread(servers: usize) {
    let redis = RedisServer::start();
    let mut s1 = SocketIoServer::start(&redis);
    let _s2 = (servers == 2).then(|| SocketIoServer::start(&redis));
    wait_servers(&redis, servers as i64);
    let clients = Clients::start_specs(vec![
        json!({"name": "c1", "url": s1.url("/"), "rooms": ["r"]}),
    ]);
    let relay = Relay::start(&redis, "relay-1", &[]);
    relay.wait_ready(10 * SECOND);
    // What the relay publishes, broadcast or request, seen by pattern subscribers (which no relay
    // counts as servers).
    let watchers = [
        Subscriber::pattern_only(&redis, "socket.io#*"),
        Subscriber::pattern_only(&redis, "socket.io-request#*"),
    ];
    let fanout = Fanout {
        rooms: vec!["r".into(); UNREAD_ENTRIES],
        members: BTreeMap::from([("r".into(), vec!["c1".into()])]),
    };

    s1.signal("STOP");
    let mut con = redis.connection();
    let mut pipe = redis::pipe();
    for n in 0..UNREAD_ENTRIES {
        pipe.xadd(STREAM, "*", &entry(n, "r")).ignore();
    }
    pipe.exec(&mut con).unwrap();
    // The relay publishes them while S1 is frozen. A relay that publishes nothing while a server
    // does not read is allowed to: then, after 10 s, the test goes on.
    let published = |n: usize| {
        let tag = tag(n).into_bytes();
        watchers.iter().flat_map(Subscriber::messages).any(|m| {
            m.payload
                .windows(tag.len())
                .any(|window| window == tag.as_slice())
        })
    };
    let deadline = Instant::now() + 10 * SECOND;
    while !(0..UNREAD_ENTRIES).all(published) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = (0..UNREAD_ENTRIES).filter(|&n| published(n)).count();
    // SIGKILL of the frozen process (reaped), and a new server on its port.
    s1.restart();
    let lane = |_: usize| "r".to_owned();
    let ledger = settle(&redis, &clients, &fanout, 2, &lane);
    eprintln!(
        "{} (published while S1 was frozen: {seen})",
        ledger.summary(&format!(
            "the server of the room's client ({servers} server(s)) frozen, then killed with packets unread"
        ))
    );
    ledger.assert_each_member_once_in_order();
}

// ---------------------------------------------------------------------------------------------
// 3. A frozen relay never sends again an `ack` entry another relay completed.
// ---------------------------------------------------------------------------------------------

/// The results stream's entries, in order: (source entry ID, fields).
fn results(con: &mut redis::Connection) -> Vec<(String, BTreeMap<String, String>)> {
    let reply: redis::streams::StreamRangeReply = con.xrange_all("sio-relay:acks").unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let fields: BTreeMap<String, String> = entry
                .map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap()))
                .collect();
            (fields["id"].clone(), fields)
        })
        .collect()
}

/// How many results there are for `id`.
fn results_for(results: &[(String, BTreeMap<String, String>)], id: &str) -> usize {
    results.iter().filter(|(of, _)| of == id).count()
}

/// How many times `client` received an event whose last argument is the entry ID `id`.
fn times_received(clients: &Clients, client: &str, id: &str) -> usize {
    clients
        .events_of(client)
        .iter()
        .filter(|(_, args)| args.as_array().and_then(|a| a.last()) == Some(&json!(id)))
        .count()
}

const FROZEN_ENTRIES: usize = 10;

/// How long relay B rests an entry between two attempts no client acknowledged.
const FROZEN_REST: Duration = Duration::from_secs(1);

/// Relay B sends 10 entries with `ack` to room `r`, where no client is yet: each attempt reaches
/// nobody (the server answers 0 clients at once), and the entries rest `acks.retry_interval`
/// (1 s) between attempts. B is frozen (SIGSTOP) while they rest; a client that acknowledges joins
/// `r` and relay A starts: A reclaims B's entries after `claim_idle` (1 s, which B could not keep
/// from passing), the client acknowledges, and each entry gets its result. A is stopped, B thawed
/// (SIGCONT), its rest over. B must not send any of them again: the client gets each entry as many
/// times as before the thaw.
///
/// Frozen while they rest: B's attempts end within a step of their count replies (50 ms polls)
/// and the next comes a second later, so B is frozen 300 ms after it sent them. That pause only
/// matters on a relay that sends again what it no longer owns (frozen while an attempt is still
/// open, B would end it and rest first, and find out it lost the entries before the rest is over):
/// on a correct relay the test passes wherever the freeze lands.
///
/// "B has done what it does after the thaw" is observed as: B read a new `ack` entry (a fence,
/// which only B can read with A gone), the client acknowledged it and its result was written, and
/// B's `acks_waiting` gauge is 0. B looks at the entries that rest before it reads new ones, and
/// what it sends goes through the one server in order, so whatever B sent again before the fence
/// has reached the client once the fence has.
///
/// Fails on f3ebcf3: B sends its due attempts again without checking that it still owns them, so
/// the client gets each of the 10 entries once more (re-sent after their result: 10).
#[test]
fn a_frozen_relay_never_resends_a_completed_ack_entry() {
    let rest = format!("{}ms", FROZEN_REST.as_millis());
    let settings = [
        ("DELIVERY__CLAIM_IDLE", "1s"),
        ("DELIVERY__CLAIM_INTERVAL", "200ms"),
        ("ACKS__RETRY_INTERVAL", rest.as_str()),
    ];
    let redis = RedisServer::start();
    let server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let b = Relay::start(&redis, "relay-b", &settings);
    b.wait_ready(10 * SECOND);
    let mut con = redis.connection();
    let ask = |con: &mut redis::Connection, event: &str, n: usize, wait: &str| {
        xadd(
            con,
            &[
                ("event", event),
                ("room", "r"),
                ("data", &n.to_string()),
                ("ack", wait),
                ("append_id", "true"),
            ],
        )
    };
    let ids: Vec<String> = (0..FROZEN_ENTRIES)
        .map(|n| ask(&mut con, "e", n, "500ms"))
        .collect();
    wait_until(10 * SECOND, "B sent every entry and they wait", || {
        b.metric("ack_requests_total")
            .is_some_and(|n| n >= FROZEN_ENTRIES as f64)
            && b.metric("acks_waiting") == Some(FROZEN_ENTRIES as f64)
    });
    // Into the rest (see above): places the freeze, nothing is waited for; no metric tells when
    // an attempt has ended.
    std::thread::sleep(Duration::from_millis(300));
    b.signal("STOP");
    let frozen = Instant::now();

    let clients = Clients::start_specs(vec![
        json!({"name": "c", "url": server.url("/"), "rooms": ["r"], "ack": true}),
    ]);
    let mut a = Relay::start(&redis, "relay-a", &settings);
    wait_until(
        30 * SECOND,
        "A reclaimed B's entries and the client acknowledged each",
        || {
            let results = results(&mut con);
            ids.iter().all(|id| results_for(&results, id) > 0)
        },
    );
    let before: Vec<usize> = ids
        .iter()
        .map(|id| times_received(&clients, "c", id))
        .collect();
    a.kill();

    // Thawed once the rest is over, as it would be after any freeze long enough for a reclaim.
    while frozen.elapsed() < FROZEN_REST {
        std::thread::sleep(Duration::from_millis(20));
    }
    b.signal("CONT");
    let fence = ask(&mut con, "fence", FROZEN_ENTRIES, "5s");
    wait_until(
        30 * SECOND,
        "B has completed a new entry after the thaw",
        || {
            results_for(&results(&mut con), &fence) == 1
                && times_received(&clients, "c", &fence) >= 1
                && b.metric("acks_waiting") == Some(0.0)
        },
    );

    let results = results(&mut con);
    let after: Vec<usize> = ids
        .iter()
        .map(|id| times_received(&clients, "c", id))
        .collect();
    let resent: usize = after
        .iter()
        .zip(&before)
        .map(|(now, then)| now.saturating_sub(*then))
        .sum();
    let with_one_result = ids
        .iter()
        .filter(|id| results_for(&results, id) == 1)
        .count();
    eprintln!(
        "chaos a relay frozen while another completed its ack entries, then thawed: produced {FROZEN_ENTRIES}, with one result {with_one_result}, received before the thaw {before:?}, re-sent after their result {resent}"
    );
    assert!(
        before.iter().all(|&n| n >= 1),
        "the client got each entry before the thaw: {before:?}"
    );
    assert_eq!(with_one_result, FROZEN_ENTRIES, "one result per entry");
    assert_eq!(
        after, before,
        "no entry reached the client again after its result was written"
    );
    assert!(pending(&mut con).is_empty());
    assert!(dead_letters(&mut con).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 4. Forged answers with absurd client counts.
// ---------------------------------------------------------------------------------------------

/// A connection that sees the relay's broadcasts with acknowledgements (PSUBSCRIBE
/// `socket.io-request#*`, which servers are not counted by) and answers each at once, on the
/// response channel every server also answers on, with client counts no server can send.
struct Forger {
    /// The request IDs answered.
    forged: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The forged counts: 2^64 - 1 (what a u64 holds at most), and 2^53 + 1 (no JavaScript number).
const FORGED_COUNTS: [&str; 2] = ["18446744073709551615", "9007199254740993"];

impl Forger {
    fn start(redis: &RedisServer) -> Forger {
        let (forged, subscribed, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let url = redis.url();
        let thread = {
            let (forged, subscribed, stop) = (forged.clone(), subscribed.clone(), stop.clone());
            std::thread::spawn(move || {
                let client = redis::Client::open(url).unwrap();
                let mut publisher = client.get_connection().unwrap();
                let mut con = client.get_connection().unwrap();
                con.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let mut pubsub = con.as_pubsub();
                pubsub.psubscribe("socket.io-request#*").unwrap();
                subscribed.store(true, Ordering::SeqCst);
                while !stop.load(Ordering::SeqCst) {
                    let message = match pubsub.get_message() {
                        Ok(message) => message,
                        Err(e) if e.is_timeout() => continue,
                        Err(e) => panic!("the forger's subscription failed: {e}"),
                    };
                    let Some(id) = request_id(message.get_payload_bytes()) else {
                        continue;
                    };
                    if !id.starts_with("sio-relay:") {
                        continue;
                    }
                    for count in FORGED_COUNTS {
                        let answer =
                            format!(r#"{{"type":8,"requestId":"{id}","clientCount":{count}}}"#);
                        let _: i64 = publisher.publish("socket.io-response#/#", answer).unwrap();
                    }
                    forged.lock().unwrap().push(id);
                }
            })
        };
        wait_until(10 * SECOND, "the forger is subscribed", || {
            subscribed.load(Ordering::SeqCst)
        });
        Forger {
            forged,
            stop,
            thread: Some(thread),
        }
    }

    fn forged(&self) -> Vec<String> {
        self.forged.lock().unwrap().clone()
    }
}

impl Drop for Forger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `requestId` of a classic adapter request, JSON or MessagePack.
fn request_id(payload: &[u8]) -> Option<String> {
    if payload.first() == Some(&b'{') {
        let value: Value = serde_json::from_slice(payload).ok()?;
        return value["requestId"].as_str().map(str::to_owned);
    }
    let value = rmpv::decode::read_value(&mut &payload[..]).ok()?;
    value
        .as_map()?
        .iter()
        .find(|(key, _)| key.as_str() == Some("requestId"))
        .and_then(|(_, id)| id.as_str().map(str::to_owned))
}

const FORGED_ENTRIES: usize = 5;

/// One server, one client in room `r` that acknowledges after 300 ms; a forger answers each of
/// the relay's broadcasts with acknowledgements with the client counts 2^64 - 1 and 2^53 + 1 before
/// the client does. The relay must keep running, and each entry must get one result with the true
/// counts: 1 server, 1 client.
///
/// Fails on f3ebcf3: the relay adds the counts up unchecked; the debug build panics ("attempt to
/// add with overflow") and exits, a release build would write a wrapped number of clients.
#[test]
fn forged_answers_with_absurd_counts_keep_results_true() {
    let redis = RedisServer::start();
    let server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let clients = Clients::start_specs(vec![json!({
        "name": "c", "url": server.url("/"), "rooms": ["r"], "ack": true, "ackDelay": 300
    })]);
    let forger = Forger::start(&redis);
    let mut relay = Relay::start(&redis, "relay-1", &[]);
    relay.wait_ready(10 * SECOND);
    let mut con = redis.connection();
    let ids: Vec<String> = (0..FORGED_ENTRIES)
        .map(|n| {
            xadd(
                &mut con,
                &[
                    ("event", "e"),
                    ("room", "r"),
                    ("data", &n.to_string()),
                    ("ack", "2s"),
                    ("append_id", "true"),
                ],
            )
        })
        .collect();
    wait_until(
        30 * SECOND,
        "every entry has a result, or the relay exited",
        || {
            let results = results(&mut con);
            ids.iter().all(|id| results_for(&results, id) > 0) || !relay.is_running()
        },
    );
    let running = relay.is_running();
    let results = results(&mut con);
    let forged = forger.forged();
    let true_counts = ids
        .iter()
        .filter(|id| {
            let of: Vec<_> = results.iter().filter(|(of, _)| of == *id).collect();
            of.len() == 1 && of[0].1["clients"] == "1" && of[0].1["servers"] == "1"
        })
        .count();
    eprintln!(
        "chaos answers forged with client counts {FORGED_COUNTS:?}: produced {FORGED_ENTRIES}, results {}, with the true counts {true_counts}, requests answered by the forger {}, relay running {running}",
        results.len(),
        forged.len()
    );
    assert!(running, "the relay exited (its log follows)");
    for id in &ids {
        assert!(
            forged.iter().any(|f| f.contains(&format!(":{id}:"))),
            "the forger answered {id}'s request: {forged:?}"
        );
        assert!(
            times_received(&clients, "c", id) >= 1,
            "the client got {id}"
        );
        let of: Vec<_> = results.iter().filter(|(of, _)| of == id).collect();
        assert_eq!(of.len(), 1, "one result for {id}: {results:?}");
        let fields = &of[0].1;
        assert_eq!(
            (fields["servers"].as_str(), fields["clients"].as_str()),
            ("1", "1"),
            "the true counts for {id}: {fields:?}"
        );
    }
    assert_eq!(true_counts, FORGED_ENTRIES);
}

/// `delivery.confirm = "clients"`: how many clients an entry reached is known. An entry for a room
/// with a client is received by it (with the acknowledgement callback that comes with the
/// mechanism), one for a room nobody is in is counted as having reached no client, in the metric,
/// the group's statistics and `status`; a volatile entry keeps the emitter's bytes and is not
/// counted; everything is acknowledged. On both adapters.
#[test]
fn entries_that_reached_no_client_are_counted() {
    for adapter in [Adapter::Classic, Adapter::Sharded("dynamic")] {
        entries_that_reached_no_client_are_counted_on(adapter);
    }
}

fn entries_that_reached_no_client_are_counted_on(adapter: Adapter) {
    let redis = RedisServer::start();
    let server = SocketIoServer::start_with(&redis.url(), &adapter);
    let other = SocketIoServer::start_with(&redis.url(), &adapter);
    wait_adapter_servers(&redis, &adapter, 2);
    let clients = Clients::connect(&[("u1", server.url("/"), &["user:1"])]);
    let mut settings = adapter.settings();
    settings.push(("DELIVERY__CONFIRM", "clients"));
    let relay = Relay::start(&redis, "relay-1", &settings);
    let mut con = redis.connection();
    xadd(&mut con, &[("event", "paid"), ("room", "user:1")]);
    xadd(&mut con, &[("event", "paid"), ("room", "user:2")]);
    xadd(
        &mut con,
        &[
            ("event", "cursor"),
            ("room", "user:2"),
            ("volatile", "true"),
        ],
    );
    wait_until(10 * SECOND, "every entry acknowledged", || {
        pending(&mut con).is_empty() && xlen(&mut con) == 3
    });
    wait_until(10 * SECOND, "the count is recorded", || {
        relay.metric("reached_no_client_total") == Some(1.0)
    });
    clients.wait_events("u1", 1, 10 * SECOND);
    assert_eq!(
        clients.ackable_of("u1"),
        ["paid"],
        "the listener gets the callback that comes with counting"
    );
    let stats: Option<u64> = con
        .hget("sio-relay:stats:sio-relay", "reached_no_client")
        .unwrap();
    assert_eq!(stats, Some(1));
    let status = sio_relay()
        .args(["status", "--json"])
        .env("SIO_RELAY_REDIS__URL", redis.url())
        .envs(
            adapter
                .settings()
                .iter()
                .map(|(k, v)| (format!("SIO_RELAY_{k}"), *v)),
        )
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["streams"][0]["group"]["reached_no_client"], 1,
        "{status}"
    );
    println!(
        "chaos delivery.confirm = clients ({adapter:?}): produced 3, acknowledged 3, reached no client 1 (user:2), received by u1 {:?}",
        clients.events_of("u1").len()
    );
    drop(other);
}

fn xlen(con: &mut redis::Connection) -> usize {
    con.xlen(STREAM).unwrap()
}
