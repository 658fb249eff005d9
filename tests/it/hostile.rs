//! Hostile input and operators' tools (issue "Bounded resources and hostile input"): what producers
//! send never forges a log line or reaches a terminal raw, and the operator commands say what is
//! wrong in the producer's terms.

use std::time::Duration;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

/// A field name with a newline (a forged log line) and an ANSI escape sequence: the relay's log
/// shows them escaped, and so does `sio-relay dead list`.
#[test]
fn producer_text_never_forges_a_log_line_nor_reaches_a_terminal_raw() {
    let redis = RedisServer::start();
    let relay = Relay::start(&redis, "relay-1", &[]);
    let mut con = redis.connection();
    let forged = "rom\n2020-01-01T00:00:00.000000Z  INFO sio_relay: forged line";
    xadd(
        &mut con,
        &[("event", "e\u{1b}[31mred"), (forged, "lobby\u{1b}[2J")],
    );
    wait_until(10 * SECOND, "the entry is dead-lettered", || {
        dead_letters(&mut con).len() == 1
    });
    relay.wait_log("dead-lettered an entry", 5 * SECOND);
    let log = relay.log();
    assert!(
        !log.lines().any(|l| l.starts_with("2020-01-01")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "a raw escape sequence:\n{log}");

    let out = sio_relay()
        .args(["dead", "list"])
        .env("SIO_RELAY_REDIS__URL", redis.url())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains(r"rom\n2020"), "{text}");
    assert_eq!(
        text.lines().count(),
        2,
        "one header, one fields line: {text:?}"
    );
}

/// `sio-relay monitor | head -1` ends quietly once `head` has its line: a closed pipe is a normal
/// end for a command-line tool.
#[test]
fn monitor_into_a_closed_pipe_exits_zero() {
    let redis = RedisServer::start();
    let script = format!(
        "{} monitor | head -n 1 > /dev/null; echo ${{PIPESTATUS[0]}}",
        binary().display()
    );
    let mut shell = std::process::Command::new("bash")
        .args(["-c", &script])
        .env("SIO_RELAY_REDIS__URL", redis.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut con = redis.connection();
    wait_until(10 * SECOND, "the monitor subscribes", || {
        let patterns: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut con).unwrap();
        patterns == 1
    });
    for _ in 0..3 {
        let _: i64 = redis::Commands::publish(&mut con, "socket.io#/#", "x").unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = std::time::Instant::now() + 10 * SECOND;
    while shell.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the monitor did not end"
        );
        let _: i64 = redis::Commands::publish(&mut con, "socket.io#/#", "x").unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = shell.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}

/// A Redis URL typo says what is wrong with it, and a lone surrogate in `rooms` is named as such.
#[test]
fn errors_say_what_is_wrong_in_the_users_terms() {
    let out = sio_relay()
        .args(["check-config"])
        .env("SIO_RELAY_REDIS__URL", "redis://localhost:99999")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("redis.url") && stderr.contains("invalid port number"),
        "{stderr}"
    );
    assert!(!stderr.contains("InvalidClientConfig"), "{stderr}");

    let redis = RedisServer::start();
    let _relay = Relay::start(&redis, "relay-1", &[]);
    let mut con = redis.connection();
    xadd(&mut con, &[("event", "e"), ("rooms", r#"["\ud800"]"#)]);
    wait_until(10 * SECOND, "the entry is dead-lettered", || {
        dead_letters(&mut con).len() == 1
    });
    let dead = dead_letters(&mut con);
    let error = field(&dead[0].1, "x-dead-error").unwrap();
    assert!(error.contains("half of a UTF-16 surrogate pair"), "{error}");
}
