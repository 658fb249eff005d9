//! What operators and init systems see: the HTTP probes and metrics, systemd notifications, and the
//! removal of stale consumers, against real Redis processes.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn probes_follow_redis_and_metrics_count_what_happened() {
    let mut redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start(&redis, "relay-1", &[("REDIS__BACKOFF_MAX", "500ms")]);
    let port = relay.http_port();
    wait_until(10 * SECOND, "/readyz says ready", || {
        http_get(port, "/readyz").0 == 200
    });
    assert_eq!(http_get(port, "/livez"), (200, "ok\n".into()));
    assert_eq!(http_get(port, "/nope").0, 404);

    let mut con = redis.connection();
    xadd(&mut con, &[("event", "e"), ("room", "r")]);
    xadd(&mut con, &[("event", "connect")]);
    sub.wait_count(1, 10 * SECOND);
    wait_until(10 * SECOND, "the metrics count both entries", || {
        reading(&http_get(port, "/metrics").1, "acknowledged_total") == Some(2.0)
    });
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&body, "sio_relay_entries_read_total{source=\"new\"}"),
        2.0
    );
    // One stream: its series carry its name, as each partition's do.
    let published = format!("sio_relay_published_total{{stream=\"{STREAM}\"}}");
    assert_eq!(metric(&body, &published), 1.0);
    assert_eq!(
        metric(&body, "sio_relay_dead_lettered_total{reason=\"malformed\"}"),
        1.0
    );
    assert_eq!(metric(&body, "sio_relay_publish_receivers_count"), 1.0);
    assert_eq!(
        metric(&body, "sio_relay_end_to_end_latency_seconds_count"),
        1.0
    );
    assert_eq!(
        metric(&body, "sio_relay_redis_connected{connection=\"writer\"}"),
        1.0
    );
    assert!(body.contains("sio_relay_build_info{version=\""));
    wait_until(10 * SECOND, "the group gauges are refreshed", || {
        let (_, body) = http_get(port, "/metrics");
        reading(&body, "group_pending") == Some(0.0) && reading(&body, "group_lag") == Some(0.0)
    });

    // Redis goes away: not ready within seconds, still live; back: ready again.
    redis.kill();
    let down = Instant::now();
    wait_until(5 * SECOND, "/readyz says not ready", || {
        http_get(port, "/readyz").0 == 503
    });
    assert!(down.elapsed() < 5 * SECOND);
    let (_, reason) = http_get(port, "/readyz");
    assert!(reason.starts_with("Redis"), "{reason:?}");
    assert_eq!(reason.lines().count(), 1);
    assert_eq!(
        http_get(port, "/livez").0,
        200,
        "liveness never depends on Redis"
    );
    assert_eq!(
        reading(
            &http_get(port, "/metrics").1,
            "redis_connected{connection=\"reader\"}"
        ),
        Some(0.0)
    );
    redis.restart();
    wait_until(10 * SECOND, "/readyz says ready again", || {
        http_get(port, "/readyz").0 == 200
    });
    drop(relay);
}

/// A relay that has read nothing exports `entries_read_total` at 0 for every source the docs list
/// (docs/03-operating.md): a dashboard's `rate()` shows 0 instead of no data, and sees the first read.
#[test]
fn every_read_source_is_exported_at_0_before_the_first_read() {
    let redis = RedisServer::start();
    let relay = Relay::start(&redis, "relay-1", &[]);
    relay.wait_ready(10 * SECOND);
    let sources: Vec<String> = documented_metrics()
        .into_iter()
        .filter(|name| name.starts_with("entries_read_total{"))
        .collect();
    assert_eq!(sources.len(), 3, "the documented sources: {sources:?}");
    let (status, body) = http_get(relay.http_port(), "/metrics");
    assert_eq!(status, 200);
    for series in &sources {
        assert_eq!(reading(&body, series), Some(0.0), "{series} in\n{body}");
    }
    let mut con = redis.connection();
    assert_eq!(
        redis::Commands::xlen::<_, usize>(&mut con, STREAM).unwrap(),
        0,
        "nothing was there to read"
    );
}

#[test]
fn a_taken_http_port_stops_the_relay_at_start() {
    let redis = RedisServer::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let out = sio_relay()
        .arg("run")
        .env("SIO_RELAY_REDIS__URL", redis.url())
        .env("SIO_RELAY_HTTP__LISTEN", &listen)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("http.listen") && stderr.contains(&listen),
        "{stderr}"
    );
}

