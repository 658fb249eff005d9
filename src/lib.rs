//! sio-relay: a durable relay from a Redis Stream to Socket.IO servers that use
//! `@socket.io/redis-adapter`.
//!
//! Producers XADD entries to a stream; the relay reads them through a consumer group, validates them,
//! publishes each as the exact packet `@socket.io/redis-emitter` would, and acknowledges it only once
//! enough live servers received it. Entries of crashed relays are reclaimed, poison and malformed
//! entries are dead-lettered with a reason, and restarts of Redis, the relay or the servers lose nothing.
//!
//! # Layout
//!
//! - [`config`]: the configuration file and `SIO_RELAY_*` overrides, validated at start.
//! - [`entry`]: the producers' contract; turns raw stream fields into a validated [`entry::Entry`].
//! - [`packet`]: encodes an entry as the adapter's MessagePack packet and picks its channel.
//! - [`reply`]: typed replies of the stream commands, keeping fields exactly as produced.
//! - [`delivery`]: the Lua scripts that publish, dead-letter and acknowledge a batch atomically.
//! - [`dead_letter`]: dead-letter reasons and the fields a dead letter carries.
//! - [`held`]: entries waiting, per namespace and in order, for Socket.IO servers to listen.
//! - [`connection`]: the reader and writer connections, and the reconnection backoff.
//! - [`relay`]: the consumer loop that ties these together.
//! - [`shutdown`]: signal handling and the bounded drain on SIGTERM/SIGINT.
//! - [`logging`]: the `tracing` subscriber (text or JSON).

pub mod config;
pub mod connection;
pub mod dead_letter;
pub mod delivery;
pub mod entry;
pub mod held;
pub mod logging;
pub mod packet;
pub mod relay;
pub mod reply;
pub mod shutdown;

use config::Config;

/// Runs the relay daemon until SIGTERM or SIGINT, then drains within `shutdown.timeout`.
pub async fn run(cfg: Config) -> Result<(), String> {
    let token = shutdown::listen().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let timeout = cfg.shutdown.timeout;
    let relay = relay::Relay::new(cfg, token.clone()).map_err(|e| format!("redis.url: {e}"))?;
    shutdown::drain_within(&token, timeout, relay.run()).await;
    tracing::info!("stopped");
    Ok(())
}
