//! The one route by which an entry leaves the relay's hands. Whichever script took it out of the
//! pending list (the delivery script, the confirmation, the isolation of a refused entry, a
//! client's result) or found it gone, its departure is recorded here and only here: it stops being
//! held or awaited, and the metrics count it once, by how it left.

use super::spans::Ending;
use super::Relay;
use crate::entry::EntryId;
use crate::protocol::ReasonCode;

/// How an entry left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Departure {
    /// Acknowledged once the servers had it (or said nothing within `delivery.confirm_timeout`).
    Delivered,
    /// Acknowledged with its result, once a client acknowledged it (`ack`).
    AckedByClients,
    /// Dead-lettered, and acknowledged with it.
    DeadLettered(ReasonCode),
    /// Deleted from the stream (trimmed, XDEL) before it could be delivered; acknowledged when the
    /// relay still had it pending, forgotten when Redis dropped it from the pending list itself.
    Deleted { acknowledged: bool },
    /// Published by an earlier relay on this Redis process (journaled): acknowledged without
    /// publishing again.
    AlreadyPublished,
}

impl Relay {
    pub(super) fn departed(&mut self, id: EntryId, how: Departure) {
        self.custody.release(id);
        self.spans.ended(id, Ending::Departed(how));
        match how {
            Departure::Delivered => self.metrics.delivered(self.age(id)),
            Departure::AckedByClients => {
                self.metrics.delivered(self.age(id));
                self.metrics.acked_by_clients.inc();
            }
            Departure::DeadLettered(reason) => {
                self.metrics.acknowledged.inc();
                self.metrics.dead_lettered(reason);
            }
            Departure::Deleted { acknowledged } => {
                if acknowledged {
                    self.metrics.acknowledged.inc();
                }
                self.metrics.deleted_pending.inc();
            }
            Departure::AlreadyPublished => {
                self.metrics.acknowledged.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::Config;
    use crate::delivery::Claim;
    use crate::health::Health;
    use crate::metrics::{Metrics, StreamMetrics};

    fn relay() -> (Relay, StreamMetrics) {
        let cfg = Config::default();
        let metrics = Metrics::new([cfg.source.stream.as_str()]).streams()[0].clone();
        let health = Arc::new(Health::new(Duration::from_secs(10)));
        let relay = Relay::new(cfg, CancellationToken::new(), health, metrics.clone());
        (relay, metrics)
    }

    fn claim(ms: u64) -> Claim {
        Claim::first_read(EntryId { ms, seq: 0 })
    }

    #[test]
    fn a_departure_forgets_the_entry_and_is_counted_once_by_how_it_left() {
        let (mut relay, metrics) = relay();
        let (held, waiting) = (claim(1), claim(2));
        relay.custody.held.insert("/", held);
        relay
            .custody
            .awaiting
            .attempt(waiting, "/", Duration::from_secs(1), 1, Instant::now());
        relay.departed(held.id, Departure::DeadLettered(ReasonCode::Expired));
        relay.departed(waiting.id, Departure::AckedByClients);
        assert!(!relay.custody.contains(held.id) && !relay.custody.contains(waiting.id));
        assert_eq!(metrics.acknowledged.get(), 2);
        assert_eq!(metrics.dead_lettered_total(), 1);
        assert_eq!(metrics.acked_by_clients.get(), 1);
        assert_eq!(metrics.end_to_end_count.get(), 1, "delivered, with its age");

        relay.departed(claim(3).id, Departure::Delivered);
        relay.departed(claim(4).id, Departure::AlreadyPublished);
        relay.departed(claim(5).id, Departure::Deleted { acknowledged: true });
        // Dropped from the pending list by Redis itself: gone, not acknowledged by the relay.
        relay.departed(
            claim(6).id,
            Departure::Deleted {
                acknowledged: false,
            },
        );
        assert_eq!(metrics.acknowledged.get(), 5);
        assert_eq!(metrics.deleted_pending.get(), 2);
        assert_eq!(metrics.end_to_end_count.get(), 2);
    }
}
