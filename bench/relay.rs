//! The benchmark: sio-relay against the Node.js relay users would write instead, and against
//! Redis's own ceiling, all measured in one run. `cargo bench --bench relay`
//! (docs/07-benchmark.md).
//!
//! A real `redis-server` is started on a free port (pinned to CPU 0 when `taskset` exists); each relay
//! under test runs as its own process (pinned to CPU 1); a subscriber stands in for the Socket.IO
//! servers (subscribed to the request channel and the broadcast pattern, like an adapter), and
//! timestamps what it receives.
//!
//! 1. Drain: a backlog of N entries (default 200,000, about 100 bytes, 100 rooms) is in the stream
//!    before the relay starts; throughput = N / time until the subscriber has them all.
//! 2. Ceiling: Redis's CPU time during sio-relay's drain, per entry: the rate at which Redis itself
//!    would be saturated by this workload.
//! 3. Latency: entries XADDed at a steady rate (default 10,000/s for 5 s), each carrying its send
//!    time; XADD → received by the subscriber, p50 / p99 / p99.9.
//! 4. Peak RSS of each relay process (VmHWM).
//! 5. Big entries: a backlog of entries at sio-relay's default `limits.max_entry_bytes` (1 MiB
//!    each, default 128 of them) drained by each relay, with its peak RSS: what bounds memory.
//! 6. Configurations: sio-relay's drain with traces exported (to an OTLP receiver in this process
//!    that decodes and discards them), with the sharded, streams and python-socketio targets, and
//!    with `redis.wait_replicas = 1` and a replica, each against the default drained right before it.
//! 7. Redis Cluster: three primaries (no replicas, all on CPU 0) read through 1, 2 and 3 partitions
//!    (`source.streams`, one per primary, entries spread by sio-relay's partition rule): drain, CPU
//!    per entry of the relay, of all nodes and of the busiest one, and latency, next to the same
//!    entries PUBLISHed by the bench on the same nodes without a relay (the cluster bus's share).
//!
//! Results go to `bench/results.md` (a table) and `bench/results.svg` (a chart), and to stdout.
//! Environment: `BENCH_ENTRIES`, `BENCH_RATE`, `BENCH_SECONDS`, `BENCH_BIG_ENTRIES`;
//! `BENCH_OTHER_RELAY=<path of another sio-relay build>` adds `BENCH_AB_ROUNDS` (3) drains of that
//! build, each right after one of this build, to the configurations (an A/B of a change in the same
//! run).

/// The integration tests' kit: Redis servers and clusters, npm, the relay's command line.
#[path = "../tests/it/common/mod.rs"]
#[allow(unused_imports)] // the kit's re-exports the bench does not use
mod common;

use common::{Cluster, RedisServer};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ROOMS: usize = 100;

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let entries = env_number("BENCH_ENTRIES", 200_000);
    let rate = env_number("BENCH_RATE", 10_000);
    let seconds = env_number("BENCH_SECONDS", 5);
    let big_entries = env_number("BENCH_BIG_ENTRIES", 128);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    common::npm_install(&root.join("bench/node-baseline"));

    let redis = pinned_redis(RedisServer::start());
    let place = Place::standalone(&redis);
    let subscriber = Subscriber::start(&redis);
    if std::env::var_os("BENCH_AB_ONLY").is_some() {
        // Only the alternated drains of this build and BENCH_OTHER_RELAY: minutes less per A/B,
        // for finding which change cost what. Nothing is written.
        print!(
            "{}",
            variants_report(&ab(&place, &subscriber, entries), entries)
        );
        return;
    }
    let mut results = Vec::new();
    for relay in [RelayKind::SioRelay, RelayKind::NodeBaseline] {
        eprintln!("== {}: draining {entries} entries", relay.name());
        let backlog = drain(&place, &subscriber, relay, entries, SMALL);
        eprintln!("== {}: {rate} entries/s for {seconds} s", relay.name());
        let latency = steady(&place, &subscriber, relay, rate, seconds);
        eprintln!(
            "== {}: draining {big_entries} entries of 1 MiB",
            relay.name()
        );
        let big = drain(&place, &subscriber, relay, big_entries, BIG);
        results.push(Result {
            relay,
            drain: backlog,
            latency,
            big,
        });
    }
    let variants = variants(&redis, &subscriber, entries);
    let partitions = partitions(entries, rate, seconds);
    let mut report = report(&results, entries, rate, seconds);
    report.push_str(&big_report(&results, big_entries));
    report.push_str(&variants_report(&variants, entries));
    report.push_str(&partitions_report(&partitions, &results[0], entries, rate));
    print!("{report}");
    std::fs::write(root.join("bench/results.md"), &report).expect("write bench/results.md");
    std::fs::write(root.join("bench/results.svg"), chart(&results))
        .expect("write bench/results.svg");
    eprintln!("wrote bench/results.md and bench/results.svg");
}

