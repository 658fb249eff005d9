//! sio-relay: a durable relay from a Redis Stream to Socket.IO servers that use
//! `@socket.io/redis-adapter` (classic or sharded), `@socket.io/redis-streams-adapter`, or
//! python-socketio's Redis manager.
//!
//! Producers XADD entries to a stream; the relay reads them through a consumer group, validates them,
//! publishes each as the exact packet `@socket.io/redis-emitter` would (or appends it to the streams
//! adapter's stream, or publishes python-socketio's message), and acknowledges it only once enough
//! live servers received it. Entries of crashed relays are reclaimed, poison and malformed
//! entries are dead-lettered with a reason, and restarts of Redis, the relay or the servers lose nothing.
//!
//! # Layout
//!
//! - [`commands`]: the operator subcommands (`check-config`, ...), one module each.
//! - [`admin`]: what the commands and the console both do from outside the relay: one-off
//!   connections, the status report, dead-letter browsing, replay and drop, sending an entry and
//!   finding what became of one.
//! - [`config`]: the configuration file and `SIO_RELAY_*` overrides, validated at start.
//! - [`entry`]: the producers' contract; turns raw stream fields into a validated [`entry::Entry`].
//! - [`packet`]: encodes an entry as the servers' adapter reads it (classic, sharded, streams or
//!   python-socketio), picks its channel or stream, and reads packets back for the monitor.
//! - [`partition`]: which of several streams (`source.streams`) an entry goes to.
//! - [`servers`]: counts the Socket.IO servers listening on a namespace, as their adapter does.
//! - [`reader`]: entries read off the socket under byte and field limits, whatever their size,
//!   keeping fields exactly as produced.
//! - [`delivery`]: the Lua scripts that publish, hold, dead-letter and acknowledge a batch, all or
//!   nothing, and confirm it once the servers have it.
//! - [`dead_letter`]: dead-letter reasons and the fields a dead letter carries.
//! - [`protocol`]: what the relay and its Lua scripts spell alike (dead-letter reasons, the
//!   delivery script's operations, flags and outcomes), defined once and given to every script.
//! - [`held`]: entries waiting, per namespace and in order, for Socket.IO servers to listen.
//! - [`confirming`]: published entries until the servers say they have them (or left without).
//! - [`awaiting`]: entries waiting for their clients' acknowledgements, sent again until one comes.
//! - [`replies`]: listens for the servers' answers to a broadcast with acknowledgements.
//! - [`flow`]: flow control towards the servers' Pub/Sub output buffers.
//! - [`lease`]: one relay per consumer name.
//! - [`fault`]: what went wrong in a step, sorted by what to do about it.
//! - [`exit`]: how the process ends: a failure and the exit status that says why.
//! - [`connection`]: the connections to the Redis that holds the stream (found through the
//!   sentinels or the cluster's slots) and to every node of a cluster, and the reconnection backoff.
//! - [`relay`]: the consumer loop that ties these together.
//! - [`health`]: liveness and readiness as the loop reports them.
//! - [`metrics`]: the Prometheus metrics the loop records.
//! - [`traces`]: the producer's trace context of an entry, and the export of the spans the loop
//!   records (`[telemetry]`) to an OpenTelemetry collector.
//! - [`http`]: the `/livez`, `/readyz` and `/metrics` listener.
//! - [`console`]: the operator console served on it: the live flow, dead letters to browse,
//!   replay and drop, and a form that sends an entry and follows it.
//! - [`systemd`]: READY, WATCHDOG, STOPPING and RELOADING notifications.
//! - [`shutdown`]: signal handling and the bounded drain on SIGTERM/SIGINT.
//! - [`reload`]: SIGHUP re-reads the configuration and applies what can change live.
//! - [`logging`]: the `tracing` subscriber (text or JSON).

// Public: what the binary, the integration tests and the fuzz targets use (the domain, the
// configuration, the commands). The rest is the daemon's inside, reachable only through [`run`];
// `cargo doc --document-private-items` shows it, and the Layout above links it.
#![cfg_attr(doc, allow(rustdoc::private_intra_doc_links))]

