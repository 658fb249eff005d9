//! Graceful shutdown: SIGTERM or SIGINT stops reading, the batch in flight is finished and
//! acknowledged, and the process exits within `shutdown.timeout`.
//!
//! Handlers are installed before the relay connects anywhere: as PID 1 in a container the process
//! has no default action for SIGTERM, so a signal arriving before them would be ignored and the
//! kubelet would fall back to SIGKILL. A second signal exits at once; whatever is unacknowledged then
//! stays pending in Redis, where the next relay finds it.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use signal_hook::consts::signal::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Exit status after a second signal cut the drain short (128 + SIGINT, as shells report it).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Installs the handlers and returns the token they cancel on the first signal.
pub fn listen() -> std::io::Result<CancellationToken> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        if let Some(signal) = signals.next().await {
            info!(
                signal = name(signal),
                "shutting down: no new reads, finishing the batch in flight"
            );
            crate::systemd::stopping();
            cancel.cancel();
        }
        if let Some(signal) = signals.next().await {
            warn!(
                signal = name(signal),
                "second signal: exiting now; unacknowledged entries stay pending for the next relay"
            );
            std::process::exit(FORCED_EXIT_CODE);
        }
    });
    Ok(token)
}

/// Runs `work` to completion (`Some` of its output), or until `timeout` has passed since `token`
/// was cancelled (`None`).
pub async fn drain_within<T>(
    token: &CancellationToken,
    timeout: Duration,
    work: impl Future<Output = T>,
) -> Option<T> {
    let deadline = async {
        token.cancelled().await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        done = work => Some(done),
        () = deadline => {
            warn!(
                timeout = %humantime::format_duration(timeout),
                "shutdown.timeout elapsed before the batch in flight finished; its entries stay pending for the next relay"
            );
            None
        }
    }
}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "signal",
    }
}
