//! Entries held because no (or too few) Socket.IO servers listen on their namespace.
//!
//! No listener is not the entry's fault, so a held entry keeps its delivery attempts: it stays pending
//! in Redis (the durable copy), its delivery count is recorded in the held hash by the delivery
//! script (so a restart or another relay restores it instead of counting one more), and this index
//! remembers it per namespace, in ID order. Only IDs and counts are kept here: the fields are read
//! again from the stream when servers come back, so holding costs a few dozen bytes per entry
//! whatever the entries' size. Once a namespace holds anything, its newer entries queue behind, so
//! clients see a namespace's events in the order they were produced; namespaces with listeners are
//! not affected. Once servers are back, what was held waits `delivery.release_wait` more for its
//! clients, who come back after the servers ([`releasable`]). The total is bounded: when full, the
//! relay stops reading until entries drain.
//!
//! Entries Redis refuses even on their own, and that cannot be dead-lettered either (the dead-letter
//! stream itself refuses them), are *parked* here: they wait, pending, apart from any namespace, so
//! that the entries behind them keep flowing, and are tried again every retry interval.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::delivery::Claim;
use crate::entry::{Entry, EntryId, Operation, Room};

#[derive(Debug)]
pub struct Held {
    by_nsp: HashMap<String, BTreeMap<EntryId, Claim>>,
    nsp_of: HashMap<EntryId, String>,
    parked: BTreeMap<EntryId, Claim>,
    /// Parked once already: not news when parked again.
    parked_before: HashSet<EntryId>,
    /// Each namespace that has servers again: when they came back, and when its held entries go.
    back: HashMap<String, Back>,
    limit: usize,
}

impl Held {
    pub fn new(limit: usize) -> Held {
        Held {
            by_nsp: HashMap::new(),
            nsp_of: HashMap::new(),
            parked: BTreeMap::new(),
            parked_before: HashSet::new(),
            back: HashMap::new(),
            limit,
        }
    }

    /// When `nsp`'s servers came back and when its held entries go: recorded the first time this is
    /// asked after it had too few (at `now`, `now_ms` on Redis's clock, the clock of entry IDs).
    pub fn back(&mut self, nsp: &str, now: Instant, now_ms: u64, wait: Duration) -> Back {
        *self.back.entry(nsp.to_owned()).or_insert(Back {
            since_ms: now_ms,
            release_at: now + wait,
        })
    }

    /// `nsp` has too few servers (again): its next [`Held::back`] starts afresh.
    pub fn unready(&mut self, nsp: &str) {
        self.back.remove(nsp);
    }

    /// The oldest `n` held entries of `nsp`, left held.
    pub fn front(&self, nsp: &str, n: usize) -> Vec<Claim> {
        self.by_nsp
            .get(nsp)
            .map(|queue| queue.values().take(n).copied().collect())
            .unwrap_or_default()
    }

    /// Removes and returns the held entries of `nsp` with these IDs, marked released: they go out
    /// ahead of older ones that still wait (see [`releasable`]).
    pub fn release(&mut self, nsp: &str, ids: &[EntryId]) -> Vec<Claim> {
        let Some(queue) = self.by_nsp.get_mut(nsp) else {
            return Vec::new();
        };
        let taken: Vec<Claim> = ids
            .iter()
            .filter_map(|id| queue.remove(id))
            .map(|claim| Claim {
                released: true,
                ..claim
            })
            .collect();
        for claim in &taken {
            self.nsp_of.remove(&claim.id);
        }
        self.forget_if_empty(nsp);
        taken
    }

    /// Forgets everything about `nsp` once it holds nothing: its next outage starts afresh.
    fn forget_if_empty(&mut self, nsp: &str) {
        if self.by_nsp.get(nsp).is_some_and(BTreeMap::is_empty) {
            self.by_nsp.remove(nsp);
        }
        if !self.by_nsp.contains_key(nsp) {
            self.back.remove(nsp);
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
        for claim in &taken {
            self.nsp_of.remove(&claim.id);
        }
        self.forget_if_empty(nsp);
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
                }
                self.forget_if_empty(&nsp);
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

/// When a namespace's servers came back after it held entries, and when those entries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Back {
    /// On Redis's clock: entries with older IDs were produced while it held.
    pub since_ms: u64,
    /// `delivery.release_wait` after the servers came back.
    pub release_at: Instant,
}

/// Who an entry is for, as far as waiting for clients goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Audience {
    /// The servers themselves (a server-side emit), or nobody (the entry is dead-lettered as it
    /// goes): no client to wait for.
    NoClient,
    /// The sockets in these rooms.
    Rooms(Vec<Room>),
    /// Every socket of the namespace.
    Everyone,
}

