//! The operator subcommands against real Redis and real Socket.IO servers: `send` (and `--direct`),
//! `monitor`, `status`, `entry` and `dead list | replay | drop`, with their output and exit
//! statuses.

use std::process::Output;
use std::time::Duration;

use crate::common::*;
use redis::Commands;

const SECOND: Duration = Duration::from_secs(1);

fn cli(redis: &RedisServer, args: &[&str]) -> Output {
    sio_relay()
        .args(args)
        .env("SIO_RELAY_REDIS__URL", redis.url())
        .env("SIO_RELAY_SOURCE__CONSUMER", "cli")
        .env_remove("RUST_LOG")
        .output()
        .expect("run sio-relay")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn send_appends_a_validated_entry_and_refuses_invalid_ones() {
    let redis = RedisServer::start();
    let out = cli(
        &redis,
        &[
            "send",
            "--room",
            "lobby",
            "--room",
            "vip",
            "--except",
            "banned",
            "--nsp",
            "/admin",
            "--ttl",
            "30s",
            "promo",
            "1",
            r#"{"a":true}"#,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    let mut con = redis.connection();
    let rows: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(STREAM)
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    assert_eq!(rows[0].0, id);
    assert_eq!(
        rows[0].1,
        [
            ("event", "promo"),
            ("args", r#"[1,{"a":true}]"#),
            ("rooms", r#"["lobby","vip"]"#),
            ("except", r#"["banned"]"#),
            ("nsp", "/admin"),
            ("ttl", "30s"),
        ]
        .map(|(f, v)| (f.to_owned(), v.to_owned()))
    );

    for (args, problem) in [
        (&["send", "connect"][..], "reserved"),
        (&["send", "e", "{not json"][..], "not valid JSON"),
        (
            &["send", "--nsp", "a#b", "e"][..],
            "namespace `/a#b` contains `#`",
        ),
        (
            &["send", "--disconnect"][..],
            "needs `room` or `rooms`, or `all`",
        ),
        (
            &["send", "--join", "g", "--all", "e"][..],
            "`event` and `join` cannot both be present",
        ),
        (
            &["send", "--ttl", "30", "e"][..],
            "`ttl` must be a duration between 1ms and 7days",
        ),
    ] {
        let out = cli(&redis, args);
        assert_eq!(out.status.code(), Some(65), "{args:?}");
        assert!(stderr(&out).contains(problem), "{args:?}: {}", stderr(&out));
    }
    let len: usize = con.xlen(STREAM).unwrap();
    assert_eq!(len, 1, "nothing invalid reached the stream");
}

#[test]
fn send_direct_reports_how_many_servers_got_it() {
    let redis = RedisServer::start();
    // A monitor is no Socket.IO server: nothing is published to it alone.
    let monitor = Subscriber::pattern_only(&redis, "socket.io#*");
    let out = cli(&redis, &["send", "--direct", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no Socket.IO server listens"),
        "{}",
        stderr(&out)
    );
    assert_eq!(monitor.flush(&redis), 0, "nothing was published");

    let a = SocketIoServer::start(&redis);
    let b = SocketIoServer::start(&redis);
    wait_servers(&redis, 2);
    let clients = Node::start(
        "clients.js",
        &[&serde_json::json!([
            {"name": "a", "url": a.url("/"), "rooms": ["lobby"]},
            {"name": "b", "url": b.url("/"), "rooms": []},
        ])
        .to_string()],
    );
    clients.wait_line(r#""ready":true"#, 20 * SECOND);
    let out = cli(
        &redis,
        &["send", "--direct", "--room", "lobby", "hello", r#""world""#],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "published to 2 Socket.IO server(s)\n");
    clients.wait_line(r#""event":"hello""#, 10 * SECOND);
    // A broadcast after it: once both clients have it, anything else of `hello` would be there.
    let out = cli(&redis, &["send", "--direct", "after"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(10 * SECOND, "both clients get `after`", || {
        clients
            .lines()
            .iter()
            .filter(|l| l.contains(r#""event":"after""#))
            .count()
            == 2
    });
    let got: Vec<String> = clients
        .lines()
        .into_iter()
        .filter(|l| l.contains("hello"))
        .collect();
    assert_eq!(got, [r#"{"client":"a","event":"hello","args":["world"]}"#]);
}

#[test]
fn monitor_shows_packets_decoded_and_undecodable_ones_in_hex() {
    let redis = RedisServer::start();
    let (monitor, ready) = start_monitor(&redis, 2, &[]);
    assert!(ready.contains("monitoring socket.io#*"), "{ready}");
    let _server = Subscriber::start(&redis, "/");
    let out = cli(
        &redis,
        &[
            "send",
            "--direct",
            "--room",
            "r1",
            "chat",
            r#"{"text":"hi"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut con = redis.connection();
    let _: i64 = con
        .publish("socket.io#/#", &b"\x93\xa1x\xc0\xc0"[..])
        .unwrap();
    let out = monitor.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["channel"], "socket.io#/#r1#");
    assert_eq!(lines[0]["packet"]["event"], "chat");
    assert_eq!(lines[0]["packet"]["args"][0]["text"], "hi");
    assert_eq!(lines[0]["packet"]["rooms"][0], "r1");
    assert_eq!(lines[1]["hex"], "93a178c0c0");
    assert!(lines[1]["error"]
        .as_str()
        .unwrap()
        .contains("packet is not a map"));
}

#[test]
fn status_reports_the_cluster_and_fails_when_unhealthy() {
    let redis = RedisServer::start();
    let out = cli(&redis, &["status"]);
    assert_eq!(out.status.code(), Some(1), "no group, no server: unhealthy");
    let text = stdout(&out);
    assert!(text.contains("reachable, version 7"), "{text}");
    assert!(text.contains("does not exist"), "{text}");

    let _server_a = SocketIoServer::start(&redis);
    let _server_b = SocketIoServer::start(&redis);
    wait_servers(&redis, 2);
    let relay = Relay::start(&redis, "relay-1", &[]);
    relay.wait_ready(10 * SECOND);
    let mut con = redis.connection();
    xadd(&mut con, &[("event", "e")]);
    xadd(&mut con, &[("event", "connect")]);
    wait_until(10 * SECOND, "one dead letter", || {
        let n: usize = con.xlen(DEAD).unwrap();
        n == 1
    });
    wait_until(10 * SECOND, "status is healthy", || {
        cli(&redis, &["status"]).status.success()
    });
    let text = stdout(&cli(&redis, &["status"]));
    assert!(text.contains("/: 2 server(s)"), "{text}");
    assert!(text.contains("/admin: 2 server(s)"), "{text}");
    assert!(text.contains("sio-relay: 2 entries"), "{text}");
    assert!(text.contains("lag 0, pending 0"), "{text}");
    assert!(text.contains("relay-1: 0 pending"), "{text}");
    assert!(text.contains("sio-relay:dead: 1 entry"), "{text}");
    assert!(text.contains("Healthy       yes"), "{text}");

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&cli(&redis, &["status", "--json"]))).unwrap();
    assert_eq!(json["healthy"], true);
    assert_eq!(json["streams"][0]["group"]["lag"], 0);
    assert_eq!(json["streams"][0]["dead_letters"], 1);

    let mut gone = RedisServer::start();
    gone.kill();
    let out = cli(&gone, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["redis"]["reachable"], false);
}

#[test]
fn dead_letters_can_be_listed_replayed_and_dropped() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    for fields in [
        &[
            ("event", "first"),
            ("x-dead-reason", "expired"),
            ("x-dead-error", "too old"),
            ("x-dead-id", "1-0"),
            ("x-dead-deliveries", "1"),
        ][..],
        &[("event", "second"), ("x-dead-reason", "expired")][..],
        &[("event", "third"), ("x-dead-reason", "malformed")][..],
    ] {
        let _: String = con.xadd(DEAD, "*", fields).unwrap();
    }
    let out = cli(&redis, &["dead", "list", "--limit", "2"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("expired  too old  (source entry 1-0, delivered 1x)"),
        "{text}"
    );
    assert!(text.contains("    event=first\n"), "{text}");
    assert!(
        text.contains("event=second") && !text.contains("third"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&cli(&redis, &["dead", "list", "--json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);

    let first = json[0]["id"].as_str().unwrap().to_owned();
    let out = cli(&redis, &["dead", "replay", &first]);
    assert!(
        stdout(&out).contains("replayed 1 dead letter(s)"),
        "{}",
        stdout(&out)
    );
    let len: usize = con.xlen(STREAM).unwrap();
    assert_eq!(len, 1);
    let out = cli(&redis, &["dead", "replay", "--all"]);
    assert!(stdout(&out).contains("replayed 2 dead letter(s)"));
    let (len, dead): (usize, usize) = (con.xlen(STREAM).unwrap(), con.xlen(DEAD).unwrap());
    assert_eq!((len, dead), (3, 0));

    let _: String = con.xadd(DEAD, "*", &[("event", "x")]).unwrap();
    let _: String = con.xadd(DEAD, "*", &[("event", "y")]).unwrap();
    let out = cli(&redis, &["dead", "drop", "--all"]);
    assert_eq!(stdout(&out), "dropped 2 dead letter(s)\n");
    let out = cli(&redis, &["dead", "replay"]);
    assert_eq!(out.status.code(), Some(2), "IDs or --all are required");
}

/// `dead list` reads a page of dead letters at a time: a limit past one page lists the oldest ones
/// in order, each once, and stops at the limit or at the end of the stream.
#[test]
fn dead_list_pages_through_the_oldest_dead_letters() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let mut pipe = redis::pipe();
    for i in 0..250 {
        pipe.xadd(
            DEAD,
            "*",
            &[
                ("event", format!("e{i}")),
                ("x-dead-reason", "expired".into()),
            ],
        )
        .ignore();
    }
    pipe.exec(&mut con).unwrap();
    let stored: Vec<String> = stored_dead_letters(&mut con)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let listed = |limit: &str| -> Vec<String> {
        let out = cli(&redis, &["dead", "list", "--json", "--limit", limit]);
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed("150"), stored[..150]);
    assert_eq!(listed("200"), stored[..200]);
    assert_eq!(listed("1000"), stored);
    let text = stdout(&cli(&redis, &["dead", "list", "--limit", "101"]));
    assert_eq!(text.lines().count(), 202, "{text}");
    assert!(text.ends_with("    event=e100\n"), "{text}");
}

/// A consumer of the group is named by whoever read with it (any client the ACL lets read the
/// stream): `status` shows its name escaped, as it shows namespaces, so it can neither send escape
/// sequences to the terminal nor read backwards.
#[test]
fn status_shows_consumer_names_escaped() {
    let redis = RedisServer::start();
    let relay = Relay::start(&redis, "relay-1", &[]);
    relay.wait_ready(10 * SECOND);
    let mut con = redis.connection();
    let name = "evil\u{1b}[2J\u{202e}1-yaler";
    let created: i64 = redis::cmd("XGROUP")
        .arg(&["CREATECONSUMER", STREAM, GROUP, name])
        .query(&mut con)
        .unwrap();
    assert_eq!(created, 1);
    let text = stdout(&cli(&redis, &["status"]));
    assert!(
        text.contains(r"evil\u{1b}[2J\u{202e}1-yaler: 0 pending"),
        "{text:?}"
    );
    assert!(!text.contains(['\u{1b}', '\u{202e}']), "{text:?}");
}

/// `sio-relay entry <ID> --json`.
fn whereabouts(redis: &RedisServer, id: &str) -> serde_json::Value {
    let out = cli(redis, &["entry", id, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// `entry` says what became of an entry from Redis alone, in each state: before any relay, not
/// read yet, delivered, held where no server listens, dead-lettered (with its reason and error),
/// an ID the stream does not hold, and acknowledged past the dead letters it looks at.
#[test]
fn entry_says_what_became_of_each_entry() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let early = xadd(&mut con, &[("event", "early")]);
    assert_eq!(whereabouts(&redis, &early)["state"], "no_group");
    let out = cli(&redis, &["entry", "banana"]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a stream entry ID"),
        "{}",
        stderr(&out)
    );

    let _server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let relay = Relay::start(&redis, "relay-1", &[]);
    relay.wait_ready(30 * SECOND);
    let delivered = xadd(&mut con, &[("event", "paid"), ("data", "42")]);
    let held = xadd(&mut con, &[("event", "e"), ("nsp", "/nobody")]);
    let dead = xadd(&mut con, &[("event", "e"), ("rom", "typo")]);
    wait_until(
        20 * SECOND,
        "one delivered, one held, one dead-lettered",
        || {
            held_record(&mut con) == 1
                && dead_letters(&mut con).len() == 1
                && pending(&mut con).len() == 1
        },
    );
    for id in [&early, &delivered] {
        let found = whereabouts(&redis, id);
        assert_eq!(found["state"], "delivered", "{found}");
    }
    let found = whereabouts(&redis, &delivered);
    assert_eq!(found["stream"], STREAM);
    assert_eq!(
        found["fields"],
        serde_json::json!([
            {"name": "event", "value": "paid", "bytes": 4, "truncated": false},
            {"name": "data", "value": "42", "bytes": 2, "truncated": false}
        ])
    );
    let found = whereabouts(&redis, &held);
    assert_eq!(found["state"], "held", "{found}");
    assert_eq!(found["consumer"], "relay-1");
    let found = whereabouts(&redis, &dead);
    assert_eq!(found["state"], "dead_lettered", "{found}");
    assert_eq!(found["dead_letter"]["reason"], "malformed");
    assert!(
        found["dead_letter"]["error"]
            .as_str()
            .unwrap()
            .contains("rom"),
        "{found}"
    );
    let text = stdout(&cli(&redis, &["entry", &dead]));
    assert!(
        text.contains(&format!(
            "{dead} in stream {STREAM} (group {GROUP}): dead-lettered as malformed"
        )) && text.contains("sio-relay dead replay"),
        "{text}"
    );
    assert_eq!(whereabouts(&redis, "1-1")["state"], "gone");

    drop(relay);
    let unread = xadd(&mut con, &[("event", "later")]);
    let found = whereabouts(&redis, &unread);
    assert_eq!(found["state"], "unread", "{found}");
    assert_eq!(found["lag"], 1);
    let text = stdout(&cli(&redis, &["entry", &unread]));
    assert!(text.contains("not read yet"), "{text}");
    assert!(text.contains("  event = later"), "{text}");

    // The dead letters after an entry are looked at a page at a time, 10,000 at most: a dead
    // letter of `delivered` past the first page is found; past 10,000 the answer is only that
    // `early` was acknowledged.
    let fake = |con: &mut redis::Connection, n: usize, source: &str| {
        let mut pipe = redis::pipe();
        for _ in 0..n {
            pipe.xadd(
                DEAD,
                "*",
                &[("x-dead-id", source), ("x-dead-reason", "expired")],
            )
            .ignore();
        }
        pipe.exec(con).unwrap();
    };
    fake(&mut con, 150, "1-0");
    fake(&mut con, 1, &delivered);
    fake(&mut con, 9_900, "1-0");
    let found = whereabouts(&redis, &delivered);
    assert_eq!(found["state"], "dead_lettered", "{found}");
    assert_eq!(whereabouts(&redis, &early)["state"], "acknowledged");
}

/// `send --wait` appends, then says what became of the entry, and exits 0 only when it was
/// delivered: delivered to a listening namespace; dead-lettered `expired` when its `ttl` ended
/// while held where nobody listens; still held when the wait ends first.
#[test]
fn send_waits_for_what_becomes_of_the_entry() {
    let redis = RedisServer::start();
    let _server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let relay = Relay::start(&redis, "relay-1", &[]);
    relay.wait_ready(30 * SECOND);

    let out = cli(&redis, &["send", "--wait", "20s", "paid", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    let id = said.split(' ').next().unwrap().to_owned();
    assert!(
        said.contains(&format!(
            "{id} in stream {STREAM} (group {GROUP}): delivered"
        )),
        "{said}"
    );

    let out = cli(
        &redis,
        &[
            "send", "--wait", "20s", "--nsp", "/nobody", "--ttl", "1s", "late",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("dead-lettered as expired"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("was appended but not delivered within 20s"),
        "{}",
        stderr(&out)
    );

    let out = cli(
        &redis,
        &["send", "--wait", "1s", "--nsp", "/nobody", "waiting"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains(": held (relay-1"), "{}", stdout(&out));

    let out = cli(&redis, &["send", "--wait", "1s", "--direct", "x"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses --wait with --direct"
    );
    let mut con = redis.connection();
    assert_eq!(con.xlen::<_, usize>(STREAM).unwrap(), 3);
}
