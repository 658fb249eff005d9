//! What went wrong in a step of the relay, sorted by what to do about it.
//!
//! A Redis error is not one thing. A lost link calls for a reconnection with backoff; a consumer group
//! that vanished, for creating it again; Redis refusing work because of its own state (out of memory,
//! an ACL rule, a key of the wrong type) for waiting without reconnecting, since reconnecting changes
//! nothing and each new connection would count deliveries again; a batch that Redis refuses because
//! of what is in it, for splitting it until the entry at fault is found; and a few conditions, for
//! stopping. Treating them all as "Redis is unavailable" is how a relay republishes a batch 70 times
//! or wedges on one entry forever.

use std::fmt;
use std::io;
use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::exit::EXIT_SOFTWARE;

/// Why a step of the relay stopped.
#[derive(Debug)]
pub enum Fault {
    /// The connection is gone or Redis cannot serve yet (I/O error, timeout, loading, failover):
    /// reconnect after a backoff delay.
    Link(LinkError),
    /// The consumer group, or the stream with it, does not exist any more: create it again.
    NoGroup,
    /// Redis refuses work for a reason of its own (out of memory, ACL, a key of the wrong type,
    /// persistence errors). Nothing happened; wait and try again on the same connection.
    Refused(String),
    /// The delivery script failed on a batch for a reason that may lie in the batch: split it.
    Batch(RedisError),
    /// The relay must stop, with this exit status.
    Fatal { code: u8, message: String },
}

impl Fault {
    /// A bug of the relay's own (see [`EXIT_SOFTWARE`]): it stops, saying what went wrong,
    /// instead of reconnecting as after an outage and hiding it.
    pub fn bug(what: impl fmt::Display) -> Fault {
        Fault::Fatal {
            code: EXIT_SOFTWARE,
            message: format!("bug: {what} (please report it)"),
        }
    }

    /// Sorts an error returned by a command other than the delivery script.
    pub fn of(err: RedisError) -> Fault {
        match classify(&err) {
            Class::Batch => Fault::Refused(describe(&err)),
            Class::Link => Fault::Link(LinkError::Redis(err)),
            Class::NoGroup => Fault::NoGroup,
            Class::Refused => Fault::Refused(describe(&err)),
        }
    }

    /// Sorts an error returned by the delivery script for a batch.
    pub fn of_batch(err: RedisError) -> Fault {
        match classify(&err) {
            Class::Batch => Fault::Batch(err),
            _ => Fault::of(err),
        }
    }
}

impl From<RedisError> for Fault {
    fn from(err: RedisError) -> Fault {
        Fault::of(err)
    }
}

