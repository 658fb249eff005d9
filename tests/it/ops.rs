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
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[("HTTP__LISTEN", &listen), ("REDIS__BACKOFF_MAX", "500ms")],
    );
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
        let (_, body) = http_get(port, "/metrics");
        body.contains("sio_relay_acknowledged_total 2")
    });
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&body, "sio_relay_entries_read_total{source=\"new\"}"),
        2.0
    );
    assert_eq!(metric(&body, "sio_relay_published_total"), 1.0);
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
        body.contains("sio_relay_group_pending 0") && body.contains("sio_relay_group_lag 0")
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
    assert!(http_get(port, "/metrics")
        .1
        .contains("sio_relay_redis_connected{connection=\"reader\"} 0"));
    redis.restart();
    wait_until(10 * SECOND, "/readyz says ready again", || {
        http_get(port, "/readyz").0 == 200
    });
    drop(relay);
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
    std::thread::sleep(Duration::from_millis(1200));
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("SOURCE__STALE_CONSUMER_IDLE", "1s"),
            ("DELIVERY__CLAIM_IDLE", "1h"),
        ],
    );
    relay.wait_log("removed consumers", 10 * SECOND);
    let mut consumers = || -> Vec<String> {
        let rows: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(STREAM)
            .arg(GROUP)
            .query(&mut con)
            .unwrap();
        rows.iter()
            .map(|c| redis::FromRedisValue::from_redis_value(c[1].clone()).unwrap())
            .collect()
    };
    let names = consumers();
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
    let _sub = Subscriber::start(&redis, "/");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "[log]\nlevel = \"info\"\n").unwrap();
    let relay = Relay::start_with_file(&redis, "relay-1", Some(&file), &[]);
    relay.wait_ready(10 * SECOND);
    let mut con = redis.connection();
    xadd(&mut con, &[("event", "quiet")]);
    std::thread::sleep(Duration::from_millis(300));
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
    relay.wait_log("configuration reloaded", 10 * SECOND);
    relay.wait_log("take effect only after a restart", SECOND);
    let log = relay.log();
    assert!(log.contains("log.level"), "{log}");
    assert!(log.contains("source.batch_size"), "{log}");
    xadd(&mut con, &[("event", "loud")]);
    relay.wait_log("batch done", 10 * SECOND);

    // A broken file is refused and the running configuration stays.
    std::fs::write(&file, "[log]\nlevel = 5\n[nope]\n").unwrap();
    relay.signal("HUP");
    relay.wait_log("configuration reload failed", 10 * SECOND);
}