#[test]
fn systemd_gets_ready_watchdog_and_stopping() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = sio_relay()
        .arg("run")
        .env("SIO_RELAY_REDIS__URL", redis.url())
        .env("SIO_RELAY_SOURCE__CONSUMER", "relay-1")
        .env("SIO_RELAY_SOURCE__BLOCK", "100ms")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut messages: Vec<String> = Vec::new();
    let deadline = Instant::now() + 10 * SECOND;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline
        && messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() < 3
    {
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let ready = messages.iter().position(|m| m.contains("READY=1"));
    assert!(ready.is_some(), "{messages:?}");
    assert!(messages[ready.unwrap()].contains("STATUS=relaying stream sio-relay"));
    assert!(
        messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "{messages:?}"
    );

    std::process::Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut stopping = false;
    let deadline = Instant::now() + 5 * SECOND;
    while Instant::now() < deadline && !stopping {
        if let Ok(n) = socket.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
        }
    }
    assert!(stopping, "STOPPING=1 on SIGTERM");
    assert!(child.wait().unwrap().success());
}

#[test]
fn stale_consumers_are_removed_but_never_one_with_pending_entries() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    xadd(&mut con, &[("event", "e")]);
    read_as(&mut con, "old-pod-busy", 1);
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(STREAM)
        .arg(GROUP)
        .arg("old-pod-idle")
        .query(&mut con)
        .unwrap();
    wait_consumer_idle(&mut con, "old-pod-idle", Duration::from_millis(1200));
    wait_consumer_idle(&mut con, "old-pod-busy", Duration::from_millis(1200));
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("SOURCE__STALE_CONSUMER_IDLE", "1s"),
            ("DELIVERY__CLAIM_IDLE", "1h"),
        ],
    );
    let mut names = || -> Vec<String> {
        consumers(&mut con)
            .into_iter()
            .map(|(name, _, _)| name)
            .collect()
    };
    wait_until(10 * SECOND, "the idle consumer is removed", || {
        !names().contains(&"old-pod-idle".to_owned())
    });
    relay.assert_logged("removed consumers");
    let names = names();
    assert!(names.contains(&"old-pod-busy".to_owned()), "{names:?}");
    assert!(!names.contains(&"old-pod-idle".to_owned()), "{names:?}");
    assert_eq!(
        pending(&mut con).len(),
        1,
        "the busy consumer keeps its entry"
    );
}

#[test]
fn sighup_applies_the_log_level_and_names_what_needs_a_restart() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "[log]\nlevel = \"info\"\n").unwrap();
    let relay = Relay::start_with_file(&redis, "relay-1", Some(&file), &[]);
    relay.wait_ready(10 * SECOND);
    let mut con = redis.connection();
    xadd(&mut con, &[("event", "quiet")]);
    sub.wait_count(1, 10 * SECOND);
    wait_until(10 * SECOND, "the entry is acknowledged", || {
        pending(&mut con).is_empty()
    });
    assert!(
        !relay.log().contains("batch done"),
        "no debug lines at info"
    );

    std::fs::write(
        &file,
        "[log]\nlevel = \"sio_relay=debug\"\n[source]\nbatch_size = 10\n",
    )
    .unwrap();
    relay.signal("HUP");
    relay.wait_metric(
        r#"config_reloads_total{result="changed"}"#,
        10 * SECOND,
        |n| n == 1.0,
    );
    relay.assert_logged("configuration reloaded");
    relay.assert_logged("take effect only after a restart");
    let log = relay.log();
    assert!(log.contains("log.level"), "{log}");
    assert!(log.contains("source.batch_size"), "{log}");
    xadd(&mut con, &[("event", "loud")]);
    sub.wait_count(2, 10 * SECOND);
    wait_until(10 * SECOND, "the entry is acknowledged", || {
        pending(&mut con).is_empty()
    });
    relay.assert_logged("batch done");

    // A broken file is refused and the running configuration stays.
    std::fs::write(&file, "[log]\nlevel = 5\n[nope]\n").unwrap();
    relay.signal("HUP");
    relay.wait_metric(
        r#"config_reloads_total{result="failed"}"#,
        10 * SECOND,
        |n| n == 1.0,
    );
    relay.assert_logged("configuration reload failed");
    // Still at debug: an entry's batch is still logged.
    xadd(&mut con, &[("event", "still-loud")]);
    sub.wait_count(3, 10 * SECOND);
    wait_until(10 * SECOND, "the entry is acknowledged", || {
        pending(&mut con).is_empty()
    });
    wait_until(2 * SECOND, "the batch is logged at debug", || {
        relay.log().matches("batch done").count() >= 2
    });
}

