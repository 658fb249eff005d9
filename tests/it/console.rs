//! The operator console (`http.console = true`), in headless Chromium as an operator uses it: the
//! live view shows what `sio-relay status --json` shows for the same Redis, and a dead letter
//! replayed from the page reaches a real Socket.IO client. Changes without the token, or from
//! another site, are refused, over plain HTTP as an attacker would send them.

use std::path::PathBuf;
use std::time::Duration;

use redis::Commands;
use serde_json::{json, Value};

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);
const TOKEN: &str = "console-token-for-the-tests";

/// Chromium on pages of the console, one JSON step at a time (tests/e2e/browser.js).
struct Browser {
    node: Node,
    steps: u64,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let pages = json!([{ "url": url, "ready": "body[data-loaded]" }]);
        Browser {
            node: browser(&pages),
            steps: 0,
        }
    }

    /// Runs one step; its answer.
    fn step(&mut self, step: Value) -> Value {
        self.steps += 1;
        let n = self.steps;
        let mut step = step;
        step["n"] = n.into();
        step["page"] = 0.into();
        self.node.send(&step.to_string());
        let mut answer = None;
        wait_until(30 * SECOND, &format!("the browser does {step}"), || {
            answer = self
                .node
                .lines()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["done"] == n);
            answer.is_some()
        });
        let answer = answer.unwrap();
        assert!(
            answer.get("error").is_none(),
            "{step}: {answer}\npage errors: {:?}",
            self.page_errors()
        );
        answer
    }

    fn text(&mut self, selector: &str) -> String {
        let answer = self.step(json!({"do": "text", "selector": selector}));
        answer["text"].as_str().unwrap_or("").trim().to_owned()
    }

    fn click(&mut self, selector: &str) {
        self.step(json!({"do": "click", "selector": selector}));
    }

    fn wait(&mut self, selector: &str) {
        self.step(json!({"do": "wait", "selector": selector}));
    }

    fn page_errors(&self) -> Vec<String> {
        self.node
            .lines()
            .into_iter()
            .filter(|l| l.contains("pageerror"))
            .collect()
    }

    /// A screenshot of the page as `name` in `RELAY_TEST_SCREENSHOTS` (the docs' are made with
    /// `RELAY_TEST_SCREENSHOTS=docs`), else in the target directory.
    fn screenshot(&mut self, name: &str) {
        let dir = std::env::var("RELAY_TEST_SCREENSHOTS")
            .unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_owned());
        let path: PathBuf = std::fs::canonicalize(&dir)
            .expect("RELAY_TEST_SCREENSHOTS names a directory")
            .join(name);
        self.step(json!({"do": "screenshot", "path": path, "width": 1200, "height": 800}));
        let png = std::fs::read(&path).expect("the screenshot was written");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{name}");
    }
}

