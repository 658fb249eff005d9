//! Reading new entries (XREADGROUP `>`) and confirming what was published, overlapped.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::warn;

use redis::aio::MultiplexedConnection;
use redis::RedisResult;

use super::session::{ReadTask, Session};
use super::Relay;
use crate::connection::AllNodes;
use crate::delivery::{Claim, Published, Scripts};
use crate::entry::EntryId;
use crate::fault::Fault;
use crate::metrics::Source;
use crate::packet::Target;
use crate::reader::Fetched;
use crate::servers;

impl Relay {
    /// Reads and delivers one batch of new entries, waiting up to `source.block` for them. The
    /// confirmation of the last batch travels on the writer while the read waits on the reader,
    /// and is recorded as soon as it is done;
    /// and while entries keep coming, the next read is sent before this batch is delivered, so
    /// Redis always has work queued instead of waiting for the relay.
    pub(super) async fn read_new(&mut self, s: &mut Session) -> Result<(), Fault> {
        let read = match s.read.take() {
            Some(read) => read,
            None => self.start_read(s)?,
        };
        // Attempts waiting for acknowledgements are looked at while the read waits.
        let mut read = read;
        let wake = self.acks_wake();
        let (confirm_failed, read_done) = {
            let until_read_or_wake = async {
                match wake {
                    None => Some((&mut read).await),
                    Some(wake) => tokio::select! {
                        done = &mut read => Some(done),
                        _ = tokio::time::sleep(wake) => None,
                    },
                }
            };
            let mut until_read_or_wake = std::pin::pin!(until_read_or_wake);
            let (confirmed, read_done) = {
                let confirm = confirm(
                    &self.scripts,
                    &self.target,
                    &mut s.writer,
                    &mut s.all_nodes,
                    &s.unconfirmed,
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
            let failed = match confirmed {
                Ok(unconfirmed) => {
                    self.confirmed(s, unconfirmed);
                    None
                }
                Err(e) => Some(e),
            };
            let read_done = match read_done {
                Some(read_done) => read_done,
                None => until_read_or_wake.await,
            };
            (failed, read_done)
        };
        let Some(read_done) = read_done else {
            s.read = Some(read);
            return confirm_failed.map_or(Ok(()), |e| Err(e.into()));
        };
        let (reader, fetched) = read_done.map_err(|e| {
            Fault::Link(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the read task failed",
                e.to_string(),
            )))
        })?;
        s.reader = Some(reader);
        if let Some(e) = confirm_failed {
            return Err(e.into());
        }
        let fetched = fetched?;
        let complete = !fetched
            .iter()
            .any(|f| matches!(f, Fetched::Deferred { .. }));
        if !fetched.is_empty() && complete && self.held.is_empty() && !self.shutdown.is_cancelled()
        {
            s.read = Some(self.start_read(s)?);
        }
        self.deliver_read(s, fetched).await
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
        self.read_count =
            (self.cfg.delivery.max_batch_bytes / average).clamp(1, self.cfg.source.batch_size);
        self.metrics.read(Source::new, fetched.len());
        let new = |id: EntryId| Claim {
            id,
            deliveries: 1,
            redelivery: false,
            recorded: false,
        };
        self.deliver_fetched(s, fetched, &new).await
    }

    /// Sends XREADGROUP `>` on the reader, as a task of its own so that it goes out at once.
    fn start_read(&self, s: &mut Session) -> Result<ReadTask, Fault> {
        let mut reader = s.reader.take().ok_or_else(|| {
            Fault::Link(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the reader connection is busy",
            )))
        })?;
        let mut block = self.cfg.source.block;
        if !self.held.is_empty() {
            block = block.min(self.timers.retry.saturating_duration_since(Instant::now()));
        }
        if let Some(wake) = self.acks_wake() {
            block = block.min(wake);
        }
        let block = block.max(Duration::from_millis(1));
        let src = self.cfg.source.clone();
        let count = self.read_count;
        Ok(tokio::spawn(async move {
            let fetched = reader
                .read_group(&src.stream, &src.group, &src.consumer, count, block)
                .await;
            (reader, fetched)
        }))
    }

    /// Acknowledges what the delivery scripts published since the last confirmation.
    pub(super) async fn confirm(&mut self, s: &mut Session) -> Result<(), Fault> {
        if s.unconfirmed.is_empty() {
            return Ok(());
        }
        let unconfirmed = confirm(
            &self.scripts,
            &self.target,
            &mut s.writer,
            &mut s.all_nodes,
            &s.unconfirmed,
        )
        .await?;
        self.confirmed(s, unconfirmed);
        Ok(())
    }

    /// Records a confirmation: everything published since the last one is acknowledged, except
    /// `unconfirmed`, whose servers vanished before it; those are held, to be published again.
    fn confirmed(&mut self, s: &mut Session, unconfirmed: Vec<EntryId>) {
        let unconfirmed: HashSet<EntryId> = unconfirmed.into_iter().collect();
        for batch in s.unconfirmed.drain(..) {
            let mut lost = 0;
            for claim in batch.claims {
                if unconfirmed.contains(&claim.id) {
                    lost += 1;
                    self.held.insert(&batch.nsp, claim);
                    continue;
                }
                self.metrics.delivered(self.age(claim.id));
            }
            if lost > 0 {
                self.metrics.unconfirmed.inc_by(lost);
                warn!(
                    nsp = ?batch.nsp,
                    entries = lost,
                    servers_when_published = batch.servers,
                    "Socket.IO servers disconnected from Redis before these entries could be confirmed (their packets may have been dropped with them); they stay pending and are published again once enough servers listen"
                );
            }
        }
        if !unconfirmed.is_empty() {
            self.timers.retry = Instant::now();
        }
    }
}

/// Runs the confirmation script on what was `published` since the last one. In a cluster the
/// servers are counted on every node first (a script sees one node only), just before it.
async fn confirm(
    scripts: &Scripts,
    target: &Target,
    writer: &mut MultiplexedConnection,
    all_nodes: &mut AllNodes,
    published: &[Published],
) -> RedisResult<Vec<EntryId>> {
    if published.is_empty() {
        return Ok(Vec::new());
    }
    let mut servers_now = HashMap::new();
    if all_nodes.is_cluster() {
        let nsps = published.iter().map(|p| p.nsp.as_str());
        servers_now = servers::count_each(all_nodes, target, nsps)
            .await?
            .into_iter()
            .collect();
    }
    scripts.confirm(writer, published, &servers_now).await
}