/// The metric names of docs/03-operating.md ("Health and metrics"): the first column of its metrics
/// table, one entry per series it
/// names (`entries_read_total{source="new"|...}` gives one per source).
/// The metrics of entries with `ack`, which only real clients move (see `client_acks.rs`).
pub(crate) const ACK_METRICS: [&str; 6] = [
    "acks_waiting",
    "ack_requests_total",
    "client_acks_total",
    "ack_latency_seconds",
    "acked_by_clients_total",
    "dead_lettered_total{reason=\"unacknowledged\"}",
];

pub(crate) fn documented_metrics() -> Vec<String> {
    let chapter = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/03-operating.md"));
    let table = chapter
        .split("Metrics, all prefixed `sio_relay_`:")
        .nth(1)
        .expect("the metrics table")
        .split("\n\n")
        .nth(1)
        .unwrap();
    let mut names = Vec::new();
    for row in table.lines().skip(2) {
        let first = row.split(" | ").next().unwrap().trim_start_matches("| ");
        for cell in first.split(", ") {
            let cell = cell.trim_matches('`').replace("\\|", "|");
            match cell.split_once('{') {
                Some((name, labels)) if labels.contains('"') => {
                    let (label, values) = labels.trim_end_matches('}').split_once('=').unwrap();
                    for value in values.split('|') {
                        names.push(format!("{name}{{{label}={value}}}"));
                    }
                }
                Some((name, _)) => names.push(name.to_owned()),
                None => names.push(cell),
            }
        }
    }
    names
}

