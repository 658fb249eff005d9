//! Held entries released to their clients, not just to their servers: once a namespace has servers
//! again, what it held waits `delivery.release_wait` for its clients to reconnect, while what comes
//! since goes at once unless it shares a room with what waits (the policy: [`held::releasable`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::info;

use super::session::Session;
use super::Relay;
use crate::delivery::Claim;
use crate::entry::{Entry, EntryId};
use crate::fault::Fault;
use crate::held::{self, Audience};
use crate::reader::Fetched;

/// How often a namespace whose held entries wait for their clients lets out what came since.
pub(super) const RELEASE_LOOK: Duration = Duration::from_millis(100);

impl Relay {
    /// Lets out what it can of `nsp`'s held entries, now that enough servers listen on it: the
    /// oldest once `release_wait` is over (or zero), else those that need not wait. True while
    /// entries wait for their clients.
    pub(super) async fn release(&mut self, s: &mut Session, nsp: &str) -> Result<bool, Fault> {
        let now = Instant::now();
        let wait = self.cfg.delivery.release_wait;
        let batch = self.cfg.source.batch_size;
        let now_ms = self.redis_now_ms();
        let back = self.custody.held.back(nsp, now, now_ms, wait);
        if wait.is_zero() || now >= back.release_at {
            let claims = self.custody.held.take_front(nsp, batch);
            self.redeliver(s, claims).await?;
            return Ok(false);
        }
        if back.release_at == now + wait {
            info!(?nsp, release_wait = %humantime::format_duration(wait), "Socket.IO servers listen on this namespace again; its held entries wait delivery.release_wait for their clients to reconnect, and what comes meanwhile goes at once unless it shares a room with them");
        }
        let front: HashMap<EntryId, Claim> = self
            .custody
            .held
            .front(nsp, batch)
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        let fetched = self.fetch(s, front.keys().copied()).await?;
        let mut audiences = Vec::with_capacity(fetched.len());
        for item in &fetched {
            let audience = match item {
                Fetched::Entry(raw) => match Entry::parse_within(&raw.fields, &self.cfg.limits) {
                    Ok(entry) => Audience::of(&entry),
                    Err(_) => Audience::NoClient,
                },
                Fetched::TooBig { .. } | Fetched::Deleted(_) => Audience::NoClient,
                // Not read this time: what it targets is unknown, so it and what follows wait.
                Fetched::Deferred { .. } => break,
            };
            audiences.push((fetched_id(item), audience));
        }
        let release = held::releasable(&audiences, back.since_ms);
        if !release.is_empty() {
            let released: HashMap<EntryId, Claim> = self
                .custody
                .held
                .release(nsp, &release)
                .into_iter()
                .map(|c| (c.id, c))
                .collect();
            let fetched = fetched
                .into_iter()
                .filter(|item| released.contains_key(&fetched_id(item)))
                .collect();
            self.deliver_fetched(s, fetched, &|id| released[&id])
                .await?;
        }
        Ok(self.custody.held.is_holding(nsp))
    }
}

fn fetched_id(item: &Fetched) -> EntryId {
    match item {
        Fetched::Entry(raw) => raw.id,
        Fetched::TooBig { id, .. } | Fetched::Deferred { id, .. } | Fetched::Deleted(id) => *id,
    }
}