/// What the relay's own connection code found wrong with the link to Redis, besides what Redis and
/// redis-rs said: each one a lost link, reconnected after a backoff delay.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// What redis-rs or Redis said; a [`Fault`] sorts it (a refusal, a vanished group, ...).
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
    #[error("timed out {0}")]
    TimedOut(&'static str),
    #[error("{what} did not answer within {within:?}")]
    NoAnswer {
        what: &'static str,
        within: Duration,
    },
    #[error("cannot read a file named in the configuration: {key} = {path}: {source}")]
    File {
        key: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("no node of the cluster serves the stream's slot ({key:?}, slot {slot})")]
    NoSlotOwner { key: String, slot: u16 },
    #[error("{why}: {address}")]
    Address { why: &'static str, address: String },
    /// CLUSTER SLOTS gave a node no host, which means the node that answered, and no node the
    /// relay could name answered it.
    #[error("the cluster names no host for its node on port {port} (an empty endpoint: the host of the node asked), and none of the nodes of redis.urls answered CLUSTER SLOTS")]
    EmptyEndpoint { port: u16 },
    #[error("INFO server has no run_id")]
    NoRunId,
}

impl From<LinkError> for Fault {
    fn from(err: LinkError) -> Fault {
        match err {
            LinkError::Redis(err) => Fault::of(err),
            other => Fault::Link(other),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Link(err) => write!(f, "{err}"),
            Fault::NoGroup => f.write_str("the consumer group does not exist"),
            Fault::Refused(reason) => f.write_str(reason),
            Fault::Batch(err) => write!(f, "{err}"),
            Fault::Fatal { message, .. } => f.write_str(message),
        }
    }
}

enum Class {
    Link,
    NoGroup,
    Refused,
    Batch,
}

fn classify(err: &RedisError) -> Class {
    if err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
    {
        return Class::Link;
    }
    match err.kind() {
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => return Class::Link,
        ErrorKind::Server(ServerErrorKind::NoPerm | ServerErrorKind::ExecAbort) => {
            return Class::Refused
        }
        ErrorKind::Io
        | ErrorKind::AuthenticationFailed
        | ErrorKind::Parse
        | ErrorKind::UnexpectedReturnType => return Class::Link,
        _ => {}
    }
    match err.code() {
        // Not an answer from Redis (a reply the relay could not read, a failed task): start over.
        None => Class::Link,
        Some("NOGROUP") => Class::NoGroup,
        // A master demoted to replica (a failover) unblocks reads and refuses writes: reconnect,
        // to the new one.
        Some("BUSY" | "UNBLOCKED" | "READONLY") => Class::Link,
        // A cluster moving the stream's slot, failing over, or not serving every slot yet (also
        // when a script's call meets it, which redis-rs does not sort): reconnect to the node that
        // serves the slot now.
        Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN") => Class::Link,
        Some("OOM" | "WRONGTYPE" | "MISCONF" | "NOPERM" | "SIORELAY" | "NOREPLICAS") => {
            Class::Refused
        }
        // What is left is a script's runtime error or an error no other case explains: when it comes
        // from a batch, the batch is split; elsewhere it is waited out.
        _ => Class::Batch,
    }
}

/// The error as an operator reads it: the server's message without redis-rs's decoration.
fn describe(err: &RedisError) -> String {
    match (err.code(), err.detail()) {
        (Some("SIORELAY"), Some(detail)) => detail.to_owned(),
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_links_own_errors_are_a_lost_link_and_redis_errors_are_sorted_as_redis_errors() {
        for own in [
            LinkError::Protocol("a reply line too long".into()),
            LinkError::TimedOut("reading a reply"),
            LinkError::NoRunId,
            LinkError::NoSlotOwner {
                key: "s".into(),
                slot: 1,
            },
        ] {
            assert!(matches!(Fault::from(own), Fault::Link(_)));
        }
        let nogroup = LinkError::Redis(server("NOGROUP", "No such key"));
        assert!(matches!(Fault::from(nogroup), Fault::NoGroup));
        let oom = LinkError::Redis(server("OOM", "command not allowed"));
        assert!(matches!(Fault::from(oom), Fault::Refused(_)));
    }

    fn server(code: &str, detail: &str) -> RedisError {
        redis::make_extension_error(code.into(), Some(detail.into()))
    }

    #[test]
    fn each_error_is_handled_by_what_it_means() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(Fault::of(io), Fault::Link(_)));
        assert!(matches!(
            Fault::of(server("NOGROUP", "No such key")),
            Fault::NoGroup
        ));
        for code in ["OOM", "WRONGTYPE", "NOPERM", "MISCONF"] {
            let fault = Fault::of_batch(server(code, "refused"));
            assert!(
                matches!(&fault, Fault::Refused(r) if r == &format!("{code} refused")),
                "{code}: {fault:?}"
            );
        }
        assert!(matches!(
            Fault::of_batch(server("SIORELAY", "WRONGTYPE the dead-letter stream ...")),
            Fault::Refused(r) if r == "WRONGTYPE the dead-letter stream ..."
        ));
        let script_error = server("ERR", "user_script:2: too many results to unpack");
        assert!(matches!(
            Fault::of_batch(script_error.clone()),
            Fault::Batch(_)
        ));
        assert!(
            matches!(Fault::of(script_error), Fault::Refused(_)),
            "outside a batch, nothing to split"
        );
        for code in [
            "BUSY",
            "UNBLOCKED",
            "READONLY",
            "MOVED",
            "ASK",
            "TRYAGAIN",
            "CLUSTERDOWN",
        ] {
            assert!(
                matches!(Fault::of_batch(server(code, "x")), Fault::Link(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn a_bug_stops_the_relay_and_says_so() {
        let panicked = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { tokio::spawn(async { panic!("boom") }).await.unwrap_err() });
        let fault = Fault::bug(format!("the read task failed: {panicked}"));
        let Fault::Fatal { code, message } = &fault else {
            panic!("not fatal: {fault:?}");
        };
        assert_eq!(*code, EXIT_SOFTWARE);
        assert!(
            message.starts_with("bug: the read task failed"),
            "{message}"
        );
        assert!(message.contains("panicked"), "{message}");
    }
}
