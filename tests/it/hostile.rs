//! Hostile input and operators' tools (issue "Bounded resources and hostile input"): what producers
//! send never forges a log line or reaches a terminal raw, and the operator commands say what is
//! wrong in the producer's terms.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

/// A field name with a newline (a forged log line), an ANSI escape sequence, and a right-to-left
/// override (U+202E: `invoice<RLO>fdp.exe` reads as `invoiceexe.pdf`): the relay's log shows them
/// escaped, and so does `sio-relay dead list`.
#[test]
fn producer_text_never_forges_a_log_line_nor_reaches_a_terminal_raw() {
    let redis = RedisServer::start();
    let relay = Relay::start(&redis, "relay-1", &[]);
    let mut con = redis.connection();
    let forged = "rom\n2020-01-01T00:00:00.000000Z  INFO sio_relay: forged line\u{202e}";
    xadd(
        &mut con,
        &[
            ("event", "e\u{1b}[31mred"),
            (forged, "lobby\u{1b}[2J"),
            ("x-file", "invoice\u{202e}fdp.exe\u{200b}"),
        ],
    );
    wait_until(10 * SECOND, "the entry is dead-lettered", || {
        dead_letters(&mut con).len() == 1
    });
    relay.wait_metric("dead_lettered_total", 5 * SECOND, |n| n == 1.0);
    relay.assert_logged("dead-lettered an entry");
    let log = relay.log();
    assert!(
        !log.lines().any(|l| l.starts_with("2020-01-01")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "a raw escape sequence:\n{log}");
    assert!(!log.contains('\u{202e}'), "a raw override:\n{log}");

    let out = sio_relay()
        .args(["dead", "list"])
        .env("SIO_RELAY_REDIS__URL", redis.url())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains(r"rom\n2020"), "{text}");
    assert!(
        text.contains(r"x-file=invoice\u{202e}fdp.exe\u{200b}"),
        "{text:?}"
    );
    assert!(!text.contains(['\u{202e}', '\u{200b}']), "{text:?}");
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
    let mut shell = hermetic("bash")
        .args(["-c", &script])
        .process_group(0)
        .env("SIO_RELAY_REDIS__URL", redis.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut con = redis.connection();
    let deadline = std::time::Instant::now() + 30 * SECOND;
    loop {
        let patterns: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut con).unwrap();
        // Broadcasts' and requests' patterns, taken by one PSUBSCRIBE.
        if patterns == 2 {
            break;
        }
        // A poll of the state above, which ends the loop.
        if shell.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
            // The whole group: the monitor holds the stderr pipe open after bash is gone.
            let group = format!("-{}", shell.id());
            let _ = std::process::Command::new("kill")
                .args(["-9", "--", &group])
                .status();
            let out = shell.wait_with_output().unwrap();
            panic!(
                "the monitor never subscribed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..3 {
        let _: i64 = redis::Commands::publish(&mut con, "socket.io#/#", "x").unwrap();
        // Paces the publisher; the loop below waits on the monitor's exit.
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

/// Entries with 80,000 rooms each (1.1 MB, the limits raised for them): validation is linear, the
/// probes answer all along (they run on a thread of their own), and each entry arrives once.
#[test]
fn entries_with_80000_rooms_never_stall_the_probes() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("LIMITS__MAX_ROOMS", "100000"),
            ("LIMITS__MAX_ENTRY_BYTES", "4194304"),
        ],
    );
    let port = relay.http_port();
    relay.wait_ready(10 * SECOND);
    let rooms: Vec<String> = (0..80_000).map(|i| format!("room-{i}")).collect();
    let rooms = serde_json::to_string(&rooms).unwrap();
    let mut con = redis.connection();
    for i in 0..3 {
        xadd(
            &mut con,
            &[("event", "e"), ("rooms", &rooms), ("x-seq", &i.to_string())],
        );
    }
    let mut slowest = Duration::ZERO;
    let started = std::time::Instant::now();
    while sub.messages().len() < 3 {
        assert!(
            started.elapsed() < 120 * SECOND,
            "not delivered in 2 minutes"
        );
        let asked = std::time::Instant::now();
        assert_eq!(http_get(port, "/livez").0, 200);
        slowest = slowest.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        slowest < 2 * SECOND,
        "/livez took {slowest:?} while the relay validated the entries"
    );
    assert_eq!(sub.flush(&redis), 3);
}

