//! The deliver stage: plans (see [`super::plan`]) through the delivery script, batch by batch, with
//! room made in the servers' buffers first, batches Redis refuses split in halves until the one
//! entry at fault is found and dead-lettered on its own, and what the script did to each entry
//! recorded.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::depart::Departure;
use super::effect::Effect;
use super::plan::{self, Plan, RequestIds, Taken};
use super::session::Session;
use super::spans::{self, Ending, Parent};
use super::Relay;
use crate::delivery::{After, Claim, ConfirmRequest, Deliverable, Op, Outcome, Published};
use crate::entry::EntryId;
use crate::fault::Fault;
use crate::packet::Adapter;
use crate::protocol::ReasonCode;
use crate::reader::Fetched;
use crate::servers;

type Step<'a> = Pin<Box<dyn Future<Output = Result<(), Fault>> + 'a>>;

impl Relay {
    /// Delivers entries as a [`Reader`] returned them, then reads the deferred ones again by ID,
    /// a budget at a time, and delivers them too; `claim` says what the relay knows of each.
    /// Entries over a limit are dead-lettered by ID, their fields copied inside Redis.
    pub(super) async fn deliver_fetched(
        &mut self,
        s: &mut Session,
        mut fetched: Vec<Fetched>,
        claim: &dyn Fn(EntryId) -> Claim,
    ) -> Result<(), Fault> {
        let mut deferred: std::collections::VecDeque<(EntryId, u64)> = Default::default();
        loop {
            let mut plans = Vec::with_capacity(fetched.len());
            let mut again = Vec::new();
            // The planner's fields, not `self.planner()`: the spans are written to meanwhile.
            let planner = plan::Planner {
                cfg: &self.cfg,
                target: &self.target,
                now_ms: self.redis_now_ms(),
            };
            let mut ids = RequestIds {
                awaiting: &self.custody.awaiting,
                confirming: &mut s.confirming,
            };
            for item in fetched {
                let (plan, parent) = match item {
                    Fetched::Entry(raw) if !self.custody.held.contains(raw.id) => {
                        let claim = claim(raw.id);
                        let parent = self.spans.parent(&raw.fields);
                        (planner.plan(Taken { raw, claim }, &mut ids), parent)
                    }
                    Fetched::Entry(_) => continue,
                    Fetched::TooBig { id, bytes, fields } => {
                        (planner.too_big(claim(id), bytes, fields), Parent::Unsaid)
                    }
                    Fetched::Deferred { id, bytes } => {
                        again.push((id, bytes));
                        continue;
                    }
                    Fetched::Deleted(id) => (Plan::Gone(claim(id)), Parent::Unsaid),
                };
                let addressed = plan.publishes().map(|d| (d.nsp.as_str(), d.rooms));
                self.spans.taken(plan.claim(), addressed, parent);
                plans.push(plan);
            }
            self.run_plans(s, plans).await?;
            for item in again.into_iter().rev() {
                deferred.push_front(item);
            }
            // Deferred entries, oldest first, as many as their known sizes fit in a budget.
            let budget = self.cfg.delivery.max_batch_bytes as u64;
            let mut next = Vec::new();
            let mut bytes = 0;
            while let Some(&(id, size)) = deferred.front() {
                if !next.is_empty() && bytes + size > budget {
                    break;
                }
                next.push(id);
                bytes += size;
                deferred.pop_front();
            }
            if next.is_empty() {
                return Ok(());
            }
            fetched = s.fetcher.by_id(&self.cfg.source.stream, &next).await?;
        }
    }

    /// Runs `plans` in stream order through the delivery script, in batches of at most
    /// `delivery.max_batch_bytes` of packets.
    pub(super) async fn run_plans(
        &mut self,
        s: &mut Session,
        plans: Vec<Plan>,
    ) -> Result<(), Fault> {
        let limit = s.flow.batch_bytes(self.cfg.delivery.max_batch_bytes);
        for batch in plan::batches(plans, limit) {
            self.run_batch(s, batch).await?;
        }
        Ok(())
    }