/// The relay's `status --json` for `redis`.
fn status_json(redis: &RedisServer) -> Value {
    let out = sio_relay()
        .args(["status", "--json"])
        .env("SIO_RELAY_REDIS__URL", redis.url())
        .output()
        .expect("run sio-relay status");
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

fn add_dead_letter(con: &mut redis::Connection, reason: &str, fields: &[(&str, &str)]) -> String {
    let mut all = fields.to_vec();
    all.extend([
        ("x-dead-reason", reason),
        ("x-dead-error", "older than delivery.max_age"),
        ("x-dead-id", "1-0"),
        ("x-dead-deliveries", "1"),
    ]);
    con.xadd(DEAD, "*", &all).unwrap()
}

/// A relay with its console and token (and `env`), a Socket.IO server, and a client in room
/// `user:42` of it. Bind `_server` when taking it apart: a field left out would be dropped, and
/// the server stopped, at once.
struct Operated {
    redis: RedisServer,
    _server: SocketIoServer,
    clients: Clients,
    relay: Relay,
}

impl Operated {
    fn start(env: &[(&str, &str)]) -> Operated {
        let redis = RedisServer::start();
        let server = SocketIoServer::start(&redis);
        wait_servers(&redis, 1);
        let clients = Clients::connect(&[("user-42", server.url("/"), &["user:42"])]);
        let mut env = env.to_vec();
        env.extend([("HTTP__CONSOLE", "true"), ("HTTP__CONSOLE_TOKEN", TOKEN)]);
        let relay = Relay::start(&redis, "relay-1", &env);
        relay.wait_ready(30 * SECOND);
        Operated {
            redis,
            _server: server,
            clients,
            relay,
        }
    }
}

#[test]
fn the_console_shows_the_flow_and_replays_a_dead_letter_to_a_client() {
    let Operated {
        redis,
        clients,
        relay,
        _server,
    } = Operated::start(&[]);
    let mut con = redis.connection();
    for i in 0..3 {
        let data = i.to_string();
        xadd(
            &mut con,
            &[("room", "user:42"), ("event", "order"), ("data", &data)],
        );
    }
    xadd(&mut con, &[("rom", "user:42"), ("event", "typo")]);
    clients.wait_events("user-42", 3, 20 * SECOND);
    wait_until(10 * SECOND, "the flow settles", || {
        pending(&mut con).is_empty() && dead_letters(&mut con).len() == 1
    });
    add_dead_letter(
        &mut con,
        "expired",
        &[
            ("room", "user:42"),
            ("event", "replayed"),
            ("data", "\"back\""),
        ],
    );

    // The live view shows what `status` shows.
    let status = status_json(&redis);
    let stream = &status["streams"][0];
    assert_eq!(stream["length"], 4, "{status}");
    assert_eq!(stream["dead_letters"], 2, "{status}");
    let url = format!("http://127.0.0.1:{}/", relay.http_port());
    let mut browser = Browser::open(&url);
    let row = format!("tr[data-stream='{STREAM}']");
    let expected = [
        ("length", stream["length"].to_string()),
        ("lag", stream["group"]["lag"].to_string()),
        ("pending", stream["group"]["pending"].to_string()),
        ("dead_letters", stream["dead_letters"].to_string()),
    ];
    wait_until(15 * SECOND, "the page shows the status", || {
        browser.text(&format!("{row} [data-field=dead_letters]")) == expected[3].1
    });
    for (field, value) in &expected {
        assert_eq!(
            &browser.text(&format!("{row} [data-field={field}]")),
            value,
            "{field}"
        );
    }
    assert_eq!(
        browser.text("tr[data-nsp='/'] [data-field=servers]"),
        status["namespaces"][0]["servers"].to_string()
    );
    assert!(status["namespaces"][0]["nsp"] == "/", "{status}");
    assert!(
        !browser
            .text("tr[data-consumer='relay-1'] [data-field=idle]")
            .is_empty(),
        "the relay's consumer is listed"
    );
    assert_eq!(browser.text("#redis-state"), "connected");
    // Samples every 2 s: a few of them for the chart, drawn on the page (its legend shows a rate
    // once two samples make an interval).
    let port = relay.http_port();
    wait_until(20 * SECOND, "the chart has a few samples", || {
        let (_, body) = http_request(port, "GET /console/state", &[], "");
        let state: Value = serde_json::from_str(&body).unwrap_or_default();
        state["history"].as_array().is_some_and(|h| h.len() >= 3)
            && !browser.text("#legend-rates").contains('–')
    });
    browser.screenshot("console-live.png");
    for width in [375, 1200] {
        let widths = browser.step(json!({"do": "widths", "width": width}));
        assert_eq!(widths["page"], widths["window"], "at {width} px: {widths}");
    }

    // The dead letters, replayed and dropped from the page.
    browser.click("#tab-dead");
    browser.wait("body[data-dead-loaded] .dead-letter[data-reason=expired]");
    let errors = browser.step(json!({"do": "texts", "selector": ".dead-letter .error"}));
    let errors: Vec<&str> = errors["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("unknown field `rom`")),
        "{errors:?}"
    );
    browser.screenshot("console-dead.png");
    let widths = browser.step(json!({"do": "widths", "width": 375}));
    assert_eq!(widths["page"], widths["window"], "on a phone: {widths}");
    browser.step(json!({"do": "widths", "width": 1200}));
    // Without the token the page's replay is refused, and nothing moves.
    browser.click(".dead-letter[data-reason=expired] button.replay");
    browser.wait("#message[data-outcome=error]");
    let refusal = browser.text("#message");
    assert!(refusal.contains("token"), "{refusal}");
    assert_eq!(con.xlen::<_, usize>(DEAD).unwrap(), 2);
    browser.wait("body[data-dead-loaded] .dead-letter[data-reason=expired]");
    browser.step(json!({"do": "fill", "selector": "#token", "value": TOKEN}));
    browser.click(".dead-letter[data-reason=expired] button.replay");
    browser.wait("#message[data-outcome=ok]");
    clients.wait_events("user-42", 4, 20 * SECOND);
    assert_eq!(
        clients.events_of("user-42").last().unwrap(),
        &("replayed".to_owned(), json!(["back"]))
    );
    browser.wait("body[data-dead-loaded]");

    // A selection of two.
    for data in ["\"two\"", "\"three\""] {
        add_dead_letter(
            &mut con,
            "expired",
            &[("room", "user:42"), ("event", "replayed"), ("data", data)],
        );
    }
    browser.click("#refresh");
    browser.wait("body[data-dead-loaded] .dead-letter[data-reason=expired]");
    for nth in [0, 1] {
        browser.click(&format!(
            ".dead-letter[data-reason=expired] input.select >> nth={nth}"
        ));
    }
    browser.click("#replay-selected");
    browser.wait("#message[data-outcome=ok]");
    clients.wait_events("user-42", 6, 20 * SECOND);
    browser.wait("body[data-dead-loaded]");
    assert_eq!(
        con.xlen::<_, usize>(DEAD).unwrap(),
        1,
        "the malformed one is left"
    );

    // By time: nothing was dead-lettered before 2020.
    browser.step(json!({"do": "fill", "selector": "#before-time", "value": "2020-01-01T00:00"}));
    browser.click("#refresh");
    browser.wait("body[data-dead-loaded] #no-dead");
    browser.step(json!({"do": "fill", "selector": "#before-time", "value": ""}));
    browser.click("#refresh");
    browser.wait("body[data-dead-loaded] .dead-letter[data-reason=malformed]");

    browser.step(json!({"do": "select", "selector": "#reason", "value": "malformed"}));
    browser.wait("body[data-dead-loaded] .dead-letter[data-reason=malformed]");
    browser.click("#drop-reason");
    wait_until(10 * SECOND, "the malformed dead letter is dropped", || {
        con.xlen::<_, usize>(DEAD).unwrap() == 0
    });
    browser.wait("#no-dead");

    // Per entry: 3 produced and 3 replayed entries delivered once each, the malformed one
    // dead-lettered then dropped, nothing pending, nothing lost or doubled.
    wait_until(10 * SECOND, "the replayed entry is acknowledged", || {
        pending(&mut con).is_empty()
    });
    let events = clients.events_of("user-42");
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        ["order", "order", "order", "replayed", "replayed", "replayed"]
    );
    let mut replayed: Vec<String> = events[3..].iter().map(|(_, a)| a[0].to_string()).collect();
    replayed.sort();
    assert_eq!(replayed, ["\"back\"", "\"three\"", "\"two\""]);
    assert_eq!(con.xlen::<_, usize>(STREAM).unwrap(), 7);
    assert!(
        browser.page_errors().is_empty(),
        "{:?}",
        browser.page_errors()
    );
}