/// 400 idle connections to the probe port, with the relay allowed 256 file descriptors: the
/// listener serves at most 64 at once, closes idle ones, backs off on accept errors, and the relay
/// keeps delivering.
#[test]
fn idle_http_connections_never_starve_the_relay() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start_with_file_limit(&redis, "relay-1", 256, &[]);
    let port = relay.http_port();
    relay.wait_ready(10 * SECOND);
    let idle: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(
                &format!("127.0.0.1:{port}").parse().unwrap(),
                Duration::from_millis(200),
            )
            .ok()
        })
        .collect();
    assert!(idle.len() > 64, "{} connections opened", idle.len());
    let mut con = redis.connection();
    for i in 0..10 {
        xadd(&mut con, &[("event", "e"), ("data", &i.to_string())]);
    }
    sub.wait_count(10, 10 * SECOND);
    wait_until(20 * SECOND, "/livez answers again", || {
        http_get(port, "/livez").0 == 200
    });
    // No spin: at most a line per connection (closed for its silence, at debug level), and a
    // handful about accept errors.
    let log = relay.log();
    let accept_errors = log.matches("HTTP accept failed").count();
    assert!(
        log.lines().count() < idle.len() + 50 && accept_errors < 5,
        "{} log lines, {accept_errors} about accept errors:\n{}",
        log.lines().count(),
        &log[..log.len().min(3000)]
    );
    drop(idle);
}

/// Peak resident memory of a process, from /proc (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// The relay's memory is bounded by its limits, not by what producers send: a backlog of 200 KB
/// entries (51 MB), one of 1 MB entries (60 MB), and one entry of 20 MB, under the Kubernetes
/// example's 64 MiB: the 200 KB and 1 MB entries are delivered, once each; the 20 MB one is
/// dead-lettered, the limit named, its fields copied inside Redis; the small entries behind flow.
#[test]
fn memory_stays_bounded_whatever_the_entries_size() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    let mut pipe = redis::pipe();
    let (pad_200k, pad_1m) = ("x".repeat(200_000), "y".repeat(1_000_000));
    let mut n = 0;
    // The first argument is the entry's number, as the ledger reads it.
    let mut add = |pipe: &mut redis::Pipeline, pad: &str| {
        let args = format!(r#"[{n},"{pad}"]"#);
        pipe.xadd(
            STREAM,
            "*",
            &[
                ("event", "n".to_owned()),
                ("args", args),
                ("x-seq", n.to_string()),
            ],
        )
        .ignore();
        n += 1;
    };
    for _ in 0..256 {
        add(&mut pipe, &pad_200k);
    }
    pipe.exec(&mut con).unwrap();
    let mut pipe = redis::pipe();
    for _ in 0..60 {
        add(&mut pipe, &pad_1m);
    }
    add(&mut pipe, &"z".repeat(20_000_000));
    for _ in 0..100 {
        add(&mut pipe, "");
    }
    pipe.exec(&mut con).unwrap();
    let total = n;
    let relay = Relay::start(&redis, "relay-1", &[]);
    wait_until(60 * SECOND, "everything is handled", || {
        pending(&mut con).is_empty()
            && redis::Commands::xlen::<_, usize>(&mut con, DEAD).unwrap() == 1
    });
    let ledger = Ledger::settle(&sub, &redis, total);
    eprintln!(
        "{}",
        ledger.summary("backlog of 200 KB, 1 MB and 20 MB entries")
    );
    ledger.assert_exactly_once();
    assert_eq!(ledger.dead[316], 1, "the 20 MB entry is dead-lettered");
    let dead = dead_letters(&mut con);
    let error = field(&dead[0].1, "x-dead-error").unwrap();
    assert!(
        error.contains("more than limits.max_entry_bytes = 1048576"),
        "{error}"
    );
    assert_eq!(
        field(&dead[0].1, "args").map(str::len),
        Some(20_000_008),
        "its fields kept whole"
    );
    let peak = peak_rss(relay.pid());
    eprintln!("relay peak RSS: {} MiB", peak >> 20);
    assert!(peak < 64 << 20, "the relay peaked at {} MiB", peak >> 20);
}

/// `sio-relay` with `args` and `settings`: its exit status, output, error output and peak resident
/// memory in bytes. The peak is GNU time's (`%M`, from wait4 on the command it forked): a command
/// that has exited has no /proc to read, and the test's own wait4 would count the test process,
/// whose memory a forked child starts with.
fn run_measured(args: &[&str], settings: &[(&str, &str)]) -> (i32, String, String, u64) {
    let time = require("time", "apt-get install time");
    let report = tempfile::NamedTempFile::new().unwrap();
    let wrapper = [
        time.to_string_lossy().into_owned(),
        "-f".into(),
        "%M".into(),
        "-o".into(),
    ]
    .into_iter()
    .chain([report.path().to_string_lossy().into_owned()])
    .collect::<Vec<_>>();
    let mut cmd = sio_relay_under(&wrapper);
    cmd.args(args);
    for (key, value) in settings {
        cmd.env(format!("SIO_RELAY_{key}"), value);
    }
    let out = cmd.output().unwrap();
    let kib: u64 = std::fs::read_to_string(report.path())
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("time wrote the peak in KiB");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        kib * 1024,
    )
}

