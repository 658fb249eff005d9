//! Traces of entries (`[telemetry]`), exported to a real OTLP/HTTP receiver: a server of this
//! harness that decodes each request with the official protobuf definitions
//! (`opentelemetry-proto`), beside a real relay, Redis, Socket.IO server and clients. The spans'
//! parents, names and attributes are checked for a delivered, a held-then-delivered and a
//! dead-lettered entry; and a collector that is down or never answers costs no delivery, its
//! spans dropped and counted.

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::json;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

/// The producers' spans: W3C trace contexts, sampled.
const TRACE_A: &str = "0af7651916cd43dd8448eb211c80319c";
const SPAN_A: &str = "b7ad6b7169203331";
const TRACE_B: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_B: &str = "00f067aa0ba902b7";
const TRACE_C: &str = "1e1b1dd7a6c1a3bd31b1f0c0e5a0d9c2";
const SPAN_C: &str = "53995c3f42cd8ad8";

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

/// Settings for a relay that traces to `endpoint` and exports at once.
fn traced(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TELEMETRY__OTLP_ENDPOINT", endpoint.to_owned()),
        ("TELEMETRY__BATCH_DELAY", "50ms".into()),
        ("DELIVERY__RETRY_INTERVAL", "200ms".into()),
    ]
}

fn start_relay(redis: &RedisServer, settings: &[(&'static str, String)]) -> Relay {
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Relay::start(redis, "relay-1", &settings)
}

/// The spans of every kind of passage: delivered with the producer's context, without one, with a
/// malformed one; held, then delivered once the server and its client are back (after
/// `delivery.release_wait`, 10 s); dead-lettered. Each span is a
/// child of the producer's (a held entry's next span a child of its held one), named
/// `deliver <stream>`, and says what happened to the entry.
#[test]
fn spans_follow_each_entry_into_its_producers_trace() {
    let redis = RedisServer::start();
    let receiver = Receiver::start();
    let mut server = SocketIoServer::start(&redis);
    wait_servers(&redis, 1);
    let clients = Clients::start_specs(vec![
        json!({"name": "u1", "url": server.url("/"), "rooms": ["user:1"]}),
    ]);
    let _relay = start_relay(&redis, &traced(&receiver.endpoint()));
    let mut con = redis.connection();
    let entry = |con: &mut redis::Connection, n: u32, traceparent: Option<&str>| {
        let data = n.to_string();
        let mut fields = vec![("event", "e"), ("room", "user:1"), ("data", &data)];
        fields.extend(traceparent.map(|t| ("traceparent", t)));
        xadd(con, &fields)
    };
    let delivered = entry(&mut con, 1, Some(&traceparent(TRACE_A, SPAN_A)));
    let untraced = entry(&mut con, 2, None);
    let bad_context = entry(&mut con, 3, Some("00-not-a-trace-context-01"));
    let dead = xadd(
        &mut con,
        &[
            ("event", "connect"),
            ("traceparent", &traceparent(TRACE_C, SPAN_C)),
        ],
    );
    clients.wait_events("u1", 3, 20 * SECOND);
    wait_until(10 * SECOND, "nothing pending", || {
        pending(&mut con).is_empty()
    });

    server.kill();
    wait_servers(&redis, 0);
    let held = entry(&mut con, 4, Some(&traceparent(TRACE_B, SPAN_B)));
    wait_held(&mut con, 1);
    server.restart();
    clients.wait_events("u1", 4, 30 * SECOND);
    wait_until(10 * SECOND, "nothing pending", || {
        pending(&mut con).is_empty()
    });

    let name = format!("deliver {STREAM}");
    let spans = receiver.wait(&delivered, "delivered");
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(
        (span.trace_id.as_str(), span.parent_span_id.as_str()),
        (TRACE_A, SPAN_A)
    );
    assert_eq!(span.name, name);
    assert_eq!(span.kind, SpanKind::Consumer as i32);
    assert_eq!(span.service, "sio-relay");
    assert_eq!(span.text("messaging.destination.name"), Some(STREAM));
    assert_eq!(
        span.text("messaging.consumer.group.name"),
        Some("sio-relay")
    );
    assert_eq!(span.text("socket.io.namespace"), Some("/"));
    assert_eq!(span.int("socket.io.rooms"), Some(1));
    assert_eq!(span.int("sio_relay.attempt"), Some(1));
    assert_eq!(span.int("sio_relay.servers"), Some(1));
    assert_eq!(span.events, ["published"]);
    assert_eq!(span.status, StatusCode::Unset as i32);

    let spans = receiver.wait(&untraced, "delivered");
    assert_eq!(spans.len(), 1);
    assert!(spans[0].parent_span_id.is_empty(), "a trace of its own");
    let spans = receiver.wait(&bad_context, "delivered");
    assert!(spans[0].parent_span_id.is_empty(), "ignored, as W3C says");
    assert_eq!(
        spans[0].attributes.get("sio_relay.traceparent_invalid"),
        Some(&Any::BoolValue(true))
    );

    let spans = receiver.wait(&dead, "dead_lettered");
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(
        (span.trace_id.as_str(), span.parent_span_id.as_str()),
        (TRACE_C, SPAN_C)
    );
    assert_eq!(span.text("sio_relay.reason"), Some("malformed"));
    assert_eq!(span.status, StatusCode::Error as i32);
    assert_eq!(
        span.text("socket.io.namespace"),
        None,
        "not known of a malformed entry"
    );
    assert_eq!(dead_letters(&mut con).len(), 1);

    let spans = receiver.wait(&held, "delivered");
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let (first, second) = (&spans[0], &spans[1]);
    assert_eq!(
        (first.trace_id.as_str(), first.parent_span_id.as_str()),
        (TRACE_B, SPAN_B)
    );
    assert_eq!(first.text("sio_relay.outcome"), Some("held"));
    assert_eq!(first.text("sio_relay.reason"), Some("too_few_servers"));
    assert_eq!(second.trace_id, TRACE_B);
    assert_eq!(
        second.parent_span_id, first.span_id,
        "released: a child of its hold"
    );
    assert_eq!(second.name, name);
    assert_eq!(second.text("sio_relay.outcome"), Some("delivered"));
    assert_eq!(second.int("sio_relay.servers"), Some(1));
    assert_eq!(clients.events_of("u1").len(), 4, "each entry once");
}

/// A collector that refuses connections, and one that takes them and never answers: every entry
/// is delivered all the same, and every entry is counted once as not exported, by why: its span
/// dropped (`export_failed`, or `queue_full` while the one export in flight waits for
/// `telemetry.export_timeout`), or not made (`open_limit`: the backlog is read in one batch, more
/// entries in hand than `telemetry.max_open`).
#[test]
fn a_collector_down_or_silent_costs_no_delivery() {
    const ENTRIES: usize = 20;
    // Nothing listens on a port just freed; the other takes connections and never reads them.
    let down = format!("http://127.0.0.1:{}", free_port());
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let _held = std::thread::spawn(move || {
        let _accepted: Vec<TcpStream> = silent.incoming().flatten().collect();
    });
    for endpoint in [down, silent_url] {
        let redis = RedisServer::start();
        let sub = Subscriber::start(&redis, "/");
        let mut settings = traced(&endpoint);
        settings.extend([
            ("TELEMETRY__MAX_QUEUE", "4".to_owned()),
            ("TELEMETRY__MAX_BATCH", "4".to_owned()),
            ("TELEMETRY__EXPORT_TIMEOUT", "1s".to_owned()),
            ("TELEMETRY__MAX_OPEN", "12".to_owned()),
        ]);
        let mut con = redis.connection();
        add_numbered(&mut con, 0..ENTRIES);
        let relay = start_relay(&redis, &settings);
        assert_eq!(sub.wait_count(ENTRIES, 10 * SECOND).len(), ENTRIES);
        wait_until(10 * SECOND, "nothing pending", || {
            pending(&mut con).is_empty()
        });
        let dropped = |reason: &str| {
            relay
                .metric(&format!("trace_spans_dropped_total{{reason=\"{reason}\"}}"))
                .unwrap()
        };
        wait_until(
            10 * SECOND,
            &format!("every entry is counted as not exported to {endpoint}"),
            || {
                dropped("export_failed") + dropped("queue_full") + dropped("open_limit")
                    == ENTRIES as f64
            },
        );
        assert!(dropped("export_failed") >= 1.0);
        assert_eq!(dropped("open_limit"), (ENTRIES - 12) as f64);
        assert!(dead_letters(&mut con).is_empty());
    }
}
