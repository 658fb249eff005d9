//! The plan stage: what to do with each entry in hand, and in which batches, decided without Redis
//! and without reading the clock (the moment is given), so that every rule is unit-tested here:
//! too many deliveries, malformed, too old, asking for its clients' acknowledgements, counted by
//! its clients, or published as it is; then batches bounded in bytes, in stream order.

use std::time::Duration;

use crate::awaiting::Awaiting;
use crate::config::{Config, Confirm};
use crate::confirming::Confirming;
use crate::dead_letter::{Lifetime, Reason};
use crate::delivery::{Claim, Deliverable};
use crate::entry::{Entry, EntryId, Malformed, Operation, RawEntry};
use crate::packet::Target;

/// An entry in hand: its fields as read, and what the relay knows of it.
pub(super) struct Taken {
    pub raw: RawEntry,
    pub claim: Claim,
}

/// What the relay decided to do with one entry.
pub(super) enum Plan {
    Publish(Deliverable),
    DeadLetter {
        claim: Claim,
        reason: Reason,
    },
    /// Deleted from the stream before it could be delivered.
    Gone(Claim),
    /// Asks for the clients' acknowledgements: `request`, the next attempt's broadcast with
    /// acknowledgements, waits `wait` for them (see [`crate::awaiting`]).
    AwaitAcks {
        request: Deliverable,
        wait: Duration,
    },
}

impl Plan {
    pub fn claim(&self) -> Claim {
        match self {
            Plan::Publish(entry) | Plan::AwaitAcks { request: entry, .. } => entry.claim,
            Plan::DeadLetter { claim, .. } | Plan::Gone(claim) => *claim,
        }
    }

    /// Packet bytes it publishes.
    pub fn bytes(&self) -> usize {
        self.publishes().map_or(0, Deliverable::bytes)
    }

    /// What it publishes, if anything.
    pub fn publishes(&self) -> Option<&Deliverable> {
        match self {
            Plan::Publish(entry) | Plan::AwaitAcks { request: entry, .. } => Some(entry),
            Plan::DeadLetter { .. } | Plan::Gone(_) => None,
        }
    }
}

/// The rules a plan follows, at one moment.
pub(super) struct Planner<'a> {
    pub cfg: &'a Config,
    pub target: &'a Target,
    /// Redis's clock, in milliseconds since the epoch: entry IDs are Redis time.
    pub now_ms: u64,
}

/// Where the request IDs of broadcasts with acknowledgements come from: an attempt's is the entry's
/// own (see [`Awaiting::next_request_id`]), a counted publication's the session's next.
pub(super) struct RequestIds<'a> {
    pub awaiting: &'a Awaiting,
    pub confirming: &'a mut Confirming,
}

impl Planner<'_> {
    pub fn plan(&self, taken: Taken, ids: &mut RequestIds<'_>) -> Plan {
        let Taken { raw, claim } = taken;
        let limit = self.cfg.delivery.max_deliveries;
        if claim.deliveries > u64::from(limit) {
            let reason = Reason::MaxDeliveries {
                deliveries: claim.deliveries,
                limit,
            };
            return Plan::DeadLetter { claim, reason };
        }
        let mut entry = match Entry::parse_within(&raw.fields, &self.cfg.limits) {
            Ok(entry) => entry,
            Err(problem) => return malformed(claim, problem),
        };
        let claim = Claim {
            ttl: entry.ttl(),
            ..claim
        };
        if let Some(reason) = self.expiry(claim) {
            return Plan::DeadLetter { claim, reason };
        }
        entry.append_id(claim.id);
        if let Some(wait) = entry.ack(self.cfg.acks.default_wait()) {
            let request_id = ids.awaiting.next_request_id(claim.id);
            return match self.target.ack_request(&entry, &request_id) {
                Ok(packet) => Plan::AwaitAcks {
                    request: Deliverable {
                        packet,
                        nsp: entry.nsp().to_owned(),
                        rooms: entry.rooms().len(),
                        claim,
                        counted: None,
                    },
                    wait,
                },
                Err(problem) => Plan::DeadLetter {
                    claim,
                    reason: problem.into(),
                },
            };
        }
        // Counted: sent as a broadcast with acknowledgements, whose answers say how many clients
        // it reached. Not a volatile one: the adapter passes no flags on with such a request.
        let counted = (self.cfg.delivery.confirm == Confirm::Clients
            && matches!(
                entry.operation(),
                Operation::Emit {
                    volatile: false,
                    ..
                }
            ))
        .then(|| ids.confirming.request_id());
        let packet = match &counted {
            Some(request_id) => self.target.ack_request(&entry, request_id),
            None => self.target.encode(&entry),
        };
        match packet {
            Ok(packet) => Plan::Publish(Deliverable {
                packet,
                nsp: entry.nsp().to_owned(),
                rooms: entry.rooms().len(),
                claim,
                counted,
            }),
            Err(problem) => Plan::DeadLetter {
                claim,
                reason: problem.into(),
            },
        }
    }

    /// `Some` when the entry's ID says it is older than its lifetime: its `ttl` or
    /// `delivery.max_age`, whichever ends first.
    pub fn expiry(&self, claim: Claim) -> Option<Reason> {
        let lifetime = self.lifetime(claim)?;
        let age = age(claim.id, self.now_ms);
        (age > lifetime.limit()).then_some(Reason::Expired { age, lifetime })
    }

    /// How long until [`Planner::expiry`] says the entry expired, if it has a lifetime: never
    /// zero, so that a loop woken by it finds it expired.
    pub fn expires_in(&self, claim: Claim) -> Option<Duration> {
        let left = self
            .lifetime(claim)?
            .limit()
            .saturating_sub(age(claim.id, self.now_ms));
        // Ages are whole milliseconds, and an entry is expired once strictly older.
        Some(left + Duration::from_millis(1))
    }

    fn lifetime(&self, claim: Claim) -> Option<Lifetime> {
        Lifetime::of(claim.ttl, self.cfg.delivery.max_age)
    }

    /// The dead letter of an entry the reader measured but did not keep: which limit it is over.
    pub fn too_big(&self, claim: Claim, bytes: u64, fields: u64) -> Plan {
        let limits = &self.cfg.limits;
        let problem = if fields > limits.max_fields as u64 {
            Malformed::TooManyFields {
                fields,
                limit: limits.max_fields,
            }
        } else {
            Malformed::TooLarge {
                bytes,
                limit: limits.max_entry_bytes,
            }
        };
        malformed(claim, problem)
    }
}

