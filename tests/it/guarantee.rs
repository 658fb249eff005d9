//! The delivery guarantee under the faults that broke it (issue "The delivery guarantee without
//! holes"): each test reproduces one way an entry was acknowledged while nobody received it, was
//! published again and again, or stopped everything behind it, and counts per entry what happened.
//! Every one of them fails against the relay as it was before the fix (`RELAY_TEST_BINARY`).

use std::time::{Duration, Instant};

use redis::Commands;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

/// Item 1: `sio-relay monitor` (or any pattern subscriber) is not a Socket.IO server. With every
/// server down and a monitor running, entries are held, not acknowledged.
#[test]
fn a_monitor_is_not_counted_as_a_server() {
    let redis = RedisServer::start();
    let monitor = Subscriber::pattern_only(&redis, "socket.io#*");
    let _relay = Relay::start(&redis, "relay-1", &[]);
    let mut con = redis.connection();
    add_numbered(&mut con, 0..100);
    wait_held(&mut con, 100);
    assert_eq!(monitor.flush(&redis), 0, "nothing was published");
    assert_eq!(held_record(&mut con), 100, "recorded as held");
    let server = Subscriber::start(&redis, "/");
    let ledger = Ledger::settle(&server, &redis, 100);
    eprintln!(
        "{}",
        ledger.summary("monitor running, servers down, then back")
    );
    ledger.assert_exactly_once();
}

/// Item 2: a backlog far bigger than Redis's Pub/Sub output buffer limit (300 entries of 200 KB,
/// 60 MB) reaches a real Socket.IO server's client whole: batches are bounded in bytes and the relay
/// waits for the server to read before it publishes more.
#[test]
fn a_backlog_bigger_than_the_pubsub_buffer_reaches_a_real_client() {
    let redis = RedisServer::start();
    let server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let client = Clients::connect_brief(&[("c", server.url("/"), &[])]);
    let mut con = redis.connection();
    let pad = "x".repeat(200_000);
    let total = 300;
    for i in 0..total {
        let data = format!(r#"{{"n":{i},"pad":"{pad}"}}"#);
        xadd(&mut con, &[("event", "big"), ("data", &data)]);
    }
    let _relay = Relay::start(&redis, "relay-1", &[]);
    wait_until(60 * SECOND, "everything is acknowledged", || {
        pending(&mut con).is_empty() && con.xlen::<_, usize>(STREAM).unwrap() == total
    });
    client.wait_events("c", total, 30 * SECOND);
    let mut seen: Vec<u64> = client
        .events_of("c")
        .iter()
        .map(|(_, args)| args[0].as_u64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..total as u64).collect::<Vec<_>>(), "each once");
}

/// Item 2, the moment it bites: Redis drops a server whose Pub/Sub output buffer passes its limit,
/// with the packets still queued in it. Here the limit is smaller than one entry, so every publish
/// drops the server: the relay notices at the confirmation, does not acknowledge, and publishes
/// again once the server is back; when the limit is raised, the entry arrives, once.
#[test]
fn a_server_dropped_with_its_buffer_gets_the_entry_again() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    set_pubsub_limit(&mut con, "pubsub 4096 0 0");
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("DELIVERY__RETRY_INTERVAL", "100ms"),
            // The stand-in server has no clients to wait for.
            ("DELIVERY__RELEASE_WAIT", "0s"),
        ],
    );
    let port = relay.http_port();
    let pad = "x".repeat(20_000);
    xadd(
        &mut con,
        &[
            ("event", "n"),
            ("data", &format!(r#"{{"pad":"{pad}"}}"#)),
            ("x-seq", "0"),
        ],
    );
    wait_until(10 * SECOND, "a publish is found unconfirmed", || {
        find_metric(&http_get(port, "/metrics").1, "sio_relay_unconfirmed_total")
            .is_some_and(|n| n >= 1.0)
    });
    assert_eq!(pending(&mut con).len(), 1, "not acknowledged");
    set_pubsub_limit(&mut con, "pubsub 33554432 8388608 60");
    let messages = sub.wait_count(1, 10 * SECOND);
    wait_until(10 * SECOND, "acknowledged", || pending(&mut con).is_empty());
    assert_eq!(sub.flush(&redis), 1, "once: {messages:?}");
}

fn set_pubsub_limit(con: &mut redis::Connection, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg(value)
        .query(con)
        .unwrap();
}

/// Item 4: with the default configuration, an entry added before the relay's first start (the
/// README's XADD typed while `cargo run` still builds) is delivered.
#[test]
fn entries_added_before_the_first_start_are_delivered() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    add_numbered(&mut con, 0..3);
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start(&redis, "relay-1", &[]);
    let ledger = Ledger::settle(&sub, &redis, 3);
    ledger.assert_exactly_once();
    let log = relay.log();
    assert!(
        log.contains("created the consumer group at 0") && log.contains("entries=3"),
        "the log says what a new group delivers:\n{log}"
    );
}

