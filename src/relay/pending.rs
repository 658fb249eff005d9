//! Entries pending in the group that the relay did not just read: its own after a (re)connection,
//! other consumers' idle ones, and the ones it holds while no Socket.IO server listens.

use std::collections::HashMap;

use redis::streams::StreamPendingCountReply;
use redis::{AsyncCommands, RedisResult};
use tracing::{info, warn};

use super::{parse_error, Plan, Relay, CLAIM_PAGES_PER_ROUND};
use crate::delivery::Outcome;
use crate::entry::{EntryId, RawEntry};
use crate::metrics::Source;
use crate::reply::{AutoClaimed, Claimed, Delivered};

impl Relay {
    /// Delivers the entries this consumer read earlier but never acknowledged (a crash, a lost
    /// reply, a restart), before anything new. Entries it still holds in memory are left alone so
    /// waiting does not count as another delivery.
    pub(super) async fn recover_own_pending(&mut self) -> RedisResult<()> {
        let page = self.cfg.source.batch_size;
        let mut start = "-".to_owned();
        let mut recovered = 0usize;
        loop {
            let (src, writer) = self.writer();
            let pending: StreamPendingCountReply = writer
                .xpending_consumer_count(&src.stream, &src.group, &start, "+", page, &src.consumer)
                .await?;
            let Some(last) = pending.ids.last() else {
                break;
            };
            start = format!("({}", last.id);
            let mut counts = HashMap::new();
            for p in &pending.ids {
                let id: EntryId = p.id.parse().map_err(parse_error)?;
                if !self.held.contains(id) {
                    counts.insert(id, p.times_delivered as u64);
                }
            }
            if !counts.is_empty() {
                let ids: Vec<String> = counts.keys().map(EntryId::to_string).collect();
                // Claiming them again counts one more delivery, as a re-read would.
                let (src, writer) = self.writer();
                let Claimed(entries) = writer
                    .xclaim(&src.stream, &src.group, &src.consumer, 0, &ids)
                    .await?;
                let mut batch = Vec::with_capacity(entries.len());
                for delivered in entries {
                    if let Delivered::Present(raw) = delivered {
                        let before = counts.get(&raw.id).copied().unwrap_or(0);
                        batch.push((raw, before + 1));
                    }
                }
                // XCLAIM answers in the order of the IDs asked for; deliver in stream order.
                batch.sort_by_key(|(raw, _)| raw.id);
                recovered += batch.len();
                self.metrics.read(Source::own_pending, batch.len());
                self.deliver(batch).await?;
            }
            if pending.ids.len() < page {
                break;
            }
        }
        if recovered > 0 {
            info!(
                entries = recovered,
                "recovered this consumer's pending entries"
            );
        }
        Ok(())
    }

    /// Reclaims entries that other consumers left pending for longer than `delivery.claim_idle`
    /// (relays that crashed or were scaled away), following the XAUTOCLAIM cursor.
    pub(super) async fn reclaim(&mut self) -> RedisResult<()> {
        let min_idle = self.cfg.delivery.claim_idle.as_millis() as u64;
        for _ in 0..CLAIM_PAGES_PER_ROUND {
            let cursor = self.claim_cursor.clone();
            let (src, writer) = self.writer();
            let claimed: AutoClaimed = redis::cmd("XAUTOCLAIM")
                .arg(&src.stream)
                .arg(&src.group)
                .arg(&src.consumer)
                .arg(min_idle)
                .arg(cursor)
                .arg("COUNT")
                .arg(src.batch_size)
                .query_async(writer)
                .await?;
            self.claim_cursor = claimed.cursor;
            if !claimed.deleted.is_empty() {
                self.metrics
                    .deleted_pending
                    .inc_by(claimed.deleted.len() as u64);
                warn!(
                    count = claimed.deleted.len(),
                    first = %claimed.deleted[0],
                    "pending entries were deleted from the stream (trimmed or XDEL) before delivery; nothing left to deliver"
                );
            }
            let raws: Vec<RawEntry> = claimed
                .entries
                .into_iter()
                .filter_map(|d| match d {
                    Delivered::Present(raw) if !self.held.contains(raw.id) => Some(raw),
                    _ => None,
                })
                .collect();
            if !raws.is_empty() {
                let counts = self.delivery_counts(&raws).await?;
                info!(
                    entries = raws.len(),
                    "reclaimed idle entries of other consumers"
                );
                let batch = raws
                    .into_iter()
                    .zip(counts)
                    .filter_map(|(raw, count)| count.map(|c| (raw, c)))
                    .collect();
                self.deliver(batch).await?;
            }
            if self.claim_cursor == "0-0" || self.held.is_full() {
                break;
            }
        }
        Ok(())
    }

    /// The delivery counter of each entry, `None` if it is no longer pending for this consumer.
    pub(super) async fn delivery_counts(
        &mut self,
        raws: &[RawEntry],
    ) -> RedisResult<Vec<Option<u64>>> {
        let (src, writer) = self.writer();
        let mut pipe = redis::pipe();
        for raw in raws {
            let id = raw.id.to_string();
            pipe.xpending_count(&src.stream, &src.group, &id, &id, 1);
        }
        let replies: Vec<StreamPendingCountReply> = pipe.query_async(writer).await?;
        let consumer = &src.consumer;
        Ok(replies
            .into_iter()
            .map(|reply| {
                reply
                    .ids
                    .first()
                    .filter(|p| &p.consumer == consumer)
                    .map(|p| p.times_delivered as u64)
            })
            .collect())
    }

    /// Publishes held entries again, oldest first per namespace, dead-lettering those that expired.
    pub(super) async fn retry_held(&mut self) -> RedisResult<()> {
        for nsp in self.held.namespaces() {
            let plans: Vec<Plan> = self
                .held
                .front(&nsp, self.cfg.source.batch_size)
                .map(|entry| match self.expiry(entry.id()) {
                    Some(reason) => Plan::DeadLetter {
                        raw: entry.raw.clone(),
                        deliveries: entry.deliveries,
                        reason,
                    },
                    None => Plan::Publish(entry.clone()),
                })
                .collect();
            let outcomes = self.execute(&plans).await?;
            let resolved = outcomes
                .iter()
                .take_while(|o| !matches!(o, Outcome::TooFewReceivers { .. } | Outcome::HeldBehind))
                .count();
            for _ in 0..resolved {
                self.held.pop_front(&nsp);
            }
            if resolved > 0 && !self.held.is_holding(&nsp) {
                info!(%nsp, "Socket.IO servers listen on this namespace again; its held entries are delivered");
            }
        }
        Ok(())
    }

    /// Keeps held entries from looking abandoned to other relays, and forgets those already taken.
    pub(super) async fn keep_held(&mut self) -> RedisResult<()> {
        let ids = self.held.ids();
        let mut lost = Vec::new();
        for chunk in ids.chunks(self.cfg.source.batch_size) {
            let conns = self.conns.as_mut().expect("steps run only while connected");
            lost.extend(self.scripts.keep(&mut conns.writer, chunk).await?);
        }
        if !lost.is_empty() {
            info!(
                count = lost.len(),
                "held entries are no longer pending for this consumer (reclaimed or acknowledged elsewhere); forgetting them"
            );
            self.held.remove(&lost);
        }
        Ok(())
    }
}
