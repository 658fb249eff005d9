//! Entries that ask for their clients' acknowledgements: taking the servers' answers in, and ending
//! each entry with a result, another attempt, or a dead letter. Attempts go out through the
//! delivery script ([`Plan::AwaitAcks`]), which sends one only while the entry is this consumer's.

use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::depart::Departure;
use super::plan::Plan;
use super::session::Session;
use super::Relay;
use crate::awaiting::{Acknowledged, Finished, Unanswered};
use crate::dead_letter::Reason;
use crate::fault::Fault;

impl Relay {
    /// Takes in the answers heard since the last step, ends the attempts that are over (a result
    /// for what a client acknowledged, a dead letter for what is too old to try again), and sends
    /// again the entries whose rest is over.
    pub(super) async fn follow_acks(&mut self, s: &mut Session) -> Result<(), Fault> {
        self.hear(s);
        let now = Instant::now();
        let mut dead = Vec::new();
        for finished in self.custody.awaiting.finished(now) {
            match finished {
                Finished::Acknowledged(acked) => self.write_result(s, acked).await?,
                Finished::Unanswered(unanswered) => match self.gave_up(unanswered) {
                    Some(reason) => dead.push(Plan::DeadLetter {
                        claim: unanswered.claim,
                        reason,
                    }),
                    None => debug!(
                        id = %unanswered.claim.id,
                        clients = unanswered.clients,
                        attempts = unanswered.attempts,
                        "no client acknowledged this attempt; sending it again later"
                    ),
                },
            }
        }
        let mut again = Vec::new();
        for resting in self.custody.awaiting.due(now) {
            match self.gave_up(resting) {
                Some(reason) => dead.push(Plan::DeadLetter {
                    claim: resting.claim,
                    reason,
                }),
                None => again.push(resting.claim),
            }
        }
        if !dead.is_empty() {
            // The delivery script takes them out of `awaiting` as it dead-letters them.
            self.run_plans(s, dead).await?;
        }
        if !again.is_empty() {
            self.redeliver(s, again).await?;
        }
        self.metrics
            .acks_waiting
            .set(self.custody.awaiting.len() as i64);
        if self.custody.awaiting.is_empty() {
            info!("no entry waits for its clients' acknowledgements any more");
        }
        Ok(())
    }

    /// `Some` once an entry no client acknowledged is older than `acks.max_age`: it is not sent
    /// again.
    fn gave_up(&self, unanswered: Unanswered) -> Option<Reason> {
        let limit = self.cfg.acks.max_age;
        let age = self.age(unanswered.claim.id);
        (age > limit).then_some(Reason::Unacknowledged {
            attempts: unanswered.attempts,
            clients: unanswered.clients,
            age,
            limit,
        })
    }

    /// Writes the result of an entry clients acknowledged and acknowledges it, together.
    async fn write_result(&mut self, s: &mut Session, acked: Acknowledged) -> Result<(), Fault> {
        let Acknowledged {
            claim,
            nsp,
            attempts,
            servers,
            clients,
            acks,
            answers,
            answers_dropped,
            latency,
        } = acked;
        let mut fields = vec![
            ("id", claim.id.to_string()),
            ("nsp", nsp),
            ("servers", servers.to_string()),
            ("clients", clients.to_string()),
            ("acks", acks.to_string()),
            ("answers", serde_json::Value::Array(answers).to_string()),
            ("attempts", attempts.to_string()),
            ("latency_ms", latency.as_millis().to_string()),
        ];
        if answers_dropped > 0 {
            fields.push(("answers_dropped", answers_dropped.to_string()));
        }
        let done = self
            .scripts
            .acked(&mut s.writer, claim.id, &fields)
            .await
            .map_err(Fault::of)?;
        if done {
            self.spans.clients(claim.id, clients);
            self.departed(claim.id, Departure::AckedByClients);
            debug!(id = %claim.id, acks, clients, attempts, "clients acknowledged an entry");
        } else {
            info!(id = %claim.id, "an entry clients acknowledged is no longer pending for this consumer (reclaimed or acknowledged elsewhere); no result written");
        }
        Ok(())
    }

    /// When the next attempt may be over or due, to bound the read's wait.
    pub(super) fn acks_wake(&self) -> Option<Duration> {
        let now = Instant::now();
        self.custody
            .awaiting
            .next_wake(now)
            .map(|at| at.saturating_duration_since(now))
    }
}