/// Item 5: a consumer group destroyed while entries flow is created again where the relay stood:
/// neither the history again nor a skipped backlog.
#[test]
fn a_group_destroyed_mid_flow_resumes_where_the_relay_stood() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    add_numbered(&mut con, 0..500);
    let relay = Relay::start(&redis, "relay-1", &[]);
    let port = relay.http_port();
    sub.wait_count(500, 10 * SECOND);
    let total = 2000;
    let producer = produce_in_background(&redis, total - 500, Duration::from_millis(20), |i| {
        numbered(i + 500)
    });
    for _ in 0..2 {
        // Paces the faults within the flow; the ledger below waits on state.
        std::thread::sleep(Duration::from_millis(150));
        destroy_group(&mut con);
    }
    producer.join().unwrap();
    let ledger = Ledger::settle(&sub, &redis, total);
    eprintln!(
        "{}",
        ledger.summary("consumer group destroyed twice mid-flow")
    );
    ledger.assert_exactly_once();
    let (_, metrics) = http_get(port, "/metrics");
    assert!(metric(&metrics, "sio_relay_group_recreated_total") >= 1.0);
}

/// Item 6: Redis out of memory (`maxmemory` with `noeviction`) refuses the delivery script before it
/// runs: entries already read are not published twice, nothing is dead-lettered, and everything goes
/// out once memory is back.
#[test]
fn out_of_memory_nothing_is_published_twice() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    let relay = Relay::start(&redis, "relay-1", &[("REDIS__BACKOFF_MAX", "200ms")]);
    relay.wait_ready(10 * SECOND);
    // Frozen while Redis hands it the entries (its read is blocked in Redis), thawed out of memory.
    relay.signal("STOP");
    add_numbered(&mut con, 0..100);
    set_maxmemory(&mut con, "1");
    let before = command_errors(&mut con, "evalsha");
    relay.signal("CONT");
    // An outage of some length, with the relay retrying: Redis refuses its script five times.
    wait_refused(&mut con, "evalsha", before, 5);
    relay.wait_metric("redis_refusing", 5 * SECOND, |n| n == 1.0);
    let published = sub.flush(&redis);
    set_maxmemory(&mut con, "0");
    let ledger = Ledger::settle(&sub, &redis, 100);
    eprintln!("{}", ledger.summary("Redis out of memory for 2 s"));
    ledger.assert_exactly_once();
    assert_eq!(published, 0, "nothing published while out of memory");
    assert!(dead_letters(&mut con).is_empty());
    let log = relay.log();
    assert_eq!(
        log.matches("Redis refuses the relay's work;").count(),
        1,
        "{log}"
    );
    assert!(log.contains("OOM command not allowed"), "{log}");
    relay.wait_metric("redis_refusing", 5 * SECOND, |n| n == 0.0);
    relay.assert_logged("Redis accepts the relay's work again");
}

fn set_maxmemory(con: &mut redis::Connection, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(value)
        .query(con)
        .unwrap();
}

/// The ACL user of docs/05-security.md, and a relay running as it.
fn relay_as_acl_user(redis: &RedisServer, settings: &[(&str, &str)]) -> Relay {
    let mut admin = redis.connection();
    let rule = documented_acl_rule("pw");
    let _: () = redis::cmd(&rule[0])
        .arg(&rule[1..])
        .query(&mut admin)
        .unwrap();
    let url = format!("redis://sio-relay:pw@127.0.0.1:{}", redis.port);
    let mut all = vec![
        ("REDIS__URL", url.as_str()),
        ("REDIS__BACKOFF_MAX", "200ms"),
    ];
    all.extend_from_slice(settings);
    Relay::start(redis, "relay-1", &all)
}

