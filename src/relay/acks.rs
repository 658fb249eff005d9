//! Entries that ask for their clients' acknowledgements: sending each attempt, taking the servers'
//! answers in, and ending each entry with a result, another attempt, or a dead letter.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::deliver::Plan;
use super::session::Session;
use super::Relay;
use crate::awaiting::{Acknowledged, Finished, Unanswered};
use crate::dead_letter::Reason;
use crate::fault::Fault;
use crate::servers;

impl Relay {
    /// Sends a broadcast with acknowledgements for each of `plans` (all [`Plan::AwaitAcks`]),
    /// once the answers to it will be heard, and records the attempt.
    pub(super) async fn request_acks(
        &mut self,
        s: &mut Session,
        plans: Vec<Plan>,
    ) -> Result<(), Fault> {
        if plans.is_empty() {
            return Ok(());
        }
        let mut nsps: Vec<String> = plans
            .iter()
            .filter_map(|plan| match plan {
                Plan::AwaitAcks { entry, .. } => Some(entry.nsp().to_owned()),
                _ => None,
            })
            .collect();
        nsps.sort();
        nsps.dedup();
        for nsp in &nsps {
            s.listener.listen(&self.cfg, nsp).await?;
        }
        let counts = servers::count(&mut s.all_nodes, &self.target, &nsps).await?;
        let servers: HashMap<&str, u64> = nsps.iter().map(String::as_str).zip(counts).collect();
        let now = Instant::now();
        let mut pipe = redis::pipe();
        let mut bytes = 0;
        for plan in &plans {
            let Plan::AwaitAcks { claim, entry, wait } = plan else {
                continue;
            };
            let nsp = entry.nsp();
            let request_id = self.awaiting.attempt(*claim, nsp, *wait, servers[nsp], now);
            let packet = self
                .target
                .ack_request(entry, &request_id)
                .expect("checked when planned");
            bytes += packet.payload.len() + packet.channel.len();
            pipe.cmd(self.target.publish_command())
                .arg(&packet.channel)
                .arg(&packet.payload)
                .ignore();
        }
        s.flow
            .make_room(&mut s.writer, bytes, &self.shutdown)
            .await?;
        pipe.query_async::<()>(&mut s.all_nodes).await?;
        self.metrics.ack_requests.inc_by(plans.len() as u64);
        self.metrics.acks_waiting.set(self.awaiting.len() as i64);
        debug!(
            entries = plans.len(),
            "sent broadcasts with acknowledgements"
        );
        Ok(())
    }

    /// Takes in the answers heard since the last step, ends the attempts that are over (a result
    /// for what a client acknowledged, a dead letter for what is too old to try again), and sends
    /// again the entries whose rest is over.
    pub(super) async fn follow_acks(&mut self, s: &mut Session) -> Result<(), Fault> {
        for reply in s.listener.drain() {
            if let Some(latency) = self.awaiting.answer(&reply) {
                self.metrics.client_acks.inc();
                self.metrics.ack_latency.observe(latency.as_secs_f64());
            }
        }
        let dropped = s.listener.take_dropped();
        if dropped > 0 {
            warn!(dropped, "the relay fell behind the servers' answers and dropped some; the entries they were for are sent again");
        }
        let now = Instant::now();
        let mut dead = Vec::new();
        for finished in self.awaiting.finished(now) {
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
        for resting in self.awaiting.due(now) {
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
        self.metrics.acks_waiting.set(self.awaiting.len() as i64);
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
            self.metrics.delivered(self.age(claim.id));
            self.metrics.acked_by_clients.inc();
            debug!(id = %claim.id, acks, clients, attempts, "clients acknowledged an entry");
        } else {
            info!(id = %claim.id, "an entry clients acknowledged is no longer pending for this consumer (reclaimed or acknowledged elsewhere); no result written");
        }
        Ok(())
    }

    /// When the next attempt may be over or due, to bound the read's wait.
    pub(super) fn acks_wake(&self) -> Option<Duration> {
        let now = Instant::now();
        self.awaiting
            .next_wake(now)
            .map(|at| at.saturating_duration_since(now))
    }
}
