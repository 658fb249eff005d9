//! The README's quickstart, as a newcomer runs it: the relay, the demo (`examples/demo/start`: a real
//! Socket.IO server with the Redis adapter and its page) and the quickstart's `redis-cli XADD`, with
//! the page open in headless Chromium. What the test reads is what a person would see: the DOM.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

/// The demo, started with its own script as the README says, on a free port.
fn start_demo(redis: &RedisServer) -> (Node, String) {
    start_demo_on(redis, free_port())
}

/// The demo on `port`.
fn start_demo_on(redis: &RedisServer, port: u16) -> (Node, String) {
    require("npm", "install npm (Debian/Ubuntu: apt-get install npm)");
    let mut command = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo/start"));
    command
        .env("PORT", port.to_string())
        .env("REDIS_URL", redis.url());
    // The first start runs `npm ci` from the demo's lockfile: one start at a time, or two tests'
    // first starts would both install into one node_modules (and fail, or wait on each other).
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = STARTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let demo = Node::spawn(command);
    let url = format!("http://127.0.0.1:{port}");
    demo.wait_line(&format!("sio-relay demo: open {url}"), 120 * SECOND);
    (demo, url)
}

/// A line of the README's Quickstart section that starts with `prefix`.
fn quickstart_line(prefix: &str) -> String {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    let section = readme
        .split("\n## Quickstart\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a Quickstart section");
    section
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("the Quickstart has a line starting with {prefix:?}"))
        .to_owned()
}