    /// Runs one batch once its packets fit in the servers' buffers. When Redis refuses it for
    /// what is in it, the halves are run on their own, down to the one entry at fault, which is
    /// dead-lettered as `refused` (see `lua/isolate.lua`). The delivery script is all or nothing,
    /// so a refused batch had no effect and splitting it duplicates nothing.
    fn run_batch<'a>(&'a mut self, s: &'a mut Session, mut plans: Vec<Plan>) -> Step<'a> {
        Box::pin(async move {
            if plans.is_empty() {
                return Ok(());
            }
            let bytes = plans.iter().map(Plan::bytes).sum();
            if bytes > 0 {
                s.flow
                    .make_room(&mut s.writer, bytes, &self.shutdown)
                    .await?;
            }
            match self.execute(s, &plans).await {
                Err(Fault::Batch(err)) if plans.len() > 1 => {
                    warn!(entries = plans.len(), error = %err, "Redis refused a batch; splitting it to find the entry at fault");
                    let second = plans.split_off(plans.len() / 2);
                    self.run_batch(s, plans).await?;
                    self.run_batch(s, second).await
                }
                Err(Fault::Batch(err)) => {
                    let claim = plans[0].claim();
                    self.isolate(s, claim, &err.to_string()).await
                }
                done => done,
            }
        })
    }

    /// Dead-letters the one entry Redis refused in every batch. When the dead-letter stream refuses
    /// it too, the entry is parked (see [`crate::held`]): it waits, pending, while the entries
    /// behind it flow, and is tried again every retry interval.
    async fn isolate(&mut self, s: &mut Session, claim: Claim, error: &str) -> Result<(), Fault> {
        let moved = match self.scripts.isolate(&mut s.writer, claim, error).await {
            Ok(moved) => moved,
            Err(e) => match Fault::of(e) {
                Fault::Refused(why) => {
                    self.expire_by(claim);
                    if self.custody.held.park(claim) {
                        error!(
                            id = %claim.id,
                            batch_error = ?error,
                            dead_letter_error = %why,
                            "Redis refuses this entry, and the dead-letter stream refuses it too; it stays pending, is tried again every delivery.retry_interval, and the entries behind it go on"
                        );
                    }
                    self.metrics.parked.set(self.custody.held.parked() as i64);
                    return Ok(());
                }
                fault => return Err(fault),
            },
        };
        if !moved {
            // No longer this consumer's: nothing to record, only to forget.
            self.custody.held.remove(&[claim.id]);
            return Ok(());
        }
        self.departed(claim.id, Departure::DeadLettered(ReasonCode::Refused));
        error!(
            id = %claim.id,
            error = ?error,
            dead_letter_stream = %self.cfg.dead_letter.stream,
            "Redis refused every batch holding this entry; dead-lettered it as `refused` with its fields packed in x-dead-fields"
        );
        Ok(())
    }

    /// Whether `entry`'s channel (or the servers' stream) lies outside the stream's slot, where the
    /// delivery script may not SPUBLISH (or XADD: a cluster refuses a script that touches another
    /// slot): the relay publishes it. Classic PUBLISH is not bound to a slot.
    fn external(&self, entry: &Deliverable) -> bool {
        self.stream_slot.is_some_and(|slot| {
            self.target.adapter != Adapter::Classic
                && redis::cluster_routing::Slot::for_key(&entry.packet.channel) != slot
        })
    }

    /// In a cluster, the servers of each namespace `plans` publish to, counted on every node: the
    /// script sees its own node only. Outside a cluster the script counts them itself.
    async fn count_for_script(
        &mut self,
        s: &mut Session,
        plans: &[Plan],
    ) -> Result<Vec<(String, u64)>, Fault> {
        if !s.all_nodes.is_cluster() {
            return Ok(Vec::new());
        }
        let nsps = plans
            .iter()
            .filter_map(|plan| Some(plan.publishes()?.nsp.as_str()));
        Ok(servers::count_each(&mut s.all_nodes, &self.target, nsps).await?)
    }

