//! Prometheus metrics: what the relay did, how fast, and how far behind the group is.
//!
//! One explicit registry, no global state: each relay loop records into its stream's
//! [`StreamMetrics`], and the HTTP listener renders the [`Metrics`] in the OpenMetrics text format
//! that Prometheus scrapes. Names follow Prometheus conventions (`sio_relay_..._total` for
//! counters, base units such as `_seconds`).
//!
//! Every series but `build_info`, `trace_spans_dropped` and `config_reloads` (about the process) is
//! about one stream and carries its name in a `stream` label:
//! with `source.streams`, each partition's loop has its own connections, group, held entries and
//! batches, so even the connection and group gauges are one stream's (a sum or a last writer
//! would hide the partition that is stuck).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::protocol::ReasonCode;

/// Where entries were read from.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
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
    /// Every source, in declaration order (a stream's handles are indexed by `source as usize`):
    /// each has a series from the start, so that a rate over `entries_read_total` sees the first
    /// read instead of a series born at its first value.
    pub const ALL: [Source; 3] = [Source::new, Source::own_pending, Source::reclaimed];
}

/// One of a relay loop's two connections to Redis.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Connection {
    reader,
    writer,
}

impl Connection {
    /// Both, in declaration order (a stream's handles are indexed by `connection as usize`).
    pub const ALL: [Connection; 2] = [Connection::reader, Connection::writer];
}

/// The label of every series about one stream: its name, also with a single `source.stream`, so
/// that queries need not tell the two deployments apart. `source.streams` bounds how many there
/// are (64).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub stream: String,
    pub source: Source,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub stream: String,
    pub reason: ReasonCode,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub stream: String,
    pub connection: Connection,
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

/// The process's metrics: one registry, and the series of each stream it relays.
pub struct Metrics {
    registry: Registry,
    streams: Vec<StreamMetrics>,
    /// About the process, not one stream: the spans it did not export, the reloads of its
    /// configuration.
    pub trace_spans_dropped: Family<SpanDropLabels, Counter>,
    pub config_reloads: Family<ReloadLabels, Counter>,
}

/// One stream's series, resolved once when the metrics are built: its relay loop records through
/// these handles (each shares its series with the registry), so that counting an entry is an
/// atomic add, never a lookup of a label set.
#[derive(Clone, Debug)]
pub struct StreamMetrics {
    /// By `Source as usize`.
    entries_read: [Counter; 3],
    pub published: Counter,
    pub acknowledged: Counter,
    pub redelivered: Counter,
    /// In the order of [`ReasonCode::ALL`].
    dead_lettered: [Counter; ReasonCode::ALL.len()],
    pub held: Counter,
    pub held_now: Gauge,
    pub deleted_pending: Counter,
    pub publish_receivers: Histogram,
    pub publish_duration: Histogram,
    pub end_to_end: Histogram,
    pub group_lag: Gauge<f64, AtomicU64>,
    pub group_pending: Gauge,
    /// By `Connection as usize`.
    redis_connected: [Gauge; 2],
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
    /// Held entries per namespace, for the console. Not exported to Prometheus: namespaces are
    /// named by producers, and a label per namespace would let them grow the series without bound.
    held_by_namespace: Arc<Mutex<HeldCensus>>,
    /// The sum (in microseconds) and count of [`StreamMetrics::end_to_end`], which
    /// prometheus-client only exposes to Prometheus: the console turns them into a latency per
    /// interval.
    pub end_to_end_micros: Counter,
    pub end_to_end_count: Counter,
}

/// The namespaces of a stream that hold the most entries; the rest only counted.
#[derive(Clone, Debug, Default)]
pub struct HeldCensus {
    /// The namespaces with the most held entries, most first (at most [`CENSUS_SHOWN`]).
    pub shown: Vec<(String, usize)>,
    /// How many namespaces holding entries are not in `shown`.
    pub not_shown: usize,
}

/// Namespaces the census names per stream.
pub const CENSUS_SHOWN: usize = 20;