fn acl(redis: &RedisServer, change: &str) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("sio-relay")
        .arg(change)
        .query(&mut redis.connection())
        .unwrap();
}

/// Item 6: XACK revoked from the relay's ACL user for a while: the script is refused before it
/// publishes anything, so nothing goes out twice and nothing is dead-lettered.
#[test]
fn xack_revoked_for_a_while_nothing_is_published_twice() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let relay = relay_as_acl_user(&redis, &[]);
    relay.wait_ready(10 * SECOND);
    acl(&redis, "-xack");
    let mut con = redis.connection();
    let before = command_errors(&mut con, "evalsha");
    add_numbered(&mut con, 0..50);
    // Revoked for a while: Redis refuses the relay's script five times.
    wait_refused(&mut con, "evalsha", before, 5);
    let published = sub.flush(&redis);
    acl(&redis, "+xack");
    let ledger = Ledger::settle(&sub, &redis, 50);
    eprintln!("{}", ledger.summary("XACK revoked for 2 s"));
    ledger.assert_exactly_once();
    assert_eq!(published, 0, "nothing published while XACK was refused");
    assert!(dead_letters(&mut con).is_empty());
    assert!(relay.log().contains("may not run XACK"), "{}", relay.log());
}

/// Item 10: PUBLISH revoked for a while only holds the entries, without spending their delivery
/// attempts: none is dead-lettered as delivered too often.
#[test]
fn publish_revoked_for_a_while_spends_no_attempts() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let relay = relay_as_acl_user(
        &redis,
        &[
            ("DELIVERY__MAX_DELIVERIES", "1"),
            ("DELIVERY__RETRY_INTERVAL", "100ms"),
            // The stand-in server has no clients to wait for: held entries are tried again at
            // once, every retry_interval.
            ("DELIVERY__RELEASE_WAIT", "0s"),
        ],
    );
    relay.wait_ready(10 * SECOND);
    acl(&redis, "-publish");
    let mut con = redis.connection();
    add_numbered(&mut con, 0..50);
    wait_held(&mut con, 50);
    // Revoked for five more attempts, each refused.
    let before = command_errors(&mut con, "publish");
    wait_refused(&mut con, "publish", before, 5);
    acl(&redis, "+publish");
    let ledger = Ledger::settle(&sub, &redis, 50);
    eprintln!("{}", ledger.summary("PUBLISH revoked for 1 s"));
    ledger.assert_exactly_once();
    assert!(dead_letters(&mut con).is_empty());
}

/// Item 6: a dead-letter key of the wrong type refuses batches with a dead letter in them before
/// anything is published; once the key is fixed, every entry goes where it belongs, once.
#[test]
fn a_dead_letter_key_of_the_wrong_type_publishes_nothing_twice() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    let relay = Relay::start(&redis, "relay-1", &[("REDIS__BACKOFF_MAX", "200ms")]);
    relay.wait_ready(10 * SECOND);
    let _: () = con.set(DEAD, "oops").unwrap();
    let mut pipe = redis::pipe();
    for i in 0..50 {
        let fields = if i % 5 == 0 {
            vec![("event", "connect".to_owned()), ("x-seq", i.to_string())]
        } else {
            numbered(i)
        };
        pipe.xadd(STREAM, "*", &fields).ignore();
    }
    let before = command_errors(&mut con, "evalsha");
    pipe.exec(&mut con).unwrap();
    // The key stays wrong for a while: Redis fails the relay's script five times.
    wait_refused(&mut con, "evalsha", before, 5);
    let published = sub.flush(&redis);
    let _: () = con.del(DEAD).unwrap();
    let ledger = Ledger::settle(&sub, &redis, 50);
    eprintln!(
        "{} (published while the key was wrong: {published})",
        ledger.summary("dead-letter key of the wrong type")
    );
    ledger.assert_exactly_once();
    assert_eq!(ledger.dead.iter().filter(|&&n| n > 0).count(), 10);
    let log = relay.log();
    assert!(
        log.contains("dead-letter stream key sio-relay:dead holds a string"),
        "{log}"
    );
}

