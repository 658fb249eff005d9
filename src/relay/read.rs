//! The read stage: new entries (XREADGROUP `>`), with the confirmation of what was published
//! travelling beside the read (see [`super::confirm`]) so that neither waits for the other.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::confirm::{send_confirmation, Links};
use super::session::{ReadTask, Session};
use super::Relay;
use crate::delivery::Claim;
use crate::fault::Fault;
use crate::metrics::Source;
use crate::reader::Fetched;

/// What the read stage keeps from one step to the next.
pub(super) struct ReadState {
    /// Entries asked for per read, adapted to their size so that a read stays near
    /// `delivery.max_batch_bytes`.
    count: usize,
    reading: Reading,
}

/// Whether new entries are read: not while as many entries wait, for servers or for clients'
/// acknowledgements, as their limit allows (said once when it pauses, once when it resumes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    Open,
    Paused,
}

impl ReadState {
    pub fn new(batch_size: usize) -> ReadState {
        ReadState {
            count: batch_size,
            reading: Reading::Open,
        }
    }
}

impl Relay {
    /// Stops reading while entries wait up to their limit (`delivery.max_held`,
    /// `acks.max_waiting`); said once.
    pub(super) fn pause_reading(&mut self) {
        if self.read.reading == Reading::Paused {
            return;
        }
        if self.custody.held.is_full() {
            warn!(
                held = self.custody.held.len(),
                "delivery.max_held entries are waiting for Socket.IO servers; reading paused until they drain"
            );
        } else {
            warn!(
                waiting = self.custody.awaiting.len(),
                "acks.max_waiting entries are waiting for their clients' acknowledgements; reading paused until they drain"
            );
        }
        self.read.reading = Reading::Paused;
    }

    /// Reads again, if it was paused; said once.
    pub(super) fn resume_reading(&mut self) {
        if self.read.reading == Reading::Paused {
            info!(held = self.custody.held.len(), "reading resumed");
            self.read.reading = Reading::Open;
        }
    }

    /// Reads and delivers one batch of new entries, waiting up to `source.block` for them. What can
    /// be confirmed of earlier batches travels on the writer while the read waits on the reader,
    /// and is recorded as soon as it is done; and while entries keep coming, the next read is sent
    /// before this batch is delivered, so Redis always has work queued instead of waiting for the
    /// relay. Answers from the servers, and attempts or confirmations falling due, end the wait
    /// early (the read stays in flight for the next step).
    pub(super) async fn read_new(&mut self, s: &mut Session) -> Result<(), Fault> {
        let mut read = match s.read.take() {
            Some(read) => read,
            None => self.start_read(s)?,
        };
        // Decided on the counts taken so far; the counts still needed are taken beside the read,
        // with the confirmation, for the next step: nothing here waits on a round trip.
        let decided = self.decide_counted(s);
        let to_count = s.confirming.counts_due(Instant::now());
        let wake = self.wake(s);
        let (confirm_failed, read_done) = {
            let heard = s.listener.heard();
            let until_read_or_wake = async {
                tokio::select! {
                    done = &mut read => Some(done),
                    _ = sleep_for(wake) => None,
                    // A busy relay's read returns within that; an idle one's blocks: only then do
                    // answers end the wait (each would otherwise cost a step of its own).
                    _ = async { tokio::time::sleep(SETTLE).await; heard.await } => None,
                }
            };
            let mut until_read_or_wake = std::pin::pin!(until_read_or_wake);
            let (confirmed, read_done) = {
                let confirm = send_confirmation(
                    &self.scripts,
                    &self.target,
                    Links {
                        writer: &mut s.writer,
                        all_nodes: &mut s.all_nodes,
                    },
                    &decided,
                    &to_count,
                );
                let mut confirm = std::pin::pin!(confirm);
                tokio::select! {
                    confirmed = &mut confirm => (confirmed, None),
                    read_done = &mut until_read_or_wake => (confirm.await, Some(read_done)),
                }
            };
            // What was confirmed is recorded now, not when a read that may block for
            // `source.block` returns: the metrics (acknowledged, end-to-end latency) and the
            // entries to publish again are those of the moment of the XACK.
            let mut counted = false;
            let failed = match confirmed {
                Ok(counts) => {
                    self.confirmed(decided);
                    counted = !counts.is_empty();
                    s.confirming.observe(&counts, Instant::now());
                    None
                }
                Err(e) => Some(e),
            };
            let read_done = match read_done {
                Some(read_done) => read_done,
                // New counts decide something: the next step looks, unless the read returns first
                // (a busy relay's does), or the read stays in flight.
                None if counted => tokio::select! {
                    done = &mut until_read_or_wake => done,
                    _ = tokio::time::sleep(SETTLE) => None,
                },
                None => until_read_or_wake.await,
            };
            (failed, read_done)
        };
        let Some(read_done) = read_done else {
            s.read = Some(read);
            return confirm_failed.map_or(Ok(()), |e| Err(e.into()));
        };
        let (reader, fetched) =
            read_done.map_err(|e| Fault::bug(format!("the read task failed: {e}")))?;
        s.reader = Some(reader);
        if let Some(e) = confirm_failed {
            return Err(e.into());
        }
        let fetched = fetched?;
        let complete = !fetched
            .iter()
            .any(|f| matches!(f, Fetched::Deferred { .. }));
        if !fetched.is_empty()
            && complete
            && self.custody.held.is_empty()
            && !self.shutdown.is_cancelled()
        {
            s.read = Some(self.start_read(s)?);
        }
        self.deliver_read(s, fetched).await
    }

    /// How long the loop may wait before attempts or confirmations need a look.
    pub(super) fn wake(&self, s: &Session) -> Option<Duration> {
        match (self.acks_wake(), self.confirm_wake(s)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Delivers what a read of new entries returned.
    pub(super) async fn deliver_read(
        &mut self,
        s: &mut Session,
        fetched: Vec<Fetched>,
    ) -> Result<(), Fault> {
        if fetched.is_empty() {
            return Ok(());
        }
        // Entries asked for per read follow their size, so that a read stays near its budget.
        let bytes: u64 = fetched.iter().map(Fetched::bytes).sum();
        let average = (bytes / fetched.len() as u64).max(1) as usize;
        self.read.count =
            (self.cfg.delivery.max_batch_bytes / average).clamp(1, self.cfg.source.batch_size);
        self.metrics.read(Source::new, fetched.len());
        self.deliver_fetched(s, fetched, &Claim::first_read).await
    }

    /// Sends XREADGROUP `>` on the reader, as a task of its own so that it goes out at once.
    fn start_read(&self, s: &mut Session) -> Result<ReadTask, Fault> {
        let mut reader = s
            .reader
            .take()
            .ok_or_else(|| Fault::bug("a read was started while another was in flight"))?;
        let block = self.rest(s).max(Duration::from_millis(1));
        let src = self.cfg.source.clone();
        let count = self.read.count;
        Ok(tokio::spawn(async move {
            let fetched = reader
                .read_group(&src.stream, &src.group, &src.consumer, count, block)
                .await;
            (reader, fetched)
        }))
    }
}

/// How long a read may keep answers and counts waiting for a look: a busy relay's read returns
/// sooner, and the look is made with the next batch instead of in a step of its own.
const SETTLE: Duration = Duration::from_millis(2);

/// Sleeps for `wake`, or forever without one.
async fn sleep_for(wake: Option<Duration>) {
    match wake {
        Some(wake) => tokio::time::sleep(wake).await,
        None => std::future::pending().await,
    }
}
