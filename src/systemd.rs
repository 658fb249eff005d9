//! systemd integration (`Type=notify`): READY=1 once the group is set up and the loop runs,
//! WATCHDOG=1 from the loop itself, STOPPING=1 on shutdown, RELOADING=1 around a SIGHUP reload.
//!
//! Every call is a no-op when `NOTIFY_SOCKET` is unset (Kubernetes, a terminal), so the same binary
//! runs everywhere. Watchdog pings come from the relay loop, not from a timer task: a wedged loop
//! stops pinging and systemd restarts it, while a Redis outage does not, since the loop keeps turning.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::debug;

pub struct Notifier {
    /// Ping period: half of `WatchdogSec`, or `None` without a watchdog.
    watchdog_every: Option<Duration>,
    last_ping: Instant,
    ready_sent: bool,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}

impl Notifier {
    pub fn new() -> Notifier {
        Notifier {
            watchdog_every: sd_notify::watchdog_enabled().map(|d| d / 2),
            last_ping: Instant::now(),
            ready_sent: false,
        }
    }

    /// Tells systemd the relay is up; once.
    pub fn ready(&mut self, status: &str) {
        if !self.ready_sent {
            send(&[NotifyState::Ready, NotifyState::Status(status)]);
            self.ready_sent = true;
        }
    }

    /// Called on every turn of the loop; pings the watchdog when due.
    pub fn alive(&mut self) {
        if let Some(every) = self.watchdog_every {
            if self.last_ping.elapsed() >= every {
                send(&[NotifyState::Watchdog]);
                self.last_ping = Instant::now();
            }
        }
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn reloaded() {
    send(&[NotifyState::Ready]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "cannot notify systemd");
    }
}