/// Item 7: one malformed entry with thousands of fields is dead-lettered (its fields packed) and the
/// entries around it flow; nothing before it is published twice.
#[test]
fn an_entry_with_thousands_of_fields_stops_nothing() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    add_numbered(&mut con, 0..20);
    let names: Vec<String> = (0..4000).map(|i| format!("f{i}")).collect();
    let mut fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    fields.push(("x-seq", "20"));
    xadd(&mut con, &fields);
    add_numbered(&mut con, 21..40);
    let _relay = Relay::start(&redis, "relay-1", &[]);
    let ledger = Ledger::settle(&sub, &redis, 40);
    eprintln!(
        "{}",
        ledger.summary("an entry with 4,000 fields in the flow")
    );
    ledger.assert_exactly_once();
    assert_eq!(ledger.dead[20], 1);
}

/// Item 7: a batch Redis refuses for a reason no check foresees (here a dead-letter stream whose IDs
/// an explicit XADD exhausted) is split: the valid entries around the entry that cannot be
/// dead-lettered are delivered once, and that entry waits, pending, until the stream is fixed.
#[test]
fn a_batch_redis_refuses_is_split_and_the_rest_delivered_once() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    exhaust_dead_letter_stream(&mut con);
    add_numbered(&mut con, 0..10);
    xadd(&mut con, &[("evnt", "typo"), ("x-seq", "10")]);
    add_numbered(&mut con, 11..20);
    let relay = Relay::start(&redis, "relay-1", &[("REDIS__BACKOFF_MAX", "200ms")]);
    sub.wait_count(19, 10 * SECOND);
    wait_until(10 * SECOND, "only the malformed entry is pending", || {
        pending(&mut con).len() == 1
    });
    assert_eq!(sub.flush(&redis), 19, "each valid entry once");
    assert!(relay.log().contains("splitting it"), "{}", relay.log());
    let _: () = con.del(DEAD).unwrap();
    let ledger = Ledger::settle(&sub, &redis, 20);
    eprintln!(
        "{}",
        ledger.summary("dead-letter stream exhausted, then fixed")
    );
    ledger.assert_exactly_once();
    assert_eq!(ledger.dead[10], 1);
}

/// Item 8: a second relay under the same consumer name refuses to start (exit 78); a restart
/// under the same name after a kill -9 still finishes its own pending entries at once.
#[test]
fn a_live_twin_is_refused_and_a_restart_is_not() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut first = Relay::start(
        &redis,
        "twin",
        &[("DELIVERY__CLAIM_IDLE", "1h"), ("SOURCE__BATCH_SIZE", "10")],
    );
    first.wait_ready(10 * SECOND);
    let mut second = Relay::start(&redis, "twin", &[]);
    let status = second.wait_exit(10 * SECOND);
    assert_eq!(status.code(), Some(78), "{}", second.log());
    assert!(
        second
            .log()
            .contains("another relay is running as consumer `twin`"),
        "{}",
        second.log()
    );
    // The first relay read entries and died before publishing them; its restart finishes them
    // without waiting for claim_idle (an hour).
    let mut con = redis.connection();
    first.kill();
    add_numbered(&mut con, 0..30);
    read_as(&mut con, "twin", 30);
    first.restart();
    let ledger = Ledger::settle(&sub, &redis, 30);
    ledger.assert_exactly_once();
}

/// Item 9: with `min_receivers = 2` and one server, nothing is published (not the same entry to the
/// same server every retry); once a second server listens, each gets every entry once.
#[test]
fn min_receivers_above_one_publishes_once_when_enough_servers_listen() {
    let redis = RedisServer::start();
    let first = Subscriber::start(&redis, "/");
    let _relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("DELIVERY__MIN_RECEIVERS", "2"),
            ("DELIVERY__RETRY_INTERVAL", "100ms"),
        ],
    );
    let mut con = redis.connection();
    add_numbered(&mut con, 0..5);
    wait_held(&mut con, 5);
    // Ten retries (one every retry_interval), each finding one server.
    let before = servers_counted(&mut con);
    wait_attempts(&mut con, before, 10);
    assert_eq!(first.flush(&redis), 0, "nothing published to one server");
    assert_eq!(held_record(&mut con), 5, "recorded as held");
    let second = Subscriber::start(&redis, "/");
    for sub in [&first, &second] {
        let ledger = Ledger::settle(sub, &redis, 5);
        ledger.assert_exactly_once();
    }
}