/// Runs a `redis-cli ...` command line as written, against `redis`.
fn run_redis_cli(redis: &RedisServer, line: &str) -> String {
    let port = redis.url().rsplit(':').next().unwrap().to_owned();
    let line = line.replacen("redis-cli ", &format!("redis-cli -p {port} "), 1);
    let out = hermetic("sh")
        .arg("-c")
        .arg(&line)
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{line}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// What browser.js printed for page `page`: each `.event` element's dataset and text.
fn shown_on(browser: &Node, page: u64) -> Vec<(String, String)> {
    browser
        .lines()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["page"] == page && v["data"].is_object())
        .map(|v| {
            (
                v["data"]["event"].as_str().unwrap().to_owned(),
                v["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn wait_shown(browser: &Node, page: u64, event: &str) {
    wait_until(15 * SECOND, &format!("page {page} shows {event}"), || {
        shown_on(browser, page).iter().any(|(e, _)| e == event)
    });
}

#[test]
fn the_quickstart_xadd_appears_in_the_demo_page_in_a_real_browser() {
    let redis = RedisServer::start();
    let _relay = Relay::start(&redis, "relay-1", &[]);
    let (_demo, url) = start_demo(&redis);

    // Page 0 as it opens (namespace "/", room "demo"); page 1 chooses /admin and two rooms, one of
    // them the number 42, in the form, as a person would.
    let pages = json!([
        {"url": url, "ready": "body[data-joined]"},
        {
            "url": url,
            "fill": {"#nsp": "/admin", "#rooms": "vip,#42"},
            "click": "#connect",
            "ready": "body[data-joined^='/admin ']"
        },
    ]);
    let mut browser = browser(&pages);

    // The page shows where it is and the command that reaches it.
    browser.send("text 1 #joined-rooms");
    browser.send("text 1 #command");
    wait_until(10 * SECOND, "the page's texts", || {
        browser
            .lines()
            .iter()
            .filter(|l| l.contains("selector"))
            .count()
            == 2
    });
    let texts: Vec<Value> = browser
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("selector").is_some())
        .collect();
    let rooms = texts[0]["text"].as_str().unwrap();
    assert!(rooms.contains("vip") && rooms.contains("#42"), "{rooms}");
    let command = texts[1]["text"].as_str().unwrap().to_owned();
    assert_eq!(
        command,
        "redis-cli XADD sio-relay '*' nsp /admin room vip event chat data '{\"text\":\"Welcome!\"}'"
    );

    // The quickstart's line, exactly as the README gives it, and the line the page shows.
    let id = run_redis_cli(&redis, &quickstart_line("redis-cli XADD"));
    assert!(id.contains('-'), "XADD printed an ID: {id}");
    wait_shown(&browser, 0, "chat");
    // The screenshot for the README, of the page as the quickstart leaves it (its one `chat`):
    // RELAY_TEST_SCREENSHOTS=docs writes it there.
    let dir = std::env::var("RELAY_TEST_SCREENSHOTS")
        .unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_owned());
    // Absolute: the browser script runs in another directory.
    let path = std::fs::canonicalize(&dir)
        .expect("RELAY_TEST_SCREENSHOTS names a directory")
        .join("demo.png");
    browser.send(&format!("screenshot 0 {}", path.display()));
    browser.wait_line("\"screenshot\"", 20 * SECOND);
    let png = std::fs::read(&path).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    run_redis_cli(&redis, &command);
    wait_shown(&browser, 1, "chat");

    // Rooms and namespaces select who sees what; bytes show as bytes.
    let mut con = redis.connection();
    xadd(&mut con, &[("room", "other"), ("event", "not-for-you")]);
    xadd(
        &mut con,
        &[
            ("nsp", "/admin"),
            ("room", "other"),
            ("event", "not-for-you"),
        ],
    );
    xadd(
        &mut con,
        &[
            ("nsp", "/admin"),
            ("rooms", "[42]"),
            ("event", "table"),
            ("data", "\"open\""),
        ],
    );
    xadd(
        &mut con,
        &[
            ("room", "demo"),
            ("event", "avatar"),
            ("data", r#"{"body":{"$binary":"3q2+7w=="}}"#),
        ],
    );
    xadd(&mut con, &[("room", "demo"), ("event", "last")]);
    xadd(
        &mut con,
        &[("nsp", "/admin"), ("room", "vip"), ("event", "last")],
    );
    wait_shown(&browser, 0, "last");
    wait_shown(&browser, 1, "last");

    let page0 = shown_on(&browser, 0);
    let page1 = shown_on(&browser, 1);
    let events =
        |shown: &[(String, String)]| shown.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>();
    assert_eq!(events(&page0), ["chat", "avatar", "last"], "{page0:?}");
    assert_eq!(events(&page1), ["chat", "table", "last"], "{page1:?}");
    assert!(page0[0].1.contains(r#"{"text":"Welcome!"}"#), "{page0:?}");
    assert!(page0[0].1.contains("on /"), "{page0:?}");
    assert!(page0[1].1.contains("<4 bytes: deadbeef>"), "{page0:?}");
    assert!(
        page1[1].1.contains("\"open\"") && page1[1].1.contains("on /admin"),
        "{page1:?}"
    );
    assert!(
        !browser.lines().iter().any(|l| l.contains("pageerror")),
        "{:?}",
        browser.lines()
    );
}

/// The README's outage story: the demo's server stopped, an entry produced, the server started
/// again. The page says it is reconnecting (not an error) while the server is away, and shows the
/// entry once it is back, above the line that marks the reconnection: the relay held it, then gave
/// the page `delivery.release_wait` (its default) to reconnect.
#[test]
fn the_demo_page_says_it_is_reconnecting_in_an_outage_and_then_shows_what_came_meanwhile() {
    let redis = RedisServer::start();
    let _relay = Relay::start(&redis, "relay-1", &[]);
    let port = free_port();
    let (mut demo, url) = start_demo_on(&redis, port);
    let mut browser = browser(&json!([{"url": url, "ready": "body[data-joined]"}]));
    let mut step = 0;
    let mut wait_for = |browser: &mut Node, selector: &str| {
        step += 1;
        let request = json!({"n": step, "page": 0, "do": "wait", "selector": selector});
        browser.send(&request.to_string());
        let done = format!("{{\"done\":{step}");
        browser.wait_line(&done, 20 * SECOND);
        let answer = browser
            .lines()
            .into_iter()
            .find(|l| l.starts_with(&done))
            .unwrap();
        assert!(!answer.contains("error"), "{selector}: {answer}");
    };

    demo.kill();
    wait_for(&mut browser, "body[data-status=reconnecting]");
    let mut con = redis.connection();
    xadd(&mut con, &[("room", "demo"), ("event", "missed")]);
    let (_demo, _) = start_demo_on(&redis, port);
    wait_for(&mut browser, "body[data-status=connected]");
    wait_until(30 * SECOND, "the page shows what came meanwhile", || {
        shown_on(&browser, 0).iter().any(|(e, _)| e == "missed")
    });
    // Newest first: the entry, then the line that marks the reconnection.
    let request = json!({"n": 100, "page": 0, "do": "texts", "selector": "#events li"});
    browser.send(&request.to_string());
    browser.wait_line("{\"done\":100", 20 * SECOND);
    let answer = browser
        .lines()
        .into_iter()
        .find(|l| l.starts_with("{\"done\":100"))
        .unwrap();
    let texts: Value = serde_json::from_str(&answer).unwrap();
    let texts = texts["texts"].as_array().expect("texts").clone();
    assert!(
        texts.len() == 2
            && texts[0].as_str().unwrap().starts_with("missed")
            && texts[1].as_str().unwrap().starts_with("reconnected at"),
        "{texts:?}"
    );
}