/// Registers a family of plain metrics (counters, gauges) with a series per stream.
fn plain<M>(registry: &mut Registry, name: &str, help: &str) -> Family<StreamLabels, M>
where
    M: Default,
    Family<StreamLabels, M>: prometheus_client::registry::Metric + Clone,
{
    per_stream(registry, name, help, None, Family::default())
}

/// Registers a family with one series per stream, and returns it to resolve them.
fn per_stream<S, M, C>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    family: Family<S, M, C>,
) -> Family<S, M, C>
where
    Family<S, M, C>: prometheus_client::registry::Metric + Clone,
{
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, family.clone()),
        None => registry.register(name, help, family.clone()),
    }
    family
}

fn publish_receivers() -> Histogram {
    Histogram::new([0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0])
}

fn publish_duration() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn end_to_end() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

fn ack_latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 22))
}

impl Metrics {
    /// The metrics of a process that relays `streams` (each partition's `source.stream`), every
    /// series of every stream exported from the start.
    pub fn new<'a>(streams: impl IntoIterator<Item = &'a str>) -> Metrics {
        let mut registry = Registry::with_prefix("sio_relay");
        let r = &mut registry;
        let histogram = |r: &mut Registry, name: &str, help: &str, unit, buckets| {
            let family =
                Family::<StreamLabels, Histogram, fn() -> Histogram>::new_with_constructor(buckets);
            per_stream(r, name, help, unit, family)
        };
        let entries_read = per_stream(
            r,
            "entries_read",
            "Stream entries read, by where they came from",
            None,
            Family::<SourceLabels, Counter>::default(),
        );
        let published = plain::<Counter>(
            r,
            "published",
            "Entries published to at least delivery.min_receivers Socket.IO servers",
        );
        let acknowledged = plain::<Counter>(
            r,
            "acknowledged",
            "Entries acknowledged in the consumer group (delivered or dead-lettered)",
        );
        let redelivered = plain::<Counter>(
            r,
            "redelivered",
            "Entries reclaimed from other consumers (XAUTOCLAIM)",
        );
        let dead_lettered = per_stream(
            r,
            "dead_lettered",
            "Entries moved to the dead-letter stream, by reason",
            None,
            Family::<ReasonLabels, Counter>::default(),
        );
        let held = plain::<Counter>(
            r,
            "held",
            "Entries held because too few Socket.IO servers listened on their namespace",
        );
        let held_now = plain::<Gauge>(
            r,
            "held_entries",
            "Entries held in memory right now, waiting for Socket.IO servers",
        );
        let deleted_pending = plain::<Counter>(
            r,
            "deleted_pending",
            "Pending entries found deleted from the stream (trimmed or XDEL) before delivery",
        );
        let publish_receivers = histogram(
            r,
            "publish_receivers",
            "Socket.IO servers that received each PUBLISH",
            None,
            publish_receivers,
        );
        let publish_duration = histogram(
            r,
            "publish_duration",
            "Time to publish one batch (the delivery script's round trip)",
            Some(Unit::Seconds),
            publish_duration,
        );
        let end_to_end = histogram(
            r,
            "end_to_end_latency",
            "From the time in an entry's ID to its acknowledgement",
            Some(Unit::Seconds),
            end_to_end,
        );
        let group_lag = per_stream(
            r,
            "group_lag",
            "Entries of the stream not yet read by the group (NaN when Redis cannot tell)",
            None,
            Family::<StreamLabels, Gauge<f64, AtomicU64>>::default(),
        );
        let group_pending = plain::<Gauge>(
            r,
            "group_pending",
            "Entries read by the group and not yet acknowledged",
        );
        let redis_connected = per_stream(
            r,
            "redis_connected",
            "1 while the stream's connection to Redis works, by connection (reader, writer)",
            None,
            Family::<ConnectionLabels, Gauge>::default(),
        );
        let redis_refusing = plain::<Gauge>(
            r,
            "redis_refusing",
            "1 while Redis refuses the relay's work (out of memory, ACL, a key of the wrong type): nothing is delivered",
        );
        let replicas_short = plain::<Counter>(
            r,
            "replicas_short",
            "Times WAIT reached fewer than redis.wait_replicas replicas within redis.wait_timeout",
        );
        let group_recreated = plain::<Counter>(
            r,
            "group_recreated",
            "Times the consumer group vanished while the relay ran and was created again",
        );
        let unconfirmed = plain::<Counter>(
            r,
            "unconfirmed",
            "Entries published but not confirmed because a Socket.IO server left without saying it had them; published again",
        );
        let reached_no_client = plain::<Counter>(
            r,
            "reached_no_client",
            "Entries delivered that the Socket.IO servers sent to no client (counted with delivery.confirm = \"clients\")",
        );
        let parked = plain::<Gauge>(
            r,
            "parked_entries",
            "Entries Redis refuses even on their own and the dead-letter stream refuses too: pending, tried again every delivery.retry_interval",
        );
        let acks_waiting = plain::<Gauge>(
            r,
            "acks_waiting",
            "Entries that asked for acknowledgements and wait for a client's, in memory right now",
        );
        let ack_requests = plain::<Counter>(
            r,
            "ack_requests",
            "Broadcasts with acknowledgements sent to the Socket.IO servers (every attempt of every entry)",
        );
        let client_acks = plain::<Counter>(
            r,
            "client_acks",
            "Acknowledgements received from Socket.IO clients",
        );
        let ack_latency = histogram(
            r,
            "ack_latency",
            "From an entry's first broadcast with acknowledgements to each client's acknowledgement",
            Some(Unit::Seconds),
            ack_latency,
        );
        let acked_by_clients = plain::<Counter>(
            r,
            "acked_by_clients",
            "Entries acknowledged by at least one client, their results written to acks.stream",
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("build_info", "sio-relay's version", build_info);
        // Every reason and result exported at 0 from the start, as the per-stream ones.
        let trace_spans_dropped = Family::<SpanDropLabels, Counter>::default();
        for reason in [
            SpanDrop::queue_full,
            SpanDrop::export_failed,
            SpanDrop::open_limit,
        ] {
            let _ = trace_spans_dropped.get_or_create(&SpanDropLabels { reason });
        }
        registry.register(
            "trace_spans_dropped",
            "Spans of entries not exported to the OpenTelemetry collector, by why",
            trace_spans_dropped.clone(),
        );
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        for result in Reload::ALL {
            let _ = config_reloads.get_or_create(&ReloadLabels { result });
        }
        registry.register(
            "config_reloads",
            "Reloads of the configuration on SIGHUP, by result: changed, unchanged, or failed (the running configuration stays)",
            config_reloads.clone(),
        );

        let streams = streams
            .into_iter()
            .map(|stream| {
                let of = StreamLabels {
                    stream: stream.to_owned(),
                };
                let stream = || stream.to_owned();
                StreamMetrics {
                    // A series for every source and every reason from the start, so that a rate
                    // sees the first read of a source and the first dead letter of a reason
                    // instead of a series born at its first value.
                    entries_read: Source::ALL.map(|source| {
                        entries_read.get_or_create_owned(&SourceLabels {
                            stream: stream(),
                            source,
                        })
                    }),
                    dead_lettered: std::array::from_fn(|i| {
                        dead_lettered.get_or_create_owned(&ReasonLabels {
                            stream: stream(),
                            reason: ReasonCode::ALL[i],
                        })
                    }),
                    redis_connected: Connection::ALL.map(|connection| {
                        redis_connected.get_or_create_owned(&ConnectionLabels {
                            stream: stream(),
                            connection,
                        })
                    }),
                    published: published.get_or_create_owned(&of),
                    acknowledged: acknowledged.get_or_create_owned(&of),
                    redelivered: redelivered.get_or_create_owned(&of),
                    held: held.get_or_create_owned(&of),
                    held_now: held_now.get_or_create_owned(&of),
                    deleted_pending: deleted_pending.get_or_create_owned(&of),
                    publish_receivers: publish_receivers.get_or_create_owned(&of),
                    publish_duration: publish_duration.get_or_create_owned(&of),
                    end_to_end: end_to_end.get_or_create_owned(&of),
                    group_lag: group_lag.get_or_create_owned(&of),
                    group_pending: group_pending.get_or_create_owned(&of),
                    redis_refusing: redis_refusing.get_or_create_owned(&of),
                    group_recreated: group_recreated.get_or_create_owned(&of),
                    unconfirmed: unconfirmed.get_or_create_owned(&of),
                    reached_no_client: reached_no_client.get_or_create_owned(&of),
                    parked: parked.get_or_create_owned(&of),
                    replicas_short: replicas_short.get_or_create_owned(&of),
                    acks_waiting: acks_waiting.get_or_create_owned(&of),
                    ack_requests: ack_requests.get_or_create_owned(&of),
                    client_acks: client_acks.get_or_create_owned(&of),
                    ack_latency: ack_latency.get_or_create_owned(&of),
                    acked_by_clients: acked_by_clients.get_or_create_owned(&of),
                    held_by_namespace: Arc::default(),
                    end_to_end_micros: Counter::default(),
                    end_to_end_count: Counter::default(),
                }
            })
            .collect();
        Metrics {
            registry,
            streams,
            trace_spans_dropped,
            config_reloads,
        }
    }

    /// Each stream's series, in the order the streams were given.
    pub fn streams(&self) -> &[StreamMetrics] {
        &self.streams
    }

    /// The sum of `of` over every stream.
    pub fn sum<T: std::iter::Sum>(&self, of: impl Fn(&StreamMetrics) -> T) -> T {
        self.streams.iter().map(of).sum()
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl StreamMetrics {
    pub fn read(&self, source: Source, n: usize) {
        self.entries_read[source as usize].inc_by(n as u64);
    }

    pub fn dead_lettered(&self, reason: ReasonCode) {
        let i = ReasonCode::ALL.iter().position(|&r| r == reason);
        self.dead_lettered[i.expect("ReasonCode::ALL lists every reason")].inc();
    }

    pub fn connected(&self, up: bool) {
        for gauge in &self.redis_connected {
            gauge.set(i64::from(up));
        }
    }

    /// Whether both connections work.
    pub fn is_connected(&self) -> bool {
        self.redis_connected.iter().all(|gauge| gauge.get() == 1)
    }

    /// An entry delivered and acknowledged, `age` after it was produced.
    pub fn delivered(&self, age: std::time::Duration) {
        self.acknowledged.inc();
        self.end_to_end.observe(age.as_secs_f64());
        self.end_to_end_micros.inc_by(age.as_micros() as u64);
        self.end_to_end_count.inc();
    }

    /// Records what the stream holds per namespace (`counts`, in any order).
    pub fn held_census(&self, mut counts: Vec<(String, usize)>) {
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let not_shown = counts.len().saturating_sub(CENSUS_SHOWN);
        counts.truncate(CENSUS_SHOWN);
        *self.census_lock() = HeldCensus {
            shown: counts,
            not_shown,
        };
    }

    /// The last census taken.
    pub fn census(&self) -> HeldCensus {
        self.census_lock().clone()
    }

    fn census_lock(&self) -> std::sync::MutexGuard<'_, HeldCensus> {
        self.held_by_namespace
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Entries read, whatever their source.
    pub fn entries_read_total(&self) -> u64 {
        self.entries_read.iter().map(Counter::get).sum()
    }

    /// Entries dead-lettered, whatever the reason.
    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered.iter().map(Counter::get).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Metrics {
        Metrics::new(["s"])
    }

    #[test]
    fn every_dead_letter_reason_is_exported_from_the_start() {
        let text = one().render();
        for reason in ReasonCode::ALL {
            let reason = reason.wire();
            let line =
                format!("sio_relay_dead_lettered_total{{stream=\"s\",reason=\"{reason}\"}} 0");
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn every_read_source_is_exported_from_the_start() {
        let text = one().render();
        for source in ["new", "own_pending", "reclaimed"] {
            let line =
                format!("sio_relay_entries_read_total{{stream=\"s\",source=\"{source}\"}} 0");
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let metrics = one();
        let s = &metrics.streams()[0];
        s.read(Source::new, 3);
        s.dead_lettered(ReasonCode::Malformed);
        s.connected(true);
        s.end_to_end.observe(0.002);
        let text = metrics.render();
        for line in [
            "sio_relay_entries_read_total{stream=\"s\",source=\"new\"} 3",
            "sio_relay_dead_lettered_total{stream=\"s\",reason=\"malformed\"} 1",
            "sio_relay_redis_connected{stream=\"s\",connection=\"reader\"} 1",
            "sio_relay_build_info{version=\"",
            "# TYPE sio_relay_end_to_end_latency_seconds histogram",
            "# TYPE sio_relay_publish_duration_seconds histogram",
            "sio_relay_acknowledged_total{stream=\"s\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    /// Each stream counts into its own series, through its handles; the families hold one series
    /// per stream (and per source, reason, connection), `build_info` one for the process.
    #[test]
    fn each_stream_records_into_its_own_series() {
        let metrics = Metrics::new(["a", "b"]);
        let [a, b] = metrics.streams() else {
            panic!("two streams")
        };
        a.delivered(std::time::Duration::from_millis(5));
        a.read(Source::reclaimed, 2);
        b.dead_lettered(ReasonCode::Expired);
        b.group_lag.set(f64::NAN);
        b.connected(true);
        let text = metrics.render();
        for line in [
            "sio_relay_acknowledged_total{stream=\"a\"} 1",
            "sio_relay_acknowledged_total{stream=\"b\"} 0",
            "sio_relay_entries_read_total{stream=\"a\",source=\"reclaimed\"} 2",
            "sio_relay_entries_read_total{stream=\"b\",source=\"reclaimed\"} 0",
            "sio_relay_dead_lettered_total{stream=\"b\",reason=\"expired\"} 1",
            "sio_relay_dead_lettered_total{stream=\"a\",reason=\"expired\"} 0",
            "sio_relay_end_to_end_latency_seconds_count{stream=\"a\"} 1",
            "sio_relay_end_to_end_latency_seconds_count{stream=\"b\"} 0",
            "sio_relay_group_lag{stream=\"b\"} NaN",
            "sio_relay_redis_connected{stream=\"b\",connection=\"writer\"} 1",
            "sio_relay_redis_connected{stream=\"a\",connection=\"writer\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(b.is_connected() && !a.is_connected());
        assert_eq!(metrics.sum(StreamMetrics::entries_read_total), 2);
        assert_eq!(metrics.sum(StreamMetrics::dead_lettered_total), 1);
        let samples = |name: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}{{")))
                .count()
        };
        assert_eq!(samples("sio_relay_acknowledged_total"), 2);
        assert_eq!(
            samples("sio_relay_entries_read_total"),
            2 * Source::ALL.len()
        );
        assert_eq!(
            samples("sio_relay_dead_lettered_total"),
            2 * ReasonCode::ALL.len()
        );
        assert_eq!(samples("sio_relay_build_info"), 1);
    }

    #[test]
    fn the_census_keeps_the_namespaces_holding_most() {
        let metrics = one();
        let s = &metrics.streams()[0];
        let counts = (0..CENSUS_SHOWN + 3)
            .map(|i| (format!("/{i}"), i))
            .collect();
        s.held_census(counts);
        let census = s.census();
        assert_eq!(census.shown.len(), CENSUS_SHOWN);
        assert_eq!(
            census.shown[0],
            (format!("/{}", CENSUS_SHOWN + 2), CENSUS_SHOWN + 2)
        );
        assert_eq!(census.not_shown, 3);
    }
}