    /// Runs the delivery script on `plans` and records what happened to each entry.
    async fn execute(&mut self, s: &mut Session, plans: &[Plan]) -> Result<(), Fault> {
        let counted = self.count_for_script(s, plans).await?;
        let ops: Vec<Op> = plans
            .iter()
            .map(|plan| match plan {
                Plan::Publish(entry) => Op::Publish {
                    entry,
                    behind: !entry.claim.released
                        && self.custody.held.holds_before(&entry.nsp, entry.id()),
                    external: self.external(entry),
                },
                Plan::DeadLetter { claim, reason } => Op::DeadLetter {
                    claim: *claim,
                    reason: reason.code(),
                    detail: reason.detail(),
                },
                Plan::Gone(claim) => Op::Gone(*claim),
                Plan::AwaitAcks { request, .. } => Op::Attempt {
                    request,
                    external: self.external(request),
                },
            })
            .collect();
        // Each namespace published to is followed by a confirmation request.
        let mut publishing: Vec<&str> = plans
            .iter()
            .filter_map(|plan| match plan {
                Plan::Publish(entry) if s.confirming.asks() => Some(entry.nsp.as_str()),
                _ => None,
            })
            .collect();
        publishing.sort_unstable();
        publishing.dedup();
        let confirms: Vec<ConfirmRequest> = publishing
            .iter()
            .filter_map(|nsp| {
                let request_id = s.confirming.request_id();
                Some(ConfirmRequest {
                    nsp: nsp.to_string(),
                    packet: self.target.confirm_request(nsp, &request_id)?,
                    request_id,
                })
            })
            .collect();
        // The answers to attempts and confirmations are heard from before they are asked for.
        let mut asking: Vec<&str> = plans
            .iter()
            .filter_map(|plan| match plan {
                Plan::AwaitAcks { request, .. } => Some(request.nsp.as_str()),
                _ => None,
            })
            .chain(publishing)
            .collect();
        asking.sort_unstable();
        asking.dedup();
        for nsp in asking {
            s.listener.listen(&self.cfg, nsp).await?;
        }
        let started = Instant::now();
        let journal = s.confirming.journal_field();
        let report = self
            .scripts
            .deliver(
                &mut s.writer,
                &s.run_id,
                &ops,
                self.custody.len(),
                &counted,
                &After {
                    journal: &journal,
                    confirms: &confirms,
                },
            )
            .await
            .map_err(Fault::of_batch)?;
        if report.outcomes.len() != ops.len() {
            return Err(Fault::bug(format!(
                "the delivery script returned {} results for {} operations",
                report.outcomes.len(),
                ops.len()
            )));
        }
        let mut outcomes = report.outcomes;
        let mut confirming = report.confirming;
        confirming.extend(
            self.publish_external(s, plans, &mut outcomes, &confirms)
                .await?,
        );
        self.metrics
            .publish_duration
            .observe(started.elapsed().as_secs_f64());
        // Counted after the batches published before: a sample for their confirmation.
        let counts: Vec<(String, u64)> = report.servers.into_iter().chain(counted).collect();
        s.confirming.observe(&counts, Instant::now());
        let servers: HashMap<String, u64> = counts.into_iter().collect();
        let mut published: Vec<Published> = Vec::new();
        let mut counted: Vec<(String, String)> = Vec::new();
        let mut nobody_listens = Vec::new();
        let none_waited = self.custody.awaiting.is_empty();
        for (plan, outcome) in plans.iter().zip(outcomes) {
            let claim = plan.claim();
            if !claim.redelivery {
                // Handed over: a group created again after this point need not read it again.
                self.standing.last_read = self.standing.last_read.max(Some(claim.id));
            }
            match Effect::of(plan, outcome) {
                Effect::AwaitConfirmation { entry, receivers } => {
                    self.custody.release(claim.id);
                    self.spans.published(claim.id, receivers);
                    self.metrics.publish_receivers.observe(receivers as f64);
                    self.metrics.published.inc();
                    let servers = servers.get(&entry.nsp).copied().unwrap_or(receivers);
                    match published.iter_mut().find(|p| p.nsp == entry.nsp) {
                        Some(batch) => batch.claims.push(claim),
                        None => published.push(Published {
                            nsp: entry.nsp.clone(),
                            servers,
                            claims: vec![claim],
                        }),
                    }
                    if let Some(request_id) = &entry.counted {
                        counted.push((entry.nsp.clone(), request_id.clone()));
                    }
                }
                Effect::Appended { servers } => {
                    self.spans.published(claim.id, servers);
                    self.metrics.publish_receivers.observe(servers as f64);
                    self.metrics.published.inc();
                    self.departed(claim.id, Departure::Delivered);
                }
                Effect::Hold { entry, why } => {
                    self.custody.awaiting.remove(&[claim.id]);
                    if self.hold(entry, &why) && why == (Outcome::TooFewServers { servers: 0 }) {
                        nobody_listens.push(entry.nsp.clone());
                    }
                    self.expire_by(claim);
                }
                Effect::AwaitAnswers {
                    request,
                    wait,
                    servers,
                } => {
                    self.custody.held.remove(&[claim.id]);
                    self.spans.published(claim.id, servers);
                    self.custody.awaiting.attempt(
                        claim,
                        &request.nsp,
                        wait,
                        servers,
                        Instant::now(),
                    );
                    self.expire_by(claim);
                    self.metrics.ack_requests.inc();
                }
                Effect::RestAttempt { request, error } => {
                    // Sent to nobody: the attempt ends at once and the entry rests.
                    self.custody.held.remove(&[claim.id]);
                    self.custody.awaiting.attempt(
                        claim,
                        &request.nsp,
                        Duration::ZERO,
                        0,
                        Instant::now(),
                    );
                    self.expire_by(claim);
                    error!(nsp = ?request.nsp, channel = ?request.packet.channel, %error, "Redis refused to PUBLISH a broadcast with acknowledgements (is the channel allowed to the relay's ACL user?); the entry is tried again");
                }
                Effect::DeadLettered(reason) => {
                    self.departed(claim.id, Departure::DeadLettered(reason.code()));
                    warn!(
                        id = %claim.id,
                        reason = reason.code().wire(),
                        error = ?reason.detail(),
                        dead_letter_stream = %self.cfg.dead_letter.stream,
                        "dead-lettered an entry"
                    )
                }
                Effect::Departed(how) => {
                    self.departed(claim.id, how);
                    if let Departure::Deleted { .. } = how {
                        warn!(id = %claim.id, "a held entry was deleted from the stream (trimmed or XDEL) before delivery; nothing left to deliver");
                    }
                }
                Effect::NotOwned => {
                    self.custody.release(claim.id);
                    self.spans.ended(claim.id, Ending::NotOwned);
                    debug!(
                        id = %claim.id,
                        "entry is no longer pending for this consumer (reclaimed by another relay); skipped"
                    )
                }
                Effect::Unexpected(outcome) => {
                    self.custody.release(claim.id);
                    self.spans.ended(claim.id, Ending::Unexpected);
                    warn!(id = %claim.id, ?outcome, "unexpected delivery outcome")
                }
            }
        }
        debug!(entries = plans.len(), "batch done");
        if none_waited && !self.custody.awaiting.is_empty() {
            info!(
                entries = self.custody.awaiting.len(),
                retry_interval = %humantime::format_duration(self.cfg.acks.retry_interval),
                max_age = %humantime::format_duration(self.cfg.acks.max_age),
                "entries wait for their clients' acknowledgements (ack); each is sent again about every acks.retry_interval until a client acknowledges it or it is older than acks.max_age"
            );
        }
        self.metrics
            .acks_waiting
            .set(self.custody.awaiting.len() as i64);
        let now = Instant::now();
        for batch in published {
            // The request ID of the namespace's confirmation, if it went out after its entries.
            let request = confirms
                .iter()
                .find(|c| c.nsp == batch.nsp && confirming.contains(&c.nsp))
                .map(|c| c.request_id.clone());
            let counts = counted
                .iter()
                .filter(|(nsp, _)| *nsp == batch.nsp)
                .map(|(_, request_id)| request_id.clone())
                .collect();
            s.confirming.add(batch, &journal, request, counts, now);
        }
        for nsp in nobody_listens {
            // Servers of the other adapter are a configuration mistake, not an outage: say so.
            if let Some(hint) = servers::other_adapter(&mut s.all_nodes, &self.target, &nsp).await?
            {
                error!(?nsp, "{hint}");
            }
        }
        Ok(())
    }