/// Item 10: entries held through more restarts than `max_deliveries` during an outage of every
/// server are delivered once servers are back, not dead-lettered as delivered too often.
#[test]
fn held_entries_keep_their_attempts_across_restarts() {
    let redis = RedisServer::start();
    let mut relay = Relay::start(&redis, "relay-1", &[("DELIVERY__MAX_DELIVERIES", "2")]);
    let mut con = redis.connection();
    add_numbered(&mut con, 0..5);
    wait_held(&mut con, 5);
    for _ in 0..4 {
        relay.restart();
        relay.wait_ready(10 * SECOND);
    }
    let sub = Subscriber::start(&redis, "/");
    let ledger = Ledger::settle(&sub, &redis, 5);
    eprintln!(
        "{}",
        ledger.summary("held through 4 restarts, max_deliveries 2")
    );
    ledger.assert_exactly_once();
    assert!(dead_letters(&mut con).is_empty());
}

/// Item 11: once servers are back after an outage, held entries are delivered at full speed, not a
/// batch per retry interval (here a batch of 10 per second would take over three minutes).
#[test]
fn the_held_backlog_drains_at_full_speed_when_servers_return() {
    let redis = RedisServer::start();
    let _relay = Relay::start(
        &redis,
        "relay-1",
        &[("SOURCE__BATCH_SIZE", "10"), ("DELIVERY__MAX_HELD", "5000")],
    );
    let mut con = redis.connection();
    let total = 2000;
    add_numbered(&mut con, 0..total);
    wait_held(&mut con, total);
    let sub = Subscriber::start(&redis, "/");
    let messages = sub.collect(total, 20 * SECOND);
    assert_eq!(messages.len(), total, "drained within 20 s");
    Ledger::settle(&sub, &redis, total).assert_exactly_once();
}

/// Item 12: a thousand namespaces without listeners holding 5,000 entries cost Redis a few commands
/// per round, not one per held entry, and the listened namespace keeps flowing.
#[test]
fn many_namespaces_without_listeners_cost_redis_little() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    // Sees whatever is published on any namespace's channels.
    let everything = Subscriber::pattern_only(&redis, "socket.io*");
    let _relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("DELIVERY__CLAIM_IDLE", "3s"),
            ("DELIVERY__RETRY_INTERVAL", "200ms"),
        ],
    );
    let mut con = redis.connection();
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        let nsp = format!("/quiet-{}", i % 1000);
        pipe.xadd(STREAM, "*", &[("event", "e"), ("nsp", nsp.as_str())])
            .ignore();
    }
    pipe.exec(&mut con).unwrap();
    wait_held(&mut con, 5000);
    let before = command_stats(&mut con);
    let attempts = servers_counted(&mut con);
    let started = Instant::now();
    add_numbered(&mut con, 0..100);
    // A window of 3 s, which holds a keep-alive round (claim_idle 3 s), and at least fifteen
    // retries (every 200 ms) however slow the machine.
    wait_until(30 * SECOND, "3 s and fifteen retries", || {
        started.elapsed() >= 3 * SECOND && servers_counted(&mut con) >= attempts + 15
    });
    let after = command_stats(&mut con);
    let calls =
        |name: &str| after.get(name).map_or(0, |c| c[0]) - before.get(name).map_or(0, |c| c[0]);
    assert!(
        calls("xpending") < 100,
        "{} XPENDING calls in 3 s (or the longer window) for 5,000 held entries",
        calls("xpending")
    );
    everything.flush(&redis);
    let quiet = everything
        .messages()
        .iter()
        .filter(|m| m.channel.contains("/quiet-"))
        .count();
    assert_eq!(
        quiet, 0,
        "nothing published to the namespaces without listeners"
    );
    let ledger = Ledger::settle_waiting(&sub, &redis, 100, 5000);
    ledger.assert_exactly_once();
}