/// The send form appends what `sio-relay send` would: validated against the configured limits
/// first (a refusal names the field and appends nothing), with a lifetime that the relay enforces,
/// and follows what becomes of it (`GET /console/entry`, what `sio-relay entry` says).
/// Per entry: the one sent to a listening namespace is delivered once, the one held where nobody
/// listens is dead-lettered `expired` when its `ttl` ends, the refused ones never reach the stream.
#[test]
fn the_console_sends_entries_with_a_lifetime() {
    let Operated {
        redis,
        clients,
        relay,
        _server,
    } = Operated::start(&[("LIMITS__MAX_JSON_DEPTH", "3")]);
    let mut con = redis.connection();
    let url = format!("http://127.0.0.1:{}/#send", relay.http_port());
    let mut browser = Browser::open(&url);
    let fill = |browser: &mut Browser, selector: &str, value: &str| {
        browser.step(json!({"do": "fill", "selector": selector, "value": value}));
    };
    let sent = |browser: &mut Browser| -> String {
        browser.click("#send-submit");
        browser.wait("#send-message[data-outcome]");
        browser.text("#send-message")
    };
    browser.wait("#send-submit:not([disabled])");
    fill(&mut browser, "#send-event", "paid");
    fill(&mut browser, "#send-data", r#"{"order": 42}"#);
    fill(&mut browser, "#send-rooms", "user:42\n\n");
    fill(&mut browser, "#send-ttl", "30s");

    // Without the token, refused by the relay and said on the page.
    let refusal = sent(&mut browser);
    assert!(refusal.contains("token"), "{refusal}");
    assert_eq!(con.xlen::<_, usize>(STREAM).unwrap(), 0);

    fill(&mut browser, "#token", TOKEN);
    let appended = sent(&mut browser);
    browser.wait("#send-message[data-outcome=ok]");
    // The page follows it until it is delivered.
    browser.wait("#send-state[data-state=delivered]");
    clients.wait_events("user-42", 1, 20 * SECOND);
    assert_eq!(
        clients.events_of("user-42"),
        [("paid".to_owned(), json!([{"order": 42}]))]
    );
    let entries: Vec<(String, Vec<(String, String)>)> = con.xrange(STREAM, "-", "+").unwrap();
    assert_eq!(entries.len(), 1);
    let (id, fields) = &entries[0];
    assert!(
        appended.contains(id.as_str()) && appended.contains(STREAM),
        "{appended}"
    );
    assert_eq!(
        fields,
        &[
            ("event", "paid"),
            ("data", r#"{"order": 42}"#),
            ("room", "user:42"),
            ("ttl", "30s")
        ]
        .map(|(f, v)| (f.to_owned(), v.to_owned()))
    );

    // Refused as the relay would dead-letter them: the field is named, nothing is appended.
    for (selector, value, expected) in [
        (
            "#send-ttl",
            "30d",
            "`ttl` must be a duration between 1ms and 7days",
        ),
        (
            "#send-data",
            "[[[[1]]]]",
            "nested deeper than limits.max_json_depth = 3",
        ),
    ] {
        fill(&mut browser, "#send-ttl", "30s");
        fill(&mut browser, "#send-data", "1");
        fill(&mut browser, selector, value);
        let refusal = sent(&mut browser);
        browser.wait("#send-message[data-outcome=error]");
        assert!(refusal.contains(expected), "{value}: {refusal}");
    }
    assert_eq!(con.xlen::<_, usize>(STREAM).unwrap(), 1);

    // Where nobody listens the entry is held, and dead-lettered when its lifetime ends.
    fill(&mut browser, "#send-data", "");
    fill(&mut browser, "#send-nsp", "/nobody");
    fill(&mut browser, "#send-ttl", "1s");
    let appended = sent(&mut browser);
    browser.wait("#send-message[data-outcome=ok]");
    browser.wait("#send-state[data-state=held]");
    browser.screenshot("console-send.png");
    let widths = browser.step(json!({"do": "widths", "width": 375}));
    assert_eq!(widths["page"], widths["window"], "on a phone: {widths}");
    wait_until(20 * SECOND, "the held entry expires", || {
        dead_letters(&mut con).len() == 1
    });
    let (_, letter) = dead_letters(&mut con).remove(0);
    let source = field(&letter, "x-dead-id").unwrap().to_owned();
    assert!(appended.contains(&source), "{appended}");
    assert_eq!(field(&letter, "x-dead-reason"), Some("expired"));
    assert_eq!(field(&letter, "ttl"), Some("1s"));
    browser.wait("#send-state[data-state=dead_lettered]");
    let said = browser.text("#send-state");
    assert!(said.contains("dead-lettered as expired"), "{said}");
    // Any entry, by its ID.
    fill(&mut browser, "#find-id", id);
    browser.click("#find-submit");
    browser.wait("#send-state[data-state=delivered]");
    browser.click("#tab-dead");
    browser.wait("body[data-dead-loaded] .dead-letter[data-reason=expired]");

    // Per entry: one delivered once, one dead-lettered, nothing pending or doubled.
    wait_until(10 * SECOND, "both entries left the group", || {
        pending(&mut con).is_empty()
    });
    assert_eq!(clients.events_of("user-42").len(), 1);
    assert_eq!(con.xlen::<_, usize>(STREAM).unwrap(), 2);
    assert!(
        browser.page_errors().is_empty(),
        "{:?}",
        browser.page_errors()
    );
}

/// What producers write is shown as `sio-relay dead list` shows it: a field name with a
/// right-to-left override (U+202E turns `rom<RLO>txt.exe` into what reads as `romexe.txt`), and
/// every other character the CLI escapes (control, format, line and paragraph separators), reach
/// the page escaped, exactly as `commands::printable` writes them, in the dead letter's fields and
/// error and in a held namespace of the live view; letters, marks and emoji stay as they are.
#[test]
fn the_page_escapes_what_the_cli_escapes() {
    use sio_relay::commands::printable;
    let redis = RedisServer::start();
    let relay = Relay::start(&redis, "relay-1", &[("HTTP__CONSOLE", "true")]);
    relay.wait_ready(30 * SECOND);
    let mut con = redis.connection();
    // Every character the CLI's rule escapes, 48 to a value: under the page's 1 KiB cut.
    let escaped: Vec<char> = (0..=u32::from(char::MAX))
        .filter_map(char::from_u32)
        .filter(|c| printable(&c.to_string()) != c.to_string())
        .collect();
    assert!(escaped.contains(&'\u{202e}') && escaped.contains(&'\u{200b}'));
    let chunks: Vec<(String, String)> = escaped
        .chunks(48)
        .enumerate()
        .map(|(i, chunk)| {
            let value: String = chunk.iter().flat_map(|&c| ['·', c]).collect();
            (format!("x-all-{i}"), value)
        })
        .collect();
    let spoofed = "rom\u{202e}txt.exe";
    let mut fields = vec![
        ("event", "invoice"),
        (spoofed, "lobby"),
        ("x-kept", "नमस्ते e\u{301} 🙂 a\u{a0}b"),
    ];
    fields.extend(chunks.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    xadd(&mut con, &fields);
    // Nobody listens on this namespace: its entry is held, and the live view names it.
    let nsp = "/admin\u{202e}nimda";
    xadd(&mut con, &[("event", "e"), ("nsp", nsp)]);
    wait_until(10 * SECOND, "the entry is dead-lettered", || {
        dead_letters(&mut con).len() == 1
    });
    let (_, stored) = dead_letters(&mut con).remove(0);
    let error = field(&stored, "x-dead-error").unwrap().to_owned();
    assert!(error.contains(spoofed), "{error}");
    let producers: Vec<&(String, String)> = stored
        .iter()
        .filter(|(name, _)| !name.starts_with("x-dead-"))
        .collect();

    let url = format!("http://127.0.0.1:{}/", relay.http_port());
    let mut browser = Browser::open(&url);
    let held = "#held-table tr[data-held-nsp] [data-field=nsp]";
    browser.wait(held);
    assert_eq!(browser.text(held), printable(nsp));
    browser.click("#tab-dead");
    browser.wait("body[data-dead-loaded] .dead-letter[data-reason=malformed]");
    let texts = |browser: &mut Browser, selector: &str| -> Vec<String> {
        let answer = browser.step(json!({"do": "texts", "selector": selector}));
        answer["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    };
    let cli = |text: &str| printable(text).into_owned();
    assert_eq!(
        texts(&mut browser, ".dead-letter .field .name"),
        producers.iter().map(|(n, _)| cli(n)).collect::<Vec<_>>()
    );
    assert_eq!(
        texts(&mut browser, ".dead-letter .field .value"),
        producers.iter().map(|(_, v)| cli(v)).collect::<Vec<_>>()
    );
    assert_eq!(texts(&mut browser, ".dead-letter .error"), [cli(&error)]);
    let card = texts(&mut browser, ".dead-letter").remove(0);
    assert_eq!(printable(&card), card, "nothing left to escape in {card:?}");
    assert!(card.contains(r"rom\u{202e}txt.exe"), "{card}");
    assert!(card.contains("नमस्ते e\u{301} 🙂 a\u{a0}b"), "{card}");
    assert!(
        browser.page_errors().is_empty(),
        "{:?}",
        browser.page_errors()
    );
}

#[test]
fn changes_without_the_token_or_from_another_site_are_refused() {
    let password = "s3cret-redis-password";
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "relay",
                "on",
                &format!(">{password}"),
                "~*",
                "&*",
                "+@all",
            ][..],
        )
        .query(&mut con)
        .unwrap();
    let url = format!("redis://relay:{password}@127.0.0.1:{}", redis.port);
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("REDIS__URL", &url),
            ("HTTP__CONSOLE", "true"),
            ("HTTP__CONSOLE_TOKEN", TOKEN),
        ],
    );
    relay.wait_ready(30 * SECOND);
    let dead = add_dead_letter(&mut con, "expired", &[("event", "e")]);
    let port = relay.http_port();
    let bearer = format!("Bearer {TOKEN}");
    let body = json!({ "ids": [dead] }).to_string();
    let json = ("Content-Type", "application/json");
    for (what, headers, status) in [
        ("no token", vec![json], 401),
        (
            "a wrong token",
            vec![json, ("Authorization", "Bearer console-token-for-the-test")],
            401,
        ),
        (
            "another site's page",
            vec![
                json,
                ("Authorization", &bearer),
                ("Origin", "http://evil.example"),
            ],
            403,
        ),
        (
            "a cross-site fetch",
            vec![
                json,
                ("Authorization", &bearer),
                ("Sec-Fetch-Site", "cross-site"),
            ],
            403,
        ),
        (
            "a form post",
            vec![
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", &bearer),
            ],
            415,
        ),
    ] {
        for path in [
            "/console/dead/replay",
            "/console/dead/drop",
            "/console/send",
        ] {
            let (got, answer) = http_request(port, &format!("POST {path}"), &headers, &body);
            assert_eq!(got, status, "{what} on {path}: {answer}");
            assert!(answer.contains("\"error\""), "{what}: {answer}");
        }
    }
    for path in ["/console/dead/drop", "/console/send"] {
        let (got, _) = http_request(port, &format!("GET {path}"), &[], "");
        assert_eq!(got, 405, "GET {path} changes nothing");
    }
    assert_eq!(
        con.xlen::<_, usize>(DEAD).unwrap(),
        1,
        "nothing was touched"
    );
    assert_eq!(con.xlen::<_, usize>(STREAM).unwrap(), 0);

    // A page whose name was made to resolve to the relay (DNS rebinding) reads nothing.
    let rebound = format!("evil.example:{port}");
    for path in ["/", "/console/state", "/console/dead"] {
        let (got, answer) = http_request(port, &format!("GET {path}"), &[("Host", &rebound)], "");
        assert_eq!(got, 403, "{path}: {answer}");
        assert!(answer.contains("http.console_hosts"), "{answer}");
    }

    // Nothing secret in what the console shows.
    let (got, state) = http_request(port, "GET /console/state", &[], "");
    assert_eq!(got, 200, "{state}");
    assert!(
        !state.contains(password) && !state.contains(TOKEN),
        "{state}"
    );
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["writable"], true);
    assert_eq!(state["status"]["streams"][0]["dead_letters"], 1);

    // The same request with the token does it: the refusals were the token's and the site's.
    let (got, answer) = http_request(
        port,
        "POST /console/dead/replay",
        &[json, ("Authorization", &bearer)],
        &body,
    );
    assert_eq!(got, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["moved"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(con.xlen::<_, usize>(DEAD).unwrap(), 0);
    drop(relay);

    // Without a token the console is read-only, whatever is sent.
    let relay = Relay::start(
        &redis,
        "relay-2",
        &[("REDIS__URL", &url), ("HTTP__CONSOLE", "true")],
    );
    relay.wait_ready(30 * SECOND);
    let dead = add_dead_letter(&mut con, "expired", &[("event", "e")]);
    let (got, answer) = http_request(
        relay.http_port(),
        "POST /console/dead/drop",
        &[json, ("Authorization", &bearer)],
        &json!({ "ids": [dead] }).to_string(),
    );
    assert_eq!(got, 403, "{answer}");
    assert!(answer.contains("read-only"), "{answer}");
    assert_eq!(con.xlen::<_, usize>(DEAD).unwrap(), 1);
    let (got, answer) = http_request(
        relay.http_port(),
        "POST /console/send",
        &[json, ("Authorization", &bearer)],
        &json!({ "event": "e" }).to_string(),
    );
    assert_eq!(got, 403, "{answer}");
    assert!(answer.contains("read-only"), "{answer}");
    let (_, state) = http_request(relay.http_port(), "GET /console/state", &[], "");
    assert!(state.contains("\"writable\":false"), "{state}");
    drop(relay);

    // A name the console is told about is answered.
    let relay = Relay::start(
        &redis,
        "relay-3",
        &[
            ("REDIS__URL", &url),
            ("HTTP__CONSOLE", "true"),
            ("HTTP__CONSOLE_HOSTS", "relay.internal,console.internal"),
        ],
    );
    relay.wait_ready(30 * SECOND);
    let named = format!("console.internal:{}", relay.http_port());
    let (got, _) = http_request(
        relay.http_port(),
        "GET /console/state",
        &[("Host", &named)],
        "",
    );
    assert_eq!(got, 200);
    drop(relay);

    // Off by default: the listener serves the probes only.
    let relay = Relay::start(&redis, "relay-4", &[("REDIS__URL", &url)]);
    relay.wait_ready(30 * SECOND);
    assert_eq!(http_request(relay.http_port(), "GET /", &[], "").0, 404);
    assert_eq!(
        http_request(relay.http_port(), "GET /console/state", &[], "").0,
        404
    );
}

#[test]
fn dead_letter_pages_are_bounded_filtered_and_paged() {
    let redis = RedisServer::start();
    let relay = Relay::start(&redis, "relay-1", &[("HTTP__CONSOLE", "true")]);
    relay.wait_ready(30 * SECOND);
    let mut con = redis.connection();
    let huge = "x".repeat(3_000_000);
    add_dead_letter(&mut con, "malformed", &[("event", "e"), ("data", &huge)]);
    let names: Vec<String> = (0..150).map(|i| format!("x-{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    add_dead_letter(&mut con, "malformed", &many);
    for _ in 0..60 {
        add_dead_letter(&mut con, "expired", &[("event", "e")]);
    }
    let port = relay.http_port();
    let get = |query: &str| {
        let (status, body) = http_request(port, &format!("GET /console/dead{query}"), &[], "");
        assert_eq!(status, 200, "{query}: {body}");
        assert!(
            body.len() < 256 << 10,
            "{query}: a page of {} bytes",
            body.len()
        );
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let ids = |page: &Value| -> Vec<String> {
        page["letters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect()
    };

    // Newest first, 50 a page, then the rest: every dead letter once.
    let first = get("");
    assert_eq!(ids(&first).len(), 50);
    let next = first["next_before"].as_str().unwrap().to_owned();
    let second = get(&format!("?before={next}"));
    assert_eq!(ids(&second).len(), 12);
    assert!(second["next_before"].is_null(), "{}", second["next_before"]);
    let mut all = ids(&first);
    all.extend(ids(&second));
    let mut stored: Vec<String> = stored_dead_letters(&mut con)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    stored.reverse();
    assert_eq!(all, stored);

    // By reason; values cut to what a page shows, whatever the dead letter holds.
    let malformed = get("?reason=malformed");
    let letters = malformed["letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{malformed}");
    assert!(malformed["next_before"].is_null());
    let many_fields = &letters[0];
    assert_eq!(many_fields["fields"].as_array().unwrap().len(), 100);
    assert_eq!(many_fields["fields_not_shown"], 50);
    let data = &letters[1]["fields"][1];
    assert_eq!(data["name"], "data");
    assert_eq!(data["bytes"], 3_000_000);
    assert_eq!(data["truncated"], true);
    assert_eq!(data["value"].as_str().unwrap().len(), 1024);
    assert_eq!(letters[1]["reason"], "malformed");
    assert_eq!(letters[1]["error"], "older than delivery.max_age");

    for (query, problem) in [
        ("?before=yesterday", "before"),
        ("?reasons=expired", "unknown parameter"),
        ("?stream=elsewhere", "not a dead-letter stream"),
        ("?limit=many", "limit"),
    ] {
        let (status, body) = http_request(port, &format!("GET /console/dead{query}"), &[], "");
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(problem), "{query}: {body}");
    }
}

/// A look at Redis every second while a page is open costs its commands, not new connections
/// (each a TCP and maybe a TLS handshake); after Redis restarts the console connects again.
#[test]
fn the_console_keeps_its_connections_and_reconnects() {
    let mut redis = RedisServer::start();
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[("HTTP__CONSOLE", "true"), ("REDIS__BACKOFF_MAX", "200ms")],
    );
    relay.wait_ready(30 * SECOND);
    let port = relay.http_port();
    let state = || {
        let (status, body) = http_request(port, "GET /console/state", &[], "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let connections = |redis: &RedisServer| {
        let info: redis::InfoDict = redis::cmd("INFO")
            .arg("stats")
            .query(&mut redis.connection())
            .unwrap();
        info.get::<u64>("total_connections_received").unwrap()
    };
    assert_eq!(state()["status"]["redis"]["reachable"], true);
    let before = connections(&redis);
    for _ in 0..3 {
        // Past the console's STATUS_TTL (1 s), so that each call is a new look at Redis: the
        // looks are paced, nothing is waited for.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(state()["status"]["redis"]["reachable"], true);
    }
    // The connection that counts is the only new one.
    assert_eq!(
        connections(&redis),
        before + 1,
        "three looks, no new connection"
    );

    redis.restart();
    wait_until(10 * SECOND, "the console sees Redis again", || {
        // A new look at Redis each time (past STATUS_TTL).
        std::thread::sleep(Duration::from_millis(1100));
        state()["status"]["redis"]["reachable"] == true
    });
}
