//! Traces of entries (`[telemetry]`), exported to a real OTLP/HTTP receiver: a server of this
//! harness that decodes each request with the official protobuf definitions
//! (`opentelemetry-proto`), beside a real relay, Redis, Socket.IO server and clients. The spans'
//! parents, names and attributes are checked for a delivered, a held-then-delivered and a
//! dead-lettered entry; and a collector that is down or never answers costs no delivery, its
//! spans dropped and counted.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
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

/// What the receiver kept of one span.
#[derive(Clone, Debug)]
struct Got {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    attributes: BTreeMap<String, Any>,
    events: Vec<String>,
    status: i32,
    service: String,
}

impl Got {
    fn text(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(Any::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(Any::IntValue(n)) => Some(*n),
            _ => None,
        }
    }
}

/// An OTLP/HTTP receiver on a free port: every `POST /v1/traces` is decoded as an
/// `ExportTraceServiceRequest` (protobuf) and its spans kept.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        Receiver { port, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The spans of entry `id`, each after its parent.
    fn of(&self, id: &str) -> Vec<Got> {
        let all = self.spans.lock().unwrap().clone();
        let mut spans: Vec<Got> = all
            .iter()
            .filter(|s| s.text("messaging.message.id") == Some(id))
            .cloned()
            .collect();
        let depth = |span: &Got| {
            std::iter::successors(Some(span), |child| {
                all.iter().find(|s| s.span_id == child.parent_span_id)
            })
            .count()
        };
        spans.sort_by_key(depth);
        spans
    }

    /// Waits until entry `id`'s spans end with `outcome`; returns them.
    fn wait(&self, id: &str, outcome: &str) -> Vec<Got> {
        wait_until(
            20 * SECOND,
            &format!("a span of {id} ends {outcome}"),
            || {
                self.of(id)
                    .iter()
                    .any(|s| s.text("sio_relay.outcome") == Some(outcome))
            },
        );
        self.of(id)
    }
}

/// One connection of the receiver: HTTP/1.1 requests, kept alive, each answered 200 with an empty
/// `ExportTraceServiceResponse` once decoded.
fn serve(stream: TcpStream, kept: &Mutex<Vec<Got>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        let mut content_type = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_owned(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        assert!(
            request_line.starts_with("POST /v1/traces "),
            "{request_line}"
        );
        assert_eq!(content_type, "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(&body[..]).expect("an OTLP trace request");
        let mut got = Vec::new();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Any::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    got.push(kept_of(span, &service));
                }
            }
        }
        kept.lock().unwrap().extend(got);
        writer
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
            )
            .unwrap();
    }
}

fn kept_of(span: Span, service: &str) -> Got {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Got {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        name: span.name,
        kind: span.kind,
        attributes: span
            .attributes
            .into_iter()
            .filter_map(|kv| Some((kv.key, kv.value?.value?)))
            .collect(),
        events: span.events.into_iter().map(|e| e.name).collect(),
        status: span.status.map_or(0, |s| s.code),
        service: service.to_owned(),
    }
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
/// is delivered all the same, and every span is counted as dropped, by why (`export_failed`, or
/// `queue_full` while the one export in flight waits for `telemetry.export_timeout`).
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
        ]);
        let relay = start_relay(&redis, &settings);
        let mut con = redis.connection();
        add_numbered(&mut con, 0..ENTRIES);
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
            &format!("every span to {endpoint} is counted as dropped"),
            || dropped("export_failed") + dropped("queue_full") == ENTRIES as f64,
        );
        assert!(dropped("export_failed") >= 1.0);
        assert_eq!(dropped("open_limit"), 0.0);
        assert!(dead_letters(&mut con).is_empty());
    }
}