/// sio-relay's drain in other configurations, each against the default measured right before it
/// on the same Redis: confirming without the servers' answers (`delivery.confirm = "published"`,
/// what the default costs), the sharded adapter's target (SPUBLISH, JSON), the streams adapter's
/// (XADD to the servers' stream, acknowledged in the same script), python-socketio's (its JSON
/// message on one channel, confirmed as published), and
/// `redis.wait_replicas = 1` with a replica attached (WAIT after each step).
fn variants(
    redis: &RedisServer,
    subscriber: &Subscriber,
    entries: usize,
) -> Vec<(&'static str, Drain, Drain)> {
    let place = Place::standalone(redis);
    let mut out = ab(&place, subscriber, entries);
    // Traces exported to a receiver that decodes the spans and keeps none.
    let collector = common::Receiver::discarding();
    let endpoint = collector.endpoint();
    // Each against the default drained right before it: (what, its stand-in servers, settings).
    let configurations = [
        (
            "telemetry.otlp_endpoint set (traces on)",
            None,
            &[("TELEMETRY__OTLP_ENDPOINT", endpoint.as_str())][..],
        ),
        (
            "delivery.confirm = \"published\"",
            None,
            &[("DELIVERY__CONFIRM", "published")][..],
        ),
        (
            "target.adapter = \"sharded\"",
            Some(Subscriber::start_sharded(&redis.url())),
            &[("TARGET__ADAPTER", "sharded")][..],
        ),
        // Untrimmed: at drain speed 10,000 entries (the servers' maxLen) last about 60 ms, and
        // what the stand-in reads after they are trimmed would count as lost.
        (
            "target.adapter = \"streams\"",
            Some(Subscriber::start_streams(&redis.url())),
            &[("TARGET__ADAPTER", "streams"), ("TARGET__MAX_LEN", "0")][..],
        ),
        (
            "target.adapter = \"python-socketio\"",
            Some(Subscriber::start_python(&redis.url())),
            &[("TARGET__ADAPTER", "python-socketio")][..],
        ),
    ];
    for (what, stand_in, settings) in configurations {
        eprintln!("== variant baseline: the default, before {what}");
        let base = drain(&place, subscriber, RelayKind::SioRelay, entries, SMALL);
        eprintln!("== variant: {what}");
        let servers = stand_in.as_ref().unwrap_or(subscriber);
        let variant = drain_with(
            &place,
            servers,
            RelayKind::SioRelay,
            entries,
            SMALL,
            settings,
        );
        out.push((what, base, variant));
    }
    eprintln!(
        "== the traced drain exported {} spans to the receiver",
        collector.count()
    );
    // The streams stand-in's stream, which the others' drains must not pay for.
    let _: () = redis::cmd("DEL")
        .arg("socket.io")
        .exec(&mut redis.connection())
        .unwrap();
    {
        let subscriber = Subscriber::start(redis);
        let replica = pinned_redis(RedisServer::start_replica_of(redis));
        eprintln!("== variant baseline: no WAIT (one replica attached)");
        let base = drain(&place, &subscriber, RelayKind::SioRelay, entries, SMALL);
        eprintln!("== variant: wait_replicas = 1");
        let settings = [("REDIS__WAIT_REPLICAS", "1")];
        let variant = drain_with(
            &place,
            &subscriber,
            RelayKind::SioRelay,
            entries,
            SMALL,
            &settings,
        );
        drop(replica);
        out.push(("redis.wait_replicas = 1 (one replica)", base, variant));
    }
    out
}

/// With `BENCH_OTHER_RELAY` set, `BENCH_AB_ROUNDS` drains of this build and of that one,
/// alternated, so that neither always runs on a warmer (or more loaded) machine.
fn ab(place: &Place, subscriber: &Subscriber, entries: usize) -> Vec<(&'static str, Drain, Drain)> {
    let mut out = Vec::new();
    if std::env::var_os("BENCH_OTHER_RELAY").is_some() {
        for round in 0..env_number("BENCH_AB_ROUNDS", 3) {
            // Which build drains first alternates too: the first of a pair finds Redis idle.
            let drained = |kind: RelayKind| {
                eprintln!("== A/B: {} (round {round})", kind.name());
                drain(place, subscriber, kind, entries, SMALL)
            };
            let (base, other) = if round % 2 == 0 {
                let base = drained(RelayKind::SioRelay);
                (base, drained(RelayKind::OtherBuild))
            } else {
                let other = drained(RelayKind::OtherBuild);
                (drained(RelayKind::SioRelay), other)
            };
            out.push(("the build at BENCH_OTHER_RELAY", base, other));
        }
    }
    out
}

