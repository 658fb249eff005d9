//! An OTLP/HTTP receiver of traces, on the official protobuf definitions (`opentelemetry-proto`):
//! what the relay's traces are checked against (tests/it/traces.rs), and what the benchmark's
//! traced relay exports to.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use super::wait_until;

/// What the receiver kept of one span.
#[derive(Clone, Debug)]
pub struct Got {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub kind: i32,
    pub attributes: BTreeMap<String, Any>,
    pub events: Vec<String>,
    pub status: i32,
    pub service: String,
}

impl Got {
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(Any::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(Any::IntValue(n)) => Some(*n),
            _ => None,
        }
    }
}

/// An OTLP/HTTP receiver on a free port: every `POST /v1/traces` is decoded as an
/// `ExportTraceServiceRequest` (protobuf) and its spans kept.
pub struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Got>>>,
    /// Spans received, kept or not.
    count: Arc<AtomicUsize>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::launch(true)
    }

    /// A receiver that decodes and counts spans but keeps none: for the benchmark's flows.
    pub fn discarding() -> Receiver {
        Receiver::launch(false)
    }

    /// Spans received so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn launch(keep: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (kept, counted) = (spans.clone(), count.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (kept, counted) = (kept.clone(), counted.clone());
                std::thread::spawn(move || serve(stream, keep.then_some(&*kept), &counted));
            }
        });
        Receiver { port, spans, count }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The spans of entry `id`, each after its parent.
    pub fn of(&self, id: &str) -> Vec<Got> {
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
    pub fn wait(&self, id: &str, outcome: &str) -> Vec<Got> {
        wait_until(
            Duration::from_secs(20),
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
/// `ExportTraceServiceResponse` once decoded; its spans counted, and kept in `kept` if given.
fn serve(stream: TcpStream, kept: Option<&Mutex<Vec<Got>>>, count: &AtomicUsize) {
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
        count.fetch_add(got.len(), Ordering::Relaxed);
        if let Some(kept) = kept {
            kept.lock().unwrap().extend(got);
        }
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
