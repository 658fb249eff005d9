//! What the relay does about an entry once the delivery script said what happened to it: derived
//! from the plan and the script's outcome alone, without Redis or the relay's state, so that every
//! pairing is decided in one place (and unit-tested) and [`super::deliver`] only carries it out.

use std::time::Duration;

use super::depart::Departure;
use super::plan::Plan;
use crate::dead_letter::Reason;
use crate::delivery::{Deliverable, Outcome};

/// The consequence of one entry's outcome.
#[derive(Debug)]
pub(super) enum Effect<'p> {
    /// Published: waits, with the rest of its namespace's batch, for the servers' confirmation.
    AwaitConfirmation {
        entry: &'p Deliverable,
        receivers: u64,
    },
    /// Appended to the streams adapter's stream, which `servers` read, and acknowledged with it.
    Appended { servers: u64 },
    /// Not published: held until enough servers listen. `why` is the outcome, for the log.
    Hold {
        entry: &'p Deliverable,
        why: Outcome,
    },
    /// A broadcast with acknowledgements went out to `servers`: the entry waits `wait` for its
    /// clients' answers.
    AwaitAnswers {
        request: &'p Deliverable,
        wait: Duration,
        servers: u64,
    },
    /// Redis refused to send the broadcast with acknowledgements: the attempt ends at once and the
    /// entry rests until the next one.
    RestAttempt {
        request: &'p Deliverable,
        error: String,
    },
    /// Dead-lettered, and acknowledged with it.
    DeadLettered(&'p Reason),
    /// Left the relay's hands without a dead letter (see [`Departure`]).
    Departed(Departure),
    /// Another relay owns it now, or it is acknowledged: forgotten here, nothing counted.
    NotOwned,
    /// A pairing the delivery script never gives: said in the log, the entry forgotten here (it is
    /// still pending in Redis, so it is reclaimed, not lost).
    Unexpected(Outcome),
}

