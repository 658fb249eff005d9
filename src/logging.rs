//! Log output: `tracing` events to stderr, as text or JSON, filtered by `log.level` or `RUST_LOG`.
//!
//! stderr reaches journald under systemd and the container log in Kubernetes; text output carries no
//! colours unless stderr is a terminal, so the journal stays readable.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, takes precedence over `log.level`.
pub fn init(cfg: &LogConfig) -> Result<(), String> {
    let directives = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => directives,
        _ => cfg.level.clone(),
    };
    let filter = EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| format!("invalid log filter {directives:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match cfg.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))
}
