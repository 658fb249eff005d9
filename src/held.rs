//! Entries held because no (or too few) Socket.IO servers listened on their namespace.
//!
//! No listener is not the entry's fault, so a held entry keeps its delivery attempts: it stays pending
//! in Redis (the durable copy) and waits here, in memory, to be published again. Entries are held per
//! namespace in stream order, and once a namespace holds anything, its newer entries queue behind,
//! so clients see a namespace's events in the order they were produced. Namespaces with listeners are
//! not affected. The total is bounded: when full, the relay stops reading until entries drain.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::delivery::Deliverable;
use crate::entry::EntryId;

#[derive(Debug)]
pub struct Held {
    by_nsp: HashMap<String, VecDeque<Deliverable>>,
    ids: HashSet<EntryId>,
    limit: usize,
}

impl Held {
    pub fn new(limit: usize) -> Held {
        Held {
            by_nsp: HashMap::new(),
            ids: HashSet::new(),
            limit,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// True once `delivery.max_held` entries are held: time to stop reading new ones.
    pub fn is_full(&self) -> bool {
        self.ids.len() >= self.limit
    }

    pub fn contains(&self, id: EntryId) -> bool {
        self.ids.contains(&id)
    }

    /// True when `nsp` has held entries, so a newer entry of it must queue behind them.
    pub fn is_holding(&self, nsp: &str) -> bool {
        self.by_nsp.contains_key(nsp)
    }

    /// Queues `entry` behind the entries already held for its namespace.
    pub fn push(&mut self, entry: Deliverable) {
        if self.ids.insert(entry.id()) {
            self.by_nsp
                .entry(entry.nsp.clone())
                .or_default()
                .push_back(entry);
        }
    }

    /// The namespaces that hold entries.
    pub fn namespaces(&self) -> Vec<String> {
        self.by_nsp.keys().cloned().collect()
    }

    /// The oldest held entries of `nsp`, at most `n`.
    pub fn front(&self, nsp: &str, n: usize) -> impl Iterator<Item = &Deliverable> {
        self.by_nsp.get(nsp).into_iter().flatten().take(n)
    }

    /// Removes and returns the oldest held entry of `nsp`.
    pub fn pop_front(&mut self, nsp: &str) -> Option<Deliverable> {
        let queue = self.by_nsp.get_mut(nsp)?;
        let entry = queue.pop_front();
        if queue.is_empty() {
            self.by_nsp.remove(nsp);
        }
        if let Some(entry) = &entry {
            self.ids.remove(&entry.id());
        }
        entry
    }

    /// Forgets the entries with these IDs (another relay owns them now).
    pub fn remove(&mut self, ids: &[EntryId]) {
        let gone: HashSet<EntryId> = ids.iter().copied().collect();
        self.by_nsp.retain(|_, queue| {
            queue.retain(|e| !gone.contains(&e.id()));
            !queue.is_empty()
        });
        self.ids.retain(|id| !gone.contains(id));
    }

    pub fn ids(&self) -> Vec<EntryId> {
        self.ids.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::RawEntry;
    use crate::packet::Packet;

    fn entry(ms: u64, nsp: &str) -> Deliverable {
        Deliverable {
            raw: RawEntry {
                id: EntryId { ms, seq: 0 },
                fields: Vec::new(),
            },
            deliveries: 1,
            nsp: nsp.into(),
            packet: Packet {
                channel: String::new(),
                payload: Vec::new(),
            },
        }
    }

    #[test]
    fn namespaces_queue_in_order_and_independently() {
        let mut held = Held::new(3);
        held.push(entry(1, "/"));
        held.push(entry(2, "/admin"));
        held.push(entry(3, "/"));
        held.push(entry(3, "/"));
        assert_eq!(held.len(), 3, "an entry is held once");
        assert!(held.is_full());
        assert!(held.is_holding("/") && held.is_holding("/admin") && !held.is_holding("/x"));
        let front: Vec<u64> = held.front("/", 10).map(|e| e.id().ms).collect();
        assert_eq!(front, [1, 3]);
        assert_eq!(held.pop_front("/").unwrap().id().ms, 1);
        assert!(!held.is_full());
        held.remove(&[EntryId { ms: 3, seq: 0 }]);
        assert!(!held.is_holding("/"));
        assert_eq!(held.ids(), vec![EntryId { ms: 2, seq: 0 }]);
    }
}