impl<'p> Effect<'p> {
    /// The effect of `outcome`, the delivery script's answer for `plan`. [`Outcome::ToPublish`]
    /// must have been replaced by what the relay's own publish did (see `publish_external`).
    pub(super) fn of(plan: &'p Plan, outcome: Outcome) -> Effect<'p> {
        match (plan, outcome) {
            (_, Outcome::NotOwned) => Effect::NotOwned,
            (_, Outcome::AlreadyPublished) => Effect::Departed(Departure::AlreadyPublished),
            (Plan::Publish(entry), Outcome::Published { receivers }) => {
                Effect::AwaitConfirmation { entry, receivers }
            }
            (Plan::Publish(_), Outcome::Appended { servers }) => Effect::Appended { servers },
            (Plan::Publish(entry), why) if why.is_held() => Effect::Hold { entry, why },
            (Plan::AwaitAcks { request, wait }, Outcome::AttemptSent { servers }) => {
                Effect::AwaitAnswers {
                    request,
                    wait: *wait,
                    servers,
                }
            }
            (Plan::AwaitAcks { request, .. }, Outcome::PublishRefused { error }) => {
                Effect::RestAttempt { request, error }
            }
            (Plan::DeadLetter { reason, .. }, Outcome::Acknowledged) => {
                Effect::DeadLettered(reason)
            }
            (Plan::Gone(_), Outcome::Acknowledged) => {
                Effect::Departed(Departure::Deleted { acknowledged: true })
            }
            (_, outcome) => Effect::Unexpected(outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Claim;
    use crate::entry::EntryId;
    use crate::packet::Packet;
    use crate::protocol::ReasonCode;

    fn claim() -> Claim {
        Claim::first_read(EntryId { ms: 1, seq: 0 })
    }

    fn entry() -> Deliverable {
        Deliverable {
            claim: claim(),
            nsp: "/".into(),
            rooms: 0,
            packet: Packet {
                channel: "socket.io#/#".into(),
                payload: b"packet".to_vec(),
            },
            counted: None,
        }
    }

    fn publish() -> Plan {
        Plan::Publish(entry())
    }

    fn await_acks() -> Plan {
        Plan::AwaitAcks {
            request: entry(),
            wait: Duration::from_secs(2),
        }
    }

    fn dead_letter() -> Plan {
        Plan::DeadLetter {
            claim: claim(),
            reason: Reason::MaxDeliveries {
                deliveries: 11,
                limit: 10,
            },
        }
    }

    fn refused() -> Outcome {
        Outcome::PublishRefused {
            error: "NOPERM".into(),
        }
    }

    #[test]
    fn a_published_entry_waits_for_its_confirmation() {
        let plan = publish();
        let effect = Effect::of(&plan, Outcome::Published { receivers: 3 });
        assert!(matches!(
            effect,
            Effect::AwaitConfirmation { receivers: 3, .. }
        ));
    }

    #[test]
    fn an_entry_appended_to_the_servers_stream_is_delivered() {
        let plan = publish();
        let effect = Effect::of(&plan, Outcome::Appended { servers: 2 });
        assert!(matches!(effect, Effect::Appended { servers: 2 }));
        let plan = dead_letter();
        let effect = Effect::of(&plan, Outcome::Appended { servers: 2 });
        assert!(matches!(effect, Effect::Unexpected(_)));
    }

    #[test]
    fn an_entry_no_server_took_is_held_with_the_reason() {
        let plan = publish();
        for why in [
            Outcome::TooFewServers { servers: 0 },
            Outcome::HeldBehind,
            refused(),
            Outcome::TooFewReceivers { receivers: 1 },
        ] {
            match Effect::of(&plan, why.clone()) {
                Effect::Hold { why: said, .. } => assert_eq!(said, why),
                other => panic!("{why:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn a_broadcast_with_acknowledgements_waits_for_answers_or_rests_when_refused() {
        let plan = await_acks();
        assert!(matches!(
            Effect::of(&plan, Outcome::AttemptSent { servers: 2 }),
            Effect::AwaitAnswers { servers: 2, wait, .. } if wait == Duration::from_secs(2)
        ));
        assert!(matches!(
            Effect::of(&plan, refused()),
            Effect::RestAttempt { error, .. } if error == "NOPERM"
        ));
    }

    #[test]
    fn acknowledged_entries_depart_by_how_they_were_acknowledged() {
        let plan = dead_letter();
        assert!(matches!(
            Effect::of(&plan, Outcome::Acknowledged),
            Effect::DeadLettered(reason) if reason.code() == ReasonCode::MaxDeliveries
        ));
        let plan = Plan::Gone(claim());
        assert!(matches!(
            Effect::of(&plan, Outcome::Acknowledged),
            Effect::Departed(Departure::Deleted { acknowledged: true })
        ));
        for plan in [publish(), await_acks(), dead_letter(), Plan::Gone(claim())] {
            assert!(matches!(
                Effect::of(&plan, Outcome::AlreadyPublished),
                Effect::Departed(Departure::AlreadyPublished)
            ));
            assert!(matches!(
                Effect::of(&plan, Outcome::NotOwned),
                Effect::NotOwned
            ));
        }
    }

    #[test]
    fn pairings_the_script_never_gives_are_unexpected_not_guessed() {
        // Left for the relay to publish: must have been replaced before the effects are derived.
        let plan = publish();
        assert!(matches!(
            Effect::of(&plan, Outcome::ToPublish { servers: 1 }),
            Effect::Unexpected(Outcome::ToPublish { .. })
        ));
        // A dead letter is never published, a publish never acknowledged without being confirmed.
        let plan = dead_letter();
        assert!(matches!(
            Effect::of(&plan, Outcome::Published { receivers: 1 }),
            Effect::Unexpected(_)
        ));
        let plan = publish();
        assert!(matches!(
            Effect::of(&plan, Outcome::Acknowledged),
            Effect::Unexpected(_)
        ));
        let plan = await_acks();
        assert!(matches!(
            Effect::of(&plan, Outcome::HeldBehind),
            Effect::Unexpected(_)
        ));
    }
}
