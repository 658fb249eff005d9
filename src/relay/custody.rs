//! The entries in the relay's hands between steps: the held ones (waiting for servers) and those
//! waiting for their clients' acknowledgements. They are the one state every stage shares: none of
//! them may be read, reclaimed or planned a second time while in hand, both count toward what
//! stops reading, and an entry leaves both at once (see [`super::depart`]).

use crate::awaiting::Awaiting;
use crate::delivery::Claim;
use crate::entry::EntryId;
use crate::held::Held;

pub(super) struct Custody {
    pub held: Held,
    /// Entries waiting for their clients' acknowledgements.
    pub awaiting: Awaiting,
}

impl Custody {
    /// Whether `id` is in hand, held or awaiting.
    pub fn contains(&self, id: EntryId) -> bool {
        self.held.contains(id) || self.awaiting.contains(id)
    }

    /// Entries in hand.
    pub fn len(&self) -> usize {
        self.held.len() + self.awaiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.awaiting.is_empty()
    }

    /// Entries wait, for servers or for acknowledgements, up to their limit: no more reading.
    pub fn is_full(&self) -> bool {
        self.held.is_full() || self.awaiting.is_full()
    }

    /// Every entry in hand, held ones first.
    pub fn claims(&self) -> Vec<Claim> {
        let mut claims = self.held.claims();
        claims.extend(self.awaiting.claims());
        claims
    }

    /// Every entry in hand, held ones first.
    pub fn ids(&self) -> Vec<EntryId> {
        self.claims().iter().map(|c| c.id).collect()
    }

    /// Lets `id` go from both.
    pub fn release(&mut self, id: EntryId) {
        self.held.remove(&[id]);
        self.awaiting.remove(&[id]);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn an_entry_is_in_hand_held_or_awaiting_until_released_from_both() {
        let mut custody = Custody {
            held: Held::new(1),
            awaiting: Awaiting::new(1, Duration::from_secs(1), "test"),
        };
        let held = Claim::first_read(EntryId { ms: 1, seq: 0 });
        let waiting = Claim::first_read(EntryId { ms: 2, seq: 0 });
        assert!(custody.is_empty() && !custody.is_full());
        custody.held.insert("/", held);
        assert!(custody.is_full(), "the held limit alone stops reading");
        custody
            .awaiting
            .attempt(waiting, "/", Duration::from_secs(1), 1, Instant::now());
        assert_eq!(custody.len(), 2);
        assert_eq!(custody.ids(), vec![held.id, waiting.id]);
        assert_eq!(custody.claims(), vec![held, waiting]);
        assert!(custody.contains(held.id) && custody.contains(waiting.id));
        custody.release(held.id);
        custody.release(waiting.id);
        assert!(custody.is_empty() && !custody.contains(held.id));
    }
}
