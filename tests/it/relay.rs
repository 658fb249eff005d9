//! Delivery semantics against real `redis-server` processes: the relay binary is run as users run
//! it, and a pattern subscriber stands in for a Socket.IO server (PUBLISH counts it the same way).

use std::time::{Duration, Instant};

use crate::common::*;
use redis::Commands;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn delivers_to_a_room_and_acknowledges() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let _relay = Relay::start(&redis, "relay-1", &[]);
    let mut con = redis.connection();
    xadd(
        &mut con,
        &[
            ("room", "game-lobby"),
            ("event", "chat"),
            ("data", r#"{"text":"Welcome!"}"#),
        ],
    );
    let messages = sub.wait_count(1, 10 * SECOND);
    assert_eq!(messages[0].channel, "socket.io#/#game-lobby#");
    let packet = messages[0].decode();
    assert_eq!(packet[0], "emitter");
    assert_eq!(packet[1]["type"], 2);
    assert_eq!(
        packet[1]["data"],
        serde_json::json!(["chat", {"text": "Welcome!"}])
    );
    assert_eq!(packet[2]["rooms"], serde_json::json!(["game-lobby"]));
    wait_until(5 * SECOND, "the entry is acknowledged", || {
        pending(&mut con).is_empty()
    });
}

#[test]
fn start_id_decides_whether_a_new_group_reads_the_backlog() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    xadd(&mut con, &[("event", "old")]);
    let relay = Relay::start(&redis, "relay-1", &[("SOURCE__START_ID", "$")]);
    // Ready: the group exists, created at the stream's end.
    relay.wait_ready(10 * SECOND);
    xadd(&mut con, &[("event", "new")]);
    let messages = sub.wait_count(1, 10 * SECOND);
    assert_eq!(sub.flush(&redis), 1, "the backlog was skipped");
    assert_eq!(messages[0].event(), "new");
    drop(relay);

    // Same stream, new group at "0": the whole backlog; an existing group is used as it is.
    let relay = Relay::start(
        &redis,
        "relay-2",
        &[("SOURCE__GROUP", "other"), ("SOURCE__START_ID", "0")],
    );
    let events: Vec<String> = sub
        .wait_count(3, 10 * SECOND)
        .iter()
        .map(|m| m.event())
        .collect();
    assert_eq!(events, ["new", "old", "new"]);
    drop(relay);
    let relay = Relay::start(&redis, "relay-3", &[("SOURCE__START_ID", "0")]);
    relay.wait_ready(10 * SECOND);
    // An entry added now arrives after anything the relay would have replayed.
    xadd(&mut con, &[("event", "later")]);
    let events: Vec<String> = sub
        .wait_count(4, 10 * SECOND)
        .iter()
        .map(|m| m.event())
        .collect();
    assert_eq!(
        sub.flush(&redis),
        4,
        "the existing group was not reset: {events:?}"
    );
}

#[test]
fn own_pending_entries_are_finished_after_a_restart() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    for i in 0..3 {
        xadd(&mut con, &[("event", "e"), ("data", &i.to_string())]);
    }
    // A relay named relay-1 read them and died before publishing.
    read_as(&mut con, "relay-1", 10);
    assert_eq!(pending(&mut con).len(), 3);
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start(&redis, "relay-1", &[("DELIVERY__CLAIM_IDLE", "1h")]);
    let args: Vec<serde_json::Value> = sub
        .wait_count(3, 10 * SECOND)
        .iter()
        .map(|m| m.arg())
        .collect();
    assert_eq!(
        args,
        [0, 1, 2],
        "in stream order, without waiting for claim_idle"
    );
    wait_until(5 * SECOND, "all acknowledged", || {
        pending(&mut con).is_empty()
    });
    assert_eq!(
        relay.metric("entries_read_total{source=\"own_pending\"}"),
        Some(3.0)
    );
    relay.assert_logged("recovered this consumer's pending entries");
}

#[test]
fn a_dead_consumers_entries_are_reclaimed() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    for i in 0..5 {
        xadd(&mut con, &[("event", "e"), ("data", &i.to_string())]);
    }
    read_as(&mut con, "crashed-pod", 10);
    let sub = Subscriber::start(&redis, "/");
    let started = Instant::now();
    let relay = Relay::start(
        &redis,
        "relay-2",
        &[
            ("DELIVERY__CLAIM_IDLE", "1s"),
            ("DELIVERY__CLAIM_INTERVAL", "100ms"),
        ],
    );
    let messages = sub.wait_count(5, 10 * SECOND);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before claim_idle"
    );
    let args: Vec<serde_json::Value> = messages.iter().map(|m| m.arg()).collect();
    assert_eq!(args, [0, 1, 2, 3, 4]);
    wait_until(5 * SECOND, "all acknowledged", || {
        pending(&mut con).is_empty()
    });
    assert_eq!(
        relay.metric("entries_read_total{source=\"reclaimed\"}"),
        Some(5.0)
    );
    relay.assert_logged("reclaimed idle entries of other consumers");
}

