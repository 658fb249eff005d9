//! Entries in hand whose lifetime ended: held ones (waiting for servers) and those waiting for
//! their clients' acknowledgements are dead-lettered as `expired` when their `ttl` or
//! `delivery.max_age` ends (see [`super::plan::Planner::expiry`]), not at their next attempt. An
//! entry read, reclaimed or taken back after a restart is planned first, which expires it then.

use std::time::Duration;

use tokio::time::Instant;

use super::duties::Duty;
use super::plan::Plan;
use super::session::Session;
use super::Relay;
use crate::delivery::Claim;
use crate::entry::EntryId;
use crate::fault::Fault;

/// The least time between two looks at the entries in hand: each look walks them all (up to
/// `delivery.max_held` + `acks.max_waiting`), so lifetimes that end close together are expired
/// together, up to this late.
pub(super) const EXPIRE_LOOK: Duration = Duration::from_millis(100);

/// When the next look is due while no entry in hand has a lifetime: a bound, not a schedule, since
/// an entry with one makes the look due when it comes in hand ([`Relay::expire_by`]).
const NOTHING_ENDS: Duration = Duration::from_secs(3600);

impl Relay {
    /// Dead-letters the entries in hand whose lifetime ended, and makes the next look due when the
    /// first of the others ends.
    pub(super) async fn expire(&mut self, s: &mut Session) -> Result<(), Fault> {
        let planner = self.planner();
        let mut expired = Vec::new();
        let mut next = NOTHING_ENDS;
        for claim in self.custody.claims() {
            match planner.expiry(claim) {
                Some(reason) => expired.push(Plan::DeadLetter { claim, reason }),
                None => next = next.min(planner.expires_in(claim).unwrap_or(NOTHING_ENDS)),
            }
        }
        self.duties
            .done(Duty::Expire, Instant::now(), next.max(EXPIRE_LOOK));
        if expired.is_empty() {
            return Ok(());
        }
        // Out of the held index first, so that nothing is released or queued behind them while
        // the batch runs; the delivery script takes them out of the held hash.
        let ids: Vec<EntryId> = expired.iter().map(|p| p.claim().id).collect();
        self.custody.held.remove(&ids);
        expired.sort_by_key(|p| p.claim().id);
        self.run_plans(s, expired).await
    }

    /// `claim` came in hand (held, parked, held again unconfirmed, or sent to wait for
    /// acknowledgements): the next look is due when its lifetime ends, if that is sooner.
    pub(super) fn expire_by(&mut self, claim: Claim) {
        if let Some(left) = self.planner().expires_in(claim) {
            self.duties.due_within(Duty::Expire, left);
        }
    }
}