impl Audience {
    pub fn of(entry: &Entry) -> Audience {
        match (entry.operation(), entry.rooms()) {
            (Operation::ServerEmit(_), _) => Audience::NoClient,
            (_, []) => Audience::Everyone,
            (_, rooms) => Audience::Rooms(rooms.to_vec()),
        }
    }
}

/// Which of `front` (a namespace's oldest held entries, in ID order) may go before its
/// `release_at`, its servers back since `since_ms`.
///
/// When every server of a namespace was gone (or one died with packets unread), its clients come
/// back some seconds after the servers (socket.io-client retries every 1 to 5 s by default), and a
/// server drops what it gets for a room none of its sockets is in: the held entries wait until
/// `release_at` for the clients they were held for. Whether those are back cannot be told: a room
/// with a socket again may wait for another (a second device, a second tab), and only what the
/// room held before the outage would say how many. What was produced since the servers came back
/// was not held for anyone: it goes at once, as it would have without an outage, unless an older
/// entry that waits shares a room with it (each room keeps its order; an entry for everyone shares
/// every room). Entries for no client go at once.
pub fn releasable(front: &[(EntryId, Audience)], since_ms: u64) -> Vec<EntryId> {
    let mut now = Vec::new();
    let mut waiting: HashSet<&Room> = HashSet::new();
    let mut everyone_waits = false;
    for (id, audience) in front {
        let held_for_clients = id.ms < since_ms;
        match audience {
            Audience::NoClient => now.push(*id),
            Audience::Everyone => {
                if held_for_clients || everyone_waits || !waiting.is_empty() {
                    everyone_waits = true;
                } else {
                    now.push(*id);
                }
            }
            Audience::Rooms(rooms) => {
                let behind = everyone_waits || rooms.iter().any(|room| waiting.contains(room));
                if held_for_clients || behind {
                    waiting.extend(rooms);
                } else {
                    now.push(*id);
                }
            }
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(ms: u64) -> Claim {
        Claim {
            recorded: true,
            ..Claim::first_read(EntryId { ms, seq: 0 })
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

    fn id(ms: u64) -> EntryId {
        EntryId { ms, seq: 0 }
    }

    fn rooms(names: &[&str]) -> Audience {
        Audience::Rooms(names.iter().map(|n| Room::from(*n)).collect())
    }

    #[test]
    fn what_was_held_waits_and_what_came_since_goes_unless_behind_it_in_a_room() {
        // Servers back at 10: 1 and 2 were held for their clients.
        let front = [
            (id(1), rooms(&["a"])),
            (id(2), Audience::NoClient),
            (id(11), rooms(&["b"])),
            (id(12), rooms(&["a", "c"])),
            (id(13), rooms(&["c"])),
            (id(14), rooms(&["d"])),
        ];
        assert_eq!(
            releasable(&front, 10),
            [id(2), id(11), id(14)],
            "12 waits behind 1 (room a), 13 behind 12 (room c)"
        );
    }

    #[test]
    fn an_entry_for_everyone_waits_with_anything_older_and_holds_everything_behind_it() {
        let front = [
            (id(11), rooms(&["a"])),
            (id(12), Audience::Everyone),
            (id(13), rooms(&["b"])),
        ];
        assert_eq!(releasable(&front, 10), [id(11), id(12), id(13)]);
        let front = [
            (id(1), rooms(&["a"])),
            (id(12), Audience::Everyone),
            (id(13), rooms(&["b"])),
            (id(14), Audience::NoClient),
        ];
        assert_eq!(releasable(&front, 10), [id(14)]);
    }

    #[test]
    fn servers_back_are_recorded_once_per_outage() {
        let mut held = Held::new(10);
        let t0 = Instant::now();
        let wait = Duration::from_secs(10);
        held.insert("/", claim(1));
        held.insert("/", claim(2));
        let back = held.back("/", t0, 100, wait);
        assert_eq!(back.release_at, t0 + wait);
        assert_eq!(
            held.back("/", t0 + wait, 200, wait),
            back,
            "the first time counts"
        );
        let released = held.release("/", &[EntryId { ms: 2, seq: 0 }]);
        assert!(released[0].released);
        assert_eq!(held.front("/", 5), [claim(1)], "the older one still waits");
        held.unready("/");
        assert_eq!(
            held.back("/", t0 + wait, 300, wait).since_ms,
            300,
            "a new outage"
        );
        held.remove(&[EntryId { ms: 1, seq: 0 }]);
        assert_eq!(
            held.back("/", t0, 400, wait).since_ms,
            400,
            "forgotten once empty"
        );
    }
}
