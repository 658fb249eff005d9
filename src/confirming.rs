//! Published entries until the relay knows whether the servers have them: confirmed (acknowledged
//! in the group) or to be published again.
//!
//! Redis writing a packet to a server's socket is not the server reading it: a server that dies
//! with packets in its socket never delivers them, and PUBLISH cannot tell. So, with
//! `delivery.confirm = "processed"` (the default), each batch's entries of a namespace are followed
//! by a request that every server of the namespace answers only once it has processed what came
//! before it on its subscription ([`crate::packet::Target::confirm_request`]: a broadcast with
//! acknowledgements to a room no socket is in, so no client sees anything). Then, per batch and
//! namespace:
//!
//! - every server counted when it was published answered: **delivered**;
//! - fewer servers than that were subscribed at some point since, and some did not answer: a
//!   server left with the packets perhaps unread, so the entries are **published again** (held,
//!   then released once servers, and the clients of their rooms, are back); the servers that had
//!   them may see them twice, as after any at-least-once retry;
//! - the servers that did not answer are all still subscribed after `delivery.confirm_timeout`
//!   (an event loop blocked, servers too old to answer): **delivered**, and said, since the packets
//!   wait in their sockets and Redis can tell nothing more.
//!
//! With `delivery.confirm = "published"` (or when the request could not be sent), a batch is decided
//! at once the way an emitter can know: delivered when at least `delivery.min_receivers` of the
//! servers counted at publishing are still subscribed, else published again.
//!
//! With `delivery.confirm = "clients"`, emits also go out as broadcasts with acknowledgements, each
//! under a request ID of its own: every server answers it with how many clients it sent the entry
//! to, before it answers the batch's confirmation request, so once a batch is decided the relay
//! knows which of its entries reached no client.
//!
//! Only IDs and counters are kept, for at most [`MAX_BATCHES`] batches: past that, the relay stops
//! publishing until answers come or time out.

use std::time::{Duration, Instant};

use std::collections::HashMap;

use crate::awaiting::MAX_CLIENTS_PER_SERVER;
use crate::config::Confirm;
use crate::delivery::{Confirmation, Published};
use crate::entry::EntryId;
use crate::replies::{Answer, Reply};

/// Batches waiting for their servers' answers at once.
pub const MAX_BATCHES: usize = 64;

/// While a batch misses answers, its servers are counted at least this often, to see whether one
/// left: Redis drops a server (its output buffer full, its connection lost) at once, and a client
/// library reconnects some tens of milliseconds later at the soonest (node-redis: 50 ms), so a count
/// this often sees the gap even when the server is back before the answers are overdue. The
/// delivery script's own counts serve as well, so a busy relay needs no extra command.
pub const SAMPLE: Duration = Duration::from_millis(20);

/// A batch's first count, unless its answers came first: they usually do, within milliseconds.
pub const FIRST_SAMPLE: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub struct Confirming {
    mode: Confirm,
    timeout: Duration,
    /// What every confirmation request ID of this process starts with: `<relay prefix>c`.
    prefix: String,
    next: u64,
    /// What this session's journal fields start with, and the delivery script calls so far.
    journal: String,
    calls: u64,
    batches: Vec<Batch>,
}

#[derive(Debug)]
struct Batch {
    published: Published,
    /// The confirmation request that followed the entries, when it went out.
    request: Option<String>,
    at: Instant,
    answers: u64,
    /// The fewest servers seen subscribed to the namespace since it was published.
    fewest: u64,
    /// When they were last counted since it was published.
    counted: Option<Instant>,
    /// When a count was last asked for (it may still be on its way).
    asked: Option<Instant>,
    /// The request IDs of its counted entries (`delivery.confirm = "clients"`), and the clients
    /// the servers said they sent each to.
    reached: HashMap<String, u64>,
    /// The journal field of the delivery script call that published it (shared by the call's
    /// batches of other namespaces).
    journal: String,
}