/// Every metric docs/03-operating.md lists exists and is seen to change, through one relay's life: a dead
/// consumer's entries reclaimed, its own pending recovered, valid and malformed entries, an entry
/// for a namespace nobody listens on (held, then deleted), reading paused (lag), a dead-letter key
/// of the wrong type (Redis refuses), an exhausted dead-letter stream (parked), a server dropped for
/// its output buffer (unconfirmed), the group destroyed, and Redis killed.
#[test]
fn every_metric_in_the_docs_moves() {
    let mut redis = RedisServer::start();
    let mut con = redis.connection();
    let sub = Subscriber::start(&redis, "/");
    // Before the relay: a dead consumer's entries, and this relay's own (a previous life's).
    xadd(&mut con, &[("event", "e"), ("data", "1")]);
    read_as(&mut con, "dead-pod", 1);
    xadd(&mut con, &[("event", "e"), ("data", "2")]);
    read_as(&mut con, "relay-1", 1);
    let settings = [
        ("DELIVERY__CLAIM_IDLE", "1s"),
        ("DELIVERY__CLAIM_INTERVAL", "200ms"),
        ("DELIVERY__RETRY_INTERVAL", "100ms"),
        ("DELIVERY__MAX_HELD", "1"),
        ("SOURCE__BATCH_SIZE", "1"),
        ("REDIS__BACKOFF_MAX", "200ms"),
        // The stand-in server has no clients to wait for.
        ("DELIVERY__RELEASE_WAIT", "0s"),
    ];
    let relay = Relay::start(&redis, "relay-1", &settings);
    let port = relay.http_port();
    let names = documented_metrics();
    let mut seen: std::collections::HashMap<String, Vec<f64>> = Default::default();
    let mut look = || {
        let body = http_get(port, "/metrics").1;
        for name in &names {
            if let Some(value) = reading(&body, name) {
                seen.entry(name.clone()).or_default().push(value);
            }
        }
    };
    relay.wait_ready(10 * SECOND);
    look();
    sub.wait_count(2, 10 * SECOND);
    // Valid and malformed entries.
    xadd(&mut con, &[("event", "e"), ("data", "3")]);
    xadd(&mut con, &[("event", "connect")]);
    wait_until(10 * SECOND, "both are handled", || {
        pending(&mut con).is_empty()
    });
    look();
    // A namespace nobody listens on: held, and reading pauses (max_held 1), so the lag grows.
    let held = xadd(&mut con, &[("event", "e"), ("nsp", "/nobody")]);
    // One read is already on its way when reading pauses; the entry after it waits unread.
    xadd(&mut con, &[("event", "e"), ("data", "4")]);
    xadd(&mut con, &[("event", "e"), ("data", "5")]);
    wait_until(15 * SECOND, "the lag shows", || {
        let body = http_get(port, "/metrics").1;
        reading(&body, "group_lag").is_some_and(|lag| lag >= 1.0)
            && reading(&body, "held_entries") == Some(1.0)
    });
    look();
    let _: usize = redis::Commands::xdel(&mut con, STREAM, &[&held]).unwrap();
    wait_until(10 * SECOND, "the deleted held entry is dropped", || {
        pending(&mut con).is_empty()
    });
    look();
    // A dead-letter key of the wrong type: Redis refuses a batch with a dead letter.
    let _: () = redis::Commands::set(&mut con, DEAD, "oops").unwrap();
    xadd(&mut con, &[("event", "connect")]);
    wait_until(10 * SECOND, "Redis refuses", || {
        reading(&http_get(port, "/metrics").1, "redis_refusing") == Some(1.0)
    });
    look();
    // An exhausted dead-letter stream: the malformed entry is parked.
    exhaust_dead_letter_stream(&mut con);
    wait_until(10 * SECOND, "the entry is parked", || {
        reading(&http_get(port, "/metrics").1, "parked_entries") == Some(1.0)
    });
    look();
    let _: () = redis::Commands::del(&mut con, DEAD).unwrap();
    wait_until(10 * SECOND, "the parked entry is dead-lettered", || {
        pending(&mut con).is_empty()
    });
    look();
    // A server dropped by Redis for its output buffer: the publish is not confirmed.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg("pubsub 4096 0 0")
        .query(&mut con)
        .unwrap();
    let pad = "x".repeat(20_000);
    xadd(&mut con, &[("event", "e"), ("data", &format!("\"{pad}\""))]);
    wait_until(10 * SECOND, "a publish is unconfirmed", || {
        reading(&http_get(port, "/metrics").1, "unconfirmed_total").is_some_and(|n| n >= 1.0)
    });
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg("pubsub 33554432 8388608 60")
        .query(&mut con)
        .unwrap();
    wait_until(10 * SECOND, "delivered", || pending(&mut con).is_empty());
    // The group's gauges are refreshed every 5 s: wait for one that sees nothing pending, or on
    // a loaded machine every look can fall between two refreshes that both saw 2.
    wait_until(10 * SECOND, "the pending gauge sees 0", || {
        reading(&http_get(port, "/metrics").1, "group_pending") == Some(0.0)
    });
    look();
    // The group destroyed.
    destroy_group(&mut con);
    wait_until(10 * SECOND, "the group is re-created", || {
        reading(&http_get(port, "/metrics").1, "group_recreated_total") == Some(1.0)
    });
    look();
    // Redis gone.
    redis.kill();
    wait_until(10 * SECOND, "the relay sees Redis gone", || {
        reading(
            &http_get(port, "/metrics").1,
            "redis_connected{connection=\"writer\"}",
        ) == Some(0.0)
    });
    look();

    for name in &names {
        let values = seen
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in /metrics"));
        // Constant; and seen to move where its cause is staged (a master without its replica,
        // `sentinel.rs`; clients that acknowledge, `client_acks.rs`; `delivery.confirm =
        // "clients"`, `delivered.rs`; a SIGHUP, `sighup_applies_the_log_level_...` above; traces to
        // a collector down or silent, `traces.rs`).
        if name.starts_with("build_info")
            || name.starts_with("config_reloads_total")
            || name == "replicas_short_total"
            || name == "reached_no_client_total"
            || name.starts_with("trace_spans_dropped_total")
            || ACK_METRICS.contains(&name.as_str())
        {
            continue;
        }
        let moved = values.windows(2).any(|w| w[0] != w[1]);
        assert!(moved, "{name} never moved: {values:?}");
    }
}

/// An entry's acknowledgement is counted when its XACK is made, not once the read that waits
/// beside it returns: at a low rate that read blocks for `source.block`, and the end-to-end
/// latency used to gain that much.
#[test]
fn an_acknowledgement_is_counted_when_it_happens() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start(&redis, "relay-1", &[("SOURCE__BLOCK", "20s")]);
    relay.wait_ready(10 * SECOND);
    let port = relay.http_port();
    let mut con = redis.connection();
    xadd(&mut con, &[("event", "one")]);
    sub.wait_count(1, 5 * SECOND);
    wait_until(5 * SECOND, "the entry is acknowledged in Redis", || {
        pending(&mut con).is_empty()
    });
    wait_until(5 * SECOND, "acknowledged_total counts it", || {
        find_metric(
            &http_get(port, "/metrics").1,
            "sio_relay_acknowledged_total",
        ) == Some(1.0)
    });
    let body = http_get(port, "/metrics").1;
    let latency = metric(&body, "sio_relay_end_to_end_latency_seconds_sum");
    assert!(
        latency < 2.0,
        "end-to-end latency {latency} s for one entry"
    );
}
