//! The spans of entries (with `telemetry.otlp_endpoint`; exported by [`crate::traces`]): one per
//! passage of an entry through the relay's hands, from the moment it is taken (read, recovered,
//! reclaimed, let out of hold, sent again for its clients) to the moment it departs (see
//! `depart.rs`) or is held.
//!
//! Not `tracing` spans: an entry's life is no scope of the relay's code. It is read in one step,
//! confirmed or acknowledged by clients steps later, and may wait for servers for hours; so spans
//! are started and ended here, with the OpenTelemetry API, by entry ID. That is also why the relay
//! does without `tracing-opentelemetry`: it turns `tracing`'s spans into OpenTelemetry's, and an
//! entry has no `tracing` span to turn.
//!
//! A held entry's span ends when it is held (outcome `held`, with why), so that nothing stays open
//! while no server listens; its next span is a child of that one (of the producer's again after a
//! restart of the relay). The first span's parent is the producer's span when the entry carries a
//! valid W3C `traceparent`, else it starts a trace. Spans of the entries in hand are bounded
//! (`telemetry.max_open`; past it an entry goes untraced, counted), the held ones' contexts by
//! `delivery.max_held`. Off, every method is one branch, and nothing is allocated per entry.

use std::collections::HashMap;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::depart::Departure;
use crate::config::Config;
use crate::delivery::{Claim, Outcome};
use crate::entry::EntryId;
use crate::metrics::{SpanDrop, SpanDropLabels};
use crate::traces::{Exporter, TraceParent};

/// The attributes the spans carry, named after OpenTelemetry's messaging conventions where they
/// have a name for it.
mod key {
    pub const STREAM: &str = "messaging.destination.name";
    pub const GROUP: &str = "messaging.consumer.group.name";
    pub const ENTRY_ID: &str = "messaging.message.id";
    pub const OPERATION: &str = "messaging.operation.type";
    pub const NAMESPACE: &str = "socket.io.namespace";
    pub const ROOMS: &str = "socket.io.rooms";
    pub const ATTEMPT: &str = "sio_relay.attempt";
    pub const OUTCOME: &str = "sio_relay.outcome";
    pub const REASON: &str = "sio_relay.reason";
    pub const SERVERS: &str = "sio_relay.servers";
    pub const CLIENTS: &str = "sio_relay.clients";
    pub const BAD_TRACEPARENT: &str = "sio_relay.traceparent_invalid";
}

/// What an entry says of the trace it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Parent {
    /// No `traceparent` (or traces are off): a new trace.
    Unsaid,
    Producer(TraceParent),
    /// A `traceparent` that is not a W3C trace context: ignored, as W3C Trace Context says, and
    /// said on the span.
    Invalid,
}

/// How a span ended, its `sio_relay.outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    Departed(Departure),
    /// Held until enough servers listen, for this reason.
    Held(&'static str),
    /// Another relay owns it now: forgotten here.
    NotOwned,
    /// A pairing of plan and outcome the delivery script never gives (see `effect.rs`).
    Unexpected,
    /// The link to Redis was lost with the entry in hand: it is taken again (a new span) once the
    /// relay is back.
    Interrupted,
    /// The relay stopped with the entry in hand: pending for the next relay.
    Stopped,
}

impl Ending {
    fn outcome(self) -> &'static str {
        match self {
            Ending::Departed(Departure::Delivered) => "delivered",
            Ending::Departed(Departure::AckedByClients) => "acked_by_clients",
            Ending::Departed(Departure::DeadLettered(_)) => "dead_lettered",
            Ending::Departed(Departure::Deleted { .. }) => "deleted",
            Ending::Departed(Departure::AlreadyPublished) => "already_published",
            Ending::Held(_) => "held",
            Ending::NotOwned => "not_owned",
            Ending::Unexpected => "unexpected",
            Ending::Interrupted => "interrupted",
            Ending::Stopped => "stopped",
        }
    }

    fn reason(self) -> Option<&'static str> {
        match self {
            Ending::Departed(Departure::DeadLettered(code)) => Some(code.wire()),
            Ending::Held(why) => Some(why),
            _ => None,
        }
    }
}

/// Why an entry is held, by the delivery script's outcome.
pub(super) fn hold_reason(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::TooFewServers { .. } => "too_few_servers",
        Outcome::HeldBehind => "held_behind",
        Outcome::PublishRefused { .. } => "publish_refused",
        Outcome::TooFewReceivers { .. } => "too_few_receivers",
        _ => "other",
    }
}

/// Held because the servers disconnected before confirming it.
pub(super) const UNCONFIRMED: &str = "unconfirmed";

/// One stream's entry spans; nothing when traces are off.
pub(super) struct Spans(Option<Box<Tracing>>);

struct Tracing {
    tracer: SdkTracer,
    name: String,
    stream: StringValue,
    group: StringValue,
    open: HashMap<EntryId, Span>,
    /// The last span of each held entry, the parent of its next.
    held: HashMap<EntryId, SpanContext>,
    max_open: usize,
    max_held: usize,
    dropped: Family<SpanDropLabels, Counter>,
}

impl Tracing {
    /// A span of entry `id`, child of `parent`, with the attributes of every span and `more`.
    fn start(&self, id: EntryId, mut more: Vec<KeyValue>, parent: &Context) -> Span {
        more.extend([
            KeyValue::new(key::STREAM, self.stream.clone()),
            KeyValue::new(key::GROUP, self.group.clone()),
            KeyValue::new(key::ENTRY_ID, id.to_string()),
            KeyValue::new(key::OPERATION, "process"),
        ]);
        self.tracer
            .span_builder(self.name.clone())
            .with_kind(SpanKind::Consumer)
            .with_attributes(more)
            .start_with_context(&self.tracer, parent)
    }
}