impl Batch {
    /// When its servers must be counted next to decide it, if they must (none while a count it
    /// asked for is on its way).
    fn count_due(&self) -> Option<Instant> {
        let last = match (self.asked, self.counted) {
            (Some(asked), counted) if counted.is_none_or(|c| c < asked) => return None,
            (_, counted) => counted,
        };
        match (last, &self.request) {
            (None, None) => Some(self.at),
            (Some(_), None) => None,
            _ if self.answers >= self.published.servers => None,
            (None, Some(_)) => Some(self.at + FIRST_SAMPLE),
            (Some(at), Some(_)) => Some(at + SAMPLE),
        }
    }
}

/// What [`Confirming::decide`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Decided {
    /// The servers have them: to acknowledge.
    pub delivered: Vec<Published>,
    /// A server left without saying it had them: to publish again.
    pub again: Vec<Published>,
    /// Delivered without every server's answer (namespace, servers counted, answers): to say.
    pub unanswered: Vec<(String, u64, u64)>,
    /// Delivered entries the servers said they sent to no client (counted ones only).
    pub reached_no_client: u64,
    /// Journal fields whose batches are all decided now.
    pub journal_done: Vec<String>,
    /// Journal fields of batches to publish again whose call has batches still undecided.
    pub journal_partly: Vec<String>,
}

impl Decided {
    pub fn is_empty(&self) -> bool {
        self.delivered.is_empty() && self.again.is_empty()
    }

    /// What [`crate::delivery::Scripts::confirm`] records of it.
    pub fn confirmation(&self) -> Confirmation {
        let ids = |batches: &[Published]| {
            batches
                .iter()
                .flat_map(|b| b.claims.iter().map(|c| c.id))
                .collect()
        };
        Confirmation {
            delivered: ids(&self.delivered),
            again: ids(&self.again),
            drop: self.journal_done.clone(),
            rewrite: self.journal_partly.clone(),
            reached_no_client: self.reached_no_client,
        }
    }
}

impl Confirming {
    /// `prefix`: this session's request IDs' (see [`crate::awaiting::Awaiting::prefix`]);
    /// `journal`: its journal fields' (`<consumer>:<session>:`).
    pub fn new(mode: Confirm, timeout: Duration, prefix: &str, journal: &str) -> Confirming {
        Confirming {
            mode,
            timeout,
            prefix: format!("{prefix}c"),
            next: 0,
            journal: journal.to_owned(),
            calls: 0,
            batches: Vec::new(),
        }
    }

    /// Whether batches are followed by a confirmation request.
    pub fn asks(&self) -> bool {
        self.mode != Confirm::Published
    }

    /// A new confirmation request ID.
    pub fn request_id(&mut self) -> String {
        self.next += 1;
        format!("{}{}", self.prefix, self.next)
    }

    /// Follows `published`, sent at `now` by the call journaled under `journal`, the confirmation
    /// `request` after it (if it went out), and the request IDs of its entries that were counted.
    pub fn add(
        &mut self,
        published: Published,
        journal: &str,
        request: Option<String>,
        counted: Vec<String>,
        now: Instant,
    ) {
        let fewest = published.servers;
        self.batches.push(Batch {
            published,
            request: request.filter(|_| self.asks()),
            at: now,
            answers: 0,
            fewest,
            counted: None,
            asked: None,
            reached: counted.into_iter().map(|id| (id, 0)).collect(),
            journal: journal.to_owned(),
        });
    }

    /// A journal field for the next delivery script call: `<prefix><n>`.
    pub fn journal_field(&mut self) -> String {
        self.calls += 1;
        format!("{}{}", self.journal, self.calls)
    }

    /// What every journal field of this session starts with.
    pub fn journal_prefix(&self) -> &str {
        &self.journal
    }