#[test]
fn reclaimed_entries_deleted_from_the_stream_are_reported_not_fatal() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let gone = xadd(&mut con, &[("event", "trimmed")]);
    xadd(&mut con, &[("event", "kept")]);
    read_as(&mut con, "crashed-pod", 10);
    let _: usize = con.xdel(STREAM, &[&gone]).unwrap();
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start(
        &redis,
        "relay-2",
        &[
            ("DELIVERY__CLAIM_IDLE", "1s"),
            ("DELIVERY__CLAIM_INTERVAL", "100ms"),
        ],
    );
    let messages = sub.wait_count(1, 10 * SECOND);
    assert_eq!(messages[0].event(), "kept");
    relay.wait_metric("deleted_pending_total", 5 * SECOND, |n| n == 1.0);
    relay.assert_logged("deleted from the stream");
    wait_until(5 * SECOND, "the pending list is empty", || {
        pending(&mut con).is_empty()
    });
}

#[test]
fn entries_delivered_too_often_are_dead_lettered() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let poison = xadd(&mut con, &[("event", "poison"), ("x-tenant", "t1")]);
    read_as(&mut con, "crashed-pod", 10);
    // Two more relays claimed it and died too: delivered 3 times.
    for _ in 0..2 {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(STREAM)
            .arg(GROUP)
            .arg("crashed-pod")
            .arg(0)
            .arg(&poison)
            .query(&mut con)
            .unwrap();
    }
    assert_eq!(pending(&mut con)[0].2, 3);
    let sub = Subscriber::start(&redis, "/");
    let _relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("DELIVERY__MAX_DELIVERIES", "3"),
            ("DELIVERY__CLAIM_IDLE", "1s"),
            ("DELIVERY__CLAIM_INTERVAL", "100ms"),
        ],
    );
    wait_until(10 * SECOND, "the entry is dead-lettered", || {
        !dead_letters(&mut con).is_empty()
    });
    let dead = dead_letters(&mut con);
    let fields = &dead[0].1;
    assert_eq!(field(fields, "event"), Some("poison"));
    assert_eq!(
        field(fields, "x-tenant"),
        Some("t1"),
        "producer metadata is kept"
    );
    assert_eq!(field(fields, "x-dead-reason"), Some("max_deliveries"));
    assert_eq!(field(fields, "x-dead-deliveries"), Some("4"));
    assert_eq!(field(fields, "x-dead-id"), Some(poison.as_str()));
    assert_eq!(field(fields, "x-dead-stream"), Some(STREAM));
    assert!(pending(&mut con).is_empty(), "dead-lettering acknowledges");
    assert!(sub.messages().is_empty(), "never published");
}

#[test]
fn old_entries_expire_into_the_dead_letter_stream() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let old = xadd_id(&mut con, "1000-0", &[("event", "late")]);
    let sub = Subscriber::start(&redis, "/");
    let _relay = Relay::start(&redis, "relay-1", &[("DELIVERY__MAX_AGE", "1h")]);
    xadd(&mut con, &[("event", "fresh")]);
    let messages = sub.wait_count(1, 10 * SECOND);
    assert_eq!(messages[0].event(), "fresh");
    wait_until(5 * SECOND, "the old entry is dead-lettered", || {
        !dead_letters(&mut con).is_empty()
    });
    let dead = dead_letters(&mut con);
    assert_eq!(field(&dead[0].1, "x-dead-reason"), Some("expired"));
    assert_eq!(field(&dead[0].1, "x-dead-id"), Some(old.as_str()));
    assert!(field(&dead[0].1, "x-dead-error")
        .unwrap()
        .contains("delivery.max_age = 1h"));
    assert_eq!(sub.messages().len(), 1);
}