/// Item 13: SIGTERM in the middle of a flow leaves nothing this relay read pending: the batch read
/// ahead is delivered before it exits.
#[test]
fn sigterm_mid_flow_leaves_nothing_pending() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut relay = Relay::start(&redis, "relay-1", &[]);
    let total = 5000;
    let producer = produce_in_background(&redis, total, Duration::ZERO, numbered);
    sub.wait_count(500, 10 * SECOND);
    let status = relay.signal_and_wait("TERM", 15 * SECOND);
    assert!(status.success(), "{}", relay.log());
    producer.join().unwrap();
    let mut con = redis.connection();
    assert_eq!(
        pending(&mut con),
        [],
        "nothing left pending after a clean stop"
    );
}

/// Item 14: `dead replay --all` with a running relay walks a snapshot of the dead-letter stream: it
/// replays each dead letter once, even though the relay dead-letters the malformed ones again.
#[test]
fn dead_replay_all_with_a_running_relay_ends() {
    let redis = RedisServer::start();
    let _relay = Relay::start(&redis, "relay-1", &[]);
    let mut con = redis.connection();
    let mut pipe = redis::pipe();
    for i in 0..1001 {
        pipe.xadd(STREAM, "*", &[("evnt", i.to_string())]).ignore();
    }
    pipe.exec(&mut con).unwrap();
    wait_until(20 * SECOND, "1001 dead letters", || {
        con.xlen::<_, usize>(DEAD).unwrap() == 1001
    });
    let dead = |args: &[&str]| {
        let out = sio_relay()
            .arg("dead")
            .args(args)
            .env("SIO_RELAY_REDIS__URL", redis.url())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = dead(&["replay", "--all", "--reason", "expired", "--dry-run"]);
    assert!(
        text.ends_with("would replay 0 dead letter(s); nothing changed (--dry-run)\n"),
        "{text}"
    );
    let text = dead(&["replay", "--all", "--reason", "malformed", "--dry-run"]);
    assert!(text.contains("would replay 1001 dead letter(s)"), "{text}");
    assert_eq!(
        con.xlen::<_, usize>(DEAD).unwrap(),
        1001,
        "a dry run changes nothing"
    );
    let text = dead(&["replay", "--all", "--reason", "malformed"]);
    assert!(text.contains("replayed 1001 dead letter(s)"), "{text}");
    assert_eq!(
        con.xlen::<_, usize>(STREAM).unwrap(),
        2002,
        "each replayed once"
    );
}

/// Entry ages are measured on Redis's clock (entry IDs are Redis time): a relay host whose clock
/// runs two days ahead expires nothing fresh, and one running behind still expires what is old.
#[test]
fn max_age_uses_redis_time_not_the_hosts_clock() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let ahead = Relay::start_with_clock(&redis, "ahead", "+2d", &[("DELIVERY__MAX_AGE", "1h")]);
    ahead.wait_ready(10 * SECOND);
    let mut con = redis.connection();
    add_numbered(&mut con, 0..5);
    let ledger = Ledger::settle(&sub, &redis, 5);
    ledger.assert_exactly_once();
    assert!(dead_letters(&mut con).is_empty(), "nothing fresh expired");
    drop(ahead);

    // A stream of its own, so that the old ID can be added.
    let old_ms = crate::common::now_ms() - 3 * 3600 * 1000;
    let _: String = con
        .xadd("old", format!("{old_ms}-0"), &[("event", "old")])
        .unwrap();
    let behind = Relay::start_with_clock(
        &redis,
        "behind",
        "-2d",
        &[("DELIVERY__MAX_AGE", "1h"), ("SOURCE__STREAM", "old")],
    );
    wait_until(10 * SECOND, "the old entry is expired", || {
        dead_letters(&mut con).len() == 1
    });
    let dead = dead_letters(&mut con);
    assert_eq!(field(&dead[0].1, "x-dead-reason"), Some("expired"));
    drop(behind);
}
