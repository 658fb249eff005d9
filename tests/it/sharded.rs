//! The sharded adapter (`createShardedAdapter`, SPUBLISH/SSUBSCRIBE) on a standalone Redis 7, with
//! real servers and clients: servers counted as the adapter counts them (monitors left out), held
//! when too few listen, `monitor`, `status` and `send --direct` in its terms, and an adapter that
//! does not match the servers' named instead of "no server listens". (Rooms, namespaces and
//! `except` in every subscription mode are in `e2e.rs`.)

use std::process::Output;
use std::time::Duration;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

const SHARDED: Adapter = Adapter::Sharded("dynamic");

fn cli(redis: &RedisServer, adapter: &Adapter, args: &[&str]) -> Output {
    let mut cmd = sio_relay();
    cmd.args(args)
        .env("SIO_RELAY_REDIS__URL", redis.url())
        .env("SIO_RELAY_SOURCE__CONSUMER", "cli");
    for (key, value) in adapter.settings() {
        cmd.env(format!("SIO_RELAY_{key}"), value);
    }
    cmd.output().expect("run sio-relay")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Each client's `n` arguments, in order of arrival.
fn numbers(clients: &Clients, client: &str) -> Vec<u64> {
    clients
        .events_of(client)
        .iter()
        .map(|(_, args)| args[0].as_u64().unwrap())
        .collect()
}

/// `sio-relay monitor` subscribes to the namespace channel, which is where the sharded adapter's
/// servers are counted: it must not count as one. With no server up, entries are held (and shown
/// nowhere); once one is, each reaches its client once, and the monitor shows them decoded.
#[test]
fn a_sharded_monitor_is_not_counted_as_a_server_and_shows_the_packets() {
    let redis = RedisServer::start();
    let total = 20;
    let (monitor, ready) = start_monitor(&redis, total, &[("TARGET__ADAPTER", "sharded")]);
    assert!(ready.contains("monitoring socket.io#/#"), "{ready}");
    let _relay = Relay::start(&redis, "relay-1", &SHARDED.settings());
    let mut con = redis.connection();
    add_numbered(&mut con, 0..total);
    wait_held(&mut con, total);
    assert_eq!(held_record(&mut con), total, "held, recorded");

    let server = SocketIoServer::start_with(&redis.url(), &SHARDED);
    let clients = Clients::connect(&[("c", server.url("/"), &[])]);
    clients.wait_events("c", total, 20 * SECOND);
    wait_until(10 * SECOND, "everything is acknowledged", || {
        pending(&mut con).is_empty()
    });
    assert_eq!(
        numbers(&clients, "c"),
        (0..total as u64).collect::<Vec<_>>(),
        "each once, in order"
    );
    let out = monitor.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown.len(), total);
    assert_eq!(shown[0]["channel"], "socket.io#/#");
    assert_eq!(shown[0]["packet"]["event"], "n");
    assert_eq!(shown[0]["packet"]["args"][0], 0);
}

/// With `min_receivers = 2`, one sharded server is too few: entries wait until the second one
/// listens, then reach the clients of both, once.
#[test]
fn sharded_servers_are_counted_for_min_receivers() {
    let redis = RedisServer::start();
    let a = SocketIoServer::start_with(&redis.url(), &SHARDED);
    let mut settings = SHARDED.settings();
    settings.push(("DELIVERY__MIN_RECEIVERS", "2"));
    settings.push(("DELIVERY__RETRY_INTERVAL", "100ms"));
    let relay = Relay::start(&redis, "relay-1", &settings);
    let mut con = redis.connection();
    add_numbered(&mut con, 0..10);
    wait_held(&mut con, 10);
    relay.assert_logged("too few Socket.IO servers listen");
    let b = SocketIoServer::start_with(&redis.url(), &SHARDED);
    let clients = Clients::connect(&[("a", a.url("/"), &[]), ("b", b.url("/"), &[])]);
    for client in ["a", "b"] {
        clients.wait_events(client, 10, 20 * SECOND);
    }
    wait_until(10 * SECOND, "everything is acknowledged", || {
        pending(&mut con).is_empty()
    });
    for client in ["a", "b"] {
        assert_eq!(
            numbers(&clients, client),
            (0..10).collect::<Vec<_>>(),
            "{client}"
        );
    }
}

/// A relay configured for one adapter facing servers of the other says which one they use, in its
/// log and in `status`, and holds its entries (acknowledging them would lose them).
#[test]
fn an_adapter_that_does_not_match_the_servers_is_named() {
    for (relay_adapter, servers, hint) in [
        (
            Adapter::Classic,
            SHARDED,
            "with the sharded adapter (createShardedAdapter, SSUBSCRIBE), which this relay does not publish to: set target.adapter = \"sharded\"",
        ),
        (
            SHARDED,
            Adapter::Classic,
            "with the classic adapter (createAdapter, PSUBSCRIBE), which this relay does not publish to: set target.adapter = \"classic\"",
        ),
    ] {
        let redis = RedisServer::start();
        let _server = SocketIoServer::start_with(&redis.url(), &servers);
        wait_adapter_servers(&redis, &servers, 1);
        let relay = Relay::start(&redis, "relay-1", &relay_adapter.settings());
        let mut con = redis.connection();
        add_numbered(&mut con, 0..3);
        wait_held(&mut con, 3);
        relay.assert_logged(hint);
        assert_eq!(pending(&mut con).len(), 3, "held, not acknowledged");
        let out = cli(&redis, &relay_adapter, &["status"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stdout).contains(hint), "{}", text(&out.stdout));
    }
}

/// `send --direct` counts sharded servers and SPUBLISHes what they read; with only classic servers
/// listening, it publishes nothing and says why.
#[test]
fn send_direct_speaks_the_sharded_adapter() {
    let redis = RedisServer::start();
    let classic = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let out = cli(&redis, &SHARDED, &["send", "--direct", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("set target.adapter = \"classic\""),
        "{}",
        text(&out.stderr)
    );
    drop(classic);

    let server = SocketIoServer::start_with(&redis.url(), &SHARDED);
    let clients = Clients::connect(&[
        ("lobby", server.url("/"), &["lobby"]),
        ("other", server.url("/"), &[]),
    ]);
    let out = cli(
        &redis,
        &SHARDED,
        &["send", "--direct", "--room", "lobby", "hello", r#""world""#],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "published to 1 Socket.IO server(s)\n");
    clients.wait_events("lobby", 1, 10 * SECOND);
    let out = cli(&redis, &SHARDED, &["send", "--direct", "after"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    clients.wait_events("other", 1, 10 * SECOND);
    clients.wait_events("lobby", 2, 10 * SECOND);
    assert_eq!(
        clients.events_of("lobby"),
        [
            ("hello".to_owned(), serde_json::json!(["world"])),
            ("after".to_owned(), serde_json::json!([]))
        ]
    );
    assert_eq!(
        clients.events_of("other"),
        [("after".to_owned(), serde_json::json!([]))]
    );
}
