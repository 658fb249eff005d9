//! Hearing the servers' answers and confirming what was published: the decisions are
//! [`crate::confirming`]'s; here they are carried out (acknowledged, or held to go out again) and
//! told to operators.

use std::time::{Duration, Instant};

use tracing::warn;

use super::depart::Departure;
use super::duties::Duty;
use super::session::Session;
use super::spans::{self, Ending};
use super::Relay;
use crate::awaiting::{Taken, MAX_CLIENTS_PER_SERVER};
use crate::confirming::Decided;
use crate::connection::AllNodes;
use crate::delivery::Scripts;
use crate::fault::Fault;
use crate::packet::Target;
use crate::servers;

/// What the confirm stage keeps from one step to the next: the namespaces whose servers were said
/// not to answer confirmations (said once per namespace).
#[derive(Default)]
pub(super) struct ConfirmState {
    silent: std::collections::HashSet<String>,
}

/// The session's connections a confirmation travels on, borrowed apart from the rest of the
/// session so that it can run while the session waits for a read and for answers.
pub(super) struct Links<'a> {
    pub writer: &'a mut redis::aio::MultiplexedConnection,
    pub all_nodes: &'a mut AllNodes,
}

/// Sends what `decided` confirms and takes the server counts `to_count` still needs: in the same
/// script outside a cluster, apart in one (a script sees its own node only). Returns the counts.
pub(super) async fn send_confirmation(
    scripts: &Scripts,
    target: &Target,
    links: Links<'_>,
    decided: &Decided,
    to_count: &[String],
) -> redis::RedisResult<Vec<(String, u64)>> {
    let in_script: &[String] = if links.all_nodes.is_cluster() {
        &[]
    } else {
        to_count
    };
    let mut counts = Vec::new();
    if !decided.is_empty() || !in_script.is_empty() {
        counts = scripts
            .confirm(links.writer, &decided.confirmation(), in_script)
            .await?;
    }
    if in_script.is_empty() && !to_count.is_empty() {
        counts = servers::count(links.all_nodes, target, to_count).await?;
    }
    Ok(to_count.iter().cloned().zip(counts).collect())
}

impl Relay {
    /// Takes in the answers heard since the last look: to confirmation requests and to attempts.
    pub(super) fn hear(&mut self, s: &mut Session) {
        let mut implausible = 0;
        for reply in s.listener.drain() {
            if s.confirming.answer(&reply) {
                continue;
            }
            match self.custody.awaiting.answer(&reply) {
                Taken::Ack(latency) => {
                    self.metrics.client_acks.inc();
                    self.metrics.ack_latency.observe(latency.as_secs_f64());
                }
                Taken::Implausible => implausible += 1,
                Taken::Counted => {}
            }
        }
        if implausible > 0 {
            warn!(
                answers = implausible,
                max = MAX_CLIENTS_PER_SERVER,
                "ignored answers that claim more clients than a Socket.IO server holds (not a server's: who else may PUBLISH on the response channels?)"
            );
        }
        let dropped = s.listener.take_dropped();
        if dropped > 0 {
            warn!(dropped, "the relay fell behind the servers' answers and dropped some; the entries they were for are sent again");
        }
    }

    /// Hears the answers, counts the servers where that decides something, and returns what can
    /// be decided about the batches published so far.
    pub(super) async fn decide(&mut self, s: &mut Session) -> Result<Decided, Fault> {
        self.hear(s);
        if s.confirming.is_empty() {
            return Ok(Decided::default());
        }
        let nsps = s.confirming.counts_due(Instant::now());
        if !nsps.is_empty() {
            let counts = servers::count(&mut s.all_nodes, &self.target, &nsps).await?;
            let counts: Vec<(String, u64)> = nsps.into_iter().zip(counts).collect();
            s.confirming.observe(&counts, Instant::now());
        }
        Ok(self.decide_counted(s))
    }

    /// Hears the answers and returns what can be decided on them and the counts taken so far.
    pub(super) fn decide_counted(&mut self, s: &mut Session) -> Decided {
        self.hear(s);
        s.confirming
            .decide(Instant::now(), &[], self.cfg.delivery.min_receivers)
    }

    /// Decides and confirms what can be, at once.
    pub(super) async fn confirm(&mut self, s: &mut Session) -> Result<(), Fault> {
        let decided = self.decide(s).await?;
        if decided.is_empty() {
            return Ok(());
        }
        let links = Links {
            writer: &mut s.writer,
            all_nodes: &mut s.all_nodes,
        };
        send_confirmation(&self.scripts, &self.target, links, &decided, &[]).await?;
        self.confirmed(decided);
        Ok(())
    }

    /// Confirms within `delivery.confirm_timeout` everything published, for a clean stop.
    pub(super) async fn confirm_all(&mut self, s: &mut Session) -> Result<(), Fault> {
        loop {
            self.confirm(s).await?;
            let Some(wake) = self.confirm_wake(s) else {
                return Ok(());
            };
            tokio::select! {
                _ = tokio::time::sleep(wake) => {}
                _ = s.listener.heard() => {}
            }
        }
    }

    /// Records a confirmation: `delivered` entries are acknowledged; the others are held, to be
    /// published again.
    pub(super) fn confirmed(&mut self, decided: Decided) {
        let Decided {
            delivered,
            again,
            unanswered,
            reached_no_client,
            ..
        } = decided;
        self.metrics.reached_no_client.inc_by(reached_no_client);
        for batch in delivered {
            for claim in batch.claims {
                self.departed(claim.id, Departure::Delivered);
            }
        }
        for (nsp, servers, answers) in unanswered {
            if self.confirms.silent.insert(nsp.clone()) {
                warn!(
                    ?nsp,
                    servers,
                    answers,
                    timeout = %humantime::format_duration(self.cfg.delivery.confirm_timeout),
                    "Socket.IO servers still subscribed did not answer within delivery.confirm_timeout (an event loop blocked? servers older than Socket.IO 4.5, which cannot answer: set delivery.confirm = \"published\"); confirmed without them"
                );
            }
        }
        let mut lost_any = false;
        for batch in again {
            lost_any = true;
            let lost = batch.claims.len() as u64;
            for claim in batch.claims {
                self.custody.held.insert(&batch.nsp, claim);
                self.expire_by(claim);
                self.spans.ended(claim.id, Ending::Held(spans::UNCONFIRMED));
            }
            self.metrics.unconfirmed.inc_by(lost);
            warn!(
                nsp = ?batch.nsp,
                entries = lost,
                servers_when_published = batch.servers,
                "Socket.IO servers disconnected from Redis before saying they had these entries (their packets may have been dropped with them); they stay pending and are published again once servers, and the clients of their rooms, are back"
            );
        }
        if lost_any {
            self.duties.due_now(Duty::Retry);
        }
    }

    /// When the batches waiting for answers should next be looked at.
    pub(super) fn confirm_wake(&self, s: &Session) -> Option<Duration> {
        let now = Instant::now();
        s.confirming
            .next_wake(now)
            .map(|at| at.saturating_duration_since(now))
    }
}
