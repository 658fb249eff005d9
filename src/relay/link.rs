//! The relay's link to Redis as operators see it: starting, up, down (reconnecting with backoff), or
//! up but refused (Redis declines the relay's work). Each change is logged once, and readiness, the
//! connection gauges and the backoff follow it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::connection::Backoff;
use crate::fault::LinkError;
use crate::health::Health;
use crate::metrics::StreamMetrics;

#[derive(Clone, Debug, PartialEq)]
enum State {
    Starting,
    Up,
    Down {
        since: Instant,
        attempts: u32,
    },
    /// Connected, but Redis refuses the relay's work (memory, ACL, key types).
    Refused {
        since: Instant,
        reason: String,
    },
}

pub(super) struct Link {
    state: State,
    backoff: Backoff,
    /// "relaying" was logged: the relay has been up once.
    announced: bool,
    /// Where Redis is, passwords masked, for logs.
    redis_url: String,
    health: Arc<Health>,
    metrics: StreamMetrics,
}

impl Link {
    pub fn new(cfg: &Config, health: Arc<Health>, metrics: StreamMetrics) -> Link {
        Link {
            state: State::Starting,
            backoff: Backoff::new(cfg.redis.backoff_min, cfg.redis.backoff_max),
            announced: false,
            redis_url: cfg.redis.describe(),
            health,
            metrics,
        }
    }

    /// The relay works again (or for the first time).
    pub fn up(&mut self, cfg: &Config) {
        let (redis, src) = (&self.redis_url, &cfg.source);
        let (stream, group, consumer) = (&src.stream, &src.group, &src.consumer);
        match (&self.state, self.announced) {
            (State::Down { since, attempts }, _) => info!(
                %redis, %stream, %group, %consumer, down_for = %took(since), attempts,
                "Redis is back; relaying"
            ),
            (State::Refused { since, .. }, true) => info!(
                refused_for = %took(since),
                "Redis accepts the relay's work again; relaying"
            ),
            (_, false) => info!(%redis, %stream, %group, %consumer, "relaying"),
            _ => {}
        }
        self.announced = true;
        self.state = State::Up;
        self.backoff.reset();
        self.health.set_ready();
        self.metrics.redis_refusing.set(0);
        self.metrics.connected(true);
    }

    /// The connection is gone or unusable: the relay reconnects.
    pub fn down(&mut self, err: &LinkError) {
        self.health.set_not_ready(format!("Redis: {err}"));
        self.metrics.connected(false);
        self.state = match self.state {
            State::Down { since, attempts } => {
                debug!(error = %err, attempts, "Redis still unavailable");
                State::Down {
                    since,
                    attempts: attempts + 1,
                }
            }
            _ => {
                warn!(redis = %self.redis_url, error = %err,
                    "Redis is unavailable; reconnecting with backoff");
                State::Down {
                    since: Instant::now(),
                    attempts: 1,
                }
            }
        };
    }

    /// Redis refuses the relay's work: nothing happened, the connection is fine; waited out.
    pub fn refused(&mut self, reason: String) {
        self.health
            .set_not_ready(format!("Redis refuses the relay's work: {reason}"));
        self.metrics.redis_refusing.set(1);
        match &self.state {
            State::Refused { reason: known, .. } if *known == reason => {
                debug!(%reason, "Redis still refuses the relay's work")
            }
            _ => {
                error!(%reason, "Redis refuses the relay's work; nothing was published or acknowledged; retrying with backoff until it accepts");
                self.state = State::Refused {
                    since: Instant::now(),
                    reason,
                };
            }
        }
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.backoff.next_delay()
    }
}

fn took(since: &Instant) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(since.elapsed().as_millis() as u64))
}
