//! Traces of entries, exported to an OpenTelemetry collector: the producer's trace context an entry
//! carries ([`TraceParent`]), and the export pipeline ([`Exporter`]). Which spans an entry gets, and
//! when they start and end, is the relay loop's (`relay/spans.rs`).
//!
//! Export is the OpenTelemetry SDK's batch processor, on a thread of its own with a blocking HTTP
//! client (OTLP/HTTP, protobuf), so the relay's one-threaded runtime never waits on a collector.
//! Bounded twice: the processor's queue holds at most `telemetry.max_queue` ended spans, and a span
//! that finds it full is dropped and counted; an export the collector refuses or does not answer
//! within `telemetry.export_timeout` drops its spans, counted too
//! (`sio_relay_trace_spans_dropped_total`). Nothing is retried: a trace arriving late is worth
//! less than the memory it would hold while the collector is away.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::{info, warn};

use crate::config::TelemetryConfig;
use crate::metrics::{Metrics, SpanDrop, SpanDropLabels};

/// A producer's W3C trace context (the `traceparent` field, as the HTTP header of W3C Trace
/// Context): the span the relay's spans of the entry are children of. Only [`TraceParent::parse`]
/// makes one, so its IDs are never all zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: TraceId,
    span_id: SpanId,
    flags: TraceFlags,
}

impl TraceParent {
    /// `version-traceid-parentid-flags` as W3C Trace Context level 1 defines it: lowercase hex,
    /// version `00` exactly 55 characters long; a later version (not `ff`) may go on after a `-`,
    /// and its first four parts are read as version `00`'s. `None` for anything else: the W3C
    /// specification has a receiver ignore an invalid `traceparent` and start a new trace.
    pub fn parse(text: &str) -> Option<TraceParent> {
        let bytes = text.as_bytes();
        let version = hex(bytes.get(0..2)?)?;
        let fits = match version[0] {
            0x00 => bytes.len() == 55,
            0xff => false,
            _ => bytes.len() == 55 || bytes.get(55) == Some(&b'-'),
        };
        if !fits || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id: [u8; 16] = hex(&bytes[3..35])?.try_into().ok()?;
        let span_id: [u8; 8] = hex(&bytes[36..52])?.try_into().ok()?;
        let flags = hex(&bytes[53..55])?[0];
        let (trace_id, span_id) = (TraceId::from_bytes(trace_id), SpanId::from_bytes(span_id));
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags: TraceFlags::new(flags),
        })
    }

    /// The producer's span, as a parent from another process.
    pub fn span_context(&self) -> SpanContext {
        SpanContext::new(
            self.trace_id,
            self.span_id,
            self.flags,
            true,
            TraceState::default(),
        )
    }
}

/// Lowercase hex digits, two per byte; `None` for anything else (W3C Trace Context refuses
/// uppercase).
fn hex(digits: &[u8]) -> Option<Vec<u8>> {
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    digits
        .chunks_exact(2)
        .map(|pair| Some(value(pair[0])? << 4 | value(pair[1])?))
        .collect()
}

/// Why traces cannot be exported; the relay does not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP exporter for telemetry.otlp_endpoint: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The export pipeline, shared by every stream's loop.
pub struct Exporter {
    provider: SdkTracerProvider,
    timeout: Duration,
}

