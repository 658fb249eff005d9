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
    assert_eq!(text.lines().count(), 2, "one header, one fields line: {text:?}");
}
