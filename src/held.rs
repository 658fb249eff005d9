//! Entries held because no (or too few) Socket.IO servers listen on their namespace.
//!
//! No listener is not the entry's fault, so a held entry keeps its delivery attempts: it stays pending
//! in Redis (the durable copy), its delivery count is recorded in the held hash by the delivery
//! script (so a restart or another relay restores it instead of counting one more), and this index
//! remembers it per namespace, in ID order. Only IDs and counts are kept here: the fields are read
//! again from the stream when servers come back, so holding costs a few dozen bytes per entry
//! whatever the entries' size. Once a namespace holds anything, its newer entries queue behind, so
//! clients see a namespace's events in the order they were produced; namespaces with listeners are
//! not affected. The total is bounded: when full, the relay stops reading until entries drain.
//!
//! Entries Redis refuses even on their own, and that cannot be dead-lettered either (the dead-letter
//! stream itself refuses them), are *parked* here: they wait, pending, apart from any namespace, so
//! that the entries behind them keep flowing, and are tried again every retry interval.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::delivery::Claim;
use crate::entry::EntryId;

#[derive(Debug)]
pub struct Held {
    by_nsp: HashMap<String, BTreeMap<EntryId, Claim>>,
    nsp_of: HashMap<EntryId, String>,
    parked: BTreeMap<EntryId, Claim>,
    /// Parked once already: not news when parked again.
    parked_before: HashSet<EntryId>,
    limit: usize,
}

impl Held {
    pub fn new(limit: usize) -> Held {
        Held {
            by_nsp: HashMap::new(),
            nsp_of: HashMap::new(),
            parked: BTreeMap::new(),
            parked_before: HashSet::new(),
            limit,
        }
    }

    pub fn len(&self) -> usize {
        self.nsp_of.len() + self.parked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nsp_of.is_empty() && self.parked.is_empty()
    }

    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Parks `claim`; true the first time this entry is parked.
    pub fn park(&mut self, claim: Claim) -> bool {
        self.parked.insert(claim.id, claim);
        self.parked_before.insert(claim.id)
    }

    /// Removes and returns every parked entry, to be tried again.
    pub fn take_parked(&mut self) -> Vec<Claim> {
        std::mem::take(&mut self.parked).into_values().collect()
    }

    /// True once `delivery.max_held` entries are held: time to stop reading new ones.
    pub fn is_full(&self) -> bool {
        self.len() >= self.limit
    }

    pub fn contains(&self, id: EntryId) -> bool {
        self.nsp_of.contains_key(&id) || self.parked.contains_key(&id)
    }

    /// True when `nsp` holds an entry older than `id`, which must then wait behind it.
    pub fn holds_before(&self, nsp: &str, id: EntryId) -> bool {
        self.by_nsp
            .get(nsp)
            .and_then(|queue| queue.keys().next())
            .is_some_and(|first| *first < id)
    }

    pub fn is_holding(&self, nsp: &str) -> bool {
        self.by_nsp.contains_key(nsp)
    }

    /// Holds `claim` among its namespace's entries, in ID order.
    pub fn insert(&mut self, nsp: &str, claim: Claim) {
        if self.nsp_of.insert(claim.id, nsp.to_owned()).is_none() {
            self.by_nsp
                .entry(nsp.to_owned())
                .or_default()
                .insert(claim.id, claim);
        }
    }

    /// How many entries each namespace holds.
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.by_nsp
            .iter()
            .map(|(nsp, queue)| (nsp.clone(), queue.len()))
            .collect()
    }

    /// The namespaces that hold entries.
    pub fn namespaces(&self) -> Vec<String> {
        self.by_nsp.keys().cloned().collect()
    }

    /// Removes and returns the oldest `n` held entries of `nsp`.
    pub fn take_front(&mut self, nsp: &str, n: usize) -> Vec<Claim> {
        let Some(queue) = self.by_nsp.get_mut(nsp) else {
            return Vec::new();
        };
        let ids: Vec<EntryId> = queue.keys().take(n).copied().collect();
        let taken: Vec<Claim> = ids.iter().filter_map(|id| queue.remove(id)).collect();
        if queue.is_empty() {
            self.by_nsp.remove(nsp);
        }
        for claim in &taken {
            self.nsp_of.remove(&claim.id);
        }
        taken
    }

    /// Forgets the entries with these IDs (delivered, or another relay owns them now).
    pub fn remove(&mut self, ids: &[EntryId]) {
        for id in ids {
            self.parked.remove(id);
            self.parked_before.remove(id);
            if let Some(nsp) = self.nsp_of.remove(id) {
                if let Some(queue) = self.by_nsp.get_mut(&nsp) {
                    queue.remove(id);
                    if queue.is_empty() {
                        self.by_nsp.remove(&nsp);
                    }
                }
            }
        }
    }

    /// Every held (and parked) entry, oldest first.
    pub fn claims(&self) -> Vec<Claim> {
        let mut all: Vec<Claim> = self
            .by_nsp
            .values()
            .flat_map(|queue| queue.values().copied())
            .chain(self.parked.values().copied())
            .collect();
        all.sort_by_key(|claim| claim.id);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(ms: u64) -> Claim {
        Claim {
            id: EntryId { ms, seq: 0 },
            deliveries: 1,
            redelivery: false,
            recorded: true,
        }
    }

    #[test]
    fn namespaces_hold_in_id_order_and_independently() {
        let mut held = Held::new(3);
        held.insert("/", claim(3));
        held.insert("/admin", claim(2));
        held.insert("/", claim(1));
        held.insert("/", claim(1));
        assert_eq!(held.len(), 3, "an entry is held once");
        assert!(held.is_full());
        assert!(held.holds_before("/", EntryId { ms: 2, seq: 0 }));
        assert!(!held.holds_before("/", EntryId { ms: 1, seq: 0 }));
        assert!(!held.holds_before("/x", EntryId { ms: 9, seq: 0 }));
        let front: Vec<u64> = held.take_front("/", 1).iter().map(|c| c.id.ms).collect();
        assert_eq!(
            front,
            [1],
            "the oldest first, whatever the order of arrival"
        );
        assert!(!held.is_full());
        held.remove(&[EntryId { ms: 3, seq: 0 }]);
        assert!(!held.is_holding("/"));
        assert_eq!(held.claims(), vec![claim(2)]);

        assert!(held.park(claim(7)), "news the first time");
        assert!(held.contains(EntryId { ms: 7, seq: 0 }));
        assert_eq!(held.take_parked(), vec![claim(7)]);
        assert!(!held.park(claim(7)), "not news again");
    }
}