    /// Takes in servers counted per namespace at `now` (by the relay, or by a later delivery
    /// script), after every batch followed so far was published.
    pub fn observe(&mut self, counts: &[(String, u64)], now: Instant) {
        for batch in &mut self.batches {
            if let Some((_, servers)) = counts.iter().find(|(nsp, _)| *nsp == batch.published.nsp) {
                batch.fewest = batch.fewest.min(*servers);
                batch.counted = Some(now);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// True once [`MAX_BATCHES`] batches wait: publish no more until some are decided.
    pub fn is_full(&self) -> bool {
        self.batches.len() >= MAX_BATCHES
    }

    /// The entries published and not yet decided.
    pub fn ids(&self) -> impl Iterator<Item = EntryId> + '_ {
        self.batches
            .iter()
            .flat_map(|b| b.published.claims.iter().map(|c| c.id))
    }

    /// Takes `reply` in if it answers a confirmation request of this process; false otherwise.
    pub fn answer(&mut self, reply: &Reply) -> bool {
        if !reply.request_id.starts_with(&self.prefix) {
            return false;
        }
        let Answer::Count(clients) = reply.answer else {
            return true;
        };
        for batch in &mut self.batches {
            if batch.request.as_deref() == Some(reply.request_id.as_str()) {
                batch.answers = batch.answers.saturating_add(1);
            } else if let Some(reached) = batch.reached.get_mut(&reply.request_id) {
                if clients <= MAX_CLIENTS_PER_SERVER {
                    *reached = reached.saturating_add(clients);
                }
            } else {
                continue;
            }
            break;
        }
        true
    }

    /// The namespaces whose servers must be counted, as of `now`, for [`Confirming::decide`]:
    /// those of batches without a confirmation request not counted since, and of batches missing
    /// answers not counted for [`SAMPLE`]. They count as asked until [`Confirming::observe`].
    pub fn counts_due(&mut self, now: Instant) -> Vec<String> {
        let mut nsps = Vec::new();
        for batch in &mut self.batches {
            if batch.count_due().is_some_and(|due| now >= due) {
                batch.asked = Some(now);
                nsps.push(batch.published.nsp.clone());
            }
        }
        nsps.sort_unstable();
        nsps.dedup();
        nsps
    }

    /// Decides what can be at `now`, given the servers counted now on the namespaces
    /// [`Confirming::counts_due`] named, and forgets it.
    pub fn decide(
        &mut self,
        now: Instant,
        servers_now: &[(String, u64)],
        min_receivers: u32,
    ) -> Decided {
        self.observe(servers_now, now);
        let mut decided = Decided::default();
        let mut decided_fields: Vec<(String, bool)> = Vec::new();
        let timeout = self.timeout;
        self.batches.retain_mut(|batch| {
            let servers = batch.published.servers;
            let again = if batch.request.is_none() {
                if batch.counted.is_none() {
                    return true;
                }
                batch.fewest < u64::from(min_receivers)
            } else if batch.answers >= servers {
                false
            } else if batch.fewest < servers {
                true
            } else if now >= batch.at + timeout {
                decided
                    .unanswered
                    .push((batch.published.nsp.clone(), servers, batch.answers));
                false
            } else {
                return true;
            };
            let published = std::mem::replace(
                &mut batch.published,
                Published {
                    nsp: String::new(),
                    servers: 0,
                    claims: Vec::new(),
                },
            );
            decided_fields.push((batch.journal.clone(), again));
            if again {
                decided.again.push(published);
            } else {
                decided.reached_no_client += batch
                    .reached
                    .values()
                    .filter(|clients| **clients == 0)
                    .count() as u64;
                decided.delivered.push(published);
            }
            false
        });
        // A call's field goes once all its batches are decided; before, it loses only what is
        // to be published again.
        for (field, again) in decided_fields {
            let pending = self.batches.iter().any(|b| b.journal == field);
            let list = match (pending, again) {
                (false, _) => &mut decided.journal_done,
                (true, true) => &mut decided.journal_partly,
                (true, false) => continue,
            };
            if !list.contains(&field) {
                list.push(field);
            }
        }
        decided
    }

    /// When undecided batches should be looked at again: their next count, or their timeout.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.batches
            .iter()
            .map(|b| {
                let timeout = b.at + self.timeout;
                b.count_due()
                    .map_or(timeout, |due| due.min(timeout))
                    .max(now)
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Claim;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn published(nsp: &str, servers: u64, seq: u64) -> Published {
        Published {
            nsp: nsp.into(),
            servers,
            claims: vec![Claim::first_read(EntryId { ms: 1, seq })],
        }
    }

    fn count(request_id: &str, at: Instant) -> Reply {
        Reply {
            request_id: request_id.into(),
            answer: Answer::Count(0),
            at,
        }
    }

    fn processed() -> Confirming {
        Confirming::new(Confirm::Processed, TIMEOUT, "sio-relay:n:", "relay-1:n.1:")
    }

    #[test]
    fn a_batch_is_delivered_once_every_server_counted_answered() {
        let mut confirming = processed();
        let t0 = Instant::now();
        let request = confirming.request_id();
        assert_eq!(request, "sio-relay:n:c1");
        confirming.add(
            published("/", 2, 0),
            "j:1",
            Some(request.clone()),
            Vec::new(),
            t0,
        );
        assert!(confirming.answer(&count(&request, t0)));
        assert!(
            !confirming.answer(&count("sio-relay:n:1-0:1", t0)),
            "an attempt's answer is not a confirmation's"
        );
        assert!(
            confirming.counts_due(t0).is_empty(),
            "answers are not late yet"
        );
        assert!(confirming.decide(t0, &[], 1).is_empty());
        confirming.answer(&count(&request, t0));
        let decided = confirming.decide(t0, &[], 1);
        assert_eq!(decided.delivered, [published("/", 2, 0)]);
        assert!(confirming.is_empty());
    }

    #[test]
    fn a_server_that_left_without_answering_makes_the_batch_go_out_again() {
        let mut confirming = processed();
        let t0 = Instant::now();
        let request = confirming.request_id();
        confirming.add(
            published("/", 2, 0),
            "j:1",
            Some(request.clone()),
            Vec::new(),
            t0,
        );
        confirming.answer(&count(&request, t0));
        assert!(
            confirming.counts_due(t0).is_empty(),
            "the answers may come first"
        );
        assert_eq!(confirming.next_wake(t0), Some(t0 + FIRST_SAMPLE));
        let first = t0 + FIRST_SAMPLE;
        assert_eq!(confirming.counts_due(first), ["/"]);
        let both = [("/".to_owned(), 2)];
        assert!(confirming.decide(first, &both, 1).is_empty());
        assert_eq!(confirming.next_wake(first), Some(first + SAMPLE));
        // One server went away, to come back at once: the count in between is what tells.
        confirming.observe(&[("/".to_owned(), 1)], first + SAMPLE / 2);
        let decided = confirming.decide(first + SAMPLE, &both, 1);
        assert_eq!(decided.again, [published("/", 2, 0)]);
        assert!(decided.delivered.is_empty());
    }

    #[test]
    fn servers_that_stay_silent_are_waited_for_until_the_timeout() {
        let mut confirming = processed();
        let t0 = Instant::now();
        let request = confirming.request_id();
        confirming.add(published("/", 1, 0), "j:1", Some(request), Vec::new(), t0);
        let still = [("/".to_owned(), 1)];
        assert!(confirming.decide(t0 + TIMEOUT / 2, &still, 1).is_empty());
        assert_eq!(
            confirming.next_wake(t0 + TIMEOUT / 2),
            Some(t0 + TIMEOUT / 2 + SAMPLE)
        );
        let decided = confirming.decide(t0 + TIMEOUT, &still, 1);
        assert_eq!(decided.delivered, [published("/", 1, 0)]);
        assert_eq!(decided.unanswered, [("/".to_owned(), 1, 0)]);
    }

    #[test]
    fn without_a_request_the_servers_still_subscribed_decide() {
        let mut confirming = Confirming::new(Confirm::Published, TIMEOUT, "p:", "relay-1:n.1:");
        assert!(!confirming.asks());
        let t0 = Instant::now();
        confirming.add(
            published("/", 2, 0),
            "j:1",
            Some("p:c1".into()),
            Vec::new(),
            t0,
        );
        confirming.add(published("/admin", 1, 1), "j:1", None, Vec::new(), t0);
        assert_eq!(confirming.counts_due(t0), ["/", "/admin"]);
        assert!(
            confirming.decide(t0, &[], 1).is_empty(),
            "not before its servers are counted"
        );
        let now = [("/".to_owned(), 1), ("/admin".to_owned(), 0)];
        let decided = confirming.decide(t0, &now, 1);
        assert_eq!(decided.delivered, [published("/", 2, 0)]);
        assert_eq!(decided.again, [published("/admin", 1, 1)]);
        assert_eq!(decided.journal_done, ["j:1"], "the call is all decided");
    }

    #[test]
    fn fire_and_forget_batches_need_no_answer() {
        let mut confirming = processed();
        let t0 = Instant::now();
        let request = confirming.request_id();
        confirming.add(published("/", 0, 0), "j:1", Some(request), Vec::new(), t0);
        let decided = confirming.decide(t0, &[], 0);
        assert_eq!(decided.delivered.len(), 1);
    }

    #[test]
    fn at_most_max_batches_wait() {
        let mut confirming = processed();
        let t0 = Instant::now();
        for seq in 0..MAX_BATCHES as u64 {
            assert!(!confirming.is_full());
            let request = confirming.request_id();
            confirming.add(published("/", 1, seq), "j:1", Some(request), Vec::new(), t0);
        }
        assert!(confirming.is_full());
        assert_eq!(confirming.ids().count(), MAX_BATCHES);
    }

    #[test]
    fn counted_entries_say_which_reached_no_client() {
        let mut confirming =
            Confirming::new(Confirm::Clients, TIMEOUT, "sio-relay:n:", "relay-1:n.1:");
        assert!(confirming.asks());
        let t0 = Instant::now();
        let (one, two) = (confirming.request_id(), confirming.request_id());
        let request = confirming.request_id();
        let mut batch = published("/", 2, 0);
        batch.claims.push(batch.claims[0]);
        confirming.add(
            batch,
            "j:1",
            Some(request.clone()),
            vec![one.clone(), two.clone()],
            t0,
        );
        let reached = |request_id: &str, clients| Reply {
            request_id: request_id.into(),
            answer: Answer::Count(clients),
            at: t0,
        };
        // Two servers: the first entry reached a client on one of them, the second none.
        for (id, clients) in [(&one, 0), (&two, 0), (&one, 1), (&two, 0)] {
            assert!(confirming.answer(&reached(id, clients)));
        }
        confirming.answer(&reached(&one, u64::MAX));
        confirming.answer(&count(&request, t0));
        confirming.answer(&count(&request, t0));
        let decided = confirming.decide(t0, &[], 1);
        assert_eq!(decided.delivered.len(), 1);
        assert_eq!(decided.reached_no_client, 1);
    }

    #[test]
    fn a_calls_journal_field_goes_once_all_its_batches_are_decided() {
        let mut confirming = processed();
        let t0 = Instant::now();
        let field = confirming.journal_field();
        assert_eq!(field, "relay-1:n.1:1");
        assert_eq!(confirming.journal_prefix(), "relay-1:n.1:");
        let (a, b) = (confirming.request_id(), confirming.request_id());
        confirming.add(
            published("/", 1, 0),
            &field,
            Some(a.clone()),
            Vec::new(),
            t0,
        );
        confirming.add(published("/x", 1, 1), &field, Some(b), Vec::new(), t0);
        confirming.answer(&count(&a, t0));
        let decided = confirming.decide(t0, &[], 1);
        assert_eq!(decided.delivered.len(), 1);
        assert!(decided.journal_done.is_empty(), "/x is still undecided");
        assert!(
            decided.journal_partly.is_empty(),
            "nothing to publish again"
        );
        // /x's server left without answering: out of the field at once, the field then goes.
        let first = t0 + FIRST_SAMPLE;
        let decided = confirming.decide(first, &[("/x".to_owned(), 0)], 1);
        assert_eq!(decided.again.len(), 1);
        assert_eq!(decided.journal_done, [field]);
        let confirmation = decided.confirmation();
        assert_eq!(confirmation.again, [EntryId { ms: 1, seq: 1 }]);
    }
}
