//! Entries waiting for their clients' acknowledgements: store and forward.
//!
//! An entry with an `ack` field goes out as a broadcast with acknowledgements (an *attempt*), and
//! stays pending in the group, the durable copy, until a client acknowledges it. An attempt ends
//! when every server counted has said how many clients it reached and each of those clients has
//! acknowledged, or when the entry's `ack` wait is over. With at least one acknowledgement the entry
//! is done: its result is written and it is acknowledged. Without, it rests about
//! `acks.retry_interval` (half to one and a half of it) and is sent again (a user offline now may
//! be back then), until `acks.max_age`.
//!
//! An acknowledgement counts whenever it comes, also for an earlier attempt while the entry rests:
//! servers keep a client's pending acknowledgement as long as the client stays connected. Only IDs,
//! counters and a bounded amount of answers are kept here: the entry's fields are read again from
//! the stream for each attempt, so waiting costs the same whatever the entry's size, and at most
//! `acks.max_waiting` entries wait at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::delivery::Claim;
use crate::entry::EntryId;
use crate::replies::{Acked, Answer, Reply};

/// The most bytes of answers (as JSON) kept for one entry's result; the answers past it are counted,
/// not kept. What clients send must not decide how much memory the relay uses.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How often an attempt is looked at while its answers arrive: the wait between the last answer
/// and the result.
pub const POLL: Duration = Duration::from_millis(50);

/// The most clients one server's answer may claim to have sent an attempt to. Socket.IO servers
/// hold tens or hundreds of thousands of sockets; an answer claiming more is not a server's (the
/// response channels are open to anyone who may PUBLISH) and is ignored, so that it can neither
/// overflow the sum nor make a result say what did not happen.
pub const MAX_CLIENTS_PER_SERVER: u64 = 10_000_000;

#[derive(Debug)]
pub struct Awaiting {
    entries: HashMap<EntryId, Waiting>,
    /// What every request ID of this process starts with: `sio-relay:<nonce>:`. Unlike the
    /// servers' own (6 or 16 characters), so that no server takes an answer for its own.
    prefix: String,
    limit: usize,
    retry_interval: Duration,
    /// Spreads rests over half to one and a half `retry_interval`, so that a client that reconnects
    /// periodically cannot fall into step with the attempts and miss every one.
    jitter: fastrand::Rng,
}

/// What became of one answer taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// A client acknowledged an entry that waits: the time since the entry's first attempt.
    Ack(Duration),
    /// Counted, or not for an entry that waits (an earlier process's, another relay's).
    Counted,
    /// Claims more than [`MAX_CLIENTS_PER_SERVER`] clients: ignored.
    Implausible,
}

#[derive(Debug)]
struct Waiting {
    claim: Claim,
    nsp: String,
    attempts: u32,
    phase: Phase,
    first_sent: Instant,
    /// The current attempt: servers counted when it was sent, count replies heard, the sum of
    /// their client counts, the acknowledgements it got.
    servers: u64,
    answered: u64,
    clients: u64,
    attempt_acks: u64,
    /// Every attempt's acknowledgements, and the answers kept of them.
    acks: u64,
    answers: Vec<Value>,
    answer_bytes: usize,
    answers_dropped: u64,
    first_ack: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Sent { deadline: Instant },
    Resting { until: Instant },
}

/// An entry at least one client acknowledged: what goes in its result.
#[derive(Debug, Clone, PartialEq)]
pub struct Acknowledged {
    pub claim: Claim,
    pub nsp: String,
    pub attempts: u32,
    /// Servers that answered the last attempt, and the clients they sent it to.
    pub servers: u64,
    pub clients: u64,
    pub acks: u64,
    /// The clients' answers (the first argument of `ack()`, `null` without one), at most
    /// [`MAX_ANSWER_BYTES`] of them.
    pub answers: Vec<Value>,
    pub answers_dropped: u64,
    /// From the first attempt to the first acknowledgement.
    pub latency: Duration,
}

/// An attempt that ended without any acknowledgement: the entry rests until it is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unanswered {
    pub claim: Claim,
    pub attempts: u32,
    pub clients: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Finished {
    Acknowledged(Acknowledged),
    Unanswered(Unanswered),
}

impl Awaiting {
    /// `nonce` tells this process's requests from those of earlier ones, whose answers are for
    /// attempts nobody waits for any more.
    pub fn new(limit: usize, retry_interval: Duration, nonce: &str) -> Awaiting {
        Awaiting {
            entries: HashMap::new(),
            prefix: format!("sio-relay:{nonce}:"),
            limit,
            retry_interval,
            jitter: fastrand::Rng::new(),
        }
    }