fn variants_report(variants: &[(&str, Drain, Drain)], entries: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "
sio-relay in other configurations, each against the default drained right before it on the same Redis ({entries} entries):\n"
    );
    let _ = writeln!(
        out,
        "| configuration | drain (entries/s) | default's drain | ratio | relay CPU per entry | default's relay CPU per entry | Redis CPU per entry | default's Redis CPU per entry | received |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let rate = |d: &Drain| d.received as f64 / d.seconds.max(1e-9);
    let per_entry = |cpu: f64, d: &Drain| format!("{:.1} µs", 1e6 * cpu / d.entries as f64);
    for (name, base, variant) in variants {
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.0} | {:.2}× | {} | {} | {} | {} | {}/{} |",
            rate(variant),
            rate(base),
            rate(variant) / rate(base),
            per_entry(variant.relay_cpu, variant),
            per_entry(base.relay_cpu, base),
            per_entry(variant.redis_cpu, variant),
            per_entry(base.redis_cpu, base),
            variant.received,
            variant.entries,
        );
    }
    out
}

/// sio-relay on a Redis Cluster of three primaries, reading 1, 2 and 3 partitions (each on a primary
/// of its own), the classic adapter's subscriber on the first node.
fn partitions(entries: usize, rate: usize, seconds: usize) -> Vec<Partitioned> {
    // Three primaries without replicas, each pinned to CPU 0 as the standalone Redis is.
    let cluster = Cluster::start_with(3, 0);
    for node in &cluster.nodes {
        pin(node.pid(), "0");
    }
    // For each node, a hash tag whose slot it serves: each partition lands on a primary of its own.
    let tags: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| {
            cluster
                .tag_on_each_primary()
                .into_iter()
                .find(|tag| cluster.owner(&format!("{{{tag}}}")).port == node.port)
                .expect("a tag on each primary")
        })
        .collect();
    let subscriber = Subscriber::start(&cluster.nodes[0]);
    (1..=cluster.nodes.len())
        .map(|count| {
            let place = Place::partitioned(&cluster, &tags, count);
            eprintln!("== cluster, {count} partitions: draining {entries} entries");
            let drain = drain(&place, &subscriber, RelayKind::SioRelay, entries, SMALL);
            eprintln!("== cluster, {count} partitions: {rate} entries/s for {seconds} s");
            let latency = steady(&place, &subscriber, RelayKind::SioRelay, rate, seconds);
            eprintln!("== cluster, {count} partitions: the same without the relay");
            let floor = steady_without_relay(&place, &subscriber, rate, seconds);
            Partitioned {
                count,
                drain,
                latency,
                floor,
            }
        })
        .collect()
}

/// sio-relay on a cluster, reading `count` partitions.
struct Partitioned {
    count: usize,
    drain: Drain,
    latency: Latency,
    /// The same entries PUBLISHed without the relay: what the cluster itself adds.
    floor: Latency,
}

fn partitions_report(
    partitions: &[Partitioned],
    standalone: &Result,
    entries: usize,
    rate: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "
sio-relay on a Redis Cluster of three primaries (no replicas, all on CPU 0), reading 1, 2 and 3 partitions \
(`source.streams`, each on its own primary), classic adapter: {entries} entries drained, then {rate} entries/s; \
against sio-relay on one Redis above. The busiest node's CPU per entry gives the cluster's ceiling when \
each node has a core (or a machine) of its own.\n"
    );
    let _ = writeln!(
        out,
        "| partitions | drain (entries/s) | vs one Redis | relay CPU per entry | Redis CPU per entry (all nodes) | each node's CPU per entry (partitions' first) | ceiling, a core per node | p50 | p99 | p50, p99 without the relay | received |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let per_entry = |cpu: f64, d: &Drain| format!("{:.1} µs", 1e6 * cpu / d.entries as f64);
    for p in partitions {
        let drain = &p.drain;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2}× | {} | {} | {} | {:.0} entries/s | {} | {} | {}, {} | {}/{} |",
            p.count,
            drain.throughput(),
            drain.throughput() / standalone.drain.throughput(),
            per_entry(drain.relay_cpu, drain),
            per_entry(drain.redis_cpu, drain),
            drain
                .node_cpu
                .iter()
                .map(|cpu| per_entry(*cpu, drain))
                .collect::<Vec<_>>()
                .join(" / "),
            drain.entries as f64 / drain.busiest_node_cpu().max(1e-9),
            ms(p.latency.p50),
            ms(p.latency.p99),
            ms(p.floor.p50),
            ms(p.floor.p99),
            drain.received,
            drain.entries,
        );
    }
    out
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq)]
enum RelayKind {
    SioRelay,
    /// Another build of sio-relay, at `BENCH_OTHER_RELAY` (an older commit's, to A/B a change).
    OtherBuild,
    NodeBaseline,
}

