//! The chaos suite: each scenario produces a known set of numbered entries, breaks something while
//! they flow, and checks per entry that it reached a subscriber or the dead-letter stream. Each prints
//! `chaos <scenario>: produced N, delivered D, dead-lettered X, lost L, duplicated U`.
//!
//! Bounded in time: every scenario finishes in seconds, and waits at most 30 s for its entries.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

/// A valid entry numbered `i`.
fn numbered(i: usize) -> Vec<(&'static str, String)> {
    vec![
        ("event", "n".into()),
        ("data", i.to_string()),
        ("x-seq", i.to_string()),
    ]
}

fn report(ledger: &Ledger, scenario: &str) {
    eprintln!("{}", ledger.summary(scenario));
}

fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -s {name} {pid}");
}

#[test]
fn relay_killed_at_random_moments_and_restarted() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut relay = Relay::start(&redis, "relay-a", &[("SOURCE__BATCH_SIZE", "32")]);
    let total = 3000;
    let producer = produce_in_background(&redis, total, Duration::from_millis(20), numbered);
    for _ in 0..5 {
        // Random moments within the flow (pacing the faults); the ledger waits on state.
        std::thread::sleep(Duration::from_millis(100 + fastrand::u64(0..250)));
        relay.restart(); // SIGKILL, then the same consumer again
    }
    producer.join().unwrap();
    let ledger = Ledger::settle(&sub, &redis, total);
    report(&ledger, "kill-9 of the relay, restarted each time");
    ledger.assert_exactly_once();
}

#[test]
fn three_relays_one_killed_for_good() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let settings = [
        ("SOURCE__BATCH_SIZE", "16"),
        ("DELIVERY__CLAIM_IDLE", "1s"),
        ("DELIVERY__CLAIM_INTERVAL", "200ms"),
    ];
    let _a = Relay::start(&redis, "relay-a", &settings);
    let mut b = Relay::start(&redis, "relay-b", &settings);
    let _c = Relay::start(&redis, "relay-c", &settings);
    let total = 3000;
    let producer = produce_in_background(&redis, total, Duration::from_millis(20), numbered);
    // Mid-flow: some of it is delivered.
    sub.wait_count(50, 10 * SECOND);
    b.kill();
    producer.join().unwrap();
    let mut con = redis.connection();
    let ledger = Ledger::settle(&sub, &redis, total);
    report(&ledger, "three relays, one killed for good");
    ledger.assert_exactly_once();
    wait_until(10 * SECOND, "nothing left pending", || {
        pending(&mut con).is_empty()
    });
}

/// Redis killed with SIGKILL and restarted (AOF, fsync always) mid-flow: nothing is lost; only what
/// was published and not yet confirmed at the crash (journaled) may arrive twice: its packets may
/// or may not have left Redis.
#[test]
fn redis_crashed_and_restarted_with_aof() {
    let mut redis = RedisServer::start_persistent();
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("REDIS__BACKOFF_MAX", "200ms"),
            ("DELIVERY__RETRY_INTERVAL", "50ms"),
            ("SOURCE__BATCH_SIZE", "20"),
        ],
    );
    let total = 1000;
    let mut con = redis.connection();
    for i in 0..total / 2 {
        let fields = numbered(i);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(f, v)| (*f, v.as_str())).collect();
        xadd(&mut con, &fields);
    }
    sub.wait_count(50, 10 * SECOND);
    // What is journaled when Redis dies, the relay's scripts held off meanwhile: published, not
    // yet confirmed.
    pause_writes(&mut con);
    let journal: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(format!("{STREAM}:published:{GROUP}"))
        .query(&mut con)
        .unwrap();
    let unconfirmed: usize = journal
        .iter()
        .map(|(_, ids)| {
            ids.split_once(' ')
                .map_or(0, |(_, ids)| ids.split(',').count())
        })
        .sum();
    redis.kill();
    // Redis stays down a while (the outage's length, not a wait for the relay).
    std::thread::sleep(Duration::from_millis(300));
    redis.restart();
    let producer = produce_in_background(&redis, total / 2, Duration::ZERO, |i| numbered(i + 500));
    producer.join().unwrap();
    let ledger = Ledger::settle(&sub, &redis, total);
    report(&ledger, "Redis killed and restarted (AOF)");
    assert_eq!(ledger.lost(), 0, "{}", ledger.summary("redis crash"));
    assert!(
        ledger.duplicated() <= unconfirmed,
        "{} ({unconfirmed} unconfirmed at the crash)",
        ledger.summary("redis crash")
    );
    let log = relay.log();
    assert_eq!(
        log.matches("Redis is unavailable").count(),
        1,
        "logged once:\n{log}"
    );
    assert_eq!(
        log.matches("Redis is back").count(),
        1,
        "logged once:\n{log}"
    );
    // The group found again after reconnecting is the one the relay knew, not news.
    assert!(!log.contains("consumer group was deleted"), "{log}");
}