impl Exporter {
    /// Starts exporting, when `telemetry.otlp_endpoint` is set; `consumer` names this relay in the
    /// spans' resource (`service.instance.id`).
    pub fn start(
        cfg: &TelemetryConfig,
        consumer: &str,
        metrics: &Metrics,
    ) -> Result<Option<Exporter>, TelemetryError> {
        let Some(url) = cfg.traces_url() else {
            return Ok(None);
        };
        // The exporter's client uses rustls's process-wide provider for https: ring, as Redis's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let queue = Arc::new(Queue {
            waiting: AtomicUsize::new(0),
            max: cfg.max_queue,
            dropped: metrics.trace_spans_dropped.clone(),
            failing: AtomicBool::new(false),
        });
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(&url)
            .with_timeout(cfg.export_timeout)
            .build()?;
        let batches = BatchConfigBuilder::default()
            // Never full before the count of `Bounded` is: the drop is counted there.
            .with_max_queue_size(cfg.max_queue)
            .with_max_export_batch_size(cfg.max_batch)
            .with_scheduled_delay(cfg.batch_delay)
            .build();
        let processor = BatchSpanProcessor::builder(Counted {
            inner: exporter,
            queue: queue.clone(),
        })
        .with_batch_config(batches)
        .build();
        let resource = Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .with_attributes([
                opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                opentelemetry::KeyValue::new("service.instance.id", consumer.to_owned()),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Bounded {
                inner: processor,
                queue,
            })
            .with_resource(resource)
            .build();
        info!(endpoint = %url, "exporting traces of entries");
        Ok(Some(Exporter {
            provider,
            timeout: cfg.export_timeout,
        }))
    }

    /// A tracer for one stream's loop.
    pub fn tracer(&self) -> SdkTracer {
        use opentelemetry::trace::TracerProvider as _;
        let scope = InstrumentationScope::builder("sio-relay")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        self.provider.tracer_with_scope(scope)
    }

    /// Exports what is queued, within `telemetry.export_timeout`, and stops.
    pub fn stop(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(self.timeout) {
            warn!(error = %e, "could not export the last spans before stopping");
        }
    }
}

/// Spans handed to the batch processor and not yet through an export: the bound of its queue and
/// of the batch being exported together.
#[derive(Debug)]
struct Queue {
    waiting: AtomicUsize,
    max: usize,
    dropped: Family<SpanDropLabels, Counter>,
    /// The last export failed: said once when it starts failing, once when it works again.
    failing: AtomicBool,
}

impl Queue {
    fn drop_spans(&self, reason: SpanDrop, n: usize) {
        self.dropped
            .get_or_create(&SpanDropLabels { reason })
            .inc_by(n as u64);
    }
}

/// The batch processor, with ended spans counted in before it takes them: past `max`, a span is
/// dropped and counted here (the processor's own drops are not visible).
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    queue: Arc<Queue>,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queue.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue.max {
            self.queue.waiting.fetch_sub(1, Ordering::AcqRel);
            self.queue.drop_spans(SpanDrop::queue_full, 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, with the spans of each export counted out of the queue, and those of a failed
/// one counted as dropped.
#[derive(Debug)]
struct Counted {
    inner: opentelemetry_otlp::SpanExporter,
    queue: Arc<Queue>,
}

impl SpanExporter for Counted {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.queue.waiting.fetch_sub(spans, Ordering::AcqRel);
        match &result {
            Ok(()) => {
                if self.queue.failing.swap(false, Ordering::AcqRel) {
                    info!("the OpenTelemetry collector takes spans again");
                }
            }
            Err(e) => {
                self.queue.drop_spans(SpanDrop::export_failed, spans);
                if !self.queue.failing.swap(true, Ordering::AcqRel) {
                    warn!(error = %e, "could not export spans to the OpenTelemetry collector (telemetry.otlp_endpoint); dropping them (sio_relay_trace_spans_dropped_total) while it fails, delivery goes on");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_trace_context_names_the_producers_span() {
        let parent = TraceParent::parse(VALID).unwrap();
        let context = parent.span_context();
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_sampled() && context.is_remote());
        let unsampled = TraceParent::parse(&VALID.replace("-01", "-00")).unwrap();
        assert!(!unsampled.span_context().is_sampled());
    }

    #[test]
    fn later_versions_are_read_by_their_first_four_parts() {
        assert!(TraceParent::parse(&VALID.replacen("00", "cc", 1)).is_some());
        assert!(TraceParent::parse(&format!("{}-more", VALID.replacen("00", "cc", 1))).is_some());
        // Version 00 is exactly 55 characters; ff is never valid.
        assert!(TraceParent::parse(&format!("{VALID}-more")).is_none());
        assert!(TraceParent::parse(&VALID.replacen("00", "ff", 1)).is_none());
    }

    #[test]
    fn anything_else_is_not_a_trace_context() {
        for bad in [
            "",
            "00",
            &VALID[..54],
            &VALID.to_uppercase(),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "éé-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
