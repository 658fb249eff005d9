//! Log output: `tracing` events to stderr, as text or JSON, filtered by `log.level` or `RUST_LOG`.
//!
//! stderr reaches journald under systemd and the container log in Kubernetes; text output carries no
//! colours unless stderr is a terminal, so the journal stays readable. The filter sits in a reload
//! layer at the root (reloading a per-layer filter panics, tokio-rs/tracing#1629), so SIGHUP can
//! change the level of a running relay.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

/// Why the logger could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log filter {directives:?}: {problem}")]
    Filter { directives: String, problem: String },
    #[error("cannot change the log level: {0}")]
    Reload(#[from] reload::Error),
    #[error("cannot install the logger: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
}

/// Changes the level of the installed logger.
pub struct LevelHandle(reload::Handle<EnvFilter, Registry>);

impl LevelHandle {
    /// Applies `level` unless `RUST_LOG` is set (it wins, as at start). Returns what is in force.
    pub fn set(&self, level: &str) -> Result<String, LogError> {
        let directives = effective_directives(level);
        let filter = parse(&directives)?;
        self.0.reload(filter)?;
        Ok(directives)
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, takes precedence over `log.level`.
pub fn init(cfg: &LogConfig) -> Result<LevelHandle, LogError> {
    let filter = parse(&effective_directives(&cfg.level))?;
    let (filter, handle) = reload::Layer::new(filter);
    let output = match cfg.format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()?;
    Ok(LevelHandle(handle))
}

fn effective_directives(level: &str) -> String {
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => directives,
        _ => quiet_redis_rs(level),
    }
}

/// `log.level`, with redis-rs's own events at `error` unless it names the `redis` target: the relay
/// reports every failure of a connection itself, with what it is doing about it, while redis-rs
/// would add a warning per node and per attempt during a cluster outage (several lines a second).
fn quiet_redis_rs(level: &str) -> String {
    let names_redis = level
        .split(',')
        .any(|directive| directive.trim().starts_with("redis"));
    if names_redis {
        level.to_owned()
    } else {
        format!("{level},redis=error")
    }
}

fn parse(directives: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| LogError::Filter {
            directives: directives.to_owned(),
            problem: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_rs_speaks_at_error_unless_the_level_names_it() {
        assert_eq!(quiet_redis_rs("info"), "info,redis=error");
        assert_eq!(
            quiet_redis_rs("warn,sio_relay=debug"),
            "warn,sio_relay=debug,redis=error"
        );
        assert_eq!(quiet_redis_rs("debug,redis=debug"), "debug,redis=debug");
        assert!(parse(&quiet_redis_rs("info")).is_ok());
    }
}