    /// The same, with its jitter drawn from `seed`: for tests that need to know the rests.
    #[cfg(test)]
    fn seeded(limit: usize, retry_interval: Duration, nonce: &str, seed: u64) -> Awaiting {
        Awaiting {
            jitter: fastrand::Rng::with_seed(seed),
            ..Awaiting::new(limit, retry_interval, nonce)
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True once `acks.max_waiting` entries wait: time to stop reading new ones.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.limit
    }

    pub fn contains(&self, id: EntryId) -> bool {
        self.entries.contains_key(&id)
    }

    pub fn claims(&self) -> Vec<Claim> {
        self.entries.values().map(|w| w.claim).collect()
    }

    pub fn remove(&mut self, ids: &[EntryId]) {
        for id in ids {
            self.entries.remove(id);
        }
    }

    /// The request ID the next attempt of entry `id` goes out with.
    pub fn next_request_id(&self, id: EntryId) -> String {
        let attempts = self.entries.get(&id).map_or(0, |w| w.attempts);
        format!("{}{}:{}", self.prefix, id, attempts + 1)
    }

    /// Records a new attempt for `claim`, sent at `now` to `servers` servers and waiting `wait`
    /// for acknowledgements; returns the request ID it was sent with ([`Self::next_request_id`]).
    pub fn attempt(
        &mut self,
        claim: Claim,
        nsp: &str,
        wait: Duration,
        servers: u64,
        now: Instant,
    ) -> String {
        let waiting = self.entries.entry(claim.id).or_insert_with(|| Waiting {
            claim,
            nsp: nsp.to_owned(),
            attempts: 0,
            phase: Phase::Sent { deadline: now },
            first_sent: now,
            servers: 0,
            answered: 0,
            clients: 0,
            attempt_acks: 0,
            acks: 0,
            answers: Vec::new(),
            answer_bytes: 0,
            answers_dropped: 0,
            first_ack: None,
        });
        waiting.claim = claim;
        waiting.attempts += 1;
        waiting.phase = Phase::Sent {
            deadline: now + wait,
        };
        waiting.servers = servers;
        waiting.answered = 0;
        waiting.clients = 0;
        waiting.attempt_acks = 0;
        format!("{}{}:{}", self.prefix, claim.id, waiting.attempts)
    }

    /// Takes one answer in.
    pub fn answer(&mut self, reply: &Reply) -> Taken {
        if let Answer::Count(clients) = reply.answer {
            if clients > MAX_CLIENTS_PER_SERVER {
                return Taken::Implausible;
            }
        }
        let Some((id, attempt)) = reply
            .request_id
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.rsplit_once(':'))
        else {
            return Taken::Counted;
        };
        let (Ok(id), Ok(attempt)) = (id.parse::<EntryId>(), attempt.parse::<u32>()) else {
            return Taken::Counted;
        };
        let Some(waiting) = self.entries.get_mut(&id) else {
            return Taken::Counted;
        };
        let current = attempt == waiting.attempts;
        match &reply.answer {
            Answer::Count(clients) => {
                if current {
                    waiting.answered = waiting.answered.saturating_add(1);
                    waiting.clients = waiting.clients.saturating_add(*clients);
                }
                Taken::Counted
            }
            Answer::Ack(value) => {
                if current {
                    waiting.attempt_acks = waiting.attempt_acks.saturating_add(1);
                }
                waiting.acks = waiting.acks.saturating_add(1);
                let latency = reply.at.saturating_duration_since(waiting.first_sent);
                waiting.first_ack.get_or_insert(latency);
                let value = match value {
                    Acked::Nothing => Some(Value::Null),
                    Acked::With(value) => Some(value.clone()),
                    Acked::TooDeep => None,
                };
                match value.map(|value| (value.to_string().len(), value)) {
                    Some((bytes, value)) if waiting.answer_bytes + bytes <= MAX_ANSWER_BYTES => {
                        waiting.answer_bytes += bytes;
                        waiting.answers.push(value);
                    }
                    _ => waiting.answers_dropped += 1,
                }
                Taken::Ack(latency)
            }
        }
    }