/// Redis frozen (SIGSTOP) for longer than every client timeout, then resumed: commands the relay
/// gave up on still run when Redis wakes, and the journal keeps them from being published twice.
#[test]
fn redis_paused_longer_than_the_timeouts() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("REDIS__COMMAND_TIMEOUT", "500ms"),
            ("REDIS__CONNECT_TIMEOUT", "500ms"),
            ("REDIS__BACKOFF_MAX", "200ms"),
            ("SOURCE__BLOCK", "200ms"),
            ("SOURCE__BATCH_SIZE", "20"),
        ],
    );
    let total = 2000;
    let producer = produce_in_background(&redis, total, Duration::from_millis(30), numbered);
    sub.wait_count(100, 10 * SECOND);
    let pid = redis_pid(&redis);
    signal(pid, "STOP");
    // Frozen until the relay's commands timed out and it counts Redis as unavailable, then for
    // 2 s more (several reconnection attempts timing out).
    relay.wait_unready("Redis:", 10 * SECOND);
    std::thread::sleep(2 * SECOND);
    signal(pid, "CONT");
    producer.join().unwrap();
    let ledger = Ledger::settle(&sub, &redis, total);
    report(&ledger, "Redis paused longer than the timeouts");
    ledger.assert_exactly_once();
}

fn redis_pid(redis: &RedisServer) -> u32 {
    let info: redis::InfoDict = redis::cmd("INFO")
        .arg("server")
        .query(&mut redis.connection())
        .unwrap();
    info.get("process_id").unwrap()
}

/// The only server leaves mid-flow and comes back. Nothing is lost; an entry published in the very
/// instant the server left is published again when it is back (the relay cannot tell whether the
/// server read it before leaving), so at most the batch in flight is repeated.
#[test]
fn every_socketio_server_down_for_a_while() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let batch = 50;
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("DELIVERY__RETRY_INTERVAL", "100ms"),
            ("SOURCE__BATCH_SIZE", "50"),
        ],
    );
    let total = 2000;
    let producer = produce_in_background(&redis, total, Duration::from_millis(20), numbered);
    sub.wait_count(100, 10 * SECOND);
    let before = sub.stop();
    // Down until the relay holds entries for want of servers.
    relay.wait_metric("held_entries", 10 * SECOND, |n| n > 0.0);
    let sub = Subscriber::start(&redis, "/");
    producer.join().unwrap();
    // One ledger over both subscribers' receipts.
    let ledger = Ledger::settle_excusing(&sub, &redis, total, &[], &before);
    report(&ledger, "every Socket.IO server down, then back");
    assert_eq!(ledger.lost(), 0, "{}", ledger.summary("servers down"));
    assert!(
        ledger.duplicated() <= batch,
        "{}",
        ledger.summary("servers down")
    );
}

/// Entries deleted from the stream while pending for a dead consumer: the relay reports and skips
/// them, delivers the rest, and stalls on nothing.
#[test]
fn stream_trimmed_under_the_relay() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let total = 1000;
    let mut ids = Vec::with_capacity(total);
    for i in 0..total {
        let fields = numbered(i);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(f, v)| (*f, v.as_str())).collect();
        ids.push(xadd(&mut con, &fields));
    }
    read_as(&mut con, "crashed-pod", 300);
    // Trim the oldest 100 (pending for the dead consumer) away.
    let _: usize = redis::cmd("XTRIM")
        .arg(STREAM)
        .arg("MINID")
        .arg(&ids[100])
        .query(&mut con)
        .unwrap();
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("DELIVERY__CLAIM_IDLE", "1s"),
            ("DELIVERY__CLAIM_INTERVAL", "100ms"),
        ],
    );
    let trimmed: Vec<usize> = (0..100).collect();
    let ledger = Ledger::settle_excusing(&sub, &redis, total, &trimmed, &[]);
    report(&ledger, "stream trimmed under the relay");
    ledger.assert_exactly_once();
    relay.wait_metric("deleted_pending_total", 5 * SECOND, |n| n >= 1.0);
    relay.assert_logged("deleted from the stream");
    wait_until(5 * SECOND, "nothing left pending", || {
        pending(&mut con).is_empty()
    });
}

#[test]
fn malformed_flood_mixed_with_valid_entries() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let _relay = Relay::start(&redis, "relay-1", &[]);
    let total = 3000;
    let producer = produce_in_background(&redis, total, Duration::from_millis(10), |i| {
        let seq = i.to_string();
        match i % 6 {
            1 => vec![("event", "connect".into()), ("x-seq", seq)],
            2 => vec![
                ("event", "n".into()),
                ("data", "{oops".into()),
                ("x-seq", seq),
            ],
            3 => vec![("evnt", "n".into()), ("x-seq", seq)],
            4 => vec![
                ("event", "n".into()),
                ("data", "1".into()),
                ("args", "[2]".into()),
                ("x-seq", seq),
            ],
            _ => numbered(i),
        }
    });
    producer.join().unwrap();
    let ledger = Ledger::settle(&sub, &redis, total);
    report(&ledger, "malformed flood mixed with valid entries");
    ledger.assert_exactly_once();
    let valid = (0..total).filter(|i| i % 6 == 0 || i % 6 == 5).count();
    assert_eq!(ledger.delivered.iter().filter(|&&n| n > 0).count(), valid);
    assert_eq!(
        ledger.dead.iter().filter(|&&n| n > 0).count(),
        total - valid
    );
}
