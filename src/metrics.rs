//! Prometheus metrics: what the relay did, how fast, and how far behind the group is.
//!
//! One explicit registry, no global state: the relay records into [`Metrics`], and the HTTP listener
//! renders it in the OpenMetrics text format that Prometheus scrapes. Names follow Prometheus
//! conventions (`sio_relay_..._total` for counters, base units such as `_seconds`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::protocol::ReasonCode;

/// Where entries were read from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Source {
    /// New entries (XREADGROUP `>`).
    new,
    /// This consumer's own pending entries, after a start or a reconnection.
    own_pending,
    /// Idle entries of other consumers (XAUTOCLAIM).
    reclaimed,
}

impl Source {
    /// Every source: each has a series from the start, so that a rate over `entries_read_total`
    /// sees the first read instead of a series born at its first value.
    pub const ALL: [Source; 3] = [Source::new, Source::own_pending, Source::reclaimed];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: Source,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: ReasonCode,
}

/// Why a span of an entry was not exported (see [`crate::traces`]).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SpanDrop {
    /// `telemetry.max_queue` spans already waited for export.
    queue_full,
    /// The collector refused the export request, or did not answer within
    /// `telemetry.export_timeout`.
    export_failed,
    /// `telemetry.max_open` entries were already traced: the entry was not.
    open_limit,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanDropLabels {
    pub reason: SpanDrop,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub connection: String,
}

/// What a SIGHUP reload of the configuration did.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reload {
    /// Keys changed: those a running relay can change are applied, the others named.
    changed,
    /// The configuration read again is the one running.
    unchanged,
    /// It did not validate: the running configuration stays.
    failed,
}

