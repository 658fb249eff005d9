//! Liveness and readiness, as the relay loop reports them and the HTTP probes read them.
//!
//! Liveness never depends on Redis: a Redis outage must not make Kubernetes restart every relay at
//! once. It only says the loop still turns (it beats on every step, also while reconnecting).
//! Readiness says the relay is doing its job: both connections work, the group exists, and it is
//! not shutting down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Health {
    started: Instant,
    last_beat_ms: AtomicU64,
    ready: AtomicBool,
    /// Why the relay is not ready, for the `/readyz` body.
    reason: Mutex<String>,
    stalled_after: Duration,
}

impl Health {
    /// `stalled_after`: how long the loop may go without a beat before it counts as stuck.
    pub fn new(stalled_after: Duration) -> Health {
        Health {
            started: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            reason: Mutex::new("starting".into()),
            stalled_after,
        }
    }

    /// Called by the loop on every step.
    pub fn beat(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_beat_ms.store(now, Ordering::Relaxed);
    }

    pub fn is_live(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) <= self.stalled_after.as_millis() as u64
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.into();
        self.ready.store(false, Ordering::Relaxed);
    }

    /// `Ok` when ready, else the one-line reason.
    pub fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(self
                .reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_carries_its_reason() {
        let health = Health::new(Duration::from_secs(10));
        assert_eq!(health.readiness(), Err("starting".into()));
        health.set_ready();
        assert_eq!(health.readiness(), Ok(()));
        health.set_not_ready("Redis is unavailable: connection refused");
        assert_eq!(
            health.readiness(),
            Err("Redis is unavailable: connection refused".into())
        );
    }

    #[test]
    fn liveness_needs_beats() {
        let health = Health::new(Duration::from_millis(50));
        health.beat();
        assert!(health.is_live());
        std::thread::sleep(Duration::from_millis(120));
        assert!(!health.is_live());
        health.beat();
        assert!(health.is_live());
    }
}
