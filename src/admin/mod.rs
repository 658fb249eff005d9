//! What an operator does to the relay's world from outside the relay, shared by the operator
//! commands and the console: one-off connections, the status report, dead-letter operations,
//! sending an entry and finding what became of one.
//! Below both, so that neither imports the other.

pub mod dead;
pub mod entry;
pub mod send;
pub mod status;

use redis::aio::MultiplexedConnection;

use crate::config::{Config, RedisMode};
use crate::connection::{self, AllNodes};
use crate::exit::{Failure, EXIT_FAILURE};
use crate::fault::LinkError;

pub fn unreachable(cfg: &Config, e: impl Into<LinkError>) -> Failure {
    let e = e.into();
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
pub async fn connection_to(
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