impl Spans {
    pub fn off() -> Spans {
        Spans(None)
    }

    pub fn new(
        exporter: &Exporter,
        cfg: &Config,
        dropped: Family<SpanDropLabels, Counter>,
    ) -> Spans {
        Spans(Some(Box::new(Tracing {
            tracer: exporter.tracer(),
            name: format!("deliver {}", cfg.source.stream),
            stream: cfg.source.stream.clone().into(),
            group: cfg.source.group.clone().into(),
            open: HashMap::new(),
            held: HashMap::new(),
            max_open: cfg.telemetry.max_open,
            max_held: cfg.delivery.max_held,
            dropped,
        })))
    }

    /// What the `traceparent` of `fields` says, when traces are on.
    pub fn parent(&self, fields: &[(Vec<u8>, Vec<u8>)]) -> Parent {
        if self.0.is_none() {
            return Parent::Unsaid;
        }
        match fields.iter().find(|(name, _)| name == b"traceparent") {
            None => Parent::Unsaid,
            Some((_, value)) => std::str::from_utf8(value)
                .ok()
                .and_then(TraceParent::parse)
                .map_or(Parent::Invalid, Parent::Producer),
        }
    }

    /// The relay took the entry of `claim` in hand; `addressed` is its namespace and how many rooms
    /// it targets, when it is valid.
    pub fn taken(&mut self, claim: Claim, addressed: Option<(&str, usize)>, parent: Parent) {
        let Some(t) = self.0.as_deref_mut() else {
            return;
        };
        let attempt = KeyValue::new(key::ATTEMPT, claim.deliveries as i64);
        if let Some(span) = t.open.get_mut(&claim.id) {
            // Sent again for its clients, or taken back after a refused batch: the same passage.
            span.add_event("attempt", vec![attempt.clone()]);
            span.set_attribute(attempt);
            return;
        }
        if t.open.len() >= t.max_open {
            t.dropped
                .get_or_create(&SpanDropLabels {
                    reason: SpanDrop::open_limit,
                })
                .inc();
            return;
        }
        let context = match (t.held.remove(&claim.id), parent) {
            (Some(held), _) => Context::new().with_remote_span_context(held),
            (None, Parent::Producer(producer)) => {
                Context::new().with_remote_span_context(producer.span_context())
            }
            (None, Parent::Unsaid | Parent::Invalid) => Context::new(),
        };
        let mut attributes = vec![attempt];
        if let Some((nsp, rooms)) = addressed {
            attributes.push(KeyValue::new(key::NAMESPACE, nsp.to_owned()));
            attributes.push(KeyValue::new(key::ROOMS, rooms as i64));
        }
        if parent == Parent::Invalid {
            attributes.push(KeyValue::new(key::BAD_TRACEPARENT, true));
        }
        let span = t.start(claim.id, attributes, &context);
        t.open.insert(claim.id, span);
    }

    /// Sent to `servers` Socket.IO servers.
    pub fn published(&mut self, id: EntryId, servers: u64) {
        if let Some(span) = self.open(id) {
            let servers = KeyValue::new(key::SERVERS, servers as i64);
            span.add_event("published", vec![servers.clone()]);
            span.set_attribute(servers);
        }
    }

    /// Acknowledged by `clients` clients.
    pub fn clients(&mut self, id: EntryId, clients: u64) {
        if let Some(span) = self.open(id) {
            span.set_attribute(KeyValue::new(key::CLIENTS, clients as i64));
        }
    }

    fn open(&mut self, id: EntryId) -> Option<&mut Span> {
        self.0.as_deref_mut()?.open.get_mut(&id)
    }

    /// The entry's passage ended: its span ends with `how`. An entry that departs while held (too
    /// old, deleted) gets a span of no length, child of its last.
    pub fn ended(&mut self, id: EntryId, how: Ending) {
        let Some(t) = self.0.as_deref_mut() else {
            return;
        };
        let mut span = match (t.open.remove(&id), t.held.remove(&id)) {
            (Some(span), _) => span,
            (None, Some(held)) => t.start(
                id,
                Vec::new(),
                &Context::new().with_remote_span_context(held),
            ),
            (None, None) => return,
        };
        span.set_attribute(KeyValue::new(key::OUTCOME, how.outcome()));
        if let Some(reason) = how.reason() {
            span.set_attribute(KeyValue::new(key::REASON, reason));
        }
        if let Ending::Departed(Departure::DeadLettered(code)) = how {
            span.set_status(Status::error(code.wire()));
        }
        span.end();
        if let (Ending::Held(_), true) = (how, t.held.len() < t.max_held) {
            t.held.insert(id, span.span_context().clone());
        }
    }

    /// The link to Redis was lost: the passages of entries in hand but not kept (held, waiting
    /// for clients) end; they are taken again once the relay is back.
    pub fn interrupted(&mut self, kept: impl Fn(EntryId) -> bool) {
        let Some(t) = self.0.as_deref_mut() else {
            return;
        };
        let lost: Vec<EntryId> = t.open.keys().copied().filter(|id| !kept(*id)).collect();
        for id in lost {
            self.ended(id, Ending::Interrupted);
        }
    }

    /// The relay stops: every passage still open ends.
    pub fn stop(&mut self) {
        let Some(t) = self.0.as_deref_mut() else {
            return;
        };
        t.held.clear();
        let open: Vec<EntryId> = t.open.keys().copied().collect();
        for id in open {
            self.ended(id, Ending::Stopped);
        }
    }
}