/// `sio-relay dead list` on two 20 MB dead letters, one with a 20 MB value and one whose fields
/// are packed in 20 MB of `x-dead-fields`, and a small one after them: values are cut inside Redis
/// as the console cuts them, the list says which were cut and how long they were (as text and as
/// JSON), every dead letter is listed, and the command stays under 32 MiB of peak memory.
#[test]
fn dead_list_cuts_20_mb_dead_letters_in_bounded_memory() {
    // The command's own pages (17 MiB for a debug build, most of it the binary) and a page of cut
    // dead letters; reading them whole took 150 MiB.
    const CAP: u64 = 32 << 20;
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let huge = "z".repeat(20_000_000);
    let mut dead = |fields: &[(&str, &[u8])], reason: &str| {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(DEAD).arg("*");
        for (name, value) in fields {
            xadd.arg(*name).arg(*value);
        }
        xadd.arg(&[
            ("x-dead-reason", reason),
            ("x-dead-error", "too large"),
            ("x-dead-id", "1-0"),
            ("x-dead-deliveries", "1"),
        ]);
        xadd.query::<String>(&mut con).unwrap()
    };
    dead(&[("event", b"big"), ("args", huge.as_bytes())], "malformed");
    let packed = rmpv::Value::Array(
        ["event", "packed", "args", &huge]
            .into_iter()
            .map(rmpv::Value::from)
            .collect(),
    );
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &packed).unwrap();
    dead(&[("x-dead-fields", &bytes)], "refused");
    dead(&[("event", b"small")], "expired");
    drop(huge);

    let list = |args: &[&str]| {
        let args: Vec<&str> = ["dead", "list"].iter().chain(args).copied().collect();
        let (code, out, err, peak) = run_measured(&args, &[("REDIS__URL", &redis.url())]);
        eprintln!(
            "{}: {} bytes out, peak RSS {} MiB",
            args.join(" "),
            out.len(),
            peak >> 20
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.len() < 16 << 10, "{} bytes of output", out.len());
        (out, peak)
    };
    let (text, peak) = list(&[]);
    let kept = "z".repeat(1024);
    assert!(
        text.contains(&format!("args={kept}… (cut at 1024 of 20000000 bytes)\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("(cut at 1024 of {} bytes)\n", bytes.len())),
        "the packed fields: {text}"
    );
    assert!(text.contains("    event=small\n"), "{text}");
    assert_eq!(text.lines().count(), 6, "three dead letters: {text}");
    assert!(peak < CAP, "dead list peaked at {} MiB", peak >> 20);

    let (json, peak) = list(&["--json"]);
    let letters: serde_json::Value = serde_json::from_str(&json).unwrap();
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 3, "{json}");
    let args = &letters[0]["fields"][1];
    assert_eq!(args["name"], "args");
    assert_eq!(args["bytes"], 20_000_000);
    assert_eq!(args["truncated"], true);
    assert_eq!(args["value"], kept);
    let packed = &letters[1]["fields"][0];
    assert_eq!(packed["name"], "x-dead-fields", "{}", letters[1]);
    assert_eq!(packed["bytes"], bytes.len());
    assert_eq!(packed["truncated"], true);
    assert_eq!(letters[1]["reason"], "refused");
    assert_eq!(letters[2]["fields"][0]["value"], "small");
    assert!(peak < CAP, "dead list --json peaked at {} MiB", peak >> 20);
}

/// JSON nested deeper than serde_json's own limit (128) is relayed up to `limits.max_json_depth`
/// (here its most, 512) and dead-lettered past it with the limit named; 100,000 levels, which
/// would overflow the stack of anything that recursed through them, are dead-lettered the same
/// way, and the relay goes on.
#[test]
fn json_nested_past_the_limit_is_dead_lettered_and_never_crashes_the_relay() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut relay = Relay::start(&redis, "relay-1", &[("LIMITS__MAX_JSON_DEPTH", "512")]);
    let mut con = redis.connection();
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    for depth in [512, 513, 100_000, 200] {
        let data = nested(depth);
        let seq = depth.to_string();
        xadd(
            &mut con,
            &[("event", "deep"), ("data", &data), ("x-seq", &seq)],
        );
    }
    let got = sub.wait_count(2, 20 * SECOND);
    // Counted in the bytes, after the event name `deep` (a4 "deep"): one fixarray(1) (0x91) per
    // level. Decoding 512 levels into values would recurse past a test thread's stack in a debug
    // build.
    let depth_of = |message: &Message| {
        let after = message
            .payload
            .windows(5)
            .position(|w| w == b"\xa4deep")
            .expect("the event name")
            + 5;
        message.payload[after..]
            .iter()
            .take_while(|&&b| b == 0x91)
            .count()
    };
    assert_eq!(got.iter().map(depth_of).collect::<Vec<_>>(), [512, 200]);
    wait_until(10 * SECOND, "nothing is pending", || {
        pending(&mut con).is_empty()
    });
    let dead = dead_letters(&mut con);
    let seqs: Vec<&str> = dead.iter().filter_map(|(_, f)| field(f, "x-seq")).collect();
    assert_eq!(seqs, ["513", "100000"]);
    for (_, fields) in &dead {
        assert_eq!(field(fields, "x-dead-reason"), Some("malformed"));
        let error = field(fields, "x-dead-error").unwrap();
        assert!(
            error.contains("`data` is nested deeper than limits.max_json_depth = 512 levels"),
            "{error}"
        );
    }
    assert!(relay.is_running());
}