    /// Publishes the entries and attempts the script cleared for the relay to publish
    /// ([`Outcome::ToPublish`]: their channel is on another shard), in stream order, in one
    /// pipeline, then the confirmation request of each namespace published to on the same node,
    /// and records them as published (or sent). They are not journaled: if the relay dies before
    /// the confirmation, they are published again (at least once). Returns the namespaces whose
    /// confirmation request went out.
    async fn publish_external(
        &mut self,
        s: &mut Session,
        plans: &[Plan],
        outcomes: &mut [Outcome],
        confirms: &[ConfirmRequest],
    ) -> Result<Vec<String>, Fault> {
        let mut pipe = redis::pipe();
        let mut which = Vec::new();
        let mut published_to: Vec<&str> = Vec::new();
        for (k, (plan, outcome)) in plans.iter().zip(outcomes.iter()).enumerate() {
            if let (Some(entry), Outcome::ToPublish { .. }) = (plan.publishes(), outcome) {
                pipe.add_command(self.target.send(&entry.packet));
                which.push(k);
                if let Plan::Publish(_) = plan {
                    published_to.push(&entry.nsp);
                }
            }
        }
        if which.is_empty() {
            return Ok(Vec::new());
        }
        let mut confirmed = Vec::new();
        for request in confirms {
            if published_to.contains(&request.nsp.as_str()) {
                pipe.add_command(self.target.send(&request.packet)).ignore();
                confirmed.push(request.nsp.clone());
            }
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut s.all_nodes).await?;
        for (k, reply) in which.into_iter().zip(replies) {
            let Outcome::ToPublish { servers } = outcomes[k] else {
                continue;
            };
            outcomes[k] = match (&plans[k], reply) {
                (Plan::AwaitAcks { .. }, _) => Outcome::AttemptSent { servers },
                (_, redis::Value::Int(receivers)) => Outcome::Published {
                    receivers: receivers.max(0) as u64,
                },
                // An XADD's entry ID: appended, read by the servers counted. Confirmed (and
                // acknowledged) like a publish: not in the script, so at least once.
                _ => Outcome::Published { receivers: servers },
            };
        }
        Ok(confirmed)
    }