impl RelayKind {
    fn name(self) -> &'static str {
        match self {
            RelayKind::SioRelay => "sio-relay",
            RelayKind::OtherBuild => "sio-relay (BENCH_OTHER_RELAY)",
            RelayKind::NodeBaseline => "Node baseline (redis-emitter)",
        }
    }

    /// Starts the relay on `place`'s streams, pinned to CPU 1; sio-relay with the `settings`
    /// (`SECTION__KEY`, value) on top of the bench's. The Node baseline reads one stream only.
    fn spawn(self, place: &Place, settings: &[(&str, &str)]) -> Child {
        let mut cmd = pinned("1");
        match self {
            RelayKind::SioRelay | RelayKind::OtherBuild => {
                // What the bench sets is all the relay sees (see `common::hermetic`).
                for (key, value) in place.settings() {
                    cmd.env(format!("SIO_RELAY_{key}"), value);
                }
                for (key, value) in settings {
                    cmd.env(format!("SIO_RELAY_{key}"), value);
                }
                let binary = match self {
                    RelayKind::OtherBuild => std::env::var("BENCH_OTHER_RELAY")
                        .expect("BENCH_OTHER_RELAY names the other build"),
                    _ => common::binary().to_string_lossy().into_owned(),
                };
                cmd.arg(binary)
                    .arg("run")
                    .env("SIO_RELAY_SOURCE__START_ID", "0")
                    .env("SIO_RELAY_SOURCE__CONSUMER", "bench")
                    .env("SIO_RELAY_LOG__LEVEL", "warn");
            }
            RelayKind::NodeBaseline => {
                let [(stream, redis)] = &place.partitions[..] else {
                    panic!("the Node baseline reads one stream");
                };
                cmd.arg("node")
                    .arg(
                        Path::new(env!("CARGO_MANIFEST_DIR"))
                            .join("bench/node-baseline/baseline.js"),
                    )
                    .arg(redis.url())
                    .arg(stream)
                    .arg("node-baseline");
            }
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the relay under test")
    }
}

/// Whether processes can be pinned to CPUs: `taskset` exists and there are two CPUs at least.
fn can_pin() -> bool {
    Path::new("/usr/bin/taskset").exists()
        && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
}

/// `taskset -c <cpu>` when available, so Redis and the relay do not share a core; without the
/// caller's `SIO_RELAY_*` variables either way.
fn pinned(cpu: &str) -> Command {
    if can_pin() {
        let mut cmd = common::hermetic("taskset");
        cmd.args(["-c", cpu]);
        cmd
    } else {
        common::hermetic("env")
    }
}

