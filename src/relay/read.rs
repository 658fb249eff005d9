//! Reading new entries (XREADGROUP `>`) and confirming what was published, overlapped.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use redis::streams::StreamReadOptions;
use redis::{AsyncCommands, RedisResult};
use tracing::warn;

use super::deliver::Taken;
use super::session::Session;
use super::Relay;
use crate::delivery::Claim;
use crate::entry::EntryId;
use crate::fault::Fault;
use crate::metrics::Source;
use crate::reply::{Delivered, Read};

impl Relay {
    /// Reads and delivers one batch of new entries, waiting up to `source.block` for them. The
    /// confirmation of the last batch travels on the writer while the read waits on the reader;
    /// and while entries keep coming, the next read is sent before this batch is delivered, so
    /// Redis always has work queued instead of waiting for the relay.
    pub(super) async fn read_new(&mut self, s: &mut Session) -> Result<(), Fault> {
        let read = match s.read.take() {
            Some(read) => read,
            None => self.start_read(s),
        };
        let scripts = self.scripts.clone();
        let confirm = async {
            if s.unconfirmed.is_empty() {
                return Ok(Vec::new());
            }
            scripts.confirm(&mut s.writer, &s.unconfirmed).await
        };
        let (confirmed, read) = tokio::join!(confirm, read);
        self.confirmed(s, confirmed?);
        let read = read.map_err(|e| {
            Fault::Link(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the read task failed",
                e.to_string(),
            )))
        })??;
        if !read.0.is_empty() && self.held.is_empty() && !self.shutdown.is_cancelled() {
            s.read = Some(self.start_read(s));
        }
        self.deliver_read(s, read).await
    }

    /// Delivers what a read returned.
    pub(super) async fn deliver_read(&mut self, s: &mut Session, read: Read) -> Result<(), Fault> {
        let Read(entries) = read;
        let mut bytes = 0;
        let batch: Vec<Taken> = entries
            .into_iter()
            .filter_map(|d| match d {
                Delivered::Present(raw) => Some(raw),
                Delivered::Deleted(_) => None,
            })
            .map(|raw| {
                bytes += raw.byte_len();
                Taken {
                    claim: Claim {
                        id: raw.id,
                        deliveries: 1,
                        redelivery: false,
                        recorded: false,
                    },
                    raw,
                }
            })
            .collect();
        if !batch.is_empty() {
            let average = (bytes / batch.len()).max(1);
            self.read_count =
                (self.cfg.delivery.max_batch_bytes / average).clamp(1, self.cfg.source.batch_size);
        }
        self.metrics.read(Source::new, batch.len());
        self.deliver(s, batch).await
    }

    /// Sends XREADGROUP `>` on the reader, as a task of its own so that it goes out at once.
    fn start_read(&self, s: &Session) -> tokio::task::JoinHandle<RedisResult<Read>> {
        let mut block = self.cfg.source.block;
        if !self.held.is_empty() {
            block = block.min(self.timers.retry.saturating_duration_since(Instant::now()));
        }
        let block = block.max(Duration::from_millis(1));
        let options = StreamReadOptions::default()
            .group(&self.cfg.source.group, &self.cfg.source.consumer)
            .count(self.read_count)
            .block(block.as_millis() as usize);
        let stream = self.cfg.source.stream.clone();
        let mut reader = s.reader.clone();
        tokio::spawn(async move {
            reader
                .xread_options::<_, _, Read>(&[stream], &[">"], &options)
                .await
        })
    }

    /// Acknowledges what the delivery scripts published since the last confirmation.
    pub(super) async fn confirm(&mut self, s: &mut Session) -> Result<(), Fault> {
        if s.unconfirmed.is_empty() {
            return Ok(());
        }
        let unconfirmed = self.scripts.confirm(&mut s.writer, &s.unconfirmed).await?;
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
                self.metrics.acknowledged.inc();
                self.metrics
                    .end_to_end
                    .observe(self.age(claim.id).as_secs_f64());
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