impl Reload {
    pub const ALL: [Reload; 3] = [Reload::changed, Reload::unchanged, Reload::failed];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: Reload,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

pub struct Metrics {
    registry: Registry,
    pub entries_read: Family<SourceLabels, Counter>,
    pub published: Counter,
    pub acknowledged: Counter,
    pub redelivered: Counter,
    pub dead_lettered: Family<ReasonLabels, Counter>,
    pub held: Counter,
    pub held_now: Gauge,
    pub deleted_pending: Counter,
    pub publish_receivers: Histogram,
    pub publish_duration: Histogram,
    pub end_to_end: Histogram,
    pub group_lag: Gauge<f64, AtomicU64>,
    pub group_pending: Gauge,
    pub redis_connected: Family<ConnectionLabels, Gauge>,
    pub redis_refusing: Gauge,
    pub group_recreated: Counter,
    pub unconfirmed: Counter,
    /// Entries the servers said they sent to no client (`delivery.confirm = "clients"`).
    pub reached_no_client: Counter,
    pub parked: Gauge,
    pub replicas_short: Counter,
    pub acks_waiting: Gauge,
    pub ack_requests: Counter,
    pub client_acks: Counter,
    pub ack_latency: Histogram,
    pub acked_by_clients: Counter,
    pub trace_spans_dropped: Family<SpanDropLabels, Counter>,
    /// Held entries per namespace, per stream, for the console. Not exported to Prometheus:
    /// namespaces are named by producers, and a label per namespace would let them grow the series
    /// without bound.
    pub held_by_namespace: std::sync::Mutex<HeldCensus>,
    /// The sum (in microseconds) and count of [`Metrics::end_to_end`], which prometheus-client only
    /// exposes to Prometheus: the console turns them into a latency per interval.
    pub end_to_end_micros: Counter,
    pub end_to_end_count: Counter,
    pub config_reloads: Family<ReloadLabels, Counter>,
}

/// The namespaces that hold the most entries, per stream; the rest only counted.
#[derive(Clone, Debug, Default)]
pub struct HeldCensus {
    /// Stream -> its namespaces with the most held entries, most first (at most [`CENSUS_SHOWN`]).
    pub shown: std::collections::BTreeMap<String, Vec<(String, usize)>>,
    /// Stream -> how many namespaces holding entries are not in `shown`.
    pub not_shown: std::collections::BTreeMap<String, usize>,
}

/// Namespaces the census names per stream.
pub const CENSUS_SHOWN: usize = 20;

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sio_relay");
        let metrics = Metrics {
            entries_read: Family::default(),
            published: Counter::default(),
            acknowledged: Counter::default(),
            redelivered: Counter::default(),
            dead_lettered: Family::default(),
            held: Counter::default(),
            held_now: Gauge::default(),
            deleted_pending: Counter::default(),
            publish_receivers: Histogram::new([0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0]),
            publish_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            end_to_end: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            group_lag: Gauge::default(),
            group_pending: Gauge::default(),
            redis_connected: Family::default(),
            redis_refusing: Gauge::default(),
            group_recreated: Counter::default(),
            unconfirmed: Counter::default(),
            reached_no_client: Counter::default(),
            parked: Gauge::default(),
            replicas_short: Counter::default(),
            acks_waiting: Gauge::default(),
            ack_requests: Counter::default(),
            client_acks: Counter::default(),
            ack_latency: Histogram::new(exponential_buckets(0.001, 2.0, 22)),
            acked_by_clients: Counter::default(),
            trace_spans_dropped: Family::default(),
            held_by_namespace: Default::default(),
            end_to_end_micros: Counter::default(),
            end_to_end_count: Counter::default(),
            config_reloads: Family::default(),
            registry: Registry::default(),
        };
        for result in Reload::ALL {
            let _ = metrics
                .config_reloads
                .get_or_create(&ReloadLabels { result });
        }
        for source in Source::ALL {
            let _ = metrics.entries_read.get_or_create(&SourceLabels { source });
        }
        for reason in [
            SpanDrop::queue_full,
            SpanDrop::export_failed,
            SpanDrop::open_limit,
        ] {
            let _ = metrics
                .trace_spans_dropped
                .get_or_create(&SpanDropLabels { reason });
        }
        registry.register(
            "entries_read",
            "Stream entries read, by where they came from",
            metrics.entries_read.clone(),
        );
        registry.register(
            "published",
            "Entries published to at least delivery.min_receivers Socket.IO servers",
            metrics.published.clone(),
        );
        registry.register(
            "acknowledged",
            "Entries acknowledged in the consumer group (delivered or dead-lettered)",
            metrics.acknowledged.clone(),
        );
        registry.register(
            "redelivered",
            "Entries reclaimed from other consumers (XAUTOCLAIM)",
            metrics.redelivered.clone(),
        );
        // A series for every reason from the start, so that a rate over `dead_lettered_total` sees
        // the first dead letter of a reason instead of a series born at 1.
        for &reason in ReasonCode::ALL {
            let _ = metrics
                .dead_lettered
                .get_or_create(&ReasonLabels { reason });
        }
        registry.register(
            "dead_lettered",
            "Entries moved to the dead-letter stream, by reason",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "held",
            "Entries held because too few Socket.IO servers listened on their namespace",
            metrics.held.clone(),
        );
        registry.register(
            "held_entries",
            "Entries held in memory right now, waiting for Socket.IO servers",
            metrics.held_now.clone(),
        );
        registry.register(
            "deleted_pending",
            "Pending entries found deleted from the stream (trimmed or XDEL) before delivery",
            metrics.deleted_pending.clone(),
        );
        registry.register(
            "publish_receivers",
            "Socket.IO servers that received each PUBLISH",
            metrics.publish_receivers.clone(),
        );
        registry.register_with_unit(
            "publish_duration",
            "Time to publish one batch (the delivery script's round trip)",
            Unit::Seconds,
            metrics.publish_duration.clone(),
        );
        registry.register_with_unit(
            "end_to_end_latency",
            "From the time in an entry's ID to its acknowledgement",
            Unit::Seconds,
            metrics.end_to_end.clone(),
        );
        registry.register(
            "group_lag",
            "Entries of the stream not yet read by the group (NaN when Redis cannot tell)",
            metrics.group_lag.clone(),
        );
        registry.register(
            "group_pending",
            "Entries read by the group and not yet acknowledged",
            metrics.group_pending.clone(),
        );
        registry.register(
            "redis_connected",
            "1 while the connection to Redis works, by connection (reader, writer)",
            metrics.redis_connected.clone(),
        );
        registry.register(
            "redis_refusing",
            "1 while Redis refuses the relay's work (out of memory, ACL, a key of the wrong type): nothing is delivered",
            metrics.redis_refusing.clone(),
        );
        registry.register(
            "replicas_short",
            "Times WAIT reached fewer than redis.wait_replicas replicas within redis.wait_timeout",
            metrics.replicas_short.clone(),
        );
        registry.register(
            "group_recreated",
            "Times the consumer group vanished while the relay ran and was created again",
            metrics.group_recreated.clone(),
        );
        registry.register(
            "unconfirmed",
            "Entries published but not confirmed because a Socket.IO server left without saying it had them; published again",
            metrics.unconfirmed.clone(),
        );
        registry.register(
            "reached_no_client",
            "Entries delivered that the Socket.IO servers sent to no client (counted with delivery.confirm = \"clients\")",
            metrics.reached_no_client.clone(),
        );
        registry.register(
            "parked_entries",
            "Entries Redis refuses even on their own and the dead-letter stream refuses too: pending, tried again every delivery.retry_interval",
            metrics.parked.clone(),
        );
        registry.register(
            "acks_waiting",
            "Entries that asked for acknowledgements and wait for a client's, in memory right now",
            metrics.acks_waiting.clone(),
        );
        registry.register(
            "ack_requests",
            "Broadcasts with acknowledgements sent to the Socket.IO servers (every attempt of every entry)",
            metrics.ack_requests.clone(),
        );
        registry.register(
            "client_acks",
            "Acknowledgements received from Socket.IO clients",
            metrics.client_acks.clone(),
        );
        registry.register_with_unit(
            "ack_latency",
            "From an entry's first broadcast with acknowledgements to each client's acknowledgement",
            Unit::Seconds,
            metrics.ack_latency.clone(),
        );
        registry.register(
            "acked_by_clients",
            "Entries acknowledged by at least one client, their results written to acks.stream",
            metrics.acked_by_clients.clone(),
        );
        registry.register(
            "config_reloads",
            "Reloads of the configuration on SIGHUP, by result: changed, unchanged, or failed (the running configuration stays)",
            metrics.config_reloads.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Spans of entries not exported to the OpenTelemetry collector, by why",
            metrics.trace_spans_dropped.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("build_info", "sio-relay's version", build_info);
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn read(&self, source: Source, n: usize) {
        self.entries_read
            .get_or_create(&SourceLabels { source })
            .inc_by(n as u64);
    }

    pub fn dead_lettered(&self, reason: ReasonCode) {
        self.dead_lettered
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn connected(&self, up: bool) {
        for connection in ["reader", "writer"] {
            self.redis_connected
                .get_or_create(&ConnectionLabels {
                    connection: connection.into(),
                })
                .set(i64::from(up));
        }
    }

    /// An entry delivered and acknowledged, `age` after it was produced.
    pub fn delivered(&self, age: std::time::Duration) {
        self.acknowledged.inc();
        self.end_to_end.observe(age.as_secs_f64());
        self.end_to_end_micros.inc_by(age.as_micros() as u64);
        self.end_to_end_count.inc();
    }

    /// Records what `stream` holds per namespace (`counts`, in any order).
    pub fn held_census(&self, stream: &str, mut counts: Vec<(String, usize)>) {
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let not_shown = counts.len().saturating_sub(CENSUS_SHOWN);
        counts.truncate(CENSUS_SHOWN);
        let mut census = self
            .held_by_namespace
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        census.shown.insert(stream.to_owned(), counts);
        census.not_shown.insert(stream.to_owned(), not_shown);
    }

    /// Entries read, whatever their source.
    pub fn entries_read_total(&self) -> u64 {
        Source::ALL
            .into_iter()
            .filter_map(|source| {
                self.entries_read
                    .get(&SourceLabels { source })
                    .map(|c| c.get())
            })
            .sum()
    }

    /// Entries dead-lettered, whatever the reason.
    pub fn dead_lettered_total(&self) -> u64 {
        ReasonCode::ALL
            .iter()
            .filter_map(|&reason| {
                self.dead_lettered
                    .get(&ReasonLabels { reason })
                    .map(|c| c.get())
            })
            .sum()
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dead_letter_reason_is_exported_from_the_start() {
        let text = Metrics::new().render();
        for reason in ReasonCode::ALL {
            let reason = reason.wire();
            let line = format!("sio_relay_dead_lettered_total{{reason=\"{reason}\"}} 0");
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn every_read_source_is_exported_from_the_start() {
        let text = Metrics::new().render();
        for source in ["new", "own_pending", "reclaimed"] {
            let line = format!("sio_relay_entries_read_total{{source=\"{source}\"}} 0");
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        metrics.read(Source::new, 3);
        metrics.dead_lettered(ReasonCode::Malformed);
        metrics.connected(true);
        metrics.end_to_end.observe(0.002);
        let text = metrics.render();
        for line in [
            "sio_relay_entries_read_total{source=\"new\"} 3",
            "sio_relay_dead_lettered_total{reason=\"malformed\"} 1",
            "sio_relay_redis_connected{connection=\"reader\"} 1",
            "sio_relay_build_info{version=\"",
            "# TYPE sio_relay_end_to_end_latency_seconds histogram",
            "# TYPE sio_relay_publish_duration_seconds histogram",
            "sio_relay_acknowledged_total 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