#[test]
fn entries_wait_for_servers_without_using_up_attempts() {
    let redis = RedisServer::start();
    let admin = Subscriber::start(&redis, "/admin");
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("DELIVERY__MAX_DELIVERIES", "1"),
            ("DELIVERY__RETRY_INTERVAL", "100ms"),
            ("DELIVERY__CLAIM_IDLE", "1s"),
            // The stand-in servers have no clients to wait for.
            ("DELIVERY__RELEASE_WAIT", "0s"),
        ],
    );
    let mut con = redis.connection();
    for i in 0..3 {
        xadd(&mut con, &[("event", "root"), ("data", &i.to_string())]);
        xadd(
            &mut con,
            &[
                ("event", "admin"),
                ("nsp", "/admin"),
                ("data", &i.to_string()),
            ],
        );
    }
    // The namespace with a listener keeps flowing.
    let admin_args: Vec<_> = admin
        .wait_count(3, 10 * SECOND)
        .iter()
        .map(|m| m.arg())
        .collect();
    assert_eq!(admin_args, [0, 1, 2]);
    relay.wait_metric("held_total", 5 * SECOND, |n| n == 3.0);
    relay.assert_logged("too few Socket.IO servers listen");
    // Well past claim_idle (1 s) and many retries (every 100 ms, each counting the servers):
    // still pending, still delivered only once.
    let before = servers_counted(&mut con);
    wait_attempts(&mut con, before, 20);
    let held = pending(&mut con);
    assert_eq!(held.len(), 3, "{held:?}");
    assert!(
        held.iter()
            .all(|(_, consumer, n)| consumer == "relay-1" && *n == 1),
        "{held:?}"
    );
    assert!(dead_letters(&mut con).is_empty());

    let root = Subscriber::start(&redis, "/");
    let root_args: Vec<_> = root
        .wait_count(3, 10 * SECOND)
        .iter()
        .map(|m| m.arg())
        .collect();
    assert_eq!(root_args, [0, 1, 2], "in stream order");
    wait_until(5 * SECOND, "all acknowledged", || {
        pending(&mut con).is_empty()
    });
    // Order holds for entries produced after the servers came back, too.
    xadd(&mut con, &[("event", "root"), ("data", "3")]);
    root.wait_count(4, 5 * SECOND);
    relay.assert_logged("listen on this namespace again");
}

#[test]
fn reading_pauses_when_too_many_entries_are_held() {
    let redis = RedisServer::start();
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("SOURCE__BATCH_SIZE", "2"),
            ("DELIVERY__MAX_HELD", "4"),
            ("DELIVERY__RETRY_INTERVAL", "100ms"),
            // The stand-in servers have no clients to wait for.
            ("DELIVERY__RELEASE_WAIT", "0s"),
        ],
    );
    let mut con = redis.connection();
    for i in 0..10 {
        xadd(&mut con, &[("event", "e"), ("data", &i.to_string())]);
    }
    relay.wait_metric("held_entries", 10 * SECOND, |n| n == 4.0);
    // Paused: the relay keeps retrying the held entries (each retry refreshes their idle time),
    // and a retry after the pause proves no read came in between.
    let before = servers_counted(&mut con);
    wait_attempts(&mut con, before, 2);
    relay.assert_logged("reading paused");
    assert_eq!(pending(&mut con).len(), 4, "no more is read than max_held");
    let sub = Subscriber::start(&redis, "/");
    let args: Vec<_> = sub
        .wait_count(10, 10 * SECOND)
        .iter()
        .map(|m| m.arg())
        .collect();
    assert_eq!(args, (0..10).collect::<Vec<_>>());
    relay.assert_logged("reading resumed");
}

#[test]
fn fire_and_forget_acknowledges_without_listeners() {
    let redis = RedisServer::start();
    let _relay = Relay::start(&redis, "relay-1", &[("DELIVERY__MIN_RECEIVERS", "0")]);
    let mut con = redis.connection();
    xadd(&mut con, &[("event", "e")]);
    wait_until(10 * SECOND, "acknowledged with nobody listening", || {
        let group: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(STREAM)
            .query(&mut con)
            .unwrap_or_default();
        !group.is_empty() && pending(&mut con).is_empty()
    });
}

#[test]
fn sigterm_finishes_the_batch_in_flight_and_exits_zero() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut relay = Relay::start(
        &redis,
        "relay-1",
        &[("SOURCE__BATCH_SIZE", "50"), ("SHUTDOWN__TIMEOUT", "5s")],
    );
    relay.wait_ready(10 * SECOND);
    let mut con = redis.connection();
    let total = 2000;
    let producer = {
        let url = redis.url();
        std::thread::spawn(move || {
            let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
            for i in 0..total {
                xadd(&mut con, &[("event", "n"), ("data", &i.to_string())]);
            }
        })
    };
    sub.wait_count(100, 10 * SECOND);
    let started = Instant::now();
    let status = relay.signal_and_wait("TERM", 10 * SECOND);
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < 5 * SECOND, "within shutdown.timeout");
    relay.assert_logged("stopped");
    producer.join().unwrap();
    // Whatever was not delivered is still pending or unread; a new start delivers it, once.
    let _next = Relay::start(&redis, "relay-1", &[]);
    Ledger::settle(&sub, &redis, total).assert_exactly_once();
    wait_until(5 * SECOND, "all acknowledged", || {
        pending(&mut con).is_empty()
    });
}

