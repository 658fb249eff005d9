//! The loop's periodic duties and when each is next due: keeping held and waiting entries alive,
//! retrying held ones, expiring those in hand, reclaiming other consumers' idle entries, looking after the group, and the
//! held census. Also how long the loop may rest (a read's BLOCK, a pause while full): never past
//! the next retry nor past what [`super::Relay::wake`] says.
//!
//! On tokio's clock, so that the tests below control time (`tokio::time::pause`) as the loop would
//! live it.

use std::time::Duration;

use tokio::time::Instant;

/// A periodic duty of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Duty {
    /// Renew what the held and waiting entries need to stay this consumer's.
    Keep,
    /// Expire, unpark and release held entries.
    Retry,
    /// Reclaim idle entries of dead consumers.
    Reclaim,
    /// Refresh the group's gauges and position; follow a cluster's list of nodes.
    GroupCheck,
    /// The held census for the console (see [`crate::metrics::StreamMetrics::held_census`]).
    Census,
    /// Dead-letter the held and waiting entries whose lifetime ended (see [`super::expire`]).
    Expire,
}

const DUTIES: usize = 6;

/// When each duty is next due; every one is due at start.
pub(super) struct Duties {
    at: [Instant; DUTIES],
}

impl Duties {
    pub fn new() -> Duties {
        Duties {
            at: [Instant::now(); DUTIES],
        }
    }

    pub fn is_due(&self, duty: Duty, now: Instant) -> bool {
        now >= self.at[duty as usize]
    }

    /// Done at `now`: due again `every` later.
    pub fn done(&mut self, duty: Duty, now: Instant, every: Duration) {
        self.at[duty as usize] = now + every;
    }

    /// Due at once (progress was made: what follows need not wait an interval).
    pub fn due_now(&mut self, duty: Duty) {
        self.at[duty as usize] = Instant::now();
    }

    /// Due within `within` at the latest.
    pub fn due_within(&mut self, duty: Duty, within: Duration) {
        let at = &mut self.at[duty as usize];
        *at = (*at).min(Instant::now() + within);
    }

    /// How long the loop may rest, at most `most`: not past the next time one of `watched` is due,
    /// nor past `wake`.
    pub fn rest(&self, most: Duration, watched: &[Duty], wake: Option<Duration>) -> Duration {
        let mut rest = most;
        let now = Instant::now();
        for duty in watched {
            rest = rest.min(self.at[*duty as usize].saturating_duration_since(now));
        }
        if let Some(wake) = wake {
            rest = rest.min(wake);
        }
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn every_duty_is_due_at_start_then_an_interval_after_it_was_done() {
        let mut duties = Duties::new();
        let now = Instant::now();
        for duty in [
            Duty::Keep,
            Duty::Retry,
            Duty::Reclaim,
            Duty::GroupCheck,
            Duty::Census,
            Duty::Expire,
        ] {
            assert!(duties.is_due(duty, now), "{duty:?}");
        }
        duties.done(Duty::Reclaim, now, 5 * S);
        assert!(!duties.is_due(Duty::Reclaim, Instant::now()));
        assert!(
            duties.is_due(Duty::Keep, Instant::now()),
            "duties are apart"
        );
        tokio::time::advance(5 * S - Duration::from_millis(1)).await;
        assert!(!duties.is_due(Duty::Reclaim, Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(duties.is_due(Duty::Reclaim, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_brings_a_retry_forward_and_never_pushes_it_back() {
        let mut duties = Duties::new();
        duties.done(Duty::Retry, Instant::now(), 10 * S);
        duties.due_within(Duty::Retry, S);
        tokio::time::advance(S).await;
        assert!(duties.is_due(Duty::Retry, Instant::now()));
        duties.done(Duty::Retry, Instant::now(), 10 * S);
        duties.due_within(Duty::Retry, 20 * S);
        tokio::time::advance(10 * S).await;
        assert!(
            duties.is_due(Duty::Retry, Instant::now()),
            "not pushed back"
        );
        duties.done(Duty::Retry, Instant::now(), 10 * S);
        duties.due_now(Duty::Retry);
        assert!(duties.is_due(Duty::Retry, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rest_ends_when_a_watched_duty_is_due_and_at_a_wake() {
        let mut duties = Duties::new();
        let retry = [Duty::Retry];
        duties.done(Duty::Retry, Instant::now(), 3 * S);
        duties.done(Duty::Expire, Instant::now(), 5 * S);
        assert_eq!(duties.rest(10 * S, &[], None), 10 * S);
        assert_eq!(duties.rest(10 * S, &retry, None), 3 * S);
        assert_eq!(duties.rest(10 * S, &retry, Some(S)), S);
        assert_eq!(duties.rest(10 * S, &[Duty::Expire], None), 5 * S);
        duties.due_within(Duty::Expire, 2 * S);
        assert_eq!(
            duties.rest(10 * S, &[Duty::Retry, Duty::Expire], None),
            2 * S
        );
        tokio::time::advance(2 * S).await;
        assert_eq!(duties.rest(10 * S, &retry, None), S);
        tokio::time::advance(5 * S).await;
        assert_eq!(duties.rest(10 * S, &retry, None), Duration::ZERO);
    }
}
