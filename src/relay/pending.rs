//! Entries pending in the group that the relay did not just read: its own after a (re)connection,
//! other consumers' idle ones, and the ones it holds while no Socket.IO server listens.
//!
//! Delivery counts follow one rule: only a real attempt counts. An entry recorded in the held hash
//! keeps its recorded count wherever it goes (waiting is not an attempt); this consumer's own
//! entries count one more when a new process takes them over (the last one may have died on them),
//! and none more when the same process takes them back after a lost link.

use std::collections::{HashMap, HashSet};

use redis::streams::StreamPendingCountReply;
use redis::AsyncCommands;
use tracing::info;

use super::depart::Departure;
use super::duties::Duty;
use super::release::RELEASE_LOOK;
use super::session::Session;
use super::{parse_error, Relay, CLAIM_PAGES_PER_ROUND};
use crate::delivery::Claim;
use crate::entry::EntryId;
use crate::fault::Fault;
use crate::metrics::Source;
use crate::servers;

/// What the pending stage keeps from one step to the next.
pub(super) struct PendingState {
    takeover: Takeover,
    /// Where the next XAUTOCLAIM round goes on from.
    claim_cursor: String,
}

/// This process's first recovery of its consumer's pending entries, after which a recovery (a lost
/// link) is the same process taking its entries back, not a new delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takeover {
    Pending,
    Done,
}

impl PendingState {
    pub fn new() -> PendingState {
        PendingState {
            takeover: Takeover::Pending,
            claim_cursor: "0-0".into(),
        }
    }

    /// This process recovered its consumer's pending entries once already.
    pub fn taken_over(&self) -> bool {
        self.takeover == Takeover::Done
    }
}

/// IDs per keep-alive script call, within Lua's limits.
const KEEP_CHUNK: usize = 1000;

impl Relay {
    /// Delivers the entries this consumer read earlier but never acknowledged (a crash, a lost
    /// reply, a restart), before anything new, in stream order. Entries it holds or published
    /// itself in this session are left alone.
    pub(super) async fn recover_own_pending(&mut self, s: &mut Session) -> Result<(), Fault> {
        // A read in flight delivers its entries to this consumer's pending list, where this scan
        // finds them: wait for it rather than race it.
        // What it read is found by the scan; a bug in it is not.
        if let Some(Err(bug @ Fault::Fatal { .. })) = s.finish_read().await {
            return Err(bug);
        }
        let counting = self.pending.takeover == Takeover::Pending;
        let page = self.cfg.source.batch_size;
        let mut start = "-".to_owned();
        let mut recovered = 0usize;
        let in_hand: HashSet<EntryId> = s.confirming.ids().collect();
        loop {
            let src = &self.cfg.source;
            let pending: StreamPendingCountReply = s
                .writer
                .xpending_consumer_count(&src.stream, &src.group, &start, "+", page, &src.consumer)
                .await?;
            let Some(last) = pending.ids.last() else {
                break;
            };
            start = format!("({}", last.id);
            let mut counts = Vec::new();
            for p in &pending.ids {
                let id: EntryId = p.id.parse().map_err(parse_error)?;
                if !self.custody.contains(id) && !in_hand.contains(&id) {
                    counts.push((id, p.times_delivered as u64));
                }
            }
            if !counts.is_empty() {
                let recorded = self.recorded(s, counts.iter().map(|(id, _)| *id)).await?;
                let mut claims = HashMap::new();
                for (id, times) in counts {
                    let (deliveries, was_recorded) = match recorded.get(&id) {
                        Some(count) => (*count, true),
                        None if counting => (times + 1, false),
                        None => (times, false),
                    };
                    claims.insert(
                        id,
                        Claim {
                            id,
                            deliveries,
                            redelivery: true,
                            recorded: was_recorded,
                            released: false,
                            // Its fields, read next, say: planning learns it.
                            ttl: None,
                        },
                    );
                }
                self.set_counts(s, claims.values()).await?;
                let fetched = self.fetch(s, claims.keys().copied()).await?;
                recovered += fetched.len();
                self.metrics.read(Source::own_pending, fetched.len());
                self.deliver_fetched(s, fetched, &|id| claims[&id]).await?;
            }
            if pending.ids.len() < page {
                break;
            }
        }
        self.pending.takeover = Takeover::Done;
        if recovered > 0 {
            info!(
                entries = recovered,
                "recovered this consumer's pending entries"
            );
        }
        Ok(())
    }