    /// Holds `entry`, recorded as held by the script, and says why once per namespace; true when
    /// its namespace was not held before.
    fn hold(&mut self, entry: &Deliverable, outcome: &Outcome) -> bool {
        let started_holding = !self.custody.held.is_holding(&entry.nsp);
        let claim = Claim {
            recorded: true,
            released: false,
            ..entry.claim
        };
        if !self.custody.held.contains(claim.id) {
            self.metrics.held.inc();
        }
        self.custody.held.insert(&entry.nsp, claim);
        self.spans
            .ended(claim.id, Ending::Held(spans::hold_reason(outcome)));
        if !started_holding {
            return false;
        }
        let min_receivers = self.cfg.delivery.min_receivers;
        match outcome {
            Outcome::TooFewServers { servers } => warn!(
                nsp = ?entry.nsp,
                servers,
                min_receivers,
                "too few Socket.IO servers listen on this namespace; holding its entries until enough do"
            ),
            Outcome::PublishRefused { error } => error!(
                nsp = ?entry.nsp,
                channel = ?entry.packet.channel,
                %error,
                "Redis refused to PUBLISH (is the channel allowed to the relay's ACL user?); holding this namespace's entries"
            ),
            Outcome::TooFewReceivers { receivers } => warn!(
                nsp = ?entry.nsp,
                receivers,
                min_receivers,
                "PUBLISH reached fewer subscribers than there are Socket.IO servers (servers subscribed to requests but not to broadcasts?); holding this namespace's entries"
            ),
            _ => {}
        }
        true
    }
}