    /// The attempts over at `now`: acknowledged entries leave, the others rest until their next
    /// attempt. An entry that rests and got a late acknowledgement is over too.
    pub fn finished(&mut self, now: Instant) -> Vec<Finished> {
        let mut finished = Vec::new();
        let mut acknowledged = Vec::new();
        // One draw for the entries over together (sent together, in stream order): they are sent
        // again together, still in order.
        let rest = self.retry_interval.mul_f64(0.5 + self.jitter.f64());
        for (id, waiting) in &mut self.entries {
            let over = match waiting.phase {
                Phase::Sent { deadline } => {
                    now >= deadline
                        || (waiting.answered >= waiting.servers
                            && waiting.attempt_acks >= waiting.clients)
                }
                Phase::Resting { .. } => waiting.acks > 0,
            };
            if !over {
                continue;
            }
            if waiting.acks > 0 {
                acknowledged.push(*id);
                continue;
            }
            waiting.phase = Phase::Resting { until: now + rest };
            finished.push(Finished::Unanswered(Unanswered {
                claim: waiting.claim,
                attempts: waiting.attempts,
                clients: waiting.clients,
            }));
        }
        for id in acknowledged {
            let Some(w) = self.entries.remove(&id) else {
                continue;
            };
            finished.push(Finished::Acknowledged(Acknowledged {
                claim: w.claim,
                nsp: w.nsp,
                attempts: w.attempts,
                servers: w.answered,
                clients: w.clients,
                acks: w.acks,
                answers: w.answers,
                answers_dropped: w.answers_dropped,
                latency: w.first_ack.unwrap_or_default(),
            }));
        }
        // In stream order, as everything else the relay writes.
        finished.sort_by_key(|f| match f {
            Finished::Acknowledged(a) => a.claim.id,
            Finished::Unanswered(u) => u.claim.id,
        });
        finished
    }

    /// The entries whose rest is over at `now`, to be sent again; they wait as they are until then.
    pub fn due(&self, now: Instant) -> Vec<Unanswered> {
        let mut due: Vec<Unanswered> = self
            .entries
            .values()
            .filter(|w| matches!(w.phase, Phase::Resting { until } if until <= now))
            .map(|w| Unanswered {
                claim: w.claim,
                attempts: w.attempts,
                clients: w.clients,
            })
            .collect();
        due.sort_by_key(|u| u.claim.id);
        due
    }

