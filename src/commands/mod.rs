//! The operator commands of the `sio-relay` binary besides `run`: each module is one subcommand.
//!
//! They share the daemon's configuration (same file, same `SIO_RELAY_*` variables) and its
//! validation and encoding, so what a command writes is exactly what the relay would accept.

pub mod check_config;
pub mod dead;
pub mod monitor;
pub mod send;
pub mod status;

use std::fmt;

use redis::aio::MultiplexedConnection;

use crate::config::{Config, RedisMode};
use crate::connection::{self, AllNodes};

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(super::printable("chat ünïcode"), "chat ünïcode");
        assert_eq!(
            super::printable("a\nINFO forged\u{1b}[31m"),
            "a\\nINFO forged\\u{1b}[31m"
        );
    }
}

/// Why a command failed, with the exit status that says so to scripts.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Exit status of a command that could not do its job (Redis unreachable, unhealthy, ...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for input that is not a valid entry (EX_DATAERR).
pub const EXIT_DATA: u8 = 65;
/// Exit status for a configuration or setup the relay refuses to run with (EX_CONFIG): a bad
/// config file, Redis keys or ACL rules it cannot work with, another relay under its consumer name.
pub const EXIT_CONFIG: u8 = 78;

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Self {
        Failure {
            code: EXIT_FAILURE,
            message: format!("Redis: {e}"),
        }
    }
}

/// `text` safe for a terminal: control characters (newlines that would forge a line, ANSI escape
/// sequences) are shown escaped (`\n`, `\u{1b}`); everything else as it is. For text that came
/// from producers or from Redis.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Runs one command's future on a single-threaded runtime.
pub fn block_on<T>(
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: EXIT_FAILURE,
            message: format!("cannot start the async runtime: {e}"),
        })?
        .block_on(work)
}

pub(crate) fn unreachable(cfg: &Config, e: redis::RedisError) -> Failure {
    Failure {
        code: EXIT_FAILURE,
        message: format!("cannot reach Redis ({}): {e}", cfg.redis.describe()),
    }
}

/// One connection for a command, with the relay's timeouts and credentials, to the Redis that
/// holds the stream (in a cluster, the primary of its slot).
pub async fn connect(cfg: &Config) -> Result<MultiplexedConnection, Failure> {
    let client = connection::client(cfg)
        .await
        .map_err(|e| unreachable(cfg, e))?;
    connection_to(cfg, &client).await
}

/// A connection through `client` with the relay's timeouts.
pub(crate) async fn connection_to(
    cfg: &Config,
    client: &redis::Client,
) -> Result<MultiplexedConnection, Failure> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cfg.redis.connect_timeout))
        .set_response_timeout(Some(cfg.redis.command_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| unreachable(cfg, e))
}

/// A connection for what concerns every node of a cluster (counting servers, publishing); outside
/// a cluster, [`connect`]'s.
pub async fn connect_all_nodes(cfg: &Config) -> Result<AllNodes, Failure> {
    match cfg.redis.mode {
        RedisMode::Cluster => AllNodes::cluster(cfg)
            .await
            .map_err(|e| unreachable(cfg, e)),
        _ => connect(cfg).await.map(AllNodes::One),
    }
}
