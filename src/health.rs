//! Liveness and readiness, as the relay loop reports them and the HTTP probes read them.
//!
//! Liveness never depends on Redis: a Redis outage must not make Kubernetes restart every relay at
//! once. It only says the loop still turns (it beats on every step, also while reconnecting).
//! Readiness says the relay is doing its job: both connections work, the group exists, and it is
//! not shutting down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

    pub fn readiness(&self) -> Readiness {
        if self.ready.load(Ordering::Relaxed) {
            Readiness::Ready
        } else {
            Readiness::NotReady(
                self.reason
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            )
        }
    }
}

/// Whether the relay can do its work now, and if not, why in one line (what `/readyz` says).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

/// The health of every relay loop of the process (one per stream of `source.streams`): live while
/// each loop is, ready while each is. A reason names its stream when there are several.
#[derive(Clone, Default)]
pub struct Loops(Vec<(String, Arc<Health>)>);

impl Loops {
    pub fn add(&mut self, stream: String, health: Arc<Health>) {
        self.0.push((stream, health));
    }

    pub fn is_live(&self) -> bool {
        self.0.iter().all(|(_, health)| health.is_live())
    }

    pub fn readiness(&self) -> Readiness {
        for (stream, health) in &self.0 {
            if let Readiness::NotReady(reason) = health.readiness() {
                return Readiness::NotReady(match self.0.len() {
                    1 => reason,
                    _ => format!("{stream}: {reason}"),
                });
            }
        }
        Readiness::Ready
    }

    pub fn set_not_ready(&self, reason: &str) {
        for (_, health) in &self.0 {
            health.set_not_ready(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_carries_its_reason() {
        let health = Health::new(Duration::from_secs(10));
        assert_eq!(health.readiness(), Readiness::NotReady("starting".into()));
        health.set_ready();
        assert_eq!(health.readiness(), Readiness::Ready);
        health.set_not_ready("Redis is unavailable: connection refused");
        assert_eq!(
            health.readiness(),
            Readiness::NotReady("Redis is unavailable: connection refused".into())
        );
    }

    #[test]
    fn several_loops_are_ready_and_live_only_together() {
        let (a, b) = (
            Arc::new(Health::new(Duration::from_secs(10))),
            Arc::new(Health::new(Duration::from_secs(10))),
        );
        let mut loops = Loops::default();
        loops.add("s:{a}".into(), a.clone());
        loops.add("s:{b}".into(), b.clone());
        a.set_ready();
        assert_eq!(
            loops.readiness(),
            Readiness::NotReady("s:{b}: starting".into())
        );
        b.set_ready();
        assert_eq!(loops.readiness(), Readiness::Ready);
        a.beat();
        b.beat();
        assert!(loops.is_live());
        loops.set_not_ready("shutting down");
        assert_eq!(
            loops.readiness(),
            Readiness::NotReady("s:{a}: shutting down".into())
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