/// Moves the running process `pid` to `cpu` (`taskset -p`), when pinning is available.
fn pin(pid: u32, cpu: &str) {
    if can_pin() {
        let pinned = Command::new("taskset")
            .args(["-p", "-c", cpu, &pid.to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(pinned, "taskset -p -c {cpu} {pid} failed");
    }
}

/// The test kit's `redis-server` (no persistence), pinned to CPU 0.
fn pinned_redis(redis: RedisServer) -> RedisServer {
    pin(redis.pid(), "0");
    redis
}

/// `used_cpu_sys + used_cpu_user` of a Redis process.
fn redis_cpu_seconds(redis: &RedisServer) -> f64 {
    let info: redis::InfoDict = redis::cmd("INFO")
        .arg("cpu")
        .query(&mut redis.connection())
        .unwrap();
    info.get::<f64>("used_cpu_sys").unwrap_or(0.0) + info.get::<f64>("used_cpu_user").unwrap_or(0.0)
}

struct Result {
    relay: RelayKind,
    drain: Drain,
    latency: Latency,
    /// The drain of entries of 1 MiB.
    big: Drain,
}

/// Bytes of an entry's `data` beyond its JSON wrapper: about 100-byte entries, and entries that
/// fill sio-relay's default `limits.max_entry_bytes` (1 MiB of field names and values).
const SMALL: usize = 0;
const BIG: usize = (1 << 20) - 100;

struct Drain {
    entries: usize,
    /// How many the subscriber received.
    received: usize,
    seconds: f64,
    /// Redis CPU seconds spent during the drain, all nodes together.
    redis_cpu: f64,
    /// Each node's share of it (one on a single Redis), the partitions' nodes first.
    node_cpu: Vec<f64>,
    /// The relay process's own CPU seconds.
    relay_cpu: f64,
    peak_rss_kib: u64,
}

struct Latency {
    p50: Duration,
    p99: Duration,
    p999: Duration,
    received: usize,
    sent: usize,
}

fn drain(
    place: &Place,
    subscriber: &Subscriber,
    relay: RelayKind,
    entries: usize,
    pad: usize,
) -> Drain {
    drain_with(place, subscriber, relay, entries, pad, &[])
}

/// As [`drain`], with relay `settings`.
fn drain_with(
    place: &Place,
    subscriber: &Subscriber,
    relay: RelayKind,
    entries: usize,
    pad: usize,
    settings: &[(&str, &str)],
) -> Drain {
    place.fill(entries, pad);
    subscriber.reset();
    let cpu_before = place.redis_cpu();
    let started = Instant::now();
    let mut child = relay.spawn(place, settings);
    // Until everything arrived, or nothing more arrives for 10 s (the relay lost entries: the
    // subscriber's buffer overflowed), or the relay exits.
    let (mut last, mut last_change) = (0, Instant::now());
    let mut seconds = 0.0;
    loop {
        let count = subscriber.count();
        if count != last {
            (last, last_change) = (count, Instant::now());
            seconds = started.elapsed().as_secs_f64();
        }
        if count >= entries || last_change.elapsed() > Duration::from_secs(10) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("{} exited during the drain: {status}", relay.name());
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let received = subscriber.count().min(entries);
    let redis_cpu: Vec<f64> = (place.redis_cpu().iter())
        .zip(&cpu_before)
        .map(|(after, before)| after - before)
        .collect();
    let total_redis_cpu = redis_cpu.iter().sum();
    let peak_rss_kib = peak_rss_kib(&child);
    let relay_cpu = cpu_seconds(&child);
    stop(child);
    place.del();
    Drain {
        entries,
        received,
        seconds,
        redis_cpu: total_redis_cpu,
        node_cpu: redis_cpu,
        relay_cpu,
        peak_rss_kib,
    }
}

fn steady(
    place: &Place,
    subscriber: &Subscriber,
    relay: RelayKind,
    rate: usize,
    seconds: usize,
) -> Latency {
    let mut child = relay.spawn(place, &[]);
    // Let it connect and create its groups before timing anything.
    for ((stream, _), mut con) in place.partitions.iter().zip(place.connections()) {
        let what = format!("{} created its group on {stream}", relay.name());
        common::wait_until(Duration::from_secs(30), &what, || {
            redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(stream)
                .query::<Vec<redis::Value>>(&mut con)
                .is_ok_and(|g| !g.is_empty())
        });
    }
    // And settle after its start (neither relay under test says when it is done starting).
    std::thread::sleep(Duration::from_millis(500));
    let latency = paced(place, subscriber, rate, seconds, |pipe, stream, fields| {
        pipe.cmd("XADD").arg(stream).arg("*");
        for (field, value) in fields {
            pipe.arg(field).arg(value);
        }
    });
    if let Ok(Some(status)) = child.try_wait() {
        panic!("{} exited during the steady run: {status}", relay.name());
    }
    stop(child);
    place.del();
    latency
}

/// The latency floor under [`steady`]: the same entries at the same rate, encoded by the bench and
/// PUBLISHed on the node that holds each one's partition, as the relay would, without the relay.
fn steady_without_relay(
    place: &Place,
    subscriber: &Subscriber,
    rate: usize,
    seconds: usize,
) -> Latency {
    let target = sio_relay::packet::Target::classic("socket.io", "sio-relay");
    paced(place, subscriber, rate, seconds, |pipe, _, fields| {
        let raw: Vec<(Vec<u8>, Vec<u8>)> = fields
            .iter()
            .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        let entry = sio_relay::entry::Entry::parse(&raw).expect("a valid entry");
        let packet = target.encode(&entry).unwrap();
        pipe.cmd("PUBLISH").arg(packet.channel).arg(packet.payload);
    })
}

/// Sends `rate * seconds` entries at a steady `rate` (a pipeline per partition each millisecond),
/// each carrying its send time and queued by `send` (pipeline, partition's stream, fields) on its
/// partition's node; the subscriber's latencies.
fn paced(
    place: &Place,
    subscriber: &Subscriber,
    rate: usize,
    seconds: usize,
    send: impl Fn(&mut redis::Pipeline, &str, [(&str, String); 3]),
) -> Latency {
    let mut cons = place.connections();
    subscriber.reset();
    subscriber.record_latency(true);
    let total = rate * seconds;
    let per_tick = (rate / 1000).max(1);
    let tick = Duration::from_secs_f64(per_tick as f64 / rate as f64);
    let mut next = Instant::now();
    let mut sent = 0;
    while sent < total {
        let mut pipes = vec![redis::pipe(); cons.len()];
        for i in 0..per_tick {
            let room = format!("room{}", (sent + i) % ROOMS);
            let data = format!(r#"{{"t":{},"pad":"{}"}}"#, now_micros(), "x".repeat(40));
            let (stream, pipe) = place.route(&room, &mut pipes);
            send(
                pipe,
                stream,
                [("room", room), ("event", "chat".into()), ("data", data)],
            );
            pipe.ignore();
        }
        for (pipe, con) in pipes.iter().zip(&mut cons) {
            if !pipe.is_empty() {
                pipe.exec(con).expect("send at a steady rate");
            }
        }
        sent += per_tick;
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while subscriber.count() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    subscriber.record_latency(false);
    let mut samples = subscriber.latencies();
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len().max(1)) - 1;
        Duration::from_micros(samples.get(i).copied().unwrap_or(0))
    };
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        received: samples.len(),
        sent: total,
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn peak_rss_kib(child: &Child) -> u64 {
    // With taskset the relay is the same process (taskset execs it); with env too.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, from /proc (clock ticks of 10 ms).
fn cpu_seconds(child: &Child) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Where the relay under test reads: its streams, each with the node that serves it, and the
/// nodes whose CPU counts.
struct Place<'a> {
    partitions: Vec<(String, &'a RedisServer)>,
    nodes: Vec<&'a RedisServer>,
    cluster: bool,
}

impl<'a> Place<'a> {
    /// The stream `bench` on one Redis.
    fn standalone(redis: &'a RedisServer) -> Place<'a> {
        Place {
            partitions: vec![("bench".into(), redis)],
            nodes: vec![redis],
            cluster: false,
        }
    }

    /// `count` partitions `bench:{tag}` of `cluster`, each on a primary of its own.
    /// `tags` holds a hash tag for each node of `cluster`, in the same order.
    fn partitioned(cluster: &'a Cluster, tags: &[String], count: usize) -> Place<'a> {
        Place {
            partitions: tags
                .iter()
                .zip(&cluster.nodes)
                .take(count)
                .map(|(tag, node)| (format!("bench:{{{tag}}}"), node))
                .collect(),
            nodes: cluster.nodes.iter().collect(),
            cluster: true,
        }
    }

    /// sio-relay's settings (`SECTION__KEY`, value) for reading here.
    fn settings(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("REDIS__URL", self.nodes[0].url())];
        if self.cluster {
            let seeds: Vec<String> = self.nodes.iter().map(|n| n.url()).collect();
            out.push(("REDIS__MODE", "cluster".into()));
            out.push(("REDIS__URLS", seeds.join(",")));
        }
        let streams: Vec<&str> = self.partitions.iter().map(|(s, _)| s.as_str()).collect();
        if let [stream] = streams[..] {
            out.push(("SOURCE__STREAM", stream.into()));
            out.push(("DEAD_LETTER__STREAM", format!("{stream}:dead")));
        } else {
            out.push(("SOURCE__STREAMS", streams.join(",")));
        }
        out
    }

    /// A connection to each partition's node.
    fn connections(&self) -> Vec<redis::Connection> {
        self.partitions
            .iter()
            .map(|(_, n)| n.connection())
            .collect()
    }

    /// The partition an entry for `room` goes to by sio-relay's rule (`partition.rs`), and its
    /// pipeline among `pipes` (one per partition).
    fn route<'p>(
        &self,
        room: &str,
        pipes: &'p mut [redis::Pipeline],
    ) -> (&str, &'p mut redis::Pipeline) {
        let i = usize::from(sio_relay::partition::key_slot(room)) % self.partitions.len();
        (&self.partitions[i].0, &mut pipes[i])
    }

    /// XADDs `n` entries of about 100 bytes plus `pad`, spread over the rooms.
    fn fill(&self, n: usize, pad: usize) {
        let mut cons = self.connections();
        let pad = "x".repeat(pad);
        let per_pipeline = if pad.is_empty() { 1000 } else { 8 };
        for start in (0..n).step_by(per_pipeline) {
            let mut pipes = vec![redis::pipe(); cons.len()];
            for i in start..(start + per_pipeline).min(n) {
                let room = format!("room{}", i % ROOMS);
                let (stream, pipe) = self.route(&room, &mut pipes);
                pipe.cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg("room")
                    .arg(room)
                    .arg("event")
                    .arg("chat")
                    .arg("data")
                    .arg(if pad.is_empty() {
                        format!(r#"{{"text":"order {i:08} shipped","n":{i}}}"#)
                    } else {
                        format!(r#"{{"text":"order {i:08} shipped","n":{i},"pad":"{pad}"}}"#)
                    })
                    .ignore();
            }
            for (pipe, con) in pipes.iter().zip(&mut cons) {
                if !pipe.is_empty() {
                    pipe.exec(con).expect("fill the backlog");
                }
            }
        }
    }

    fn del(&self) {
        for ((stream, _), mut con) in self.partitions.iter().zip(self.connections()) {
            let _: () = redis::cmd("DEL")
                .arg(stream)
                .arg(format!("{stream}:dead"))
                .arg(format!("{stream}:published:sio-relay"))
                .query(&mut con)
                .unwrap();
        }
    }

    /// Each node's CPU seconds so far.
    fn redis_cpu(&self) -> Vec<f64> {
        self.nodes.iter().map(|n| redis_cpu_seconds(n)).collect()
    }
}

/// Answers a sharded adapter's broadcast with acknowledgements (the relay's confirmation request,
/// a `requestId` in its `data`) as a server with no socket in its room does; true when `payload`
/// was one. (The kit's subscriber answers the classic adapter's requests.)
fn answer_sharded(con: &mut redis::Connection, payload: &[u8]) -> bool {
    if payload.first() != Some(&b'{') {
        return false;
    }
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return false;
    };
    let id = &request["data"]["requestId"];
    if request["type"] != 3 || id.is_null() {
        return false;
    }
    let reply = serde_json::json!({"type": 11, "data": {"requestId": id, "clientCount": 0}, "uid": "bench", "nsp": "/"});
    let channel = format!("socket.io#/#{}#", request["uid"].as_str().unwrap_or(""));
    let _: redis::RedisResult<u64> = redis::cmd("SPUBLISH")
        .arg(channel)
        .arg(reply.to_string())
        .query(con);
    true
}

/// A stand-in for the Socket.IO servers of `/`: counts packets, and when asked, the latency from
/// the `t` (µs since the epoch) in each packet's first argument.
struct Subscriber {
    count: Arc<AtomicUsize>,
    recording: Arc<AtomicBool>,
    latencies: Arc<Mutex<Vec<u64>>>,
    /// The kit's subscriber that feeds the counts (subscribed again whenever Redis drops it, its
    /// output buffer overflowed: what was queued then is lost, as for a real server, and shows as
    /// fewer received); none for the sharded stand-in.
    _feed: Option<common::Subscriber>,
}

impl Subscriber {
    fn start(redis: &RedisServer) -> Subscriber {
        let count = Arc::new(AtomicUsize::new(0));
        let recording = Arc::new(AtomicBool::new(false));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let (c, r, l) = (count.clone(), recording.clone(), latencies.clone());
        let target = sio_relay::packet::Target::classic("socket.io", "sio-relay");
        let feed = common::Subscriber::start_with_hook(redis, "/", move |payload| {
            let received = now_micros();
            if r.load(Ordering::Relaxed) {
                if let Ok(packet) = sio_relay::packet::decode(payload, &target) {
                    if let Some(sent) = packet.args.first().and_then(|a| a["t"].as_u64()) {
                        l.lock().unwrap().push(received.saturating_sub(sent));
                    }
                }
            }
            c.fetch_add(1, Ordering::Relaxed);
        });
        Subscriber {
            count,
            recording,
            latencies,
            _feed: Some(feed),
        }
    }

    /// A stand-in for a `createShardedAdapter` server with clients in every room: subscribed to
    /// the namespace's shard channel and to each room's. Counts packets (no latency).
    fn start_sharded(url: &str) -> Subscriber {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut subscribe = redis::cmd("SSUBSCRIBE");
        subscribe.arg("socket.io#/#");
        for room in 0..ROOMS {
            subscribe.arg(format!("socket.io#/#room{room}#"));
        }
        subscribe.exec(&mut con).unwrap();
        let mut answers = redis::Client::open(url).unwrap().get_connection().unwrap();
        std::thread::spawn(move || {
            while let Ok(reply) = con.recv_response() {
                if let Ok((kind, _, payload)) =
                    redis::from_redis_value::<(String, String, Vec<u8>)>(reply)
                {
                    if kind == "smessage" && !answer_sharded(&mut answers, &payload) {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Subscriber::counting(count)
    }

    /// A stand-in for a server of `@socket.io/redis-streams-adapter`: subscribed to the
    /// namespace's channel (how its servers are counted) and reading the servers' stream with
    /// XREAD from where it started, as they do. Counts entries (no latency).
    fn start_streams(url: &str) -> Subscriber {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let mut counted = redis::Client::open(url).unwrap().get_connection().unwrap();
        redis::cmd("SUBSCRIBE")
            .arg("socket.io#/#")
            .exec(&mut counted)
            .unwrap();
        let mut reader = redis::Client::open(url).unwrap().get_connection().unwrap();
        std::thread::spawn(move || {
            let _counted = counted;
            let mut last = "$".to_owned();
            loop {
                let read: redis::RedisResult<Option<redis::streams::StreamReadReply>> =
                    redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(1000)
                        .arg("BLOCK")
                        .arg(1000)
                        .arg("STREAMS")
                        .arg("socket.io")
                        .arg(&last)
                        .query(&mut reader);
                let Ok(read) = read else { return };
                for entry in read.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    c.fetch_add(1, Ordering::Relaxed);
                    last = entry.id;
                }
            }
        });
        Subscriber::counting(count)
    }

    /// A stand-in for a python-socketio server with a client: subscribed to its one channel,
    /// `socketio`. Counts messages (no latency).
    fn start_python(url: &str) -> Subscriber {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        redis::cmd("SUBSCRIBE")
            .arg("socketio")
            .exec(&mut con)
            .unwrap();
        std::thread::spawn(move || {
            while let Ok(reply) = con.recv_response() {
                if let Ok((kind, _, _)) =
                    redis::from_redis_value::<(String, String, Vec<u8>)>(reply)
                {
                    if kind == "message" {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Subscriber::counting(count)
    }

    /// A stand-in whose thread only counts, into `count`.
    fn counting(count: Arc<AtomicUsize>) -> Subscriber {
        Subscriber {
            count,
            recording: Arc::new(AtomicBool::new(false)),
            latencies: Arc::new(Mutex::new(Vec::new())),
            _feed: None,
        }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
        self.latencies.lock().unwrap().clear();
    }

    fn record_latency(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    fn latencies(&self) -> Vec<u64> {
        self.latencies.lock().unwrap().clone()
    }
}

fn report(results: &[Result], entries: usize, rate: usize, seconds: usize) -> String {
    let sio = &results[0];
    let throughput = Result::drain_throughput;
    // Redis CPU per entry during sio-relay's drain: Redis saturates at 1 / that.
    let ceiling = entries as f64 / sio.drain.redis_cpu.max(1e-9);
    let mut out = String::new();
    let _ = writeln!(out, "# sio-relay benchmark\n");
    let _ = writeln!(
        out,
        "Backlog of {entries} entries (~100 bytes, {ROOMS} rooms) drained to a pattern subscriber; steady \
         state at {rate} entries/s for {seconds} s. Redis {} on CPU 0, the relay on CPU 1, on a machine with \
         {} CPUs. Measured {}.\n",
        redis_version(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        humantime::format_rfc3339_seconds(SystemTime::now()),
    );
    let _ = writeln!(
        out,
        "| relay | drain (entries/s) | vs baseline | of Redis ceiling | relay CPU per entry | Redis CPU per entry | p50 | p99 | p99.9 | received | peak RSS |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let baseline = results
        .iter()
        .find(|r| r.relay == RelayKind::NodeBaseline)
        .map(throughput)
        .unwrap_or(f64::NAN);
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2}× | {:.0}% | {:.1} µs | {:.1} µs | {} | {} | {} | {}/{} | {:.1} MiB |",
            r.relay.name(),
            throughput(r),
            throughput(r) / baseline,
            100.0 * throughput(r) / ceiling,
            1e6 * r.drain.relay_cpu / r.drain.entries as f64,
            1e6 * r.drain.redis_cpu / r.drain.entries as f64,
            ms(r.latency.p50),
            ms(r.latency.p99),
            ms(r.latency.p999),
            r.latency.received,
            r.latency.sent,
            r.drain.peak_rss_kib as f64 / 1024.0,
        );
    }
    let _ = writeln!(
        out,
        "\nRedis ceiling: {:.0} entries/s (Redis CPU per relayed entry during sio-relay's drain: {:.2} µs).",
        ceiling,
        1e6 / ceiling
    );
    out
}

/// The big entries' table: drain and peak RSS.
fn big_report(results: &[Result], entries: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nBacklog of {entries} entries of 1 MiB each (sio-relay's default limits.max_entry_bytes), drained:\n"
    );
    let _ = writeln!(out, "| relay | drain (MiB/s) | received | peak RSS |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {}/{} | {:.1} MiB |",
            r.relay.name(),
            r.big.received as f64 / r.big.seconds.max(1e-9),
            r.big.received,
            r.big.entries,
            r.big.peak_rss_kib as f64 / 1024.0,
        );
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into())
}

/// Two bar groups: drain throughput, and p99 latency.
fn chart(results: &[Result]) -> String {
    let colors = ["#2b6cb0", "#c05621"];
    let (width, height) = (640.0, 300.0);
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"##
    );
    fn p99_ms(r: &Result) -> f64 {
        r.latency.p99.as_secs_f64() * 1000.0
    }
    type Panel = (&'static str, fn(&Result) -> f64, &'static str);
    let panels: [Panel; 2] = [
        (
            "drain throughput (entries/s, higher is better)",
            Result::drain_throughput,
            "",
        ),
        (
            "p99 latency at steady rate (ms, lower is better)",
            p99_ms,
            " ms",
        ),
    ];
    for (p, (title, value, unit)) in panels.iter().enumerate() {
        let x0 = 20.0 + p as f64 * 320.0;
        let _ = write!(
            svg,
            r#"<text x="{x0}" y="20" font-weight="bold">{title}</text>"#
        );
        let max = results.iter().map(value).fold(0.0, f64::max).max(1e-9);
        for (i, r) in results.iter().enumerate() {
            let v = value(r);
            let bar = 200.0 * v / max;
            let x = x0 + 20.0 + i as f64 * 130.0;
            let y = 250.0 - bar;
            let _ = write!(
                svg,
                r#"<rect x="{x}" y="{y:.1}" width="90" height="{bar:.1}" fill="{}"/><text x="{x}" y="{:.1}">{}{unit}</text><text x="{x}" y="270">{}</text>"#,
                colors[i % colors.len()],
                y - 4.0,
                if unit.is_empty() {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                },
                r.relay.name().split(' ').next().unwrap()
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

impl Result {
    fn drain_throughput(&self) -> f64 {
        self.drain.throughput()
    }
}

impl Drain {
    fn throughput(&self) -> f64 {
        self.entries as f64 / self.seconds.max(1e-9)
    }

    fn busiest_node_cpu(&self) -> f64 {
        self.node_cpu.iter().copied().fold(0.0, f64::max)
    }
}