pub(crate) mod admin;
pub(crate) mod awaiting;
pub mod commands;
pub mod config;
pub(crate) mod confirming;
pub mod connection;
pub(crate) mod console;
pub mod dead_letter;
pub mod delivery;
pub mod entry;
pub mod exit;
pub(crate) mod fault;
pub(crate) mod flow;
pub(crate) mod health;
pub(crate) mod held;
pub(crate) mod http;
pub(crate) mod lease;
pub mod logging;
pub(crate) mod metrics;
pub mod packet;
pub mod partition;
pub mod protocol;
pub(crate) mod reader;
pub(crate) mod relay;
pub(crate) mod reload;
pub(crate) mod replies;
pub(crate) mod servers;
pub(crate) mod shutdown;
pub(crate) mod systemd;
pub(crate) mod traces;

use std::sync::Arc;

use config::Config;
use exit::{Failure, EXIT_FAILURE};
use tokio_util::sync::CancellationToken;

/// Runs the relay daemon until SIGTERM or SIGINT, then drains within `shutdown.timeout`. SIGHUP
/// reloads `config_path` (see [`reload`]), changing the log level through `level`. An error carries
/// the exit status that says why it stopped.
pub async fn run(
    cfg: Config,
    config_path: Option<std::path::PathBuf>,
    level: logging::LevelHandle,
) -> Result<(), Failure> {
    let failure = |message: String| Failure {
        code: EXIT_FAILURE,
        message,
    };
    let token =
        shutdown::listen().map_err(|e| failure(format!("cannot install signal handlers: {e}")))?;
    let partitions = cfg.partitions();
    let metrics = Arc::new(metrics::Metrics::new(
        partitions.iter().map(|p| p.source.stream.as_str()),
    ));
    reload::listen(config_path, cfg.clone(), level, metrics.clone())
        .map_err(|e| failure(format!("cannot install the SIGHUP handler: {e}")))?;
    let stalled_after = connection::read_timeout(cfg.source.block)
        + cfg.redis.command_timeout * 2
        + cfg.redis.backoff_max
        + std::time::Duration::from_secs(10);
    let exporter = traces::Exporter::start(&cfg.telemetry, &cfg.source.consumer, &metrics)
        .map_err(|e| failure(e.to_string()))?;
    // One relay loop per stream (see `partition`), side by side, each recording into its stream's
    // series.
    let mut loops = health::Loops::default();
    let timeout = cfg.shutdown.timeout;
    let relays: Vec<relay::Relay> = partitions
        .into_iter()
        .zip(metrics.streams().iter().cloned())
        .map(|(partition, its_metrics)| {
            let health = Arc::new(health::Health::new(stalled_after));
            loops.add(partition.source.stream.clone(), health.clone());
            let relay = relay::Relay::new(partition, token.clone(), health, its_metrics);
            match &exporter {
                Some(exporter) => relay.traced(exporter, &metrics.trace_spans_dropped),
                None => relay,
            }
        })
        .collect();
    if let Some(addr) = cfg.http.addr() {
        let listener = http::bind(addr).map_err(|e| failure(e.to_string()))?;
        let probes = http::Probes {
            health: loops.clone(),
            metrics: metrics.clone(),
            console: cfg
                .http
                .console
                .then(|| Arc::new(console::Console::new(cfg.clone(), metrics.clone()))),
        };
        http::spawn(listener, probes, token.clone())
            .map_err(|e| failure(format!("cannot start the HTTP listener: {e}")))?;
    }
    // Not ready from the first signal on, while the batch in flight drains.
    tokio::spawn({
        let token = token.clone();
        async move {
            token.cancelled().await;
            loops.set_not_ready("shutting down");
        }
    });
    let outcome = shutdown::drain_within(&token, timeout, run_all(relays, token.clone()))
        .await
        .unwrap_or(Ok(()));
    if let Some(exporter) = exporter {
        exporter.stop();
    }
    if outcome.is_ok() {
        tracing::info!("stopped");
    }
    outcome
}

/// Runs the relay loops until each returns. The first that fails stops the others (through the
/// shutdown token, so they finish cleanly) and its failure is the process's.
async fn run_all(relays: Vec<relay::Relay>, token: CancellationToken) -> Result<(), Failure> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    // Polled together on this task: the runtime has one thread, and each loop awaits Redis.
    let mut running: FuturesUnordered<_> = relays.into_iter().map(relay::Relay::run).collect();
    let mut outcome = Ok(());
    while let Some(result) = running.next().await {
        if let (Err(failure), true) = (result, outcome.is_ok()) {
            token.cancel();
            outcome = Err(failure);
        }
    }
    outcome
}