    /// Claims `claims` for this consumer with their delivery counts (XCLAIM JUSTID RETRYCOUNT, one
    /// call per count), so that the count survives this relay: what the next one, or a reclaim,
    /// finds in the pending list is what this one decided.
    async fn set_counts<'c>(
        &self,
        s: &mut Session,
        claims: impl Iterator<Item = &'c Claim>,
    ) -> Result<(), Fault> {
        let mut by_count: HashMap<u64, Vec<String>> = HashMap::new();
        for claim in claims {
            by_count
                .entry(claim.deliveries)
                .or_default()
                .push(claim.id.to_string());
        }
        for (count, ids) in by_count {
            let count = count.to_string();
            self.claim_ids(s, &ids, &["RETRYCOUNT", &count]).await?;
        }
        Ok(())
    }

    /// `XCLAIM <ids> <options> JUSTID` for this consumer, a thousand IDs at a time: takes entries
    /// without reading them (and without counting a delivery unless `options` say otherwise).
    pub(super) async fn claim_ids(
        &self,
        s: &mut Session,
        ids: &[String],
        options: &[&str],
    ) -> Result<(), Fault> {
        let src = &self.cfg.source;
        for chunk in ids.chunks(KEEP_CHUNK) {
            let _: redis::Value = redis::cmd("XCLAIM")
                .arg(&src.stream)
                .arg(&src.group)
                .arg(&src.consumer)
                .arg(0)
                .arg(chunk)
                .arg(options)
                .arg("JUSTID")
                .query_async(&mut s.writer)
                .await?;
        }
        Ok(())
    }

    /// The entries with these IDs, in ID order, read within the limits (see [`crate::reader`]).
    pub(super) async fn fetch(
        &self,
        s: &mut Session,
        ids: impl Iterator<Item = EntryId>,
    ) -> Result<Vec<crate::reader::Fetched>, Fault> {
        let mut ids: Vec<EntryId> = ids.collect();
        ids.sort_unstable();
        Ok(s.fetcher.by_id(&self.cfg.source.stream, &ids).await?)
    }

    /// Delivers `claims` (held or parked entries), reading their fields again.
    pub(super) async fn redeliver(
        &mut self,
        s: &mut Session,
        claims: Vec<Claim>,
    ) -> Result<(), Fault> {
        let claims: HashMap<EntryId, Claim> = claims.into_iter().map(|c| (c.id, c)).collect();
        let fetched = self.fetch(s, claims.keys().copied()).await?;
        self.deliver_fetched(s, fetched, &|id| claims[&id]).await
    }

    /// The counts recorded in the held hash for those of `ids` that wait for servers.
    async fn recorded(
        &self,
        s: &mut Session,
        ids: impl Iterator<Item = EntryId>,
    ) -> Result<HashMap<EntryId, u64>, Fault> {
        let ids: Vec<EntryId> = ids.collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let names: Vec<String> = ids.iter().map(EntryId::to_string).collect();
        let counts: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(&self.scripts.keys().held)
            .arg(&names)
            .query_async(&mut s.writer)
            .await?;
        Ok(ids
            .into_iter()
            .zip(counts)
            .filter_map(|(id, count)| count.map(|c| (id, c)))
            .collect())
    }

    /// Reclaims entries that other consumers left pending for longer than `delivery.claim_idle`
    /// (relays that crashed or were scaled away), following the XAUTOCLAIM cursor. A reclaim is
    /// a delivery attempt (the last holder may have died on the entry), except for entries that
    /// were only waiting for servers: they keep their recorded count.
    pub(super) async fn reclaim(&mut self, s: &mut Session) -> Result<(), Fault> {
        let min_idle = self.cfg.delivery.claim_idle.as_millis() as u64;
        for _ in 0..CLAIM_PAGES_PER_ROUND {
            let src = &self.cfg.source;
            let (cursor, claimed, deleted): (String, Vec<String>, Vec<String>) =
                redis::cmd("XAUTOCLAIM")
                    .arg(&src.stream)
                    .arg(&src.group)
                    .arg(&src.consumer)
                    .arg(min_idle)
                    .arg(&self.pending.claim_cursor)
                    .arg("COUNT")
                    .arg(src.batch_size)
                    .arg("JUSTID")
                    .query_async(&mut s.writer)
                    .await?;
            self.pending.claim_cursor = cursor;
            if !deleted.is_empty() {
                self.metrics.deleted_pending.inc_by(deleted.len() as u64);
                tracing::warn!(
                    count = deleted.len(),
                    first = %deleted[0],
                    "pending entries were deleted from the stream (trimmed or XDEL) before delivery; nothing left to deliver"
                );
            }
            let ids: Vec<EntryId> = claimed
                .iter()
                .map(|id| id.parse().map_err(parse_error))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|id| !self.custody.contains(*id))
                .collect();
            if !ids.is_empty() {
                let counts = self.delivery_counts(s, &ids).await?;
                let recorded = self.recorded(s, ids.iter().copied()).await?;
                info!(
                    entries = ids.len(),
                    "reclaimed idle entries of other consumers"
                );
                self.metrics.read(Source::reclaimed, ids.len());
                self.metrics.redelivered.inc_by(ids.len() as u64);
                let claims: HashMap<EntryId, Claim> = ids
                    .iter()
                    .zip(counts)
                    .filter_map(|(id, count)| {
                        let recorded_count = recorded.get(id).copied();
                        Some((
                            *id,
                            Claim {
                                id: *id,
                                deliveries: recorded_count.unwrap_or(count? + 1),
                                redelivery: true,
                                recorded: recorded_count.is_some(),
                                released: false,
                                // Its fields, read next, say: planning learns it.
                                ttl: None,
                            },
                        ))
                    })
                    .collect();
                self.set_counts(s, claims.values()).await?;
                let fetched = self.fetch(s, claims.keys().copied()).await?;
                self.deliver_fetched(s, fetched, &|id| claims[&id]).await?;
            }
            if self.pending.claim_cursor == "0-0" || self.custody.is_full() {
                break;
            }
        }
        Ok(())
    }

    /// The delivery counter of each entry, `None` if it is no longer pending for this consumer.
    async fn delivery_counts(
        &self,
        s: &mut Session,
        ids: &[EntryId],
    ) -> Result<Vec<Option<u64>>, Fault> {
        let src = &self.cfg.source;
        let mut pipe = redis::pipe();
        for id in ids {
            let id = id.to_string();
            pipe.xpending_count(&src.stream, &src.group, &id, &id, 1);
        }
        let replies: Vec<StreamPendingCountReply> = pipe.query_async(&mut s.writer).await?;
        Ok(replies
            .into_iter()
            .map(|reply| {
                reply
                    .ids
                    .first()
                    .filter(|p| p.consumer == src.consumer)
                    .map(|p| p.times_delivered as u64)
            })
            .collect())
    }

    /// Tries parked entries again, then delivers, at full speed, the held entries of every namespace that has enough servers again. Servers are counted
    /// for all held namespaces in one command, so namespaces without listeners cost next to nothing
    /// however many there are.
    pub(super) async fn retry_held(&mut self, s: &mut Session) -> Result<(), Fault> {
        let every = self.cfg.delivery.retry_interval;
        self.duties
            .done(Duty::Retry, tokio::time::Instant::now(), every);
        let parked = self.custody.held.take_parked();
        if !parked.is_empty() {
            self.redeliver(s, parked).await?;
            self.metrics.parked.set(self.custody.held.parked() as i64);
        }
        let min = u64::from(self.cfg.delivery.min_receivers);
        let namespaces = self.custody.held.namespaces();
        let counts = servers::count(&mut s.all_nodes, &self.target, &namespaces).await?;
        let mut ready = Vec::new();
        for (nsp, servers) in namespaces.into_iter().zip(counts) {
            if servers >= min {
                ready.push(nsp);
            } else {
                // Gone (again): its wait for clients starts afresh when servers are back.
                self.custody.held.unready(&nsp);
            }
        }
        let before = self.custody.held.len();
        let mut waiting = false;
        for nsp in ready {
            waiting |= self.release(s, &nsp).await?;
            if !self.custody.held.is_holding(&nsp) {
                info!(?nsp, "Socket.IO servers listen on this namespace again; its held entries are delivered");
            }
        }
        if waiting {
            // What comes meanwhile is let out this often; what waits, at its release_wait.
            self.duties.due_within(Duty::Retry, RELEASE_LOOK);
        } else if self.custody.held.len() < before {
            // Progress: the rest follows at once, not a retry interval later.
            self.duties.due_now(Duty::Retry);
        }
        Ok(())
    }

    /// Keeps held entries, and those waiting for acknowledgements, from looking abandoned to other
    /// relays, and forgets those already taken.
    pub(super) async fn keep_held(&mut self, s: &mut Session) -> Result<(), Fault> {
        let mut ids = self.custody.ids();
        ids.sort_unstable();
        let (mut lost, mut deleted) = (Vec::new(), Vec::new());
        for chunk in ids.chunks(KEEP_CHUNK) {
            let (chunk_lost, chunk_deleted) = self.scripts.keep(&mut s.writer, chunk).await?;
            lost.extend(chunk_lost);
            deleted.extend(chunk_deleted);
        }
        if !deleted.is_empty() {
            tracing::warn!(
                count = deleted.len(),
                first = %deleted[0],
                "held entries were deleted from the stream (trimmed or XDEL) before delivery; nothing left to deliver"
            );
            for id in deleted {
                self.departed(
                    id,
                    Departure::Deleted {
                        acknowledged: false,
                    },
                );
            }
        }
        if !lost.is_empty() {
            info!(
                count = lost.len(),
                "held entries are no longer pending for this consumer (reclaimed or acknowledged elsewhere); forgetting them"
            );
            for id in lost {
                self.custody.release(id);
            }
        }
        Ok(())
    }
}