#[test]
fn sigint_with_redis_down_still_exits_promptly() {
    let mut redis = RedisServer::start();
    let mut relay = Relay::start(&redis, "relay-1", &[("SHUTDOWN__TIMEOUT", "2s")]);
    relay.wait_ready(10 * SECOND);
    redis.kill();
    relay.wait_unready("Redis:", 10 * SECOND);
    relay.assert_logged("Redis is unavailable");
    let started = Instant::now();
    let status = relay.signal_and_wait("INT", 5 * SECOND);
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < 2 * SECOND);
}

#[test]
fn relay_waits_for_redis_that_is_not_up_yet() {
    let mut redis = RedisServer::start();
    redis.kill();
    let relay = Relay::start(&redis, "relay-1", &[("REDIS__BACKOFF_MAX", "200ms")]);
    relay.wait_unready("Redis:", 10 * SECOND);
    relay.assert_logged("Redis is unavailable");
    // Redis stays down for a while, so that the relay tries several times (backoff at most
    // 200 ms): the length of the outage, not a wait for the relay. Nothing counts connection
    // attempts to a Redis that is down (no metric), so the assertion below on saying it once is
    // only as strong as the attempts made meanwhile.
    std::thread::sleep(Duration::from_millis(800));
    redis.restart();
    let sub = Subscriber::start(&redis, "/");
    relay.wait_ready(10 * SECOND);
    relay.assert_logged("Redis is back");
    let mut con = redis.connection();
    xadd(&mut con, &[("event", "e")]);
    sub.wait_count(1, 10 * SECOND);
    assert_eq!(relay.log().matches("Redis is unavailable").count(), 1);
}

#[test]
fn a_deleted_group_is_created_again() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start(&redis, "relay-1", &[]);
    relay.wait_ready(10 * SECOND);
    let mut con = redis.connection();
    destroy_group(&mut con);
    relay.wait_metric("group_recreated_total", 10 * SECOND, |n| n == 1.0);
    relay.assert_logged("created it again at the last entry this relay knew read");
    xadd(&mut con, &[("event", "after")]);
    assert_eq!(sub.wait_count(1, 10 * SECOND)[0].event(), "after");
}

/// The one-line replay of docs/02-guarantees.md ("Dead letters") moves a dead letter back to the source stream, where it is
/// delivered like any entry (its `x-dead-*` fields are ignored).
#[test]
fn a_dead_letter_replayed_as_the_docs_show_is_delivered() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let old = xadd_id(&mut con, "1000-0", &[("event", "late"), ("data", "1")]);
    let sub = Subscriber::start(&redis, "/");
    let mut relay = Relay::start(&redis, "relay-1", &[("DELIVERY__MAX_AGE", "1h")]);
    wait_until(10 * SECOND, "the old entry is dead-lettered", || {
        !dead_letters(&mut con).is_empty()
    });
    let dead_id = dead_letters(&mut con)[0].0.clone();
    relay.kill();
    let chapter = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/02-guarantees.md"
    ));
    let script = chapter
        .lines()
        .find(|l| l.starts_with("redis-cli EVAL \"local e = redis.call('XRANGE'"))
        .expect("the replay one-liner is in docs/02-guarantees.md");
    let script = script
        .strip_prefix("redis-cli EVAL \"")
        .and_then(|s| s.split_once("\" 2 "))
        .unwrap()
        .0;
    let replayed: String = redis::cmd("EVAL")
        .arg(script)
        .arg(2)
        .arg(DEAD)
        .arg(STREAM)
        .arg(&dead_id)
        .query(&mut con)
        .unwrap();
    assert!(
        dead_letters(&mut con).is_empty(),
        "removed from the dead-letter stream"
    );
    assert_ne!(replayed, old);
    let _relay = Relay::start(&redis, "relay-1", &[]);
    let messages = sub.wait_count(1, 10 * SECOND);
    assert_eq!(messages[0].event(), "late");
    assert_eq!(messages[0].arg(), 1);
}