fn malformed(claim: Claim, problem: Malformed) -> Plan {
    Plan::DeadLetter {
        claim,
        reason: Reason::Malformed(problem),
    }
}

/// How old an entry is at `now_ms`, by the time in its ID (both Redis time).
pub(super) fn age(id: EntryId, now_ms: u64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(id.ms))
}

/// `plans` in stream order, cut into batches of at most `limit` bytes of packets; an entry larger
/// than that goes alone, and what publishes nothing joins the batch at hand.
pub(super) fn batches(plans: Vec<Plan>, limit: usize) -> Vec<Vec<Plan>> {
    let mut batches = vec![Vec::new()];
    let mut bytes = 0;
    for plan in plans {
        let batch = batches.last_mut().expect("never empty");
        if !batch.is_empty() && bytes + plan.bytes() > limit {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += plan.bytes();
        batches.last_mut().expect("never empty").push(plan);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ReasonCode;

    const NOW_MS: u64 = 1_700_000_000_000;

    fn claim(ms: u64, deliveries: u64) -> Claim {
        Claim {
            deliveries,
            ..Claim::first_read(EntryId { ms, seq: 0 })
        }
    }

    fn taken(fields: &[(&str, &str)], claim: Claim) -> Taken {
        Taken {
            raw: RawEntry {
                id: claim.id,
                fields: fields
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
            },
            claim,
        }
    }

    /// Plans `fields` under `cfg`, an entry produced a second ago and read for the first time.
    fn plan_with(cfg: &Config, fields: &[(&str, &str)], claim: Claim) -> Plan {
        let target = cfg.target();
        let awaiting = Awaiting::new(10, Duration::from_secs(1), "test");
        let mut confirming = Confirming::new(
            cfg.delivery.confirm,
            Duration::from_secs(5),
            "test:",
            "journal:",
        );
        let planner = Planner {
            cfg,
            target: &target,
            now_ms: NOW_MS,
        };
        let mut ids = RequestIds {
            awaiting: &awaiting,
            confirming: &mut confirming,
        };
        planner.plan(taken(fields, claim), &mut ids)
    }

    fn fresh() -> Claim {
        claim(NOW_MS - 1000, 1)
    }

    fn reason(plan: &Plan) -> &Reason {
        match plan {
            Plan::DeadLetter { reason, .. } => reason,
            _ => panic!("expected a dead letter"),
        }
    }

    const EVENT: &[(&str, &str)] = &[("event", "note"), ("data", "\"hi\"")];

    #[test]
    fn a_valid_event_is_published_as_the_emitter_would() {
        let cfg = Config::default();
        let Plan::Publish(entry) = plan_with(&cfg, EVENT, fresh()) else {
            panic!("expected a publication");
        };
        assert_eq!(entry.nsp, "/");
        assert_eq!(entry.counted, None);
        let expected = cfg
            .target()
            .encode(&Entry::parse(&taken(EVENT, fresh()).raw.fields).unwrap())
            .unwrap();
        assert_eq!(entry.packet, expected);
    }

    #[test]
    fn one_delivery_too_many_is_dead_lettered_before_anything_else() {
        let cfg = Config::default();
        let limit = u64::from(cfg.delivery.max_deliveries);
        assert!(matches!(
            plan_with(&cfg, EVENT, claim(NOW_MS, limit)),
            Plan::Publish(_)
        ));
        // Even a malformed entry says it was tried too often: that is what an operator acts on.
        let plan = plan_with(&cfg, &[("nope", "1")], claim(NOW_MS, limit + 1));
        assert_eq!(reason(&plan).code(), ReasonCode::MaxDeliveries);
    }

    #[test]
    fn a_malformed_entry_is_dead_lettered_with_its_problem() {
        let plan = plan_with(&Config::default(), &[("event", "e"), ("rom", "x")], fresh());
        assert_eq!(reason(&plan).code(), ReasonCode::Malformed);
        assert!(
            reason(&plan).detail().contains("rom"),
            "{:?}",
            reason(&plan)
        );
    }

    #[test]
    fn max_age_counts_from_the_id_on_redis_time_and_zero_means_never() {
        let mut cfg = Config::default();
        let old = claim(NOW_MS - 61_000, 1);
        assert!(matches!(plan_with(&cfg, EVENT, old), Plan::Publish(_)));
        cfg.delivery.max_age = Duration::from_secs(60);
        assert_eq!(
            reason(&plan_with(&cfg, EVENT, old)).code(),
            ReasonCode::Expired
        );
        assert!(matches!(
            plan_with(&cfg, EVENT, claim(NOW_MS - 59_000, 1)),
            Plan::Publish(_)
        ));
        // An ID ahead of Redis's clock (another node's) is not old.
        assert_eq!(age(claim(NOW_MS + 5, 1).id, NOW_MS), Duration::ZERO);
    }

    #[test]
    fn a_ttl_counts_from_the_id_on_redis_time_and_travels_with_the_claim() {
        let cfg = Config::default();
        let with_ttl = &[("event", "e"), ("ttl", "30s")];
        let Plan::Publish(entry) = plan_with(&cfg, with_ttl, claim(NOW_MS - 30_000, 1)) else {
            panic!("30s old is not older than 30s");
        };
        let ttl = entry.claim.ttl.expect("the claim knows its lifetime");
        assert_eq!(ttl.get(), Duration::from_secs(30));
        let plan = plan_with(&cfg, with_ttl, claim(NOW_MS - 30_001, 1));
        assert_eq!(
            reason(&plan),
            &Reason::Expired {
                age: Duration::from_millis(30_001),
                lifetime: Lifetime::Ttl(ttl),
            }
        );
        assert_eq!(
            reason(&plan).detail(),
            "30s 1ms old, older than its ttl 30s"
        );
        // A claim in hand (held, or waiting for acknowledgements) has no fields: its ttl decides.
        let (target, now_ms) = (cfg.target(), NOW_MS);
        let at = |now_ms| Planner {
            cfg: &cfg,
            target: &target,
            now_ms,
        };
        let held = entry.claim;
        assert_eq!(at(now_ms).expiry(held), None);
        assert_eq!(at(now_ms).expires_in(held), Some(Duration::from_millis(1)));
        assert_eq!(
            at(now_ms - 10_000).expires_in(held),
            Some(Duration::from_millis(10_001))
        );
        assert_eq!(
            at(now_ms + 1).expiry(held).unwrap().code(),
            ReasonCode::Expired
        );
        let without = fresh();
        assert_eq!(at(now_ms + 1_000_000).expiry(without), None);
        assert_eq!(
            at(now_ms).expires_in(without),
            None,
            "no lifetime, no expiry"
        );
    }

    #[test]
    fn the_earlier_of_ttl_and_max_age_expires_an_entry_and_says_which() {
        let mut cfg = Config::default();
        cfg.delivery.max_age = Duration::from_secs(60);
        let old = claim(NOW_MS - 45_000, 1);
        let short = plan_with(&cfg, &[("event", "e"), ("ttl", "30s")], old);
        assert!(
            reason(&short).detail().ends_with("older than its ttl 30s"),
            "{}",
            reason(&short).detail()
        );
        let long = &[("event", "e"), ("ttl", "2m")];
        assert!(
            matches!(plan_with(&cfg, long, old), Plan::Publish(_)),
            "a ttl longer than max_age does not stretch it"
        );
        let older = claim(NOW_MS - 61_000, 1);
        assert_eq!(
            reason(&plan_with(&cfg, long, older)).detail(),
            "1m 1s old, older than delivery.max_age = 1m"
        );
        let Plan::Publish(entry) = plan_with(&cfg, long, old) else {
            panic!("expected a publication");
        };
        let target = cfg.target();
        let planner = Planner {
            cfg: &cfg,
            target: &target,
            now_ms: NOW_MS,
        };
        assert_eq!(
            planner.expires_in(entry.claim),
            Some(Duration::from_millis(15_001)),
            "max_age ends first"
        );
    }

    #[test]
    fn an_entry_with_ack_awaits_its_clients_and_ack_none_opts_out_of_the_default() {
        let mut cfg = Config::default();
        let with_ack = &[("event", "e"), ("ack", "30s")];
        let Plan::AwaitAcks { request, wait } = plan_with(&cfg, with_ack, fresh()) else {
            panic!("expected an attempt");
        };
        assert_eq!(wait, Duration::from_secs(30));
        assert_eq!(request.counted, None);
        assert!(matches!(plan_with(&cfg, EVENT, fresh()), Plan::Publish(_)));
        cfg.acks.default = Duration::from_secs(20);
        assert!(matches!(
            plan_with(&cfg, EVENT, fresh()),
            Plan::AwaitAcks { wait, .. } if wait == Duration::from_secs(20)
        ));
        let opted_out = &[("event", "e"), ("ack", "none")];
        assert!(matches!(
            plan_with(&cfg, opted_out, fresh()),
            Plan::Publish(_)
        ));
        let volatile = &[("event", "e"), ("volatile", "true")];
        assert!(matches!(
            plan_with(&cfg, volatile, fresh()),
            Plan::Publish(_)
        ));
    }

    #[test]
    fn confirmed_by_clients_counts_every_emit_but_a_volatile_one() {
        let mut cfg = Config::default();
        cfg.delivery.confirm = Confirm::Clients;
        let Plan::Publish(counted) = plan_with(&cfg, EVENT, fresh()) else {
            panic!("expected a publication");
        };
        assert!(counted.counted.is_some());
        let volatile = &[("event", "e"), ("volatile", "true")];
        let Plan::Publish(uncounted) = plan_with(&cfg, volatile, fresh()) else {
            panic!("expected a publication");
        };
        assert_eq!(uncounted.counted, None);
        let join = &[("join", r#"["r"]"#), ("room", "a")];
        let Plan::Publish(operation) = plan_with(&cfg, join, fresh()) else {
            panic!("expected a publication");
        };
        assert_eq!(operation.counted, None);
    }

    #[test]
    fn an_entry_over_a_limit_is_dead_lettered_as_malformed_with_the_limit_it_broke() {
        let cfg = Config::default();
        let target = cfg.target();
        let planner = Planner {
            cfg: &cfg,
            target: &target,
            now_ms: NOW_MS,
        };
        let fields = cfg.limits.max_fields as u64 + 1;
        let plan = planner.too_big(fresh(), 10, fields);
        assert!(
            reason(&plan).detail().contains("fields"),
            "{:?}",
            reason(&plan)
        );
        let bytes = cfg.limits.max_entry_bytes as u64 + 1;
        let plan = planner.too_big(fresh(), bytes, 2);
        assert!(
            reason(&plan).detail().contains(&bytes.to_string()),
            "{:?}",
            reason(&plan)
        );
    }

    #[test]
    fn batches_keep_stream_order_within_their_bytes_and_a_large_entry_goes_alone() {
        let cfg = Config::default();
        let published = |ms| {
            let Plan::Publish(entry) = plan_with(&cfg, EVENT, claim(ms, 1)) else {
                panic!("expected a publication");
            };
            entry
        };
        let size = published(1).bytes();
        let plans = vec![
            Plan::Publish(published(1)),
            Plan::Gone(claim(2, 1)),
            Plan::Publish(published(3)),
            Plan::Publish(published(4)),
            Plan::Gone(claim(5, 1)),
        ];
        let cut: Vec<Vec<u64>> = batches(plans, 2 * size)
            .iter()
            .map(|b| b.iter().map(|p| p.claim().id.ms).collect())
            .collect();
        assert_eq!(cut, [vec![1, 2, 3], vec![4, 5]]);
        let alone: Vec<usize> = batches(
            vec![Plan::Publish(published(1)), Plan::Publish(published(2))],
            size - 1,
        )
        .iter()
        .map(Vec::len)
        .collect();
        assert_eq!(alone, [1, 1]);
        assert_eq!(batches(Vec::new(), size).len(), 1);
    }
}
