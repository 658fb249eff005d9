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

use crate::config::Config;
use crate::connection;

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

/// One connection for a command, with the relay's timeouts and credentials.
pub async fn connect(cfg: &Config) -> Result<MultiplexedConnection, Failure> {
    let client = connection::client(cfg).map_err(|e| Failure {
        code: EXIT_FAILURE,
        message: format!("redis.url: {e}"),
    })?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cfg.redis.connect_timeout))
        .set_response_timeout(Some(cfg.redis.command_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| Failure {
            code: EXIT_FAILURE,
            message: format!(
                "cannot reach Redis at {}: {e}",
                crate::config::mask_password(&cfg.redis.url)
            ),
        })
}