    /// When something may next be over or due: the relay's read waits no longer than that.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .map(|w| match w.phase {
                Phase::Sent { deadline } => deadline.min(now + POLL),
                Phase::Resting { until } => until,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);
    const REST: Duration = Duration::from_secs(1);

    fn claim(seq: u64) -> Claim {
        Claim::first_read(EntryId { ms: 1, seq })
    }

    fn reply(request_id: &str, answer: Answer, at: Instant) -> Reply {
        Reply {
            request_id: request_id.to_owned(),
            answer,
            at,
        }
    }

    #[test]
    fn an_attempt_ends_once_every_server_and_client_answered() {
        let mut awaiting = Awaiting::new(10, REST, "n");
        let t0 = Instant::now();
        let id = awaiting.attempt(claim(0), "/", WAIT, 2, t0);
        assert_eq!(id, "sio-relay:n:1-0:1");
        let ms = |n| t0 + Duration::from_millis(n);
        // An acknowledgement may come before its server's count, and before another server's.
        let ack = Answer::Ack(Acked::With(serde_json::json!("seen")));
        assert_eq!(
            awaiting.answer(&reply(&id, ack.clone(), ms(3))),
            Taken::Ack(ms(3) - t0)
        );
        awaiting.answer(&reply(&id, Answer::Count(1), ms(4)));
        assert!(
            awaiting.finished(ms(4)).is_empty(),
            "one server has not answered"
        );
        awaiting.answer(&reply(&id, Answer::Count(2), ms(5)));
        awaiting.answer(&reply(&id, Answer::Ack(Acked::Nothing), ms(6)));
        assert!(
            awaiting.finished(ms(6)).is_empty(),
            "one client has not acknowledged"
        );
        // Answers to other requests change nothing.
        for other in ["abcdef", "sio-relay:other:1-0:1", "sio-relay:n:1-1:1"] {
            assert_eq!(
                awaiting.answer(&reply(other, ack.clone(), ms(6))),
                Taken::Counted
            );
        }
        awaiting.answer(&reply(&id, ack.clone(), ms(7)));
        let finished = awaiting.finished(ms(7));
        assert_eq!(
            finished,
            [Finished::Acknowledged(Acknowledged {
                claim: claim(0),
                nsp: "/".into(),
                attempts: 1,
                servers: 2,
                clients: 3,
                acks: 3,
                answers: vec!["seen".into(), Value::Null, "seen".into()],
                answers_dropped: 0,
                latency: Duration::from_millis(3),
            })]
        );
        assert!(awaiting.is_empty());
    }

    #[test]
    fn unanswered_entries_rest_and_a_late_acknowledgement_still_counts() {
        let mut awaiting = Awaiting::new(10, REST, "n");
        let t0 = Instant::now();
        let first = awaiting.attempt(claim(0), "/", WAIT, 1, t0);
        awaiting.answer(&reply(&first, Answer::Count(1), t0));
        assert!(awaiting.finished(t0 + WAIT / 2).is_empty());
        let ended = t0 + WAIT;
        assert_eq!(
            awaiting.finished(ended),
            [Finished::Unanswered(Unanswered {
                claim: claim(0),
                attempts: 1,
                clients: 1,
            })]
        );
        assert!(awaiting.due(ended).is_empty(), "it rests first");
        let rested = awaiting.next_wake(ended).unwrap();
        assert!(
            rested >= ended + REST / 2 && rested < ended + REST * 3 / 2,
            "rests half to one and a half retry_interval"
        );
        assert!(awaiting.due(rested - Duration::from_millis(1)).is_empty());
        assert_eq!(awaiting.due(rested).len(), 1);
        // The client of the first attempt answers while the entry rests.
        awaiting.answer(&reply(
            &first,
            Answer::Ack(Acked::Nothing),
            ended + REST / 4,
        ));
        let finished = awaiting.finished(ended + REST / 4);
        assert!(
            matches!(&finished[..], [Finished::Acknowledged(a)] if a.attempts == 1 && a.acks == 1),
            "{finished:?}"
        );
    }

    #[test]
    fn no_servers_end_an_attempt_at_once_and_answers_are_bounded() {
        let mut awaiting = Awaiting::new(1, REST, "n");
        let t0 = Instant::now();
        awaiting.attempt(claim(0), "/", WAIT, 0, t0);
        assert!(awaiting.is_full());
        assert!(matches!(
            &awaiting.finished(t0)[..],
            [Finished::Unanswered(Unanswered { clients: 0, .. })]
        ));
        let id = awaiting.attempt(claim(0), "/", WAIT, 1, t0 + REST);
        assert!(id.ends_with(":2"), "{id}");
        let big = Value::String("x".repeat(MAX_ANSWER_BYTES / 2));
        awaiting.answer(&reply(&id, Answer::Count(3), t0 + REST));
        for _ in 0..3 {
            let ack = Answer::Ack(Acked::With(big.clone()));
            awaiting.answer(&reply(&id, ack, t0 + REST));
        }
        // An argument too deep to read is an acknowledgement whose argument is not kept.
        awaiting.answer(&reply(&id, Answer::Ack(Acked::TooDeep), t0 + REST));
        let [Finished::Acknowledged(acked)] = &awaiting.finished(t0 + REST)[..] else {
            panic!("not acknowledged");
        };
        assert_eq!(
            (acked.acks, acked.answers.len(), acked.answers_dropped),
            (4, 1, 3)
        );
    }

    #[test]
    fn rests_are_spread_so_that_no_client_falls_into_step() {
        let mut awaiting = Awaiting::seeded(100, REST, "n", 7);
        let t0 = Instant::now();
        let rest = |awaiting: &Awaiting, seq| match awaiting.entries[&claim(seq).id].phase {
            Phase::Resting { until } => until - t0,
            Phase::Sent { .. } => panic!("not resting"),
        };
        let mut rests = Vec::new();
        for seq in 0..100 {
            awaiting.attempt(claim(seq), "/", WAIT, 0, t0);
            awaiting.attempt(claim(seq + 1000), "/", WAIT, 0, t0);
            assert_eq!(awaiting.finished(t0).len(), 2, "no server: over at once");
            assert_eq!(
                rest(&awaiting, seq),
                rest(&awaiting, seq + 1000),
                "over together, sent again together"
            );
            rests.push(rest(&awaiting, seq));
            awaiting.remove(&[claim(seq).id, claim(seq + 1000).id]);
        }
        rests.sort();
        assert!(
            rests[0] >= REST / 2 && rests[99] < REST * 3 / 2,
            "{rests:?}"
        );
        assert!(
            rests[99] - rests[0] > REST / 2,
            "spread, not in step: {rests:?}"
        );
    }

    #[test]
    fn answers_claiming_absurd_counts_are_ignored() {
        let mut awaiting = Awaiting::new(10, REST, "n");
        let t0 = Instant::now();
        let id = awaiting.attempt(claim(0), "/", WAIT, 2, t0);
        assert_eq!(awaiting.next_request_id(claim(0).id), "sio-relay:n:1-0:2");
        for forged in [u64::MAX, MAX_CLIENTS_PER_SERVER + 1] {
            let taken = awaiting.answer(&reply(&id, Answer::Count(forged), t0));
            assert_eq!(taken, Taken::Implausible);
        }
        awaiting.answer(&reply(&id, Answer::Count(MAX_CLIENTS_PER_SERVER), t0));
        awaiting.answer(&reply(&id, Answer::Count(1), t0));
        awaiting.answer(&reply(&id, Answer::Ack(Acked::Nothing), t0));
        let [Finished::Acknowledged(acked)] = &awaiting.finished(t0 + WAIT)[..] else {
            panic!("not acknowledged");
        };
        assert_eq!(
            (acked.servers, acked.clients),
            (2, MAX_CLIENTS_PER_SERVER + 1),
            "only the servers' answers counted"
        );
    }
}
